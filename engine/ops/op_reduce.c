/* op_reduce.c — ReduceMean and ReduceSum over any set of axes (attribute in older
 * opsets, constant input in newer ones; keepdims, noop_with_empty_axes) and Expand,
 * their adjoint: all on the backend's reduce_sum / broadcast pair. */
#include "op_util.h"

#include <inttypes.h>
#include <string.h>

typedef struct reduce_params {
    int keepdims, noop_empty, mean;
    int n_axes; /* from the attribute; -1: from input 1 or none */
    int64_t axes[LP_MAX_DIMS];
} reduce_params;

static lp_status reduce_check(lp_model *m, lp_node *n) {
    if (n->n_in < 1 || n->n_in > 2 || n->in[0] < 0) return _lp_op_fail(m, n, LP_ERR_PARSE, "has %d inputs (expected 1 or 2)", n->n_in);
    if (n->n_out != 1) return _lp_op_fail(m, n, LP_ERR_PARSE, "has %d outputs (expected 1)", n->n_out);
    reduce_params *p = _lp_op_params(n, sizeof *p);
    if (!p) return LP_ERR_OOM;
    p->keepdims = lp_attr_int(n, "keepdims", 1) != 0;
    p->noop_empty = lp_attr_int(n, "noop_with_empty_axes", 0) != 0;
    p->mean = !strcmp(n->op_type, "ReduceMean");
    p->n_axes = lp_attr_ints(n, "axes", p->axes, LP_MAX_DIMS);
    if (p->n_axes > LP_MAX_DIMS) return _lp_op_fail(m, n, LP_ERR_PARSE, "bad attribute axes: %d entries", p->n_axes);
    return LP_OK;
}

/* Which dims are reduced, the output shape, and the broadcast pairing x with it
 * (the kept-dims shape, so reduced dims have stride 0). */
static lp_status reduce_plan(const lp_node *n, const lp_shape *x, const lp_tensor *axes_in, lp_shape *y, lp_bcast *bc,
                             int64_t *count) {
    const reduce_params *p = n->params;
    int64_t axes[LP_MAX_DIMS];
    int cnt = p->n_axes, r = x->ndim, red[LP_MAX_DIMS] = {0};
    if (cnt >= 0) {
        memcpy(axes, p->axes, sizeof axes);
    } else if (n->n_in > 1 && n->in[1] >= 0) {
        if (!axes_in) return lp_fail(LP_ERR_UNSUPPORTED, "axes input is not a constant");
        cnt = _lp_tensor_ints(axes_in, axes, LP_MAX_DIMS);
        if (cnt > LP_MAX_DIMS) return lp_fail(LP_ERR_SHAPE, "%d axes", cnt);
    }
    if (cnt <= 0 && !p->noop_empty) {
        for (int d = 0; d < r; d++) red[d] = 1;
    }
    for (int i = 0; i < cnt; i++) {
        int ax = _lp_axis(axes[i], r);
        if (ax < 0) return lp_fail(LP_ERR_SHAPE, "axis %" PRId64 " is out of range for rank %d", axes[i], r);
        red[ax] = 1;
    }
    lp_shape kept = *x;
    *count = 1;
    y->ndim = 0;
    for (int d = 0; d < r; d++) {
        if (red[d]) {
            *count *= x->d[d];
            kept.d[d] = 1;
            if (p->keepdims) y->d[y->ndim++] = 1;
        } else {
            y->d[y->ndim++] = x->d[d];
        }
    }
    return lp_bcast_make(r, x->d, r, kept.d, bc);
}

static lp_status reduce_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    lp_bcast bc;
    int64_t count;
    return reduce_plan(n, &in[0], n->n_in > 1 ? in_const[1] : NULL, &out[0], &bc, &count);
}

static lp_status reduce_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    const reduce_params *p = n->params;
    lp_shape xs = lp_tensor_shape(in[0]), ys;
    lp_bcast bc;
    int64_t count;
    if (in[0]->dtype != LP_F32) return lp_fail(LP_ERR_UNSUPPORTED, "%s on int64 data is not supported", n->op_type);
    LP_TRY(reduce_plan(n, &xs, n->n_in > 1 ? in[1] : NULL, &ys, &bc, &count));
    if (lp_shape_numel(&ys) == 0) return LP_OK;
    if (count == 0) return c->be->zero(out[0]->data, out[0]->nbytes);
    return c->be->reduce_sum(&bc, in[0]->data, out[0]->data, p->mean ? 1.0f / (float)count : 1.0f, 0);
}

static lp_status reduce_backward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                                 lp_tensor *const *dout, lp_tensor *const *din) {
    (void)out;
    const reduce_params *p = n->params;
    if (!din[0]) return LP_OK;
    lp_shape xs = lp_tensor_shape(in[0]), ys;
    lp_bcast bc;
    int64_t count;
    LP_TRY(reduce_plan(n, &xs, n->n_in > 1 ? in[1] : NULL, &ys, &bc, &count));
    if (lp_shape_numel(&xs) == 0) return LP_OK;
    return c->be->broadcast(&bc, dout[0]->data, din[0]->data, p->mean ? 1.0f / (float)count : 1.0f, 1);
}

const lp_op _lp_op_ReduceMean = {"ReduceMean", reduce_check, reduce_infer, reduce_forward, reduce_backward, NULL, 0, 0};
const lp_op _lp_op_ReduceSum = {"ReduceSum", reduce_check, reduce_infer, reduce_forward, reduce_backward, NULL, 0, 0};

/* ---- Expand: the broadcast that is ReduceSum's adjoint --------------------------------- */

static lp_status expand_check(lp_model *m, lp_node *n) {
    if (n->n_in != 2 || n->in[0] < 0 || n->in[1] < 0) return _lp_op_fail(m, n, LP_ERR_PARSE, "needs inputs input and shape (got %d)", n->n_in);
    if (n->n_out != 1) return _lp_op_fail(m, n, LP_ERR_PARSE, "has %d outputs (expected 1)", n->n_out);
    return LP_OK;
}

/* Output = broadcast of x's shape with the requested shape; bc pairs the output with x. */
static lp_status expand_plan(const lp_shape *x, const lp_tensor *shape_in, lp_shape *y, lp_bcast *bc) {
    int64_t want[LP_MAX_DIMS];
    if (!shape_in) return lp_fail(LP_ERR_UNSUPPORTED, "the target shape is not a constant");
    int cnt = _lp_tensor_ints(shape_in, want, LP_MAX_DIMS);
    if (cnt < 0 || cnt > LP_MAX_DIMS) return lp_fail(LP_ERR_SHAPE, "target shape has %d entries", cnt);
    lp_bcast tmp;
    LP_TRY(lp_bcast_make(x->ndim, x->d, cnt, want, &tmp));
    y->ndim = tmp.ndim;
    for (int i = 0; i < tmp.ndim; i++) y->d[i] = tmp.shape[i];
    return lp_bcast_make(y->ndim, y->d, x->ndim, x->d, bc);
}

static lp_status expand_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    (void)n;
    lp_bcast bc;
    return expand_plan(&in[0], in_const[1], &out[0], &bc);
}

static lp_status expand_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    (void)n;
    lp_shape xs = lp_tensor_shape(in[0]), ys;
    lp_bcast bc;
    LP_TRY(expand_plan(&xs, in[1], &ys, &bc));
    if (lp_shape_numel(&ys) == 0) return LP_OK;
    if (in[0]->dtype == LP_I64) { /* host: shape arithmetic while folding */
        const int64_t *x = in[0]->data;
        int64_t *y = out[0]->data;
        for (int64_t i = 0; i < lp_shape_numel(&ys); i++) {
            int64_t rem = i, off = 0;
            for (int d = bc.ndim - 1; d >= 0; d--) {
                off += (rem % bc.shape[d]) * bc.sb[d];
                rem /= bc.shape[d];
            }
            y[i] = x[off];
        }
        return LP_OK;
    }
    return c->be->broadcast(&bc, in[0]->data, out[0]->data, 1.0f, 0);
}

static lp_status expand_backward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                                 lp_tensor *const *dout, lp_tensor *const *din) {
    (void)n;
    (void)out;
    if (!din[0]) return LP_OK;
    lp_shape xs = lp_tensor_shape(in[0]), ys;
    lp_bcast bc;
    LP_TRY(expand_plan(&xs, in[1], &ys, &bc));
    if (lp_shape_numel(&ys) == 0) return LP_OK;
    return c->be->reduce_sum(&bc, dout[0]->data, din[0]->data, 1.0f, 1);
}

const lp_op _lp_op_Expand = {"Expand", expand_check, expand_infer, expand_forward, expand_backward, NULL, 0, 0};
