/* test_ops_grad.c — the op test harness: for every differentiable op, on small random
 * shapes and several attribute variants, the analytic backward for every float input
 * (data, weights, bias) is compared with central finite differences of the objective
 * L = sum(w_r * y) for a fixed random w_r. Forward runs in float32, differences are
 * taken in double. Tolerance: max |analytic - numeric| <= 1e-2 * max(1, max |grad|).
 * Nodes are built with the builder API so check()/infer() run as for real models.
 * Also: registry, error messages, MACs and the int64 (folding) forwards.
 * With LOUPE_OPS_TWIN=cuda (CTest gpu.ops_twins) every op's forward and backward also
 * runs on the CUDA backend on the same inputs and must match the CPU's (rel L2 <=
 * TWIN_TOL); without a GPU that run prints "SKIPPED: ..." and exits 0.
 * Run: build-X/tests/test_ops_grad (or ctest -R ops_grad). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "testutil.h"

#define S(...) ((const int64_t[]){__VA_ARGS__})
#define NS(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), S(__VA_ARGS__)

/* ---- the harness ------------------------------------------------------------------ */

typedef struct gc {
    lp_model *m;
    tu_rng rng;
    const char *op;
    int n_in, n_out, node;
    char in_names[LP_MAX_IO][32];
    lp_tensor *data[LP_MAX_IO]; /* graph inputs: owned here; initializers: the model's */
    int owned[LP_MAX_IO];
    int want_grad[LP_MAX_IO];
} gc;

static void gc_init(gc *g, const char *op, uint64_t seed) {
    memset(g, 0, sizeof *g);
    g->m = lp_model_new();
    assert_non_null(g->m);
    g->m->opset = 17;
    g->rng.s = seed;
    g->op = op;
}

static lp_tensor *new_tensor(lp_dtype dt, int nd, const int64_t *shape) {
    lp_tensor *t = NULL;
    assert_int_equal(lp_tensor_new(&t, LP_DEVICE_CPU, dt, nd, shape), LP_OK);
    return t;
}

/* A float graph input (gradient checked) with values uniform in [lo, hi]. */
static float *gc_input(gc *g, int nd, const int64_t *shape, float lo, float hi) {
    int i = g->n_in++;
    snprintf(g->in_names[i], sizeof g->in_names[i], "x%d", i);
    lp_shape s = {.ndim = nd};
    for (int d = 0; d < nd; d++) s.d[d] = shape[d];
    assert_true(lp_model_add_input(g->m, g->in_names[i], &s) >= 0);
    g->data[i] = new_tensor(LP_F32, nd, shape);
    g->owned[i] = 1;
    g->want_grad[i] = 1;
    tu_fill_uniform(&g->rng, g->data[i]->data, lp_tensor_numel(g->data[i]), lo, hi);
    return g->data[i]->data;
}

/* A float initializer: a trainable weight (gradient checked) or a constant (not). */
static float *gc_init_f(gc *g, int nd, const int64_t *shape, float lo, float hi, int is_param) {
    int i = g->n_in++;
    snprintf(g->in_names[i], sizeof g->in_names[i], "w%d", i);
    lp_tensor *t = new_tensor(LP_F32, nd, shape);
    tu_fill_uniform(&g->rng, t->data, lp_tensor_numel(t), lo, hi);
    assert_true(lp_model_add_initializer(g->m, g->in_names[i], t, is_param) >= 0);
    g->data[i] = t;
    g->want_grad[i] = is_param;
    return t->data;
}
static float *gc_weight(gc *g, int nd, const int64_t *shape, float lo, float hi) { return gc_init_f(g, nd, shape, lo, hi, 1); }

/* A float constant holding exactly these values. */
static void gc_fconst(gc *g, int nd, const int64_t *shape, const float *v) {
    float *d = gc_init_f(g, nd, shape, 0, 0, 0);
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    memcpy(d, v, (size_t)n * sizeof *d);
}

/* A 1-D int64 constant (shapes, axes, pads, indices). */
static void gc_ints(gc *g, int cnt, const int64_t *v) {
    int i = g->n_in++;
    snprintf(g->in_names[i], sizeof g->in_names[i], "c%d", i);
    lp_tensor *t = new_tensor(LP_I64, 1, (int64_t[]){cnt});
    memcpy(t->data, v, (size_t)cnt * sizeof *v);
    assert_true(lp_model_add_initializer(g->m, g->in_names[i], t, 0) >= 0);
    g->data[i] = t;
}

static void gc_none(gc *g) { g->in_names[g->n_in++][0] = 0; }

/* Values of input i moved at least `margin` away from `kink` (for Relu, Clip, Abs...). */
static void gc_avoid(gc *g, int i, float kink, float margin) {
    float *x = g->data[i]->data;
    for (int64_t j = 0; j < lp_tensor_numel(g->data[i]); j++)
        if (fabsf(x[j] - kink) < margin) x[j] = kink + (x[j] >= kink ? margin : -margin);
}

/* Input i filled with distinct values spaced by `gap` in random order (max pools: no ties). */
static void gc_distinct(gc *g, int i, float gap) {
    float *x = g->data[i]->data;
    int64_t n = lp_tensor_numel(g->data[i]);
    for (int64_t j = 0; j < n; j++) x[j] = (float)(j - n / 2) * gap;
    for (int64_t j = n - 1; j > 0; j--) {
        int64_t k = (int64_t)(tu_next(&g->rng) % (uint64_t)(j + 1));
        float t = x[j];
        x[j] = x[k];
        x[k] = t;
    }
}

static lp_node *gc_node(gc *g, int n_out) {
    const char *in[LP_MAX_IO] = {0}, *out[LP_MAX_IO] = {0};
    char onames[LP_MAX_IO][16];
    for (int i = 0; i < g->n_in; i++) in[i] = g->in_names[i];
    for (int k = 0; k < n_out; k++) {
        snprintf(onames[k], sizeof onames[k], "y%d", k);
        out[k] = onames[k];
    }
    g->node = lp_model_add_node(g->m, g->op, "n0", g->n_in, in, n_out, out);
    assert_true(g->node >= 0);
    for (int k = 0; k < n_out; k++) lp_model_mark_output(g->m, onames[k]);
    g->n_out = n_out;
    return &g->m->nodes[g->node];
}

static void gc_free(gc *g) {
    for (int i = 0; i < g->n_in; i++)
        if (g->owned[i]) lp_tensor_free(g->data[i]);
    lp_model_free(g->m);
}

static lp_status gc_finalize(gc *g) {
    if (g->n_in == 0 || !g->m->n_inputs) { /* Constant and friends: the graph needs some input */
        lp_shape s = {.ndim = 1, .d = {1}};
        lp_model_add_input(g->m, "unused_input", &s);
    }
    return lp_model_finalize(g->m);
}

static double objective(const lp_node *n, lp_tensor **out, lp_tensor **w) {
    double L = 0;
    for (int k = 0; k < n->n_out; k++) {
        const float *y = out[k]->data, *r = w[k]->data;
        for (int64_t i = 0; i < lp_tensor_numel(out[k]); i++) L += (double)r[i] * y[i];
    }
    return L;
}

static lp_status run_fwd(lp_ctx *c, const lp_node *n, lp_tensor **in, lp_tensor **out) {
    return n->op->forward(c, n, (lp_tensor *const *)in, (lp_tensor *const *)out);
}

/* ---- the CUDA twin ---------------------------------------------------------------- */

#define TWIN_TOL 1e-5
static int twin_on;       /* LOUPE_OPS_TWIN=cuda */
static int twin_failures; /* counted across tests; main fails the run on any */

static double rel_l2(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* A device copy of a float tensor (int64 tensors live on the host on every backend). */
static lp_tensor *to_device(const lp_tensor *t) {
    if (!t || t->dtype != LP_F32) return (lp_tensor *)t;
    lp_tensor *d = NULL;
    assert_int_equal(lp_tensor_clone(&d, t, LP_DEVICE_CUDA), LP_OK);
    return d;
}

static void compare(const char *op, const char *what, const lp_tensor *dev, const float *ref, const float *base) {
    int64_t n = lp_tensor_numel(dev);
    float *h = malloc(sizeof(float) * (size_t)(n ? n : 1));
    float *r = malloc(sizeof(float) * (size_t)(n ? n : 1));
    assert_non_null(h);
    assert_non_null(r);
    assert_int_equal(lp_tensor_read(dev, h, sizeof(float) * (size_t)n), LP_OK);
    for (int64_t i = 0; i < n; i++) {
        r[i] = ref[i] - (base ? base[i] : 0.f);
        h[i] -= base ? base[i] : 0.f;
    }
    double e = rel_l2(h, r, n);
    int ok = e <= TWIN_TOL;
    printf("twin %-22s %-10s %8lld elems  rel L2 %.2e  (bound %.0e)  %s\n", op, what, (long long)n, e, TWIN_TOL,
           ok ? "PASS" : "FAIL");
    if (!ok) twin_failures++;
    free(h);
    free(r);
}

static void derived_check(gc *g, const lp_node *n, lp_ctx *c, lp_tensor **in, lp_tensor **out, lp_tensor **w,
                          lp_tensor **din, lp_tensor **pre, const char *dev);

/* The node's forward and backward on CUDA against the CPU's results: outputs out, and
 * gradients din (= pre + gradient, both sides starting from the same pre). */
static void twin_check(gc *g, const lp_node *n, lp_tensor **in, lp_tensor **out, lp_tensor **w, lp_tensor **din,
                       lp_tensor **pre) {
    if (!twin_on) return;
    lp_ctx c = {.be = lp_backend_cuda(), .model = g->m};
    assert_non_null(c.be);
    lp_tensor *gin[LP_MAX_IO] = {0}, *gout[LP_MAX_IO] = {0}, *gw[LP_MAX_IO] = {0}, *gdin[LP_MAX_IO] = {0};
    for (int i = 0; i < g->n_in; i++) {
        gin[i] = in[i] ? to_device(in[i]) : NULL;
        gdin[i] = din[i] ? to_device(pre[i]) : NULL;
    }
    for (int k = 0; k < g->n_out; k++) {
        lp_shape sh = lp_tensor_shape(out[k]);
        assert_int_equal(lp_tensor_new_shape(&gout[k], LP_DEVICE_CUDA, LP_F32, &sh), LP_OK);
        gw[k] = to_device(w[k]);
    }
    lp_status s = n->op->forward(&c, n, (lp_tensor *const *)gin, (lp_tensor *const *)gout);
    if (s != LP_OK) {
        printf("twin %-22s forward on CUDA: %s  FAIL\n", g->op, lp_last_error());
        twin_failures++;
    } else {
        for (int k = 0; k < g->n_out; k++) compare(g->op, "forward", gout[k], out[k]->data, NULL);
        s = n->op->backward(&c, n, (lp_tensor *const *)gin, (lp_tensor *const *)gout, (lp_tensor *const *)gw,
                            (lp_tensor *const *)gdin);
        if (s != LP_OK) {
            printf("twin %-22s backward on CUDA: %s  FAIL\n", g->op, lp_last_error());
            twin_failures++;
        }
        for (int i = 0; s == LP_OK && i < g->n_in; i++)
            if (gdin[i]) {
                char what[24];
                snprintf(what, sizeof what, "d/d%s", g->in_names[i]);
                compare(g->op, what, gdin[i], din[i]->data, pre[i]->data);
            }
        if (s == LP_OK) derived_check(g, n, &c, gin, out, gw, din, pre, "cuda ");
    }
    for (int i = 0; i < g->n_in; i++) {
        if (gin[i] != in[i]) lp_tensor_free(gin[i]);
        lp_tensor_free(gdin[i]);
    }
    for (int k = 0; k < g->n_out; k++) {
        lp_tensor_free(gout[k]);
        lp_tensor_free(gw[k]);
    }
}

/* Ops with derived constants (lp_op_derive: BatchNormalization's folded affine and
 * gradient coefficients) run from them when their inputs are constants, as in a run:
 * forward and every gradient must equal the plain path's (host arithmetic), which
 * the finite differences check. On c's backend (the CPU, or CUDA in twin_check). */
static void derived_check(gc *g, const lp_node *n, lp_ctx *c, lp_tensor **in, lp_tensor **out, lp_tensor **w,
                          lp_tensor **din, lp_tensor **pre, const char *dev) {
    lp_derive_fn derive = lp_op_derive(n->op);
    lp_tensor *aux = NULL;
    if (!derive) return;
    assert_int_equal(derive(c, n, &aux), LP_OK);
    if (!aux) return; /* some input is not a constant */
    lp_ctx dc = *c;
    dc.aux = aux;
    lp_tensor *dout[LP_MAX_IO] = {0}, *dd[LP_MAX_IO] = {0};
    for (int k = 0; k < g->n_out; k++) {
        lp_shape sh = lp_tensor_shape(out[k]);
        assert_int_equal(lp_tensor_new_shape(&dout[k], c->be->device, LP_F32, &sh), LP_OK);
    }
    for (int i = 0; i < g->n_in; i++)
        if (din[i]) assert_int_equal(lp_tensor_clone(&dd[i], pre[i], c->be->device), LP_OK);
    assert_int_equal(n->op->forward(&dc, n, in, dout), LP_OK);
    assert_int_equal(n->op->backward(&dc, n, in, dout, w, dd), LP_OK);
    char what[48];
    for (int k = 0; k < g->n_out; k++) {
        snprintf(what, sizeof what, "%sderived forward", dev);
        compare(g->op, what, dout[k], out[k]->data, NULL);
        lp_tensor_free(dout[k]);
    }
    for (int i = 0; i < g->n_in; i++) {
        if (!dd[i]) continue;
        snprintf(what, sizeof what, "%sderived d/d%s", dev, g->in_names[i]);
        compare(g->op, what, dd[i], din[i]->data, pre[i]->data);
        lp_tensor_free(dd[i]);
    }
    lp_tensor_free(aux);
}

/* Finalize, forward, backward, then finite differences for every gradient-checked input. */
static void gc_check(gc *g, float eps, double tol) {
    lp_status s = gc_finalize(g);
    if (s != LP_OK) fprintf(stderr, "%s: finalize: %s\n", g->op, lp_last_error());
    assert_int_equal(s, LP_OK);
    lp_node *n = &g->m->nodes[g->node];
    lp_ctx c = {.be = lp_backend_cpu(), .model = g->m};
    assert_non_null(c.be);
    lp_tensor *in[LP_MAX_IO], *out[LP_MAX_IO], *w[LP_MAX_IO], *din[LP_MAX_IO], *pre[LP_MAX_IO];
    for (int i = 0; i < g->n_in; i++) in[i] = g->data[i];
    for (int k = 0; k < g->n_out; k++) {
        const lp_value *v = &g->m->values[n->out[k]];
        assert_int_equal(v->dtype, LP_F32);
        assert_int_equal(lp_tensor_new_shape(&out[k], LP_DEVICE_CPU, LP_F32, &v->shape), LP_OK);
        assert_int_equal(lp_tensor_new_shape(&w[k], LP_DEVICE_CPU, LP_F32, &v->shape), LP_OK);
        tu_fill_uniform(&g->rng, w[k]->data, lp_tensor_numel(w[k]), -1, 1);
    }
    s = run_fwd(&c, n, in, out);
    if (s != LP_OK) fprintf(stderr, "%s: forward: %s\n", g->op, lp_last_error());
    assert_int_equal(s, LP_OK);
    /* Gradients start at a random value: backward must add to them, not overwrite. */
    for (int i = 0; i < g->n_in; i++) {
        din[i] = pre[i] = NULL;
        if (!g->want_grad[i]) continue;
        lp_shape sh = lp_tensor_shape(g->data[i]);
        assert_int_equal(lp_tensor_new_shape(&din[i], LP_DEVICE_CPU, LP_F32, &sh), LP_OK);
        assert_int_equal(lp_tensor_new_shape(&pre[i], LP_DEVICE_CPU, LP_F32, &sh), LP_OK);
        tu_fill_uniform(&g->rng, pre[i]->data, lp_tensor_numel(pre[i]), -1, 1);
        memcpy(din[i]->data, pre[i]->data, pre[i]->nbytes);
    }
    s = n->op->backward(&c, n, (lp_tensor *const *)in, (lp_tensor *const *)out, (lp_tensor *const *)w,
                        (lp_tensor *const *)din);
    if (s != LP_OK) fprintf(stderr, "%s: backward: %s\n", g->op, lp_last_error());
    assert_int_equal(s, LP_OK);
    twin_check(g, n, in, out, w, din, pre);
    derived_check(g, n, &c, in, out, w, din, pre, "");
    int failed = 0;
    for (int i = 0; i < g->n_in; i++) {
        if (!din[i]) continue;
        float *x = g->data[i]->data, *an = din[i]->data, *p0 = pre[i]->data;
        int64_t cnt = lp_tensor_numel(g->data[i]), stride = cnt > 600 ? cnt / 600 + 1 : 1;
        double max_err = 0, max_g = 0;
        int shown = 0;
        for (int64_t j = 0; j < cnt; j++) an[j] -= p0[j];
        for (int64_t j = 0; j < cnt; j += stride) {
            float orig = x[j];
            x[j] = orig + eps;
            assert_int_equal(run_fwd(&c, n, in, out), LP_OK);
            double lp = objective(n, out, w);
            x[j] = orig - eps;
            assert_int_equal(run_fwd(&c, n, in, out), LP_OK);
            double lm = objective(n, out, w);
            x[j] = orig;
            double fd = (lp - lm) / (2.0 * (double)eps), err = fabs(fd - an[j]);
            max_g = fmax(max_g, fmax(fabs(fd), fabs(an[j])));
            if (err > max_err) max_err = err;
            if (err > tol * fmax(1.0, fabs(fd)) && shown < 5) {
                fprintf(stderr, "%s: d/d%s[%lld]: analytic %.6g numeric %.6g\n", g->op, g->in_names[i], (long long)j,
                        an[j], fd);
                shown++;
            }
        }
        double lim = tol * fmax(1.0, max_g);
        if (!(max_err <= lim)) {
            fprintf(stderr, "%s: gradient of %s: max error %.3g over limit %.3g (max |grad| %.3g)\n", g->op,
                    g->in_names[i], max_err, lim, max_g);
            failed = 1;
        }
        lp_tensor_free(din[i]);
        lp_tensor_free(pre[i]);
    }
    for (int k = 0; k < g->n_out; k++) {
        lp_tensor_free(out[k]);
        lp_tensor_free(w[k]);
    }
    gc_free(g);
    assert_false(failed);
}

#define TOL 1e-2
#define EPS 1e-2f

/* ---- Conv and ConvTranspose ------------------------------------------------------- */

static void test_conv_basic(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "Conv", 1);
    gc_input(&g, 4, S(2, 3, 5, 5), -1, 1);
    gc_weight(&g, 4, S(4, 3, 3, 3), -1, 1);
    gc_weight(&g, 1, S(4), -1, 1);
    lp_node *n = gc_node(&g, 1);
    lp_node_set_ints(n, "pads", NS(1, 1, 1, 1));
    gc_check(&g, EPS, TOL);
}

static void test_conv_group_dilation_stride(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "Conv", 2);
    gc_input(&g, 4, S(1, 4, 7, 8), -1, 1);
    gc_weight(&g, 4, S(6, 2, 3, 2), -1, 1);
    lp_node *n = gc_node(&g, 1);
    lp_node_set_int(n, "group", 2);
    lp_node_set_ints(n, "dilations", NS(2, 1));
    lp_node_set_ints(n, "strides", NS(2, 3));
    lp_node_set_ints(n, "pads", NS(1, 0, 0, 2));
    gc_check(&g, EPS, TOL);
}

static void test_conv_depthwise_same(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "Conv", 3);
    gc_input(&g, 4, S(2, 3, 6, 5), -1, 1);
    gc_weight(&g, 4, S(3, 1, 3, 3), -1, 1);
    gc_weight(&g, 1, S(3), -1, 1);
    lp_node *n = gc_node(&g, 1);
    lp_node_set_int(n, "group", 3);
    lp_node_set_ints(n, "strides", NS(2, 2));
    lp_node_set_string(n, "auto_pad", "SAME_UPPER");
    gc_check(&g, EPS, TOL);
}

static void test_conv_1d(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "Conv", 4);
    gc_input(&g, 3, S(2, 3, 9), -1, 1);
    gc_weight(&g, 3, S(4, 3, 3), -1, 1);
    gc_weight(&g, 1, S(4), -1, 1);
    lp_node *n = gc_node(&g, 1);
    lp_node_set_ints(n, "strides", NS(2));
    lp_node_set_ints(n, "pads", NS(1, 2));
    gc_check(&g, EPS, TOL);
}

static void test_conv_transpose(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "ConvTranspose", 5);
    gc_input(&g, 4, S(2, 4, 3, 4), -1, 1);
    gc_weight(&g, 4, S(4, 3, 3, 3), -1, 1);
    gc_weight(&g, 1, S(3), -1, 1);
    lp_node *n = gc_node(&g, 1);
    lp_node_set_ints(n, "strides", NS(2, 2));
    lp_node_set_ints(n, "pads", NS(1, 1, 1, 1));
    lp_node_set_ints(n, "output_padding", NS(1, 0));
    gc_check(&g, EPS, TOL);
}

static void test_conv_transpose_group(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "ConvTranspose", 6);
    gc_input(&g, 4, S(1, 4, 4, 3), -1, 1);
    gc_weight(&g, 4, S(4, 1, 2, 3), -1, 1);
    lp_node *n = gc_node(&g, 1);
    lp_node_set_int(n, "group", 2);
    lp_node_set_ints(n, "dilations", NS(2, 1));
    gc_check(&g, EPS, TOL);
}

/* Naive references: Conv and ConvTranspose forwards (the gradient check alone would
 * accept a wrong forward whose backward matches it). */
static void test_conv_forward_reference(void **st) {
    (void)st;
    for (int transpose = 0; transpose < 2; transpose++) {
        gc g;
        gc_init(&g, transpose ? "ConvTranspose" : "Conv", 7);
        int N = 2, C = 4, H = 5, W = 4, G = 2, KH = 3, KW = 2, SH = 2, SW = 1, DH = 1, DW = 2, P0 = 1, P1 = 0, Q0 = 2, Q1 = 1;
        int K = 6; /* Conv: output channels; ConvTranspose: weight C x K/G */
        float *x = gc_input(&g, 4, S(N, C, H, W), -1, 1);
        float *w = transpose ? gc_weight(&g, 4, S(C, K / G, KH, KW), -1, 1) : gc_weight(&g, 4, S(K, C / G, KH, KW), -1, 1);
        float *b = gc_weight(&g, 1, S(K), -1, 1);
        lp_node *n = gc_node(&g, 1);
        lp_node_set_int(n, "group", G);
        lp_node_set_ints(n, "strides", NS(SH, SW));
        lp_node_set_ints(n, "dilations", NS(DH, DW));
        lp_node_set_ints(n, "pads", NS(P0, Q0, P1, Q1));
        if (transpose) lp_node_set_ints(n, "output_padding", NS(1, 0));
        assert_int_equal(gc_finalize(&g), LP_OK);
        const lp_shape *ys = &g.m->values[g.m->nodes[0].out[0]].shape;
        int OH, OW;
        if (!transpose) {
            OH = (H + P0 + P1 - DH * (KH - 1) - 1) / SH + 1;
            OW = (W + Q0 + Q1 - DW * (KW - 1) - 1) / SW + 1;
        } else {
            OH = SH * (H - 1) + 1 + DH * (KH - 1) + 1 - P0 - P1;
            OW = SW * (W - 1) + 0 + DW * (KW - 1) + 1 - Q0 - Q1;
        }
        assert_int_equal(ys->ndim, 4);
        assert_int_equal(ys->d[1], K);
        assert_int_equal(ys->d[2], OH);
        assert_int_equal(ys->d[3], OW);
        int64_t ny = (int64_t)N * K * OH * OW;
        float *ref = calloc((size_t)ny, sizeof *ref);
        assert_non_null(ref);
        for (int i = 0; i < ny; i++) ref[i] = b[(i / (OH * OW)) % K];
        if (!transpose) {
            for (int nn = 0; nn < N; nn++)
                for (int k = 0; k < K; k++)
                    for (int oh = 0; oh < OH; oh++)
                        for (int ow = 0; ow < OW; ow++)
                            for (int cc = 0; cc < C / G; cc++)
                                for (int kh = 0; kh < KH; kh++)
                                    for (int kw = 0; kw < KW; kw++) {
                                        int ih = oh * SH - P0 + kh * DH, iw = ow * SW - Q0 + kw * DW;
                                        int ci = (k / (K / G)) * (C / G) + cc;
                                        if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                        ref[((nn * K + k) * OH + oh) * OW + ow] +=
                                            x[((nn * C + ci) * H + ih) * W + iw] * w[((k * (C / G) + cc) * KH + kh) * KW + kw];
                                    }
        } else {
            for (int nn = 0; nn < N; nn++)
                for (int ci = 0; ci < C; ci++)
                    for (int ih = 0; ih < H; ih++)
                        for (int iw = 0; iw < W; iw++)
                            for (int kk = 0; kk < K / G; kk++)
                                for (int kh = 0; kh < KH; kh++)
                                    for (int kw = 0; kw < KW; kw++) {
                                        int oh = ih * SH - P0 + kh * DH, ow = iw * SW - Q0 + kw * DW;
                                        int k = (ci / (C / G)) * (K / G) + kk;
                                        if (oh < 0 || oh >= OH || ow < 0 || ow >= OW) continue;
                                        ref[((nn * K + k) * OH + oh) * OW + ow] +=
                                            x[((nn * C + ci) * H + ih) * W + iw] * w[((ci * (K / G) + kk) * KH + kh) * KW + kw];
                                    }
        }
        lp_tensor *y;
        assert_int_equal(lp_tensor_new_shape(&y, LP_DEVICE_CPU, LP_F32, ys), LP_OK);
        lp_ctx c = {.be = lp_backend_cpu(), .model = g.m};
        lp_tensor *in[3] = {g.data[0], g.data[1], g.data[2]};
        assert_int_equal(run_fwd(&c, &g.m->nodes[0], in, &y), LP_OK);
        assert_int_equal(tu_report_mismatch(g.op, y->data, ref, ny, 1e-4, 1e-4, 5), 0);
        lp_tensor_free(y);
        free(ref);
        gc_free(&g);
    }
}

/* ---- normalization ----------------------------------------------------------------- */

static void test_batchnorm(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "BatchNormalization", 10);
    gc_input(&g, 4, S(2, 3, 4, 3), -1, 1);
    gc_weight(&g, 1, S(3), 0.5f, 1.5f);
    gc_weight(&g, 1, S(3), -1, 1);
    gc_weight(&g, 1, S(3), -0.5f, 0.5f);
    gc_weight(&g, 1, S(3), 0.5f, 1.5f);
    lp_node *n = gc_node(&g, 1);
    lp_node_set_float(n, "epsilon", 1e-3f);
    gc_check(&g, 1e-3f, TOL);
}

static void test_layernorm(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "LayerNormalization", 13);
    gc_input(&g, 3, S(2, 3, 5), -2, 2);
    gc_weight(&g, 1, S(5), 0.5f, 1.5f);
    gc_weight(&g, 1, S(5), -1, 1);
    gc_node(&g, 1);
    gc_check(&g, 1e-3f, TOL);

    gc_init(&g, "LayerNormalization", 14); /* over the last two dims, no bias */
    gc_input(&g, 3, S(2, 3, 4), -2, 2);
    gc_weight(&g, 2, S(3, 4), 0.5f, 1.5f);
    lp_node *n = gc_node(&g, 1);
    lp_node_set_int(n, "axis", 1);
    gc_check(&g, 1e-3f, TOL);
}

static void test_lrn(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "LRN", 11);
    gc_input(&g, 4, S(2, 5, 3, 2), -2, 2);
    lp_node *n = gc_node(&g, 1);
    lp_node_set_int(n, "size", 3);
    lp_node_set_float(n, "alpha", 0.3f);
    gc_check(&g, EPS, TOL);
}

static void softmax_case(const char *op, uint64_t seed) {
    for (int v = 0; v < 2; v++) {
        gc g;
        gc_init(&g, op, seed + (uint64_t)v);
        gc_input(&g, 3, S(2, 4, 3), -2, 2);
        lp_node *n = gc_node(&g, 1);
        lp_node_set_int(n, "axis", v == 0 ? 1 : -1);
        gc_check(&g, EPS, TOL);
    }
}
static void test_Softmax(void **st) {
    (void)st;
    softmax_case("Softmax", 12);
}
static void test_LogSoftmax(void **st) {
    (void)st;
    softmax_case("LogSoftmax", 14);
}

/* ---- elementwise ------------------------------------------------------------------- */

/* op: an op type, or GeluTanh (Gelu with approximate = "tanh") */
static void unary_case(const char *op, uint64_t seed, float lo, float hi, int nk, const float *kinks) {
    gc g;
    gc_init(&g, strcmp(op, "GeluTanh") ? op : "Gelu", seed);
    gc_input(&g, 3, S(2, 3, 4), lo, hi);
    for (int k = 0; k < nk; k++) gc_avoid(&g, 0, kinks[k], 0.05f);
    lp_node *n = gc_node(&g, 1);
    if (!strcmp(op, "LeakyRelu")) lp_node_set_float(n, "alpha", 0.1f);
    if (!strcmp(op, "GeluTanh")) lp_node_set_string(n, "approximate", "tanh");
    if (!strcmp(op, "HardSigmoid")) {
        lp_node_set_float(n, "alpha", 0.25f);
        lp_node_set_float(n, "beta", 0.4f);
    }
    gc_check(&g, 1e-2f, TOL);
}

static const float k_zero[] = {0}, k_hsig[] = {-1.6f, 2.4f}, k_hswish[] = {-3, 3};
#define UNARY_TEST(NAME, SEED, LO, HI, NK, KINKS) \
    static void test_##NAME(void **st) {          \
        (void)st;                                 \
        unary_case(#NAME, SEED, LO, HI, NK, KINKS); \
    }
UNARY_TEST(Relu, 20, -1, 1, 1, k_zero)
UNARY_TEST(LeakyRelu, 21, -1, 1, 1, k_zero)
UNARY_TEST(Sigmoid, 22, -3, 3, 0, NULL)
UNARY_TEST(HardSigmoid, 23, -3, 3, 2, k_hsig)
UNARY_TEST(HardSwish, 24, -4, 4, 2, k_hswish)
UNARY_TEST(Erf, 25, -2, 2, 0, NULL)
UNARY_TEST(Gelu, 32, -4, 4, 0, NULL)
UNARY_TEST(GeluTanh, 33, -4, 4, 0, NULL)
UNARY_TEST(Tanh, 26, -2, 2, 0, NULL)
UNARY_TEST(Exp, 27, -1, 1, 0, NULL)
UNARY_TEST(Log, 28, 0.5f, 2, 0, NULL)
UNARY_TEST(Neg, 29, -1, 1, 0, NULL)
UNARY_TEST(Abs, 30, -1, 1, 1, k_zero)
UNARY_TEST(Sqrt, 31, 0.5f, 2, 0, NULL)

static void test_clip(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "Clip", 40); /* opset 11+: bounds as inputs */
    gc_input(&g, 2, S(4, 5), -1, 1);
    gc_fconst(&g, 0, S(0), (const float[]){-0.5f});
    gc_fconst(&g, 0, S(0), (const float[]){0.4f});
    gc_avoid(&g, 0, -0.5f, 0.05f);
    gc_avoid(&g, 0, 0.4f, 0.05f);
    gc_node(&g, 1);
    gc_check(&g, EPS, TOL);

    gc_init(&g, "Clip", 41); /* max only; min omitted */
    gc_input(&g, 2, S(4, 5), -1, 1);
    gc_none(&g);
    gc_fconst(&g, 0, S(0), (const float[]){0.3f});
    gc_avoid(&g, 0, 0.3f, 0.05f);
    gc_node(&g, 1);
    gc_check(&g, EPS, TOL);

    gc_init(&g, "Clip", 42); /* opset 6: attributes */
    gc_input(&g, 2, S(4, 5), -1, 1);
    gc_avoid(&g, 0, 0.0f, 0.05f);
    gc_avoid(&g, 0, 0.6f, 0.05f);
    lp_node *n = gc_node(&g, 1);
    lp_node_set_float(n, "min", 0.0f);
    lp_node_set_float(n, "max", 0.6f);
    gc_check(&g, EPS, TOL);
}

static void binary_case(const char *op, uint64_t seed, int na, const int64_t *a, int nb, const int64_t *b, float blo,
                        float bhi) {
    gc g;
    gc_init(&g, op, seed);
    gc_input(&g, na, a, 0.5f, 2.0f);
    gc_weight(&g, nb, b, blo, bhi);
    gc_node(&g, 1);
    gc_check(&g, 1e-3f, TOL);
}

static void test_Add(void **st) {
    (void)st;
    binary_case("Add", 50, 3, S(2, 3, 4), 2, S(3, 1), -1, 1);
    binary_case("Add", 56, 2, S(3, 4), 2, S(3, 4), -1, 1);
}
static void test_Sub(void **st) {
    (void)st;
    binary_case("Sub", 51, 4, S(1, 3, 1, 1), 4, S(2, 3, 4, 2), -1, 1);
}
static void test_Mul(void **st) {
    (void)st;
    binary_case("Mul", 52, 3, S(2, 3, 4), 1, S(4), -1, 1);
    binary_case("Mul", 53, 2, S(3, 1), 2, S(1, 4), -1, 1);
}
static void test_Div(void **st) {
    (void)st;
    binary_case("Div", 54, 3, S(2, 3, 4), 3, S(2, 1, 4), 0.5f, 2);
}
static void test_Pow(void **st) {
    (void)st;
    binary_case("Pow", 55, 3, S(2, 3, 4), 2, S(3, 4), -1, 2);
}

static void test_pow_scalar(void **st) {
    (void)st;
    const float exps[] = {2.0f, 3.0f, 0.5f};
    for (int i = 0; i < 3; i++) {
        gc g;
        gc_init(&g, "Pow", 60 + (uint64_t)i);
        gc_input(&g, 3, S(2, 3, 4), exps[i] == 0.5f ? 0.5f : -2.0f, 2.0f);
        gc_fconst(&g, 0, S(0), &exps[i]);
        gc_node(&g, 1);
        gc_check(&g, 1e-3f, TOL);
    }
}

/* ---- pooling ----------------------------------------------------------------------- */

static void pool_case(const char *op, uint64_t seed, int nd, const int64_t *shape, int nk, const int64_t *k, int nsd,
                      const int64_t *s, int np, const int64_t *p, int ceil_mode, int cip) {
    gc g;
    gc_init(&g, op, seed);
    gc_input(&g, nd, shape, -1, 1);
    if (strstr(op, "Max")) gc_distinct(&g, 0, 0.05f);
    lp_node *n = gc_node(&g, 1);
    if (nk) lp_node_set_ints(n, "kernel_shape", nk, k);
    if (nsd) lp_node_set_ints(n, "strides", nsd, s);
    if (np) lp_node_set_ints(n, "pads", np, p);
    if (ceil_mode) lp_node_set_int(n, "ceil_mode", 1);
    if (cip) lp_node_set_int(n, "count_include_pad", 1);
    gc_check(&g, strstr(op, "Max") ? 1e-3f : EPS, TOL);
}

static void test_maxpool(void **st) {
    (void)st;
    pool_case("MaxPool", 70, 4, S(2, 2, 6, 6), NS(2, 2), NS(2, 2), 0, NULL, 0, 0);
    pool_case("MaxPool", 71, 4, S(1, 2, 6, 7), NS(3, 3), NS(2, 2), NS(1, 1, 1, 1), 1, 0);
    pool_case("MaxPool", 72, 3, S(2, 3, 9), NS(3), NS(2), 0, NULL, 1, 0);
}

static void test_globalmaxpool(void **st) {
    (void)st;
    pool_case("GlobalMaxPool", 73, 4, S(2, 3, 3, 4), 0, NULL, 0, NULL, 0, NULL, 0, 0);
}

static void test_avgpool(void **st) {
    (void)st;
    pool_case("AveragePool", 80, 4, S(2, 2, 6, 6), NS(2, 2), NS(2, 2), 0, NULL, 0, 0);
    pool_case("AveragePool", 81, 4, S(1, 2, 6, 7), NS(3, 3), NS(2, 2), NS(1, 1, 1, 1), 1, 0);
    pool_case("AveragePool", 82, 4, S(1, 2, 5, 5), NS(3, 3), NS(2, 2), NS(1, 1, 1, 1), 0, 1);
}

static void test_globalavgpool(void **st) {
    (void)st;
    pool_case("GlobalAveragePool", 83, 4, S(2, 3, 3, 4), 0, NULL, 0, NULL, 0, NULL, 0, 0);
}

/* Output sizes with ceil_mode follow PyTorch: the last window starts inside the input. */
static void test_pool_shapes(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "MaxPool", 85);
    gc_input(&g, 4, S(1, 1, 6, 6), -1, 1);
    lp_node *n = gc_node(&g, 1);
    lp_node_set_ints(n, "kernel_shape", NS(2, 2));
    lp_node_set_ints(n, "strides", NS(2, 2));
    lp_node_set_ints(n, "pads", NS(1, 1, 1, 1));
    lp_node_set_int(n, "ceil_mode", 1);
    assert_int_equal(gc_finalize(&g), LP_OK);
    const lp_shape *y = &g.m->values[g.m->nodes[0].out[0]].shape;
    assert_int_equal(y->d[2], 4); /* (6+2-2)/2+1 = 4; ceil would give 4 too, a 5th would start in the pad */
    assert_int_equal(y->d[3], 4);
    gc_free(&g);
    gc_init(&g, "AveragePool", 86);
    gc_input(&g, 4, S(1, 1, 7, 7), -1, 1);
    n = gc_node(&g, 1);
    lp_node_set_ints(n, "kernel_shape", NS(3, 3));
    lp_node_set_ints(n, "strides", NS(2, 2));
    lp_node_set_int(n, "ceil_mode", 1);
    assert_int_equal(gc_finalize(&g), LP_OK);
    y = &g.m->values[g.m->nodes[0].out[0]].shape;
    assert_int_equal(y->d[2], 3);
    gc_free(&g);
    gc_init(&g, "AveragePool", 87);
    gc_input(&g, 4, S(1, 1, 8, 8), -1, 1);
    n = gc_node(&g, 1);
    lp_node_set_ints(n, "kernel_shape", NS(3, 3));
    lp_node_set_ints(n, "strides", NS(2, 2));
    lp_node_set_int(n, "ceil_mode", 1);
    assert_int_equal(gc_finalize(&g), LP_OK);
    y = &g.m->values[g.m->nodes[0].out[0]].shape;
    assert_int_equal(y->d[2], 4); /* floor would give 3 */
    gc_free(&g);
}

/* ---- reductions -------------------------------------------------------------------- */

static void test_reducemean(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "ReduceMean", 90); /* opset 13: axes attribute */
    gc_input(&g, 4, S(2, 3, 4, 2), -1, 1);
    lp_node *n = gc_node(&g, 1);
    lp_node_set_ints(n, "axes", NS(2, 3));
    gc_check(&g, EPS, TOL);

    gc_init(&g, "ReduceMean", 91); /* opset 18: axes input, keepdims 0 */
    gc_input(&g, 3, S(2, 3, 4), -1, 1);
    gc_ints(&g, NS(-1, 0));
    n = gc_node(&g, 1);
    lp_node_set_int(n, "keepdims", 0);
    gc_check(&g, EPS, TOL);
}

static void test_reducesum(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "ReduceSum", 92);
    gc_input(&g, 3, S(2, 3, 4), -1, 1);
    gc_ints(&g, NS(1));
    gc_node(&g, 1);
    gc_check(&g, EPS, TOL);

    gc_init(&g, "ReduceSum", 93); /* no axes: everything */
    gc_input(&g, 3, S(2, 3, 4), -1, 1);
    gc_node(&g, 1);
    gc_check(&g, EPS, TOL);
}

/* ---- Gemm and MatMul --------------------------------------------------------------- */

static void gemm_case(uint64_t seed, int ta, int tb, float alpha, float beta, int nc, const int64_t *cshape) {
    int M = 3, N = 4, K = 5;
    gc g;
    gc_init(&g, "Gemm", seed);
    if (ta) gc_input(&g, 2, S(K, M), -1, 1);
    else gc_input(&g, 2, S(M, K), -1, 1);
    if (tb) gc_weight(&g, 2, S(N, K), -1, 1);
    else gc_weight(&g, 2, S(K, N), -1, 1);
    if (nc) gc_weight(&g, nc, cshape, -1, 1);
    lp_node *n = gc_node(&g, 1);
    lp_node_set_int(n, "transA", ta);
    lp_node_set_int(n, "transB", tb);
    lp_node_set_float(n, "alpha", alpha);
    lp_node_set_float(n, "beta", beta);
    gc_check(&g, EPS, TOL);
}

static void test_gemm(void **st) {
    (void)st;
    gemm_case(100, 0, 1, 1.0f, 1.0f, 1, S(4));
    gemm_case(101, 1, 0, 0.7f, 0.3f, 2, S(3, 4));
    gemm_case(102, 1, 1, 1.5f, 2.0f, 2, S(3, 1));
    gemm_case(103, 0, 0, 1.0f, 1.0f, 0, NULL);
}

static void matmul_case(uint64_t seed, int na, const int64_t *a, int nb, const int64_t *b) {
    gc g;
    gc_init(&g, "MatMul", seed);
    gc_input(&g, na, a, -1, 1);
    gc_weight(&g, nb, b, -1, 1);
    gc_node(&g, 1);
    gc_check(&g, EPS, TOL);
}

static void test_matmul(void **st) {
    (void)st;
    matmul_case(110, 2, S(3, 4), 2, S(4, 5));
    matmul_case(111, 3, S(2, 3, 4), 3, S(2, 4, 5));
    matmul_case(112, 4, S(2, 1, 3, 4), 3, S(3, 4, 5));
    matmul_case(113, 3, S(2, 3, 4), 2, S(4, 5));
    matmul_case(114, 1, S(4), 2, S(4, 5));
    matmul_case(115, 3, S(2, 3, 4), 1, S(4));
    matmul_case(116, 2, S(3, 4), 3, S(2, 4, 2));
}

/* ---- layout ops -------------------------------------------------------------------- */

static void test_concat(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "Concat", 120);
    gc_input(&g, 4, S(2, 1, 3, 2), -1, 1);
    gc_input(&g, 4, S(2, 3, 3, 2), -1, 1);
    gc_weight(&g, 4, S(2, 2, 3, 2), -1, 1);
    lp_node *n = gc_node(&g, 1);
    lp_node_set_int(n, "axis", 1);
    gc_check(&g, EPS, TOL);

    gc_init(&g, "Concat", 121);
    gc_input(&g, 3, S(2, 3, 2), -1, 1);
    gc_input(&g, 3, S(2, 3, 4), -1, 1);
    n = gc_node(&g, 1);
    lp_node_set_int(n, "axis", -1);
    gc_check(&g, EPS, TOL);

    gc_init(&g, "Concat", 122);
    gc_input(&g, 3, S(2, 3, 2), -1, 1);
    gc_input(&g, 3, S(2, 2, 2), -1, 1);
    n = gc_node(&g, 1);
    lp_node_set_int(n, "axis", 1);
    gc_check(&g, EPS, TOL);
}

static void test_split(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "Split", 130); /* opset 13: sizes as input */
    gc_input(&g, 3, S(2, 4, 3), -1, 1);
    gc_ints(&g, NS(1, 3));
    lp_node *n = gc_node(&g, 2);
    lp_node_set_int(n, "axis", 1);
    gc_check(&g, EPS, TOL);

    gc_init(&g, "Split", 131); /* even */
    gc_input(&g, 3, S(2, 3, 4), -1, 1);
    n = gc_node(&g, 2);
    lp_node_set_int(n, "axis", 2);
    gc_check(&g, EPS, TOL);

    gc_init(&g, "Split", 132); /* opset 18: num_outputs, uneven */
    gc_input(&g, 2, S(5, 2), -1, 1);
    n = gc_node(&g, 3);
    lp_node_set_int(n, "num_outputs", 3);
    gc_check(&g, EPS, TOL);
}

static void test_slice(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "Slice", 140);
    gc_input(&g, 3, S(3, 6, 5), -1, 1);
    gc_ints(&g, NS(1, -1));
    gc_ints(&g, NS(6, -100));
    gc_ints(&g, NS(1, 2));
    gc_ints(&g, NS(2, -2));
    gc_node(&g, 1);
    assert_int_equal(gc_finalize(&g), LP_OK);
    const lp_shape *y = &g.m->values[g.m->nodes[0].out[0]].shape;
    assert_int_equal(y->d[0], 3);
    assert_int_equal(y->d[1], 3); /* 1, 3, 5 */
    assert_int_equal(y->d[2], 3); /* 4, 2, 0 */
    gc_check(&g, EPS, TOL);

    gc_init(&g, "Slice", 141); /* starts/ends only, clamped end */
    gc_input(&g, 2, S(4, 5), -1, 1);
    gc_ints(&g, NS(1));
    gc_ints(&g, NS(INT64_MAX));
    gc_node(&g, 1);
    gc_check(&g, EPS, TOL);
}

static void test_pad(void **st) {
    (void)st;
    const char *modes[] = {"constant", "reflect", "edge"};
    for (int i = 0; i < 3; i++) {
        gc g;
        gc_init(&g, "Pad", 150 + (uint64_t)i);
        gc_input(&g, 4, S(1, 2, 4, 3), -1, 1);
        gc_ints(&g, NS(0, 0, 1, 2, 0, 1, 2, 1));
        if (i == 0) gc_fconst(&g, 0, S(0), (const float[]){0.5f});
        lp_node *n = gc_node(&g, 1);
        lp_node_set_string(n, "mode", modes[i]);
        gc_check(&g, EPS, TOL);
    }
    gc g;
    gc_init(&g, "Pad", 153); /* negative pads crop */
    gc_input(&g, 2, S(4, 5), -1, 1);
    gc_ints(&g, NS(-1, 1, 0, -2));
    gc_node(&g, 1);
    gc_check(&g, EPS, TOL);
}

static void test_transpose(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "Transpose", 160);
    gc_input(&g, 4, S(2, 3, 4, 2), -1, 1);
    lp_node *n = gc_node(&g, 1);
    lp_node_set_ints(n, "perm", NS(0, 2, 3, 1));
    gc_check(&g, EPS, TOL);

    gc_init(&g, "Transpose", 161);
    gc_input(&g, 3, S(2, 3, 4), -1, 1);
    gc_node(&g, 1);
    gc_check(&g, EPS, TOL);
}

static void test_reshape(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "Reshape", 170);
    gc_input(&g, 4, S(2, 3, 2, 2), -1, 1);
    gc_ints(&g, NS(0, -1, 2));
    gc_node(&g, 1);
    gc_check(&g, EPS, TOL);
}

static void test_flatten(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "Flatten", 171);
    gc_input(&g, 4, S(2, 3, 2, 2), -1, 1);
    lp_node *n = gc_node(&g, 1);
    lp_node_set_int(n, "axis", 2);
    gc_check(&g, EPS, TOL);
}

static void test_squeeze(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "Squeeze", 172);
    gc_input(&g, 4, S(2, 1, 3, 1), -1, 1);
    gc_ints(&g, NS(1));
    gc_node(&g, 1);
    gc_check(&g, EPS, TOL);
}

static void test_unsqueeze(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "Unsqueeze", 173);
    gc_input(&g, 2, S(2, 3), -1, 1);
    gc_ints(&g, NS(0, -1));
    gc_node(&g, 1);
    gc_check(&g, EPS, TOL);
}

static void same_case(const char *op, uint64_t seed) {
    gc g;
    gc_init(&g, op, seed);
    gc_input(&g, 2, S(2, 3), -1, 1);
    lp_node *n = gc_node(&g, 1);
    if (!strcmp(op, "Cast")) lp_node_set_int(n, "to", 1);
    gc_check(&g, EPS, TOL);
}
static void test_identity(void **st) {
    (void)st;
    same_case("Identity", 174);
}
static void test_dropout(void **st) {
    (void)st;
    same_case("Dropout", 175);
}
static void test_cast(void **st) {
    (void)st;
    same_case("Cast", 176);
}

static void test_gather_float(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "Gather", 180); /* repeated and negative indices: gradients add up */
    gc_input(&g, 3, S(2, 4, 3), -1, 1);
    gc_ints(&g, NS(2, 0, -2, 3));
    lp_node *n = gc_node(&g, 1);
    lp_node_set_int(n, "axis", 1);
    gc_check(&g, EPS, TOL);

    gc_init(&g, "Gather", 181);
    gc_input(&g, 2, S(4, 3), -1, 1);
    gc_ints(&g, NS(1, 1));
    gc_node(&g, 1);
    gc_check(&g, EPS, TOL);
}

static void test_expand(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "Expand", 185); /* broadcast up: gradients sum over the copies */
    gc_input(&g, 2, S(3, 1), -1, 1);
    gc_ints(&g, NS(2, 1, 4));
    gc_node(&g, 1);
    assert_int_equal(gc_finalize(&g), LP_OK);
    const lp_shape *y = &g.m->values[g.m->nodes[0].out[0]].shape;
    assert_int_equal(y->ndim, 3);
    assert_int_equal(y->d[0], 2);
    assert_int_equal(y->d[1], 3);
    assert_int_equal(y->d[2], 4);
    gc_check(&g, EPS, TOL);
}

/* ---- int64 forwards (constant folding) ---------------------------------------------- */

/* Build one node over int64 constants, run it with lp_node_eval_host, compare. */
static void int_case(const char *op, int n_in, const int64_t *const *vals, const int *counts, const char *attr,
                     int64_t attr_v, int n_want, const int64_t *want) {
    gc g;
    gc_init(&g, op, 200);
    for (int i = 0; i < n_in; i++) gc_ints(&g, counts[i], vals[i]);
    lp_node *n = gc_node(&g, 1);
    if (attr) lp_node_set_int(n, attr, attr_v);
    lp_status s = gc_finalize(&g);
    if (s != LP_OK) fprintf(stderr, "%s: %s\n", op, lp_last_error());
    assert_int_equal(s, LP_OK);
    n = &g.m->nodes[0];
    const lp_value *v = &g.m->values[n->out[0]];
    assert_int_equal(v->dtype, LP_I64);
    assert_int_equal(lp_shape_numel(&v->shape), n_want);
    lp_tensor *y;
    assert_int_equal(lp_tensor_new_shape(&y, LP_DEVICE_CPU, LP_I64, &v->shape), LP_OK);
    lp_tensor *in[LP_MAX_IO];
    for (int i = 0; i < n_in; i++) in[i] = g.data[i];
    s = lp_node_eval_host(g.m, n, in, &y);
    if (s != LP_OK) fprintf(stderr, "%s: %s\n", op, lp_last_error());
    assert_int_equal(s, LP_OK);
    for (int i = 0; i < n_want; i++) {
        if (((int64_t *)y->data)[i] != want[i])
            fprintf(stderr, "%s: element %d is %lld, want %lld\n", op, i, (long long)((int64_t *)y->data)[i], (long long)want[i]);
        assert_int_equal(((int64_t *)y->data)[i], want[i]);
    }
    lp_tensor_free(y);
    gc_free(&g);
}

static void test_int64_folding(void **st) {
    (void)st;
    const int64_t a[] = {1, 3, 224, 224}, b[] = {-1}, idx[] = {0}, two[] = {2}, st1[] = {1}, en[] = {3};
    int_case("Concat", 2, (const int64_t *const[]){a, b}, (const int[]){4, 1}, "axis", 0, 5, (const int64_t[]){1, 3, 224, 224, -1});
    int_case("Gather", 2, (const int64_t *const[]){a, idx}, (const int[]){4, 1}, "axis", 0, 1, (const int64_t[]){1});
    int_case("Slice", 3, (const int64_t *const[]){a, st1, en}, (const int[]){4, 1, 1}, NULL, 0, 2, (const int64_t[]){3, 224});
    int_case("Mul", 2, (const int64_t *const[]){a, two}, (const int[]){4, 1}, NULL, 0, 4, (const int64_t[]){2, 6, 448, 448});
    int_case("Div", 2, (const int64_t *const[]){a, two}, (const int[]){4, 1}, NULL, 0, 4, (const int64_t[]){0, 1, 112, 112});
    int_case("Expand", 2, (const int64_t *const[]){b, S(2, 3)}, (const int[]){1, 2}, NULL, 0, 6,
             (const int64_t[]){-1, -1, -1, -1, -1, -1});
    int_case("Equal", 2, (const int64_t *const[]){a, S(3)}, (const int[]){4, 1}, NULL, 0, 4, (const int64_t[]){0, 1, 0, 0});
    int_case("Where", 3, (const int64_t *const[]){S(1, 0), S(5, 6), S(7, 8)}, (const int[]){2, 2, 2}, NULL, 0, 2,
             (const int64_t[]){5, 8});
    int_case("Mod", 2, (const int64_t *const[]){S(-7, 7, 6), S(3)}, (const int[]){3, 1}, NULL, 0, 3, (const int64_t[]){2, 1, 0});
    int_case("Range", 3, (const int64_t *const[]){S(2), S(9), S(3)}, (const int[]){1, 1, 1}, NULL, 0, 3,
             (const int64_t[]){2, 5, 8});
    int_case("Not", 1, (const int64_t *const[]){S(0, 1, 0)}, (const int[]){3}, NULL, 0, 3, (const int64_t[]){1, 0, 1});
    int_case("Cast", 1, (const int64_t *const[]){S(0, 5, -2)}, (const int[]){3}, "to", 7, 3, (const int64_t[]){0, 5, -2});
    int_case("Unsqueeze", 2, (const int64_t *const[]){b, idx}, (const int[]){1, 1}, NULL, 0, 1, (const int64_t[]){-1});

    /* Shape of a float input, with start. */
    gc g;
    gc_init(&g, "Shape", 201);
    gc_input(&g, 4, S(2, 3, 5, 7), -1, 1);
    lp_node *n = gc_node(&g, 1);
    lp_node_set_int(n, "start", 1);
    assert_int_equal(gc_finalize(&g), LP_OK);
    n = &g.m->nodes[0];
    assert_int_equal(g.m->values[n->out[0]].dtype, LP_I64);
    lp_tensor *y;
    assert_int_equal(lp_tensor_new_shape(&y, LP_DEVICE_CPU, LP_I64, &g.m->values[n->out[0]].shape), LP_OK);
    assert_int_equal(lp_tensor_numel(y), 3);
    assert_int_equal(lp_node_eval_host(g.m, n, g.data, &y), LP_OK);
    assert_int_equal(((int64_t *)y->data)[0], 3);
    assert_int_equal(((int64_t *)y->data)[2], 7);
    lp_tensor_free(y);
    gc_free(&g);

    /* Cast float -> int64 truncates toward zero. */
    gc_init(&g, "Cast", 202);
    float *x = gc_input(&g, 1, S(3), 0, 1);
    x[0] = 2.7f;
    x[1] = -1.5f;
    x[2] = 7.0f;
    n = gc_node(&g, 1);
    lp_node_set_int(n, "to", 7);
    assert_int_equal(gc_finalize(&g), LP_OK);
    n = &g.m->nodes[0];
    assert_int_equal(g.m->values[n->out[0]].dtype, LP_I64);
    assert_int_equal(lp_tensor_new_shape(&y, LP_DEVICE_CPU, LP_I64, &g.m->values[n->out[0]].shape), LP_OK);
    assert_int_equal(lp_node_eval_host(g.m, n, g.data, &y), LP_OK);
    assert_int_equal(((int64_t *)y->data)[0], 2);
    assert_int_equal(((int64_t *)y->data)[1], -1);
    assert_int_equal(((int64_t *)y->data)[2], 7);
    lp_tensor_free(y);
    gc_free(&g);

    /* ConstantOfShape with an int64 value (torch's pad chains), then Transpose of int64. */
    gc_init(&g, "ConstantOfShape", 204);
    gc_ints(&g, NS(2, 3));
    n = gc_node(&g, 1);
    lp_attr *at = lp_node_add_attr(n, "value", LP_ATTR_TENSOR);
    assert_non_null(at);
    at->t = new_tensor(LP_I64, 1, S(1));
    ((int64_t *)at->t->data)[0] = 5;
    assert_int_equal(gc_finalize(&g), LP_OK);
    n = &g.m->nodes[0];
    assert_int_equal(g.m->values[n->out[0]].dtype, LP_I64);
    assert_int_equal(lp_tensor_new_shape(&y, LP_DEVICE_CPU, LP_I64, &g.m->values[n->out[0]].shape), LP_OK);
    assert_int_equal(lp_tensor_numel(y), 6);
    assert_int_equal(lp_node_eval_host(g.m, n, g.data, &y), LP_OK);
    for (int i = 0; i < 6; i++) assert_int_equal(((int64_t *)y->data)[i], 5);
    lp_tensor_free(y);
    gc_free(&g);

    gc_init(&g, "Transpose", 205);
    gc_ints(&g, NS(1, 2, 3, 4, 5, 6));
    n = gc_node(&g, 1);
    assert_int_equal(gc_finalize(&g), LP_OK); /* 1-D: the identity permutation */
    gc_free(&g);
    gc_init(&g, "Transpose", 206);
    {
        int i = g.n_in++;
        snprintf(g.in_names[i], sizeof g.in_names[i], "c%d", i);
        lp_tensor *t = new_tensor(LP_I64, 2, S(2, 3));
        for (int k = 0; k < 6; k++) ((int64_t *)t->data)[k] = k; /* [[0 1 2] [3 4 5]] */
        assert_true(lp_model_add_initializer(g.m, g.in_names[i], t, 0) >= 0);
        g.data[i] = t;
    }
    n = gc_node(&g, 1);
    assert_int_equal(gc_finalize(&g), LP_OK);
    n = &g.m->nodes[0];
    assert_int_equal(lp_tensor_new_shape(&y, LP_DEVICE_CPU, LP_I64, &g.m->values[n->out[0]].shape), LP_OK);
    assert_int_equal(y->shape[0], 3);
    assert_int_equal(lp_node_eval_host(g.m, n, g.data, &y), LP_OK);
    const int64_t tw[] = {0, 3, 1, 4, 2, 5};
    for (int i = 0; i < 6; i++) assert_int_equal(((int64_t *)y->data)[i], tw[i]);
    lp_tensor_free(y);
    gc_free(&g);

    /* ScatterND: rows 2 and 0 of a 3x2 int64 matrix replaced. */
    gc_init(&g, "ScatterND", 207);
    {
        int i = g.n_in++;
        snprintf(g.in_names[i], sizeof g.in_names[i], "c%d", i);
        lp_tensor *t = new_tensor(LP_I64, 2, S(3, 2));
        for (int k = 0; k < 6; k++) ((int64_t *)t->data)[k] = k;
        assert_true(lp_model_add_initializer(g.m, g.in_names[i], t, 0) >= 0);
        g.data[i] = t;
        i = g.n_in++;
        snprintf(g.in_names[i], sizeof g.in_names[i], "c%d", i);
        t = new_tensor(LP_I64, 2, S(2, 1));
        ((int64_t *)t->data)[0] = 2;
        ((int64_t *)t->data)[1] = 0;
        assert_true(lp_model_add_initializer(g.m, g.in_names[i], t, 0) >= 0);
        g.data[i] = t;
        i = g.n_in++;
        snprintf(g.in_names[i], sizeof g.in_names[i], "c%d", i);
        t = new_tensor(LP_I64, 2, S(2, 2));
        for (int k = 0; k < 4; k++) ((int64_t *)t->data)[k] = 10 + k;
        assert_true(lp_model_add_initializer(g.m, g.in_names[i], t, 0) >= 0);
        g.data[i] = t;
    }
    n = gc_node(&g, 1);
    assert_int_equal(gc_finalize(&g), LP_OK);
    n = &g.m->nodes[0];
    assert_int_equal(lp_tensor_new_shape(&y, LP_DEVICE_CPU, LP_I64, &g.m->values[n->out[0]].shape), LP_OK);
    assert_int_equal(lp_node_eval_host(g.m, n, g.data, &y), LP_OK);
    const int64_t sw[] = {12, 13, 2, 3, 10, 11};
    for (int i = 0; i < 6; i++) assert_int_equal(((int64_t *)y->data)[i], sw[i]);
    lp_tensor_free(y);
    gc_free(&g);

    /* Constant value_floats. */
    gc_init(&g, "Constant", 203);
    n = gc_node(&g, 1);
    lp_node_set_floats(n, "value_floats", 3, (const float[]){1.5f, -2, 4});
    assert_int_equal(gc_finalize(&g), LP_OK);
    n = &g.m->nodes[0];
    assert_int_equal(lp_tensor_new_shape(&y, LP_DEVICE_CPU, LP_F32, &g.m->values[n->out[0]].shape), LP_OK);
    assert_int_equal(lp_tensor_numel(y), 3);
    assert_int_equal(lp_node_eval_host(g.m, n, NULL, &y), LP_OK);
    assert_true(((float *)y->data)[1] == -2.0f);
    lp_tensor_free(y);
    gc_free(&g);
}

/* ---- registry, errors, MACs --------------------------------------------------------- */

static void test_registry(void **st) {
    (void)st;
    const char *must[] = {"Conv", "ConvTranspose", "BatchNormalization", "Relu", "LeakyRelu", "Clip", "Sigmoid",
                          "HardSigmoid", "HardSwish", "Gelu", "Erf", "Mul", "Add", "Sub", "Div", "Pow", "Sqrt", "Concat",
                          "Split", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean", "LRN", "Gemm",
                          "MatMul", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Pad", "Dropout",
                          "Identity", "Softmax", "Constant", "Shape", "Gather", "Slice", "Cast",
                          "Expand", "ConstantOfShape", "LayerNormalization", "Equal", "Where", "Mod", "Range",
                          "LogSoftmax", "GlobalMaxPool", "ReduceSum", "Tanh", "Exp", "Log", "Neg", "Abs",
                          "ScatterND", "Not"};
    for (size_t i = 0; i < sizeof must / sizeof must[0]; i++) {
        const lp_op *op = lp_op_find(must[i]);
        if (!op) fprintf(stderr, "op %s is missing from the registry\n", must[i]);
        assert_non_null(op);
        assert_string_equal(op->type, must[i]);
        int idx = lp_op_index(op);
        assert_true(idx >= 0 && idx < lp_op_count());
        assert_non_null(strstr(lp_op_list(), must[i]));
    }
    assert_null(lp_op_find("NoSuchOp"));
    assert_null(lp_op_find("conv"));
}

static void test_errors(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "Conv", 300); /* channel mismatch */
    gc_input(&g, 4, S(1, 3, 5, 5), -1, 1);
    gc_weight(&g, 4, S(4, 8, 3, 3), -1, 1);
    gc_node(&g, 1);
    assert_int_equal(gc_finalize(&g), LP_ERR_SHAPE);
    assert_non_null(strstr(lp_last_error(), "node 'n0' (Conv)"));
    assert_non_null(strstr(lp_last_error(), "4x8x3x3"));
    gc_free(&g);

    gc_init(&g, "MaxPool", 301); /* missing kernel_shape */
    gc_input(&g, 4, S(1, 3, 5, 5), -1, 1);
    gc_node(&g, 1);
    assert_int_equal(gc_finalize(&g), LP_ERR_PARSE);
    assert_non_null(strstr(lp_last_error(), "node 'n0' (MaxPool)"));
    assert_non_null(strstr(lp_last_error(), "kernel_shape"));
    gc_free(&g);

    gc_init(&g, "FancyOp", 302); /* unknown op: finalize lists what is supported */
    gc_input(&g, 1, S(3), -1, 1);
    gc_node(&g, 1);
    assert_int_equal(gc_finalize(&g), LP_ERR_UNSUPPORTED);
    assert_non_null(strstr(lp_last_error(), "FancyOp"));
    assert_non_null(strstr(lp_last_error(), "Conv"));
    gc_free(&g);

    gc_init(&g, "Reshape", 303); /* element count mismatch */
    gc_input(&g, 2, S(2, 3), -1, 1);
    gc_ints(&g, NS(4, -1, 2));
    gc_node(&g, 1);
    assert_int_equal(gc_finalize(&g), LP_ERR_SHAPE);
    assert_non_null(strstr(lp_last_error(), "2x3"));
    gc_free(&g);

    gc_init(&g, "Add", 304); /* broadcast mismatch */
    gc_input(&g, 2, S(2, 3), -1, 1);
    gc_input(&g, 2, S(2, 4), -1, 1);
    gc_node(&g, 1);
    assert_int_equal(gc_finalize(&g), LP_ERR_SHAPE);
    gc_free(&g);

    gc_init(&g, "Pad", 305);
    gc_input(&g, 2, S(2, 3), -1, 1);
    gc_ints(&g, NS(0, 0, 0, 0));
    lp_node *n = gc_node(&g, 1);
    lp_node_set_string(n, "mode", "wrap");
    assert_int_equal(gc_finalize(&g), LP_ERR_UNSUPPORTED);
    assert_non_null(strstr(lp_last_error(), "wrap"));
    gc_free(&g);
}

static void test_macs(void **st) {
    (void)st;
    gc g;
    gc_init(&g, "Conv", 400);
    gc_input(&g, 4, S(2, 4, 8, 8), -1, 1);
    gc_weight(&g, 4, S(6, 2, 3, 3), -1, 1);
    lp_node *n = gc_node(&g, 1);
    lp_node_set_int(n, "group", 2);
    lp_node_set_ints(n, "pads", NS(1, 1, 1, 1));
    lp_node_set_ints(n, "strides", NS(2, 2));
    assert_int_equal(gc_finalize(&g), LP_OK);
    lp_node_info info;
    assert_int_equal(lp_model_node_info(g.m, 0, &info), LP_OK);
    assert_int_equal(info.macs, 2 * 6 * 4 * 4 * 2 * 3 * 3);
    gc_free(&g);

    gc_init(&g, "Gemm", 401);
    gc_input(&g, 2, S(3, 5), -1, 1);
    gc_weight(&g, 2, S(7, 5), -1, 1);
    n = gc_node(&g, 1);
    lp_node_set_int(n, "transB", 1);
    assert_int_equal(gc_finalize(&g), LP_OK);
    assert_int_equal(lp_model_node_info(g.m, 0, &info), LP_OK);
    assert_int_equal(info.macs, 3 * 7 * 5);
    gc_free(&g);
}

int main(void) {
    const char *twin = getenv("LOUPE_OPS_TWIN");
    if (twin && !strcmp(twin, "cuda")) {
        if (lp_cuda_device_count() <= 0) {
            printf("SKIPPED: no CUDA device (or a build without CUDA): the ops' CUDA twins need a GPU\n");
            return 0;
        }
        twin_on = 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_macs),
        cmocka_unit_test(test_conv_basic),
        cmocka_unit_test(test_conv_group_dilation_stride),
        cmocka_unit_test(test_conv_depthwise_same),
        cmocka_unit_test(test_conv_1d),
        cmocka_unit_test(test_conv_transpose),
        cmocka_unit_test(test_conv_transpose_group),
        cmocka_unit_test(test_conv_forward_reference),
        cmocka_unit_test(test_batchnorm),
        cmocka_unit_test(test_lrn),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_Softmax),
        cmocka_unit_test(test_LogSoftmax),
        cmocka_unit_test(test_Relu),
        cmocka_unit_test(test_LeakyRelu),
        cmocka_unit_test(test_Sigmoid),
        cmocka_unit_test(test_HardSigmoid),
        cmocka_unit_test(test_HardSwish),
        cmocka_unit_test(test_Gelu),
        cmocka_unit_test(test_GeluTanh),
        cmocka_unit_test(test_Erf),
        cmocka_unit_test(test_Tanh),
        cmocka_unit_test(test_Exp),
        cmocka_unit_test(test_Log),
        cmocka_unit_test(test_Neg),
        cmocka_unit_test(test_Abs),
        cmocka_unit_test(test_Sqrt),
        cmocka_unit_test(test_clip),
        cmocka_unit_test(test_Add),
        cmocka_unit_test(test_Sub),
        cmocka_unit_test(test_Mul),
        cmocka_unit_test(test_Div),
        cmocka_unit_test(test_Pow),
        cmocka_unit_test(test_pow_scalar),
        cmocka_unit_test(test_maxpool),
        cmocka_unit_test(test_globalmaxpool),
        cmocka_unit_test(test_avgpool),
        cmocka_unit_test(test_globalavgpool),
        cmocka_unit_test(test_pool_shapes),
        cmocka_unit_test(test_reducemean),
        cmocka_unit_test(test_reducesum),
        cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_concat),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_slice),
        cmocka_unit_test(test_pad),
        cmocka_unit_test(test_transpose),
        cmocka_unit_test(test_reshape),
        cmocka_unit_test(test_flatten),
        cmocka_unit_test(test_squeeze),
        cmocka_unit_test(test_unsqueeze),
        cmocka_unit_test(test_identity),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_cast),
        cmocka_unit_test(test_gather_float),
        cmocka_unit_test(test_expand),
        cmocka_unit_test(test_int64_folding),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (twin_on) printf("twin: %d CUDA/CPU mismatches\n", twin_failures);
    return rc ? rc : twin_failures ? 1 : 0;
}
