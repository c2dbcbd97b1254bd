/* grad_methods.c — the gradient family: saliency, input_x_gradient, the SmoothGrad
 * family (NoiseTunnel's smoothgrad / smoothgrad_sq / vargrad over the raw gradient),
 * integrated_gradients, gradient_shap, and the two modified-ReLU backward passes
 * (guided_backprop, deconvnet) as rule tables. Every method is one loop over
 * (input, sample) rows in batches, so IG steps and noise samples fill each pass. */
#include "attrib_internal.h"
#include "../backend.h"
#include "../rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- the (input, sample) loop ------------------------------------------------------ */
typedef struct sampler sampler;
static lp_status make_input(_lp_xctx *x, sampler *sp, int64_t i, int64_t s, float *row);
struct sampler {
    int64_t samples;   /* rows per input */
    const char *at;    /* NULL: the input */
    const lp_rules *rules;
    int want_act;
    /* Fill the row for input i, sample s. */
    lp_status (*make)(_lp_xctx *x, sampler *sp, int64_t i, int64_t s, float *row);
    /* Fold the gradient (and activation) of that row into out_i (at_per floats). */
    void (*fold)(_lp_xctx *x, sampler *sp, int64_t i, int64_t s, const float *row, const float *grad,
                 const float *act, float *out_i);
    int64_t at_per;
    void *u;
};

static lp_status sample_loop(_lp_xctx *x, sampler *sp, float *out) {
    int64_t bs = _lp_x_batch(x), total = x->n * sp->samples;
    float *rows = lp_malloc((size_t)(bs * x->per) * sizeof *rows);
    float *grad = lp_malloc((size_t)(bs * sp->at_per) * sizeof *grad);
    float *act = sp->want_act ? lp_malloc((size_t)(bs * sp->at_per) * sizeof *act) : NULL;
    int64_t *owner = lp_malloc((size_t)bs * sizeof *owner);
    lp_status s = LP_OK;
    if (!rows || !grad || !owner || (sp->want_act && !act)) s = LP_ERR_OOM;
    x->total += total;
    for (int64_t k0 = 0; s == LP_OK && k0 < total; k0 += bs) {
        int64_t b = total - k0 < bs ? total - k0 : bs;
        /* Plain inputs are fed in place: the run may still hold their forward. */
        const float *fed = sp->make == make_input ? x->input + k0 * x->per : rows;
        for (int64_t j = 0; s == LP_OK && j < b; j++) {
            owner[j] = (k0 + j) / sp->samples;
            if (fed == rows) s = sp->make(x, sp, owner[j], (k0 + j) % sp->samples, rows + j * x->per);
        }
        if (s == LP_OK) s = _lp_x_grads(x, fed, b, owner, sp->rules, sp->at, grad, act, NULL);
        for (int64_t j = 0; s == LP_OK && j < b; j++)
            sp->fold(x, sp, owner[j], (k0 + j) % sp->samples, fed + j * x->per, grad + j * sp->at_per,
                     act ? act + j * sp->at_per : NULL, out + owner[j] * sp->at_per);
        if (s == LP_OK) _lp_x_progress(x, b);
    }
    free(rows);
    free(grad);
    free(act);
    free(owner);
    return s;
}

/* New attribution tensor for values `at` (NULL: the input), n rows. */
static lp_status new_out(_lp_xctx *x, const char *at, lp_tensor **attr, int64_t *at_per) {
    int ndim;
    int64_t shape[LP_MAX_DIMS];
    LP_TRY(_lp_x_value_size(x, at, at_per, &ndim, shape));
    return _lp_x_new_attr(attr, x->n, ndim, shape);
}

static lp_status make_input(_lp_xctx *x, sampler *sp, int64_t i, int64_t s, float *row) {
    (void)sp, (void)s;
    memcpy(row, x->input + i * x->per, (size_t)x->per * sizeof *row);
    return LP_OK;
}

/* ---- saliency, input_x_gradient, guided_backprop, deconvnet ------------------------- */
static void fold_abs(_lp_xctx *x, sampler *sp, int64_t i, int64_t s, const float *row, const float *g,
                     const float *a, float *o) {
    (void)x, (void)i, (void)s, (void)row, (void)a;
    for (int64_t p = 0; p < sp->at_per; p++) o[p] = fabsf(g[p]);
}

static void fold_copy(_lp_xctx *x, sampler *sp, int64_t i, int64_t s, const float *row, const float *g,
                      const float *a, float *o) {
    (void)x, (void)i, (void)s, (void)row, (void)a;
    memcpy(o, g, (size_t)sp->at_per * sizeof *o);
}

static void fold_times_act(_lp_xctx *x, sampler *sp, int64_t i, int64_t s, const float *row, const float *g,
                           const float *a, float *o) {
    (void)x, (void)i, (void)s, (void)row;
    for (int64_t p = 0; p < sp->at_per; p++) o[p] = g[p] * a[p];
}

/* One pass per input; `at` = opts->layer for Captum's layer attributions. */
static lp_status one_pass(_lp_xctx *x, lp_tensor **attr, const lp_rules *rules, int want_act,
                          void (*fold)(_lp_xctx *, sampler *, int64_t, int64_t, const float *, const float *,
                                       const float *, float *)) {
    sampler sp = {1, x->o->layer, rules, want_act, make_input, fold, 0, NULL};
    LP_TRY(new_out(x, sp.at, attr, &sp.at_per));
    return sample_loop(x, &sp, (*attr)->data);
}

static lp_status m_saliency(_lp_xctx *x, lp_tensor **attr) { return one_pass(x, attr, NULL, 0, fold_abs); }

static lp_status m_input_x_gradient(_lp_xctx *x, lp_tensor **attr) {
    return one_pass(x, attr, NULL, 1, fold_times_act);
}

/* Guided backprop (Springenberg et al.): at a ReLU, pass only positive gradients
 * where the input was positive. Deconvnet (Zeiler & Fergus): pass the positive part
 * of the gradient, ignoring the forward mask. As Captum, only Relu nodes change. Each
 * is one backend call that reads packed values as the Relu's own backward does, so
 * the pass may be a CUDA graph. Rules always add. */
static lp_status guided_relu(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                             lp_tensor *const *dout, lp_tensor *const *din) {
    return _lp_relu_backward(c, n, LP_UN_RELU_GUIDED, in, out, dout, din, 1);
}

static lp_status deconv_relu(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                             lp_tensor *const *dout, lp_tensor *const *din) {
    return _lp_relu_backward(c, n, LP_UN_RELU_DECONV, in, out, dout, din, 1);
}

lp_status _lp_guided_rules(lp_rules *r, int deconvnet) {
    LP_TRY(_lp_rules_new(r, NULL));
    _lp_rules_set(r, "Relu", deconvnet ? deconv_relu : guided_relu);
    r->plain_reads = 1; /* a Relu's output at most, as its own backward */
    r->packed = r->graph_safe = 1;
    return LP_OK;
}

static lp_status relu_method(_lp_xctx *x, lp_tensor **attr, int deconvnet) {
    lp_rules r;
    LP_TRY(_lp_guided_rules(&r, deconvnet));
    lp_status s = one_pass(x, attr, &r, 0, fold_copy);
    _lp_rules_free(&r);
    return s;
}

static lp_status m_guided_backprop(_lp_xctx *x, lp_tensor **attr) { return relu_method(x, attr, 0); }
static lp_status m_deconvnet(_lp_xctx *x, lp_tensor **attr) { return relu_method(x, attr, 1); }

/* ---- SmoothGrad family (Smilkov et al. 2017; Adebayo et al. 2018 for VarGrad) --------- */
typedef struct noise_state {
    float *std;      /* per input */
    int kind;        /* 0 mean, 1 mean of squares, 2 variance */
    double *sum, *sq; /* vargrad: sums of g and g^2 (n x at_per), in double: the
                       * variance is a small difference of two large means */
} noise_state;

static lp_status make_noisy(_lp_xctx *x, sampler *sp, int64_t i, int64_t s, float *row) {
    noise_state *ns = sp->u;
    const float *in = x->input + i * x->per;
    const lp_tensor *fixed = x->o->noise;
    if (fixed) {
        if (fixed->device != LP_DEVICE_CPU || lp_tensor_numel(fixed) != sp->samples * x->n * x->per)
            return lp_fail(LP_ERR_SHAPE, "fixed noise must hold samples x inputs x %lld floats on the host",
                           (long long)x->per);
        const float *nz = (const float *)fixed->data + (s * x->n + i) * x->per;
        for (int64_t p = 0; p < x->per; p++) row[p] = in[p] + nz[p];
        return LP_OK;
    }
    lp_rng r;
    lp_rng_seed(&r, x->o->seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(i * sp->samples + s + 1)));
    for (int64_t p = 0; p < x->per; p++) row[p] = in[p] + ns->std[i] * (float)lp_rng_normal(&r);
    return LP_OK;
}

static void fold_noise(_lp_xctx *x, sampler *sp, int64_t i, int64_t s, const float *row, const float *g,
                       const float *a, float *o) {
    (void)s, (void)row, (void)a;
    noise_state *ns = sp->u;
    float inv = 1.0f / (float)sp->samples;
    (void)x;
    if (ns->kind == 2) {
        double *sum = ns->sum + i * sp->at_per, *sq = ns->sq + i * sp->at_per;
        for (int64_t p = 0; p < sp->at_per; p++) {
            sum[p] += g[p];
            sq[p] += (double)g[p] * g[p];
        }
        return;
    }
    for (int64_t p = 0; p < sp->at_per; p++) o[p] += (ns->kind == 1 ? g[p] * g[p] : g[p]) * inv;
}

static lp_status noise_method(_lp_xctx *x, lp_tensor **attr, int kind) {
    noise_state ns = {lp_calloc((size_t)x->n, sizeof(float)), kind, NULL, NULL};
    sampler sp = {x->o->samples, x->o->layer, NULL, 0, make_noisy, fold_noise, 0, &ns};
    lp_status s = ns.std ? LP_OK : LP_ERR_OOM;
    for (int64_t i = 0; s == LP_OK && i < x->n; i++) {
        float lo = INFINITY, hi = -INFINITY;
        for (int64_t p = 0; p < x->per; p++) {
            float v = x->input[i * x->per + p];
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
        ns.std[i] = x->o->noise_std > 0 ? x->o->noise_std : 0.15f * (hi - lo);
    }
    if (s == LP_OK) s = new_out(x, sp.at, attr, &sp.at_per);
    if (s == LP_OK && kind == 2 && (!(ns.sum = lp_calloc((size_t)(x->n * sp.at_per), sizeof(double))) ||
                                    !(ns.sq = lp_calloc((size_t)(x->n * sp.at_per), sizeof(double)))))
        s = LP_ERR_OOM;
    if (s == LP_OK) s = sample_loop(x, &sp, (*attr)->data);
    if (s == LP_OK && kind == 2) { /* Var = E[g^2] - E[g]^2, as Captum's vargrad */
        float *o = (*attr)->data;
        double inv = 1.0 / (double)sp.samples;
        for (int64_t p = 0; p < x->n * sp.at_per; p++) {
            double mean = ns.sum[p] * inv;
            o[p] = (float)(ns.sq[p] * inv - mean * mean);
        }
    }
    free(ns.std);
    free(ns.sum);
    free(ns.sq);
    return s;
}

static lp_status m_smoothgrad(_lp_xctx *x, lp_tensor **attr) { return noise_method(x, attr, 0); }
static lp_status m_smoothgrad_sq(_lp_xctx *x, lp_tensor **attr) { return noise_method(x, attr, 1); }
static lp_status m_vargrad(_lp_xctx *x, lp_tensor **attr) { return noise_method(x, attr, 2); }

/* ---- integrated_gradients (Sundararajan et al. 2017) and gradient_shap --------------- */
typedef struct path_state {
    double *alpha, *weight; /* IG: nodes and weights on [0, 1] */
    float *base;            /* n x per baselines */
    float *noisy;           /* gradient_shap: per (i, s) the noisy input minus the baseline is needed in fold */
} path_state;

/* Nodes and weights of Gauss-Legendre on [0, 1] (Newton on P_n; as numpy's leggauss). */
static void gauss_legendre(int n, double *x, double *w) {
    for (int i = 0; i < n; i++) {
        double z = cos(M_PI * (i + 0.75) / (n + 0.5)), pp = 1;
        for (int it = 0; it < 100; it++) {
            double p0 = 1, p1 = z;
            for (int k = 2; k <= n; k++) {
                double p2 = ((2.0 * k - 1) * z * p1 - (k - 1.0) * p0) / k;
                p0 = p1;
                p1 = p2;
            }
            pp = n * (z * p1 - p0) / (z * z - 1);
            double dz = p1 / pp;
            z -= dz;
            if (fabs(dz) < 1e-15) break;
        }
        x[i] = 0.5 * (1 - z); /* ascending on [0, 1] */
        w[i] = 1.0 / ((1 - z * z) * pp * pp);
    }
}

/* Captum's approximation_parameters: alphas and step sizes for n steps. */
static void ig_nodes(lp_ig_rule rule, int n, double *a, double *w) {
    for (int k = 0; k < n; k++) w[k] = 1.0 / n;
    switch (rule) {
    case LP_IG_GAUSS_LEGENDRE: gauss_legendre(n, a, w); break;
    case LP_IG_RIEMANN_LEFT:
        for (int k = 0; k < n; k++) a[k] = n > 1 ? (1.0 - 1.0 / n) * k / (n - 1) : 0;
        break;
    case LP_IG_RIEMANN_RIGHT:
        for (int k = 0; k < n; k++) a[k] = n > 1 ? 1.0 / n + (1.0 - 1.0 / n) * k / (n - 1) : 1;
        break;
    case LP_IG_RIEMANN_MIDDLE:
        for (int k = 0; k < n; k++) a[k] = n > 1 ? 0.5 / n + (1.0 - 1.0 / n) * k / (n - 1) : 0.5;
        break;
    case LP_IG_RIEMANN_TRAPEZOID:
        /* As Captum: nodes 0..1, steps 1/n with both ends halved (they sum to 1 - 1/n). */
        for (int k = 0; k < n; k++) {
            a[k] = n > 1 ? (double)k / (n - 1) : 0.5;
            w[k] = (n > 1 && (k == 0 || k == n - 1) ? 0.5 : 1.0) / n;
        }
        break;
    }
}

static lp_status make_ig(_lp_xctx *x, sampler *sp, int64_t i, int64_t s, float *row) {
    path_state *ps = sp->u;
    const float *in = x->input + i * x->per, *b = ps->base + i * x->per;
    float a = (float)ps->alpha[s];
    for (int64_t p = 0; p < x->per; p++) row[p] = b[p] + a * (in[p] - b[p]);
    return LP_OK;
}

static void fold_ig(_lp_xctx *x, sampler *sp, int64_t i, int64_t s, const float *row, const float *g,
                    const float *a, float *o) {
    (void)row, (void)a, (void)x, (void)i;
    path_state *ps = sp->u;
    float wk = (float)ps->weight[s];
    for (int64_t p = 0; p < sp->at_per; p++) o[p] += wk * g[p];
}

static lp_status baselines(_lp_xctx *x, float **out) {
    *out = lp_malloc((size_t)(x->n * x->per) * sizeof **out);
    if (!*out) return LP_ERR_OOM;
    for (int64_t i = 0; i < x->n; i++) {
        lp_status s = _lp_x_baseline(x, i, *out + i * x->per);
        if (s != LP_OK) {
            free(*out);
            *out = NULL;
            return s;
        }
    }
    return LP_OK;
}

static lp_status layer_unsupported(_lp_xctx *x) {
    if (x->o->layer)
        return lp_fail(LP_ERR_ARG, "%s attributes at the input only; --layer works with saliency, input_x_gradient, "
                                   "smoothgrad, smoothgrad_sq, vargrad and the CAM methods", x->o->method);
    return LP_OK;
}

static lp_status m_integrated_gradients(_lp_xctx *x, lp_tensor **attr) {
    LP_TRY(layer_unsupported(x));
    int n = x->o->steps;
    path_state ps = {lp_calloc((size_t)n, sizeof(double)), lp_calloc((size_t)n, sizeof(double)), NULL, NULL};
    sampler sp = {n, NULL, NULL, 0, make_ig, fold_ig, 0, &ps};
    lp_status s = ps.alpha && ps.weight ? LP_OK : LP_ERR_OOM;
    if (s == LP_OK) ig_nodes(x->o->ig_rule, n, ps.alpha, ps.weight);
    if (s == LP_OK) s = baselines(x, &ps.base);
    if (s == LP_OK) s = new_out(x, NULL, attr, &sp.at_per);
    if (s == LP_OK) s = sample_loop(x, &sp, (*attr)->data);
    if (s == LP_OK) { /* (x - baseline) times the path integral of the gradient */
        float *o = (*attr)->data;
        for (int64_t p = 0; p < x->n * x->per; p++) o[p] *= x->input[p] - ps.base[p];
    }
    free(ps.alpha);
    free(ps.weight);
    free(ps.base);
    return s;
}

/* gradient_shap (Lundberg & Lee 2017, as Captum): per sample, noise added to the
 * input, a point drawn uniformly on the segment from the baseline, and the gradient
 * there times (noisy input - baseline); the mean over samples. */
typedef struct shap_state {
    float *base;
    float std;
} shap_state;

static lp_status shap_point(_lp_xctx *x, sampler *sp, int64_t i, int64_t s, float *noisy, float *alpha) {
    shap_state *st = sp->u;
    const float *in = x->input + i * x->per;
    const lp_tensor *fn = x->o->noise, *fa = x->o->alphas;
    if ((fn && (fn->device != LP_DEVICE_CPU || lp_tensor_numel(fn) != sp->samples * x->n * x->per)) ||
        (fa && (fa->device != LP_DEVICE_CPU || lp_tensor_numel(fa) != sp->samples * x->n)))
        return lp_fail(LP_ERR_SHAPE, "fixed noise / alphas must hold samples x inputs (x %lld) host floats",
                       (long long)x->per);
    lp_rng r;
    lp_rng_seed(&r, x->o->seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(i * sp->samples + s + 1)));
    *alpha = fa ? ((const float *)fa->data)[s * x->n + i] : (float)lp_rng_uniform(&r);
    const float *nz = fn ? (const float *)fn->data + (s * x->n + i) * x->per : NULL;
    for (int64_t p = 0; p < x->per; p++)
        noisy[p] = in[p] + (nz ? nz[p] : st->std > 0 ? st->std * (float)lp_rng_normal(&r) : 0.0f);
    return LP_OK;
}

static lp_status make_shap(_lp_xctx *x, sampler *sp, int64_t i, int64_t s, float *row) {
    shap_state *st = sp->u;
    float alpha;
    LP_TRY(shap_point(x, sp, i, s, row, &alpha));
    const float *b = st->base + i * x->per;
    for (int64_t p = 0; p < x->per; p++) row[p] = b[p] + alpha * (row[p] - b[p]);
    return LP_OK;
}

static void fold_shap(_lp_xctx *x, sampler *sp, int64_t i, int64_t s, const float *row, const float *g,
                      const float *a, float *o) {
    (void)row, (void)a;
    shap_state *st = sp->u;
    /* Recover the noisy input: row = b + alpha (noisy - b), so noisy - b = (row - b) / alpha
     * loses precision for small alpha; redraw it instead (cheap next to a pass). */
    float *noisy = lp_malloc((size_t)x->per * sizeof *noisy);
    float alpha;
    if (!noisy || shap_point(x, sp, i, s, noisy, &alpha) != LP_OK) {
        free(noisy);
        return;
    }
    const float *b = st->base + i * x->per;
    float inv = 1.0f / (float)sp->samples;
    for (int64_t p = 0; p < x->per; p++) o[p] += g[p] * (noisy[p] - b[p]) * inv;
    free(noisy);
}

static lp_status m_gradient_shap(_lp_xctx *x, lp_tensor **attr) {
    LP_TRY(layer_unsupported(x));
    shap_state st = {NULL, x->o->noise_std};
    sampler sp = {x->o->samples, NULL, NULL, 0, make_shap, fold_shap, 0, &st};
    lp_status s = baselines(x, &st.base);
    if (s == LP_OK) s = new_out(x, NULL, attr, &sp.at_per);
    if (s == LP_OK) s = sample_loop(x, &sp, (*attr)->data);
    free(st.base);
    return s;
}

const _lp_method _lp_methods_grad[] = {
    {"saliency", "|d target / d input| (Simonyan et al. 2013); pictures take the max over channels", m_saliency, _LP_KEEP_LEAN},
    {"input_x_gradient", "input times gradient", m_input_x_gradient, _LP_KEEP_LEAN},
    {"smoothgrad", "mean gradient over noisy copies (Smilkov et al. 2017)", m_smoothgrad, _LP_KEEP_LEAN},
    {"smoothgrad_sq", "mean squared gradient over noisy copies", m_smoothgrad_sq, _LP_KEEP_LEAN},
    {"vargrad", "variance of the gradient over noisy copies (Adebayo et al. 2018)", m_vargrad, _LP_KEEP_LEAN},
    {"integrated_gradients", "path integral of gradients from a baseline (Sundararajan et al. 2017)",
     m_integrated_gradients, _LP_KEEP_LEAN},
    {"gradient_shap", "expected gradients from random points between baseline and noisy input", m_gradient_shap, _LP_KEEP_LEAN},
    {"guided_backprop", "ReLUs pass only positive gradients where the input was positive (Springenberg et al. 2014)",
     m_guided_backprop, _LP_KEEP_LEAN},
    {"deconvnet", "ReLUs pass the positive part of the gradient (Zeiler & Fergus 2014)", m_deconvnet, _LP_KEEP_LEAN},
    {NULL, NULL, NULL, 0},
};
