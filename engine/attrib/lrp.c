/* lrp.c — Layer-wise Relevance Propagation (Bach et al. 2015; Montavon et al. 2019)
 * as a rule table for the executor's backward, following zennit 0.5.1 exactly:
 *  - linear layers (Conv, ConvTranspose, Gemm, MatMul with a constant weight) get the
 *    rule of the composite: LRP-0, epsilon, gamma, alpha-beta (z+ = alpha1_beta0),
 *    flat, w_square, zB box. Every rule is written as zennit's BasicHook: modified
 *    forwards z' = layer(x', W', b'), s = R / stabilize(z'), and the layer's own
 *    backward of s with W'; so one implementation serves every linear op.
 *  - activations and standalone BatchNormalization pass relevance through (zennit's
 *    Pass), Add and the average pools share it in proportion to their inputs
 *    (zennit's Norm on its Sum and AvgPool modules), MaxPool, Concat and re-layouts
 *    keep their gradient (zennit hooks nothing there). Any other op on the relevance
 *    path is an error naming the node.
 * Relevance starts as the target score on the target unit (zennit with grad_output =
 * one-hot x output); every rule is linear in the upper relevance, so the pass is run
 * from the one-hot seed and scaled by the score. */
#include "lrp_util.h"

#include <stdlib.h>
#include <string.h>

#define LRP_STAB 1e-6f /* zennit's stabilizer of every rule but epsilon */

/* ---- shared helpers (declared in lrp_util.h) ---------------------------------------- */
lp_status _lp_scratch_get(_lp_scratch *s, int64_t n, int zero, float **out) {
    if (s->n >= (int)(sizeof s->p / sizeof s->p[0])) return lp_fail(LP_ERR_INTERNAL, "LRP scratch list is full");
    void *p;
    size_t bytes = (size_t)(n > 0 ? n : 1) * sizeof(float);
    LP_TRY(s->be->alloc(bytes, &p));
    s->p[s->n++] = p;
    *out = p;
    return zero ? s->be->zero(p, bytes) : LP_OK;
}

void _lp_scratch_free(_lp_scratch *s) {
    for (int i = 0; i < s->n; i++) s->be->free(s->p[i]);
    s->n = 0;
}

lp_status _lp_ew(const lp_backend *be, lp_binary_kind k, const float *a, const float *b, float *y, int64_t n) {
    lp_bcast bc;
    LP_TRY(lp_bcast_make(1, &n, 1, &n, &bc));
    return be->binary_fwd(k, &bc, a, b, y);
}

lp_status _lp_un(const lp_backend *be, lp_unary_kind k, float p0, float p1, const float *x, float *y, int64_t n) {
    float p[2] = {p0, p1};
    return be->unary_fwd(k, p, x, y, n);
}

lp_status _lp_step(const lp_backend *be, const float *x, const float *ones, float *m, int64_t n) {
    /* y = x has the sign of relu(x) > 0, whichever of x, y a backend's ReLU gradient reads. */
    return be->unary_bwd(LP_UN_RELU, NULL, x, x, ones, m, n, 0);
}

lp_tensor _lp_view(const lp_tensor *t, void *data) {
    lp_tensor v = *t;
    v.data = data;
    v.owns = 0;
    return v;
}

lp_status _lp_node_bwd(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out, float *dout0,
                       float *const *dst) {
    lp_tensor dv = _lp_view(out[0], dout0), dins[LP_MAX_IO];
    lp_tensor *dout[LP_MAX_IO] = {&dv}, *din[LP_MAX_IO] = {0};
    for (int k = 1; k < n->n_out; k++) dout[k] = NULL;
    for (int k = 0; k < n->n_in; k++)
        if (dst[k] && in[k]) {
            dins[k] = _lp_view(in[k], dst[k]);
            din[k] = &dins[k];
        }
    return n->op->backward(c, n, in, out, dout, din);
}

/* ---- the rules ------------------------------------------------------------------------ */
typedef enum { R_GRAD = 0, R_ZERO, R_EPS, R_ZPLUS, R_AB21, R_GAMMA, R_ZBOX, R_FLAT, R_WSQ } lrp_rule;
/* Parameter variants of a linear layer (zennit's ParamMods): as is, clamped to >= 0,
 * <= 0, W + gamma W+ and W + gamma W- (biases alike), ones (Flat), squares (WSquare). */
typedef enum { P_ORIG = 0, P_POS, P_NEG, P_GPOS, P_GNEG, P_ONES, P_SQ, P_COUNT } pmod;

typedef struct node_params {
    float *w[P_COUNT], *b[P_COUNT];
} node_params;

typedef struct lrp_state {
    const lp_backend *be; /* set by the first rule that caches parameters */
    lrp_rule *rule;       /* per node */
    node_params *np;      /* per node, device buffers made on first use */
    int n_nodes;
    float eps, gamma;
    float low[3], high[3];
} lrp_state;

static int is_conv(const char *t) { return !strcmp(t, "Conv") || !strcmp(t, "ConvTranspose"); }
static int is_dense(const char *t) { return !strcmp(t, "Gemm") || !strcmp(t, "MatMul"); }

/* One parameter tensor (count floats at src) in variant pm into a new buffer. */
static lp_status make_param(const lp_backend *be, node_params *np, int slot_b, pmod pm, float gamma,
                            const float *src, int64_t cnt, float **dst) {
    void *p;
    LP_TRY(be->alloc((size_t)cnt * sizeof(float), &p));
    float *y = p;
    *dst = y;
    switch (pm) {
    case P_POS: return _lp_un(be, LP_UN_RELU, 0, 0, src, y, cnt);
    case P_NEG: /* min(w, 0) = -relu(-w) */
        LP_TRY(_lp_un(be, LP_UN_NEG, 0, 0, src, y, cnt));
        LP_TRY(_lp_un(be, LP_UN_RELU, 0, 0, y, y, cnt));
        return _lp_un(be, LP_UN_NEG, 0, 0, y, y, cnt);
    case P_GPOS:
    case P_GNEG: {
        float *part = slot_b ? np->b[pm == P_GPOS ? P_POS : P_NEG] : np->w[pm == P_GPOS ? P_POS : P_NEG];
        LP_TRY(be->copy(y, src, (size_t)cnt * sizeof(float)));
        return be->axpy(cnt, gamma, part, y);
    }
    case P_ONES: return be->fill(cnt, slot_b ? 0.0f : 1.0f, y); /* Flat zeroes the bias */
    case P_SQ: return _lp_ew(be, LP_BIN_MUL, src, src, y, cnt);
    default: return lp_fail(LP_ERR_INTERNAL, "LRP: bad parameter variant %d", (int)pm);
    }
}

/* Weight and bias of variant pm for node n (bias NULL when the layer has none; zeros
 * for Flat). Cached per node for the whole explanation. */
static lp_status params(lrp_state *st, lp_ctx *c, const lp_node *n, lp_tensor *const *in, pmod pm, float **w,
                        float **b) {
    int has_b = n->n_in > 2 && in[2];
    if (pm == P_ORIG) {
        *w = in[1]->data;
        *b = has_b ? in[2]->data : NULL;
        return LP_OK;
    }
    node_params *np = &st->np[n - c->model->nodes];
    st->be = c->be;
    if (pm == P_GPOS || pm == P_GNEG) { /* built from the clamped ones */
        float *tw, *tb;
        LP_TRY(params(st, c, n, in, pm == P_GPOS ? P_POS : P_NEG, &tw, &tb));
    }
    if (!np->w[pm]) LP_TRY(make_param(c->be, np, 0, pm, st->gamma, in[1]->data, lp_tensor_numel(in[1]), &np->w[pm]));
    if (has_b && !np->b[pm])
        LP_TRY(make_param(c->be, np, 1, pm, st->gamma, in[2]->data, lp_tensor_numel(in[2]), &np->b[pm]));
    *w = np->w[pm];
    *b = has_b ? np->b[pm] : NULL;
    return LP_OK;
}

/* z = layer(x, W', b') with the variant pm; bias dropped unless use_bias. */
static lp_status lin_fwd(lrp_state *st, lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                         const float *x, pmod pm, int use_bias, float *z) {
    float *w, *b, *w1, *zb;
    LP_TRY(params(st, c, n, in, pm, &w, &b));
    /* The ops read the bias shape from the tensor, so a dropped bias is a zero one. */
    if (b && !use_bias) LP_TRY(params(st, c, n, in, P_ONES, &w1, &zb));
    lp_tensor tx = _lp_view(in[0], (void *)x), tw = _lp_view(in[1], w), tb, tz = _lp_view(out[0], z);
    lp_tensor *vin[LP_MAX_IO] = {&tx, &tw, NULL}, *vout[LP_MAX_IO] = {&tz};
    if (b) {
        tb = _lp_view(in[2], use_bias ? b : zb);
        vin[2] = &tb;
    }
    return n->op->forward(c, n, vin, vout);
}

/* g += (d layer / d x with W')^T s. */
static lp_status lin_bwd(lrp_state *st, lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                         float *s, pmod pm, float *g) {
    float *w, *b;
    LP_TRY(params(st, c, n, in, pm, &w, &b));
    lp_tensor tw = _lp_view(in[1], w);
    lp_tensor *vin[LP_MAX_IO] = {in[0], &tw, n->n_in > 2 ? in[2] : NULL};
    float *dst[LP_MAX_IO] = {g};
    return _lp_node_bwd(c, n, vin, out, s, dst);
}

/* s = r / (z + eps sign(z)), sign(0) = +1 (zennit's stabilize). tmp: 2 x cnt scratch,
 * ones: cnt ones. s may alias z. */
static lp_status stab_div(const lp_backend *be, const float *r, const float *z, float eps, float *s, float *tmp,
                          const float *ones, int64_t cnt) {
    float *neg = tmp, *m = tmp + cnt;
    LP_TRY(_lp_un(be, LP_UN_NEG, 0, 0, z, neg, cnt));
    LP_TRY(_lp_step(be, neg, ones, m, cnt)); /* m = [z < 0] */
    LP_TRY(_lp_un(be, LP_UN_SCALE, 1.0f, eps, z, neg, cnt));
    LP_TRY(be->axpy(cnt, -2.0f * eps, m, neg));
    return _lp_ew(be, LP_BIN_DIV, r, neg, s, cnt);
}

/* dx += coef * xf * g (xf NULL: ones); g is clobbered. */
static lp_status add_term(const lp_backend *be, const float *xf, float *g, float coef, float *dx, int64_t cnt) {
    if (xf) LP_TRY(_lp_ew(be, LP_BIN_MUL, xf, g, g, cnt));
    return be->axpy(cnt, coef, g, dx);
}

static lp_status lin_rule(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                          lp_tensor *const *dout, lp_tensor *const *din) {
    lrp_state *st = c->rule_user;
    const lp_backend *be = c->be;
    if (!din[0] || !dout[0]) return LP_OK;
    lrp_rule rule = st->rule[n - c->model->nodes];
    if (rule == R_GRAD) return n->op->backward(c, n, in, out, dout, din);
    if (n->n_in < 2 || n->in[1] < 0 || !c->model->values[n->in[1]].init)
        return lp_fail(LP_ERR_UNSUPPORTED, "LRP treats %s as a linear layer and needs its weight to be a constant",
                       n->op_type);
    int64_t nx = lp_tensor_numel(in[0]), ny = lp_tensor_numel(out[0]);
    const float *x = in[0]->data, *r = dout[0]->data;
    float *dx = din[0]->data;
    _lp_scratch sc = {be, {0}, 0};
    float *ones = NULL, *tmp = NULL, *s = NULL, *s2 = NULL, *g = NULL, *xp = NULL, *xn = NULL, *z2 = NULL;
    lp_status e = _lp_scratch_get(&sc, ny, 0, &ones);
    if (e == LP_OK) e = be->fill(ny, 1.0f, ones);
    if (e == LP_OK) e = _lp_scratch_get(&sc, 2 * ny, 0, &tmp);
    if (e == LP_OK) e = _lp_scratch_get(&sc, ny, 0, &s);
    if (e == LP_OK) e = _lp_scratch_get(&sc, ny, 0, &s2);
    if (e == LP_OK) e = _lp_scratch_get(&sc, ny, 0, &z2);
    if (e == LP_OK) e = _lp_scratch_get(&sc, nx, 0, &g);
    if (e == LP_OK && (rule == R_ZPLUS || rule == R_AB21 || rule == R_GAMMA)) { /* x+ and x- */
        e = _lp_scratch_get(&sc, nx, 0, &xp);
        if (e == LP_OK) e = _lp_scratch_get(&sc, nx, 0, &xn);
        if (e == LP_OK) e = _lp_un(be, LP_UN_RELU, 0, 0, x, xp, nx);
        if (e == LP_OK) e = _lp_ew(be, LP_BIN_SUB, x, xp, xn, nx);
    }
    size_t gb = (size_t)nx * sizeof(float);
#define T(call) \
    if (e == LP_OK) e = (call)
    switch (rule) {
    case R_ZERO:
    case R_EPS: /* x W^T (R / stab(z)); z is the forward's output */
        T(stab_div(be, r, out[0]->data, rule == R_EPS ? st->eps : 1e-30f, s, tmp, ones, ny));
        T(be->zero(g, gb));
        T(lin_bwd(st, c, n, in, out, s, P_ORIG, g));
        T(add_term(be, x, g, 1.0f, dx, nx));
        break;
    case R_ZPLUS: /* z = W+ x+ + b+ + W- x-, R_in = x+ W+^T s + x- W-^T s */
    case R_AB21: { /* alpha 2 (the z+ part) minus beta 1 (z- = W- x+ + b- + W+ x-) */
        T(lin_fwd(st, c, n, in, out, xp, P_POS, 1, s));
        T(lin_fwd(st, c, n, in, out, xn, P_NEG, 0, z2));
        T(be->axpy(ny, 1.0f, z2, s));
        T(stab_div(be, r, s, LRP_STAB, s, tmp, ones, ny));
        float a = rule == R_AB21 ? 2.0f : 1.0f;
        T(be->zero(g, gb));
        T(lin_bwd(st, c, n, in, out, s, P_POS, g));
        T(add_term(be, xp, g, a, dx, nx));
        T(be->zero(g, gb));
        T(lin_bwd(st, c, n, in, out, s, P_NEG, g));
        T(add_term(be, xn, g, a, dx, nx));
        if (rule == R_ZPLUS) break;
        T(lin_fwd(st, c, n, in, out, xp, P_NEG, 1, s));
        T(lin_fwd(st, c, n, in, out, xn, P_POS, 0, z2));
        T(be->axpy(ny, 1.0f, z2, s));
        T(stab_div(be, r, s, LRP_STAB, s, tmp, ones, ny));
        T(be->zero(g, gb));
        T(lin_bwd(st, c, n, in, out, s, P_NEG, g));
        T(add_term(be, xp, g, -1.0f, dx, nx));
        T(be->zero(g, gb));
        T(lin_bwd(st, c, n, in, out, s, P_POS, g));
        T(add_term(be, xn, g, -1.0f, dx, nx));
        break;
    }
    case R_GAMMA: {
        /* Generalised gamma (zennit): where z > 0, R / stab(W'+ x+ + b'+ + W'- x-) with
         * W'+- = W + gamma W+-, where z < 0 the mirrored sum; summed over both. */
        float *mask = z2;
        for (int neg = 0; neg < 2; neg++) {
            pmod pa = neg ? P_GNEG : P_GPOS, pb = neg ? P_GPOS : P_GNEG;
            float *sx = neg ? s2 : s;
            T(lin_fwd(st, c, n, in, out, xp, pa, 1, sx));
            T(lin_fwd(st, c, n, in, out, xn, pb, 0, tmp));
            T(be->axpy(ny, 1.0f, tmp, sx));
            T(stab_div(be, r, sx, LRP_STAB, sx, tmp, ones, ny));
            if (neg) T(_lp_un(be, LP_UN_NEG, 0, 0, out[0]->data, tmp, ny));
            T(_lp_step(be, neg ? tmp : (const float *)out[0]->data, ones, mask, ny));
            T(_lp_ew(be, LP_BIN_MUL, sx, mask, sx, ny));
        }
        /* x+ (W'+^T s+ + W'-^T s-) + x- (W'-^T s+ + W'+^T s-) */
        T(be->zero(g, gb));
        T(lin_bwd(st, c, n, in, out, s, P_GPOS, g));
        T(lin_bwd(st, c, n, in, out, s2, P_GNEG, g));
        T(add_term(be, xp, g, 1.0f, dx, nx));
        T(be->zero(g, gb));
        T(lin_bwd(st, c, n, in, out, s, P_GNEG, g));
        T(lin_bwd(st, c, n, in, out, s2, P_GPOS, g));
        T(add_term(be, xn, g, 1.0f, dx, nx));
        break;
    }
    case R_ZBOX: { /* z = (W x + b) - (W+ l + b+) - (W- h + b-) */
        float *lo = NULL, *hi = NULL, *cb = NULL;
        T(_lp_scratch_get(&sc, nx, 0, &lo));
        T(_lp_scratch_get(&sc, nx, 0, &hi));
        T(_lp_scratch_get(&sc, 3, 0, &cb));
        int ch = in[0]->ndim >= 3 ? (int)in[0]->shape[1] : 1;
        for (int k = 0; k < 2 && e == LP_OK; k++) { /* per-channel bounds, broadcast to x's shape */
            const float *src = k ? st->high : st->low;
            float *dst = k ? hi : lo;
            if (ch == 3) {
                int64_t full[3] = {in[0]->shape[0], 3, nx / (in[0]->shape[0] * 3)}, one[3] = {1, 3, 1};
                lp_bcast bc;
                T(be->upload(cb, src, 3 * sizeof(float)));
                T(lp_bcast_make(3, full, 3, one, &bc));
                T(be->broadcast(&bc, cb, dst, 1.0f, 0));
            } else {
                T(be->fill(nx, src[0], dst));
            }
        }
        T(lin_fwd(st, c, n, in, out, lo, P_POS, 1, s));
        T(lin_fwd(st, c, n, in, out, hi, P_NEG, 1, z2));
        T(be->axpy(ny, 1.0f, z2, s));
        T(_lp_ew(be, LP_BIN_SUB, out[0]->data, s, s, ny));
        T(stab_div(be, r, s, LRP_STAB, s, tmp, ones, ny));
        T(be->zero(g, gb));
        T(lin_bwd(st, c, n, in, out, s, P_ORIG, g));
        T(add_term(be, x, g, 1.0f, dx, nx));
        T(be->zero(g, gb));
        T(lin_bwd(st, c, n, in, out, s, P_POS, g));
        T(add_term(be, lo, g, -1.0f, dx, nx));
        T(be->zero(g, gb));
        T(lin_bwd(st, c, n, in, out, s, P_NEG, g));
        T(add_term(be, hi, g, -1.0f, dx, nx));
        break;
    }
    case R_FLAT:   /* ones for inputs and weights, no bias: R shared by receptive field */
    case R_WSQ: {  /* ones for inputs, squared weights (and bias, as zennit squares all) */
        pmod pm = rule == R_FLAT ? P_ONES : P_SQ;
        float *x1 = g;
        T(be->fill(nx, 1.0f, x1));
        T(lin_fwd(st, c, n, in, out, x1, pm, 1, s));
        T(stab_div(be, r, s, LRP_STAB, s, tmp, ones, ny));
        T(lin_bwd(st, c, n, in, out, s, pm, dx));
        break;
    }
    default: e = lp_fail(LP_ERR_INTERNAL, "LRP: bad rule %d", (int)rule);
    }
#undef T
    _lp_scratch_free(&sc);
    return e;
}

/* zennit's Pass: relevance goes through unchanged (activations, standalone BatchNorm). */
static lp_status pass_rule(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                           lp_tensor *const *dout, lp_tensor *const *din) {
    (void)n, (void)in, (void)out;
    if (!din[0] || !dout[0]) return LP_OK;
    return c->be->axpy(lp_tensor_numel(dout[0]), 1.0f, dout[0]->data, din[0]->data);
}

/* zennit's Norm: R_k = x_k (d y / d x_k)^T (R / stab(y)) — each input of a sum (or
 * average) gets relevance in proportion to its contribution. */
static lp_status norm_rule(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                           lp_tensor *const *dout, lp_tensor *const *din) {
    const lp_backend *be = c->be;
    if (!dout[0]) return LP_OK;
    int64_t ny = lp_tensor_numel(out[0]);
    _lp_scratch sc = {be, {0}, 0};
    float *ones = NULL, *tmp = NULL, *s = NULL, *g[LP_MAX_IO] = {0};
    lp_status e = _lp_scratch_get(&sc, ny, 0, &ones);
    if (e == LP_OK) e = be->fill(ny, 1.0f, ones);
    if (e == LP_OK) e = _lp_scratch_get(&sc, 2 * ny, 0, &tmp);
    if (e == LP_OK) e = _lp_scratch_get(&sc, ny, 0, &s);
    if (e == LP_OK) e = stab_div(be, dout[0]->data, out[0]->data, LRP_STAB, s, tmp, ones, ny);
    int any = 0;
    for (int k = 0; k < n->n_in && k < LP_MAX_IO && e == LP_OK; k++)
        if (din[k]) {
            e = _lp_scratch_get(&sc, lp_tensor_numel(in[k]), 1, &g[k]);
            any = 1;
        }
    if (e == LP_OK && any) e = _lp_node_bwd(c, n, in, out, s, g);
    for (int k = 0; k < n->n_in && k < LP_MAX_IO && e == LP_OK; k++)
        if (din[k]) e = add_term(be, in[k]->data, g[k], 1.0f, din[k]->data, lp_tensor_numel(in[k]));
    _lp_scratch_free(&sc);
    return e;
}

static lp_status no_rule(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                         lp_tensor *const *dout, lp_tensor *const *din) {
    (void)c, (void)in, (void)out, (void)dout, (void)din;
    return lp_fail(LP_ERR_UNSUPPORTED,
                   "LRP has no rule for %s on the relevance path (rules exist for Conv, ConvTranspose, Gemm, "
                   "MatMul, activations, BatchNormalization, Add, pools, ReduceMean/Sum, Concat and re-layouts)",
                   n->op_type);
}

/* Ops whose gradient is their LRP rule: max pooling (winner takes all) and ops that
 * only move values around. */
static const char *const grad_ops[] = {"MaxPool", "GlobalMaxPool", "Concat", "Split", "Flatten", "Reshape",
                                       "Transpose", "Squeeze", "Unsqueeze", "Pad", "Dropout", "Identity",
                                       "Slice", "Gather", "Expand"};
static const char *const pass_ops[] = {"Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish",
                                       "Gelu", "Tanh", "BatchNormalization"};
static const char *const norm_ops[] = {"Add", "AveragePool", "GlobalAveragePool", "ReduceMean", "ReduceSum"};
static const char *const lin_ops[] = {"Conv", "ConvTranspose", "Gemm", "MatMul"};

#define COUNT(a) ((int)(sizeof a / sizeof a[0]))

static lp_status lrp_rules(lp_rules *r, lrp_state *st) {
    LP_TRY(_lp_rules_new(r, st));
    /* Every op an error unless listed: relevance must not cross an op silently. */
    char name[64];
    const char *p = lp_op_list();
    while (*p) {
        size_t len = strcspn(p, ",");
        if (len < sizeof name) {
            memcpy(name, p, len);
            name[len] = 0;
            _lp_rules_set(r, name, no_rule);
        }
        p += len;
        while (*p == ',' || *p == ' ') p++;
    }
    for (int i = 0; i < COUNT(grad_ops); i++) {
        const lp_op *op = lp_op_find(grad_ops[i]);
        if (op) _lp_rules_set(r, grad_ops[i], op->backward);
    }
    for (int i = 0; i < COUNT(pass_ops); i++) _lp_rules_set(r, pass_ops[i], pass_rule);
    for (int i = 0; i < COUNT(norm_ops); i++) _lp_rules_set(r, norm_ops[i], norm_rule);
    for (int i = 0; i < COUNT(lin_ops); i++) _lp_rules_set(r, lin_ops[i], lin_rule);
    return LP_OK;
}

/* Composites as zennit names them: (first layer, other convolutions, dense layers);
 * first R_GRAD: no special first layer. first_conv: the first map matches
 * convolutions only (epsilon_gamma_box). */
typedef struct composite {
    const char *name;
    lrp_rule first, conv, dense;
    int first_conv;
} composite;

static const composite composites[] = {
    {"epsilon_plus_flat", R_FLAT, R_ZPLUS, R_EPS, 0},
    {"epsilon_gamma_box", R_ZBOX, R_GAMMA, R_EPS, 1},
    {"epsilon_plus", R_GRAD, R_ZPLUS, R_EPS, 0},
    {"epsilon_alpha2_beta1", R_GRAD, R_AB21, R_EPS, 0},
    {"epsilon_alpha2_beta1_flat", R_FLAT, R_AB21, R_EPS, 0},
    {"zero", R_ZERO, R_ZERO, R_ZERO, 0},
    {"epsilon", R_EPS, R_EPS, R_EPS, 0},
    {"gamma", R_GAMMA, R_GAMMA, R_GAMMA, 0},
    {"alpha2_beta1", R_AB21, R_AB21, R_AB21, 0},
    {"alpha1_beta0", R_ZPLUS, R_ZPLUS, R_ZPLUS, 0},
    {"flat", R_FLAT, R_FLAT, R_FLAT, 0},
    {"w_square", R_WSQ, R_WSQ, R_WSQ, 0},
};

static lp_status assign_rules(_lp_xctx *x, lrp_state *st) {
    const composite *cp = NULL;
    for (int i = 0; i < COUNT(composites); i++)
        if (!strcmp(x->o->lrp, composites[i].name)) cp = &composites[i];
    if (!cp) {
        char list[512];
        size_t o = 0;
        for (int i = 0; i < COUNT(composites) && o < sizeof list; i++)
            o += (size_t)snprintf(list + o, sizeof list - o, i ? ", %s" : "%s", composites[i].name);
        return lp_fail(LP_ERR_ARG, "unknown LRP composite or rule '%s' (valid: %s)", x->o->lrp, list);
    }
    int first_done = 0;
    for (int i = 0; i < st->n_nodes; i++) {
        const char *t = x->m->nodes[i].op_type;
        int conv = is_conv(t), dense = is_dense(t);
        if (!conv && !dense) continue;
        st->rule[i] = conv ? cp->conv : cp->dense;
        if (cp->first != R_GRAD && !first_done && (conv || !cp->first_conv)) { /* the first match of the first map */
            st->rule[i] = cp->first;
            first_done = 1;
        }
    }
    return LP_OK;
}

static lp_status m_lrp(_lp_xctx *x, lp_tensor **attr) {
    if (x->o->layer)
        return lp_fail(LP_ERR_ARG, "lrp attributes at the input only; --layer works with saliency, "
                                   "input_x_gradient, smoothgrad, smoothgrad_sq, vargrad and the CAM methods");
    lrp_state st = {0};
    st.n_nodes = x->m->n_nodes;
    st.eps = x->o->epsilon;
    st.gamma = x->o->gamma;
    memcpy(st.low, x->o->low, sizeof st.low);
    memcpy(st.high, x->o->high, sizeof st.high);
    st.rule = lp_calloc((size_t)st.n_nodes + 1, sizeof *st.rule);
    st.np = lp_calloc((size_t)st.n_nodes + 1, sizeof *st.np);
    lp_rules r = {0};
    lp_status s = st.rule && st.np ? LP_OK : LP_ERR_OOM;
    if (s == LP_OK) s = assign_rules(x, &st);
    if (s == LP_OK) s = lrp_rules(&r, &st);
    if (s == LP_OK) s = _lp_x_input_grads(x, &r, attr);
    for (int64_t i = 0; s == LP_OK && i < x->n; i++) { /* relevance starts as the score */
        float *o = (float *)(*attr)->data + i * x->per;
        for (int64_t p = 0; p < x->per; p++) o[p] *= x->scores[i];
    }
    for (int i = 0; st.np && st.be && i < st.n_nodes; i++)
        for (int k = 0; k < P_COUNT; k++) {
            if (st.np[i].w[k]) st.be->free(st.np[i].w[k]);
            if (st.np[i].b[k]) st.be->free(st.np[i].b[k]);
        }
    if (r.fn) _lp_rules_free(&r);
    free(st.rule);
    free(st.np);
    return s;
}

/* lrp_deeplift.c */
lp_status _lp_m_deeplift(_lp_xctx *x, lp_tensor **attr);

const _lp_method _lp_methods_lrp[] = {
    {"lrp", "layer-wise relevance propagation with zennit's composites (Bach et al. 2015; Montavon et al. 2019)",
     m_lrp, _LP_KEEP_ALL},
    {"deeplift", "DeepLIFT rescale rule against a baseline, as Captum (Shrikumar et al. 2017)", _lp_m_deeplift, _LP_KEEP_ALL},
    {NULL, NULL, NULL, 0},
};
