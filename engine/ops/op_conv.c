/* op_conv.c — Conv (1-D, 2-D; groups, dilations, pads, auto_pad) and ConvTranspose
 * (2-D, and 1-D as H = 1). ConvTranspose is the adjoint of a convolution, so its
 * forward is the backend's conv_bwd_data and its data gradient is conv_fwd. */
#include "op_util.h"

#include <inttypes.h>
#include <string.h>

typedef struct conv_params {
    _lp_spatial sp;
    int64_t group;
    int n_opad, n_oshape;
    int64_t out_pad[2], out_shape[2];
} conv_params;

static lp_status conv_check(lp_model *m, lp_node *n) {
    if (n->n_in < 2 || n->n_in > 3 || n->in[0] < 0 || n->in[1] < 0)
        return _lp_op_fail(m, n, LP_ERR_PARSE, "needs inputs X, W and an optional B (got %d)", n->n_in);
    if (n->n_out != 1) return _lp_op_fail(m, n, LP_ERR_PARSE, "has %d outputs (expected 1)", n->n_out);
    conv_params *p = _lp_op_params(n, sizeof *p);
    if (!p) return LP_ERR_OOM;
    LP_TRY(_lp_spatial_parse(m, n, &p->sp));
    p->group = lp_attr_int(n, "group", 1);
    if (p->group < 1) return _lp_op_fail(m, n, LP_ERR_PARSE, "bad attribute group = %" PRId64, p->group);
    int64_t tmp[8];
    int c = lp_attr_ints(n, "output_padding", tmp, 8);
    if (c > 2) return _lp_op_fail(m, n, LP_ERR_UNSUPPORTED, "output_padding has %d entries (1-D and 2-D only)", c);
    p->n_opad = c < 0 ? 0 : c;
    for (int i = 0; i < p->n_opad; i++) p->out_pad[i] = tmp[i];
    c = lp_attr_ints(n, "output_shape", tmp, 8);
    if (c > 2) return _lp_op_fail(m, n, LP_ERR_UNSUPPORTED, "output_shape has %d entries (1-D and 2-D only)", c);
    p->n_oshape = c < 0 ? 0 : c;
    for (int i = 0; i < p->n_oshape; i++) p->out_shape[i] = tmp[i];
    return LP_OK;
}

/* Common shape checks: X N x C x [H x] W, W with the same rank, B of K entries. */
static lp_status conv_ranks(const lp_shape *in, int has_b, int *nsp) {
    char a[96], b[96];
    if (in[0].ndim != 3 && in[0].ndim != 4)
        return lp_fail(LP_ERR_UNSUPPORTED, "input is %s: only 1-D (N x C x L) and 2-D (N x C x H x W) convolutions are supported",
                       lp_shape_fmt(&in[0], a, sizeof a));
    if (in[1].ndim != in[0].ndim)
        return lp_fail(LP_ERR_SHAPE, "input %s and weight %s differ in rank", lp_shape_fmt(&in[0], a, sizeof a),
                       lp_shape_fmt(&in[1], b, sizeof b));
    if (has_b && in[2].ndim != 1)
        return lp_fail(LP_ERR_SHAPE, "bias is %s (expected 1-D)", lp_shape_fmt(&in[2], a, sizeof a));
    *nsp = in[0].ndim - 2;
    return LP_OK;
}

/* The convolution a Conv node computes, for these shapes. */
static lp_status conv_desc(const lp_node *n, const lp_shape *in, lp_conv_desc *d) {
    const conv_params *p = n->params;
    int nsp = 0;
    char a[96], b[96];
    int has_b = n->n_in > 2 && n->in[2] >= 0;
    LP_TRY(conv_ranks(in, has_b, &nsp));
    const lp_shape *x = &in[0], *w = &in[1];
    int64_t k[2], s[2], dl[2], p0[2], p1[2], sz[2] = {1, 1};
    LP_TRY(_lp_spatial_resolve(&p->sp, nsp, &x->d[2], &w->d[2], k, s, dl, p0, p1));
    int64_t C = x->d[1], K = w->d[0];
    if (C % p->group || K % p->group || w->d[1] * p->group != C)
        return lp_fail(LP_ERR_SHAPE, "input channels %" PRId64 " do not match weight's %s (group %" PRId64 ")", C,
                       lp_shape_fmt(w, a, sizeof a), p->group);
    if (has_b && in[2].d[0] != K)
        return lp_fail(LP_ERR_SHAPE, "bias has %" PRId64 " entries for %" PRId64 " output channels", in[2].d[0], K);
    for (int i = 0; i < nsp; i++) sz[2 - nsp + i] = x->d[2 + i];
    int64_t o[2];
    for (int j = 0; j < 2; j++) {
        int64_t span = sz[j] + p0[j] + p1[j] - dl[j] * (k[j] - 1) - 1;
        if (span < 0)
            return lp_fail(LP_ERR_SHAPE, "input %s is smaller than the (dilated) kernel of weight %s",
                           lp_shape_fmt(x, a, sizeof a), lp_shape_fmt(w, b, sizeof b));
        o[j] = span / s[j] + 1;
    }
    *d = (lp_conv_desc){.n = (int)x->d[0], .c = (int)C, .h = (int)sz[0], .w = (int)sz[1], .k = (int)K,
                        .oh = (int)o[0], .ow = (int)o[1], .kh = (int)k[0], .kw = (int)k[1], .sh = (int)s[0],
                        .sw = (int)s[1], .ph0 = (int)p0[0], .pw0 = (int)p0[1], .ph1 = (int)p1[0], .pw1 = (int)p1[1],
                        .dh = (int)dl[0], .dw = (int)dl[1], .groups = (int)p->group};
    return LP_OK;
}

static void set_out(lp_shape *out, int nsp, int64_t n, int64_t c, int64_t oh, int64_t ow) {
    out->ndim = 2 + nsp;
    out->d[0] = n;
    out->d[1] = c;
    if (nsp == 1)
        out->d[2] = ow;
    else {
        out->d[2] = oh;
        out->d[3] = ow;
    }
}

static lp_status conv_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    (void)in_const;
    lp_conv_desc d = {0};
    LP_TRY(conv_desc(n, in, &d));
    set_out(&out[0], in[0].ndim - 2, d.n, d.k, d.oh, d.ow);
    return LP_OK;
}

static void shape_of(lp_tensor *const *in, int count, lp_shape *s) {
    for (int i = 0; i < count; i++) {
        if (in[i])
            s[i] = lp_tensor_shape(in[i]);
        else
            memset(&s[i], 0, sizeof s[i]);
    }
}

static lp_status conv_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    lp_shape s[3];
    lp_conv_desc d = {0};
    shape_of(in, n->n_in < 3 ? n->n_in : 3, s);
    LP_TRY(conv_desc(n, s, &d));
    const float *b = n->n_in > 2 && in[2] ? in[2]->data : NULL;
    d.act = c->fuse_act;
    if ((c->pack_in & ~1u) || (c->pack_out & ~1u)) /* only X and Y may be packed */
        return lp_fail(LP_ERR_INTERNAL, "Conv: a packed weight or bias");
    d.x_packed = c->pack_in & 1;
    d.y_packed = c->pack_out & 1;
    return c->be->conv_fwd(&d, in[0]->data, in[1]->data, b, out[0]->data);
}

/* db[k] += sum of dy over N and the spatial positions. */
static lp_status bias_grad(const lp_backend *be, int64_t nb, int64_t k, int64_t hw, const float *dy, float *db) {
    int64_t a[3] = {nb, k, hw}, b[3] = {1, k, 1};
    lp_bcast bc;
    LP_TRY(lp_bcast_make(3, a, 3, b, &bc));
    return be->reduce_sum(&bc, dy, db, 1.0f, 1);
}

static lp_status conv_backward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                               lp_tensor *const *dout, lp_tensor *const *din) {
    (void)out;
    lp_shape s[3];
    lp_conv_desc d = {0};
    int nin = n->n_in < 3 ? n->n_in : 3;
    shape_of(in, nin, s);
    LP_TRY(conv_desc(n, s, &d));
    const float *dy = dout[0]->data;
    if ((c->pack_in & ~1u) || (c->pack_out & ~1u) || (c->pack_out && (din[1] || (nin > 2 && din[2]))))
        return lp_fail(LP_ERR_INTERNAL, "Conv: a packed gradient for a weight, bias or weight gradient");
    d.x_packed = c->pack_in & 1; /* lean runs: packed dx / dy */
    d.y_packed = c->pack_out & 1;
    d.overwrite = c->din_fresh & 1;
    if (din[0]) LP_TRY(c->be->conv_bwd_data(&d, dy, in[1]->data, din[0]->data));
    d.x_packed = d.y_packed = d.overwrite = 0; /* weight gradients: never packed, always added */
    float *db = nin > 2 && din[2] ? din[2]->data : NULL;
    if (din[1]) return c->be->conv_bwd_filter(&d, in[0]->data, dy, din[1]->data, db);
    if (db) return bias_grad(c->be, d.n, d.k, (int64_t)d.oh * d.ow, dy, db);
    return LP_OK;
}

static int64_t conv_macs(const lp_node *n, const lp_shape *in, const lp_shape *out) {
    (void)out;
    lp_conv_desc d = {0};
    if (conv_desc(n, in, &d) != LP_OK) return 0;
    return (int64_t)d.n * d.k * d.oh * d.ow * (d.c / d.groups) * d.kh * d.kw;
}

const lp_op _lp_op_Conv = {"Conv", conv_check, conv_infer, conv_forward, conv_backward, conv_macs, 0, 1};

/* ---- ConvTranspose -------------------------------------------------------------- */

/* The convolution whose adjoint this ConvTranspose is: it maps the ConvTranspose
 * output (N x K x OH x OW) back to its input (N x C x H x W) with the same weight
 * C x K/g x kh x kw. */
static lp_status convt_desc(const lp_node *n, const lp_shape *in, lp_conv_desc *d) {
    const conv_params *p = n->params;
    int nsp = 0;
    char a[96];
    int has_b = n->n_in > 2 && n->in[2] >= 0;
    LP_TRY(conv_ranks(in, has_b, &nsp));
    const lp_shape *x = &in[0], *w = &in[1];
    int64_t C = x->d[1], K = w->d[1] * p->group;
    if (w->d[0] != C || C % p->group)
        return lp_fail(LP_ERR_SHAPE, "input channels %" PRId64 " do not match weight's %s (group %" PRId64 ")", C,
                       lp_shape_fmt(w, a, sizeof a), p->group);
    if (has_b && in[2].d[0] != K)
        return lp_fail(LP_ERR_SHAPE, "bias has %" PRId64 " entries for %" PRId64 " output channels", in[2].d[0], K);
    if ((p->n_opad && p->n_opad != nsp) || (p->n_oshape && p->n_oshape != nsp))
        return lp_fail(LP_ERR_SHAPE, "output_padding/output_shape do not match a %d-D input", nsp);
    _lp_spatial sp = p->sp;
    sp.auto_pad = LP_PAD_NOTSET; /* ConvTranspose's SAME pads are derived from the output below */
    int64_t k[2], s[2], dl[2], p0[2], p1[2], sz[2] = {1, 1}, o[2], opad[2] = {0, 0};
    LP_TRY(_lp_spatial_resolve(&sp, nsp, &x->d[2], &w->d[2], k, s, dl, p0, p1));
    for (int i = 0; i < nsp; i++) {
        sz[2 - nsp + i] = x->d[2 + i];
        if (p->n_opad) opad[2 - nsp + i] = p->out_pad[i];
    }
    for (int j = 0; j < 2; j++) {
        int64_t full = s[j] * (sz[j] - 1) + opad[j] + (k[j] - 1) * dl[j] + 1;
        int i = j - (2 - nsp);
        if (i >= 0 && (p->n_oshape || p->sp.auto_pad == LP_PAD_SAME_UPPER || p->sp.auto_pad == LP_PAD_SAME_LOWER)) {
            int64_t want = p->n_oshape ? p->out_shape[i] : sz[j] * s[j];
            int64_t total = full - want;
            if (total < 0) total = 0;
            if (p->sp.auto_pad == LP_PAD_SAME_UPPER) {
                p0[j] = total / 2;
                p1[j] = total - total / 2;
            } else {
                p0[j] = total - total / 2;
                p1[j] = total / 2;
            }
        }
        o[j] = full - p0[j] - p1[j];
        if (o[j] < 1) return lp_fail(LP_ERR_SHAPE, "pads leave an empty output for input %s", lp_shape_fmt(x, a, sizeof a));
        if (opad[j] >= s[j] && opad[j] >= dl[j])
            return lp_fail(LP_ERR_SHAPE, "output_padding %" PRId64 " must be smaller than the stride or dilation", opad[j]);
    }
    /* The adjoint conv maps o -> sz. Output padding adds rows that see no input: the end
     * pad only sets the output count, so it is kept unless the count would come out wrong. */
    for (int j = 0; j < 2; j++)
        if ((o[j] + p0[j] + p1[j] - dl[j] * (k[j] - 1) - 1) / s[j] + 1 != sz[j]) p1[j] -= opad[j];
    *d = (lp_conv_desc){.n = (int)x->d[0], .c = (int)K, .h = (int)o[0], .w = (int)o[1], .k = (int)C,
                        .oh = (int)sz[0], .ow = (int)sz[1], .kh = (int)k[0], .kw = (int)k[1], .sh = (int)s[0],
                        .sw = (int)s[1], .ph0 = (int)p0[0], .pw0 = (int)p0[1], .ph1 = (int)p1[0],
                        .pw1 = (int)p1[1], .dh = (int)dl[0], .dw = (int)dl[1], .groups = (int)p->group};
    return LP_OK;
}

static lp_status convt_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    (void)in_const;
    lp_conv_desc d = {0};
    LP_TRY(convt_desc(n, in, &d));
    set_out(&out[0], in[0].ndim - 2, d.n, d.c, d.h, d.w);
    return LP_OK;
}

static lp_status convt_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    lp_shape s[3];
    lp_conv_desc d = {0};
    int nin = n->n_in < 3 ? n->n_in : 3;
    shape_of(in, nin, s);
    LP_TRY(convt_desc(n, s, &d));
    LP_TRY(c->be->zero(out[0]->data, out[0]->nbytes));
    LP_TRY(c->be->conv_bwd_data(&d, in[0]->data, in[1]->data, out[0]->data));
    if (nin > 2 && in[2]) {
        int64_t a[3] = {d.n, d.c, (int64_t)d.h * d.w}, b[3] = {1, d.c, 1};
        lp_bcast bc;
        LP_TRY(lp_bcast_make(3, a, 3, b, &bc));
        LP_TRY(c->be->broadcast(&bc, in[2]->data, out[0]->data, 1.0f, 1));
    }
    return LP_OK;
}

static lp_status convt_backward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                                lp_tensor *const *dout, lp_tensor *const *din) {
    (void)out;
    lp_shape s[3];
    lp_conv_desc d = {0};
    int nin = n->n_in < 3 ? n->n_in : 3;
    shape_of(in, nin, s);
    LP_TRY(convt_desc(n, s, &d));
    const float *dy = dout[0]->data;
    if (din[0]) { /* the convolution itself, added into dx as every backward does */
        lp_conv_desc da = d;
        da.accumulate = 1;
        LP_TRY(c->be->conv_fwd(&da, dy, in[1]->data, NULL, din[0]->data));
    }
    if (din[1]) LP_TRY(c->be->conv_bwd_filter(&d, dy, in[0]->data, din[1]->data, NULL));
    if (nin > 2 && din[2]) LP_TRY(bias_grad(c->be, d.n, d.c, (int64_t)d.h * d.w, dy, din[2]->data));
    return LP_OK;
}

static int64_t convt_macs(const lp_node *n, const lp_shape *in, const lp_shape *out) {
    (void)out;
    lp_conv_desc d = {0};
    if (convt_desc(n, in, &d) != LP_OK) return 0;
    return (int64_t)d.n * d.k * d.oh * d.ow * (d.c / d.groups) * d.kh * d.kw;
}

const lp_op _lp_op_ConvTranspose = {"ConvTranspose", conv_check, convt_infer, convt_forward, convt_backward,
                                    convt_macs, 0, 0};
