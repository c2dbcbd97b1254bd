/* test_backend_twins.c — every function of the CUDA lp_backend table against the CPU
 * table on the same random inputs: outputs compared by relative L2, one line per output,
 * accumulating destinations pre-filled with the same random values on both sides, and a
 * guard band after every output that must stay untouched. It keeps going after a failure
 * and exits non-zero at the end, so one run on the GPU host reports everything.
 *
 *   test_backend_twins                          cuda vs cpu ("SKIPPED: ..." without CUDA or a device)
 *   LOUPE_TWIN_SELFTEST=1 test_backend_twins    cpu vs cpu: proves the harness; must match exactly
 *   LOUPE_TWIN_SEED=<n>                         another seed for the random shapes and data
 *
 * Device buffers are allocated, filled and read back through the table under test
 * (alloc/upload/download), so the memory functions are exercised by every case. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h" /* backend.h and lp_clear_error() */
#include "testutil.h"

/* Bounds, relative L2 against the CPU. For outputs that accumulate (+=) into a pre-filled
 * destination the norm is taken of the increment (want - pre), which is stricter (but at
 * least a tenth of the destination's norm, see out_check). */
#define TWIN_FP32_TOL 1e-5 /* fp32: the same math in another summation order (reductions kept <= ~5000 terms) */
/* fp32 convolutions: cuDNN's measured algorithm may be Winograd or FFT, which round
 * differently from a direct sum (not just in another order); their fp32 error on these
 * sizes is a few 1e-6, so the bound is twice the elementwise one. */
#define TWIN_CONV_TOL 2e-5
#define TWIN_GEMM_TOL 1e-5 /* cuBLAS fp32 (no TF32), k <= 257 */
#define TWIN_MEM_TOL 0.0   /* copies, fills, data movement of exact values: bit-exact */
#define TWIN_TF32_TOL 1e-2 /* conv / gemm with TF32 tensor cores (10-bit mantissa inputs) */
#define TWIN_BF16_TOL 3e-2 /* conv / gemm with bfloat16 inputs, fp32 accumulation */
#define TWIN_GUARD 17      /* floats after every output that must come back untouched */

static const lp_backend *REF;             /* the CPU table */
static const lp_backend *DUT;             /* the table under test (fp32) */
static const lp_backend *DUT_TF32, *DUT_BF16;
static int g_selftest;                    /* DUT is the CPU table too: every bound is 0 */
static int g_broken;                      /* the device stopped working: later cases do not run */
static int g_checks, g_failures;          /* over the whole run */
static int g_group_checks, g_group_failures;
static tu_rng g_rng;

/* ---------------------------------------------------------------------------------
 * harness */

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "test_backend_twins: out of host memory (%zu bytes)\n", bytes);
        exit(2);
    }
    return p;
}

static float *hrand(int64_t n, float lo, float hi) {
    float *p = xmalloc(sizeof(float) * (size_t)n);
    tu_fill_uniform(&g_rng, p, n, lo, hi);
    return p;
}

static float *hdup(const float *x, int64_t n) {
    float *p = xmalloc(sizeof(float) * (size_t)n);
    memcpy(p, x, sizeof(float) * (size_t)n);
    return p;
}

static int irand(int n) { return (int)(tu_next(&g_rng) % (uint64_t)n); }

/* One case: its label, the table under test, the device buffers to free at the end. */
#define TW_MAX_DEV 48
typedef struct tw {
    const lp_backend *be;
    char fn[40];
    char label[200];
    void *dev[TW_MAX_DEV];
    int ndev;
    int err; /* a call failed: the outputs are not compared */
} tw;

static double bound_of(double b) { return g_selftest ? 0.0 : b; }

static void count(int ok) {
    g_checks++;
    g_group_checks++;
    if (!ok) {
        g_failures++;
        g_group_failures++;
    }
}

/* Does the device still run a trivial round trip? (After an illegal access the
 * context is gone and every later call fails: say so once instead of hundreds of times.) */
static void health_probe(tw *t) {
    if (g_selftest || g_broken) return;
    void *p = NULL;
    float v = 1.5f, back = 0.f;
    lp_status s = DUT->alloc(sizeof v, &p);
    if (s == LP_OK) s = DUT->upload(p, &v, sizeof v);
    if (s == LP_OK) s = DUT->download(&back, p, sizeof v);
    if (p) DUT->free(p);
    if (s != LP_OK || back != v) {
        g_broken = 1;
        printf("FAIL  the device no longer works after %s %s (%s); the remaining cases are not run\n", t->fn, t->label,
               s != LP_OK ? lp_last_error() : "a round trip returned another value");
        count(0);
    }
}

static int tw_begin(tw *t, const lp_backend *be, const char *fn, const char *fmt, ...) {
    memset(t, 0, sizeof *t);
    t->be = be;
    snprintf(t->fn, sizeof t->fn, "%s", fn);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->label, sizeof t->label, fmt, ap);
    va_end(ap);
    return !g_broken;
}

static void tw_status(tw *t, lp_status s, const char *side, const char *call) {
    if (s == LP_OK) return;
    printf("FAIL  %-18s %s: %s on %s returned %s: %s\n", t->fn, t->label, call, side, lp_status_str(s),
           lp_last_error());
    count(0);
    t->err = 1;
    if (strcmp(side, "cpu") != 0 || g_selftest) health_probe(t);
}

/* n floats on the device under test, uploaded from host (when not NULL). */
static float *tw_dev(tw *t, const float *host, int64_t n) {
    void *p = NULL;
    if (t->err) return NULL;
    if (t->ndev == TW_MAX_DEV) {
        fprintf(stderr, "test_backend_twins: too many buffers in one case\n");
        exit(2);
    }
    lp_status s = t->be->alloc(sizeof(float) * (size_t)(n > 0 ? n : 1), &p);
    if (s != LP_OK) {
        tw_status(t, s, t->be->name, "alloc");
        return NULL;
    }
    t->dev[t->ndev++] = p;
    if (host && n > 0) tw_status(t, t->be->upload(p, host, sizeof(float) * (size_t)n), t->be->name, "upload");
    return p;
}

static void tw_end(tw *t) {
    for (int i = 0; i < t->ndev; i++) t->be->free(t->dev[i]);
    t->ndev = 0;
}

/* Run a call on the CPU table / on the table under test (then sync, so that a failing
 * kernel is blamed on its own call). */
#define REF_CALL(t, op, ...)                                                                                           \
    do {                                                                                                               \
        if (!(t)->err) tw_status((t), REF->op(__VA_ARGS__), "cpu", #op);                                              \
    } while (0)
#define DUT_CALL(t, op, ...)                                                                                           \
    do {                                                                                                               \
        if (!(t)->err && !(t)->be->op) {                                                                               \
            printf("FAIL  %-18s %s: the table under test has no " #op " (NULL)\n", (t)->fn, (t)->label);            \
            count(0);                                                                                                  \
            (t)->err = 1;                                                                                              \
        }                                                                                                              \
        if (!(t)->err) tw_status((t), (t)->be->op(__VA_ARGS__), g_selftest ? "cpu (self-test twin)" : "cuda", #op);   \
        if (!(t)->err) tw_status((t), (t)->be->sync(), g_selftest ? "cpu (self-test twin)" : "cuda", "sync after " #op); \
    } while (0)

/* An output both sides write: n floats and the guard, pre-filled with the same values.
 * want is written by the CPU table on the host, dev by the table under test. */
typedef struct outbuf {
    int64_t n;
    float *pre, *want, *dev;
} outbuf;

static void out_init(tw *t, outbuf *o, int64_t n, float lo, float hi) {
    o->n = n;
    o->pre = hrand(n + TWIN_GUARD, lo, hi);
    o->want = hdup(o->pre, n + TWIN_GUARD);
    o->dev = tw_dev(t, o->pre, n + TWIN_GUARD);
}

/* Same, pre-filled with a given value (NaN: "must not be read"). */
static void out_init_value(tw *t, outbuf *o, int64_t n, float v) {
    o->n = n;
    o->pre = xmalloc(sizeof(float) * (size_t)(n + TWIN_GUARD));
    for (int64_t i = 0; i < n + TWIN_GUARD; i++) o->pre[i] = i < n ? v : tu_uniform(&g_rng, -1.f, 1.f);
    o->want = hdup(o->pre, n + TWIN_GUARD);
    o->dev = tw_dev(t, o->pre, n + TWIN_GUARD);
}

static void out_free(outbuf *o) {
    free(o->pre);
    free(o->want);
    o->pre = o->want = NULL;
}

/* Compare the device output with the CPU's: relative L2 over the n elements (of the
 * increment over pre when acc), the guard bit-exact. Non-finite values must agree
 * (same class) position by position. Prints one line; counts it. */
static void out_check(tw *t, outbuf *o, const char *what, int acc, double bound) {
    if (t->err) {
        out_free(o);
        return;
    }
    const int64_t n = o->n, tot = n + TWIN_GUARD;
    float *got = xmalloc(sizeof(float) * (size_t)tot);
    lp_status s = t->be->download(got, o->dev, sizeof(float) * (size_t)tot);
    if (s != LP_OK) {
        tw_status(t, s, t->be->name, "download");
        free(got);
        out_free(o);
        return;
    }
    double num = 0, den = 0, full = 0;
    int64_t nonfinite_bad = 0, guard_bad = 0, first_guard = -1;
    for (int64_t i = 0; i < n; i++) {
        double w = o->want[i], g = got[i];
        if (!isfinite(w) || !isfinite(g)) {
            if (!((isnan(w) && isnan(g)) || w == g)) nonfinite_bad++;
            continue;
        }
        double b = acc ? o->pre[i] : 0.0;
        num += (g - w) * (g - w);
        den += (w - b) * (w - b);
        full += w * w;
    }
    /* An increment that is (nearly) zero (softmax over one element, a tiny SGD step) is
     * measured against a tenth of the destination instead: a few ulps of it. */
    if (acc) den = fmax(den, 0.01 * full);
    for (int64_t i = n; i < tot; i++)
        if (memcmp(&got[i], &o->pre[i], sizeof(float))) {
            guard_bad++;
            if (first_guard < 0) first_guard = i;
        }
    double rel = sqrt(num) / fmax(sqrt(den), 1e-30);
    bound = bound_of(bound);
    int ok = rel <= bound && !nonfinite_bad && !guard_bad;
    printf("%s  %-18s %-62s %-7s rel_l2%s %.2e  bound %.0e", ok ? "PASS" : "FAIL", t->fn, t->label, what,
           acc ? "(inc)" : "     ", rel, bound);
    if (nonfinite_bad) printf("  %lld non-finite mismatches", (long long)nonfinite_bad);
    if (guard_bad)
        printf("  %lld guard floats overwritten (first at +%lld past the end)", (long long)guard_bad,
               (long long)(first_guard - n));
    if (!ok) {
        /* the three largest differences */
        int64_t top[3] = {-1, -1, -1};
        double topd[3] = {-1, -1, -1};
        for (int64_t i = 0; i < n; i++) {
            double d = fabs((double)got[i] - o->want[i]);
            if (isnan(d)) d = INFINITY;
            for (int k = 0; k < 3; k++)
                if (d > topd[k]) {
                    for (int q = 2; q > k; q--) topd[q] = topd[q - 1], top[q] = top[q - 1];
                    topd[k] = d;
                    top[k] = i;
                    break;
                }
        }
        printf("  worst:");
        for (int k = 0; k < 3; k++)
            if (top[k] >= 0 && topd[k] > 0)
                printf(" [%lld] got %.7g want %.7g;", (long long)top[k], got[top[k]], o->want[top[k]]);
    }
    printf("\n");
    fflush(stdout);
    count(ok);
    free(got);
    out_free(o);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double g_group_t0;
static void group_begin(const char *name) {
    g_group_checks = g_group_failures = 0;
    g_group_t0 = now_s();
    printf("---- %s\n", name);
    fflush(stdout);
}
static void group_end(const char *name) {
    printf("---- %s: %d of %d checks failed (%.2f s)\n", name, g_group_failures, g_group_checks, now_s() - g_group_t0);
    fflush(stdout);
    if (g_group_failures) fail_msg("%s: %d of %d checks failed (see the FAIL lines above)", name, g_group_failures,
                                   g_group_checks);
    if (g_broken) fail_msg("%s: the device stopped working", name);
}

static const char *shape_str(int nd, const int64_t *s, char *buf, size_t len) {
    if (nd == 0) {
        snprintf(buf, len, "()");
        return buf;
    }
    return lp_shape_str(nd, s, buf, len);
}

static int64_t numel(int nd, const int64_t *s) {
    int64_t t = 1;
    for (int i = 0; i < nd; i++) t *= s[i];
    return t;
}

/* ---------------------------------------------------------------------------------
 * memory: alloc / upload / download / copy / zero / sync */

static void t_memory(void **state) {
    (void)state;
    group_begin("memory");
    const int64_t sizes[] = {1, 3, 257, 70001};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        const int64_t n = sizes[si];
        tw t;
        if (!tw_begin(&t, DUT, "copy/zero", "n=%lld", (long long)n)) break;
        float *a = hrand(n, -1, 1);
        float *da = tw_dev(&t, a, n);
        outbuf o;
        out_init(&t, &o, n, -1, 1);
        /* o = a, then zero the middle third */
        const int64_t z0 = n / 3, zn = n / 3;
        memcpy(o.want, a, sizeof(float) * n);
        memset(o.want + z0, 0, sizeof(float) * zn);
        DUT_CALL(&t, copy, o.dev, da, sizeof(float) * n);
        DUT_CALL(&t, zero, o.dev + z0, sizeof(float) * zn);
        out_check(&t, &o, "dst", 0, TWIN_MEM_TOL);
        /* download from an offset (not 16-byte aligned) */
        if (!t.err && n > 2) {
            float *back = xmalloc(sizeof(float) * n);
            lp_status s = t.be->download(back, da + 1, sizeof(float) * (n - 1));
            tw_status(&t, s, t.be->name, "download at an offset");
            if (!t.err) {
                int ok = !memcmp(back, a + 1, sizeof(float) * (n - 1));
                printf("%s  %-18s %-62s %-7s exact\n", ok ? "PASS" : "FAIL", "download", "offset 1 float", "x");
                count(ok);
            }
            free(back);
        }
        free(a);
        tw_end(&t);
    }
    group_end("memory");
}

/* ---------------------------------------------------------------------------------
 * convolution */

static lp_conv_desc conv_make(int n, int c, int h, int w, int k, int kh, int kw, int sh, int sw, int ph0, int pw0,
                              int ph1, int pw1, int dh, int dw, int g) {
    lp_conv_desc d;
    memset(&d, 0, sizeof d);
    d.n = n, d.c = c, d.h = h, d.w = w, d.k = k, d.kh = kh, d.kw = kw, d.sh = sh, d.sw = sw;
    d.ph0 = ph0, d.pw0 = pw0, d.ph1 = ph1, d.pw1 = pw1, d.dh = dh, d.dw = dw, d.groups = g;
    d.oh = (h + ph0 + ph1 - dh * (kh - 1) - 1) / sh + 1;
    d.ow = (w + pw0 + pw1 - dw * (kw - 1) - 1) / sw + 1;
    return d;
}

static void conv_label(const lp_conv_desc *d, const char *extra, char *buf, size_t len) {
    snprintf(buf, len, "n%d c%d %dx%d k%d %dx%d s%d,%d p%d,%d,%d,%d d%d,%d g%d%s", d->n, d->c, d->h, d->w, d->k, d->kh,
             d->kw, d->sh, d->sw, d->ph0, d->pw0, d->ph1, d->pw1, d->dh, d->dw, d->groups, extra);
}

/* fwd (with or without bias), bwd_data into a pre-filled dx, bwd_filter into pre-filled
 * dw and db (db NULL when !with_db). */
static void conv_case(const lp_backend *be, const char *prec, const lp_conv_desc *d, int bias, int with_db,
                      double tol) {
    char lab[160], ex[48];
    snprintf(ex, sizeof ex, "%s%s", bias ? " bias" : "", prec);
    conv_label(d, ex, lab, sizeof lab);
    const int64_t nx = (int64_t)d->n * d->c * d->h * d->w, ny = (int64_t)d->n * d->k * d->oh * d->ow;
    const int64_t nw = (int64_t)d->k * (d->c / d->groups) * d->kh * d->kw;
    float *x = hrand(nx, -1, 1), *w = hrand(nw, -1, 1), *b = hrand(d->k, -1, 1), *dy = hrand(ny, -1, 1);
    tw t;
    /* Plain; with the executor's fused ReLU; accumulating before it (y = relu(y + conv
     * + b): ConvTranspose's input gradient). */
    static const struct { float act; int acc; const char *tag; } fwd[] = {
        {0.f, 0, ""}, {INFINITY, 0, " +relu"}, {INFINITY, 1, " +acc +relu"}, {0.5f, 0, " +relu6(0.5)"}};
    for (int v = 0; v < 4; v++)
        if (tw_begin(&t, be, "conv_fwd", "%s%s", lab, fwd[v].tag)) {
            lp_conv_desc dv = *d;
            dv.act = fwd[v].act, dv.accumulate = fwd[v].acc;
            float *gx = tw_dev(&t, x, nx), *gw = tw_dev(&t, w, nw), *gb = tw_dev(&t, b, d->k);
            outbuf y;
            out_init(&t, &y, ny, -1, 1);
            REF_CALL(&t, conv_fwd, &dv, x, w, bias ? b : NULL, y.want);
            DUT_CALL(&t, conv_fwd, &dv, gx, gw, bias ? gb : NULL, y.dev);
            out_check(&t, &y, "y", fwd[v].acc, tol);
            tw_end(&t);
        }
    for (int ov = 0; ov < 2; ov++) /* accumulating, and overwriting (a gradient's first contribution) */
        if (tw_begin(&t, be, "conv_bwd_data", "%s%s", lab, ov ? " overwrite" : "")) {
            lp_conv_desc dv = *d;
            dv.overwrite = ov;
            float *gdy = tw_dev(&t, dy, ny), *gw = tw_dev(&t, w, nw);
            outbuf dx;
            out_init(&t, &dx, nx, -1, 1);
            REF_CALL(&t, conv_bwd_data, &dv, dy, w, dx.want);
            DUT_CALL(&t, conv_bwd_data, &dv, gdy, gw, dx.dev);
            out_check(&t, &dx, "dx", !ov, tol);
            tw_end(&t);
        }
    if (tw_begin(&t, be, "conv_bwd_filter", "%s%s", lab, with_db ? " +db" : " db=NULL")) {
        float *gx = tw_dev(&t, x, nx), *gdy = tw_dev(&t, dy, ny);
        outbuf dw, db;
        out_init(&t, &dw, nw, -1, 1);
        out_init(&t, &db, d->k, -1, 1);
        REF_CALL(&t, conv_bwd_filter, d, x, dy, dw.want, with_db ? db.want : NULL);
        DUT_CALL(&t, conv_bwd_filter, d, gx, gdy, dw.dev, with_db ? db.dev : NULL);
        out_check(&t, &dw, "dw", 1, tol);
        /* db NULL: the pre-filled buffer must come back untouched (acc=0: exact) */
        out_check(&t, &db, with_db ? "db" : "db(unt)", with_db, with_db ? tol : 0.0);
        tw_end(&t);
    }
    free(x), free(w), free(b), free(dy);
}

static lp_conv_desc conv_random(void) {
    for (;;) {
        int g, cg, kg;
        if (irand(4) == 0) {
            g = 1 + irand(40);
            cg = 1, kg = 1 + irand(2);
        } else {
            const int gs[] = {1, 1, 2, 3};
            g = gs[irand(4)], cg = 1 + irand(5), kg = 1 + irand(5);
        }
        const int ks[] = {1, 2, 3, 5};
        int kh = ks[irand(4)], kw = ks[irand(4)], sh = 1 + irand(3), sw = 1 + irand(3), dh = 1 + irand(2),
            dw = 1 + irand(2);
        int ph0 = irand(kh), ph1 = irand(kh), pw0 = irand(kw), pw1 = irand(kw);
        int h = 1 + irand(20), w = 1 + irand(20), n = 1 + irand(3);
        if (h + ph0 + ph1 < dh * (kh - 1) + 1 || w + pw0 + pw1 < dw * (kw - 1) + 1) continue;
        return conv_make(n, g * cg, h, w, g * kg, kh, kw, sh, sw, ph0, pw0, ph1, pw1, dh, dw, g);
    }
}

static void t_conv(void **state) {
    (void)state;
    group_begin("conv (fp32)");
    lp_conv_desc cases[] = {
        conv_make(2, 3, 13, 11, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1),    /* basic, odd sizes */
        conv_make(3, 8, 15, 16, 12, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1),   /* stride 2 */
        conv_make(2, 4, 12, 13, 6, 3, 3, 2, 2, 0, 1, 1, 2, 1, 1, 1),    /* asymmetric pads (SAME) */
        conv_make(2, 5, 16, 16, 7, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 1),    /* dilation 2 */
        conv_make(2, 6, 9, 10, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2),     /* groups 2 */
        conv_make(1, 9, 17, 17, 6, 5, 5, 2, 2, 2, 2, 2, 2, 1, 1, 3),    /* groups 3, 5x5, stride 2 */
        conv_make(2, 33, 14, 14, 33, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 33), /* depthwise, 33 channels */
        conv_make(2, 40, 15, 16, 40, 3, 3, 2, 2, 0, 0, 1, 1, 1, 1, 40), /* depthwise, stride 2, asym pads */
        conv_make(2, 5, 11, 11, 10, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 5),   /* depthwise with multiplier 2 */
        conv_make(2, 8, 13, 13, 8, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 8),    /* depthwise, dilation 2, stride 2 */
        conv_make(3, 37, 7, 7, 19, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1),    /* 1x1 */
        conv_make(2, 16, 13, 13, 24, 1, 1, 2, 2, 0, 0, 0, 0, 1, 1, 1),  /* 1x1 stride 2 */
        conv_make(1, 8, 40, 40, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1),   /* one image, larger map */
        conv_make(2, 3, 33, 33, 8, 7, 7, 2, 2, 3, 3, 3, 3, 1, 1, 1),    /* 7x7 stride 2 stem */
        conv_make(2, 4, 1, 50, 6, 1, 5, 1, 1, 0, 2, 0, 2, 1, 1, 1),     /* 1-D */
        conv_make(2, 6, 9, 12, 5, 1, 7, 1, 1, 0, 3, 0, 3, 1, 1, 1),     /* 1x7 */
        conv_make(2, 6, 9, 12, 5, 3, 1, 1, 1, 1, 0, 1, 0, 1, 1, 1),     /* 3x1 */
        conv_make(2, 3, 16, 16, 8, 2, 2, 2, 2, 0, 0, 0, 0, 1, 1, 1),    /* 2x2 stride 2 (patches) */
        conv_make(1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1),      /* one element */
        conv_make(2, 7, 10, 9, 3, 3, 3, 3, 2, 2, 0, 0, 1, 1, 1, 1),     /* stride 3x2, pads on one side each */
    };
    const int nc = (int)(sizeof cases / sizeof *cases);
    for (int i = 0; i < nc && !g_broken; i++) conv_case(DUT, "", &cases[i], i % 3 != 1, i % 4 != 2, TWIN_CONV_TOL);
    for (int i = 0; i < 8 && !g_broken; i++) {
        lp_conv_desc d = conv_random();
        conv_case(DUT, " (random)", &d, i % 2, i % 3 != 0, TWIN_CONV_TOL);
    }
    group_end("conv (fp32)");
}

/* ---------------------------------------------------------------------------------
 * gemm: row-major C = alpha op(A) op(B) + beta C with leading dimensions */

static void gemm_case(const lp_backend *be, const char *prec, int ta, int tb, int m, int n, int k, float alpha,
                      float beta, int pad, int nan_c, double tol) {
    const int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
    const int lda = ac + pad, ldb = bc + pad, ldc = n + pad;
    const int64_t na = (int64_t)ar * lda, nb = (int64_t)br * ldb, ncc = (int64_t)m * ldc;
    float *a = hrand(na > 0 ? na : 1, -1, 1), *b = hrand(nb > 0 ? nb : 1, -1, 1);
    tw t;
    if (tw_begin(&t, be, "gemm", "ta%d tb%d m%d n%d k%d alpha%g beta%g ld+%d%s%s", ta, tb, m, n, k, alpha, beta, pad,
                 nan_c ? " C=NaN" : "", prec)) {
        float *ga = tw_dev(&t, a, na > 0 ? na : 1), *gb = tw_dev(&t, b, nb > 0 ? nb : 1);
        outbuf c;
        if (nan_c)
            out_init_value(&t, &c, ncc, NAN);
        else
            out_init(&t, &c, ncc, -1, 1);
        REF_CALL(&t, gemm, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c.want, ldc);
        DUT_CALL(&t, gemm, ta, tb, m, n, k, alpha, ga, lda, gb, ldb, beta, c.dev, ldc);
        out_check(&t, &c, "C", 0, tol);
        tw_end(&t);
    }
    free(a), free(b);
}

static void t_gemm(void **state) {
    (void)state;
    group_begin("gemm (fp32)");
    const int shapes[][3] = {{1, 1, 1},   {7, 13, 31}, {33, 65, 257}, {64, 48, 128},
                             {1, 257, 3}, {257, 1, 13}, {13, 7, 1},   {100, 3, 200}};
    const float ab[][2] = {{1.f, 0.f}, {0.7f, 1.3f}, {-1.5f, 0.25f}, {1.f, 1.f}};
    int i = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++, i++) {
                if (g_broken) break;
                gemm_case(DUT, "", ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], ab[i % 4][0], ab[i % 4][1],
                          (i / 4) % 2 ? 3 : 0, 0, TWIN_GEMM_TOL);
            }
    if (!g_broken) gemm_case(DUT, "", 0, 0, 5, 7, 0, 1.f, 0.5f, 0, 0, TWIN_GEMM_TOL);  /* k = 0: C = beta C */
    if (!g_broken) gemm_case(DUT, "", 0, 1, 9, 11, 5, 1.f, 0.f, 2, 1, TWIN_GEMM_TOL);  /* beta 0 never reads C */
    if (!g_broken) gemm_case(DUT, "", 1, 0, 12, 10, 17, 2.f, 0.f, 0, 1, TWIN_GEMM_TOL);
    group_end("gemm (fp32)");
}

/* ---------------------------------------------------------------------------------
 * pooling */

static lp_pool_desc pool_make(int n, int c, int h, int w, int kh, int kw, int sh, int sw, int ph0, int pw0, int ph1,
                              int pw1, int dh, int dw, int is_max, int cip, int ceil_mode) {
    lp_pool_desc d;
    memset(&d, 0, sizeof d);
    d.n = n, d.c = c, d.h = h, d.w = w, d.kh = kh, d.kw = kw, d.sh = sh, d.sw = sw;
    d.ph0 = ph0, d.pw0 = pw0, d.ph1 = ph1, d.pw1 = pw1, d.dh = dh, d.dw = dw, d.is_max = is_max;
    d.count_include_pad = cip;
    /* as engine/ops/op_pool.c: ceil mode, but the last window starts inside x or the begin pad */
    int span = h + ph0 + ph1 - ((kh - 1) * dh + 1);
    d.oh = (ceil_mode ? (span + sh - 1) / sh : span / sh) + 1;
    if (ceil_mode && (d.oh - 1) * sh >= h + ph0) d.oh--;
    span = w + pw0 + pw1 - ((kw - 1) * dw + 1);
    d.ow = (ceil_mode ? (span + sw - 1) / sw : span / sw) + 1;
    if (ceil_mode && (d.ow - 1) * sw >= w + pw0) d.ow--;
    return d;
}

/* Every window holds at least one element of x (else max is -inf by convention). */
static int pool_windows_ok(const lp_pool_desc *d) {
    if (d->oh <= 0 || d->ow <= 0) return 0;
    for (int o = 0; o < d->oh; o++) {
        int any = 0;
        for (int t = 0; t < d->kh; t++) {
            int i = o * d->sh - d->ph0 + t * d->dh;
            any |= i >= 0 && i < d->h;
        }
        if (!any) return 0;
    }
    for (int o = 0; o < d->ow; o++) {
        int any = 0;
        for (int t = 0; t < d->kw; t++) {
            int i = o * d->sw - d->pw0 + t * d->dw;
            any |= i >= 0 && i < d->w;
        }
        if (!any) return 0;
    }
    return 1;
}

/* quantized: x takes 4 values only, so windows hold ties (max: the first maximal
 * element in window order gets the gradient). */
static void pool_case(const lp_pool_desc *d, int quantized, const char *extra) {
    char lab[160];
    snprintf(lab, sizeof lab, "%s n%d c%d %dx%d k%dx%d s%d,%d p%d,%d,%d,%d d%d,%d o%dx%d%s%s%s",
             d->is_max ? "max" : "avg", d->n, d->c, d->h, d->w, d->kh, d->kw, d->sh, d->sw, d->ph0, d->pw0, d->ph1,
             d->pw1, d->dh, d->dw, d->oh, d->ow, d->is_max ? "" : d->count_include_pad ? " incl" : " excl",
             quantized ? " ties" : "", extra);
    if (!pool_windows_ok(d)) {
        printf("FAIL  %-18s %s: the test made a window with no element of x (harness bug)\n", "pool", lab);
        count(0);
        return;
    }
    const int64_t nx = (int64_t)d->n * d->c * d->h * d->w, ny = (int64_t)d->n * d->c * d->oh * d->ow;
    float *x = hrand(nx, -1, 1), *dy = hrand(ny, -1, 1), *y = xmalloc(sizeof(float) * ny);
    if (quantized)
        for (int64_t i = 0; i < nx; i++) x[i] = (float)irand(4) * 0.25f;
    tw t;
    if (tw_begin(&t, DUT, "pool_fwd", "%s", lab)) {
        float *gx = tw_dev(&t, x, nx);
        outbuf o;
        out_init(&t, &o, ny, -1, 1);
        REF_CALL(&t, pool_fwd, d, x, o.want);
        if (!t.err) memcpy(y, o.want, sizeof(float) * ny);
        DUT_CALL(&t, pool_fwd, d, gx, o.dev);
        out_check(&t, &o, "y", 0, TWIN_FP32_TOL);
        tw_end(&t);
    } else {
        memset(y, 0, sizeof(float) * ny);
    }
    for (int ov = 0; ov < 2; ov++) /* accumulating, and overwriting a NaN-filled dx (never read) */
        if (tw_begin(&t, DUT, "pool_bwd", "%s%s", lab, ov ? " overwrite" : "")) {
            float *gx = tw_dev(&t, x, nx), *gy = tw_dev(&t, y, ny), *gdy = tw_dev(&t, dy, ny);
            outbuf dx;
            if (ov) out_init_value(&t, &dx, nx, NAN);
            else out_init(&t, &dx, nx, -1, 1);
            REF_CALL(&t, pool_bwd, d, x, y, dy, dx.want, !ov);
            DUT_CALL(&t, pool_bwd, d, gx, gy, gdy, dx.dev, !ov);
            out_check(&t, &dx, "dx", !ov, TWIN_FP32_TOL);
            tw_end(&t);
        }
    free(x), free(dy), free(y);
}

static void t_pool(void **state) {
    (void)state;
    group_begin("pool");
    /* n c h w kh kw sh sw ph0 pw0 ph1 pw1 dh dw max cip ceil */
    lp_pool_desc cases[] = {
        pool_make(2, 3, 8, 8, 2, 2, 2, 2, 0, 0, 0, 0, 1, 1, 1, 0, 0),
        pool_make(2, 35, 13, 13, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 0, 0),  /* ResNet's, odd map, 35 channels */
        pool_make(1, 4, 14, 14, 3, 3, 2, 2, 0, 0, 0, 0, 1, 1, 1, 0, 1),   /* ceil: partial last window */
        pool_make(2, 3, 11, 11, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 1, 0, 0),   /* dilation 2 */
        pool_make(2, 5, 10, 9, 3, 2, 1, 2, 1, 0, 1, 0, 1, 1, 1, 0, 0),    /* 3x2 window, strides 1x2 */
        pool_make(2, 3, 12, 13, 3, 3, 2, 2, 0, 1, 1, 0, 1, 1, 1, 0, 1),   /* asym pads, ceil */
        pool_make(2, 64, 5, 5, 5, 5, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0),    /* global max */
        pool_make(2, 3, 1, 31, 1, 3, 1, 2, 0, 1, 0, 1, 1, 1, 1, 0, 0),    /* 1-D */
        pool_make(2, 3, 13, 11, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0),   /* avg 3x3 s1 p1 */
        pool_make(2, 3, 13, 11, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0),
        pool_make(2, 4, 9, 9, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 0, 0, 1),     /* avg ceil, window past the end pad */
        pool_make(2, 4, 9, 9, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 0, 1, 1),
        pool_make(1, 3, 10, 11, 3, 3, 2, 2, 1, 0, 0, 1, 1, 1, 0, 0, 1),   /* avg asym pads ceil */
        pool_make(1, 3, 10, 11, 3, 3, 2, 2, 1, 0, 0, 1, 1, 1, 0, 1, 1),
        pool_make(2, 64, 7, 7, 7, 7, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0),    /* global average */
        pool_make(1, 5, 16, 16, 5, 5, 3, 3, 2, 2, 2, 2, 1, 1, 0, 1, 1),   /* avg 5x5 s3 ceil */
        pool_make(2, 3, 11, 12, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 0, 0, 0),   /* avg dilation 2 */
        pool_make(2, 3, 11, 12, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 0, 1, 0),
        pool_make(2, 3, 1, 31, 1, 3, 1, 2, 0, 1, 0, 1, 1, 1, 0, 1, 1),    /* avg 1-D ceil */
    };
    const int nc = (int)(sizeof cases / sizeof *cases);
    for (int i = 0; i < nc && !g_broken; i++) pool_case(&cases[i], 0, "");
    /* ties in overlapping windows */
    lp_pool_desc ties[] = {
        pool_make(2, 3, 9, 9, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0),
        pool_make(2, 5, 7, 8, 2, 2, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0),
        pool_make(2, 35, 13, 13, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 0, 1),
        pool_make(2, 3, 11, 11, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 1, 0, 0),
    };
    for (size_t i = 0; i < sizeof ties / sizeof *ties && !g_broken; i++) pool_case(&ties[i], 1, "");
    for (int i = 0; i < 8 && !g_broken;) {
        int kh = 1 + irand(4), kw = 1 + irand(4), dh = 1 + (irand(4) == 0), dw = 1 + (irand(4) == 0);
        lp_pool_desc d = pool_make(1 + irand(2), 1 + irand(5), 1 + irand(16), 1 + irand(16), kh, kw, 1 + irand(3),
                                   1 + irand(3), irand(kh), irand(kw), irand(kh), irand(kw), dh, dw, irand(2),
                                   irand(2), irand(2));
        if (!pool_windows_ok(&d)) continue;
        pool_case(&d, irand(3) == 0, " (random)");
        i++;
    }
    group_end("pool");
}

/* lp_conv_desc.act's activation: none (0), ReLU (INFINITY), else ReLU capped (ReLU6). */
static float h_act(float v, float act) {
    if (!(act > 0.f)) return v;
    return act == INFINITY ? (v > 0.f ? v : 0.f) : fminf(fmaxf(v, 0.f), act);
}
static const float ACTS[3] = {0.f, INFINITY, 0.5f}; /* 0.5: a cap inside the test values' range, exact in bf16 */
static const char *act_tag(float act) { return act == INFINITY ? " +relu" : act > 0.f ? " +relu6(0.5)" : ""; }

/* ---------------------------------------------------------------------------------
 * unary */

static const char *unary_name(lp_unary_kind k) {
    static const char *names[] = {"identity", "relu", "leaky_relu", "clip", "sigmoid", "hard_sigmoid",
                                  "hard_swish", "erf", "sqrt", "tanh", "exp", "log", "neg", "abs", "pow", "scale",
                                  "hardtanh", "relu_guided", "relu_deconv", "gelu", "gelu_tanh"};
    return (unsigned)k < LP_UN_COUNT ? names[k] : "?";
}

/* fwd into a junk-filled y, bwd (x, the CPU's y, dy) into a pre-filled dx. */
static void unary_case(lp_unary_kind k, const float *p, const char *pdesc, int64_t n, float lo, float hi,
                       int boundaries, int inplace) {
    float *x = hrand(n, lo, hi), *dy = hrand(n, -1, 1), *y = xmalloc(sizeof(float) * n);
    if (boundaries) {
        /* exact points where the derivative changes: the CPU's (PyTorch's) rule there must hold */
        float pts[] = {0.f, -3.f, 3.f, -0.5f, 0.8f, 6.f, -2.5f, 2.5f, 1.f, -1.f};
        if (p) pts[3] = p[0], pts[4] = p[1];
        for (size_t i = 0; i < sizeof pts / sizeof *pts && (int64_t)(i * 7) < n; i++) x[i * 7] = pts[i];
    }
    tw t;
    if (tw_begin(&t, DUT, "unary_fwd", "%s%s n=%lld%s", unary_name(k), pdesc, (long long)n,
                 inplace ? " in-place" : "")) {
        outbuf o;
        if (inplace) {
            /* y = f(y): the output buffer holds x */
            o.n = n;
            o.pre = xmalloc(sizeof(float) * (n + TWIN_GUARD));
            memcpy(o.pre, x, sizeof(float) * n);
            tu_fill_uniform(&g_rng, o.pre + n, TWIN_GUARD, -1, 1);
            o.want = hdup(o.pre, n + TWIN_GUARD);
            o.dev = tw_dev(&t, o.pre, n + TWIN_GUARD);
            REF_CALL(&t, unary_fwd, k, p, o.want, o.want, n);
            DUT_CALL(&t, unary_fwd, k, p, o.dev, o.dev, n);
        } else {
            float *gx = tw_dev(&t, x, n);
            out_init(&t, &o, n, -1, 1);
            REF_CALL(&t, unary_fwd, k, p, x, o.want, n);
            DUT_CALL(&t, unary_fwd, k, p, gx, o.dev, n);
        }
        if (!t.err) memcpy(y, o.want, sizeof(float) * n);
        out_check(&t, &o, "y", 0, TWIN_FP32_TOL);
        tw_end(&t);
    }
    for (int ov = 0; ov < 2 && !inplace; ov++) /* accumulating, and overwriting a NaN-filled dx */
        if (tw_begin(&t, DUT, "unary_bwd", "%s%s n=%lld%s", unary_name(k), pdesc, (long long)n,
                     ov ? " overwrite" : "")) {
            float *gx = tw_dev(&t, x, n), *gy = tw_dev(&t, y, n), *gdy = tw_dev(&t, dy, n);
            outbuf dx;
            if (ov) out_init_value(&t, &dx, n, NAN);
            else out_init(&t, &dx, n, -1, 1);
            REF_CALL(&t, unary_bwd, k, p, x, y, dy, dx.want, n, !ov);
            DUT_CALL(&t, unary_bwd, k, p, gx, gy, gdy, dx.dev, n, !ov);
            out_check(&t, &dx, "dx", !ov, TWIN_FP32_TOL);
            tw_end(&t);
        }
    free(x), free(dy), free(y);
}

static void t_unary(void **state) {
    (void)state;
    group_begin("unary");
    /* Parameter arrays always have 2 floats (the CPU reads p[1] for every kind when p != NULL). */
    static const struct {
        lp_unary_kind k;
        float p[2];
        int has_p;
        float lo, hi;
        int bnd;
    } v[] = {
        {LP_UN_IDENTITY, {0, 0}, 0, -4, 4, 0},
        {LP_UN_RELU, {0, 0}, 0, -4, 4, 1},
        {LP_UN_LEAKY_RELU, {0, 0}, 0, -4, 4, 1},
        {LP_UN_LEAKY_RELU, {0.1f, 0}, 1, -4, 4, 1},
        {LP_UN_CLIP, {0, 0}, 0, -4, 4, 1},               /* no bounds: -inf..inf */
        {LP_UN_CLIP, {-0.5f, 0.8f}, 1, -2, 2, 1},
        {LP_UN_CLIP, {0.f, 6.f}, 1, -8, 8, 1},             /* Relu6 */
        {LP_UN_SIGMOID, {0, 0}, 0, -6, 6, 0},
        {LP_UN_HARD_SIGMOID, {0, 0}, 0, -4, 4, 1},         /* 0.2, 0.5 */
        {LP_UN_HARD_SIGMOID, {1.f / 6.f, 0.5f}, 1, -4, 4, 1},
        {LP_UN_HARD_SWISH, {0, 0}, 0, -5, 5, 1},
        {LP_UN_ERF, {0, 0}, 0, -3, 3, 0},
        {LP_UN_SQRT, {0, 0}, 0, 0.05f, 4, 0},
        {LP_UN_TANH, {0, 0}, 0, -4, 4, 0},
        {LP_UN_EXP, {0, 0}, 0, -4, 4, 0},
        {LP_UN_LOG, {0, 0}, 0, 0.05f, 4, 0},
        {LP_UN_NEG, {0, 0}, 0, -4, 4, 0},
        {LP_UN_ABS, {0, 0}, 0, -4, 4, 1},
        {LP_UN_POW, {0, 0}, 0, -2, 2, 0},                  /* exponent 1 */
        {LP_UN_POW, {2.f, 0}, 1, -2, 2, 0},
        {LP_UN_POW, {3.f, 0}, 1, -2, 2, 0},
        {LP_UN_POW, {0.5f, 0}, 1, 0.1f, 3, 0},
        {LP_UN_POW, {-1.5f, 0}, 1, 0.2f, 3, 0},
        {LP_UN_POW, {-0.5f, 0}, 1, 0.2f, 3, 0},             /* the rsqrt of LayerNorm */
        {LP_UN_SCALE, {0, 0}, 0, -4, 4, 0},
        {LP_UN_SCALE, {2.5f, -1.f}, 1, -4, 4, 0},
        {LP_UN_HARDTANH, {0.f, 6.f}, 1, -8, 8, 1},         /* ReLU6 (PyTorch's gradient) */
        {LP_UN_HARDTANH, {-0.5f, 0.8f}, 1, -2, 2, 1},
        {LP_UN_RELU_GUIDED, {0, 0}, 0, -4, 4, 1},          /* guided backprop's rule */
        {LP_UN_RELU_DECONV, {0, 0}, 0, -4, 4, 1},          /* deconvnet's */
        {LP_UN_GELU, {0, 0}, 0, -6, 6, 0},
        {LP_UN_GELU_TANH, {0, 0}, 0, -6, 6, 0},
    };
    const int64_t sizes[] = {1, 13, 257, 70001};
    int seen[LP_UN_COUNT] = {0};
    for (size_t i = 0; i < sizeof v / sizeof *v && !g_broken; i++) {
        char pd[48] = "";
        if (v[i].has_p) snprintf(pd, sizeof pd, "(%g,%g)", v[i].p[0], v[i].p[1]);
        else snprintf(pd, sizeof pd, "(p=NULL)");
        seen[v[i].k] = 1;
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes && !g_broken; s++)
            unary_case(v[i].k, v[i].has_p ? v[i].p : NULL, pd, sizes[s], v[i].lo, v[i].hi, v[i].bnd, 0);
    }
    for (int k = 0; k < LP_UN_COUNT; k++)
        if (!seen[k]) {
            printf("FAIL  %-18s unary kind %d has no case in this test: add one\n", "unary", k);
            count(0);
        }
    const float sc[2] = {-1.25f, 0.5f};
    if (!g_broken) unary_case(LP_UN_RELU, NULL, "(p=NULL)", 257, -4, 4, 1, 1);
    if (!g_broken) unary_case(LP_UN_SCALE, sc, "(-1.25,0.5)", 4099, -4, 4, 0, 1);
    if (!g_broken) unary_case(LP_UN_SIGMOID, NULL, "(p=NULL)", 31, -4, 4, 0, 1);
    group_end("unary");
}

/* ---------------------------------------------------------------------------------
 * binary with broadcasting */

static const char *binary_name(lp_binary_kind k) {
    static const char *names[] = {"add", "sub", "mul", "div", "pow"};
    return (unsigned)k < LP_BIN_COUNT ? names[k] : "?";
}

static float *binary_operand(lp_binary_kind k, int which, int64_t n) {
    if (k == LP_BIN_POW) return which == 0 ? hrand(n, 0.5f, 2.f) : hrand(n, -2.f, 2.f);
    float *p = hrand(n, -2.f, 2.f);
    if (k == LP_BIN_DIV && which == 1)
        for (int64_t i = 0; i < n; i++) p[i] = (p[i] < 0 ? -0.5f : 0.5f) + p[i] * 0.75f; /* |b| >= 0.5 */
    return p;
}

/* mode: 0 fwd + bwd(da, db), 1 bwd da only (db NULL), 2 bwd db only (da NULL),
 * 3 bwd with y = NULL (both backends recompute it where needed: pow) */
static void binary_case(lp_binary_kind k, int na, const int64_t *as, int nb, const int64_t *bs, int mode,
                        const char *extra) {
    lp_bcast bc;
    char sa[64], sb[64];
    shape_str(na, as, sa, sizeof sa);
    shape_str(nb, bs, sb, sizeof sb);
    if (lp_bcast_make(na, as, nb, bs, &bc) != LP_OK) {
        printf("FAIL  %-18s %s %s: harness shapes do not broadcast: %s\n", "binary", sa, sb, lp_last_error());
        count(0);
        return;
    }
    const int64_t nA = numel(na, as), nB = numel(nb, bs), nY = numel(bc.ndim, bc.shape);
    float *a = binary_operand(k, 0, nA), *b = binary_operand(k, 1, nB), *dy = hrand(nY, -1, 1);
    float *y = xmalloc(sizeof(float) * nY);
    char lab[160];
    snprintf(lab, sizeof lab, "%s %s op %s%s", binary_name(k), sa, sb, extra);
    tw t;
    /* y from the CPU for the backward pass (the forward runs either way) */
    REF->binary_fwd(k, &bc, a, b, y);
    if (mode == 0 && tw_begin(&t, DUT, "binary_fwd", "%s", lab)) {
        float *ga = tw_dev(&t, a, nA), *gb = tw_dev(&t, b, nB);
        outbuf o;
        out_init(&t, &o, nY, -1, 1);
        REF_CALL(&t, binary_fwd, k, &bc, a, b, o.want);
        DUT_CALL(&t, binary_fwd, k, &bc, ga, gb, o.dev);
        out_check(&t, &o, "y", 0, TWIN_FP32_TOL);
        tw_end(&t);
    }
    if (tw_begin(&t, DUT, "binary_bwd", "%s%s", lab,
                 mode == 1 ? " db=NULL" : mode == 2 ? " da=NULL" : mode == 3 ? " y=NULL" : "")) {
        float *ga = tw_dev(&t, a, nA), *gb = tw_dev(&t, b, nB), *gy = tw_dev(&t, y, nY), *gdy = tw_dev(&t, dy, nY);
        outbuf da, db;
        out_init(&t, &da, nA, -1, 1);
        out_init(&t, &db, nB, -1, 1);
        REF_CALL(&t, binary_bwd, k, &bc, a, b, mode == 3 ? NULL : y, dy, mode == 2 ? NULL : da.want,
                 mode == 1 ? NULL : db.want);
        DUT_CALL(&t, binary_bwd, k, &bc, ga, gb, mode == 3 ? NULL : gy, gdy, mode == 2 ? NULL : da.dev,
                 mode == 1 ? NULL : db.dev);
        out_check(&t, &da, mode == 2 ? "da(unt)" : "da", mode != 2, mode == 2 ? 0.0 : TWIN_FP32_TOL);
        out_check(&t, &db, mode == 1 ? "db(unt)" : "db", mode != 1, mode == 1 ? 0.0 : TWIN_FP32_TOL);
        tw_end(&t);
    }
    free(a), free(b), free(dy), free(y);
}

static void t_binary(void **state) {
    (void)state;
    group_begin("binary");
    static const struct {
        int na;
        int64_t a[6];
        int nb;
        int64_t b[6];
    } pats[] = {
        {4, {2, 3, 5, 7}, 4, {2, 3, 5, 7}},          /* same shape */
        {4, {2, 3, 5, 7}, 0, {0}},                    /* rank-0 scalar b */
        {1, {1}, 2, {4, 5}},                          /* scalar a */
        {4, {2, 35, 4, 5}, 3, {35, 1, 1}},            /* per channel */
        {2, {13, 31}, 2, {1, 31}},                    /* row */
        {2, {13, 31}, 2, {13, 1}},                    /* column */
        {2, {13, 1}, 2, {1, 31}},                     /* both broadcast: outer product */
        {3, {2, 1, 5}, 3, {1, 3, 1}},                 /* both, 3-D */
        {5, {2, 3, 1, 4, 5}, 3, {3, 4, 1}},           /* rank 5, mixed */
        {1, {1}, 1, {1}},                             /* one element */
        {1, {70001}, 1, {70001}},                     /* long */
        {2, {257, 40}, 1, {40}},                      /* rank-reduced row */
        {4, {3, 1, 7, 1}, 4, {1, 5, 1, 9}},           /* alternating */
        {6, {2, 1, 3, 1, 4, 5}, 6, {1, 2, 1, 3, 4, 1}}, /* rank 6 */
    };
    const int np = (int)(sizeof pats / sizeof *pats);
    for (int k = 0; k < LP_BIN_COUNT && !g_broken; k++)
        for (int i = 0; i < np && !g_broken; i++) {
            binary_case((lp_binary_kind)k, pats[i].na, pats[i].a, pats[i].nb, pats[i].b, 0, "");
            if (i == 3 || i == 6 || i == 8) { /* one-sided gradients on broadcast patterns */
                binary_case((lp_binary_kind)k, pats[i].na, pats[i].a, pats[i].nb, pats[i].b, 1, "");
                binary_case((lp_binary_kind)k, pats[i].na, pats[i].a, pats[i].nb, pats[i].b, 2, "");
            }
            if (k == LP_BIN_POW && (i == 0 || i == 3))
                binary_case((lp_binary_kind)k, pats[i].na, pats[i].a, pats[i].nb, pats[i].b, 3, "");
        }
    /* random patterns */
    for (int r = 0; r < 10 && !g_broken; r++) {
        const int64_t sz[] = {2, 3, 5, 7};
        int nd = 1 + irand(5);
        int64_t a[6], b[6];
        for (int d = 0; d < nd; d++) {
            int64_t s = sz[irand(4)];
            int q = irand(3);
            a[d] = q == 1 ? 1 : s;
            b[d] = q == 2 ? 1 : s;
        }
        int dropa = irand(3) == 0 ? irand(nd + 1) : 0, dropb = irand(3) == 0 ? irand(nd + 1) : 0;
        binary_case((lp_binary_kind)irand(LP_BIN_COUNT), nd - dropa, a + dropa, nd - dropb, b + dropb, irand(3),
                    " (random)");
    }
    /* add_relu (an Add and its Relu fused): bit for bit the CPU's add then relu */
    const int64_t ns[] = {1, 31, 4097, 70001};
    for (size_t i = 0; i < sizeof ns / sizeof *ns && !g_broken; i++) {
        tw t;
        if (!tw_begin(&t, DUT, "add_relu", "n=%lld", (long long)ns[i])) continue;
        const int64_t n = ns[i];
        float *x = hrand(n, -1, 1), *z = hrand(n, -1, 1);
        if (n > 2) x[1] = -z[1]; /* a sum of exactly 0 */
        float *gx = tw_dev(&t, x, n), *gz = tw_dev(&t, z, n);
        outbuf y;
        out_init(&t, &y, n, -1, 1);
        REF_CALL(&t, add_relu, n, x, z, y.want);
        DUT_CALL(&t, add_relu, n, gx, gz, y.dev);
        out_check(&t, &y, "y", 0, 0.0);
        tw_end(&t);
        free(x), free(z);
    }
    group_end("binary");
}

/* ---------------------------------------------------------------------------------
 * reduce_sum / broadcast */

static void reduce_case(int nx, const int64_t *xs, int ny, const int64_t *ys, float scale, int acc) {
    lp_bcast bc;
    char sx[64], sy[64];
    shape_str(nx, xs, sx, sizeof sx);
    shape_str(ny, ys, sy, sizeof sy);
    if (lp_bcast_make(nx, xs, ny, ys, &bc) != LP_OK) {
        printf("FAIL  %-18s %s -> %s: harness shapes do not broadcast: %s\n", "reduce_sum", sx, sy, lp_last_error());
        count(0);
        return;
    }
    const int64_t nX = numel(nx, xs), nY = numel(ny, ys);
    float *x = hrand(nX, -1, 1), *y = hrand(nY, -1, 1);
    tw t;
    if (tw_begin(&t, DUT, "reduce_sum", "%s -> %s scale %g acc%d", sx, sy, scale, acc)) {
        float *gx = tw_dev(&t, x, nX);
        outbuf o;
        out_init(&t, &o, nY, -1, 1);
        REF_CALL(&t, reduce_sum, &bc, x, o.want, scale, acc);
        DUT_CALL(&t, reduce_sum, &bc, gx, o.dev, scale, acc);
        out_check(&t, &o, "y", acc, TWIN_FP32_TOL);
        tw_end(&t);
    }
    if (tw_begin(&t, DUT, "broadcast", "%s -> %s scale %g acc%d", sy, sx, scale, acc)) {
        float *gy = tw_dev(&t, y, nY);
        outbuf o;
        out_init(&t, &o, nX, -1, 1);
        REF_CALL(&t, broadcast, &bc, y, o.want, scale, acc);
        DUT_CALL(&t, broadcast, &bc, gy, o.dev, scale, acc);
        out_check(&t, &o, "x", acc, TWIN_FP32_TOL);
        tw_end(&t);
    }
    free(x), free(y);
}

static void t_reduce(void **state) {
    (void)state;
    group_begin("reduce_sum / broadcast");
    static const struct {
        int nx;
        int64_t x[6];
        int ny;
        int64_t y[6];
    } c[] = {
        {4, {2, 3, 5, 7}, 4, {1, 3, 1, 1}},          /* per channel */
        {2, {13, 31}, 2, {13, 1}},                   /* rows */
        {2, {13, 31}, 2, {1, 31}},                   /* columns */
        {3, {4, 5, 6}, 3, {1, 1, 1}},                /* everything */
        {3, {4, 5, 6}, 1, {6}},                      /* rank-reduced */
        {5, {2, 3, 4, 5, 6}, 5, {2, 1, 4, 1, 6}},    /* alternating */
        {1, {4099}, 1, {1}},                         /* long */
        {2, {64, 257}, 2, {64, 1}},
        {3, {3, 35, 49}, 3, {1, 35, 1}},             /* conv bias gradient */
        {2, {5, 7}, 2, {5, 7}},                      /* nothing reduced */
        {2, {1, 1}, 2, {1, 1}},
        {6, {2, 3, 1, 4, 1, 5}, 6, {1, 3, 1, 1, 1, 5}},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c && !g_broken; i++) {
        int64_t cnt = numel(c[i].nx, c[i].x) / numel(c[i].ny, c[i].y);
        reduce_case(c[i].nx, c[i].x, c[i].ny, c[i].y, 1.0f / (float)cnt, 0);
        reduce_case(c[i].nx, c[i].x, c[i].ny, c[i].y, i % 2 ? -0.5f : 1.0f, 1);
    }
    group_end("reduce_sum / broadcast");
}

/* ---------------------------------------------------------------------------------
 * softmax */

static void t_softmax(void **state) {
    (void)state;
    group_begin("softmax");
    static const struct {
        int64_t o, a, i;
        float range;
    } c[] = {{1, 1, 1, 5},    {7, 10, 1, 5},  {3, 257, 1, 5}, {2, 13, 31, 5},
             {4, 1000, 1, 5}, {1, 3, 4099, 5}, {5, 31, 7, 5},  {6, 33, 3, 40}};
    for (size_t i = 0; i < sizeof c / sizeof *c && !g_broken; i++)
        for (int lg = 0; lg < 2 && !g_broken; lg++) {
            const int64_t n = c[i].o * c[i].a * c[i].i;
            float *x = hrand(n, -c[i].range, c[i].range), *dy = hrand(n, -1, 1), *y = xmalloc(sizeof(float) * n);
            REF->softmax_fwd(c[i].o, c[i].a, c[i].i, lg, x, y);
            tw t;
            if (tw_begin(&t, DUT, "softmax_fwd", "%s outer %lld axis %lld inner %lld x in +-%g", lg ? "log" : "soft",
                         (long long)c[i].o, (long long)c[i].a, (long long)c[i].i, c[i].range)) {
                float *gx = tw_dev(&t, x, n);
                outbuf o;
                out_init(&t, &o, n, -1, 1);
                REF_CALL(&t, softmax_fwd, c[i].o, c[i].a, c[i].i, lg, x, o.want);
                DUT_CALL(&t, softmax_fwd, c[i].o, c[i].a, c[i].i, lg, gx, o.dev);
                out_check(&t, &o, "y", 0, TWIN_FP32_TOL);
                tw_end(&t);
            }
            if (tw_begin(&t, DUT, "softmax_bwd", "%s outer %lld axis %lld inner %lld", lg ? "log" : "soft",
                         (long long)c[i].o, (long long)c[i].a, (long long)c[i].i)) {
                float *gy = tw_dev(&t, y, n), *gdy = tw_dev(&t, dy, n);
                outbuf dx;
                out_init(&t, &dx, n, -1, 1);
                REF_CALL(&t, softmax_bwd, c[i].o, c[i].a, c[i].i, lg, y, dy, dx.want);
                DUT_CALL(&t, softmax_bwd, c[i].o, c[i].a, c[i].i, lg, gy, gdy, dx.dev);
                out_check(&t, &dx, "dx", 1, TWIN_FP32_TOL);
                tw_end(&t);
            }
            free(x), free(dy), free(y);
        }
    group_end("softmax");
}

/* ---------------------------------------------------------------------------------
 * transpose, copy2d */

static void transpose_case(int nd, const int64_t *shape, const int *perm, int acc, const char *extra) {
    char ss[64], ps[64] = "";
    shape_str(nd, shape, ss, sizeof ss);
    for (int d = 0; d < nd; d++) snprintf(ps + strlen(ps), sizeof ps - strlen(ps), "%s%d", d ? "," : "", perm[d]);
    const int64_t n = numel(nd, shape);
    float *x = hrand(n, -1, 1);
    tw t;
    if (tw_begin(&t, DUT, "transpose", "%s perm (%s) acc%d%s", ss, ps, acc, extra)) {
        float *gx = tw_dev(&t, x, n);
        outbuf o;
        out_init(&t, &o, n, -1, 1);
        REF_CALL(&t, transpose, nd, shape, perm, x, o.want, acc);
        DUT_CALL(&t, transpose, nd, shape, perm, gx, o.dev, acc);
        out_check(&t, &o, "y", acc, TWIN_FP32_TOL);
        tw_end(&t);
    }
    free(x);
}

static void t_transpose(void **state) {
    (void)state;
    group_begin("transpose");
    static const struct {
        int nd;
        int64_t s[6];
        int p[6];
    } c[] = {
        {0, {0}, {0}},                                  /* a scalar */
        {1, {31}, {0}},
        {2, {13, 31}, {1, 0}},
        {2, {64, 1031}, {1, 0}},
        {3, {3, 5, 7}, {2, 0, 1}},
        {3, {3, 5, 7}, {0, 2, 1}},
        {3, {3, 5, 7}, {1, 0, 2}},
        {3, {3, 5, 7}, {0, 1, 2}},                      /* identity */
        {4, {2, 3, 4, 5}, {0, 2, 3, 1}},                /* NCHW -> NHWC */
        {4, {2, 3, 4, 5}, {0, 3, 1, 2}},                /* NHWC -> NCHW */
        {4, {2, 3, 4, 5}, {3, 2, 1, 0}},
        {4, {2, 35, 7, 9}, {1, 0, 2, 3}},
        {5, {2, 3, 1, 5, 7}, {4, 2, 0, 3, 1}},
        {6, {2, 1, 3, 2, 3, 2}, {5, 4, 3, 2, 1, 0}},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c && !g_broken; i++)
        for (int acc = 0; acc < 2; acc++) transpose_case(c[i].nd, c[i].s, c[i].p, acc, "");
    for (int r = 0; r < 6 && !g_broken; r++) {
        int nd = 2 + irand(5), perm[6];
        int64_t s[6];
        for (int d = 0; d < nd; d++) s[d] = 1 + irand(6), perm[d] = d;
        for (int d = nd - 1; d > 0; d--) {
            int j = irand(d + 1), tmp = perm[d];
            perm[d] = perm[j], perm[j] = tmp;
        }
        transpose_case(nd, s, perm, irand(2), " (random)");
    }
    group_end("transpose");
}

static void t_copy2d(void **state) {
    (void)state;
    group_begin("copy2d");
    /* outer, len, src stride, dst stride, src offset, dst offset (floats; odd offsets are unaligned) */
    static const int64_t c[][6] = {{13, 31, 40, 31, 0, 0},  {1, 257, 257, 257, 0, 0},  {7, 1, 3, 5, 0, 0},
                                   {13, 31, 31, 31, 0, 0},  {300, 257, 300, 600, 1, 3}, {5, 9, 9, 20, 3, 1},
                                   {64, 49, 49, 98, 0, 49}};
    for (size_t i = 0; i < sizeof c / sizeof *c && !g_broken; i++)
        for (int acc = 0; acc < 2 && !g_broken; acc++) {
            const int64_t outer = c[i][0], len = c[i][1], ss = c[i][2], ds = c[i][3], so = c[i][4], dof = c[i][5];
            const int64_t ns = so + (outer - 1) * ss + len, nd = dof + (outer - 1) * ds + len;
            float *src = hrand(ns, -1, 1);
            tw t;
            if (tw_begin(&t, DUT, "copy2d", "outer %lld len %lld strides %lld,%lld offsets %lld,%lld acc%d",
                         (long long)outer, (long long)len, (long long)ss, (long long)ds, (long long)so,
                         (long long)dof, acc)) {
                float *gs = tw_dev(&t, src, ns);
                outbuf o;
                out_init(&t, &o, nd, -1, 1);
                REF_CALL(&t, copy2d, outer, len, src + so, ss, o.want + dof, ds, acc);
                DUT_CALL(&t, copy2d, outer, len, gs ? gs + so : NULL, ss, o.dev ? o.dev + dof : NULL, ds, acc);
                /* the whole destination: the gaps between rows must stay as they were */
                out_check(&t, &o, "dst", acc, acc ? TWIN_FP32_TOL : TWIN_MEM_TOL);
                tw_end(&t);
            }
            free(src);
        }
    group_end("copy2d");
}

/* ---------------------------------------------------------------------------------
 * slice, pad */

static void slice_case(int nd, const int64_t *xs, const int64_t *start, const int64_t *step, const int64_t *ys,
                       const char *extra) {
    char sx[64], sy[64], st[96] = "";
    shape_str(nd, xs, sx, sizeof sx);
    shape_str(nd, ys, sy, sizeof sy);
    for (int d = 0; d < nd; d++)
        snprintf(st + strlen(st), sizeof st - strlen(st), "%s%lld:%lld", d ? "," : "", (long long)start[d],
                 (long long)step[d]);
    const int64_t nx = numel(nd, xs), ny = numel(nd, ys);
    float *x = hrand(nx, -1, 1), *dy = hrand(ny, -1, 1);
    tw t;
    if (tw_begin(&t, DUT, "slice_fwd", "x %s start:step %s -> %s%s", sx, st, sy, extra)) {
        float *gx = tw_dev(&t, x, nx);
        outbuf o;
        out_init(&t, &o, ny, -1, 1);
        REF_CALL(&t, slice_fwd, nd, xs, ys, start, step, x, o.want);
        DUT_CALL(&t, slice_fwd, nd, xs, ys, start, step, gx, o.dev);
        out_check(&t, &o, "y", 0, TWIN_MEM_TOL);
        tw_end(&t);
    }
    if (tw_begin(&t, DUT, "slice_bwd", "x %s start:step %s -> %s%s", sx, st, sy, extra)) {
        float *gdy = tw_dev(&t, dy, ny);
        outbuf dx;
        out_init(&t, &dx, nx, -1, 1);
        REF_CALL(&t, slice_bwd, nd, xs, ys, start, step, dy, dx.want);
        DUT_CALL(&t, slice_bwd, nd, xs, ys, start, step, gdy, dx.dev);
        out_check(&t, &dx, "dx", 1, TWIN_FP32_TOL);
        tw_end(&t);
    }
    free(x), free(dy);
}

static void t_slice(void **state) {
    (void)state;
    group_begin("slice");
    static const struct {
        int nd;
        int64_t x[6], start[6], step[6], y[6];
    } c[] = {
        {1, {31}, {3}, {2}, {14}},
        {1, {31}, {30}, {-1}, {31}},                    /* reversed */
        {1, {31}, {29}, {-3}, {10}},
        {1, {257}, {0}, {5}, {52}},
        {4, {2, 5, 7, 9}, {0, 1, 2, 0}, {1, 2, -1, 3}, {2, 2, 3, 3}},
        {4, {2, 3, 13, 13}, {0, 0, 1, 1}, {1, 1, 1, 1}, {2, 3, 11, 11}}, /* crop */
        {6, {2, 3, 4, 5, 6, 7}, {1, 0, 3, 1, 5, 0}, {1, 2, -1, 2, -2, 3}, {1, 2, 4, 2, 3, 3}},
        {2, {64, 300}, {0, 299}, {1, -1}, {64, 300}},  /* last axis reversed */
        {3, {3, 1, 5}, {2, 0, 4}, {-1, 1, -2}, {3, 1, 3}},
        {2, {40, 35}, {4, 0}, {1, 1}, {30, 35}},        /* outermost axis only */
    };
    for (size_t i = 0; i < sizeof c / sizeof *c && !g_broken; i++) slice_case(c[i].nd, c[i].x, c[i].start, c[i].step, c[i].y, "");
    for (int r = 0; r < 8 && !g_broken; r++) {
        int nd = 1 + irand(4);
        int64_t xs[6], st[6], sp[6], ys[6];
        for (int d = 0; d < nd; d++) {
            const int64_t steps[] = {1, 2, 3, -1, -2};
            xs[d] = 1 + irand(9);
            sp[d] = steps[irand(5)];
            st[d] = irand((int)xs[d]);
            int64_t maxlen = sp[d] > 0 ? (xs[d] - 1 - st[d]) / sp[d] + 1 : st[d] / -sp[d] + 1;
            ys[d] = 1 + irand((int)maxlen);
        }
        slice_case(nd, xs, st, sp, ys, " (random)");
    }
    group_end("slice");
}

static void pad_case(int nd, const int64_t *xs, const int64_t *pads, int mode, float value, const char *extra) {
    static const char *modes[] = {"constant", "reflect", "edge"};
    char sx[64], sy[64], ps[96] = "";
    int64_t ys[6];
    for (int d = 0; d < nd; d++) ys[d] = xs[d] + pads[d] + pads[nd + d];
    shape_str(nd, xs, sx, sizeof sx);
    shape_str(nd, ys, sy, sizeof sy);
    for (int d = 0; d < 2 * nd; d++)
        snprintf(ps + strlen(ps), sizeof ps - strlen(ps), "%s%lld", d ? "," : "", (long long)pads[d]);
    const int64_t nx = numel(nd, xs), ny = numel(nd, ys);
    float *x = hrand(nx, -1, 1), *dy = hrand(ny, -1, 1);
    tw t;
    char val[32] = "";
    if (mode == 0) snprintf(val, sizeof val, " %g", value);
    if (tw_begin(&t, DUT, "pad_fwd", "%s%s x %s pads %s -> %s%s", modes[mode], val, sx, ps, sy, extra)) {
        float *gx = tw_dev(&t, x, nx);
        outbuf o;
        out_init(&t, &o, ny, -1, 1);
        REF_CALL(&t, pad_fwd, nd, xs, pads, mode, value, x, o.want);
        DUT_CALL(&t, pad_fwd, nd, xs, pads, mode, value, gx, o.dev);
        out_check(&t, &o, "y", 0, TWIN_MEM_TOL);
        tw_end(&t);
    }
    if (tw_begin(&t, DUT, "pad_bwd", "%s x %s pads %s -> %s%s", modes[mode], sx, ps, sy, extra)) {
        float *gdy = tw_dev(&t, dy, ny);
        outbuf dx;
        out_init(&t, &dx, nx, -1, 1);
        REF_CALL(&t, pad_bwd, nd, xs, pads, mode, dy, dx.want);
        DUT_CALL(&t, pad_bwd, nd, xs, pads, mode, gdy, dx.dev);
        out_check(&t, &dx, "dx", 1, TWIN_FP32_TOL);
        tw_end(&t);
    }
    free(x), free(dy);
}

static void t_pad(void **state) {
    (void)state;
    group_begin("pad");
    /* reflect pads stay below the axis size, as engine/ops/op_slice.c requires */
    static const struct {
        int nd;
        int64_t x[6], pads[12];
        int modes; /* bit m: run mode m */
    } c[] = {
        {4, {2, 3, 7, 9}, {0, 0, 1, 2, 0, 0, 3, 1}, 7},
        {4, {2, 3, 7, 9}, {0, 0, -1, 2, 0, 0, 1, -2}, 7},     /* crop and pad on one axis */
        {1, {13}, {3, 5}, 7},
        {1, {4}, {3, 3}, 7},                                  /* reflect: the largest pad allowed */
        {2, {1, 5}, {2, 0, 3, 1}, 5},                         /* size-1 axis: constant, edge */
        {2, {1, 5}, {0, 2, 0, 1}, 7},
        {5, {2, 1, 3, 4, 5}, {1, 0, 1, 2, 0, 0, 0, 2, 1, 3}, 7},
        {3, {3, 4, 5}, {-1, -1, -2, -1, 0, -2}, 7},           /* crop only */
        {4, {2, 16, 31, 31}, {0, 0, 2, 2, 0, 0, 2, 2}, 7},
        {1, {9}, {-3, 4}, 7},                                 /* crop at the begin, reflect at the end */
        {6, {2, 1, 2, 3, 2, 3}, {1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 2}, 7},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c && !g_broken; i++)
        for (int m = 0; m < 3 && !g_broken; m++)
            if (c[i].modes & (1 << m)) pad_case(c[i].nd, c[i].x, c[i].pads, m, i % 2 ? -1.25f : 0.5f, "");
    for (int r = 0; r < 8 && !g_broken;) {
        int nd = 1 + irand(4), mode = irand(3);
        int64_t xs[6], pads[12];
        int ok = 1;
        for (int d = 0; d < nd; d++) {
            xs[d] = 2 + irand(7);
            pads[d] = irand((int)xs[d]) - irand((int)xs[d] / 2 + 1);
            pads[nd + d] = irand((int)xs[d]) - irand((int)xs[d] / 2 + 1);
            if (xs[d] + pads[d] + pads[nd + d] < 1) ok = 0;
        }
        if (!ok) continue;
        pad_case(nd, xs, pads, mode, 0.75f, " (random)");
        r++;
    }
    group_end("pad");
}

/* ---------------------------------------------------------------------------------
 * LRN, channel affine */

static void t_lrn(void **state) {
    (void)state;
    group_begin("lrn");
    static const struct {
        int n, c;
        int64_t hw;
        int size;
        float alpha, beta, bias;
    } c[] = {{2, 7, 13, 5, 1e-4f, 0.75f, 1.f},  /* AlexNet's constants */
             {2, 7, 13, 5, 1.5f, 0.75f, 2.f},   /* strong cross-channel terms */
             {1, 35, 31, 4, 0.8f, 0.6f, 1.5f},  /* even size: asymmetric window */
             {2, 5, 9, 9, 1.f, 0.5f, 1.f},      /* window wider than the channels */
             {3, 3, 1, 1, 0.5f, 0.75f, 1.f},    /* size 1 */
             {2, 64, 49, 5, 2.f, 0.75f, 1.f}};
    for (size_t i = 0; i < sizeof c / sizeof *c && !g_broken; i++) {
        const int64_t n = (int64_t)c[i].n * c[i].c * c[i].hw;
        float *x = hrand(n, -2, 2), *dy = hrand(n, -1, 1), *y = xmalloc(sizeof(float) * n);
        REF->lrn_fwd(c[i].n, c[i].c, c[i].hw, c[i].size, c[i].alpha, c[i].beta, c[i].bias, x, y);
        char lab[128];
        snprintf(lab, sizeof lab, "n%d c%d hw%lld size %d alpha %g beta %g bias %g", c[i].n, c[i].c,
                 (long long)c[i].hw, c[i].size, c[i].alpha, c[i].beta, c[i].bias);
        tw t;
        if (tw_begin(&t, DUT, "lrn_fwd", "%s", lab)) {
            float *gx = tw_dev(&t, x, n);
            outbuf o;
            out_init(&t, &o, n, -1, 1);
            REF_CALL(&t, lrn_fwd, c[i].n, c[i].c, c[i].hw, c[i].size, c[i].alpha, c[i].beta, c[i].bias, x, o.want);
            DUT_CALL(&t, lrn_fwd, c[i].n, c[i].c, c[i].hw, c[i].size, c[i].alpha, c[i].beta, c[i].bias, gx, o.dev);
            out_check(&t, &o, "y", 0, TWIN_FP32_TOL);
            tw_end(&t);
        }
        if (tw_begin(&t, DUT, "lrn_bwd", "%s", lab)) {
            float *gx = tw_dev(&t, x, n), *gy = tw_dev(&t, y, n), *gdy = tw_dev(&t, dy, n);
            outbuf dx;
            out_init(&t, &dx, n, -1, 1);
            REF_CALL(&t, lrn_bwd, c[i].n, c[i].c, c[i].hw, c[i].size, c[i].alpha, c[i].beta, c[i].bias, x, y, dy,
                     dx.want);
            DUT_CALL(&t, lrn_bwd, c[i].n, c[i].c, c[i].hw, c[i].size, c[i].alpha, c[i].beta, c[i].bias, gx, gy, gdy,
                     dx.dev);
            out_check(&t, &dx, "dx", 1, TWIN_FP32_TOL);
            tw_end(&t);
        }
        free(x), free(dy), free(y);
    }
    group_end("lrn");
}

static void t_affine(void **state) {
    (void)state;
    group_begin("channel_affine");
    static const struct {
        int n, c;
        int64_t hw;
    } c[] = {{2, 35, 91}, {1, 3, 1}, {5, 64, 49}, {3, 1, 257}, {1, 33, 4099}};
    for (size_t i = 0; i < sizeof c / sizeof *c && !g_broken; i++) {
        const int64_t n = (int64_t)c[i].n * c[i].c * c[i].hw;
        float *x = hrand(n, -2, 2), *sc = hrand(c[i].c, -2, 2), *sh = hrand(c[i].c, -1, 1), *dy = hrand(n, -1, 1);
        char lab[96];
        snprintf(lab, sizeof lab, "n%d c%d hw%lld", c[i].n, c[i].c, (long long)c[i].hw);
        tw t;
        for (int a = 0; a < 3; a++) /* plain, with a fused ReLU, with a fused ReLU6 (capped at 0.5) */
            if (tw_begin(&t, DUT, "channel_affine_fwd", "%s%s", lab, act_tag(ACTS[a]))) {
                float *gx = tw_dev(&t, x, n), *gs = tw_dev(&t, sc, c[i].c), *gh = tw_dev(&t, sh, c[i].c);
                outbuf o;
                out_init(&t, &o, n, -1, 1);
                REF_CALL(&t, channel_affine_fwd, c[i].n, c[i].c, c[i].hw, x, sc, sh, o.want, ACTS[a]);
                DUT_CALL(&t, channel_affine_fwd, c[i].n, c[i].c, c[i].hw, gx, gs, gh, o.dev, ACTS[a]);
                out_check(&t, &o, "y", 0, TWIN_FP32_TOL);
                tw_end(&t);
            }
        /* which outputs: all; dx NULL; dscale and dshift NULL; dshift NULL */
        static const int want_out[4][3] = {{1, 1, 1}, {0, 1, 1}, {1, 0, 0}, {1, 1, 0}};
        static const char *vname[4] = {"", " dx=NULL", " dscale=dshift=NULL", " dshift=NULL"};
        for (int v = 0; v < 4 && !g_broken; v++) {
            if (!tw_begin(&t, DUT, "channel_affine_bwd", "%s%s", lab, vname[v])) break;
            float *gx = tw_dev(&t, x, n), *gs = tw_dev(&t, sc, c[i].c), *gdy = tw_dev(&t, dy, n);
            outbuf dx, ds, dh;
            out_init(&t, &dx, n, -1, 1);
            out_init(&t, &ds, c[i].c, -1, 1);
            out_init(&t, &dh, c[i].c, -1, 1);
            const int *w = want_out[v];
            REF_CALL(&t, channel_affine_bwd, c[i].n, c[i].c, c[i].hw, x, sc, dy, w[0] ? dx.want : NULL,
                     w[1] ? ds.want : NULL, w[2] ? dh.want : NULL);
            DUT_CALL(&t, channel_affine_bwd, c[i].n, c[i].c, c[i].hw, gx, gs, gdy, w[0] ? dx.dev : NULL,
                     w[1] ? ds.dev : NULL, w[2] ? dh.dev : NULL);
            out_check(&t, &dx, w[0] ? "dx" : "dx(unt)", w[0], w[0] ? TWIN_FP32_TOL : 0.0);
            out_check(&t, &ds, w[1] ? "dscale" : "ds(unt)", w[1], w[1] ? TWIN_FP32_TOL : 0.0);
            out_check(&t, &dh, w[2] ? "dshift" : "dh(unt)", w[2], w[2] ? TWIN_FP32_TOL : 0.0);
            tw_end(&t);
        }
        free(x), free(sc), free(sh), free(dy);
    }
    group_end("channel_affine");
}

/* ---------------------------------------------------------------------------------
 * axpy, scal, fill, sgd_momentum */

static void t_blas1(void **state) {
    (void)state;
    group_begin("axpy / scal / fill / sgd_momentum");
    const int64_t sizes[] = {1, 7, 257, 70001};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes && !g_broken; si++) {
        const int64_t n = sizes[si];
        float *x = hrand(n, -1, 1), *g = hrand(n, -1, 1);
        tw t;
        if (tw_begin(&t, DUT, "axpy", "n=%lld a=-1.7", (long long)n)) {
            float *gx = tw_dev(&t, x, n);
            outbuf y;
            out_init(&t, &y, n, -1, 1);
            REF_CALL(&t, axpy, n, -1.7f, x, y.want);
            DUT_CALL(&t, axpy, n, -1.7f, gx, y.dev);
            out_check(&t, &y, "y", 1, TWIN_FP32_TOL);
            tw_end(&t);
        }
        if (tw_begin(&t, DUT, "scal", "n=%lld a=0.3", (long long)n)) {
            outbuf y;
            out_init(&t, &y, n, -1, 1);
            REF_CALL(&t, scal, n, 0.3f, y.want);
            DUT_CALL(&t, scal, n, 0.3f, y.dev);
            out_check(&t, &y, "x", 0, TWIN_FP32_TOL);
            tw_end(&t);
        }
        if (tw_begin(&t, DUT, "fill", "n=%lld v=2.5", (long long)n)) {
            outbuf y;
            out_init(&t, &y, n, -1, 1);
            REF_CALL(&t, fill, n, 2.5f, y.want);
            DUT_CALL(&t, fill, n, 2.5f, y.dev);
            out_check(&t, &y, "x", 0, TWIN_MEM_TOL);
            tw_end(&t);
        }
        static const float hp[][3] = {{0.05f, 0.9f, 1e-4f}, {0.1f, 0.f, 0.f}, {0.01f, 0.99f, 5e-3f}};
        const float *h = hp[si % 3];
        if (tw_begin(&t, DUT, "sgd_momentum", "n=%lld lr %g mu %g wd %g", (long long)n, h[0], h[1], h[2])) {
            float *gg = tw_dev(&t, g, n);
            outbuf w, v;
            out_init(&t, &w, n, -1, 1);
            out_init(&t, &v, n, -1, 1);
            REF_CALL(&t, sgd_momentum, n, h[0], h[1], h[2], w.want, g, v.want);
            DUT_CALL(&t, sgd_momentum, n, h[0], h[1], h[2], w.dev, gg, v.dev);
            out_check(&t, &w, "w", 1, TWIN_FP32_TOL);
            out_check(&t, &v, "v", 0, TWIN_FP32_TOL);
            tw_end(&t);
        }
        free(x), free(g);
    }
    group_end("axpy / scal / fill / sgd_momentum");
}

/* ---------------------------------------------------------------------------------
 * reduced precision: conv and gemm on the tf32 and bf16 tables */

static void precision_cases(const lp_backend *be, const char *tag, double tol) {
    lp_conv_desc cv[] = {
        conv_make(2, 3, 13, 11, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1),
        conv_make(3, 8, 15, 16, 12, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1),
        conv_make(2, 4, 12, 13, 6, 3, 3, 2, 2, 0, 1, 1, 2, 1, 1, 1),
        conv_make(2, 6, 9, 10, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2),
        conv_make(2, 33, 14, 14, 33, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 33),
        conv_make(3, 37, 7, 7, 19, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1),
        conv_make(2, 3, 33, 33, 8, 7, 7, 2, 2, 3, 3, 3, 3, 1, 1, 1),
        conv_make(2, 32, 14, 14, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1),
    };
    for (size_t i = 0; i < sizeof cv / sizeof *cv && !g_broken; i++) conv_case(be, tag, &cv[i], i % 2 == 0, 1, tol);
    const int gs[][3] = {{64, 48, 128}, {33, 65, 257}, {7, 13, 31}};
    for (size_t s = 0; s < sizeof gs / sizeof *gs; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2 && !g_broken; tb++)
                gemm_case(be, tag, ta, tb, gs[s][0], gs[s][1], gs[s][2], s == 1 ? 0.7f : 1.f, s == 1 ? 1.3f : 0.f,
                          s == 2 ? 3 : 0, 0, tol);
}

static void t_tf32(void **state) {
    (void)state;
    group_begin("tf32 table: conv + gemm");
    if (!DUT_TF32) {
        printf("FAIL  lp_backend_cuda_precision(LP_PREC_TF32) returned NULL: %s\n", lp_last_error());
        count(0);
    } else {
        precision_cases(DUT_TF32, " tf32", TWIN_TF32_TOL);
    }
    group_end("tf32 table: conv + gemm");
}

static void t_bf16(void **state) {
    (void)state;
    group_begin("bf16 table: conv + gemm");
    if (!DUT_BF16) {
        printf("FAIL  lp_backend_cuda_precision(LP_PREC_BF16) returned NULL: %s\n", lp_last_error());
        count(0);
    } else {
        precision_cases(DUT_BF16, " bf16", TWIN_BF16_TOL);
    }
    group_end("bf16 table: conv + gemm");
}

/* ---------------------------------------------------------------------------------
 * packed activations (the bf16 table's lp_backend.packed: bf16 NHWC): packed_add and
 * unpack against host twins with the same rounding (bf16 = the upper 16 bits after
 * round-to-nearest-even), exactly; convolutions with packed ends against the same
 * table's fp32 NCHW call on the same (bf16-exact) data: they differ in layout only. */

#define PK_GUARD 6 /* packed values after every packed output that must come back untouched */

static uint16_t h_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u); /* finite inputs only */
    return (uint16_t)(u >> 16);
}
static float h_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* n random bf16 values plus the guard. */
static uint16_t *pk_rand(int64_t n) {
    uint16_t *p = xmalloc(sizeof *p * (size_t)(n + PK_GUARD));
    for (int64_t i = 0; i < n + PK_GUARD; i++) p[i] = h_bf16(tu_uniform(&g_rng, -1.f, 1.f));
    return p;
}

/* NCHW fp32 -> NHWC bf16 (the guard after it left as it is). */
static void pk_pack(int n, int c, int64_t hw, const float *x, uint16_t *y) {
    for (int b = 0; b < n; b++)
        for (int ch = 0; ch < c; ch++)
            for (int64_t p = 0; p < hw; p++) y[((int64_t)b * hw + p) * c + ch] = h_bf16(x[((int64_t)b * c + ch) * hw + p]);
}

/* n packed values and the guard on the device under test. */
static void *pk_dev(tw *t, const uint16_t *host, int64_t n) {
    float *p = tw_dev(t, NULL, (n + PK_GUARD + 1) / 2);
    if (p) tw_status(t, t->be->upload(p, host, sizeof *host * (size_t)(n + PK_GUARD)), t->be->name, "upload");
    return p;
}

/* The device's n packed values against want (as floats, relative L2), the guard bit-exact. */
static void pk_check(tw *t, const void *dev, const uint16_t *want, int64_t n, const char *what, double bound) {
    if (t->err) return;
    uint16_t *got = xmalloc(sizeof *got * (size_t)(n + PK_GUARD));
    lp_status s = t->be->download(got, dev, sizeof *got * (size_t)(n + PK_GUARD));
    if (s != LP_OK) {
        tw_status(t, s, t->be->name, "download");
        free(got);
        return;
    }
    double num = 0, den = 0;
    int64_t differ = 0, guard_bad = 0;
    for (int64_t i = 0; i < n; i++) {
        const double g = h_f32(got[i]), w = h_f32(want[i]);
        num += (g - w) * (g - w), den += w * w;
        differ += got[i] != want[i];
    }
    for (int64_t i = n; i < n + PK_GUARD; i++) guard_bad += got[i] != want[i];
    const double rel = sqrt(num) / fmax(sqrt(den), 1e-30);
    const int ok = rel <= bound && !guard_bad;
    printf("%s  %-18s %-62s %-7s rel_l2      %.2e  bound %.0e  %lld of %lld values differ", ok ? "PASS" : "FAIL", t->fn,
           t->label, what, rel, bound, (long long)differ, (long long)n);
    if (guard_bad) printf("  %lld guard values overwritten", (long long)guard_bad);
    printf("\n");
    fflush(stdout);
    count(ok);
    free(got);
}

static void packed_kernels(void) {
    const int64_t ns[] = {1, 2, 7, 1000, 4099};
    tw t;
    for (size_t i = 0; i < sizeof ns / sizeof *ns; i++)
        for (int v = 0; v < 6; v++) {
            const int64_t n = ns[i];
            const int with_b = v & 1;
            const float act = ACTS[v >> 1];
            if (!tw_begin(&t, DUT_BF16, "packed_add", "n %lld%s%s", (long long)n, with_b ? "" : " b=NULL",
                          act_tag(act)))
                return;
            uint16_t *a = pk_rand(n), *b = pk_rand(n), *y = pk_rand(n), *want = xmalloc(sizeof *want * (size_t)(n + PK_GUARD));
            memcpy(want, y, sizeof *want * (size_t)(n + PK_GUARD));
            for (int64_t k = 0; k < n; k++) want[k] = h_bf16(h_act(h_f32(a[k]) + (with_b ? h_f32(b[k]) : 0.f), act));
            void *ga = pk_dev(&t, a, n), *gb = pk_dev(&t, b, n), *gy = pk_dev(&t, y, n);
            DUT_CALL(&t, packed_add, n, ga, with_b ? gb : NULL, gy, act);
            pk_check(&t, gy, want, n, "y", 0.0);
            tw_end(&t);
            free(a), free(b), free(y), free(want);
        }
    /* dx (+)= what passes of dy, one rounding: ReLU's (y > 0), ReLU6's (0 < y < cap: 0.5
     * here, and some y at it), guided backprop's (y > 0 and dy > 0), deconvnet's (dy > 0;
     * y NULL: it reads none) */
    const lp_unary_kind rk[] = {LP_UN_RELU, LP_UN_HARDTANH, LP_UN_RELU_GUIDED, LP_UN_RELU_DECONV};
    const float cap = 0.5f;
    for (size_t i = 0; i < sizeof ns / sizeof *ns; i++)
        for (int acc = 0; acc < 2; acc++)
            for (int r = 0; r < 4; r++) {
                const int64_t n = ns[i];
                const lp_unary_kind k = rk[r];
                if (!tw_begin(&t, DUT_BF16, "packed_relu_bwd", "%s n %lld%s", unary_name(k), (long long)n,
                              acc ? " accumulate" : " overwrite"))
                    return;
                uint16_t *y = pk_rand(n), *dy = pk_rand(n), *dx = pk_rand(n),
                         *want = xmalloc(sizeof *want * (size_t)(n + PK_GUARD));
                if (n > 1) y[1] = 0x8000u;  /* -0: no gradient passes */
                if (n > 2) dy[2] = 0x8000u; /* nor here under the rules */
                for (int64_t e = 3; e < n; e += 5) y[e] = h_bf16(cap);
                memcpy(want, dx, sizeof *want * (size_t)(n + PK_GUARD));
                for (int64_t e = 0; e < n; e++) {
                    const float yv = h_f32(y[e]), g = h_f32(dy[e]);
                    const int pass = k == LP_UN_RELU_DECONV ? g > 0.f
                                     : yv > 0.f && (k == LP_UN_RELU || (k == LP_UN_HARDTANH ? yv < cap : g > 0.f));
                    want[e] = h_bf16((acc ? h_f32(dx[e]) : 0.f) + (pass ? g : 0.f));
                }
                void *gy = pk_dev(&t, y, n), *gdy = pk_dev(&t, dy, n), *gdx = pk_dev(&t, dx, n);
                DUT_CALL(&t, packed_relu_bwd, k, cap, n, k == LP_UN_RELU_DECONV ? NULL : gy, gdy, gdx, acc);
                pk_check(&t, gdx, want, n, "dx", 0.0);
                tw_end(&t);
                free(y), free(dy), free(dx), free(want);
            }
    const int sh[][3] = {{2, 5, 21}, {1, 64, 196}, {3, 33, 1}, {1, 1, 7}};
    for (size_t i = 0; i < sizeof sh / sizeof *sh; i++) { /* NCHW fp32 -> packed, rounded to nearest even */
        const int n = sh[i][0], c = sh[i][1], hw = sh[i][2];
        const int64_t tot = (int64_t)n * c * hw;
        if (!tw_begin(&t, DUT_BF16, "pack", "n%d c%d hw%d", n, c, hw)) return;
        float *x = hrand(tot, -3, 3);
        uint16_t *y = pk_rand(tot), *want = xmalloc(sizeof *want * (size_t)(tot + PK_GUARD));
        memcpy(want, y, sizeof *want * (size_t)(tot + PK_GUARD));
        pk_pack(n, c, hw, x, want);
        float *gx = tw_dev(&t, x, tot);
        void *gy = pk_dev(&t, y, tot);
        DUT_CALL(&t, pack, n, c, hw, gx, gy);
        pk_check(&t, gy, want, tot, "y", 0.0);
        tw_end(&t);
        free(x), free(y), free(want);
    }
    for (size_t i = 0; i < sizeof sh / sizeof *sh; i++)
        for (int a = 0; a < 3; a++) {
            const int n = sh[i][0], c = sh[i][1], hw = sh[i][2];
            const int64_t tot = (int64_t)n * c * hw;
            const float act = ACTS[a];
            if (!tw_begin(&t, DUT_BF16, "unpack", "n%d c%d hw%d%s", n, c, hw, act_tag(act))) return;
            uint16_t *x = pk_rand(tot);
            void *gx = pk_dev(&t, x, tot);
            outbuf y;
            out_init(&t, &y, tot, -1, 1);
            for (int b = 0; b < n; b++)
                for (int ch = 0; ch < c; ch++)
                    for (int p = 0; p < hw; p++)
                        y.want[((int64_t)b * c + ch) * hw + p] = h_act(h_f32(x[((int64_t)b * hw + p) * c + ch]), act);
            DUT_CALL(&t, unpack, n, c, hw, gx, y.dev, act);
            out_check(&t, &y, "y", 0, TWIN_MEM_TOL);
            tw_end(&t);
            free(x);
        }
    /* A buffer off by one value (2 bytes) is refused with a status naming the problem,
     * never run: a GPU faults on the kernels' 32-bit accesses there. */
    if (!tw_begin(&t, DUT_BF16, "packed_add", "y misaligned by 2 bytes")) return;
    uint16_t *a = pk_rand(8);
    char *ga = pk_dev(&t, a, 8);
    if (ga) {
        lp_clear_error();
        const lp_status s = t.be->packed_add(6, ga, NULL, ga + 2, 0.f);
        const char *msg = lp_last_error();
        const int ok = s != LP_OK && msg && strstr(msg, "misaligned") && t.be->sync() == LP_OK;
        printf("%s  %-18s %-62s status %s, message \"%s\"\n", ok ? "PASS" : "FAIL", t.fn, t.label, lp_status_str(s),
               msg ? msg : "(null)");
        count(ok);
    } else if (!t.err) {
        printf("FAIL  %-18s %-62s no device buffer\n", t.fn, t.label);
        count(0);
    }
    tw_end(&t);
    free(a);
}

/* pool_fwd_packed against the CPU's pool_fwd of the same (bf16-exact) values: max is
 * exact; an average is summed in fp32 in either order, then rounded to bf16 when packed. */
static void packed_pool_case(const lp_pool_desc *d, const char *what) {
    const int64_t hw = (int64_t)d->h * d->w, ohw = (int64_t)d->oh * d->ow;
    const int64_t nx = (int64_t)d->n * d->c * hw, ny = (int64_t)d->n * d->c * ohw;
    float *x = hrand(nx, -1, 1), *yref = xmalloc(sizeof(float) * (size_t)ny);
    for (int64_t i = 0; i < nx; i++) x[i] = h_f32(h_bf16(x[i]));
    uint16_t *xp = pk_rand(nx), *yp = pk_rand(ny), *want = xmalloc(sizeof *want * (size_t)(ny + PK_GUARD));
    pk_pack(d->n, d->c, hw, x, xp);
    tw t;
    for (int packed_y = 0; packed_y < 2; packed_y++) {
        if (!tw_begin(&t, DUT_BF16, "pool_fwd_packed", "n%d c%d %dx%d %s%s", d->n, d->c, d->h, d->w, what,
                      packed_y ? " y packed" : " y fp32"))
            break;
        REF_CALL(&t, pool_fwd, d, x, yref);
        void *gx = pk_dev(&t, xp, nx), *gyp = pk_dev(&t, yp, ny);
        if (packed_y) {
            DUT_CALL(&t, pool_fwd_packed, d, gx, gyp, 1);
            memcpy(want, yp, sizeof *want * (size_t)(ny + PK_GUARD));
            pk_pack(d->n, d->c, ohw, yref, want);
            pk_check(&t, gyp, want, ny, "y", d->is_max ? 0.0 : 1e-3);
        } else {
            outbuf y;
            out_init(&t, &y, ny, -1, 1);
            memcpy(y.want, yref, sizeof(float) * (size_t)ny);
            DUT_CALL(&t, pool_fwd_packed, d, gx, y.dev, 0);
            out_check(&t, &y, "y", 0, d->is_max ? 0.0 : TWIN_FP32_TOL);
        }
        tw_end(&t);
    }
    /* pool_bwd_packed (a lean run's): dx packed, accumulating; x packed; dy packed or
     * fp32. Against the CPU's pool_bwd on the same values, then rounded once: the
     * sums' order differs, so a rounding may fall the other way. */
    float *dy = hrand(ny, -1, 1), *dxref = hrand(nx, -1, 1);
    for (int64_t i = 0; i < ny; i++) dy[i] = h_f32(h_bf16(dy[i]));
    for (int64_t i = 0; i < nx; i++) dxref[i] = h_f32(h_bf16(dxref[i]));
    uint16_t *dyp = pk_rand(ny), *dxp = pk_rand(nx), *dwant = xmalloc(sizeof *dwant * (size_t)(nx + PK_GUARD));
    pk_pack(d->n, d->c, ohw, dy, dyp);
    pk_pack(d->n, d->c, hw, dxref, dxp);
    memcpy(dwant, dxp, sizeof *dwant * (size_t)(nx + PK_GUARD));
    for (int v = 0; v < 3; v++) {
        const int packed_dy = v & 1, ov = v == 2;
        if (!tw_begin(&t, DUT_BF16, "pool_bwd_packed", "n%d c%d %dx%d %s%s%s", d->n, d->c, d->h, d->w, what,
                      packed_dy ? " dy packed" : " dy fp32", ov ? " overwrite" : ""))
            break;
        float *acc = hdup(dxref, nx);
        REF_CALL(&t, pool_bwd, d, x, yref, dy, acc, !ov);
        pk_pack(d->n, d->c, hw, acc, dwant);
        void *gx = pk_dev(&t, xp, nx), *gdx = pk_dev(&t, dxp, nx);
        void *gdy = packed_dy ? pk_dev(&t, dyp, ny) : (void *)tw_dev(&t, dy, ny);
        DUT_CALL(&t, pool_bwd_packed, d, gx, gdy, packed_dy, gdx, !ov);
        pk_check(&t, gdx, dwant, nx, "dx", 2e-3);
        tw_end(&t);
        free(acc);
    }
    free(dy), free(dxref), free(dyp), free(dxp), free(dwant);
    free(x), free(yref), free(xp), free(yp), free(want);
}

/* conv_fwd with a packed input and/or output against the same table with neither: the
 * same cuDNN plan on the same values (bf16 tensor cores; the tf32 fallback for shapes
 * without a bf16 kernel; explicit padding for asymmetric pads), so the packed output
 * is the unpacked one rounded to bf16 (a rounding tie may fall the other way): bound
 * 1e-3, run with cuDNN's fused call off. Where it is on (LOUPE_CUDNN_FUSE=1, the fused
 * variant of this test), a packed output with a bias is cuDNN's sum with the bias (in
 * bf16) rounded once, the unpacked one cuDNN's bf16 sum plus the bias: two roundings
 * apart (observed 2.5e-3 to 2.9e-3 on the emulator), so the bound is 6e-3. */
static double g_pk_conv_bound = 1e-3;
static void packed_conv_case(const lp_conv_desc *d) {
    char lab[160];
    const int64_t nx = (int64_t)d->n * d->c * d->h * d->w, ohw = (int64_t)d->oh * d->ow, ny = (int64_t)d->n * d->k * ohw;
    const int64_t nw = (int64_t)d->k * (d->c / d->groups) * d->kh * d->kw;
    float *x = hrand(nx, -1, 1), *w = hrand(nw, -1, 1), *b = hrand(d->k, -1, 1), *yref = xmalloc(sizeof(float) * (size_t)ny);
    for (int64_t i = 0; i < nx; i++) x[i] = h_f32(h_bf16(x[i])); /* what a packed x can hold */
    uint16_t *xp = pk_rand(nx), *yp = pk_rand(ny), *want = xmalloc(sizeof *want * (size_t)(ny + PK_GUARD));
    pk_pack(d->n, d->c, (int64_t)d->h * d->w, x, xp);
    static const struct { int xp, yp; float act; int bias; const char *tag; } v[] = {
        {1, 0, INFINITY, 1, " x packed +relu"}, {0, 1, 0, 1, " y packed"},  {1, 1, INFINITY, 1, " x,y packed +relu"},
        {1, 1, 0, 1, " x,y packed"},     {1, 1, INFINITY, 0, " x,y packed +relu b=NULL"}, {0, 1, 0, 0, " y packed b=NULL"},
        {1, 1, 0.5f, 1, " x,y packed +relu6(0.5)"}, {1, 0, 0.5f, 1, " x packed +relu6(0.5)"}};
    tw t;
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        conv_label(d, v[i].tag, lab, sizeof lab);
        if (!tw_begin(&t, DUT_BF16, "conv_fwd", "%s", lab)) break;
        lp_conv_desc e = *d;
        e.act = v[i].act;
        float *gx = tw_dev(&t, x, nx), *gw = tw_dev(&t, w, nw), *gb = tw_dev(&t, b, d->k), *gy = tw_dev(&t, NULL, ny);
        void *gxp = pk_dev(&t, xp, nx), *gyp = pk_dev(&t, yp, ny);
        float *bv = v[i].bias ? gb : NULL;
        DUT_CALL(&t, conv_fwd, &e, gx, gw, bv, gy); /* the unpacked reference */
        if (!t.err) tw_status(&t, t.be->download(yref, gy, sizeof(float) * (size_t)ny), t.be->name, "download");
        e.x_packed = v[i].xp, e.y_packed = v[i].yp;
        if (v[i].yp) {
            DUT_CALL(&t, conv_fwd, &e, e.x_packed ? gxp : gx, gw, bv, gyp);
            memcpy(want, yp, sizeof *want * (size_t)(ny + PK_GUARD));
            pk_pack(d->n, d->k, ohw, yref, want);
            pk_check(&t, gyp, want, ny, "y", g_pk_conv_bound);
        } else {
            outbuf y;
            out_init(&t, &y, ny, -1, 1);
            memcpy(y.want, yref, sizeof(float) * (size_t)ny);
            DUT_CALL(&t, conv_fwd, &e, gxp, gw, bv, y.dev);
            out_check(&t, &y, "y", 0, 1e-6);
        }
        tw_end(&t);
    }
    free(x), free(w), free(b), free(yref), free(xp), free(yp), free(want);
}

/* conv_bwd_data with a packed dy and/or dx (a lean run's) against the same table with
 * neither, on the same bf16-exact values, accumulating or overwriting. A packed dx gets
 * cuDNN's bf16 result added and rounded once, which is the unpacked result (dx + that
 * bf16 value, in fp32) rounded: equal but for ties (the tf32 fallback and explicit
 * padding accumulate in fp32 and round once too). */
static void packed_conv_bwd_case(const lp_conv_desc *d) {
    char lab[160];
    const int64_t nx = (int64_t)d->n * d->c * d->h * d->w, ohw = (int64_t)d->oh * d->ow, ny = (int64_t)d->n * d->k * ohw;
    const int64_t nw = (int64_t)d->k * (d->c / d->groups) * d->kh * d->kw;
    float *dy = hrand(ny, -1, 1), *w = hrand(nw, -1, 1), *dx0 = hrand(nx, -1, 1), *dxref = xmalloc(sizeof(float) * (size_t)nx);
    for (int64_t i = 0; i < ny; i++) dy[i] = h_f32(h_bf16(dy[i]));
    for (int64_t i = 0; i < nx; i++) dx0[i] = h_f32(h_bf16(dx0[i]));
    uint16_t *dyp = pk_rand(ny), *dxp = pk_rand(nx), *want = xmalloc(sizeof *want * (size_t)(nx + PK_GUARD));
    pk_pack(d->n, d->k, ohw, dy, dyp);
    pk_pack(d->n, d->c, (int64_t)d->h * d->w, dx0, dxp);
    static const struct { int xp, yp, ov; const char *tag; } v[] = {
        {0, 1, 0, " bwd dy packed"},          {1, 0, 0, " bwd dx packed"},
        {1, 1, 0, " bwd dx,dy packed"},       {1, 0, 1, " bwd dx packed overwrite"},
        {1, 1, 1, " bwd dx,dy packed overwrite"}};
    tw t;
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        conv_label(d, v[i].tag, lab, sizeof lab);
        if (!tw_begin(&t, DUT_BF16, "conv_bwd_data", "%s", lab)) break;
        lp_conv_desc e = *d;
        e.overwrite = v[i].ov;
        float *gdy = tw_dev(&t, dy, ny), *gw = tw_dev(&t, w, nw), *gdx = tw_dev(&t, dx0, nx);
        void *gdyp = pk_dev(&t, dyp, ny), *gdxp = pk_dev(&t, dxp, nx);
        DUT_CALL(&t, conv_bwd_data, &e, gdy, gw, gdx); /* the unpacked reference */
        if (!t.err) tw_status(&t, t.be->download(dxref, gdx, sizeof(float) * (size_t)nx), t.be->name, "download");
        e.x_packed = v[i].xp, e.y_packed = v[i].yp;
        if (v[i].xp) {
            DUT_CALL(&t, conv_bwd_data, &e, e.y_packed ? gdyp : (void *)gdy, gw, gdxp);
            memcpy(want, dxp, sizeof *want * (size_t)(nx + PK_GUARD));
            pk_pack(d->n, d->c, (int64_t)d->h * d->w, dxref, want);
            pk_check(&t, gdxp, want, nx, "dx", 1e-3);
        } else {
            outbuf dx;
            out_init(&t, &dx, nx, -1, 1);
            for (int64_t k = 0; k < nx; k++) dx.want[k] = dxref[k] - dx0[k] + dx.pre[k];
            DUT_CALL(&t, conv_bwd_data, &e, gdyp, gw, dx.dev);
            out_check(&t, &dx, "dx", 1, 1e-5);
        }
        tw_end(&t);
    }
    free(dy), free(w), free(dx0), free(dxref), free(dyp), free(dxp), free(want);
}

static void t_packed(void **state) {
    (void)state;
    group_begin("bf16 table: packed activations");
    if (g_selftest) {
        printf("SKIP  packed activations: the CPU table packs nothing (no twin to itself)\n");
    } else if (!DUT_BF16 || !DUT_BF16->packed || !DUT_BF16->packed_add || !DUT_BF16->unpack ||
               !DUT_BF16->pool_fwd_packed || !DUT_BF16->pack || !DUT_BF16->packed_relu_bwd || !DUT_BF16->pool_bwd_packed) {
        printf("FAIL  the bf16 table does not pack activations (packed %d)\n", DUT_BF16 ? DUT_BF16->packed : -1);
        count(0);
    } else {
        packed_kernels();
        const lp_conv_desc cv[] = {
            conv_make(2, 3, 13, 11, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1),    /* 3 input channels */
            conv_make(3, 8, 15, 16, 12, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1),   /* strided */
            conv_make(2, 4, 12, 13, 6, 3, 3, 2, 2, 0, 1, 1, 2, 1, 1, 1),    /* asymmetric pads */
            conv_make(2, 33, 14, 14, 33, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 33), /* depthwise */
            conv_make(3, 37, 7, 7, 19, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1),    /* odd channels, 1x1 */
            conv_make(2, 32, 14, 14, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1),
        };
        const char *fuse = getenv("LOUPE_CUDNN_FUSE");
        if (!fuse) setenv("LOUPE_CUDNN_FUSE", "0", 1); /* read as each plan decides: these plans */
        else if (!strcmp(fuse, "1")) g_pk_conv_bound = 6e-3;
        for (size_t i = 0; i < sizeof cv / sizeof *cv && !g_broken; i++) packed_conv_case(&cv[i]);
        if (!fuse) unsetenv("LOUPE_CUDNN_FUSE");
        for (size_t i = 0; i < sizeof cv / sizeof *cv && !g_broken; i++) packed_conv_bwd_case(&cv[i]);
        const struct { lp_pool_desc d; const char *what; } pl[] = {
            {pool_make(2, 5, 9, 11, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 0, 0), "max 3x3 s2 p1"},
            {pool_make(1, 64, 8, 8, 2, 2, 2, 2, 0, 0, 0, 0, 1, 1, 1, 0, 0), "max 2x2 s2"},
            {pool_make(2, 7, 10, 9, 3, 3, 1, 2, 1, 0, 2, 1, 2, 1, 1, 0, 1), "max 3x3 d2,1 ceil"},
            {pool_make(2, 6, 9, 9, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 0, 1, 0), "avg 3x3 s2 p1 incl pad"},
            {pool_make(3, 33, 7, 7, 7, 7, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0), "global avg"},
            {pool_make(2, 5, 9, 11, 9, 11, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0), "global max"},
        };
        for (size_t i = 0; i < sizeof pl / sizeof *pl && !g_broken; i++)
            if (pool_windows_ok(&pl[i].d)) packed_pool_case(&pl[i].d, pl[i].what);
            else printf("FAIL  pool case %s has an empty window (fix the test)\n", pl[i].what), count(0);
    }
    group_end("bf16 table: packed activations");
}

/* ---------------------------------------------------------------------------------
 * launches whose threads would write one address twice (a race on a GPU, invisible to
 * the one-thread-at-a-time emulator) are refused: broadcast into a broadcast shape,
 * copy2d into overlapping rows */

static void t_race_refused(void **state) {
    (void)state;
    group_begin("racy launches refused");
    if (g_selftest) printf("(self-test: the refusals are the CUDA launchers'; not run)\n");
    if (!g_broken && !g_selftest) {
        void *a = NULL, *b = NULL;
        int ok = DUT->alloc(64 * sizeof(float), &a) == LP_OK && DUT->alloc(64 * sizeof(float), &b) == LP_OK;
        if (ok) {
            lp_bcast bc = {2, {4, 8}, {0, 1}, {8, 1}}; /* x (a) broadcast over 4 rows: 4 writers per element */
            lp_clear_error();
            lp_status s1 = DUT->broadcast(&bc, b, a, 1.f, 0);
            const char *m1 = lp_last_error();
            int ok1 = s1 != LP_OK && m1 && strstr(m1, "lp_k_broadcast");
            printf("%s  %-18s %-62s %s \"%s\"\n", ok1 ? "PASS" : "FAIL", "broadcast", "into a broadcast x: refused",
                   lp_status_str(s1), m1 ? m1 : "");
            lp_clear_error();
            lp_status s2 = DUT->copy2d(4, 8, b, 8, a, 4, 0); /* rows of 8 every 4: overlapping */
            const char *m2 = lp_last_error();
            int ok2 = s2 != LP_OK && m2 && strstr(m2, "lp_k_copy2d");
            printf("%s  %-18s %-62s %s \"%s\"\n", ok2 ? "PASS" : "FAIL", "copy2d", "overlapping destination rows: refused",
                   lp_status_str(s2), m2 ? m2 : "");
            lp_clear_error();
            ok = ok1 && ok2;
        } else {
            printf("FAIL  could not allocate for the refusal cases: %s\n", lp_last_error());
        }
        count(ok);
        if (a) DUT->free(a);
        if (b) DUT->free(b);
    }
    group_end("racy launches refused");
}

/* ---------------------------------------------------------------------------------
 * out of memory: an absurd allocation fails cleanly, and the backend still works */

static void t_oom(void **state) {
    (void)state;
    group_begin("out of memory");
    /* The CUDA allocator's refusal; in the self-test the CPU's malloc would be asked for
     * 1 PiB, which sanitizer builds abort on instead of returning NULL. */
    if (g_selftest) printf("(self-test: the out-of-memory case is the CUDA allocator's; not run)\n");
    if (!g_broken && !g_selftest) {
        const size_t huge = (size_t)1 << 50;
        void *p = (void *)0x1;
        lp_clear_error();
        lp_status s = DUT->alloc(huge, &p);
        const char *msg = lp_last_error();
        /* the size in some unit: bytes, MiB, GiB, TiB, PiB */
        static const char *forms[] = {"1125899906842624", "1073741824", "1048576", "1024 TiB", "1024.0 TiB",
                                      "1 PiB", "1.0 PiB", "1.00 PiB"};
        int has_size = 0;
        for (size_t i = 0; i < sizeof forms / sizeof *forms; i++) has_size |= msg && strstr(msg, forms[i]) != NULL;
        int ok = s == LP_ERR_OOM && has_size && p == NULL;
        printf("%s  %-18s %-62s status %s, ptr %s, message \"%s\"\n", ok ? "PASS" : "FAIL", "alloc", "1<<50 bytes",
               lp_status_str(s), p == NULL ? "NULL" : "not NULL", msg ? msg : "(null)");
        if (s == LP_ERR_OOM && !has_size) printf("      (the message must name the size: 1125899906842624 bytes)\n");
        count(ok);
        if (s == LP_OK && p) DUT->free(p);
        /* afterwards: a round trip and an op still work */
        tw t;
        if (tw_begin(&t, DUT, "axpy", "after the failed allocation")) {
            float *x = hrand(1000, -1, 1);
            float *gx = tw_dev(&t, x, 1000);
            outbuf y;
            out_init(&t, &y, 1000, -1, 1);
            REF_CALL(&t, axpy, 1000, 0.5f, x, y.want);
            DUT_CALL(&t, axpy, 1000, 0.5f, gx, y.dev);
            out_check(&t, &y, "y", 1, TWIN_FP32_TOL);
            tw_end(&t);
            free(x);
        }
        lp_conv_desc d = conv_make(2, 3, 13, 11, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1);
        conv_case(DUT, " (after OOM)", &d, 1, 1, TWIN_CONV_TOL);
    }
    group_end("out of memory");
}

/* ---------------------------------------------------------------------------------
 * fuse_edge: a ReLU convolution whose bias lies far below every sum, so y is all zeros.
 * A sample of zeros cannot show a faulty fused call (its ReLU turns the NaN fill into
 * 0 too), so the decision is put off twice and the third call settles on ours ("off").
 * Every call's y must be right. LOUPE_CUDNN_FUSE=0: off at the first call; where the
 * deciding budget is spent (not in the fused variants, which set
 * LOUPE_TWIN_EXPECT_FUSION): untried at the first call. */

static int fusion_stats(lp_fusion_stats *f) {
    if (lp_device_fusion_stats(LP_DEVICE_CUDA, f) == LP_OK) return 1;
    printf("FAIL  lp_device_fusion_stats: %s\n", lp_last_error());
    return 0;
}

/* Decisions made between two readings of the stats, whatever their outcome. */
static int fusion_decided(const lp_fusion_stats *a, const lp_fusion_stats *b) {
    return b->fused - a->fused + b->slower - a->slower + b->refused - a->refused + b->mismatched - a->mismatched +
           b->off - a->off + b->untried - a->untried;
}

static void t_fuse_edge(void **state) {
    (void)state;
    group_begin("fused conv, sample of zeros");
    if (g_selftest) printf("(self-test: the decision is the CUDA backend's; not run)\n");
    lp_conv_desc d = conv_make(3, 7, 11, 13, 9, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1);
    d.act = INFINITY;
    const int64_t nx = (int64_t)d.n * d.c * d.h * d.w, ny = (int64_t)d.n * d.k * d.oh * d.ow;
    const int64_t nw = (int64_t)d.k * d.c * d.kh * d.kw;
    float *x = hrand(nx, -1, 1), *w = hrand(nw, -1, 1), *b = hrand(d.k, -1e4f, -1e4f + 1);
    const char *fs = getenv("LOUPE_CUDNN_FUSE"), *ex = getenv("LOUPE_TWIN_EXPECT_FUSION");
    const int never = fs && !strcmp(fs, "0"), strict = ex && *ex;
    char lab[160];
    conv_label(&d, " bias -1e4 +relu", lab, sizeof lab);
    int untried = 0;
    for (int call = 1; call <= 4 && !g_broken && !g_selftest; call++) {
        lp_fusion_stats f0, f1;
        if (!fusion_stats(&f0)) {
            count(0);
            break;
        }
        tw t;
        if (tw_begin(&t, DUT, "conv_fwd", "%s, call %d", lab, call)) {
            float *gx = tw_dev(&t, x, nx), *gw = tw_dev(&t, w, nw), *gb = tw_dev(&t, b, d.k);
            outbuf y;
            out_init(&t, &y, ny, -1, 1);
            REF_CALL(&t, conv_fwd, &d, x, w, b, y.want);
            DUT_CALL(&t, conv_fwd, &d, gx, gw, gb, y.dev);
            out_check(&t, &y, "y", 0, TWIN_CONV_TOL);
            tw_end(&t);
        }
        if (!fusion_stats(&f1)) {
            count(0);
            break;
        }
        const int d_off = f1.off - f0.off, d_untried = f1.untried - f0.untried, d_all = fusion_decided(&f0, &f1);
        if (call == 1 && !never && !strict && d_untried == 1 && d_all == 1) untried = 1;
        const int settles = untried ? 0 : never ? call == 1 : call == 3;
        const int ok = untried ? call > 1 || d_untried == 1 : settles ? d_off == 1 && d_all == 1 : d_all == 0;
        printf("%s  %-18s %-62s %+d off, %+d in all\n", ok ? "PASS" : "FAIL", "fusion decision", lab, d_off, d_all);
        count(ok);
    }
    if (untried) printf("(the deciding budget was spent: the shape stayed on Loupe's path untried)\n");
    free(x), free(w), free(b);
    group_end("fused conv, sample of zeros");
}

/* ---------------------------------------------------------------------------------
 * fuse_caps: capped ReLUs (ReLU6's Clip) with two caps, on two shapes. A shape decides
 * for the cap of its first call; a call with another cap takes Loupe's path and decides
 * nothing; shapes decided for different caps, called in turn, each get their own cap
 * (cuDNN's one activation descriptor for them is set anew). Every y against the CPU,
 * in fp32 and in bf16 with packed ends. */

static void t_fuse_caps(void **state) {
    (void)state;
    group_begin("fused conv, capped ReLU");
    if (g_selftest) printf("(self-test: the decisions are the CUDA backend's; not run)\n");
    const lp_conv_desc shapes[2] = {conv_make(2, 6, 9, 11, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1),
                                    conv_make(1, 3, 10, 7, 5, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1)};
    /* (shape, cap, decisions the call makes) in call order */
    static const struct { int s; float cap; int decides; } calls[] = {
        {0, 0.5f, 1}, {0, 0.25f, 0}, {1, 0.25f, 1}, {0, 0.5f, 0}, {1, 0.25f, 0}, {1, 0.5f, 0}, {0, 0.5f, 0}};
    for (int packed = 0; packed < 2 && !g_selftest; packed++) {
        float *x[2], *w[2], *b[2];
        for (int i = 0; i < 2; i++) { /* bf16-exact values, so both precisions see the same inputs */
            const lp_conv_desc *d = &shapes[i];
            const int64_t nx = (int64_t)d->n * d->c * d->h * d->w, nw = (int64_t)d->k * d->c * d->kh * d->kw;
            x[i] = hrand(nx, -1, 1), w[i] = hrand(nw, -1, 1), b[i] = hrand(d->k, -1, 1);
            for (int64_t k = 0; k < nx; k++) x[i][k] = h_f32(h_bf16(x[i][k]));
            for (int64_t k = 0; k < nw; k++) w[i][k] = h_f32(h_bf16(w[i][k]));
            for (int64_t k = 0; k < d->k; k++) b[i][k] = h_f32(h_bf16(b[i][k]));
        }
        for (size_t k = 0; k < sizeof calls / sizeof *calls && !g_broken; k++) {
            const int i = calls[k].s;
            lp_conv_desc d = shapes[i];
            d.act = calls[k].cap;
            const int64_t nx = (int64_t)d.n * d.c * d.h * d.w, nw = (int64_t)d.k * d.c * d.kh * d.kw;
            const int64_t hw = (int64_t)d.h * d.w, ohw = (int64_t)d.oh * d.ow, ny = (int64_t)d.n * d.k * ohw;
            char lab[160], extra[64];
            snprintf(extra, sizeof extra, " +relu6(%g)%s, call %zu", calls[k].cap, packed ? " x,y packed" : "", k + 1);
            conv_label(&d, extra, lab, sizeof lab);
            lp_fusion_stats f0, f1;
            tw t;
            if (!fusion_stats(&f0) || !tw_begin(&t, packed ? DUT_BF16 : DUT, "conv_fwd", "%s", lab)) {
                count(0);
                break;
            }
            float *gw = tw_dev(&t, w[i], nw), *gb = tw_dev(&t, b[i], d.k);
            outbuf y;
            out_init(&t, &y, ny, -1, 1);
            REF_CALL(&t, conv_fwd, &d, x[i], w[i], b[i], y.want);
            if (packed) {
                uint16_t *xp = pk_rand(nx), *want = pk_rand(ny);
                pk_pack(d.n, d.c, hw, x[i], xp);
                void *gxp = pk_dev(&t, xp, nx), *gyp = pk_dev(&t, want, ny);
                pk_pack(d.n, d.k, ohw, y.want, want);
                d.x_packed = d.y_packed = 1;
                DUT_CALL(&t, conv_fwd, &d, gxp, gw, gb, gyp);
                pk_check(&t, gyp, want, ny, "y", TWIN_BF16_TOL); /* ours rounds twice, the fused call once */
                free(xp), free(want);
            } else {
                float *gx = tw_dev(&t, x[i], nx);
                DUT_CALL(&t, conv_fwd, &d, gx, gw, gb, y.dev);
                out_check(&t, &y, "y", 0, TWIN_CONV_TOL);
            }
            tw_end(&t);
            const int decided = fusion_stats(&f1) ? fusion_decided(&f0, &f1) : -1, ok = decided == calls[k].decides;
            printf("%s  %-18s %-62s %d decided, %d expected\n", ok ? "PASS" : "FAIL", "fusion decision", lab, decided,
                   calls[k].decides);
            count(ok);
        }
        for (int i = 0; i < 2; i++) free(x[i]), free(w[i]), free(b[i]);
    }
    group_end("fused conv, capped ReLU");
}

/* ---------------------------------------------------------------------------------
 * fuse_capture: a fused convolution captured in a CUDA graph and replayed gives the
 * right y, and the shape stays fused. Where the fused call fails while capturing (the
 * emulator's LOUPE_EMU_FUSED_CAPTURE_FAIL=1), Loupe's path goes into the graph instead
 * and serves the shape from then on (refused): the pass keeps its graph. A GPU's cuDNN
 * may do either; the line says which. */

static void t_fuse_capture(void **state) {
    (void)state;
    group_begin("fused conv in a CUDA graph");
    const char *fs = getenv("LOUPE_CUDNN_FUSE"), *cf = getenv("LOUPE_EMU_FUSED_CAPTURE_FAIL");
    const char *ex = getenv("LOUPE_TWIN_EXPECT_FUSION");
    const int forced = fs && !strcmp(fs, "1"), cap_fail = cf && !strcmp(cf, "1"), expect_set = ex && *ex;
    if (g_selftest || !forced) printf("(needs the CUDA backend and LOUPE_CUDNN_FUSE=1; not run)\n");
    lp_conv_desc d = conv_make(2, 5, 9, 10, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1);
    d.act = INFINITY;
    const int64_t nx = (int64_t)d.n * d.c * d.h * d.w, ny = (int64_t)d.n * d.k * d.oh * d.ow;
    const int64_t nw = (int64_t)d.k * d.c * d.kh * d.kw;
    float *x = hrand(nx, -1, 1), *w = hrand(nw, -1, 1), *b = hrand(d.k, -1, 1);
    char lab[160];
    conv_label(&d, " bias +relu", lab, sizeof lab);
    tw t;
    if (!g_selftest && forced && tw_begin(&t, DUT, "conv_fwd", "%s, in a graph", lab)) {
        float *gx = tw_dev(&t, x, nx), *gw = tw_dev(&t, w, nw), *gb = tw_dev(&t, b, d.k);
        outbuf y;
        out_init(&t, &y, ny, -1, 1);
        REF_CALL(&t, conv_fwd, &d, x, w, b, y.want);
        DUT_CALL(&t, conv_fwd, &d, gx, gw, gb, y.dev); /* decides: fused */
        lp_fusion_stats f0 = {0}, f1 = {0};
        if (!t.err) tw_status(&t, DUT->fill(ny, NAN, y.dev), "cuda", "fill"); /* the replay must write all of y */
        int ok = !t.err && fusion_stats(&f0) && lp_cuda_graph_begin() == LP_OK;
        lp_graph *g = NULL;
        if (ok) {
            const lp_status sc = DUT->conv_fwd(&d, gx, gw, gb, y.dev);
            const lp_status se = lp_cuda_graph_end(&g);
            ok = se == LP_OK && sc == LP_OK && g;
            printf("%s  %-18s %-62s capture %s, %s\n", ok ? "PASS" : "FAIL", "conv_fwd graph", lab,
                   sc == LP_OK ? "taken" : "refused", g ? "a graph" : "no graph");
            lp_clear_error();
            if (g) tw_status(&t, lp_cuda_graph_launch(g), "cuda", "graph launch");
            else DUT_CALL(&t, conv_fwd, &d, gx, gw, gb, y.dev); /* outside the capture */
            tw_status(&t, DUT->sync(), "cuda", "sync");
            lp_cuda_graph_free(g);
        }
        /* the shape moved from fused to refused: as the knob says on the emulator, where
         * LOUPE_TWIN_EXPECT_FUSION is set; on a GPU either way (the line says which) */
        const int have = fusion_stats(&f1), moved = f0.fused - f1.fused;
        ok = ok && have && f0.fused > 0 && (moved == 0 || moved == 1) && f1.refused == f0.refused + moved &&
             (cap_fail ? moved == 1 : !expect_set || moved == 0);
        printf("%s  %-18s %-62s %+d fused, %+d refused%s\n", ok ? "PASS" : "FAIL",
               moved ? "fusion given up" : "fusion kept", lab, f1.fused - f0.fused, f1.refused - f0.refused,
               moved ? " (cuDNN's fused call failed in the capture: Loupe's path went into the graph)" : "");
        count(ok);
        out_check(&t, &y, "y", 0, TWIN_CONV_TOL);
        tw_end(&t);
    }
    free(x), free(w), free(b);
    group_end("fused conv in a CUDA graph");
}

/* ---------------------------------------------------------------------------------
 * cuDNN's fused convolution + bias + activation: how the forward shapes were decided
 * (the conv_fwd checks above ran whichever way). LOUPE_TWIN_EXPECT_FUSION=fused: some
 * fused and none refused, mismatched or untried (with LOUPE_CUDNN_FUSE=1, every check then ran
 * fused where cuDNN offers it); =refused: the same, but some refused (the emulator's
 * cuDNN without a fused capped ReLU, LOUPE_EMU_FUSED_NO_CLIP=1); =none: none fused; =mismatched: none fused, some caught
 * mismatching (the emulator's faulty cuDNN, LOUPE_EMU_FUSED_FAULT=1); =budget: one
 * decided, the rest untried (LOUPE_CUDNN_FUSE_BUDGET_S=0); =off: every decision failed
 * or was off (the emulator's failing events, LOUPE_EMU_EVENT_FAIL=1), none fused. */

static void fusion_check(void) {
    if (g_selftest) return;
    lp_fusion_stats f;
    if (!fusion_stats(&f)) {
        count(0);
        return;
    }
    printf("cuDNN fused conv + bias + act: %d fused, %d slower, %d refused, %d mismatched, %d off, "
           "%d untried (shape x activation); timed %.3f ms fused vs %.3f ms ours\n",
           f.fused, f.slower, f.refused, f.mismatched, f.off, f.untried, f.ms_fused, f.ms_ours);
    const char *ex = getenv("LOUPE_TWIN_EXPECT_FUSION");
    if (!ex || !*ex) return;
    int ok;
    if (!strcmp(ex, "fused")) ok = f.fused > 0 && !f.refused && !f.mismatched && !f.untried;
    else if (!strcmp(ex, "refused")) ok = f.fused > 0 && f.refused > 0 && !f.mismatched && !f.untried;
    else if (!strcmp(ex, "none")) ok = f.fused == 0;
    else if (!strcmp(ex, "mismatched")) ok = f.fused == 0 && f.mismatched > 0 && !f.untried;
    else if (!strcmp(ex, "budget")) ok = f.fused + f.slower + f.refused + f.mismatched == 1 && f.untried > 0;
    else if (!strcmp(ex, "off")) ok = f.fused + f.slower + f.refused + f.mismatched + f.untried == 0 && f.off > 0;
    else ok = 0;
    printf("%s  fusion as LOUPE_TWIN_EXPECT_FUSION=%s expects\n", ok ? "ok  " : "FAIL", ex);
    count(ok);
}

/* ---------------------------------------------------------------------------------
 * main */

int main(void) {
    const char *st = getenv("LOUPE_TWIN_SELFTEST");
    g_selftest = st && *st && strcmp(st, "0") != 0;
    const char *seed = getenv("LOUPE_TWIN_SEED");
    g_rng.s = seed && *seed ? strtoull(seed, NULL, 0) : 20261128;
    REF = lp_backend_cpu();
    if (g_selftest) {
        DUT = DUT_TF32 = DUT_BF16 = lp_backend_cpu();
        printf("backend twins: SELF-TEST, the CPU table against itself (every bound 0), seed %llu\n",
               (unsigned long long)g_rng.s);
    } else {
#ifndef LOUPE_HAVE_CUDA
        printf("SKIPPED: this build has no CUDA backend (configure with -DLOUPE_CUDA=ON)\n");
        return 0;
#else
        if (lp_cuda_device_count() <= 0) {
            printf("SKIPPED: no CUDA device is present (lp_cuda_device_count() = 0)\n");
            return 0;
        }
        DUT = lp_backend_cuda();
        if (!DUT) {
            printf("FAIL: a CUDA device is present but lp_backend_cuda() returned NULL: %s\n", lp_last_error());
            return 1;
        }
        DUT_TF32 = lp_backend_cuda_precision(LP_PREC_TF32);
        DUT_BF16 = lp_backend_cuda_precision(LP_PREC_BF16);
        printf("backend twins: %s (%s) against cpu, seed %llu\n", DUT->name, lp_cuda_device_name(),
               (unsigned long long)g_rng.s);
#endif
    }
    printf("bounds (relative L2): fp32 %.0e, conv %.0e, gemm %.0e, data movement exact, tf32 %.0e, bf16 %.0e; "
           "\"(inc)\": of the increment over a pre-filled destination\n",
           TWIN_FP32_TOL, TWIN_CONV_TOL, TWIN_GEMM_TOL, TWIN_TF32_TOL, TWIN_BF16_TOL);
    fflush(stdout);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_memory),  cmocka_unit_test(t_conv),      cmocka_unit_test(t_gemm),
        cmocka_unit_test(t_pool),    cmocka_unit_test(t_unary),     cmocka_unit_test(t_binary),
        cmocka_unit_test(t_reduce),  cmocka_unit_test(t_softmax),   cmocka_unit_test(t_transpose),
        cmocka_unit_test(t_copy2d),  cmocka_unit_test(t_slice),     cmocka_unit_test(t_pad),
        cmocka_unit_test(t_lrn),     cmocka_unit_test(t_affine),    cmocka_unit_test(t_blas1),
        cmocka_unit_test(t_tf32),    cmocka_unit_test(t_bf16),      cmocka_unit_test(t_packed),
        cmocka_unit_test(t_race_refused), cmocka_unit_test(t_oom), cmocka_unit_test(t_fuse_edge),
        cmocka_unit_test(t_fuse_caps), cmocka_unit_test(t_fuse_capture),
    };
    /* LOUPE_TWIN_ONLY="conv tf32": only those groups (t_conv, t_tf32) */
    const char *only = getenv("LOUPE_TWIN_ONLY");
    struct CMUnitTest run[sizeof tests / sizeof *tests];
    size_t n_run = 0;
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
        const char *name = tests[i].name + 2; /* past "t_" */
        int keep = !only || !*only;
        for (const char *o = only; !keep && o && *o;) {
            const size_t len = strcspn(o, " ,");
            keep = len == strlen(name) && !strncmp(o, name, len);
            o += len + strspn(o + len, " ,");
        }
        if (keep) run[n_run++] = tests[i];
    }
    if (!n_run) {
        printf("FAIL: LOUPE_TWIN_ONLY=\"%s\" names no group\n", only);
        return 1;
    }
    double t0 = now_s();
    int failed_groups = _cmocka_run_group_tests("backend twins", run, n_run, NULL, NULL);
    fusion_check();
    printf("backend twins: %d of %d checks failed, %d groups failed (%.1f s)%s\n", g_failures, g_checks,
           failed_groups, now_s() - t0, g_broken ? "; the device stopped working, later cases did not run" : "");
    return (failed_groups || g_failures) ? 1 : 0;
}
