/* test_exec.c — the executor: forward with captures, backward to the input, to an
 * intermediate and to the weights, per-op rule overrides, batch sizes other than the
 * declared one, and the errors a caller can cause. The model is small and built with
 * the builder: x -> Conv -> Relu -> Flatten -> Gemm -> y, checked against direct loops. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "testutil.h"

enum { C = 2, H = 5, W = 5, K = 3, F = 4 }; /* conv 2->3, 3x3, pad 1; fc 75->4 */

static lp_tensor *rand_tensor(tu_rng *r, int nd, const int64_t *shape, float scale) {
    lp_tensor *t;
    assert_int_equal(lp_tensor_new(&t, LP_DEVICE_CPU, LP_F32, nd, shape), LP_OK);
    float *p = t->data;
    for (int64_t i = 0; i < lp_tensor_numel(t); i++) p[i] = scale * tu_normal(r);
    return t;
}

static lp_model *build(void) {
    tu_rng r = {42};
    lp_model *m = lp_model_new();
    lp_shape in = {4, {1, C, H, W}};
    lp_model_add_input(m, "x", &in);
    int64_t ws[4] = {K, C, 3, 3}, bs[1] = {K}, fs[2] = {F, K * H * W}, fb[1] = {F};
    lp_model_add_initializer(m, "w", rand_tensor(&r, 4, ws, 0.3f), 1);
    lp_model_add_initializer(m, "b", rand_tensor(&r, 1, bs, 0.1f), 1);
    lp_model_add_initializer(m, "fw", rand_tensor(&r, 2, fs, 0.2f), 1);
    lp_model_add_initializer(m, "fb", rand_tensor(&r, 1, fb, 0.1f), 1);
    const char *ci[] = {"x", "w", "b"}, *co[] = {"c"};
    int n = lp_model_add_node(m, "Conv", "conv", 3, ci, 1, co);
    int64_t k3[2] = {3, 3}, p1[4] = {1, 1, 1, 1};
    lp_node_set_ints(&m->nodes[n], "kernel_shape", 2, k3);
    lp_node_set_ints(&m->nodes[n], "pads", 4, p1);
    const char *ri[] = {"c"}, *ro[] = {"r"};
    lp_model_add_node(m, "Relu", "relu", 1, ri, 1, ro);
    const char *fi[] = {"r"}, *fo[] = {"f"};
    lp_model_add_node(m, "Flatten", "flatten", 1, fi, 1, fo);
    const char *gi[] = {"f", "fw", "fb"}, *go[] = {"y"};
    n = lp_model_add_node(m, "Gemm", "fc", 3, gi, 1, go);
    lp_node_set_int(&m->nodes[n], "transB", 1);
    lp_model_mark_output(m, "y");
    assert_int_equal(lp_model_finalize(m), LP_OK);
    return m;
}

/* Direct reference: forward of one image, in double. */
static void ref_forward(const lp_model *m, const float *x, double *c, double *y) {
    const float *w = m->values[lp_model_find_value(m, "w")].init->data;
    const float *b = m->values[lp_model_find_value(m, "b")].init->data;
    const float *fw = m->values[lp_model_find_value(m, "fw")].init->data;
    const float *fb = m->values[lp_model_find_value(m, "fb")].init->data;
    for (int k = 0; k < K; k++)
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++) {
                double s = b[k];
                for (int ch = 0; ch < C; ch++)
                    for (int u = 0; u < 3; u++)
                        for (int v = 0; v < 3; v++) {
                            int ii = i + u - 1, jj = j + v - 1;
                            if (ii < 0 || jj < 0 || ii >= H || jj >= W) continue;
                            s += (double)w[((k * C + ch) * 3 + u) * 3 + v] * x[(ch * H + ii) * W + jj];
                        }
                c[(k * H + i) * W + j] = s;
            }
    for (int f = 0; f < F; f++) {
        double s = fb[f];
        for (int q = 0; q < K * H * W; q++) s += (double)fw[f * K * H * W + q] * (c[q] > 0 ? c[q] : 0);
        y[f] = s;
    }
}

static void test_forward_batch_and_capture(void **state) {
    (void)state;
    lp_model *m = build();
    lp_run *r;
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &r), LP_OK);
    assert_int_equal(lp_run_capture(r, "c"), LP_OK);
    assert_int_not_equal(lp_run_capture(r, "nope"), LP_OK);
    assert_non_null(strstr(lp_last_error(), "nope"));
    tu_rng g = {7};
    int64_t xs[4] = {3, C, H, W}; /* batch 3 while the model declares 1 */
    lp_tensor *x = rand_tensor(&g, 4, xs, 1.0f);
    assert_int_equal(lp_run_forward(r, x), LP_OK);
    const lp_tensor *y = lp_run_output(r), *c = lp_run_value(r, "c");
    assert_non_null(y);
    assert_non_null(c);
    assert_int_equal(y->shape[0], 3);
    assert_int_equal(y->shape[1], F);
    for (int n = 0; n < 3; n++) {
        double cr[K * H * W], yr[F];
        ref_forward(m, (float *)x->data + n * C * H * W, cr, yr);
        assert_true(tu_rel_l2_d((float *)y->data + n * F, yr, F) < 1e-5);
        assert_true(tu_rel_l2_d((float *)c->data + n * K * H * W, cr, K * H * W) < 1e-5);
    }
    lp_tensor_free(x);
    lp_run_free(r);
    lp_model_free(m);
}

/* Forward-only runs free what no later layer reads: same logits, the intermediates
 * gone unless captured, backward refused with a message. */
static void test_forward_only(void **state) {
    (void)state;
    lp_model *m = build();
    lp_run *r;
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &r), LP_OK);
    assert_int_equal(lp_run_set_forward_only(r, 1), LP_OK);
    assert_int_equal(lp_run_capture(r, "r"), LP_OK);
    tu_rng g = {9};
    int64_t xs[4] = {2, C, H, W};
    lp_tensor *x = rand_tensor(&g, 4, xs, 1.0f);
    for (int pass = 0; pass < 2; pass++) { /* the second pass re-creates what the first freed */
        assert_int_equal(lp_run_forward(r, x), LP_OK);
        const lp_tensor *y = lp_run_output(r);
        assert_non_null(y);
        assert_null(lp_run_value(r, "c"));
        assert_null(lp_run_value(r, "f"));
        assert_non_null(lp_run_value(r, "r"));
        for (int n = 0; n < 2; n++) {
            double cr[K * H * W], yr[F];
            ref_forward(m, (float *)x->data + n * C * H * W, cr, yr);
            assert_true(tu_rel_l2_d((float *)y->data + n * F, yr, F) < 1e-5);
        }
    }
    lp_backward_opts bo = {0};
    assert_int_equal(lp_run_backward(r, &bo), LP_ERR_ARG);
    assert_non_null(strstr(lp_last_error(), "forward-only"));
    lp_tensor_free(x);
    lp_run_free(r);
    lp_model_free(m);
}

/* A forward-only run computes Conv+Relu as one pass (the pre-activation is never
 * stored) with the same logits, bit for bit, as a run that keeps every value; a
 * captured pre-activation is stored as computed, so that pair is not fused. */
static void test_forward_only_fusion(void **state) {
    (void)state;
    lp_model *m = build();
    lp_run *full, *fused, *kept;
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &full), LP_OK);
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &fused), LP_OK);
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &kept), LP_OK);
    assert_int_equal(lp_run_set_forward_only(fused, 1), LP_OK);
    assert_int_equal(lp_run_set_forward_only(kept, 1), LP_OK);
    assert_int_equal(lp_run_capture(kept, "c"), LP_OK);
    lp_run_speed sp;
    lp_run_speed_info(full, &sp);
    assert_int_equal(sp.fused, 0);
    lp_run_speed_info(fused, &sp);
    assert_int_equal(sp.fused, 1);
    tu_rng g = {11};
    int64_t xs[4] = {3, C, H, W};
    lp_tensor *x = rand_tensor(&g, 4, xs, 1.0f);
    assert_int_equal(lp_run_forward(full, x), LP_OK);
    assert_int_equal(lp_run_forward(fused, x), LP_OK);
    assert_int_equal(lp_run_forward(kept, x), LP_OK);
    const lp_tensor *y0 = lp_run_output(full), *y1 = lp_run_output(fused), *y2 = lp_run_output(kept);
    assert_non_null(y1);
    assert_non_null(y2);
    assert_memory_equal(y0->data, y1->data, y0->nbytes);
    assert_memory_equal(y0->data, y2->data, y0->nbytes);
    const lp_tensor *c0 = lp_run_value(full, "c"), *c2 = lp_run_value(kept, "c");
    assert_non_null(c2);
    assert_memory_equal(c0->data, c2->data, c0->nbytes); /* the pre-activation, negatives and all */
    int neg = 0;
    for (int64_t i = 0; i < lp_tensor_numel(c2); i++) neg += ((const float *)c2->data)[i] < 0;
    assert_true(neg > 0);
    assert_null(lp_run_value(fused, "c"));
    lp_tensor_free(x);
    lp_run_free(full);
    lp_run_free(fused);
    lp_run_free(kept);
    lp_model_free(m);
}

/* BatchNormalization through the executor: its affine is folded once per weight
 * generation (lp_op.derive); forward, the input gradient, and both again after the
 * weights change, against direct formulas in double. */
static void test_batchnorm_folded(void **state) {
    (void)state;
    enum { BC = 3 };
    tu_rng g = {5};
    lp_model *m = lp_model_new();
    lp_shape in = {4, {2, BC, 4, 4}};
    lp_model_add_input(m, "x", &in);
    int64_t cs[1] = {BC};
    lp_tensor *sc = rand_tensor(&g, 1, cs, 1.f), *bb = rand_tensor(&g, 1, cs, 1.f), *mu = rand_tensor(&g, 1, cs, 1.f),
              *var = rand_tensor(&g, 1, cs, 1.f);
    for (int k = 0; k < BC; k++) ((float *)var->data)[k] = 0.5f + ((float *)var->data)[k] * ((float *)var->data)[k];
    lp_model_add_initializer(m, "scale", sc, 1);
    lp_model_add_initializer(m, "B", bb, 1);
    lp_model_add_initializer(m, "mean", mu, 1);
    lp_model_add_initializer(m, "var", var, 1);
    const char *bi[] = {"x", "scale", "B", "mean", "var"}, *bo[] = {"y"};
    lp_model_add_node(m, "BatchNormalization", "bn", 5, bi, 1, bo);
    lp_model_mark_output(m, "y");
    assert_int_equal(lp_model_finalize(m), LP_OK);
    lp_run *r;
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &r), LP_OK);
    int64_t xs[4] = {2, BC, 4, 4};
    lp_tensor *x = rand_tensor(&g, 4, xs, 1.f);
    const int64_t hw = 16, nx = 2 * BC * hw;
    for (int round = 0; round < 2; round++) {
        if (round) { /* new weights, the trainer's way */
            for (int k = 0; k < BC; k++) ((float *)sc->data)[k] *= -2.f;
            m->weights_gen++;
        }
        const float *S = sc->data, *Bv = bb->data, *M = mu->data, *V = var->data, *X = x->data;
        double want[2 * BC * 16], dwant[2 * BC * 16];
        for (int64_t i = 0; i < nx; i++) {
            int k = (int)(i / hw % BC);
            double rs = 1.0 / sqrt((double)V[k] + 1e-5);
            want[i] = ((double)X[i] - M[k]) * rs * S[k] + Bv[k];
            dwant[i] = S[k] * rs;
        }
        assert_int_equal(lp_run_forward(r, x), LP_OK);
        assert_true(tu_rel_l2_d(lp_run_output(r)->data, want, nx) < 1e-6);
        lp_backward_opts o = {0};
        assert_int_equal(lp_run_backward(r, &o), LP_OK);
        assert_true(tu_rel_l2_d(lp_run_grad(r, "x")->data, dwant, nx) < 1e-6);
    }
    lp_tensor_free(x);
    lp_run_free(r);
    lp_model_free(m);
}

/* Objective: sum(seed * y). Gradients against central differences in double. */
static double objective(lp_model *m, const float *x, const float *seed) {
    double c[K * H * W], y[F], s = 0;
    ref_forward(m, x, c, y);
    for (int f = 0; f < F; f++) s += seed[f] * y[f];
    return s;
}

static void test_backward_input_and_weights(void **state) {
    (void)state;
    lp_model *m = build();
    lp_run *r;
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &r), LP_OK);
    tu_rng g = {9};
    int64_t xs[4] = {1, C, H, W}, ys[2] = {1, F};
    lp_tensor *x = rand_tensor(&g, 4, xs, 1.0f), *seed = rand_tensor(&g, 2, ys, 1.0f);
    lp_backward_opts bo = {.seed = seed, .weight_grads = 1};
    assert_int_not_equal(lp_run_backward(r, &bo), LP_OK); /* no forward yet */
    assert_int_equal(lp_run_forward(r, x), LP_OK);
    assert_int_equal(lp_run_backward(r, &bo), LP_OK);
    const lp_tensor *gx = lp_run_grad(r, "x"), *gw = lp_run_grad(r, "w"), *gfb = lp_run_grad(r, "fb");
    assert_non_null(gx);
    assert_non_null(gw);
    assert_non_null(gfb);
    /* d/dfb = seed exactly */
    assert_true(tu_rel_l2(gfb->data, seed->data, F) < 1e-6);
    float *xp = x->data;
    const double eps = 1e-3;
    double num[C * H * W];
    for (int i = 0; i < C * H * W; i++) {
        float keep = xp[i];
        xp[i] = keep + (float)eps;
        double a = objective(m, xp, seed->data);
        xp[i] = keep - (float)eps;
        double b = objective(m, xp, seed->data);
        xp[i] = keep;
        num[i] = (a - b) / (2 * eps);
    }
    double e = tu_rel_l2_d(gx->data, num, C * H * W);
    printf("input gradient vs central differences: rel L2 %.2e\n", e);
    assert_true(e < 1e-2);
    float *wp = m->values[lp_model_find_value(m, "w")].init->data;
    double numw[K * C * 9];
    for (int i = 0; i < K * C * 9; i++) {
        float keep = wp[i];
        wp[i] = keep + (float)eps;
        double a = objective(m, xp, seed->data);
        wp[i] = keep - (float)eps;
        double b = objective(m, xp, seed->data);
        wp[i] = keep;
        numw[i] = (a - b) / (2 * eps);
    }
    e = tu_rel_l2_d(gw->data, numw, K * C * 9);
    printf("conv weight gradient vs central differences: rel L2 %.2e\n", e);
    assert_true(e < 1e-2);

    /* Without weight_grads only activations get gradients, and the same ones. */
    float gx_copy[C * H * W];
    memcpy(gx_copy, gx->data, sizeof gx_copy);
    lp_backward_opts bo2 = {.seed = seed};
    assert_int_equal(lp_run_backward(r, &bo2), LP_OK);
    assert_null(lp_run_grad(r, "w"));
    assert_non_null(lp_run_grad(r, "x"));
    assert_true(tu_rel_l2(lp_run_grad(r, "x")->data, gx_copy, C * H * W) < 1e-6);

    /* Backward from an intermediate: d sum(c) / dx. */
    lp_backward_opts bo3 = {.of = "c"};
    assert_int_equal(lp_run_backward(r, &bo3), LP_OK);
    assert_non_null(lp_run_grad(r, "x"));
    assert_null(lp_run_grad(r, "y"));

    /* A seed of the wrong shape is a clear error. */
    int64_t bad[2] = {1, F + 1};
    lp_tensor *bs;
    assert_int_equal(lp_tensor_new(&bs, LP_DEVICE_CPU, LP_F32, 2, bad), LP_OK);
    lp_backward_opts bo4 = {.seed = bs};
    assert_int_equal(lp_run_backward(r, &bo4), LP_ERR_SHAPE);
    assert_non_null(strstr(lp_last_error(), "1x5"));
    lp_tensor_free(bs);
    lp_tensor_free(x);
    lp_tensor_free(seed);
    lp_run_free(r);
    lp_model_free(m);
}

/* A rule that lets every gradient through a Relu unchanged. */
static lp_status relu_passthrough(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                                  lp_tensor *const *dout, lp_tensor *const *din) {
    (void)n, (void)in, (void)out;
    return c->be->axpy(lp_tensor_numel(dout[0]), 1.0f, dout[0]->data, din[0]->data);
}

static void test_rule_override(void **state) {
    (void)state;
    lp_model *m = build();
    lp_run *r;
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &r), LP_OK);
    tu_rng g = {11};
    int64_t xs[4] = {1, C, H, W};
    lp_tensor *x = rand_tensor(&g, 4, xs, 1.0f);
    assert_int_equal(lp_run_forward(r, x), LP_OK);
    lp_backward_opts bo = {.of = "r"};
    assert_int_equal(lp_run_backward(r, &bo), LP_OK);
    const lp_tensor *gc = lp_run_grad(r, "c");
    float true_gc[K * H * W];
    memcpy(true_gc, gc->data, sizeof true_gc);
    lp_backward_fn fns[256] = {0};
    assert_true(lp_op_count() <= 256);
    fns[lp_op_index(lp_op_find("Relu"))] = relu_passthrough;
    lp_rules rules = {.fn = fns, .n = lp_op_count()};
    bo.rules = &rules;
    assert_int_equal(lp_run_backward(r, &bo), LP_OK);
    gc = lp_run_grad(r, "c");
    const float *c = lp_run_value(r, "c")->data;
    int zeroed = 0;
    for (int i = 0; i < K * H * W; i++) {
        assert_true(fabsf(((float *)gc->data)[i] - 1.0f) < 1e-6f); /* passthrough: all ones */
        if (c[i] <= 0) {
            assert_true(true_gc[i] == 0.0f); /* the true rule blocks negatives */
            zeroed++;
        }
    }
    assert_true(zeroed > 0);
    lp_tensor_free(x);
    lp_run_free(r);
    lp_model_free(m);
}

static void test_input_errors(void **state) {
    (void)state;
    lp_model *m = build();
    lp_run *r;
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &r), LP_OK);
    int64_t xs[4] = {1, C + 1, H, W};
    lp_tensor *x;
    assert_int_equal(lp_tensor_new(&x, LP_DEVICE_CPU, LP_F32, 4, xs), LP_OK);
    assert_int_equal(lp_run_forward(r, x), LP_ERR_SHAPE);
    assert_non_null(strstr(lp_last_error(), "1x3x5x5"));
    lp_tensor_free(x);
    int64_t xs2[4] = {1, C, H + 1, W}; /* spatial mismatch reaches the Gemm */
    assert_int_equal(lp_tensor_new(&x, LP_DEVICE_CPU, LP_F32, 4, xs2), LP_OK);
    assert_int_not_equal(lp_run_forward(r, x), LP_OK);
    assert_non_null(strstr(lp_last_error(), "fc"));
    lp_tensor_free(x);
    lp_run_free(r);
    lp_model_free(m);
}

/* A lean run keeps what the input gradient reads (here the Relu's output) and the
 * captured values: the same gradients bit for bit as a run that keeps everything,
 * over batch changes and repeated backward passes, in less memory; the pre-activation
 * (fused into the conv) and the flattened rows are not readable, and what would need
 * them (rules, weight gradients, forward from a value) is refused by name. */
static void test_lean(void **state) {
    (void)state;
    lp_model *m = build();
    lp_run *full, *lean;
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &full), LP_OK);
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &lean), LP_OK);
    assert_int_equal(lp_run_set_lean(lean, 1), LP_OK);
    tu_rng g = {13};
    for (int pass = 0; pass < 3; pass++) {
        int64_t nb = pass == 1 ? 5 : 2, xs[4] = {nb, C, H, W}, ys[2] = {nb, F};
        lp_tensor *x = rand_tensor(&g, 4, xs, 1.0f), *seed = rand_tensor(&g, 2, ys, 1.0f);
        if (pass == 2) assert_int_equal(lp_run_capture(lean, "f"), LP_OK); /* a new plan keeps it */
        assert_int_equal(lp_run_forward(full, x), LP_OK);
        assert_int_equal(lp_run_forward(lean, x), LP_OK);
        for (int b = 0; b < 2; b++) { /* a second backward over the same forward */
            lp_backward_opts bo = {.seed = b ? NULL : seed, .of = b ? "r" : NULL};
            assert_int_equal(lp_run_backward(full, &bo), LP_OK);
            assert_int_equal(lp_run_backward(lean, &bo), LP_OK);
            const lp_tensor *a = lp_run_grad(full, "x"), *l = lp_run_grad(lean, "x");
            assert_non_null(l);
            assert_memory_equal(a->data, l->data, a->nbytes);
        }
        assert_memory_equal(lp_run_output(full)->data, lp_run_output(lean)->data, lp_run_output(full)->nbytes);
        assert_non_null(lp_run_value(lean, "r")); /* the Relu's gradient reads it */
        assert_null(lp_run_value(lean, "c"));     /* fused away */
        assert_null(lp_run_grad(lean, "c"));      /* in the arena */
        if (pass == 2) {
            assert_non_null(lp_run_value(lean, "f"));
            assert_memory_equal(lp_run_value(full, "f")->data, lp_run_value(lean, "f")->data,
                                lp_run_value(full, "f")->nbytes);
        } else {
            assert_null(lp_run_value(lean, "f"));
        }
        lp_run_speed sf, sl;
        lp_run_speed_info(full, &sf);
        lp_run_speed_info(lean, &sl);
        assert_int_equal(sl.fused, 1);
        assert_true(sl.held_bytes > 0 && sl.held_bytes < sf.held_bytes);
        lp_tensor_free(x);
        lp_tensor_free(seed);
    }
    lp_backward_opts wg = {.weight_grads = 1};
    assert_int_equal(lp_run_backward(lean, &wg), LP_ERR_ARG);
    assert_non_null(strstr(lp_last_error(), "lean"));
    lp_backward_fn fns[256] = {0};
    lp_rules rules = {.fn = fns, .n = lp_op_count()};
    lp_backward_opts ru = {.rules = &rules};
    assert_int_equal(lp_run_backward(lean, &ru), LP_ERR_ARG);
    assert_non_null(strstr(lp_last_error(), "rule table"));
    rules.plain_reads = 1; /* reads what the plain backward reads (guided backprop's): taken */
    assert_int_equal(lp_run_backward(lean, &ru), LP_OK);
    int64_t rs[4] = {2, K, H, W};
    lp_tensor *rv;
    assert_int_equal(lp_tensor_new(&rv, LP_DEVICE_CPU, LP_F32, 4, rs), LP_OK);
    assert_int_equal(_lp_run_forward_from(lean, "r", rv), LP_ERR_ARG);
    lp_tensor_free(rv);
    /* Off again: the next forward keeps everything. */
    assert_int_equal(lp_run_set_lean(lean, 0), LP_OK);
    assert_null(lp_run_output(lean)); /* the mode change drops the last forward */
    int64_t xs[4] = {1, C, H, W};
    lp_tensor *x = rand_tensor(&g, 4, xs, 1.0f);
    assert_int_equal(lp_run_forward(lean, x), LP_OK);
    assert_non_null(lp_run_value(lean, "c"));
    lp_tensor_free(x);
    lp_run_free(full);
    lp_run_free(lean);
    lp_model_free(m);
}

/* Backward that stops at a value (Grad-CAM's layer): the same gradient there as a
 * full backward, nothing below it computed; a lean run stopping there keeps less than
 * a plain lean run and refuses a backward that would go further. */
static void test_stop_at(void **state) {
    (void)state;
    lp_model *m = build();
    lp_run *full, *lean, *at;
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &full), LP_OK);
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &lean), LP_OK);
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &at), LP_OK);
    assert_int_equal(lp_run_capture(full, "r"), LP_OK);
    assert_int_equal(lp_run_capture(lean, "r"), LP_OK);
    assert_int_equal(lp_run_set_lean(lean, 1), LP_OK);
    assert_int_equal(lp_run_set_lean_at(at, "r"), LP_OK);
    _lp_keep k;
    _lp_run_get_keep(at, &k);
    assert_true(!k.forward_only && k.lean && k.lean_root == lp_model_find_value(m, "r") && k.tail_root < 0);
    tu_rng g = {29};
    int64_t xs[4] = {3, C, H, W}, ys[2] = {3, F};
    lp_tensor *x = rand_tensor(&g, 4, xs, 1.0f), *seed = rand_tensor(&g, 2, ys, 1.0f);
    lp_run *runs[3] = {full, lean, at};
    for (int i = 0; i < 3; i++) assert_int_equal(lp_run_forward(runs[i], x), LP_OK);
    lp_backward_opts whole = {.seed = seed}, stop = {.seed = seed, .stop_at = "r"};
    assert_int_equal(lp_run_backward(full, &whole), LP_OK);
    lp_tensor *ref;
    assert_int_equal(lp_tensor_clone(&ref, lp_run_grad(full, "r"), LP_DEVICE_CPU), LP_OK);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(lp_run_backward(runs[i], &stop), LP_OK);
        const lp_tensor *gr = lp_run_grad(runs[i], "r");
        assert_non_null(gr);
        assert_memory_equal(ref->data, gr->data, ref->nbytes);
        assert_null(lp_run_grad(runs[i], "x")); /* below the stop: never computed */
    }
    assert_non_null(lp_run_value(at, "r")); /* where it stops is kept */
    lp_run_speed sl, sa;
    lp_run_speed_info(lean, &sl);
    lp_run_speed_info(at, &sa);
    assert_true(sa.held_bytes > 0 && sa.held_bytes <= sl.held_bytes);
    /* A backward to the input would read what the stopping run dropped. */
    assert_int_equal(lp_run_backward(at, &whole), LP_ERR_ARG);
    assert_non_null(strstr(lp_last_error(), "down to 'r'"));
    lp_backward_opts wg = {.stop_at = "r", .weight_grads = 1}, at_w = {.stop_at = "w"};
    assert_int_equal(lp_run_backward(full, &wg), LP_ERR_ARG);
    assert_int_equal(lp_run_backward(full, &at_w), LP_ERR_ARG); /* a weight is no place to stop */
    /* Stopping at the convolution's output: that pair is not fused (the value is kept as
     * computed), and the speed counters say so. */
    assert_int_equal(lp_run_set_lean_at(at, "c"), LP_OK);
    assert_int_equal(lp_run_forward(at, x), LP_OK);
    assert_non_null(lp_run_value(at, "c"));
    lp_run_speed sc;
    lp_run_speed_info(at, &sc);
    assert_int_equal(sc.fused, 0);
    assert_int_equal(lp_run_set_lean_at(at, "w"), LP_ERR_ARG); /* a weight, not an activation */
    assert_int_equal(lp_run_set_lean_at(at, "nope"), LP_ERR_ARG);
    /* Stopping after the Relu: its output, which a plain lean run keeps for the Relu's
     * backward, is not kept. */
    assert_int_equal(lp_run_capture(full, "f"), LP_OK);
    assert_int_equal(lp_run_forward(full, x), LP_OK);
    assert_int_equal(lp_run_set_lean_at(at, "f"), LP_OK);
    assert_int_equal(lp_run_forward(at, x), LP_OK);
    assert_null(lp_run_value(at, "r"));
    assert_non_null(lp_run_value(lean, "r"));
    lp_backward_opts stop_f = {.seed = seed, .stop_at = "f"};
    assert_int_equal(lp_run_backward(full, &stop_f), LP_OK);
    assert_int_equal(lp_run_backward(at, &stop_f), LP_OK);
    assert_memory_equal(lp_run_grad(full, "f")->data, lp_run_grad(at, "f")->data, lp_run_grad(full, "f")->nbytes);
    assert_int_equal(lp_run_backward(at, &stop), LP_ERR_ARG); /* "r" is below "f" */
    /* Back to a plain lean run: gradients reach the input again. */
    assert_int_equal(lp_run_set_lean_at(at, NULL), LP_OK);
    assert_int_equal(lp_run_forward(at, x), LP_OK);
    assert_int_equal(lp_run_backward(at, &whole), LP_OK);
    assert_int_equal(lp_run_backward(lean, &whole), LP_OK);
    assert_memory_equal(lp_run_grad(lean, "x")->data, lp_run_grad(at, "x")->data, lp_run_grad(lean, "x")->nbytes);
    lp_tensor_free(ref);
    lp_tensor_free(x);
    lp_tensor_free(seed);
    for (int i = 0; i < 3; i++) lp_run_free(runs[i]);
    lp_model_free(m);
}

/* A forward-only run that re-runs its tail from a value (Ablation-CAM's): the tail
 * from an edited value gives what a keep-all run gives, with the tail's reads from
 * before the value kept (a skip connection) and the rest in the arena. */
static void test_tail(void **state) {
    (void)state;
    /* x -> relu a -> scale b (the root) -> add(a, b) -> relu y: the Add reads a. */
    lp_model *m = lp_model_new();
    lp_shape in = {2, {1, 6}};
    lp_model_add_input(m, "x", &in);
    const char *i1[] = {"x"}, *o1[] = {"a"}, *i2[] = {"a", "two"}, *o2[] = {"b"}, *i3[] = {"a", "b"}, *o3[] = {"s"},
               *i4[] = {"s"}, *o4[] = {"y"};
    int64_t one[1] = {1};
    lp_tensor *two;
    assert_int_equal(lp_tensor_new(&two, LP_DEVICE_CPU, LP_F32, 1, one), LP_OK);
    ((float *)two->data)[0] = 2.f;
    lp_model_add_initializer(m, "two", two, 0);
    lp_model_add_node(m, "Relu", "ra", 1, i1, 1, o1);
    lp_model_add_node(m, "Mul", "mb", 2, i2, 1, o2);
    lp_model_add_node(m, "Add", "add", 2, i3, 1, o3);
    lp_model_add_node(m, "Relu", "ry", 1, i4, 1, o4);
    lp_model_mark_output(m, "y");
    assert_int_equal(lp_model_finalize(m), LP_OK);
    lp_run *full, *tail;
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &full), LP_OK);
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &tail), LP_OK);
    _lp_keep k = {1, 0, -1, lp_model_find_value(m, "b")};
    assert_int_equal(_lp_run_set_keep(tail, &k), LP_OK);
    tu_rng g = {3};
    int64_t xs[2] = {4, 6};
    lp_tensor *x = rand_tensor(&g, 2, xs, 1.0f), *edit = rand_tensor(&g, 2, xs, 1.0f);
    assert_int_equal(lp_run_forward(full, x), LP_OK);
    assert_int_equal(lp_run_forward(tail, x), LP_OK);
    assert_non_null(lp_run_value(tail, "a")); /* read by the tail: kept */
    assert_non_null(lp_run_value(tail, "b")); /* the root */
    assert_null(lp_run_value(tail, "s"));     /* in the arena */
    assert_int_equal(_lp_run_forward_from(full, "b", edit), LP_OK);
    assert_int_equal(_lp_run_forward_from(tail, "b", edit), LP_OK);
    assert_memory_equal(lp_run_output(full)->data, lp_run_output(tail)->data, lp_run_output(full)->nbytes);
    const float *xa = x->data, *e = edit->data, *y = lp_run_output(tail)->data;
    for (int i = 0; i < 24; i++) {
        float a = xa[i] > 0 ? xa[i] : 0, s = a + e[i];
        assert_true(y[i] == (s > 0 ? s : 0));
    }
    assert_int_equal(_lp_run_forward_from(tail, "a", x), LP_ERR_ARG); /* not its tail root */
    lp_tensor_free(x);
    lp_tensor_free(edit);
    lp_run_free(full);
    lp_run_free(tail);
    lp_model_free(m);
    /* A tail with a fused Conv+Relu in it (from the input): the conv writes the Relu's
     * output in the re-run too. */
    m = build();
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &full), LP_OK);
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &tail), LP_OK);
    k.tail_root = lp_model_find_value(m, "x");
    assert_int_equal(_lp_run_set_keep(tail, &k), LP_OK);
    int64_t cs[4] = {2, C, H, W};
    x = rand_tensor(&g, 4, cs, 1.0f), edit = rand_tensor(&g, 4, cs, 1.0f);
    assert_int_equal(lp_run_forward(full, x), LP_OK);
    assert_int_equal(lp_run_forward(tail, x), LP_OK);
    lp_run_speed sp;
    lp_run_speed_info(tail, &sp);
    assert_int_equal(sp.fused, 1);
    assert_int_equal(_lp_run_forward_from(full, "x", edit), LP_OK);
    assert_int_equal(_lp_run_forward_from(tail, "x", edit), LP_OK);
    assert_memory_equal(lp_run_output(full)->data, lp_run_output(tail)->data, lp_run_output(full)->nbytes);
    lp_tensor_free(x);
    lp_tensor_free(edit);
    lp_run_free(full);
    lp_run_free(tail);
    lp_model_free(m);
}

/* The arena planner: buffers alive at the same step never share bytes, every offset
 * is aligned, and a chain (each buffer alive beside its neighbours only) needs no
 * more than its two largest neighbouring pairs, far less than the sum. */
static void test_mem_plan(void **state) {
    (void)state;
    enum { N = 200 };
    tu_rng g = {17};
    lp_plan_item it[N];
    size_t sum = 0;
    for (int i = 0; i < N; i++) {
        int a = (int)tu_uniform(&g, 0, 50), len = (int)tu_uniform(&g, 0, 10);
        it[i] = (lp_plan_item){(size_t)tu_uniform(&g, 1, 5000), a, a + len, 0};
    }
    size_t total;
    assert_int_equal(lp_mem_plan(it, N, 256, &total), LP_OK);
    for (int i = 0; i < N; i++) {
        sum += it[i].bytes;
        assert_int_equal(it[i].offset % 256, 0);
        assert_true(it[i].bytes % 256 == 0 && it[i].offset + it[i].bytes <= total);
        for (int j = 0; j < i; j++) {
            int live = it[i].first <= it[j].last && it[j].first <= it[i].last;
            int overlap = it[i].offset < it[j].offset + it[j].bytes && it[j].offset < it[i].offset + it[i].bytes;
            assert_false(live && overlap);
        }
    }
    assert_true(total < sum);
    lp_plan_item chain[N];
    size_t worst = 0;
    for (int i = 0; i < N; i++) chain[i] = (lp_plan_item){(size_t)(256 * (1 + i % 7)), i, i + 1, 0};
    for (int i = 0; i + 1 < N; i++)
        if (chain[i].bytes + chain[i + 1].bytes > worst) worst = chain[i].bytes + chain[i + 1].bytes;
    assert_int_equal(lp_mem_plan(chain, N, 256, &total), LP_OK);
    printf("chain of %d: arena %zu bytes, widest neighbouring pair %zu\n", N, total, worst);
    assert_true(total <= 2 * worst);
    assert_int_equal(lp_mem_plan(chain, 0, 256, &total), LP_OK);
    assert_int_equal(total, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_batch_and_capture),
        cmocka_unit_test(test_forward_only),
        cmocka_unit_test(test_forward_only_fusion),
        cmocka_unit_test(test_batchnorm_folded),
        cmocka_unit_test(test_backward_input_and_weights),
        cmocka_unit_test(test_rule_override),
        cmocka_unit_test(test_input_errors),
        cmocka_unit_test(test_lean),
        cmocka_unit_test(test_stop_at),
        cmocka_unit_test(test_tail),
        cmocka_unit_test(test_mem_plan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
