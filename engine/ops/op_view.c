/* op_view.c — ops that only relabel a tensor's shape: Reshape, Flatten, Squeeze,
 * Unsqueeze, Identity, Dropout (inference). Forward copies the bytes (float on the
 * device, int64 on the host), backward adds the gradient through unchanged. */
#include "op_util.h"

#include <inttypes.h>
#include <string.h>

typedef struct view_params {
    int64_t allowzero;  /* Reshape */
    int64_t axis;       /* Flatten */
    int n_axes;         /* Squeeze / Unsqueeze axes from the attribute; -1: from input 1 or none */
    int64_t axes[LP_MAX_DIMS];
    int n_shape;        /* Reshape opset < 5: shape attribute */
    int64_t shape[LP_MAX_DIMS];
} view_params;

static lp_status view_check(lp_model *m, lp_node *n) {
    const char *t = n->op_type;
    int is_dropout = !strcmp(t, "Dropout");
    int max_in = is_dropout ? 3 : (!strcmp(t, "Identity") || !strcmp(t, "Flatten")) ? 1 : 2;
    if (n->n_in < 1 || n->n_in > max_in || n->in[0] < 0)
        return _lp_op_fail(m, n, LP_ERR_PARSE, "has %d inputs (expected 1 to %d)", n->n_in, max_in);
    for (int k = 1; k < n->n_out; k++)
        if (!is_dropout || _lp_output_used(m, n, k))
            return _lp_op_fail(m, n, LP_ERR_UNSUPPORTED, "output %d is not supported (Dropout's mask output is not computed)", k);
    view_params *p = _lp_op_params(n, sizeof *p);
    if (!p) return LP_ERR_OOM;
    p->allowzero = lp_attr_int(n, "allowzero", 0);
    p->axis = lp_attr_int(n, "axis", 1);
    p->n_axes = lp_attr_ints(n, "axes", p->axes, LP_MAX_DIMS);
    if (p->n_axes > LP_MAX_DIMS) return _lp_op_fail(m, n, LP_ERR_PARSE, "bad attribute axes: %d entries", p->n_axes);
    p->n_shape = -1;
    if (!strcmp(t, "Reshape")) {
        if (n->n_in < 2) {
            p->n_shape = lp_attr_ints(n, "shape", p->shape, LP_MAX_DIMS);
            if (p->n_shape < 0 || p->n_shape > LP_MAX_DIMS)
                return _lp_op_fail(m, n, LP_ERR_PARSE, "needs a shape input (or a shape attribute of at most %d entries)", LP_MAX_DIMS);
        } else if (n->in[1] < 0) {
            return _lp_op_fail(m, n, LP_ERR_PARSE, "needs a shape input");
        }
    }
    return LP_OK;
}

/* Axes of Squeeze/Unsqueeze: the attribute, or input 1 (a constant). */
static lp_status view_axes(const lp_node *n, const lp_tensor *const *in_const, int64_t *axes, int *cnt) {
    const view_params *p = n->params;
    *cnt = p->n_axes;
    if (p->n_axes >= 0) {
        memcpy(axes, p->axes, sizeof p->axes);
        return LP_OK;
    }
    if (n->n_in < 2 || n->in[1] < 0) return LP_OK;
    if (!in_const[1]) return lp_fail(LP_ERR_UNSUPPORTED, "axes input is not a constant");
    *cnt = _lp_tensor_ints(in_const[1], axes, LP_MAX_DIMS);
    if (*cnt > LP_MAX_DIMS) return lp_fail(LP_ERR_SHAPE, "%d axes (at most %d)", *cnt, LP_MAX_DIMS);
    return LP_OK;
}

static lp_status reshape_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    const view_params *p = n->params;
    int64_t want[LP_MAX_DIMS];
    int cnt = p->n_shape;
    char a[96];
    if (cnt >= 0) {
        memcpy(want, p->shape, sizeof want);
    } else {
        if (!in_const[1]) return lp_fail(LP_ERR_UNSUPPORTED, "the target shape is not a constant (dynamic reshape)");
        cnt = _lp_tensor_ints(in_const[1], want, LP_MAX_DIMS);
        if (cnt < 0 || cnt > LP_MAX_DIMS) return lp_fail(LP_ERR_SHAPE, "target shape has %d entries (at most %d)", cnt, LP_MAX_DIMS);
    }
    int64_t total = lp_shape_numel(&in[0]), known = 1;
    int infer_at = -1;
    out[0].ndim = cnt;
    for (int i = 0; i < cnt; i++) {
        int64_t d = want[i];
        if (d == 0 && !p->allowzero) {
            if (i >= in[0].ndim) return lp_fail(LP_ERR_SHAPE, "target dim %d is 0 (copy) but input %s has no such dim", i, lp_shape_fmt(&in[0], a, sizeof a));
            d = in[0].d[i];
        }
        if (d == -1) {
            if (infer_at >= 0) return lp_fail(LP_ERR_SHAPE, "target shape has more than one -1");
            infer_at = i;
            d = 1;
        } else if (d < 0) {
            return lp_fail(LP_ERR_SHAPE, "target dim %d is %" PRId64, i, d);
        }
        out[0].d[i] = d;
        if (d > 0 && known > INT64_MAX / d) return lp_fail(LP_ERR_SHAPE, "target shape is too large");
        known *= d;
    }
    if (infer_at >= 0) {
        if (known == 0 || total % known)
            return lp_fail(LP_ERR_SHAPE, "cannot reshape %s (%" PRId64 " elements) with a -1 dim", lp_shape_fmt(&in[0], a, sizeof a), total);
        out[0].d[infer_at] = total / known;
        known = total;
    }
    if (known != total) {
        char b[96];
        return lp_fail(LP_ERR_SHAPE, "cannot reshape %s into %s", lp_shape_fmt(&in[0], a, sizeof a),
                       lp_shape_fmt(&out[0], b, sizeof b));
    }
    return LP_OK;
}

static lp_status flatten_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    (void)in_const;
    const view_params *p = n->params;
    int r = in[0].ndim;
    int64_t ax = p->axis < 0 ? p->axis + r : p->axis;
    if (ax < 0 || ax > r) return lp_fail(LP_ERR_SHAPE, "axis %" PRId64 " is out of range for rank %d", p->axis, r);
    out[0].ndim = 2;
    out[0].d[0] = _lp_prod(in[0].d, 0, (int)ax);
    out[0].d[1] = _lp_prod(in[0].d, (int)ax, r);
    return LP_OK;
}

static lp_status squeeze_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    int64_t axes[LP_MAX_DIMS];
    int cnt;
    char a[96];
    LP_TRY(view_axes(n, in_const, axes, &cnt));
    int r = in[0].ndim, drop[LP_MAX_DIMS] = {0};
    for (int i = 0; i < cnt; i++) {
        int ax = _lp_axis(axes[i], r);
        if (ax < 0) return lp_fail(LP_ERR_SHAPE, "axis %" PRId64 " is out of range for rank %d", axes[i], r);
        if (in[0].d[ax] != 1)
            return lp_fail(LP_ERR_SHAPE, "cannot squeeze axis %d of %s (not 1)", ax, lp_shape_fmt(&in[0], a, sizeof a));
        drop[ax] = 1;
    }
    out[0].ndim = 0;
    for (int i = 0; i < r; i++) {
        if (cnt <= 0 ? in[0].d[i] == 1 : drop[i]) continue;
        out[0].d[out[0].ndim++] = in[0].d[i];
    }
    return LP_OK;
}

static lp_status unsqueeze_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    int64_t axes[LP_MAX_DIMS];
    int cnt;
    LP_TRY(view_axes(n, in_const, axes, &cnt));
    if (cnt <= 0) return lp_fail(LP_ERR_SHAPE, "Unsqueeze needs axes");
    int r = in[0].ndim + cnt, ins[LP_MAX_DIMS] = {0};
    if (r > LP_MAX_DIMS) return lp_fail(LP_ERR_SHAPE, "output rank %d is over %d", r, LP_MAX_DIMS);
    for (int i = 0; i < cnt; i++) {
        int ax = _lp_axis(axes[i], r);
        if (ax < 0 || ins[ax]) return lp_fail(LP_ERR_SHAPE, "bad axis %" PRId64 " for output rank %d", axes[i], r);
        ins[ax] = 1;
    }
    out[0].ndim = r;
    for (int i = 0, j = 0; i < r; i++) out[0].d[i] = ins[i] ? 1 : in[0].d[j++];
    return LP_OK;
}

static lp_status ident_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    (void)in_const;
    for (int k = 0; k < n->n_out; k++) out[k] = in[0];
    return LP_OK;
}

static lp_status view_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    (void)n;
    if (in[0]->dtype != out[0]->dtype) return lp_fail(LP_ERR_INTERNAL, "input and output dtypes differ");
    return _lp_copy_tensor(c->be, in[0], out[0]);
}

static lp_status view_backward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                               lp_tensor *const *dout, lp_tensor *const *din) {
    (void)n;
    (void)out;
    if (!din[0] || !dout[0]) return LP_OK;
    return _lp_acc(c->be, lp_tensor_numel(in[0]), dout[0]->data, din[0]->data);
}

const lp_op _lp_op_Reshape = {"Reshape", view_check, reshape_infer, view_forward, view_backward, NULL, 0, 0};
const lp_op _lp_op_Flatten = {"Flatten", view_check, flatten_infer, view_forward, view_backward, NULL, 0, 0};
const lp_op _lp_op_Squeeze = {"Squeeze", view_check, squeeze_infer, view_forward, view_backward, NULL, 0, 0};
const lp_op _lp_op_Unsqueeze = {"Unsqueeze", view_check, unsqueeze_infer, view_forward, view_backward, NULL, 0, 0};
const lp_op _lp_op_Identity = {"Identity", view_check, ident_infer, view_forward, view_backward, NULL, 0, 0};
const lp_op _lp_op_Dropout = {"Dropout", view_check, ident_infer, view_forward, view_backward, NULL, 0, 0};
