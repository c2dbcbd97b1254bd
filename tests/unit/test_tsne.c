/* test_tsne.c — t-SNE pieces against references: joint P of a fixed kNN graph and
 * trustworthiness against scikit-learn (fixtures from tests/tsne/make_fixtures.py),
 * Barnes-Hut repulsion against the exact O(N^2) forces, attraction against a dense
 * product, exact kNN against brute force, and whole runs (separation, determinism,
 * bad input). `test_tsne --fixtures DIR` runs only the sklearn comparisons, which
 * then fail if the fixtures are missing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"
#include "tsne/tsne_internal.h"

static const char *g_fixtures;
static int g_require;

static lp_tensor *load_fixture(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", g_fixtures, name);
    lp_tensor *t = NULL;
    if (!tu_exists(path)) {
        if (g_require) fail_msg("fixture %s is missing (run tests/tsne/make_fixtures.py)", path);
        return NULL;
    }
    if (lp_npy_load(path, &t) != LP_OK) fail_msg("%s: %s", path, lp_last_error());
    return t;
}

/* P for sklearn's fixed kNN graph, to 1e-5 relative. */
static void test_p_vs_sklearn(void **state) {
    (void)state;
    lp_tensor *ti = load_fixture("knn_idx.npy"), *td = load_fixture("knn_d2.npy"), *tp = load_fixture("p.npy"),
              *tq = load_fixture("perplexity.npy");
    if (!ti || !td || !tp || !tq) {
        printf("SKIPPED: sklearn fixtures not in %s (the tsne.sklearn test makes them)\n", g_fixtures);
        skip();
    }
    int64_t n = ti->shape[0];
    int k = (int)ti->shape[1];
    double perp = ((float *)tq->data)[0];
    int32_t *idx = malloc((size_t)n * k * sizeof(int32_t));
    float *cp = malloc((size_t)n * k * sizeof(float));
    for (int64_t a = 0; a < n * k; a++) idx[a] = (int32_t)((float *)ti->data)[a];
    assert_int_equal(_lp_cpu_tsne_perplexity(td->data, n, k, perp, cp), LP_OK);
    lp_tsne_csr p;
    assert_int_equal(lp_tsne_symmetrize(n, k, idx, cp, &p), LP_OK);
    float *dense = calloc((size_t)n * n, sizeof(float));
    for (int64_t i = 0; i < n; i++)
        for (int64_t a = p.rowptr[i]; a < p.rowptr[i + 1]; a++) dense[i * n + p.col[a]] = p.val[a];
    int64_t bad = tu_report_mismatch("P vs sklearn", dense, tp->data, n * n, 1e-12, 1e-5, 8);
    printf("P vs sklearn: %lld x %lld, nnz %lld, max abs diff %.3g, rel L2 %.3g\n", (long long)n, (long long)n,
           (long long)p.nnz, tu_max_abs(dense, tp->data, n * n), tu_rel_l2(dense, tp->data, n * n));
    assert_int_equal(bad, 0);
    lp_tsne_csr_free(&p);
    free(dense), free(idx), free(cp);
    lp_tensor_free(ti), lp_tensor_free(td), lp_tensor_free(tp), lp_tensor_free(tq);
}

static void test_trust_vs_sklearn(void **state) {
    (void)state;
    lp_tensor *x = load_fixture("x.npy"), *y = load_fixture("y.npy"), *t = load_fixture("trust.npy");
    if (!x || !y || !t) {
        printf("SKIPPED: sklearn fixtures not in %s\n", g_fixtures);
        skip();
    }
    lp_tsne_quality q;
    assert_int_equal(lp_tsne_metrics(x, y, NULL, 10, 0, 1, &q), LP_OK);
    double want = ((float *)t->data)[0];
    printf("trustworthiness: %.6f, sklearn %.6f\n", q.trustworthiness, want);
    assert_true(fabs(q.trustworthiness - want) < 1e-5);
    assert_int_equal(q.sampled, x->shape[0]);
    lp_tensor_free(x), lp_tensor_free(y), lp_tensor_free(t);
}

/* Points like a t-SNE embedding: clusters of different sizes and spreads. */
static float *embedding_like(int64_t n, int dims, uint64_t seed) {
    tu_rng r = {seed};
    float *y = malloc((size_t)n * dims * sizeof(float));
    float ctr[12][3];
    for (int c = 0; c < 12; c++)
        for (int d = 0; d < 3; d++) ctr[c][d] = tu_uniform(&r, -40, 40);
    for (int64_t i = 0; i < n; i++) {
        int c = (int)(tu_next(&r) % 12);
        float s = 0.5f + c * 0.5f;
        for (int d = 0; d < dims; d++) y[i * dims + d] = ctr[c][d] + s * tu_normal(&r);
    }
    return y;
}

static void check_bh(int64_t n, int dims, double theta, double tol_f, double tol_z) {
    float *y = embedding_like(n, dims, 11 + dims);
    double *ref = malloc((size_t)n * dims * sizeof(double)), zr, zb;
    float *rep = malloc((size_t)n * dims * sizeof(float));
    _lp_cpu_tsne_repulsion_exact(n, dims, y, ref, &zr);
    assert_int_equal(_lp_cpu_tsne_repulsion_bh(n, dims, theta, y, rep, &zb), LP_OK);
    /* Forces as the gradient sees them: rep / Z. */
    double num = 0, den = 0, maxrel = 0;
    int64_t worst = 0;
    for (int64_t i = 0; i < n * dims; i++) {
        double a = rep[i] / zb, b = ref[i] / zr;
        num += (a - b) * (a - b), den += b * b;
        if (fabs(a - b) > maxrel) maxrel = fabs(a - b), worst = i;
    }
    double rel = sqrt(num / den), zrel = fabs(zb - zr) / zr;
    printf("BH %dD n=%lld theta=%.2f: force rel L2 %.3g (worst coord %lld: %.4g vs %.4g), Z rel %.3g\n", dims,
           (long long)n, theta, rel, (long long)worst, rep[worst] / zb, ref[worst] / zr, zrel);
    assert_true(rel <= tol_f);
    assert_true(zrel <= tol_z);
    free(y), free(ref), free(rep);
}

static void test_bh_exact_at_theta0(void **state) {
    (void)state;
    check_bh(2000, 2, 0.0, 1e-6, 1e-9);
    check_bh(1500, 3, 0.0, 1e-6, 1e-9);
}

static void test_bh_within_theta(void **state) {
    (void)state;
    /* Error grows with theta: the bounds are what theta 0.5 gives on clustered data
     * (about 1% on forces, 0.5% on Z) with a safety factor, and far below theta 1.2's. */
    check_bh(4000, 2, 0.5, 2e-2, 1e-2);
    check_bh(3000, 3, 0.5, 2e-2, 1e-2);
    check_bh(4000, 2, 0.2, 5e-3, 1e-3);
}

static void test_attraction_dense(void **state) {
    (void)state;
    const int64_t n = 300;
    for (int dims = 2; dims <= 3; dims++) {
        tu_rng r = {99};
        float *y = embedding_like(n, dims, 5);
        double *pd = calloc((size_t)n * n, sizeof(double));
        int32_t *idx = malloc((size_t)n * 7 * sizeof(int32_t));
        float *cp = malloc((size_t)n * 7 * sizeof(float));
        for (int64_t i = 0; i < n; i++)
            for (int a = 0; a < 7; a++) {
                int32_t j;
                int dup;
                do {
                    j = (int32_t)(tu_next(&r) % n);
                    dup = j == i;
                    for (int b = 0; b < a; b++) dup |= idx[i * 7 + b] == j;
                } while (dup);
                idx[i * 7 + a] = j;
                cp[i * 7 + a] = tu_uniform(&r, 0.01f, 1.0f);
            }
        lp_tsne_csr p;
        assert_int_equal(lp_tsne_symmetrize(n, 7, idx, cp, &p), LP_OK);
        double tot = 0;
        for (int64_t i = 0; i < n; i++)
            for (int a = 0; a < 7; a++) {
                pd[i * n + idx[i * 7 + a]] += cp[i * 7 + a];
                pd[idx[i * 7 + a] * n + i] += cp[i * 7 + a];
                tot += 2 * cp[i * 7 + a];
            }
        double *ref = calloc((size_t)n * dims, sizeof(double)), plw_ref = 0, plw;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) {
                if (pd[i * n + j] == 0) continue;
                double pij = pd[i * n + j] / tot, d2 = 0;
                for (int d = 0; d < dims; d++) d2 += pow((double)y[i * dims + d] - y[j * dims + d], 2);
                for (int d = 0; d < dims; d++) ref[i * dims + d] += pij / (1 + d2) * ((double)y[i * dims + d] - y[j * dims + d]);
                plw_ref -= pij * log(1 + d2);
            }
        float *attr = malloc((size_t)n * dims * sizeof(float));
        assert_int_equal(_lp_cpu_tsne_attraction(n, dims, p.rowptr, p.col, p.val, y, attr, &plw), LP_OK);
        double rel = tu_rel_l2_d(attr, ref, n * dims);
        printf("attraction %dD vs dense: rel L2 %.3g, sum p log w %.8g vs %.8g\n", dims, rel, plw, plw_ref);
        assert_true(rel < 1e-6);
        assert_true(fabs(plw - plw_ref) <= 1e-6 * fabs(plw_ref));
        lp_tsne_csr_free(&p);
        free(y), free(pd), free(idx), free(cp), free(ref), free(attr);
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void test_knn_brute(void **state) {
    (void)state;
    /* Three 1536-point tiles, the last partial: diagonal, row and column merges. */
    const int64_t n = 3300, d = 37;
    const int k = 15;
    tu_rng r = {3};
    float *x = malloc((size_t)n * d * sizeof(float));
    for (int64_t a = 0; a < n * d; a++) x[a] = tu_normal(&r) + 5.0f;
    int32_t *idx = malloc((size_t)n * k * sizeof(int32_t));
    float *d2 = malloc((size_t)n * k * sizeof(float));
    assert_int_equal(_lp_tsne_knn(lp_tsne_kernels_cpu(), lp_backend_cpu(), x, n, d, k, idx, d2), LP_OK);
    double *all = malloc((size_t)n * sizeof(double));
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < n; j++) {
            double s = 0;
            for (int64_t t = 0; t < d; t++) s += pow((double)x[i * d + t] - x[j * d + t], 2);
            all[j] = j == i ? INFINITY : s;
        }
        /* Every listed distance must be the brute-force one of the same rank. */
        qsort(all, (size_t)n, sizeof(double), cmp_double);
        for (int a = 0; a < k; a++)
            if (fabs(d2[i * k + a] - all[a]) > 1e-4 * all[a]) {
                if (bad < 5) fprintf(stderr, "knn row %lld rank %d: got %g want %g\n", (long long)i, a, d2[i * k + a], all[a]);
                bad++;
            }
        for (int a = 0; a < k; a++) assert_true(idx[i * k + a] != i);
    }
    assert_int_equal(bad, 0);
    free(x), free(idx), free(d2), free(all);
}

/* Gaussian blobs in 20-D with labels. */
static lp_tensor *blobs(int64_t n, int64_t d, int classes, int64_t *labels, uint64_t seed) {
    int64_t shape[2] = {n, d};
    lp_tensor *x;
    assert_int_equal(lp_tensor_new(&x, LP_DEVICE_CPU, LP_F32, 2, shape), LP_OK);
    tu_rng r = {seed};
    float ctr[16][64];
    for (int c = 0; c < classes; c++)
        for (int64_t t = 0; t < d; t++) ctr[c][t] = 6.0f * tu_normal(&r);
    float *p = x->data;
    for (int64_t i = 0; i < n; i++) {
        int c = (int)(i % classes);
        labels[i] = c;
        for (int64_t t = 0; t < d; t++) p[i * d + t] = ctr[c][t] + tu_normal(&r);
    }
    return x;
}

static int count_calls(const lp_tsne_progress *p, void *user) {
    int *calls = user;
    (*calls)++;
    assert_true(isfinite(p->kl));
    assert_true(p->iter <= p->iters);
    return 0;
}

static void test_run_blobs(void **state) {
    (void)state;
    const int64_t n = 600;
    int64_t *labels = malloc(n * sizeof(int64_t));
    lp_tensor *x = blobs(n, 20, 6, labels, 17);
    for (int dims = 2; dims <= 3; dims++) {
        lp_tsne_opts o;
        lp_tsne_opts_default(&o);
        o.dims = dims;
        o.iters = 500;
        int calls = 0;
        o.callback = count_calls;
        o.user = &calls;
        o.callback_every = 50;
        lp_tensor *y = NULL, *y2 = NULL;
        lp_tsne_stats st;
        assert_int_equal(lp_tsne(x, &o, &y, &st), LP_OK);
        assert_int_equal(calls, 10);
        assert_int_equal(st.iters_done, 500);
        assert_int_equal(st.k, 90);
        lp_tsne_quality q;
        assert_int_equal(lp_tsne_metrics(x, y, labels, 10, 0, 1, &q), LP_OK);
        printf("blobs %dD: KL %.4f, trustworthiness %.4f, kNN kept %.3f, kNN accuracy %.3f (%.2fs)\n", dims, st.kl,
               q.trustworthiness, q.knn_kept, q.knn_accuracy, st.seconds_opt);
        assert_true(q.knn_accuracy > 0.99);
        assert_true(q.trustworthiness > 0.9);
        assert_true(st.kl > 0 && st.kl < 3);
        /* Same seed, same bits. */
        o.callback = NULL;
        assert_int_equal(lp_tsne(x, &o, &y2, NULL), LP_OK);
        assert_memory_equal(y->data, y2->data, y->nbytes);
        lp_tensor_free(y), lp_tensor_free(y2);
    }
    lp_tensor_free(x);
    free(labels);
}

static void expect_fail(const lp_tensor *x, const lp_tsne_opts *o, lp_status want, const char *needle) {
    lp_tensor *y = NULL;
    lp_status s = lp_tsne(x, o, &y, NULL);
    printf("expected failure: %s\n", lp_last_error());
    assert_int_equal(s, want);
    assert_null(y);
    assert_non_null(strstr(lp_last_error(), needle));
}

static void test_bad_input(void **state) {
    (void)state;
    int64_t labels[200];
    lp_tensor *x = blobs(200, 5, 4, labels, 1);
    lp_tsne_opts o;
    lp_tsne_opts_default(&o);
    o.perplexity = 70; /* needs 210 neighbours of 200 points */
    expect_fail(x, &o, LP_ERR_ARG, "perplexity 70 is too large for 200 points");
    lp_tsne_opts_default(&o);
    o.dims = 4;
    expect_fail(x, &o, LP_ERR_ARG, "dims must be 2 or 3");
    lp_tsne_opts_default(&o);
    ((float *)x->data)[7 * 5 + 2] = NAN;
    expect_fail(x, &o, LP_ERR_ARG, "row 7");
    ((float *)x->data)[7 * 5 + 2] = INFINITY;
    expect_fail(x, &o, LP_ERR_ARG, "Inf");
    lp_tensor_free(x);
    int64_t shape[2] = {3, 5};
    assert_int_equal(lp_tensor_new(&x, LP_DEVICE_CPU, LP_F32, 2, shape), LP_OK);
    expect_fail(x, &o, LP_ERR_SHAPE, "at least 4");
    lp_tensor_free(x);
}

/* The scatter: points land where the frame puts them, in their label's colour, on
 * white; the SVG holds one circle per point and the escaped legend names. */
static void test_plot(void **state) {
    (void)state;
    const float y[8] = {0, 0, 10, 10, 0, 10, 10, 0};
    const int64_t labels[4] = {3, 3, 7, 7};
    const char *names[8] = {"a", "b", "c", "T<shirt", "e", "f", "g", "Bag"};
    char png[256], svg[256];
    snprintf(png, sizeof png, "%s/tsne_plot_test.png", LOUPE_FIXTURES);
    snprintf(svg, sizeof svg, "%s/tsne_plot_test.svg", LOUPE_FIXTURES);
    mkdir(LOUPE_FIXTURES, 0755);
    assert_int_equal(lp_scatter_plot(png, y, 4, 2, labels, names, 8, "test"), LP_OK);
    lp_image img;
    assert_int_equal(lp_image_load(png, &img), LP_OK);
    assert_int_equal(img.w, 1020);
    assert_int_equal(img.h, 830);
    /* Box 800 with a 20 px margin: (0,0) is at pixel (20, 30 + 780), (0,10) at (20, 30 + 20). */
    const float *p0 = img.px + ((size_t)(30 + 780) * img.w + 20) * img.c;
    const float *p1 = img.px + ((size_t)(30 + 20) * img.w + 20) * img.c;
    const float *bg = img.px + ((size_t)400 * img.w + 400) * img.c;
    printf("plot: label 3 pixel %.2f %.2f %.2f, label 7 pixel %.2f %.2f %.2f, background %.2f\n", p0[0], p0[1], p0[2],
           p1[0], p1[1], p1[2], bg[0]);
    assert_true(bg[0] > 0.99f && bg[1] > 0.99f && bg[2] > 0.99f);
    assert_true(p0[2] > p0[0]);                  /* first colour: blue */
    assert_true(p1[0] > 0.8f && p1[2] < 0.4f);   /* second: orange */
    lp_image_free(&img);
    assert_int_equal(lp_scatter_plot(svg, y, 4, 2, labels, names, 8, "a & b"), LP_OK);
    FILE *f = fopen(svg, "r");
    assert_non_null(f);
    char buf[8192];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    int circles = 0;
    for (const char *q = buf; (q = strstr(q, "<circle")); q++) circles++;
    assert_int_equal(circles, 4);
    assert_non_null(strstr(buf, "T&lt;shirt"));
    assert_non_null(strstr(buf, "a &amp; b"));
    assert_non_null(strstr(buf, ">Bag<"));
}

int main(int argc, char **argv) {
    static char dflt[1024];
    snprintf(dflt, sizeof dflt, "%s/tsne", LOUPE_FIXTURES);
    g_fixtures = dflt;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--fixtures")) g_fixtures = argv[i + 1], g_require = 1;
    const struct CMUnitTest sklearn_tests[] = {
        cmocka_unit_test(test_p_vs_sklearn),
        cmocka_unit_test(test_trust_vs_sklearn),
    };
    /* With --fixtures (the tsne.sklearn CTest entry) only the sklearn comparisons run. */
    if (g_require) return cmocka_run_group_tests(sklearn_tests, NULL, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_p_vs_sklearn),     cmocka_unit_test(test_trust_vs_sklearn),
        cmocka_unit_test(test_bh_exact_at_theta0), cmocka_unit_test(test_bh_within_theta),
        cmocka_unit_test(test_attraction_dense), cmocka_unit_test(test_knn_brute),
        cmocka_unit_test(test_run_blobs),        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_plot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
