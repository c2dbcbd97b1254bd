/* op_slice.c — Slice (starts/ends/axes/steps with ONNX clamping) and Pad (constant,
 * reflect, edge). Their constant int64 inputs are read at inference and again at
 * run time, so a batch size that differs from the declared one still works. */
#include "op_util.h"

#include <inttypes.h>
#include <string.h>

typedef struct slice_params {
    int legacy;  /* opset < 10 Slice / < 11 Pad: attributes instead of inputs */
    int mode;    /* Pad: 0 constant, 1 reflect, 2 edge */
    float value; /* Pad opset < 11 */
} slice_params;

/* ---- Slice ------------------------------------------------------------------------- */

static lp_status slice_check(lp_model *m, lp_node *n) {
    if (n->n_in < 1 || n->n_in > 5 || n->in[0] < 0) return _lp_op_fail(m, n, LP_ERR_PARSE, "has %d inputs (expected 1 to 5)", n->n_in);
    if (n->n_out != 1) return _lp_op_fail(m, n, LP_ERR_PARSE, "has %d outputs (expected 1)", n->n_out);
    slice_params *p = _lp_op_params(n, sizeof *p);
    if (!p) return LP_ERR_OOM;
    p->legacy = n->n_in == 1;
    if (p->legacy && (!lp_node_attr(n, "starts") || !lp_node_attr(n, "ends")))
        return _lp_op_fail(m, n, LP_ERR_PARSE, "needs starts and ends (inputs or attributes)");
    if (!p->legacy && (n->n_in < 3 || n->in[1] < 0 || n->in[2] < 0))
        return _lp_op_fail(m, n, LP_ERR_PARSE, "needs starts and ends inputs");
    return LP_OK;
}

/* Read an int list from input i (or the attribute `name` for old opsets). */
static lp_status slice_list(const lp_node *n, const lp_tensor *const *cst, int i, const char *name, int64_t *dst, int *cnt) {
    const slice_params *p = n->params;
    *cnt = -1;
    if (p->legacy) {
        *cnt = lp_attr_ints(n, name, dst, LP_MAX_DIMS);
    } else if (i < n->n_in && n->in[i] >= 0) {
        if (!cst[i]) return lp_fail(LP_ERR_UNSUPPORTED, "%s is not a constant", name);
        *cnt = _lp_tensor_ints(cst[i], dst, LP_MAX_DIMS);
    }
    if (*cnt > LP_MAX_DIMS) return lp_fail(LP_ERR_SHAPE, "%s has %d entries", name, *cnt);
    return LP_OK;
}

/* Per-dim start/step and output shape for x (unsliced dims: 0 / 1 / full). */
static lp_status slice_plan(const lp_node *n, const lp_shape *x, const lp_tensor *const *cst, int64_t *start,
                            int64_t *step, lp_shape *y) {
    int64_t st[LP_MAX_DIMS], en[LP_MAX_DIMS], axes[LP_MAX_DIMS], steps[LP_MAX_DIMS];
    int ns, ne, na, nst, r = x->ndim;
    LP_TRY(slice_list(n, cst, 1, "starts", st, &ns));
    LP_TRY(slice_list(n, cst, 2, "ends", en, &ne));
    LP_TRY(slice_list(n, cst, 3, "axes", axes, &na));
    LP_TRY(slice_list(n, cst, 4, "steps", steps, &nst));
    if (ns != ne || ns < 0 || (na >= 0 && na != ns) || (nst >= 0 && nst != ns))
        return lp_fail(LP_ERR_SHAPE, "starts, ends, axes and steps differ in length");
    *y = *x;
    for (int d = 0; d < r; d++) {
        start[d] = 0;
        step[d] = 1;
    }
    int seen[LP_MAX_DIMS] = {0};
    for (int i = 0; i < ns; i++) {
        int ax = _lp_axis(na >= 0 ? axes[i] : i, r);
        if (ax < 0 || seen[ax]) return lp_fail(LP_ERR_SHAPE, "bad or repeated axis %" PRId64 " for rank %d", na >= 0 ? axes[i] : i, r);
        seen[ax] = 1;
        int64_t dim = x->d[ax], s = st[i], e = en[i], k = nst >= 0 ? steps[i] : 1;
        if (k == 0) return lp_fail(LP_ERR_SHAPE, "step 0 on axis %d", ax);
        if (s < 0) s += dim;
        if (e < 0) e += dim;
        int64_t len;
        if (k > 0) {
            s = s < 0 ? 0 : s > dim ? dim : s;
            e = e < 0 ? 0 : e > dim ? dim : e;
            len = e > s ? (e - s + k - 1) / k : 0;
        } else {
            s = s < 0 ? 0 : s > dim - 1 ? dim - 1 : s;
            e = e < -1 ? -1 : e > dim - 1 ? dim - 1 : e;
            len = s > e ? (s - e - k - 1) / -k : 0;
        }
        start[ax] = s;
        step[ax] = k;
        y->d[ax] = len;
    }
    return LP_OK;
}

static lp_status slice_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    int64_t start[LP_MAX_DIMS], step[LP_MAX_DIMS];
    return slice_plan(n, &in[0], in_const, start, step, &out[0]);
}

/* Strided copy of int64 data on the host. */
static void slice_i64(int r, const int64_t *xs, const lp_shape *y, const int64_t *start, const int64_t *step,
                      const int64_t *x, int64_t *out) {
    int64_t total = lp_shape_numel(y), xstride[LP_MAX_DIMS];
    int64_t acc = 1;
    for (int d = r - 1; d >= 0; d--) {
        xstride[d] = acc;
        acc *= xs[d];
    }
    for (int64_t i = 0; i < total; i++) {
        int64_t rem = i, off = 0;
        for (int d = r - 1; d >= 0; d--) {
            int64_t id = rem % y->d[d];
            rem /= y->d[d];
            off += (start[d] + id * step[d]) * xstride[d];
        }
        out[i] = x[off];
    }
}

static lp_status slice_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    lp_shape xs = lp_tensor_shape(in[0]), ys;
    int64_t start[LP_MAX_DIMS], step[LP_MAX_DIMS];
    LP_TRY(slice_plan(n, &xs, (const lp_tensor *const *)in, start, step, &ys));
    if (lp_shape_numel(&ys) == 0) return LP_OK;
    if (in[0]->dtype == LP_I64) {
        slice_i64(xs.ndim, xs.d, &ys, start, step, in[0]->data, out[0]->data);
        return LP_OK;
    }
    return c->be->slice_fwd(xs.ndim, xs.d, ys.d, start, step, in[0]->data, out[0]->data);
}

static lp_status slice_backward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                                lp_tensor *const *dout, lp_tensor *const *din) {
    (void)out;
    if (!din[0]) return LP_OK;
    lp_shape xs = lp_tensor_shape(in[0]), ys;
    int64_t start[LP_MAX_DIMS], step[LP_MAX_DIMS];
    LP_TRY(slice_plan(n, &xs, (const lp_tensor *const *)in, start, step, &ys));
    if (lp_shape_numel(&ys) == 0) return LP_OK;
    return c->be->slice_bwd(xs.ndim, xs.d, ys.d, start, step, dout[0]->data, din[0]->data);
}

const lp_op _lp_op_Slice = {"Slice", slice_check, slice_infer, slice_forward, slice_backward, NULL, 0, 0};

/* ---- Pad --------------------------------------------------------------------------- */

static lp_status pad_check(lp_model *m, lp_node *n) {
    if (n->n_in < 1 || n->n_in > 4 || n->in[0] < 0) return _lp_op_fail(m, n, LP_ERR_PARSE, "has %d inputs (expected 1 to 4)", n->n_in);
    if (n->n_out != 1) return _lp_op_fail(m, n, LP_ERR_PARSE, "has %d outputs (expected 1)", n->n_out);
    slice_params *p = _lp_op_params(n, sizeof *p);
    if (!p) return LP_ERR_OOM;
    const char *mode = lp_attr_string(n, "mode", "constant");
    if (!strcmp(mode, "constant")) p->mode = 0;
    else if (!strcmp(mode, "reflect")) p->mode = 1;
    else if (!strcmp(mode, "edge")) p->mode = 2;
    else return _lp_op_fail(m, n, LP_ERR_UNSUPPORTED, "pad mode '%s' is not supported (constant, reflect, edge)", mode);
    p->legacy = n->n_in == 1;
    p->value = lp_attr_float(n, "value", 0.0f);
    if (p->legacy && !lp_node_attr(n, "pads")) return _lp_op_fail(m, n, LP_ERR_PARSE, "needs pads (input or attribute)");
    if (!p->legacy && n->in[1] < 0) return _lp_op_fail(m, n, LP_ERR_PARSE, "needs a pads input");
    return LP_OK;
}

/* pads[0..r) begins, pads[r..2r) ends, for every dim (the axes input may name a subset). */
static lp_status pad_plan(const lp_node *n, const lp_shape *x, const lp_tensor *const *cst, int64_t *pads, lp_shape *y) {
    const slice_params *p = n->params;
    int64_t raw[2 * LP_MAX_DIMS], axes[LP_MAX_DIMS];
    int r = x->ndim, cnt, na = -1;
    if (p->legacy) {
        cnt = lp_attr_ints(n, "pads", raw, 2 * LP_MAX_DIMS);
    } else {
        if (!cst[1]) return lp_fail(LP_ERR_UNSUPPORTED, "pads is not a constant");
        cnt = _lp_tensor_ints(cst[1], raw, 2 * LP_MAX_DIMS);
        if (n->n_in > 3 && n->in[3] >= 0) {
            if (!cst[3]) return lp_fail(LP_ERR_UNSUPPORTED, "axes is not a constant");
            na = _lp_tensor_ints(cst[3], axes, LP_MAX_DIMS);
        }
    }
    int k = na >= 0 ? na : r;
    if (cnt != 2 * k) return lp_fail(LP_ERR_SHAPE, "pads has %d entries for %d axes", cnt, k);
    memset(pads, 0, 2 * (size_t)r * sizeof *pads);
    for (int i = 0; i < k; i++) {
        int ax = na >= 0 ? _lp_axis(axes[i], r) : i;
        if (ax < 0) return lp_fail(LP_ERR_SHAPE, "axis %" PRId64 " is out of range for rank %d", axes[i], r);
        pads[ax] = raw[i];
        pads[r + ax] = raw[k + i];
    }
    *y = *x;
    for (int d = 0; d < r; d++) {
        y->d[d] = x->d[d] + pads[d] + pads[r + d];
        if (y->d[d] < 0) return lp_fail(LP_ERR_SHAPE, "pads crop axis %d below zero", d);
        if (p->mode == 1 && (pads[d] >= x->d[d] || pads[r + d] >= x->d[d]) && (pads[d] > 0 || pads[r + d] > 0))
            return lp_fail(LP_ERR_SHAPE, "reflect pads on axis %d must be smaller than its size %" PRId64, d, x->d[d]);
    }
    return LP_OK;
}

static lp_status pad_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    int64_t pads[2 * LP_MAX_DIMS];
    return pad_plan(n, &in[0], in_const, pads, &out[0]);
}

static lp_status pad_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    const slice_params *p = n->params;
    lp_shape xs = lp_tensor_shape(in[0]), ys;
    int64_t pads[2 * LP_MAX_DIMS];
    if (in[0]->dtype != LP_F32) return lp_fail(LP_ERR_UNSUPPORTED, "Pad on int64 data is not supported");
    LP_TRY(pad_plan(n, &xs, (const lp_tensor *const *)in, pads, &ys));
    float value = p->value;
    if (!p->legacy && n->n_in > 2 && in[2]) LP_TRY(_lp_input_scalar(c, n, in, 2, &value));
    return c->be->pad_fwd(xs.ndim, xs.d, pads, p->mode, value, in[0]->data, out[0]->data);
}

static lp_status pad_backward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                              lp_tensor *const *dout, lp_tensor *const *din) {
    (void)out;
    const slice_params *p = n->params;
    if (!din[0]) return LP_OK;
    lp_shape xs = lp_tensor_shape(in[0]), ys;
    int64_t pads[2 * LP_MAX_DIMS];
    LP_TRY(pad_plan(n, &xs, (const lp_tensor *const *)in, pads, &ys));
    return c->be->pad_bwd(xs.ndim, xs.d, pads, p->mode, dout[0]->data, din[0]->data);
}

const lp_op _lp_op_Pad = {"Pad", pad_check, pad_infer, pad_forward, pad_backward, NULL, 0, 0};
