/* op_concat.c — ops that move blocks along one axis: Concat, Split and Gather.
 * Float data goes through the backend's strided copy2d (so any axis works on any
 * device); int64 data (shape vectors while folding) is copied on the host. */
#include "op_util.h"

#include <inttypes.h>
#include <string.h>

typedef struct axis_params {
    int64_t axis;
    int64_t num_outputs; /* Split opset 18 */
    int n_split;         /* Split opset < 13: attribute sizes; -1 none */
    int64_t split[LP_MAX_IO];
} axis_params;

static lp_status axis_check(lp_model *m, lp_node *n, int64_t dflt_axis, int min_in, int max_in) {
    if (n->n_in < min_in || n->n_in > max_in || n->in[0] < 0)
        return _lp_op_fail(m, n, LP_ERR_PARSE, "has %d inputs (expected %d to %d)", n->n_in, min_in, max_in);
    axis_params *p = _lp_op_params(n, sizeof *p);
    if (!p) return LP_ERR_OOM;
    p->axis = lp_attr_int(n, "axis", dflt_axis);
    p->num_outputs = lp_attr_int(n, "num_outputs", 0);
    p->n_split = lp_attr_ints(n, "split", p->split, LP_MAX_IO);
    if (p->n_split > LP_MAX_IO) return _lp_op_fail(m, n, LP_ERR_PARSE, "bad attribute split: %d entries", p->n_split);
    return LP_OK;
}

/* Generic block copy: for o < outer, dst[o*dst_stride + j] (+)= src[o*src_stride + j], j < len. */
static lp_status block_copy(const lp_backend *be, lp_dtype dt, int64_t outer, int64_t len, const void *src,
                            int64_t src_stride, void *dst, int64_t dst_stride, int accumulate) {
    if (outer == 0 || len == 0) return LP_OK;
    if (dt == LP_F32) return be->copy2d(outer, len, src, src_stride, dst, dst_stride, accumulate);
    const int64_t *s = src;
    int64_t *d = dst;
    for (int64_t o = 0; o < outer; o++) memcpy(d + o * dst_stride, s + o * src_stride, (size_t)len * sizeof *d);
    return LP_OK;
}

/* ---- Concat ------------------------------------------------------------------------ */

static lp_status concat_check(lp_model *m, lp_node *n) {
    LP_TRY(axis_check(m, n, 0, 1, LP_MAX_IO));
    if (!lp_node_attr(n, "axis")) return _lp_op_fail(m, n, LP_ERR_PARSE, "missing attribute axis");
    if (n->n_out != 1) return _lp_op_fail(m, n, LP_ERR_PARSE, "has %d outputs (expected 1)", n->n_out);
    for (int i = 0; i < n->n_in; i++)
        if (n->in[i] < 0) return _lp_op_fail(m, n, LP_ERR_PARSE, "input %d is empty", i);
    return LP_OK;
}

static lp_status concat_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    (void)in_const;
    const axis_params *p = n->params;
    char a[96], b[96];
    int r = in[0].ndim, ax = _lp_axis(p->axis, r);
    if (ax < 0) return lp_fail(LP_ERR_SHAPE, "axis %" PRId64 " is out of range for rank %d", p->axis, r);
    out[0] = in[0];
    for (int i = 1; i < n->n_in; i++) {
        int ok = in[i].ndim == r;
        for (int d = 0; ok && d < r; d++) ok = d == ax || in[i].d[d] == in[0].d[d];
        if (!ok)
            return lp_fail(LP_ERR_SHAPE, "input %d is %s but input 0 is %s (concat on axis %d)", i,
                           lp_shape_fmt(&in[i], a, sizeof a), lp_shape_fmt(&in[0], b, sizeof b), ax);
        out[0].d[ax] += in[i].d[ax];
    }
    return LP_OK;
}

static lp_status concat_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    const axis_params *p = n->params;
    int r = out[0]->ndim, ax = _lp_axis(p->axis, r);
    int64_t outer = _lp_prod(out[0]->shape, 0, ax), inner = _lp_prod(out[0]->shape, ax + 1, r);
    int64_t total = out[0]->shape[ax] * inner, off = 0;
    size_t es = lp_dtype_size(out[0]->dtype);
    for (int i = 0; i < n->n_in; i++) {
        if (in[i]->dtype != out[0]->dtype) return lp_fail(LP_ERR_UNSUPPORTED, "inputs mix int64 and float");
        int64_t len = in[i]->shape[ax] * inner;
        LP_TRY(block_copy(c->be, out[0]->dtype, outer, len, in[i]->data, len, (char *)out[0]->data + off * es, total, 0));
        off += len;
    }
    return LP_OK;
}

static lp_status concat_backward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                                 lp_tensor *const *dout, lp_tensor *const *din) {
    const axis_params *p = n->params;
    int r = out[0]->ndim, ax = _lp_axis(p->axis, r);
    int64_t outer = _lp_prod(out[0]->shape, 0, ax), inner = _lp_prod(out[0]->shape, ax + 1, r);
    int64_t total = out[0]->shape[ax] * inner, off = 0;
    for (int i = 0; i < n->n_in; i++) {
        int64_t len = in[i]->shape[ax] * inner;
        if (din[i])
            LP_TRY(block_copy(c->be, LP_F32, outer, len, (const float *)dout[0]->data + off, total, din[i]->data, len, 1));
        off += len;
    }
    return LP_OK;
}

const lp_op _lp_op_Concat = {"Concat", concat_check, concat_infer, concat_forward, concat_backward, NULL, 0, 0};

/* ---- Split ------------------------------------------------------------------------- */

static lp_status split_check(lp_model *m, lp_node *n) {
    LP_TRY(axis_check(m, n, 0, 1, 2));
    const axis_params *p = n->params;
    if (p->num_outputs && p->num_outputs != n->n_out)
        return _lp_op_fail(m, n, LP_ERR_PARSE, "num_outputs = %" PRId64 " but the node has %d outputs", p->num_outputs, n->n_out);
    if (p->n_split >= 0 && p->n_split != n->n_out)
        return _lp_op_fail(m, n, LP_ERR_PARSE, "split has %d entries for %d outputs", p->n_split, n->n_out);
    return LP_OK;
}

/* Sizes of the pieces along the axis: split input, split attribute, or (nearly) even. */
static lp_status split_sizes(const lp_node *n, const lp_shape *x, const lp_tensor *split_in, int *ax, int64_t *sizes) {
    const axis_params *p = n->params;
    int r = x->ndim;
    *ax = _lp_axis(p->axis, r);
    if (*ax < 0) return lp_fail(LP_ERR_SHAPE, "axis %" PRId64 " is out of range for rank %d", p->axis, r);
    int64_t dim = x->d[*ax], sum = 0;
    int k = n->n_out;
    if (n->n_in > 1 && n->in[1] >= 0) {
        if (!split_in) return lp_fail(LP_ERR_UNSUPPORTED, "split sizes are not a constant");
        int cnt = _lp_tensor_ints(split_in, sizes, LP_MAX_IO);
        if (cnt != k) return lp_fail(LP_ERR_SHAPE, "split has %d sizes for %d outputs", cnt, k);
    } else if (p->n_split >= 0) {
        memcpy(sizes, p->split, (size_t)k * sizeof *sizes);
    } else {
        int64_t chunk = (dim + k - 1) / k; /* opset 18: the last piece may be smaller */
        if (!p->num_outputs && dim % k)
            return lp_fail(LP_ERR_SHAPE, "axis %d of size %" PRId64 " does not split evenly into %d outputs", *ax, dim, k);
        for (int i = 0; i < k; i++) {
            int64_t left = dim - chunk * i;
            sizes[i] = left < 0 ? 0 : left < chunk ? left : chunk;
        }
    }
    for (int i = 0; i < k; i++) {
        if (sizes[i] < 0) return lp_fail(LP_ERR_SHAPE, "split size %d is negative", i);
        sum += sizes[i];
    }
    if (sum != dim) return lp_fail(LP_ERR_SHAPE, "split sizes add up to %" PRId64 " but axis %d has %" PRId64, sum, *ax, dim);
    return LP_OK;
}

static lp_status split_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    int64_t sizes[LP_MAX_IO];
    int ax;
    LP_TRY(split_sizes(n, &in[0], n->n_in > 1 ? in_const[1] : NULL, &ax, sizes));
    for (int k = 0; k < n->n_out; k++) {
        out[k] = in[0];
        out[k].d[ax] = sizes[k];
    }
    return LP_OK;
}

static lp_status split_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    lp_shape xs = lp_tensor_shape(in[0]);
    int64_t sizes[LP_MAX_IO];
    int ax;
    LP_TRY(split_sizes(n, &xs, n->n_in > 1 ? in[1] : NULL, &ax, sizes));
    int64_t outer = _lp_prod(xs.d, 0, ax), inner = _lp_prod(xs.d, ax + 1, xs.ndim), total = xs.d[ax] * inner, off = 0;
    size_t es = lp_dtype_size(in[0]->dtype);
    for (int k = 0; k < n->n_out; k++) {
        int64_t len = sizes[k] * inner;
        LP_TRY(block_copy(c->be, in[0]->dtype, outer, len, (const char *)in[0]->data + off * es, total, out[k]->data, len, 0));
        off += len;
    }
    return LP_OK;
}

static lp_status split_backward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                                lp_tensor *const *dout, lp_tensor *const *din) {
    (void)out;
    if (!din[0]) return LP_OK;
    lp_shape xs = lp_tensor_shape(in[0]);
    int64_t sizes[LP_MAX_IO];
    int ax;
    LP_TRY(split_sizes(n, &xs, n->n_in > 1 ? in[1] : NULL, &ax, sizes));
    int64_t outer = _lp_prod(xs.d, 0, ax), inner = _lp_prod(xs.d, ax + 1, xs.ndim), total = xs.d[ax] * inner, off = 0;
    for (int k = 0; k < n->n_out; k++) {
        int64_t len = sizes[k] * inner;
        if (dout[k]) LP_TRY(block_copy(c->be, LP_F32, outer, len, dout[k]->data, len, (float *)din[0]->data + off, total, 1));
        off += len;
    }
    return LP_OK;
}

const lp_op _lp_op_Split = {"Split", split_check, split_infer, split_forward, split_backward, NULL, 0, 0};

/* ---- Gather ------------------------------------------------------------------------ */

static lp_status gather_check(lp_model *m, lp_node *n) {
    LP_TRY(axis_check(m, n, 0, 2, 2));
    if (n->in[1] < 0) return _lp_op_fail(m, n, LP_ERR_PARSE, "needs indices");
    if (n->n_out != 1) return _lp_op_fail(m, n, LP_ERR_PARSE, "has %d outputs (expected 1)", n->n_out);
    return LP_OK;
}

static lp_status gather_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    (void)in_const;
    const axis_params *p = n->params;
    int r = in[0].ndim, ax = _lp_axis(p->axis, r);
    if (ax < 0) return lp_fail(LP_ERR_SHAPE, "axis %" PRId64 " is out of range for rank %d", p->axis, r);
    int ro = r - 1 + in[1].ndim;
    if (ro > LP_MAX_DIMS) return lp_fail(LP_ERR_SHAPE, "output rank %d is over %d", ro, LP_MAX_DIMS);
    out[0].ndim = 0;
    for (int i = 0; i < ax; i++) out[0].d[out[0].ndim++] = in[0].d[i];
    for (int i = 0; i < in[1].ndim; i++) out[0].d[out[0].ndim++] = in[1].d[i];
    for (int i = ax + 1; i < r; i++) out[0].d[out[0].ndim++] = in[0].d[i];
    return LP_OK;
}

/* Visit each (index position j, source row idx) pair, checking ranges. */
static lp_status gather_run(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *data_grad,
                            const lp_tensor *y) {
    const axis_params *p = n->params;
    const lp_tensor *x = in[0], *ind = in[1];
    int r = x->ndim, ax = _lp_axis(p->axis, r);
    /* Folding may meet a constant whose rank differs from the one inferred. */
    if (ax < 0) return lp_fail(LP_ERR_SHAPE, "axis %" PRId64 " is out of range for rank %d", p->axis, r);
    if (ind->dtype != LP_I64) return lp_fail(LP_ERR_UNSUPPORTED, "indices must be int64");
    int64_t outer = _lp_prod(x->shape, 0, ax), inner = _lp_prod(x->shape, ax + 1, r), dim = x->shape[ax];
    int64_t ni = lp_tensor_numel(ind);
    size_t es = lp_dtype_size(x->dtype);
    const int64_t *idx = ind->data;
    for (int64_t j = 0; j < ni; j++) {
        int64_t k = idx[j] < 0 ? idx[j] + dim : idx[j];
        if (k < 0 || k >= dim)
            return lp_fail(LP_ERR_ARG, "index %" PRId64 " is out of range for axis %d of size %" PRId64, idx[j], ax, dim);
        if (data_grad)
            LP_TRY(block_copy(c->be, LP_F32, outer, inner, (const float *)y->data + j * inner, ni * inner,
                              (float *)data_grad->data + k * inner, dim * inner, 1));
        else
            LP_TRY(block_copy(c->be, x->dtype, outer, inner, (const char *)x->data + (size_t)(k * inner) * es, dim * inner,
                              (char *)y->data + (size_t)(j * inner) * es, ni * inner, 0));
    }
    return LP_OK;
}

static lp_status gather_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    return gather_run(c, n, in, NULL, out[0]);
}

static lp_status gather_backward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                                 lp_tensor *const *dout, lp_tensor *const *din) {
    (void)out;
    if (!din[0]) return LP_OK;
    return gather_run(c, n, in, din[0], dout[0]);
}

const lp_op _lp_op_Gather = {"Gather", gather_check, gather_infer, gather_forward, gather_backward, NULL, 0, 0};
