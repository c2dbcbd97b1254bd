/* test_attrib_lrp.c — lrp and deeplift on a small model built here (x -> Conv -> Relu
 * -> MaxPool -> Flatten -> Gemm): LRP-0 conserves the score without biases, DeepLift
 * sums to f(x) - f(baseline), and the errors a caller can cause (unknown composite, an
 * op without an LRP rule on the relevance path). The oracles against zennit and
 * Captum are in tests/attrib/check_lrp.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "internal.h"
#include "testutil.h"

enum { N = 3, C = 2, H = 6, W = 6, K = 4, F = 5 }; /* conv 2->4 3x3 pad 1, pool 2, fc 36->5 */

static lp_tensor *rand_tensor(tu_rng *r, int nd, const int64_t *shape, float scale) {
    lp_tensor *t;
    assert_int_equal(lp_tensor_new(&t, LP_DEVICE_CPU, LP_F32, nd, shape), LP_OK);
    float *p = t->data;
    for (int64_t i = 0; i < lp_tensor_numel(t); i++) p[i] = scale * tu_normal(r);
    return t;
}

/* bias: with biases; square: an elementwise x*x after the ReLU (no LRP rule). */
static lp_model *build(int bias, int square) {
    tu_rng r = {11};
    lp_model *m = lp_model_new();
    lp_shape in = {4, {1, C, H, W}};
    lp_model_add_input(m, "x", &in);
    int64_t ws[4] = {K, C, 3, 3}, bs[1] = {K}, fs[2] = {F, K * (H / 2) * (W / 2)}, fb[1] = {F};
    lp_model_add_initializer(m, "w", rand_tensor(&r, 4, ws, 0.5f), 1);
    lp_model_add_initializer(m, "fw", rand_tensor(&r, 2, fs, 0.5f), 1);
    if (bias) {
        lp_model_add_initializer(m, "b", rand_tensor(&r, 1, bs, 0.2f), 1);
        lp_model_add_initializer(m, "fb", rand_tensor(&r, 1, fb, 0.2f), 1);
    }
    const char *ci[] = {"x", "w", "b"}, *co[] = {"c"};
    int n = lp_model_add_node(m, "Conv", "conv", bias ? 3 : 2, ci, 1, co);
    int64_t k3[2] = {3, 3}, p1[4] = {1, 1, 1, 1}, k2[2] = {2, 2};
    lp_node_set_ints(&m->nodes[n], "kernel_shape", 2, k3);
    lp_node_set_ints(&m->nodes[n], "pads", 4, p1);
    const char *ri[] = {"c"}, *ro[] = {"r"};
    lp_model_add_node(m, "Relu", "relu", 1, ri, 1, ro);
    const char *pool_in = "r";
    if (square) {
        const char *qi[] = {"r", "r"}, *qo[] = {"q"};
        lp_model_add_node(m, "Mul", "square", 2, qi, 1, qo);
        pool_in = "q";
    }
    const char *pi[] = {pool_in}, *po[] = {"p"};
    n = lp_model_add_node(m, "MaxPool", "pool", 1, pi, 1, po);
    lp_node_set_ints(&m->nodes[n], "kernel_shape", 2, k2);
    lp_node_set_ints(&m->nodes[n], "strides", 2, k2);
    const char *fi[] = {"p"}, *fo[] = {"f"};
    lp_model_add_node(m, "Flatten", "flatten", 1, fi, 1, fo);
    const char *gi[] = {"f", "fw", "fb"}, *go[] = {"y"};
    n = lp_model_add_node(m, "Gemm", "fc", bias ? 3 : 2, gi, 1, go);
    lp_node_set_int(&m->nodes[n], "transB", 1);
    lp_model_mark_output(m, "y");
    assert_int_equal(lp_model_finalize(m), LP_OK);
    return m;
}

static lp_status explain(lp_model *m, const lp_tensor *x, const char *method, const char *lrp, lp_tensor **attr,
                         float *scores) {
    lp_run *r;
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &r), LP_OK);
    lp_explain_opts o;
    lp_explain_opts_default(&o);
    o.method = method;
    o.lrp = lrp;
    int64_t targets[N];
    lp_explain_info info = {targets, scores, 0, NULL};
    lp_status s = lp_explain(r, x, &o, attr, &info);
    lp_run_free(r);
    return s;
}

static lp_tensor *input(void) {
    tu_rng g = {5};
    int64_t xs[4] = {N, C, H, W};
    return rand_tensor(&g, 4, xs, 1.0f);
}

/* Without biases, LRP-0 passes the whole score down: ReLU and max-pool pass relevance,
 * the linear layers redistribute it exactly. */
static void test_lrp_zero_conserves(void **state) {
    (void)state;
    lp_model *m = build(0, 0);
    lp_tensor *x = input(), *attr = NULL;
    float scores[N];
    assert_int_equal(explain(m, x, "lrp", "zero", &attr, scores), LP_OK);
    const float *a = attr->data;
    for (int i = 0; i < N; i++) {
        double sum = 0;
        for (int p = 0; p < C * H * W; p++) sum += a[i * C * H * W + p];
        assert_true(fabs(sum - scores[i]) <= 1e-5 * fabs(scores[i]) + 1e-6);
    }
    lp_tensor_free(attr);
    lp_tensor_free(x);
    lp_model_free(m);
}

/* DeepLift's attributions sum to f(x) - f(0) for the target (summation to delta). */
static void test_deeplift_sums_to_delta(void **state) {
    (void)state;
    lp_model *m = build(1, 0);
    lp_tensor *x = input(), *attr = NULL, *zero;
    float scores[N];
    assert_int_equal(explain(m, x, "deeplift", NULL, &attr, scores), LP_OK);
    int64_t xs[4] = {N, C, H, W};
    assert_int_equal(lp_tensor_new(&zero, LP_DEVICE_CPU, LP_F32, 4, xs), LP_OK);
    lp_run *r;
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &r), LP_OK);
    float yx[N * F];
    assert_int_equal(lp_run_forward(r, x), LP_OK);
    memcpy(yx, lp_run_output(r)->data, sizeof yx);
    assert_int_equal(lp_run_forward(r, zero), LP_OK);
    const float *f0 = lp_run_output(r)->data;
    const float *a = attr->data;
    for (int i = 0; i < N; i++) {
        int t = 0;
        for (int k = 1; k < F; k++)
            if (yx[i * F + k] > yx[i * F + t]) t = k;
        double sum = 0, delta = (double)yx[i * F + t] - f0[i * F + t];
        for (int p = 0; p < C * H * W; p++) sum += a[i * C * H * W + p];
        assert_true(fabs(sum - delta) <= 1e-4 * fabs(delta) + 1e-5);
    }
    lp_run_free(r);
    lp_tensor_free(zero);
    lp_tensor_free(attr);
    lp_tensor_free(x);
    lp_model_free(m);
}

static void test_lrp_errors(void **state) {
    (void)state;
    lp_model *m = build(1, 0);
    lp_tensor *x = input(), *attr = NULL;
    float scores[N];
    assert_int_not_equal(explain(m, x, "lrp", "epsilon_plus_flatt", &attr, scores), LP_OK);
    assert_non_null(strstr(lp_last_error(), "epsilon_gamma_box"));
    assert_null(attr);
    lp_model_free(m);
    m = build(1, 1);
    assert_int_not_equal(explain(m, x, "lrp", NULL, &attr, scores), LP_OK);
    assert_non_null(strstr(lp_last_error(), "'square' (Mul)"));
    assert_null(attr);
    lp_tensor_free(x);
    lp_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lrp_zero_conserves),
        cmocka_unit_test(test_deeplift_sums_to_delta),
        cmocka_unit_test(test_lrp_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
