/* test_attrib_maps.c — lp_attr_normalize against Captum's visualization._normalize_attr:
 * sum over channels, the sign choice (all / positive / absolute_value), then division
 * by _cumulative_sum_threshold(|values|, 100 - outlier_perc) (the smallest sorted value
 * whose running sum reaches that % of the total) and clipping to [-1, 1]. Hand-checked
 * values on a 2 x 2 x 2 map, then a reference written from that definition on random
 * maps for every sign, reduction and clip, each row normalised on its own. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe.h"
#include "testutil.h"

static lp_tensor *make(int ndim, const int64_t *shape, const float *v) {
    lp_tensor *t = NULL;
    if (lp_tensor_new(&t, LP_DEVICE_CPU, LP_F32, ndim, shape) != LP_OK) fail_msg("lp_tensor_new: %s", lp_last_error());
    memcpy(t->data, v, t->nbytes);
    return t;
}

static void expect_map(const lp_tensor *a, lp_sign s, lp_chan_reduce r, float clip, const float *want, int64_t n) {
    lp_tensor *o = NULL;
    lp_status st = lp_attr_normalize(a, s, r, clip, &o);
    if (st != LP_OK) fail_msg("lp_attr_normalize: %s", lp_last_error());
    assert_int_equal(lp_tensor_numel(o), n);
    assert_int_equal(o->shape[1], 1);
    if (tu_report_mismatch("normalized", o->data, want, n, 1e-6, 1e-5, 8))
        fail_msg("sign %d reduce %d clip %g", (int)s, (int)r, (double)clip);
    lp_tensor_free(o);
}

/* One input, 2 channels of 2 x 2:
 *   ch0 = [1, -2, 3, 0.5], ch1 = [1, 1, -1, 0.5]
 *   sum = [2, -1, 2, 1]; |sum| sorted [1, 1, 2, 2], running sums [1, 2, 4, 6]. */
static const float hand[8] = {1, -2, 3, 0.5f, 1, 1, -1, 0.5f};
static const int64_t hand_shape[4] = {1, 2, 2, 2};

static void test_hand_sum(void **state) {
    (void)state;
    lp_tensor *a = make(4, hand_shape, hand);
    /* clip 2: 98% of 6 = 5.88 is first reached at 6 -> threshold 2. */
    expect_map(a, LP_SIGN_SIGNED, LP_CHAN_SUM, 2, (const float[]){1, -0.5f, 1, 0.5f}, 4);
    expect_map(a, LP_SIGN_ABS, LP_CHAN_SUM, 2, (const float[]){1, 0.5f, 1, 0.5f}, 4);
    /* positive: [2, 0, 2, 1], sorted [0, 1, 2, 2], running [0, 1, 3, 5]; 4.9 -> 2. */
    expect_map(a, LP_SIGN_POSITIVE, LP_CHAN_SUM, 2, (const float[]){1, 0, 1, 0.5f}, 4);
    /* clip 70: 30% of 6 = 1.8 is reached at running sum 2 -> threshold 1, so all clip to +-1. */
    expect_map(a, LP_SIGN_SIGNED, LP_CHAN_SUM, 70, (const float[]){1, -1, 1, 1}, 4);
    /* clip 60: 40% of 6 = 2.4 reached at 4 -> threshold 2. */
    expect_map(a, LP_SIGN_ABS, LP_CHAN_SUM, 60, (const float[]){1, 0.5f, 1, 0.5f}, 4);
    /* clip 0: the threshold is the maximum. */
    expect_map(a, LP_SIGN_SIGNED, LP_CHAN_SUM, 0, (const float[]){1, -0.5f, 1, 0.5f}, 4);
    lp_tensor_free(a);
}

static void test_hand_other_reductions(void **state) {
    (void)state;
    lp_tensor *a = make(4, hand_shape, hand);
    /* max of magnitudes: [1, 2, 3, 0.5]; sorted running [0.5, 1.5, 3.5, 6.5], 98% = 6.37 -> 3. */
    expect_map(a, LP_SIGN_ABS, LP_CHAN_MAX, 2, (const float[]){1.0f / 3, 2.0f / 3, 1, 0.5f / 3}, 4);
    /* signed max: the value of largest magnitude, sign kept: [1, -2, 3, 0.5]. */
    expect_map(a, LP_SIGN_SIGNED, LP_CHAN_MAX, 2, (const float[]){1.0f / 3, -2.0f / 3, 1, 0.5f / 3}, 4);
    /* positive max: the largest value, negatives to 0: [1, 1, 3, 0.5]; running [0.5, 1.5, 2.5, 5.5] -> 3. */
    expect_map(a, LP_SIGN_POSITIVE, LP_CHAN_MAX, 2, (const float[]){1.0f / 3, 1.0f / 3, 1, 0.5f / 3}, 4);
    /* l2: [sqrt 2, sqrt 5, sqrt 10, sqrt 0.5]; the largest holds more than 2% -> sqrt 10. */
    float s10 = sqrtf(10.0f);
    expect_map(a, LP_SIGN_ABS, LP_CHAN_L2, 2, (const float[]){sqrtf(2) / s10, sqrtf(5) / s10, 1, sqrtf(0.5f) / s10}, 4);
    /* mean: sum / 2 = [1, -0.5, 1, 0.5]; the scale cancels in the normalisation. */
    expect_map(a, LP_SIGN_SIGNED, LP_CHAN_MEAN, 2, (const float[]){1, -0.5f, 1, 0.5f}, 4);
    lp_tensor_free(a);
}

/* ---- a reference from the definition, on random maps --------------------------- */
static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* np.sort, np.cumsum, np.where(cum >= cum[-1] * 0.01 * p)[0][0]. */
static double cum_threshold(const double *v, int n, double percentile) {
    double *s = malloc((size_t)n * sizeof *s);
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_d);
    double *cum = malloc((size_t)n * sizeof *cum), acc = 0;
    for (int i = 0; i < n; i++) cum[i] = acc += s[i];
    double th = s[n - 1];
    for (int i = 0; i < n; i++)
        if (cum[i] >= cum[n - 1] * 0.01 * percentile) {
            th = s[i];
            break;
        }
    free(s);
    free(cum);
    return th;
}

static void reference(const float *a, int n, int c, int hw, lp_sign sign, lp_chan_reduce red, float clip, float *out) {
    double *comb = malloc((size_t)hw * sizeof *comb), *mag = malloc((size_t)hw * sizeof *mag);
    for (int i = 0; i < n; i++) {
        const float *ai = a + (size_t)i * c * hw;
        for (int p = 0; p < hw; p++) {
            double v = 0;
            if (red == LP_CHAN_SUM || red == LP_CHAN_MEAN) {
                for (int k = 0; k < c; k++) v += ai[k * hw + p];
                if (red == LP_CHAN_MEAN) v /= c;
            } else if (red == LP_CHAN_L2) {
                for (int k = 0; k < c; k++) v += (double)ai[k * hw + p] * ai[k * hw + p];
                v = sqrt(v);
            } else { /* max: of |v| (abs), of v (positive), largest |v| with its sign (signed) */
                v = ai[p];
                for (int k = 1; k < c; k++) {
                    double x = ai[k * hw + p];
                    if (sign == LP_SIGN_ABS ? fabs(x) > fabs(v) : sign == LP_SIGN_POSITIVE ? x > v : fabs(x) > fabs(v)) v = x;
                }
            }
            if (sign == LP_SIGN_ABS) v = fabs(v);
            if (sign == LP_SIGN_POSITIVE) v = v > 0 ? v : 0;
            comb[p] = v;
            mag[p] = fabs(v);
        }
        double th = cum_threshold(mag, hw, 100.0 - clip);
        for (int p = 0; p < hw; p++) {
            double v = th > 0 ? comb[p] / th : 0;
            out[(size_t)i * hw + p] = (float)(v > 1 ? 1 : v < -1 ? -1 : v);
        }
    }
    free(comb);
    free(mag);
}

static void test_random_against_reference(void **state) {
    (void)state;
    enum { N = 3, C = 3, H = 5, W = 7 };
    int64_t shape[4] = {N, C, H, W};
    float v[N * C * H * W], want[N * H * W];
    tu_rng rng = {20260611};
    tu_fill_uniform(&rng, v, N * C * H * W, -1, 1);
    for (int i = 0; i < H * W; i++) v[2 * C * H * W + i] *= 50; /* a row with a different scale */
    lp_tensor *a = make(4, shape, v);
    const float clips[] = {0, 2, 10, 50};
    for (int s = LP_SIGN_ABS; s <= LP_SIGN_SIGNED; s++)
        for (int r = LP_CHAN_SUM; r <= LP_CHAN_MEAN; r++)
            for (size_t k = 0; k < sizeof clips / sizeof *clips; k++) {
                reference(v, N, C, H * W, (lp_sign)s, (lp_chan_reduce)r, clips[k], want);
                expect_map(a, (lp_sign)s, (lp_chan_reduce)r, clips[k], want, N * H * W);
            }
    lp_tensor_free(a);
}

/* Layer maps (N x K) normalise too; all-zero maps stay zero instead of dividing by 0. */
static void test_flat_and_zero(void **state) {
    (void)state;
    int64_t s2[2] = {2, 4};
    lp_tensor *a = make(2, s2, (const float[]){0, 0, 0, 0, 1, -3, 1, 0});
    lp_tensor *o = NULL;
    assert_int_equal(lp_attr_normalize(a, LP_SIGN_SIGNED, LP_CHAN_SUM, 0, &o), LP_OK);
    /* C = 4 channels of one unit each: row 0 sums to 0 (stays 0), row 1 to -1 (its own scale). */
    assert_int_equal(o->ndim, 2);
    assert_int_equal(o->shape[1], 1);
    assert_true(((float *)o->data)[0] == 0.0f);
    assert_float_equal(((float *)o->data)[1], -1.0f, 1e-6);
    lp_tensor_free(o);
    lp_tensor_free(a);

    int64_t s4[4] = {1, 1, 2, 2};
    a = make(4, s4, (const float[]){0, 0, 0, 0});
    assert_int_equal(lp_attr_normalize(a, LP_SIGN_ABS, LP_CHAN_SUM, 2, &o), LP_OK);
    for (int i = 0; i < 4; i++) assert_true(((float *)o->data)[i] == 0.0f);
    lp_tensor_free(o);
    lp_tensor_free(a);
}

static void test_errors(void **state) {
    (void)state;
    lp_tensor *a = make(4, hand_shape, hand), *o = (lp_tensor *)1;
    assert_int_equal(lp_attr_normalize(a, LP_SIGN_ABS, LP_CHAN_SUM, 100, &o), LP_ERR_ARG);
    assert_null(o);
    assert_non_null(strstr(lp_last_error(), "100"));
    assert_int_equal(lp_attr_normalize(a, LP_SIGN_ABS, LP_CHAN_SUM, -1, &o), LP_ERR_ARG);
    int64_t s1[1] = {8};
    lp_tensor *b = make(1, s1, hand);
    assert_int_equal(lp_attr_normalize(b, LP_SIGN_ABS, LP_CHAN_SUM, 2, &o), LP_ERR_ARG);
    assert_null(o);
    lp_tensor_free(b);
    lp_tensor_free(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_sum),
        cmocka_unit_test(test_hand_other_reductions),
        cmocka_unit_test(test_random_against_reference),
        cmocka_unit_test(test_flat_and_zero),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
