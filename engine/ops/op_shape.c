/* op_shape.c — Shape, Cast, Constant, ConstantOfShape and Transpose. Shape, int64
 * Casts and ConstantOfShape feed the static shape computations that constant folding
 * removes; Transpose is the one op here that moves float data on the device. */
#include "op_util.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* ---- Shape ------------------------------------------------------------------------- */

typedef struct shape_params {
    int64_t start, end;
    int has_end;
} shape_params;

static lp_status shape_check(lp_model *m, lp_node *n) {
    if (n->n_in != 1 || n->in[0] < 0) return _lp_op_fail(m, n, LP_ERR_PARSE, "needs 1 input (got %d)", n->n_in);
    shape_params *p = _lp_op_params(n, sizeof *p);
    if (!p) return LP_ERR_OOM;
    p->start = lp_attr_int(n, "start", 0);
    p->has_end = lp_node_attr(n, "end") != NULL;
    p->end = lp_attr_int(n, "end", 0);
    return LP_OK;
}

static void shape_range(const shape_params *p, int r, int64_t *a, int64_t *b) {
    int64_t s = p->start < 0 ? p->start + r : p->start, e = p->has_end ? (p->end < 0 ? p->end + r : p->end) : r;
    *a = s < 0 ? 0 : s > r ? r : s;
    *b = e < 0 ? 0 : e > r ? r : e;
    if (*b < *a) *b = *a;
}

static lp_status shape_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    (void)in_const;
    int64_t a, b;
    shape_range(n->params, in[0].ndim, &a, &b);
    out[0].ndim = 1;
    out[0].d[0] = b - a;
    return LP_OK;
}

static lp_status shape_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    (void)c;
    int64_t a, b;
    shape_range(n->params, in[0]->ndim, &a, &b);
    if (out[0]->dtype != LP_I64) return lp_fail(LP_ERR_INTERNAL, "Shape output is not int64");
    int64_t *y = out[0]->data;
    for (int64_t i = a; i < b; i++) y[i - a] = in[0]->shape[i];
    return LP_OK;
}

const lp_op _lp_op_Shape = {"Shape", shape_check, shape_infer, shape_forward, NULL, NULL, 1, 0};

/* ---- Cast -------------------------------------------------------------------------- */

/* ONNX TensorProto data types Loupe maps: FLOAT(1), FLOAT16(10), DOUBLE(11) to float32;
 * INT64(7), INT32(6) to int64 values; BOOL(9) to 0/1 (host only). The output tensor's
 * dtype is set by graph.c from `to`; the values follow it. */
static lp_status cast_check(lp_model *m, lp_node *n) {
    if (n->n_in != 1 || n->in[0] < 0) return _lp_op_fail(m, n, LP_ERR_PARSE, "needs 1 input (got %d)", n->n_in);
    int64_t to = lp_attr_int(n, "to", -1);
    if (to != 1 && to != 6 && to != 7 && to != 9 && to != 10 && to != 11)
        return _lp_op_fail(m, n, LP_ERR_UNSUPPORTED, "cast to data type %" PRId64 " is not supported (float or int64 only)", to);
    return LP_OK;
}

static lp_status cast_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    const lp_tensor *x = in[0];
    lp_tensor *y = out[0];
    if (lp_attr_int(n, "to", 1) == 9) { /* bool: masks while folding */
        if (x->device != LP_DEVICE_CPU || y->device != LP_DEVICE_CPU)
            return lp_fail(LP_ERR_UNSUPPORTED, "cast to bool runs on host constants only");
        for (int64_t i = 0; i < lp_tensor_numel(x); i++) {
            int v = x->dtype == LP_I64 ? ((const int64_t *)x->data)[i] != 0 : ((const float *)x->data)[i] != 0;
            if (y->dtype == LP_I64) ((int64_t *)y->data)[i] = v;
            else ((float *)y->data)[i] = (float)v;
        }
        return LP_OK;
    }
    if (x->dtype == y->dtype) return _lp_copy_tensor(c->be, x, y);
    int64_t cnt = lp_tensor_numel(x);
    if (cnt == 0) return LP_OK;
    if (x->dtype == LP_F32) { /* float (maybe on the device) -> host int64 */
        float *tmp = lp_malloc((size_t)cnt * sizeof *tmp);
        if (!tmp) return LP_ERR_OOM;
        lp_status s = x->device == LP_DEVICE_CPU ? (memcpy(tmp, x->data, (size_t)cnt * sizeof *tmp), LP_OK)
                                                 : c->be->download(tmp, x->data, (size_t)cnt * sizeof *tmp);
        for (int64_t i = 0; s == LP_OK && i < cnt; i++) ((int64_t *)y->data)[i] = (int64_t)tmp[i];
        free(tmp);
        return s;
    }
    float *tmp = lp_malloc((size_t)cnt * sizeof *tmp); /* host int64 -> float on the run's device */
    if (!tmp) return LP_ERR_OOM;
    for (int64_t i = 0; i < cnt; i++) tmp[i] = (float)((const int64_t *)x->data)[i];
    lp_status s = y->device == LP_DEVICE_CPU ? (memcpy(y->data, tmp, (size_t)cnt * sizeof *tmp), LP_OK)
                                             : c->be->upload(y->data, tmp, (size_t)cnt * sizeof *tmp);
    free(tmp);
    return s;
}

static lp_status cast_backward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                               lp_tensor *const *dout, lp_tensor *const *din) {
    (void)n;
    if (!din[0] || !dout[0] || in[0]->dtype != LP_F32 || out[0]->dtype != LP_F32) return LP_OK;
    return _lp_acc(c->be, lp_tensor_numel(in[0]), dout[0]->data, din[0]->data);
}

static lp_status same_shape_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    (void)n;
    (void)in_const;
    out[0] = in[0];
    return LP_OK;
}

const lp_op _lp_op_Cast = {"Cast", cast_check, same_shape_infer, cast_forward, cast_backward, NULL, 0, 0};

/* ---- Constant ---------------------------------------------------------------------- */

static lp_status constant_check(lp_model *m, lp_node *n) {
    static const char *names[] = {"value", "value_float", "value_int", "value_floats", "value_ints"};
    int found = 0;
    if (n->n_in != 0) return _lp_op_fail(m, n, LP_ERR_PARSE, "has %d inputs (expected none)", n->n_in);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) found += lp_node_attr(n, names[i]) != NULL;
    if (found != 1)
        return _lp_op_fail(m, n, LP_ERR_UNSUPPORTED,
                           "needs exactly one of value, value_float, value_int, value_floats, value_ints (sparse and string values are not supported)");
    const lp_attr *v = lp_node_attr(n, "value");
    if (v && (v->type != LP_ATTR_TENSOR || !v->t))
        return _lp_op_fail(m, n, LP_ERR_PARSE, "attribute value is not a tensor");
    return LP_OK;
}

static lp_status constant_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    (void)in;
    (void)in_const;
    const lp_attr *a;
    memset(&out[0], 0, sizeof out[0]);
    if ((a = lp_node_attr(n, "value"))) {
        out[0] = lp_tensor_shape(a->t);
    } else if ((a = lp_node_attr(n, "value_floats")) || (a = lp_node_attr(n, "value_ints"))) {
        out[0].ndim = 1;
        out[0].d[0] = a->n;
    } /* value_float / value_int: a scalar (rank 0) */
    return LP_OK;
}

static lp_status constant_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    (void)in;
    lp_tensor *y = out[0];
    const lp_attr *a;
    int64_t cnt = lp_tensor_numel(y);
    const float *fsrc = NULL;
    const int64_t *isrc = NULL;
    float f1;
    int64_t i1;
    if ((a = lp_node_attr(n, "value"))) {
        if (lp_tensor_numel(a->t) != cnt) return lp_fail(LP_ERR_INTERNAL, "Constant output has the wrong size");
        if (a->t->dtype == LP_F32) fsrc = a->t->data;
        else isrc = a->t->data;
    } else if ((a = lp_node_attr(n, "value_floats"))) {
        fsrc = a->floats;
    } else if ((a = lp_node_attr(n, "value_ints"))) {
        isrc = a->ints;
    } else if ((a = lp_node_attr(n, "value_float"))) {
        f1 = a->f;
        fsrc = &f1;
    } else if ((a = lp_node_attr(n, "value_int"))) {
        i1 = a->i;
        isrc = &i1;
    }
    if (cnt == 0) return LP_OK;
    if (y->dtype == LP_I64) { /* host */
        for (int64_t i = 0; i < cnt; i++) ((int64_t *)y->data)[i] = isrc ? isrc[i] : (int64_t)fsrc[i];
        return LP_OK;
    }
    float *tmp = NULL;
    if (!fsrc) {
        tmp = lp_malloc((size_t)cnt * sizeof *tmp);
        if (!tmp) return LP_ERR_OOM;
        for (int64_t i = 0; i < cnt; i++) tmp[i] = (float)isrc[i];
        fsrc = tmp;
    }
    lp_status s = y->device == LP_DEVICE_CPU ? (memcpy(y->data, fsrc, (size_t)cnt * sizeof(float)), LP_OK)
                                             : c->be->upload(y->data, fsrc, (size_t)cnt * sizeof(float));
    free(tmp);
    return s;
}

const lp_op _lp_op_Constant = {"Constant", constant_check, constant_infer, constant_forward, NULL, NULL, 0, 0};

/* ---- ConstantOfShape ---------------------------------------------------------------- */

static lp_status cos_check(lp_model *m, lp_node *n) {
    if (n->n_in != 1 || n->in[0] < 0) return _lp_op_fail(m, n, LP_ERR_PARSE, "needs 1 input (got %d)", n->n_in);
    const lp_attr *v = lp_node_attr(n, "value");
    if (v && (v->type != LP_ATTR_TENSOR || !v->t || lp_tensor_numel(v->t) != 1))
        return _lp_op_fail(m, n, LP_ERR_PARSE, "attribute value must be a one-element tensor");
    return LP_OK;
}

static lp_status cos_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    (void)n;
    (void)in;
    if (!in_const[0]) return lp_fail(LP_ERR_UNSUPPORTED, "the shape input is not a constant");
    int cnt = _lp_tensor_ints(in_const[0], out[0].d, LP_MAX_DIMS);
    if (cnt < 0 || cnt > LP_MAX_DIMS) return lp_fail(LP_ERR_SHAPE, "shape has %d entries (at most %d)", cnt, LP_MAX_DIMS);
    out[0].ndim = cnt;
    for (int i = 0; i < cnt; i++)
        if (out[0].d[i] < 0) return lp_fail(LP_ERR_SHAPE, "negative dimension %" PRId64, out[0].d[i]);
    return LP_OK;
}

static lp_status cos_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    (void)in;
    const lp_attr *v = lp_node_attr(n, "value");
    double val = 0;
    if (v) val = v->t->dtype == LP_I64 ? (double)((const int64_t *)v->t->data)[0] : ((const float *)v->t->data)[0];
    int64_t cnt = lp_tensor_numel(out[0]);
    if (out[0]->dtype == LP_I64) {
        for (int64_t i = 0; i < cnt; i++) ((int64_t *)out[0]->data)[i] = (int64_t)val;
        return LP_OK;
    }
    return c->be->fill(cnt, (float)val, out[0]->data);
}

const lp_op _lp_op_ConstantOfShape = {"ConstantOfShape", cos_check, cos_infer, cos_forward, NULL, NULL, 0, 0};

/* ---- Transpose --------------------------------------------------------------------- */

typedef struct transpose_params {
    int n_perm;
    int64_t perm[LP_MAX_DIMS];
} transpose_params;

static lp_status transpose_check(lp_model *m, lp_node *n) {
    if (n->n_in != 1 || n->in[0] < 0) return _lp_op_fail(m, n, LP_ERR_PARSE, "needs 1 input (got %d)", n->n_in);
    transpose_params *p = _lp_op_params(n, sizeof *p);
    if (!p) return LP_ERR_OOM;
    p->n_perm = lp_attr_ints(n, "perm", p->perm, LP_MAX_DIMS);
    if (p->n_perm > LP_MAX_DIMS) return _lp_op_fail(m, n, LP_ERR_PARSE, "bad attribute perm: %d entries", p->n_perm);
    return LP_OK;
}

static lp_status transpose_perm(const lp_node *n, int r, int *perm) {
    const transpose_params *p = n->params;
    int seen[LP_MAX_DIMS] = {0};
    if (p->n_perm >= 0 && p->n_perm != r) return lp_fail(LP_ERR_SHAPE, "perm has %d entries for rank %d", p->n_perm, r);
    for (int i = 0; i < r; i++) {
        int64_t v = p->n_perm >= 0 ? p->perm[i] : r - 1 - i;
        int ax = _lp_axis(v, r);
        if (ax < 0 || seen[ax]) return lp_fail(LP_ERR_SHAPE, "perm is not a permutation of 0..%d", r - 1);
        seen[ax] = 1;
        perm[i] = ax;
    }
    return LP_OK;
}

static lp_status transpose_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    (void)in_const;
    int perm[LP_MAX_DIMS];
    LP_TRY(transpose_perm(n, in[0].ndim, perm));
    out[0].ndim = in[0].ndim;
    for (int i = 0; i < in[0].ndim; i++) out[0].d[i] = in[0].d[perm[i]];
    return LP_OK;
}

static lp_status transpose_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    int perm[LP_MAX_DIMS];
    LP_TRY(transpose_perm(n, in[0]->ndim, perm));
    if (in[0]->dtype == LP_I64) { /* host: folding the pad chains torch exports */
        const lp_tensor *x = in[0];
        int64_t st[LP_MAX_DIMS], acc = 1, total = lp_tensor_numel(x);
        for (int d = x->ndim - 1; d >= 0; d--) {
            st[d] = acc;
            acc *= x->shape[d];
        }
        for (int64_t i = 0; i < total; i++) {
            int64_t rem = i, off = 0;
            for (int d = x->ndim - 1; d >= 0; d--) {
                int64_t yd = x->shape[perm[d]];
                off += (rem % yd) * st[perm[d]];
                rem /= yd;
            }
            ((int64_t *)out[0]->data)[i] = ((const int64_t *)x->data)[off];
        }
        return LP_OK;
    }
    return c->be->transpose(in[0]->ndim, in[0]->shape, perm, in[0]->data, out[0]->data, 0);
}

static lp_status transpose_backward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                                    lp_tensor *const *dout, lp_tensor *const *din) {
    int perm[LP_MAX_DIMS], inv[LP_MAX_DIMS];
    if (!din[0]) return LP_OK;
    LP_TRY(transpose_perm(n, in[0]->ndim, perm));
    for (int i = 0; i < in[0]->ndim; i++) inv[perm[i]] = i;
    return c->be->transpose(out[0]->ndim, out[0]->shape, inv, dout[0]->data, din[0]->data, 1);
}

const lp_op _lp_op_Transpose = {"Transpose", transpose_check, transpose_infer, transpose_forward,
                                transpose_backward, NULL, 0, 0};
