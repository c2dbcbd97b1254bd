/* test_cpu_backend.c — the CPU backend's primitives against naive references
 * computed in double here: conv (fwd, bwd data, bwd filter over groups, depthwise,
 * dilation, strides, asymmetric pads, 1x1), pooling, broadcast binary ops, unary
 * kinds (finite differences), softmax, transpose, slice, pad, LRN, channel affine,
 * and the accumulate (+=) contract of every backward. Also prints the time of one
 * ResNet-50-like 3x3 conv. Run: build-X/tests/test_cpu_backend. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "testutil.h"

/* Prefill of accumulating outputs: the backend must add to it, not overwrite it. */
#define PRE 0.25f

static const lp_backend *be(void) { return lp_backend_cpu(); }

static float *fvec(int64_t n) {
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    assert_non_null(p);
    return p;
}
static double *dvec(int64_t n) {
    double *p = calloc((size_t)(n > 0 ? n : 1), sizeof(double));
    assert_non_null(p);
    return p;
}
static float *rvec(tu_rng *r, int64_t n) {
    float *p = fvec(n);
    tu_fill_uniform(r, p, n, -1.f, 1.f);
    return p;
}
static float *cvec(int64_t n, float v) {
    float *p = fvec(n);
    for (int64_t i = 0; i < n; i++) p[i] = v;
    return p;
}

/* got must equal want (+ PRE where acc) within relative L2 tol; prints the first mismatches. */
static void check_close(const char *what, const float *got, const double *want, int64_t n, int acc, double tol) {
    double *w = dvec(n);
    float *wf = fvec(n);
    for (int64_t i = 0; i < n; i++) {
        w[i] = want[i] + (acc ? PRE : 0.0);
        wf[i] = (float)w[i];
    }
    double e = tu_rel_l2_d(got, w, n);
    if (!(e <= tol)) {
        fprintf(stderr, "%s: relative L2 error %.3g > %.3g\n", what, e, tol);
        tu_report_mismatch(what, got, wf, n, 1e-6, 1e-5, 5);
    }
    free(w);
    free(wf);
    assert_true(e <= tol);
}

/* ---- convolution ------------------------------------------------------------------- */

typedef struct conv_case {
    int n, c, h, w, k, kh, kw, sh, sw, ph0, pw0, ph1, pw1, dh, dw, groups, bias;
} conv_case;

static lp_conv_desc conv_make(const conv_case *t) {
    lp_conv_desc d = {.n = t->n, .c = t->c, .h = t->h, .w = t->w, .k = t->k, .kh = t->kh, .kw = t->kw,
                      .sh = t->sh, .sw = t->sw, .ph0 = t->ph0, .pw0 = t->pw0, .ph1 = t->ph1, .pw1 = t->pw1,
                      .dh = t->dh, .dw = t->dw, .groups = t->groups};
    d.oh = (t->h + t->ph0 + t->ph1 - t->dh * (t->kh - 1) - 1) / t->sh + 1;
    d.ow = (t->w + t->pw0 + t->pw1 - t->dw * (t->kw - 1) - 1) / t->sw + 1;
    return d;
}

/* Naive direct convolution in double: y, and the adjoints dx, dw, db for a given dy. */
static void conv_ref(const lp_conv_desc *d, const float *x, const float *w, const float *b, const float *dy,
                     double *y, double *dx, double *dw, double *db) {
    int cg = d->c / d->groups, kg = d->k / d->groups;
    for (int n = 0; n < d->n; n++)
        for (int k = 0; k < d->k; k++) {
            int g = k / kg;
            for (int oy = 0; oy < d->oh; oy++)
                for (int ox = 0; ox < d->ow; ox++) {
                    int64_t yi = (((int64_t)n * d->k + k) * d->oh + oy) * d->ow + ox;
                    double s = b ? b[k] : 0.0, gy = dy[yi];
                    if (db) db[k] += gy;
                    for (int ci = 0; ci < cg; ci++)
                        for (int i = 0; i < d->kh; i++)
                            for (int j = 0; j < d->kw; j++) {
                                int iy = oy * d->sh - d->ph0 + i * d->dh, ix = ox * d->sw - d->pw0 + j * d->dw;
                                if (iy < 0 || iy >= d->h || ix < 0 || ix >= d->w) continue;
                                int64_t xi = (((int64_t)n * d->c + g * cg + ci) * d->h + iy) * d->w + ix;
                                int64_t wi = (((int64_t)k * cg + ci) * d->kh + i) * d->kw + j;
                                s += (double)w[wi] * x[xi];
                                dx[xi] += (double)w[wi] * gy;
                                dw[wi] += (double)x[xi] * gy;
                            }
                    y[yi] = s;
                }
        }
}

static void run_conv_case(const conv_case *t, uint64_t seed) {
    tu_rng r = {seed};
    lp_conv_desc d = conv_make(t);
    int64_t nx = (int64_t)d.n * d.c * d.h * d.w, ny = (int64_t)d.n * d.k * d.oh * d.ow;
    int64_t nw = (int64_t)d.k * (d.c / d.groups) * d.kh * d.kw;
    float *x = rvec(&r, nx), *w = rvec(&r, nw), *b = t->bias ? rvec(&r, d.k) : NULL, *dy = rvec(&r, ny);
    double *y_r = dvec(ny), *dx_r = dvec(nx), *dw_r = dvec(nw), *db_r = dvec(d.k);
    conv_ref(&d, x, w, b, dy, y_r, dx_r, dw_r, db_r);
    float *y = cvec(ny, 99.f), *dx = cvec(nx, PRE), *dw = cvec(nw, PRE), *db = cvec(d.k, PRE);
    assert_int_equal(be()->conv_fwd(&d, x, w, b, y), LP_OK);
    assert_int_equal(be()->conv_bwd_data(&d, dy, w, dx), LP_OK);
    assert_int_equal(be()->conv_bwd_filter(&d, x, dy, dw, db), LP_OK);
    char what[160];
    snprintf(what, sizeof what, "conv n%d c%d %dx%d k%d %dx%d s%d,%d p%d,%d,%d,%d d%d,%d g%d", t->n, t->c, t->h,
             t->w, t->k, t->kh, t->kw, t->sh, t->sw, t->ph0, t->pw0, t->ph1, t->pw1, t->dh, t->dw, t->groups);
    fprintf(stderr, "  %s -> %dx%d\n", what, d.oh, d.ow);
    check_close("conv_fwd", y, y_r, ny, 0, 1e-5);
    check_close("conv_bwd_data", dx, dx_r, nx, 1, 1e-5);
    check_close("conv_bwd_filter dw", dw, dw_r, nw, 1, 1e-5);
    check_close("conv_bwd_filter db", db, db_r, d.k, 1, 1e-5);
    /* The fused ReLU (every path: depthwise, banded, one image, many) is the Relu op
     * applied after the convolution, bit for bit; a fused ReLU6 (capped at 0.5 here,
     * inside the values' range) the Clip op. */
    float *yf = cvec(ny, 99.f), *yu = cvec(ny, 0.f);
    lp_conv_desc dr = d;
    dr.act = INFINITY;
    assert_int_equal(be()->conv_fwd(&dr, x, w, b, yf), LP_OK);
    assert_int_equal(be()->unary_fwd(LP_UN_RELU, NULL, y, yu, ny), LP_OK);
    assert_memory_equal(yf, yu, sizeof(float) * (size_t)ny);
    const float cap[2] = {0.f, 0.5f};
    dr.act = cap[1];
    assert_int_equal(be()->conv_fwd(&dr, x, w, b, yf), LP_OK);
    assert_int_equal(be()->unary_fwd(LP_UN_CLIP, cap, y, yu, ny), LP_OK);
    assert_memory_equal(yf, yu, sizeof(float) * (size_t)ny);
    /* Accumulating (ConvTranspose's input gradient): y = pre + conv + b on every path,
     * and its fused ReLU is again the Relu op after it. */
    float *ya = cvec(ny, PRE), *yar = cvec(ny, PRE);
    lp_conv_desc da = d;
    da.accumulate = 1;
    assert_int_equal(be()->conv_fwd(&da, x, w, b, ya), LP_OK);
    check_close("conv_fwd accumulate", ya, y_r, ny, 1, 1e-5);
    da.act = INFINITY;
    assert_int_equal(be()->conv_fwd(&da, x, w, b, yar), LP_OK);
    assert_int_equal(be()->unary_fwd(LP_UN_RELU, NULL, ya, yu, ny), LP_OK);
    assert_memory_equal(yar, yu, sizeof(float) * (size_t)ny);
    free(yf), free(yu), free(ya), free(yar);
    free(x), free(w), free(b), free(dy), free(y_r), free(dx_r), free(dw_r), free(db_r);
    free(y), free(dx), free(dw), free(db);
}

static void test_conv(void **state) {
    (void)state;
    static const conv_case cases[] = {
        /* n  c   h   w   k kh kw sh sw ph0 pw0 ph1 pw1 dh dw g bias */
        {2, 3, 7, 9, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},      /* plain 3x3, batched columns */
        {2, 3, 34, 33, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},    /* one image per gemm */
        {2, 4, 8, 7, 5, 3, 3, 2, 2, 0, 1, 1, 0, 1, 1, 1, 0},      /* stride 2, asymmetric pads */
        {3, 4, 9, 9, 6, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 2, 1},      /* groups 2, dilation 2 */
        {2, 6, 8, 8, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 6, 1},      /* depthwise */
        {2, 5, 11, 10, 5, 5, 5, 2, 2, 2, 1, 3, 2, 1, 1, 5, 1},    /* depthwise 5x5, stride 2, asymmetric */
        {1, 4, 13, 12, 4, 3, 3, 1, 2, 2, 0, 1, 2, 2, 1, 4, 0},    /* depthwise, dilation, mixed strides */
        {2, 3, 10, 9, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 3, 1},     /* groups == c, k = 2c: grouped gemm */
        {3, 5, 6, 6, 7, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1},      /* 1x1, batched */
        {2, 4, 40, 40, 3, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1},    /* 1x1 direct gemm on x */
        {2, 8, 40, 33, 6, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 2, 0},    /* 1x1 direct, grouped */
        {2, 4, 7, 7, 3, 1, 1, 2, 2, 0, 0, 0, 0, 1, 1, 1, 0},      /* 1x1 stride 2 */
        {1, 2, 5, 11, 3, 1, 5, 1, 2, 0, 2, 0, 1, 1, 1, 1, 1},     /* 1x5 (1-D like), odd */
        {5, 3, 5, 5, 2, 7, 7, 2, 2, 3, 3, 3, 3, 1, 1, 1, 1},      /* kernel larger than input */
        {2, 6, 9, 9, 4, 3, 2, 3, 1, 1, 0, 0, 1, 1, 3, 2, 1},      /* stride 3, w-dilation 3 */
        {1, 32, 20, 20, 48, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},  /* one image: gemm split by columns */
        {1, 256, 7, 7, 512, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0},  /* one image: gemm split by rows */
        {3, 16, 12, 12, 24, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1},  /* odd batch over the threads */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_conv_case(&cases[i], 100 + i);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Not asserted: prints where the CPU conv stands (compare: PyTorch CPU on the same shape). */
static void test_conv_timing(void **state) {
    (void)state;
    conv_case t = {8, 128, 28, 28, 128, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    lp_conv_desc d = conv_make(&t);
    tu_rng r = {7};
    int64_t nx = (int64_t)d.n * d.c * d.h * d.w, ny = (int64_t)d.n * d.k * d.oh * d.ow, nw = (int64_t)d.k * d.c * 9;
    float *x = rvec(&r, nx), *w = rvec(&r, nw), *b = rvec(&r, d.k), *y = fvec(ny), *dx = cvec(nx, 0.f),
          *dw = cvec(nw, 0.f);
    assert_int_equal(be()->conv_fwd(&d, x, w, b, y), LP_OK); /* warm-up */
    double flops = 2.0 * ny * d.c * 9;
    const char *names[3] = {"fwd", "bwd_data", "bwd_filter"};
    for (int which = 0; which < 3; which++) {
        int reps = 3;
        double t0 = now_s();
        for (int i = 0; i < reps; i++) {
            if (which == 0) assert_int_equal(be()->conv_fwd(&d, x, w, b, y), LP_OK);
            if (which == 1) assert_int_equal(be()->conv_bwd_data(&d, y, w, dx), LP_OK);
            if (which == 2) assert_int_equal(be()->conv_bwd_filter(&d, x, y, dw, NULL), LP_OK);
        }
        double ms = (now_s() - t0) / reps * 1e3;
        fprintf(stderr, "  conv %s N8 C=K=128 28x28 3x3: %.2f ms (%.1f GFLOP/s)\n", names[which], ms,
                flops / ms * 1e-6);
    }
    free(x), free(w), free(b), free(y), free(dx), free(dw);
}

/* ---- pooling ----------------------------------------------------------------------- */

typedef struct pool_case {
    int n, c, h, w, kh, kw, sh, sw, ph0, pw0, ph1, pw1, dh, dw, is_max, cip, ceil;
} pool_case;

static lp_pool_desc pool_make(const pool_case *t) {
    lp_pool_desc d = {.n = t->n, .c = t->c, .h = t->h, .w = t->w, .kh = t->kh, .kw = t->kw, .sh = t->sh,
                      .sw = t->sw, .ph0 = t->ph0, .pw0 = t->pw0, .ph1 = t->ph1, .pw1 = t->pw1, .dh = t->dh,
                      .dw = t->dw, .is_max = t->is_max, .count_include_pad = t->cip};
    int eh = t->h + t->ph0 + t->ph1 - t->dh * (t->kh - 1) - 1, ew = t->w + t->pw0 + t->pw1 - t->dw * (t->kw - 1) - 1;
    /* ceil mode: one more window when the last stride is partial (it starts inside input + begin pad) */
    d.oh = (t->ceil ? (eh + t->sh - 1) / t->sh : eh / t->sh) + 1;
    d.ow = (t->ceil ? (ew + t->sw - 1) / t->sw : ew / t->sw) + 1;
    if (t->ceil && (d.oh - 1) * t->sh >= t->h + t->ph0) d.oh--;
    if (t->ceil && (d.ow - 1) * t->sw >= t->w + t->pw0) d.ow--;
    return d;
}

/* The definition: taps at start + t*dil; in-bounds taps are averaged / maxed;
 * count_include_pad divides by the taps inside the padded extent [-p0, n + p1). */
static void pool_ref(const lp_pool_desc *d, const float *x, const float *dy, double *y, double *dx) {
    for (int64_t pl = 0; pl < (int64_t)d->n * d->c; pl++)
        for (int oy = 0; oy < d->oh; oy++)
            for (int ox = 0; ox < d->ow; ox++) {
                double best = -INFINITY, sum = 0;
                int64_t arg = -1;
                int cnt = 0, padded = 0;
                for (int i = 0; i < d->kh; i++)
                    for (int j = 0; j < d->kw; j++) {
                        int iy = oy * d->sh - d->ph0 + i * d->dh, ix = ox * d->sw - d->pw0 + j * d->dw;
                        if (iy >= -d->ph0 && iy < d->h + d->ph1 && ix >= -d->pw0 && ix < d->w + d->pw1) padded++;
                        if (iy < 0 || iy >= d->h || ix < 0 || ix >= d->w) continue;
                        int64_t xi = (pl * d->h + iy) * d->w + ix;
                        if (x[xi] > best) best = x[xi], arg = xi;
                        sum += x[xi];
                        cnt++;
                    }
                int64_t yi = (pl * d->oh + oy) * d->ow + ox;
                if (d->is_max) {
                    y[yi] = best;
                    if (arg >= 0) dx[arg] += dy[yi];
                } else {
                    int div = d->count_include_pad ? padded : cnt;
                    y[yi] = sum / div;
                    for (int i = 0; i < d->kh; i++)
                        for (int j = 0; j < d->kw; j++) {
                            int iy = oy * d->sh - d->ph0 + i * d->dh, ix = ox * d->sw - d->pw0 + j * d->dw;
                            if (iy < 0 || iy >= d->h || ix < 0 || ix >= d->w) continue;
                            dx[(pl * d->h + iy) * d->w + ix] += dy[yi] / div;
                        }
                }
            }
}

static void test_pool(void **state) {
    (void)state;
    static const pool_case cases[] = {
        /* n c  h   w kh kw sh sw ph0 pw0 ph1 pw1 dh dw max cip ceil */
        {2, 3, 8, 8, 2, 2, 2, 2, 0, 0, 0, 0, 1, 1, 1, 0, 0},
        {2, 3, 9, 10, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 0, 0},   /* ResNet stem pool */
        {1, 2, 10, 9, 3, 3, 2, 2, 0, 0, 1, 1, 1, 1, 1, 0, 1},   /* ceil mode end pads */
        {1, 2, 10, 9, 3, 3, 2, 2, 0, 0, 1, 1, 1, 1, 0, 0, 1},   /* avg ceil, exclude pad */
        {1, 2, 10, 9, 3, 3, 2, 2, 0, 0, 1, 1, 1, 1, 0, 1, 1},   /* avg ceil, include pad */
        {2, 3, 7, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0},    /* avg include pad, stride 1 */
        {2, 3, 7, 8, 3, 2, 2, 1, 1, 0, 2, 1, 1, 1, 0, 0, 1},    /* avg asymmetric, exclude pad */
        {2, 2, 11, 11, 3, 3, 2, 2, 1, 1, 1, 1, 2, 2, 1, 0, 0},  /* max dilation 2 */
        {2, 2, 11, 12, 2, 3, 3, 2, 1, 1, 2, 2, 2, 1, 0, 1, 1},  /* avg dilation, ceil, include pad */
        {3, 4, 7, 7, 7, 7, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0},    /* global average */
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const pool_case *t = &cases[ci];
        lp_pool_desc d = pool_make(t);
        tu_rng r = {300 + ci};
        int64_t nx = (int64_t)d.n * d.c * d.h * d.w, ny = (int64_t)d.n * d.c * d.oh * d.ow;
        float *x = rvec(&r, nx), *dy = rvec(&r, ny), *y = cvec(ny, 99.f), *dx = cvec(nx, PRE);
        double *y_r = dvec(ny), *dx_r = dvec(nx);
        pool_ref(&d, x, dy, y_r, dx_r);
        fprintf(stderr, "  pool %s %dx%d k%dx%d s%d,%d p%d,%d,%d,%d d%d,%d cip%d -> %dx%d\n",
                t->is_max ? "max" : "avg", t->h, t->w, t->kh, t->kw, t->sh, t->sw, t->ph0, t->pw0, t->ph1, t->pw1,
                t->dh, t->dw, t->cip, d.oh, d.ow);
        assert_int_equal(be()->pool_fwd(&d, x, y), LP_OK);
        assert_int_equal(be()->pool_bwd(&d, x, y, dy, dx, 1), LP_OK);
        check_close("pool_fwd", y, y_r, ny, 0, 1e-6);
        check_close("pool_bwd", dx, dx_r, nx, 1, 1e-6);
        float *dxo = cvec(nx, NAN); /* overwriting: what dx held is never read */
        assert_int_equal(be()->pool_bwd(&d, x, y, dy, dxo, 0), LP_OK);
        check_close("pool_bwd overwrite", dxo, dx_r, nx, 0, 1e-6);
        free(x), free(dy), free(y), free(dx), free(dxo), free(y_r), free(dx_r);
    }
}

/* Max bwd routes a tie to the first maximal element of the window. */
static void test_pool_max_tie(void **state) {
    (void)state;
    lp_pool_desc d = {.n = 1, .c = 1, .h = 2, .w = 2, .oh = 1, .ow = 1, .kh = 2, .kw = 2, .sh = 2, .sw = 2,
                      .dh = 1, .dw = 1, .is_max = 1};
    float x[4] = {1, 3, 3, 2}, y[1], dy[1] = {5}, dx[4] = {0, 0, 0, 0};
    assert_int_equal(be()->pool_fwd(&d, x, y), LP_OK);
    assert_true(y[0] == 3.f);
    assert_int_equal(be()->pool_bwd(&d, x, y, dy, dx, 1), LP_OK);
    assert_true(dx[0] == 0.f && dx[1] == 5.f && dx[2] == 0.f && dx[3] == 0.f);
}

/* ---- binary broadcast -------------------------------------------------------------- */

/* Naive: walk every output index, locate a and b by numpy's rules. */
static void binary_ref(lp_binary_kind k, int na, const int64_t *as, int nb, const int64_t *bs, int nd,
                       const int64_t *ys, const float *a, const float *b, const float *dy, double *y, double *da,
                       double *db) {
    int64_t total = 1;
    for (int i = 0; i < nd; i++) total *= ys[i];
    for (int64_t o = 0; o < total; o++) {
        int64_t rem = o, ia = 0, ib = 0, sa = 1, sb = 1;
        for (int i = nd - 1; i >= 0; i--) {
            int64_t q = rem % ys[i];
            rem /= ys[i];
            int ja = i - (nd - na), jb = i - (nd - nb);
            if (ja >= 0) {
                if (as[ja] > 1) ia += q * sa;
                sa *= as[ja];
            }
            if (jb >= 0) {
                if (bs[jb] > 1) ib += q * sb;
                sb *= bs[jb];
            }
        }
        double av = a[ia], bv = b[ib], g = dy[o], yv;
        switch (k) {
        case LP_BIN_ADD: yv = av + bv, da[ia] += g, db[ib] += g; break;
        case LP_BIN_SUB: yv = av - bv, da[ia] += g, db[ib] -= g; break;
        case LP_BIN_MUL: yv = av * bv, da[ia] += g * bv, db[ib] += g * av; break;
        case LP_BIN_DIV: yv = av / bv, da[ia] += g / bv, db[ib] -= g * av / (bv * bv); break;
        default:
            yv = pow(av, bv), da[ia] += g * bv * pow(av, bv - 1), db[ib] += g * yv * log(av);
            break;
        }
        y[o] = yv;
    }
}

static int64_t numel(int n, const int64_t *s) {
    int64_t t = 1;
    for (int i = 0; i < n; i++) t *= s[i];
    return t;
}

static void test_binary(void **state) {
    (void)state;
    static const struct {
        int na, nb;
        int64_t a[4], b[4];
    } cases[] = {
        {4, 4, {2, 3, 4, 5}, {2, 3, 4, 5}}, /* same shape */
        {4, 4, {2, 3, 4, 5}, {1, 3, 1, 1}}, /* per-channel */
        {4, 1, {2, 3, 4, 5}, {1}},          /* scalar */
        {4, 3, {2, 3, 4, 5}, {3, 1, 1}},    /* per-channel, lower rank */
        {2, 2, {4, 1}, {1, 5}},             /* both broadcast */
        {1, 3, {5}, {2, 3, 5}},             /* a broadcast over rows */
        {3, 3, {2, 1, 5}, {1, 4, 1}},
        {4, 4, {1, 3, 1, 5}, {2, 1, 4, 1}},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        lp_bcast bc;
        assert_int_equal(lp_bcast_make(cases[ci].na, cases[ci].a, cases[ci].nb, cases[ci].b, &bc), LP_OK);
        int64_t na = numel(cases[ci].na, cases[ci].a), nb = numel(cases[ci].nb, cases[ci].b);
        int64_t ny = numel(bc.ndim, bc.shape);
        for (int k = 0; k < LP_BIN_COUNT; k++) {
            tu_rng r = {500 + ci * 10 + k};
            float *a = fvec(na), *b = fvec(nb), *dy = rvec(&r, ny), *y = cvec(ny, 99.f);
            /* positive operands keep DIV and POW (log a) well defined */
            tu_fill_uniform(&r, a, na, 0.5f, 2.f);
            tu_fill_uniform(&r, b, nb, 0.5f, 2.f);
            float *da = cvec(na, PRE), *db = cvec(nb, PRE);
            double *y_r = dvec(ny), *da_r = dvec(na), *db_r = dvec(nb);
            binary_ref((lp_binary_kind)k, cases[ci].na, cases[ci].a, cases[ci].nb, cases[ci].b, bc.ndim, bc.shape, a,
                       b, dy, y_r, da_r, db_r);
            assert_int_equal(be()->binary_fwd((lp_binary_kind)k, &bc, a, b, y), LP_OK);
            assert_int_equal(be()->binary_bwd((lp_binary_kind)k, &bc, a, b, y, dy, da, db), LP_OK);
            char what[64];
            snprintf(what, sizeof what, "binary case %zu kind %d", ci, k);
            fprintf(stderr, "  %s\n", what);
            check_close("binary_fwd", y, y_r, ny, 0, 1e-6);
            check_close("binary_bwd da", da, da_r, na, 1, 1e-5);
            check_close("binary_bwd db", db, db_r, nb, 1, 1e-5);
            /* one-sided gradients: NULL da must leave db the same */
            float *db2 = cvec(nb, PRE);
            assert_int_equal(be()->binary_bwd((lp_binary_kind)k, &bc, a, b, y, dy, NULL, db2), LP_OK);
            check_close("binary_bwd db only", db2, db_r, nb, 1, 1e-5);
            free(a), free(b), free(dy), free(y), free(da), free(db), free(db2), free(y_r), free(da_r), free(db_r);
        }
    }
}

/* reduce_sum (b's shape from a's) and its reverse, broadcast, with scale and accumulate. */
static void test_reduce_broadcast(void **state) {
    (void)state;
    const int64_t xs[4] = {3, 4, 5, 6}, ys[4] = {1, 4, 1, 6};
    lp_bcast bc;
    assert_int_equal(lp_bcast_make(4, xs, 4, ys, &bc), LP_OK);
    tu_rng r = {61};
    float *x = rvec(&r, 360), *y = cvec(24, PRE), *y2 = rvec(&r, 24), *x2 = cvec(360, PRE);
    double *y_r = dvec(24), *x_r = dvec(360);
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 4; b++)
            for (int c = 0; c < 5; c++)
                for (int d = 0; d < 6; d++) {
                    int64_t xi = ((a * 4 + b) * 5 + c) * 6 + d;
                    y_r[b * 6 + d] += 0.5 * x[xi];
                    x_r[xi] = 2.0 * y2[b * 6 + d];
                }
    assert_int_equal(be()->reduce_sum(&bc, x, y, 0.5f, 1), LP_OK);
    check_close("reduce_sum accumulate", y, y_r, 24, 1, 1e-6);
    assert_int_equal(be()->reduce_sum(&bc, x, y, 0.5f, 0), LP_OK);
    check_close("reduce_sum overwrite", y, y_r, 24, 0, 1e-6);
    assert_int_equal(be()->broadcast(&bc, y2, x2, 2.f, 1), LP_OK);
    check_close("broadcast accumulate", x2, x_r, 360, 1, 1e-6);
    assert_int_equal(be()->broadcast(&bc, y2, x2, 2.f, 0), LP_OK);
    check_close("broadcast overwrite", x2, x_r, 360, 0, 1e-6);
    /* full reduction to a scalar */
    const int64_t one[1] = {1};
    assert_int_equal(lp_bcast_make(4, xs, 1, one, &bc), LP_OK);
    float s = PRE;
    double sr = 0;
    for (int i = 0; i < 360; i++) sr += x[i];
    assert_int_equal(be()->reduce_sum(&bc, x, &s, 1.f, 1), LP_OK);
    check_close("reduce_sum scalar", &s, &sr, 1, 1, 1e-6);
    free(x), free(y), free(y2), free(x2), free(y_r), free(x_r);
}

/* ---- unary ------------------------------------------------------------------------- */

static double unary_ref(lp_unary_kind k, const float *p, double x) {
    switch (k) {
    case LP_UN_IDENTITY: return x;
    case LP_UN_RELU: return x > 0 ? x : 0;
    case LP_UN_LEAKY_RELU: return x > 0 ? x : p[0] * x;
    case LP_UN_CLIP:
    case LP_UN_HARDTANH: return fmin(fmax(x, p[0]), p[1]);
    case LP_UN_SIGMOID: return 1 / (1 + exp(-x));
    case LP_UN_HARD_SIGMOID: return fmax(0, fmin(1, p[0] * x + p[1]));
    case LP_UN_HARD_SWISH: return x * fmin(fmax(x + 3, 0), 6) / 6;
    case LP_UN_ERF: return erf(x);
    case LP_UN_GELU: return 0.5 * x * (1 + erf(x / sqrt(2.0)));
    case LP_UN_GELU_TANH: return 0.5 * x * (1 + tanh(sqrt(2 / 3.14159265358979323846) * (x + 0.044715 * x * x * x)));
    case LP_UN_SQRT: return sqrt(x);
    case LP_UN_TANH: return tanh(x);
    case LP_UN_EXP: return exp(x);
    case LP_UN_LOG: return log(x);
    case LP_UN_NEG: return -x;
    case LP_UN_ABS: return fabs(x);
    case LP_UN_POW: return pow(x, p[0]);
    case LP_UN_SCALE: return p[0] * x + p[1];
    case LP_UN_RELU_GUIDED:
    case LP_UN_RELU_DECONV: return x > 0 ? x : 0;
    default: return NAN;
    }
}

/* Forward vs libm in double; backward vs central differences of the double
 * reference, at points kept away from kinks (|x - kink| > 0.05). */
static void test_unary(void **state) {
    (void)state;
    float params[LP_UN_COUNT][2] = {{0}};
    params[LP_UN_LEAKY_RELU][0] = 0.1f;
    params[LP_UN_CLIP][0] = -0.5f, params[LP_UN_CLIP][1] = 0.7f;
    params[LP_UN_HARDTANH][0] = -0.5f, params[LP_UN_HARDTANH][1] = 0.7f;
    params[LP_UN_HARD_SIGMOID][0] = 0.2f, params[LP_UN_HARD_SIGMOID][1] = 0.5f;
    params[LP_UN_POW][0] = 3.f;
    params[LP_UN_SCALE][0] = -1.5f, params[LP_UN_SCALE][1] = 0.25f;
    const int64_t n = 4000;
    for (int k = 0; k < LP_UN_COUNT; k++) {
        const float *p = params[k];
        int positive = k == LP_UN_SQRT || k == LP_UN_LOG;
        tu_rng r = {700 + k};
        float *x = fvec(n), *y = fvec(n), *dy = rvec(&r, n), *dx = cvec(n, PRE);
        double *y_r = dvec(n), *dx_r = dvec(n);
        float kinks[] = {0.f, -0.5f, 0.7f, -3.f, 3.f, -2.5f, 2.5f};
        for (int64_t i = 0; i < n; i++) {
            float v;
            int near;
            do {
                v = positive ? tu_uniform(&r, 0.1f, 4.f) : tu_uniform(&r, -5.f, 5.f);
                near = 0;
                for (size_t q = 0; q < sizeof kinks / sizeof kinks[0]; q++) near |= fabsf(v - kinks[q]) < 0.05f;
            } while (near && !positive);
            x[i] = v;
            y_r[i] = unary_ref((lp_unary_kind)k, p, v);
            const double h = 1e-6;
            dx_r[i] = dy[i] * (unary_ref((lp_unary_kind)k, p, v + h) - unary_ref((lp_unary_kind)k, p, v - h)) / (2 * h);
            if (k == LP_UN_RELU_GUIDED) dx_r[i] = v > 0 && dy[i] > 0 ? dy[i] : 0; /* rules, not derivatives */
            if (k == LP_UN_RELU_DECONV) dx_r[i] = dy[i] > 0 ? dy[i] : 0;
        }
        assert_int_equal(be()->unary_fwd((lp_unary_kind)k, p, x, y, n), LP_OK);
        assert_int_equal(be()->unary_bwd((lp_unary_kind)k, p, x, y, dy, dx, n, 1), LP_OK);
        float *dxo = cvec(n, NAN); /* overwriting: what dx held is never read */
        assert_int_equal(be()->unary_bwd((lp_unary_kind)k, p, x, y, dy, dxo, n, 0), LP_OK);
        char what[48];
        snprintf(what, sizeof what, "unary kind %d", k);
        fprintf(stderr, "  %s\n", what);
        check_close(what, y, y_r, n, 0, 1e-6);
        check_close(what, dx, dx_r, n, 1, 1e-5);
        check_close(what, dxo, dx_r, n, 0, 1e-5);
        free(x), free(y), free(dy), free(dx), free(dxo), free(y_r), free(dx_r);
    }
}

/* The PyTorch conventions at the kinks themselves. */
static void test_unary_kinks(void **state) {
    (void)state;
    float x[3] = {-0.5f, 0.7f, 0.f}, y[3], dy[3] = {1, 1, 1}, dx[3] = {0, 0, 0}, clip[2] = {-0.5f, 0.7f};
    assert_int_equal(be()->unary_fwd(LP_UN_CLIP, clip, x, y, 3), LP_OK);
    assert_int_equal(be()->unary_bwd(LP_UN_CLIP, clip, x, y, dy, dx, 3, 1), LP_OK);
    assert_true(dx[0] == 1.f && dx[1] == 1.f && dx[2] == 1.f); /* clamp's: min <= x <= max passes */
    float dh[3] = {0, 0, 0};
    assert_int_equal(be()->unary_bwd(LP_UN_HARDTANH, clip, NULL, y, dy, dh, 3, 1), LP_OK);
    assert_true(dh[0] == 0.f && dh[1] == 0.f && dh[2] == 1.f); /* hardtanh's (ReLU6's), from y: min < x < max */
    float dr[3] = {0, 0, 0}, yr[3] = {0.f, 0.7f, 0.f}; /* relu(x): ReLU's gradient reads its output */
    assert_int_equal(be()->unary_bwd(LP_UN_RELU, NULL, x, yr, dy, dr, 3, 1), LP_OK);
    assert_true(dr[2] == 0.f); /* relu'(0) = 0 */
    float da[3] = {0, 0, 0};
    assert_int_equal(be()->unary_bwd(LP_UN_ABS, NULL, x, y, dy, da, 3, 1), LP_OK);
    assert_true(da[0] == -1.f && da[1] == 1.f && da[2] == 0.f);
    float hx[2] = {-3.f, 3.f}, hd[2] = {0, 0};
    assert_int_equal(be()->unary_bwd(LP_UN_HARD_SWISH, NULL, hx, y, dy, hd, 2, 1), LP_OK);
    assert_true(fabsf(hd[0] + 0.5f) < 1e-6f && fabsf(hd[1] - 1.5f) < 1e-6f);
}

/* ---- softmax ----------------------------------------------------------------------- */

static void test_softmax(void **state) {
    (void)state;
    const int64_t O = 3, A = 7, I = 4, n = O * A * I;
    for (int lg = 0; lg < 2; lg++) {
        tu_rng r = {900 + lg};
        float *x = rvec(&r, n), *dy = rvec(&r, n), *y = fvec(n), *dx = cvec(n, PRE);
        for (int64_t i = 0; i < n; i++) x[i] *= 20.f; /* large logits: needs the max shift */
        double *y_r = dvec(n), *dx_r = dvec(n);
        for (int64_t o = 0; o < O; o++)
            for (int64_t in = 0; in < I; in++) {
                double mx = -INFINITY, s = 0, sd = 0, sdy = 0;
                for (int64_t a = 0; a < A; a++) mx = fmax(mx, x[(o * A + a) * I + in]);
                for (int64_t a = 0; a < A; a++) s += exp(x[(o * A + a) * I + in] - mx);
                for (int64_t a = 0; a < A; a++) {
                    int64_t i = (o * A + a) * I + in;
                    double p = exp(x[i] - mx) / s;
                    y_r[i] = lg ? log(p) : p;
                    sd += dy[i] * p;
                    sdy += dy[i];
                }
                for (int64_t a = 0; a < A; a++) {
                    int64_t i = (o * A + a) * I + in;
                    double p = exp(x[i] - mx) / s;
                    dx_r[i] = lg ? dy[i] - p * sdy : p * (dy[i] - sd);
                }
            }
        assert_int_equal(be()->softmax_fwd(O, A, I, lg, x, y), LP_OK);
        assert_int_equal(be()->softmax_bwd(O, A, I, lg, y, dy, dx), LP_OK);
        check_close(lg ? "log_softmax fwd" : "softmax fwd", y, y_r, n, 0, 1e-6);
        check_close(lg ? "log_softmax bwd" : "softmax bwd", dx, dx_r, n, 1, 1e-5);
        free(x), free(dy), free(y), free(dx), free(y_r), free(dx_r);
    }
}

/* ---- transpose, copy2d, slice ------------------------------------------------------ */

static void test_transpose(void **state) {
    (void)state;
    static const struct {
        int nd;
        int64_t shape[6];
        int perm[6];
    } cases[] = {
        {2, {37, 53}, {1, 0}},
        {4, {2, 3, 4, 5}, {0, 2, 3, 1}}, /* NCHW -> NHWC */
        {4, {2, 3, 4, 5}, {3, 1, 0, 2}},
        {6, {2, 3, 2, 4, 3, 2}, {5, 3, 1, 0, 4, 2}},
        {3, {64, 32, 33}, {2, 0, 1}}, /* big enough to go parallel */
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int nd = cases[ci].nd;
        const int64_t *s = cases[ci].shape;
        const int *pm = cases[ci].perm;
        int64_t n = numel(nd, s), xs[6], ys[6], st = 1;
        for (int d = nd - 1; d >= 0; d--) xs[d] = st, st *= s[d];
        for (int d = 0; d < nd; d++) ys[d] = s[pm[d]];
        tu_rng r = {1000 + ci};
        float *x = rvec(&r, n), *y = fvec(n), *ya = cvec(n, PRE);
        double *y_r = dvec(n);
        for (int64_t o = 0; o < n; o++) {
            int64_t rem = o, off = 0;
            for (int d = nd - 1; d >= 0; d--) {
                off += (rem % ys[d]) * xs[pm[d]];
                rem /= ys[d];
            }
            y_r[o] = x[off];
        }
        assert_int_equal(be()->transpose(nd, s, pm, x, y, 0), LP_OK);
        assert_int_equal(be()->transpose(nd, s, pm, x, ya, 1), LP_OK);
        check_close("transpose", y, y_r, n, 0, 0);
        check_close("transpose accumulate", ya, y_r, n, 1, 1e-7);
        free(x), free(y), free(ya), free(y_r);
    }
}

static void test_copy2d(void **state) {
    (void)state;
    tu_rng r = {1100};
    float *src = rvec(&r, 5 * 9), *dst = cvec(5 * 7, PRE);
    double want[35];
    for (int o = 0; o < 5; o++)
        for (int j = 0; j < 7; j++) want[o * 7 + j] = (j >= 2 && j < 6) ? src[o * 9 + 1 + j - 2] : 0.0;
    assert_int_equal(be()->copy2d(5, 4, src + 1, 9, dst + 2, 7, 1), LP_OK);
    check_close("copy2d accumulate", dst, want, 35, 1, 1e-7);
    for (int o = 0; o < 5; o++)
        for (int j = 0; j < 7; j++)
            if (j >= 2 && j < 6) want[o * 7 + j] = src[o * 9 + 1 + j - 2] - PRE;
    assert_int_equal(be()->copy2d(5, 4, src + 1, 9, dst + 2, 7, 0), LP_OK);
    check_close("copy2d overwrite", dst, want, 35, 1, 1e-7);
    free(src), free(dst);
}

static void test_slice(void **state) {
    (void)state;
    const int64_t xs[4] = {3, 5, 6, 7};
    const int64_t start[4] = {2, 1, 5, 0}, step[4] = {-1, 2, -2, 3}, ys[4] = {3, 2, 3, 3};
    int64_t nx = numel(4, xs), ny = numel(4, ys);
    tu_rng r = {1200};
    float *x = rvec(&r, nx), *dy = rvec(&r, ny), *y = fvec(ny), *dx = cvec(nx, PRE);
    double *y_r = dvec(ny), *dx_r = dvec(nx);
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 2; b++)
            for (int c = 0; c < 3; c++)
                for (int d = 0; d < 3; d++) {
                    int64_t yi = ((a * 2 + b) * 3 + c) * 3 + d;
                    int64_t xi = (((start[0] + a * step[0]) * 5 + start[1] + b * step[1]) * 6 + start[2] + c * step[2]) * 7 +
                                 start[3] + d * step[3];
                    y_r[yi] = x[xi];
                    dx_r[xi] += dy[yi];
                }
    assert_int_equal(be()->slice_fwd(4, xs, ys, start, step, x, y), LP_OK);
    assert_int_equal(be()->slice_bwd(4, xs, ys, start, step, dy, dx), LP_OK);
    check_close("slice_fwd", y, y_r, ny, 0, 0);
    check_close("slice_bwd", dx, dx_r, nx, 1, 1e-7);
    /* a slice that would read outside x is an error with a message, not a crash */
    const int64_t bad_start[4] = {2, 1, 5, 1};
    assert_int_equal(be()->slice_fwd(4, xs, ys, bad_start, step, x, y), LP_ERR_SHAPE);
    free(x), free(dy), free(y), free(dx), free(y_r), free(dx_r);
}

/* ---- pad --------------------------------------------------------------------------- */

static int64_t pad_ref_src(int64_t i, int64_t p, int64_t n, int mode) {
    int64_t s = i - p;
    if (s >= 0 && s < n) return s;
    if (mode == 0) return -1;
    if (mode == 2) return s < 0 ? 0 : n - 1;
    while (s < 0 || s >= n) s = s < 0 ? -s : 2 * (n - 1) - s; /* numpy 'reflect' */
    return s;
}

static void test_pad(void **state) {
    (void)state;
    const int64_t xs[3] = {2, 5, 6};
    const int64_t pads[3][6] = {
        {0, 2, 3, 1, 1, 2},   /* all grow */
        {1, -1, 2, 0, 3, -2}, /* crop and grow mixed */
        {0, 4, 0, 0, 4, 5},   /* reflect up to size - 1 */
    };
    for (int pc = 0; pc < 3; pc++)
        for (int mode = 0; mode < 3; mode++) {
            int64_t ys[3];
            for (int d = 0; d < 3; d++) ys[d] = xs[d] + pads[pc][d] + pads[pc][3 + d];
            int64_t nx = numel(3, xs), ny = numel(3, ys);
            tu_rng r = {1300 + pc * 3 + mode};
            float *x = rvec(&r, nx), *dy = rvec(&r, ny), *y = fvec(ny), *dx = cvec(nx, PRE);
            double *y_r = dvec(ny), *dx_r = dvec(nx);
            for (int64_t a = 0; a < ys[0]; a++)
                for (int64_t b = 0; b < ys[1]; b++)
                    for (int64_t c = 0; c < ys[2]; c++) {
                        int64_t sa = pad_ref_src(a, pads[pc][0], xs[0], mode),
                                sb = pad_ref_src(b, pads[pc][1], xs[1], mode),
                                sc = pad_ref_src(c, pads[pc][2], xs[2], mode);
                        int64_t yi = (a * ys[1] + b) * ys[2] + c;
                        if (sa < 0 || sb < 0 || sc < 0) {
                            y_r[yi] = -7.0;
                            continue;
                        }
                        int64_t xi = (sa * xs[1] + sb) * xs[2] + sc;
                        y_r[yi] = x[xi];
                        dx_r[xi] += dy[yi];
                    }
            fprintf(stderr, "  pad case %d mode %d\n", pc, mode);
            assert_int_equal(be()->pad_fwd(3, xs, pads[pc], mode, -7.f, x, y), LP_OK);
            assert_int_equal(be()->pad_bwd(3, xs, pads[pc], mode, dy, dx), LP_OK);
            check_close("pad_fwd", y, y_r, ny, 0, 0);
            check_close("pad_bwd", dx, dx_r, nx, 1, 1e-6);
            free(x), free(dy), free(y), free(dx), free(y_r), free(dx_r);
        }
}

/* ---- LRN --------------------------------------------------------------------------- */

static void lrn_ref(int n, int c, int64_t hw, int size, double alpha, double beta, double bias, const double *x,
                    double *y) {
    int lo = (size - 1) / 2, hi = size - 1 - lo;
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++)
            for (int64_t p = 0; p < hw; p++) {
                double s = 0;
                for (int j = ch - lo; j <= ch + hi; j++)
                    if (j >= 0 && j < c) s += x[((int64_t)i * c + j) * hw + p] * x[((int64_t)i * c + j) * hw + p];
                int64_t q = ((int64_t)i * c + ch) * hw + p;
                y[q] = x[q] / pow(bias + alpha / size * s, beta);
            }
}

/* Forward vs the double definition; backward vs central differences of it. */
static void test_lrn(void **state) {
    (void)state;
    const int sizes[2] = {5, 4}; /* odd (AlexNet) and even (asymmetric window) */
    for (int si = 0; si < 2; si++) {
        const int n = 2, c = 7, size = sizes[si];
        const int64_t hw = 6, tot = n * c * hw;
        const float alpha = 0.3f, beta = 0.75f, bias = 1.5f;
        tu_rng r = {1400 + si};
        float *x = rvec(&r, tot), *dy = rvec(&r, tot), *y = fvec(tot), *dx = cvec(tot, PRE);
        double *xd = dvec(tot), *y_r = dvec(tot), *dx_r = dvec(tot), *yp = dvec(tot), *ym = dvec(tot);
        for (int64_t i = 0; i < tot; i++) xd[i] = x[i];
        lrn_ref(n, c, hw, size, alpha, beta, bias, xd, y_r);
        const double h = 1e-6;
        for (int64_t i = 0; i < tot; i++) {
            xd[i] = x[i] + h;
            lrn_ref(n, c, hw, size, alpha, beta, bias, xd, yp);
            xd[i] = x[i] - h;
            lrn_ref(n, c, hw, size, alpha, beta, bias, xd, ym);
            xd[i] = x[i];
            double g = 0;
            for (int64_t q = 0; q < tot; q++) g += dy[q] * (yp[q] - ym[q]) / (2 * h);
            dx_r[i] = g;
        }
        assert_int_equal(be()->lrn_fwd(n, c, hw, size, alpha, beta, bias, x, y), LP_OK);
        assert_int_equal(be()->lrn_bwd(n, c, hw, size, alpha, beta, bias, x, y, dy, dx), LP_OK);
        check_close("lrn_fwd", y, y_r, tot, 0, 1e-6);
        check_close("lrn_bwd", dx, dx_r, tot, 1, 1e-5);
        free(x), free(dy), free(y), free(dx), free(xd), free(y_r), free(dx_r), free(yp), free(ym);
    }
}

/* ---- channel affine, BLAS-1, optimizer, gemm, memory ------------------------------- */

static void test_channel_affine(void **state) {
    (void)state;
    const int n = 3, c = 4;
    const int64_t hw = 10, tot = n * c * hw;
    tu_rng r = {1500};
    float *x = rvec(&r, tot), *sc = rvec(&r, c), *sh = rvec(&r, c), *dy = rvec(&r, tot), *y = fvec(tot);
    float *dx = cvec(tot, PRE), *dsc = cvec(c, PRE), *dsh = cvec(c, PRE);
    double *y_r = dvec(tot), *dx_r = dvec(tot), *dsc_r = dvec(c), *dsh_r = dvec(c);
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++)
            for (int64_t p = 0; p < hw; p++) {
                int64_t q = ((int64_t)i * c + ch) * hw + p;
                y_r[q] = (double)x[q] * sc[ch] + sh[ch];
                dx_r[q] = (double)dy[q] * sc[ch];
                dsc_r[ch] += (double)dy[q] * x[q];
                dsh_r[ch] += dy[q];
            }
    assert_int_equal(be()->channel_affine_fwd(n, c, hw, x, sc, sh, y, 0.f), LP_OK);
    assert_int_equal(be()->channel_affine_bwd(n, c, hw, x, sc, dy, dx, dsc, dsh), LP_OK);
    check_close("channel_affine_fwd", y, y_r, tot, 0, 1e-6);
    check_close("channel_affine_bwd dx", dx, dx_r, tot, 1, 1e-6);
    check_close("channel_affine_bwd dscale", dsc, dsc_r, c, 1, 1e-6);
    check_close("channel_affine_bwd dshift", dsh, dsh_r, c, 1, 1e-6);
    /* with a fused ReLU / ReLU6: the affine, then the Relu / Clip op, bit for bit */
    const float caps[2] = {INFINITY, 0.5f}, clip[2] = {0.f, 0.5f};
    float *ya = fvec(tot), *yu = fvec(tot);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(be()->channel_affine_fwd(n, c, hw, x, sc, sh, ya, caps[k]), LP_OK);
        assert_int_equal(k ? be()->unary_fwd(LP_UN_CLIP, clip, y, yu, tot) : be()->unary_fwd(LP_UN_RELU, NULL, y, yu, tot),
                         LP_OK);
        assert_memory_equal(ya, yu, sizeof(float) * (size_t)tot);
    }
    free(ya), free(yu);
    free(x), free(sc), free(sh), free(dy), free(y), free(dx), free(dsc), free(dsh);
    free(y_r), free(dx_r), free(dsc_r), free(dsh_r);
}

static void test_blas1_sgd_gemm(void **state) {
    (void)state;
    tu_rng r = {1600};
    const int64_t n = 100;
    float *x = rvec(&r, n), *y = rvec(&r, n), *w = rvec(&r, n), *g = rvec(&r, n), *v = rvec(&r, n);
    double *want = dvec(n), *wv = dvec(n), *ww = dvec(n);
    for (int64_t i = 0; i < n; i++) {
        want[i] = (y[i] + 0.5 * x[i]) * -2.0;
        wv[i] = 0.9 * v[i] + g[i] + 0.01 * w[i];
        ww[i] = w[i] - 0.1 * wv[i];
    }
    assert_int_equal(be()->axpy(n, 0.5f, x, y), LP_OK);
    assert_int_equal(be()->scal(n, -2.f, y), LP_OK);
    check_close("axpy + scal", y, want, n, 0, 1e-6);
    assert_int_equal(be()->sgd_momentum(n, 0.1f, 0.9f, 0.01f, w, g, v), LP_OK);
    check_close("sgd_momentum v", v, wv, n, 0, 1e-6);
    check_close("sgd_momentum w", w, ww, n, 0, 1e-6);
    assert_int_equal(be()->fill(n, 3.f, x), LP_OK);
    for (int64_t i = 0; i < n; i++) want[i] = 3.0;
    check_close("fill", x, want, n, 0, 0);
    /* gemm: C = 2 op(A) op(B) + 0.5 C, all transpose combinations; the large ones are
     * split across threads by columns (n >= m) or by rows */
    static const int dims[3][3] = {{5, 6, 7}, {70, 300, 200}, {300, 40, 200}};
    for (int di = 0; di < 3; di++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                const int m = dims[di][0], nn = dims[di][1], k = dims[di][2];
                float *a = rvec(&r, k * m), *b = rvec(&r, k * nn), *c = rvec(&r, m * nn);
                double *cw = dvec(m * nn);
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < nn; j++) {
                        double s = 0;
                        for (int q = 0; q < k; q++)
                            s += (double)(ta ? a[q * m + i] : a[i * k + q]) * (tb ? b[j * k + q] : b[q * nn + j]);
                        cw[i * nn + j] = 2 * s + 0.5 * c[i * nn + j];
                    }
                assert_int_equal(be()->gemm(ta, tb, m, nn, k, 2.f, a, ta ? m : k, b, tb ? k : nn, 0.5f, c, nn), LP_OK);
                check_close("gemm", c, cw, m * nn, 0, 1e-6);
                free(a), free(b), free(c), free(cw);
            }
    /* memory: alloc aligned, upload / copy / download round trip, zero */
    void *p = NULL, *q = NULL;
    assert_int_equal(be()->alloc(n * sizeof(float), &p), LP_OK);
    assert_int_equal(be()->alloc(n * sizeof(float), &q), LP_OK);
    assert_true(((uintptr_t)p & 63) == 0);
    assert_int_equal(be()->upload(p, w, n * sizeof(float)), LP_OK);
    assert_int_equal(be()->copy(q, p, n * sizeof(float)), LP_OK);
    assert_int_equal(be()->download(x, q, n * sizeof(float)), LP_OK);
    assert_memory_equal(x, w, n * sizeof(float));
    assert_int_equal(be()->zero(q, n * sizeof(float)), LP_OK);
    assert_int_equal(be()->sync(), LP_OK);
    for (int64_t i = 0; i < n; i++) assert_true(((float *)q)[i] == 0.f);
    be()->free(p);
    be()->free(q);
    free(x), free(y), free(w), free(g), free(v), free(want), free(wv), free(ww);
}

/* Every function of the table is filled. */
static void test_table_complete(void **state) {
    (void)state;
    const lp_backend *b = be();
    assert_non_null(b);
    assert_int_equal(b->device, LP_DEVICE_CPU);
    const void *const *fns = (const void *const *)&b->alloc;
    size_t count = (sizeof *b - offsetof(lp_backend, alloc)) / sizeof(void *);
    for (size_t i = 0; i < count; i++) {
        if (!fns[i]) fprintf(stderr, "lp_backend slot %zu is NULL\n", i);
        assert_non_null(fns[i]);
    }
}

static void test_errors(void **state) {
    (void)state;
    lp_conv_desc d = {.n = 1, .c = 3, .h = 4, .w = 4, .k = 4, .oh = 2, .ow = 2, .kh = 3, .kw = 3, .sh = 1, .sw = 1,
                      .dh = 1, .dw = 1, .groups = 2};
    float buf[64] = {0};
    assert_int_equal(be()->conv_fwd(&d, buf, buf, NULL, buf), LP_ERR_SHAPE);
    assert_non_null(strstr(lp_last_error(), "groups"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_complete),
        cmocka_unit_test(test_conv),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_pool_max_tie),
        cmocka_unit_test(test_binary),
        cmocka_unit_test(test_reduce_broadcast),
        cmocka_unit_test(test_unary),
        cmocka_unit_test(test_unary_kinks),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_transpose),
        cmocka_unit_test(test_copy2d),
        cmocka_unit_test(test_slice),
        cmocka_unit_test(test_pad),
        cmocka_unit_test(test_lrn),
        cmocka_unit_test(test_channel_affine),
        cmocka_unit_test(test_blas1_sgd_gemm),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_conv_timing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
