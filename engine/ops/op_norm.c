/* op_norm.c — BatchNormalization in inference mode (a per-channel affine map built
 * from scale, B, mean and var, whose per-channel arithmetic is done on the host, once
 * per weight generation when they are constants; gradients reach x and all four
 * statistics, on the device alone when they are constants), LRN, and
 * LayerNormalization. */
#include "op_util.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct bn_params {
    float eps;
} bn_params;

static lp_status bn_check(lp_model *m, lp_node *n) {
    if (n->n_in != 5) return _lp_op_fail(m, n, LP_ERR_PARSE, "needs 5 inputs X, scale, B, mean, var (got %d)", n->n_in);
    for (int i = 0; i < 5; i++)
        if (n->in[i] < 0) return _lp_op_fail(m, n, LP_ERR_PARSE, "input %d is empty", i);
    if (lp_attr_int(n, "training_mode", 0))
        return _lp_op_fail(m, n, LP_ERR_UNSUPPORTED, "training_mode = 1 is not supported (inference only)");
    for (int k = 1; k < n->n_out; k++)
        if (_lp_output_used(m, n, k))
            return _lp_op_fail(m, n, LP_ERR_UNSUPPORTED, "running mean/var outputs are not supported (inference only)");
    bn_params *p = _lp_op_params(n, sizeof *p);
    if (!p) return LP_ERR_OOM;
    p->eps = lp_attr_float(n, "epsilon", 1e-5f);
    return LP_OK;
}

static lp_status bn_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    (void)in_const;
    char a[96], b[96];
    if (in[0].ndim < 2) return lp_fail(LP_ERR_SHAPE, "input %s has no channel dim", lp_shape_fmt(&in[0], a, sizeof a));
    for (int i = 1; i < 5; i++)
        if (in[i].ndim != 1 || in[i].d[0] != in[0].d[1])
            return lp_fail(LP_ERR_SHAPE, "input %d is %s but X %s has %" PRId64 " channels", i, lp_shape_fmt(&in[i], a, sizeof a),
                           lp_shape_fmt(&in[0], b, sizeof b), in[0].d[1]);
    for (int k = 0; k < n->n_out; k++) out[k] = k == 0 ? in[0] : in[1];
    return LP_OK;
}

/* Host copies of scale, B, mean, var (4 x C floats) and r = 1/sqrt(var + eps). */
static lp_status bn_stats(lp_ctx *c, const lp_node *n, lp_tensor *const *in, int64_t C, float **host, double **r) {
    const bn_params *p = n->params;
    *r = NULL;
    *host = lp_malloc((size_t)(4 * C) * sizeof **host);
    if (!*host) return LP_ERR_OOM;
    for (int i = 0; i < 4; i++) {
        /* constants from their host copy: on a GPU a download would stall the stream */
        const lp_tensor *t = _lp_input_host(c, n, in, i + 1);
        if (!t) return lp_fail(LP_ERR_ARG, "statistic %d is not a constant", i + 1);
        lp_status s = t->device == LP_DEVICE_CPU
                          ? (memcpy(*host + i * C, t->data, (size_t)C * sizeof(float)), LP_OK)
                          : c->be->download(*host + i * C, t->data, (size_t)C * sizeof(float));
        if (s != LP_OK) return s;
    }
    *r = lp_malloc((size_t)C * sizeof **r);
    if (!*r) return LP_ERR_OOM;
    for (int64_t k = 0; k < C; k++) {
        double v = (double)(*host)[3 * C + k] + p->eps;
        if (v <= 0) return lp_fail(LP_ERR_ARG, "var + epsilon is not positive for channel %" PRId64, k);
        (*r)[k] = 1.0 / sqrt(v);
    }
    return LP_OK;
}

/* A device buffer holding `cnt` host floats. */
static lp_status to_device(const lp_backend *be, const float *host, int64_t cnt, float **dev) {
    LP_TRY(be->alloc((size_t)cnt * sizeof(float), (void **)dev));
    lp_status s = be->upload(*dev, host, (size_t)cnt * sizeof(float));
    if (s != LP_OK) be->free(*dev);
    return s;
}

/* The folded affine: aff[0, C) effective scale, aff[C, 2C) effective shift. */
static lp_status bn_affine(lp_ctx *c, const lp_node *n, lp_tensor *const *in, int64_t C, float **aff) {
    float *h = NULL;
    double *r = NULL;
    lp_status s = bn_stats(c, n, in, C, &h, &r);
    if (s == LP_OK && !(*aff = lp_malloc((size_t)(2 * C) * sizeof **aff))) s = LP_ERR_OOM;
    for (int64_t k = 0; s == LP_OK && k < C; k++) {
        double sc = h[k] * r[k];
        (*aff)[k] = (float)sc;
        (*aff)[C + k] = (float)(h[C + k] - h[2 * C + k] * sc);
    }
    free(h);
    free(r);
    return s;
}

/* The derived tensor (AUX_LEN x C floats): the folded affine, the coefficients that
 * turn sum(dy x) and sum(dy) into the statistics' gradients, and the scratch the
 * backward accumulates in (one node of one run: never two passes at once). */
enum {
    AUX_SCALE,     /* scale r: the folded affine's scale */
    AUX_SHIFT,     /* B - mean scale r */
    AUX_NEG_MEAN,  /* -mean: sum dy (x - mean) = sum dy x - mean sum dy */
    AUX_R,         /* r = (var + eps)^-1/2: d scale = r sum dy (x - mean) */
    AUX_D_MEAN,    /* -scale r: d mean = -scale r sum dy */
    AUX_D_VAR,     /* -scale r^3 / 2: d var = -scale r^3 / 2 sum dy (x - mean) */
    AUX_SUM_DYX,   /* scratch from here on */
    AUX_SUM_DY,
    AUX_CENTRED,   /* sum dy (x - mean) */
    AUX_TMP,
    AUX_LEN
};

/* With constant statistics (every exported model), the affine is folded once per
 * weight generation onto the run's device: forward and every gradient then do no
 * host work, and the pass can be a CUDA graph. */
lp_status _lp_bn_derive(lp_ctx *c, const lp_node *n, lp_tensor **aux) {
    *aux = NULL;
    for (int i = 1; i < 5; i++)
        if (!c->model->values[n->in[i]].init) return LP_OK;
    int64_t C = lp_tensor_numel(c->model->values[n->in[1]].init), shape[1] = {AUX_LEN * C};
    float *h = NULL, *a = NULL;
    double *r = NULL;
    lp_status s = bn_stats(c, n, NULL, C, &h, &r);
    if (s == LP_OK && !(a = lp_calloc((size_t)(AUX_LEN * C), sizeof *a))) s = LP_ERR_OOM;
    for (int64_t k = 0; s == LP_OK && k < C; k++) {
        double sc = h[k], rk = r[k];
        a[AUX_SCALE * C + k] = (float)(sc * rk);
        a[AUX_SHIFT * C + k] = (float)(h[C + k] - h[2 * C + k] * (sc * rk)); /* as bn_affine */
        a[AUX_NEG_MEAN * C + k] = -h[2 * C + k];
        a[AUX_R * C + k] = (float)rk;
        a[AUX_D_MEAN * C + k] = (float)(-sc * rk);
        a[AUX_D_VAR * C + k] = (float)(-0.5 * sc * rk * rk * rk);
    }
    if (s == LP_OK) s = lp_tensor_new(aux, c->be->device, LP_F32, 1, shape);
    if (s == LP_OK) s = c->be->upload((*aux)->data, a, (size_t)(AUX_LEN * C) * sizeof *a);
    if (s != LP_OK) {
        lp_tensor_free(*aux);
        *aux = NULL;
    }
    free(h);
    free(r);
    free(a);
    return s;
}

/* The statistics' gradients from the derived tensor, on the run's device: the
 * per-channel sums, then each gradient one per-channel affine map of them. */
static lp_status bn_backward_derived(lp_ctx *c, lp_tensor *const *in, lp_tensor *const *dout,
                                     lp_tensor *const *din) {
    const lp_backend *be = c->be;
    const int64_t C = in[0]->shape[1], hw = _lp_prod(in[0]->shape, 2, in[0]->ndim);
    float *a = c->aux->data;
    float *at[AUX_LEN];
    for (int i = 0; i < AUX_LEN; i++) at[i] = a + i * C;
    LP_TRY(be->zero(at[AUX_SUM_DYX], (size_t)(2 * C) * sizeof(float)));
    LP_TRY(be->channel_affine_bwd((int)in[0]->shape[0], (int)C, hw, in[0]->data, at[AUX_SCALE], dout[0]->data,
                                  din[0] ? din[0]->data : NULL, at[AUX_SUM_DYX], at[AUX_SUM_DY]));
    /* centred = sum dy x - mean sum dy (one channel a "pixel": n = 1, hw = 1) */
    LP_TRY(be->channel_affine_fwd(1, (int)C, 1, at[AUX_SUM_DY], at[AUX_NEG_MEAN], at[AUX_SUM_DYX], at[AUX_CENTRED], 0.f));
    static const int from[4] = {AUX_CENTRED, AUX_SUM_DY, AUX_SUM_DY, AUX_CENTRED};
    static const int coef[4] = {AUX_R, -1, AUX_D_MEAN, AUX_D_VAR}; /* -1: B's gradient is sum dy itself */
    for (int i = 0; i < 4; i++) {
        if (!din[i + 1]) continue;
        const float *g = at[from[i]];
        if (coef[i] >= 0) {
            LP_TRY(be->channel_affine_fwd(1, (int)C, 1, g, at[coef[i]], NULL, at[AUX_TMP], 0.f));
            g = at[AUX_TMP];
        }
        LP_TRY(_lp_acc(be, C, g, din[i + 1]->data));
    }
    return LP_OK;
}

static lp_status bn_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    int64_t C = in[0]->shape[1], hw = _lp_prod(in[0]->shape, 2, in[0]->ndim);
    if (c->aux) {
        const float *a = c->aux->data;
        return c->be->channel_affine_fwd((int)in[0]->shape[0], (int)C, hw, in[0]->data, a, a + C, out[0]->data,
                                         c->fuse_act); /* with the Relu fused into it */
    }
    float *aff = NULL, *dev = NULL;
    lp_status s = bn_affine(c, n, in, C, &aff);
    if (s == LP_OK) s = to_device(c->be, aff, 2 * C, &dev);
    if (s == LP_OK) {
        s = c->be->channel_affine_fwd((int)in[0]->shape[0], (int)C, hw, in[0]->data, dev, dev + C, out[0]->data,
                                      c->fuse_act);
        c->be->free(dev);
    }
    free(aff);
    return s;
}

static lp_status bn_backward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                             lp_tensor *const *dout, lp_tensor *const *din) {
    (void)out;
    int64_t C = in[0]->shape[1], hw = _lp_prod(in[0]->shape, 2, in[0]->ndim);
    int nb = (int)in[0]->shape[0];
    int need_stats = din[1] || din[2] || din[3] || din[4];
    if (c->aux && !need_stats) /* the input gradient alone: x's scale is the folded one */
        return din[0] ? c->be->channel_affine_bwd(nb, (int)C, hw, in[0]->data, c->aux->data, dout[0]->data,
                                                  din[0]->data, NULL, NULL)
                      : LP_OK;
    if (c->aux) return bn_backward_derived(c, in, dout, din);
    float *h = NULL, *buf = NULL, *dev = NULL;
    double *r = NULL;
    lp_status s = bn_stats(c, n, in, C, &h, &r);
    /* buf: [0,C) effective scale, [C,2C) d(eff scale), [2C,3C) d(eff shift); then 4 grads of C */
    if (s == LP_OK && !(buf = lp_calloc((size_t)(7 * C), sizeof *buf))) s = LP_ERR_OOM;
    if (s == LP_OK) {
        for (int64_t k = 0; k < C; k++) buf[k] = (float)(h[k] * r[k]);
        s = c->be->alloc((size_t)(3 * C) * sizeof(float), (void **)&dev);
    }
    if (s != LP_OK) goto out;
    s = c->be->upload(dev, buf, (size_t)(3 * C) * sizeof(float)); /* zeroes the two grad slots too */
    if (s == LP_OK)
        s = c->be->channel_affine_bwd(nb, (int)C, hw, in[0]->data, dev, dout[0]->data, din[0] ? din[0]->data : NULL,
                                      need_stats ? dev + C : NULL, need_stats ? dev + 2 * C : NULL);
    if (s == LP_OK && need_stats) s = c->be->download(buf + C, dev + C, (size_t)(2 * C) * sizeof(float));
    if (s == LP_OK && need_stats) {
        /* y = x s r + B - mean s r with r = (var + eps)^-1/2; ds' = sum dy x, dt' = sum dy. */
        float *g = buf + 3 * C;
        for (int64_t k = 0; k < C; k++) {
            double sc = h[k], mean = h[2 * C + k], rk = r[k], dsp = buf[C + k], dtp = buf[2 * C + k];
            double dxm = dsp - mean * dtp; /* sum dy (x - mean) */
            g[k] = (float)(rk * dxm);
            g[C + k] = (float)dtp;
            g[2 * C + k] = (float)(-sc * rk * dtp);
            g[3 * C + k] = (float)(-0.5 * sc * rk * rk * rk * dxm);
        }
        for (int i = 0; s == LP_OK && i < 4; i++) {
            if (!din[i + 1]) continue;
            float *d;
            s = to_device(c->be, g + i * C, C, &d);
            if (s != LP_OK) break;
            s = _lp_acc(c->be, C, d, din[i + 1]->data);
            c->be->free(d);
        }
    }
    c->be->free(dev);
out:
    free(h);
    free(r);
    free(buf);
    return s;
}

const lp_op _lp_op_BatchNormalization = {"BatchNormalization", bn_check, bn_infer, bn_forward, bn_backward, NULL, 0, 0};

/* ---- LRN --------------------------------------------------------------------------- */

typedef struct lrn_params {
    int size;
    float alpha, beta, bias;
} lrn_params;

static lp_status lrn_check(lp_model *m, lp_node *n) {
    if (n->n_in != 1 || n->in[0] < 0) return _lp_op_fail(m, n, LP_ERR_PARSE, "needs 1 input (got %d)", n->n_in);
    lrn_params *p = _lp_op_params(n, sizeof *p);
    if (!p) return LP_ERR_OOM;
    int64_t size = lp_attr_int(n, "size", -1);
    if (size < 1) return _lp_op_fail(m, n, LP_ERR_PARSE, "bad or missing attribute size (%" PRId64 ")", size);
    p->size = (int)size;
    p->alpha = lp_attr_float(n, "alpha", 1e-4f);
    p->beta = lp_attr_float(n, "beta", 0.75f);
    p->bias = lp_attr_float(n, "bias", 1.0f);
    return LP_OK;
}

static lp_status lrn_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    (void)n;
    (void)in_const;
    char a[96];
    if (in[0].ndim < 3) return lp_fail(LP_ERR_SHAPE, "input %s must be N x C x ...", lp_shape_fmt(&in[0], a, sizeof a));
    out[0] = in[0];
    return LP_OK;
}

static lp_status lrn_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    const lrn_params *p = n->params;
    const lp_tensor *x = in[0];
    return c->be->lrn_fwd((int)x->shape[0], (int)x->shape[1], _lp_prod(x->shape, 2, x->ndim), p->size, p->alpha, p->beta,
                          p->bias, x->data, out[0]->data);
}

static lp_status lrn_backward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                              lp_tensor *const *dout, lp_tensor *const *din) {
    const lrn_params *p = n->params;
    const lp_tensor *x = in[0];
    if (!din[0]) return LP_OK;
    return c->be->lrn_bwd((int)x->shape[0], (int)x->shape[1], _lp_prod(x->shape, 2, x->ndim), p->size, p->alpha, p->beta,
                          p->bias, x->data, out[0]->data, dout[0]->data, din[0]->data);
}

const lp_op _lp_op_LRN = {"LRN", lrn_check, lrn_infer, lrn_forward, lrn_backward, NULL, 0, 0};

/* ---- LayerNormalization (opset 17) ------------------------------------------------- */
/* Normalises over the dims from `axis` on, composed from backend elementwise and
 * reduction calls on an (outer, inner) view; scratch is four n-float buffers. */

typedef struct ln_params {
    int64_t axis;
    float eps;
} ln_params;

static lp_status ln_check(lp_model *m, lp_node *n) {
    if (n->n_in < 2 || n->n_in > 3 || n->in[0] < 0 || n->in[1] < 0)
        return _lp_op_fail(m, n, LP_ERR_PARSE, "needs inputs X, Scale and an optional B (got %d)", n->n_in);
    for (int k = 1; k < n->n_out; k++)
        if (_lp_output_used(m, n, k))
            return _lp_op_fail(m, n, LP_ERR_UNSUPPORTED, "the Mean / InvStdDev outputs are not supported");
    ln_params *p = _lp_op_params(n, sizeof *p);
    if (!p) return LP_ERR_OOM;
    p->axis = lp_attr_int(n, "axis", -1);
    p->eps = lp_attr_float(n, "epsilon", 1e-5f);
    return LP_OK;
}

static lp_status ln_dims(const lp_node *n, const lp_shape *in, int64_t *outer, int64_t *inner) {
    const ln_params *p = n->params;
    char a[96], b[96];
    int r = in[0].ndim, ax = _lp_axis(p->axis, r);
    if (ax < 0) return lp_fail(LP_ERR_SHAPE, "axis %" PRId64 " is out of range for rank %d", p->axis, r);
    *outer = _lp_prod(in[0].d, 0, ax);
    *inner = _lp_prod(in[0].d, ax, r);
    for (int i = 1; i < n->n_in && i < 3; i++)
        if (n->in[i] >= 0 && lp_shape_numel(&in[i]) != *inner)
            return lp_fail(LP_ERR_SHAPE, "%s %s does not match the normalised dims of X %s", i == 1 ? "Scale" : "B",
                           lp_shape_fmt(&in[i], a, sizeof a), lp_shape_fmt(&in[0], b, sizeof b));
    return LP_OK;
}

static lp_status ln_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    (void)in_const;
    int64_t o, i;
    LP_TRY(ln_dims(n, in, &o, &i));
    out[0] = in[0];
    for (int k = 1; k < n->n_out; k++) { /* Mean / InvStdDev: never computed (check refuses their use) */
        out[k] = in[0];
        out[k].ndim = 0;
    }
    return LP_OK;
}

typedef struct ln_ws {
    int64_t outer, inner;
    lp_bcast row, col, same; /* (outer, inner) against (outer, 1), (1, inner), itself */
    float *xc, *xhat, *g, *t, *mean, *rstd;
} ln_ws;

static void ln_free(const lp_backend *be, ln_ws *w) {
    float *bufs[] = {w->xc, w->xhat, w->g, w->t, w->mean, w->rstd};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) be->free(bufs[i]);
}

/* Scratch and the normalised xhat (and rstd) for input x. */
static lp_status ln_prepare(lp_ctx *c, const lp_node *n, lp_tensor *const *in, ln_ws *w) {
    const ln_params *p = n->params;
    const lp_backend *be = c->be;
    lp_shape s[3];
    memset(w, 0, sizeof *w);
    for (int i = 0; i < 3; i++) {
        if (i < n->n_in && in[i]) s[i] = lp_tensor_shape(in[i]);
        else memset(&s[i], 0, sizeof s[i]);
    }
    LP_TRY(ln_dims(n, s, &w->outer, &w->inner));
    int64_t full[2] = {w->outer, w->inner}, rowv[2] = {w->outer, 1}, colv[2] = {1, w->inner};
    LP_TRY(lp_bcast_make(2, full, 2, rowv, &w->row));
    LP_TRY(lp_bcast_make(2, full, 2, colv, &w->col));
    LP_TRY(lp_bcast_make(2, full, 2, full, &w->same));
    size_t nb = (size_t)(w->outer * w->inner) * sizeof(float), ob = (size_t)w->outer * sizeof(float);
    float **big[] = {&w->xc, &w->xhat, &w->g, &w->t};
    for (int i = 0; i < 4; i++) LP_TRY(be->alloc(nb, (void **)big[i]));
    LP_TRY(be->alloc(ob, (void **)&w->mean));
    LP_TRY(be->alloc(ob, (void **)&w->rstd));
    const float *x = in[0]->data;
    float inv = 1.0f / (float)w->inner, pp[2] = {1.0f, p->eps}, ph[2] = {-0.5f, 0.0f};
    LP_TRY(be->reduce_sum(&w->row, x, w->mean, inv, 0));
    LP_TRY(be->binary_fwd(LP_BIN_SUB, &w->row, x, w->mean, w->xc));
    LP_TRY(be->binary_fwd(LP_BIN_MUL, &w->same, w->xc, w->xc, w->t));
    LP_TRY(be->reduce_sum(&w->row, w->t, w->rstd, inv, 0));
    LP_TRY(be->unary_fwd(LP_UN_SCALE, pp, w->rstd, w->mean, w->outer)); /* var + eps, reusing mean */
    LP_TRY(be->unary_fwd(LP_UN_POW, ph, w->mean, w->rstd, w->outer));
    return be->binary_fwd(LP_BIN_MUL, &w->row, w->xc, w->rstd, w->xhat);
}

static lp_status ln_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    ln_ws w;
    lp_status s = ln_prepare(c, n, in, &w);
    if (s == LP_OK) s = c->be->binary_fwd(LP_BIN_MUL, &w.col, w.xhat, in[1]->data, n->n_in > 2 && in[2] ? w.g : out[0]->data);
    if (s == LP_OK && n->n_in > 2 && in[2]) s = c->be->binary_fwd(LP_BIN_ADD, &w.col, w.g, in[2]->data, out[0]->data);
    ln_free(c->be, &w);
    return s;
}

static lp_status ln_backward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                             lp_tensor *const *dout, lp_tensor *const *din) {
    (void)out;
    const lp_backend *be = c->be;
    const float *dy = dout[0]->data;
    ln_ws w;
    lp_status s = ln_prepare(c, n, in, &w);
    if (s != LP_OK) goto done;
    float inv = 1.0f / (float)w.inner;
    if (n->n_in > 2 && din[2] && (s = be->reduce_sum(&w.col, dy, din[2]->data, 1.0f, 1)) != LP_OK) goto done;
    if (din[1]) {
        /* dScale = sum over rows of dy * xhat */
        if ((s = be->binary_fwd(LP_BIN_MUL, &w.same, dy, w.xhat, w.t)) != LP_OK) goto done;
        if ((s = be->reduce_sum(&w.col, w.t, din[1]->data, 1.0f, 1)) != LP_OK) goto done;
    }
    if (din[0]) {
        /* dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * scale */
        if ((s = be->binary_fwd(LP_BIN_MUL, &w.col, dy, in[1]->data, w.g)) != LP_OK) goto done;
        if ((s = be->reduce_sum(&w.row, w.g, w.mean, inv, 0)) != LP_OK) goto done;           /* mean(g) */
        if ((s = be->binary_fwd(LP_BIN_SUB, &w.row, w.g, w.mean, w.xc)) != LP_OK) goto done;  /* g - mean(g) */
        if ((s = be->binary_fwd(LP_BIN_MUL, &w.same, w.g, w.xhat, w.t)) != LP_OK) goto done;
        if ((s = be->reduce_sum(&w.row, w.t, w.mean, inv, 0)) != LP_OK) goto done;           /* mean(g xhat) */
        if ((s = be->binary_fwd(LP_BIN_MUL, &w.row, w.xhat, w.mean, w.t)) != LP_OK) goto done;
        if ((s = be->binary_fwd(LP_BIN_SUB, &w.same, w.xc, w.t, w.g)) != LP_OK) goto done;
        if ((s = be->binary_fwd(LP_BIN_MUL, &w.row, w.g, w.rstd, w.t)) != LP_OK) goto done;
        s = _lp_acc(be, w.outer * w.inner, w.t, din[0]->data);
    }
done:
    ln_free(be, &w);
    return s;
}

const lp_op _lp_op_LayerNormalization = {"LayerNormalization", ln_check, ln_infer, ln_forward, ln_backward, NULL, 0, 0};
