/* tsne_knn.c — exact k nearest neighbours of the input rows: distance tiles through
 * the backend's gemm (OpenBLAS or cuBLAS) merged into per-row max-heaps by the kernel
 * table. Brute force beats a vantage-point tree here: the rows are high-dimensional
 * (hundreds of features), where tree pruning fails and BLAS runs near peak. */
#include "tsne_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Square tiles (9 MiB of floats). Distances are symmetric: only tiles on or above
 * the diagonal are computed, each merged into its rows' heaps and its columns'. */
#define KNN_TILE 1536

lp_status _lp_tsne_knn(const lp_tsne_kernels *tk, const lp_backend *be, const float *x, int64_t n, int64_t d,
                       int k, int32_t *idx, float *d2) {
    if (k < 1 || k >= n) return lp_fail(LP_ERR_ARG, "t-SNE: %d neighbours need at least %d points (have %lld)", k, k + 1, (long long)n);
    if (d > INT32_MAX) return lp_fail(LP_ERR_SHAPE, "t-SNE: %lld features per row is too many", (long long)d);
    float *norms = NULL, *tile = NULL;
    lp_status s = be->alloc((size_t)n * sizeof(float), (void **)&norms);
    if (s == LP_OK) s = be->alloc((size_t)KNN_TILE * KNN_TILE * sizeof(float), (void **)&tile);
    if (s == LP_OK) s = tk->row_norms(x, n, d, norms);
    /* Heaps start empty: +inf distances, index -1. */
    if (s == LP_OK) {
        float *init = lp_malloc((size_t)n * k * sizeof(float));
        int32_t *initi = init ? lp_malloc((size_t)n * k * sizeof(int32_t)) : NULL;
        if (!init || !initi) s = LP_ERR_OOM;
        else {
            for (int64_t i = 0; i < n * k; i++) init[i] = INFINITY, initi[i] = -1;
            s = be->upload(d2, init, (size_t)n * k * sizeof(float));
            if (s == LP_OK) s = be->upload(idx, initi, (size_t)n * k * sizeof(int32_t));
        }
        free(init);
        free(initi);
    }
    for (int64_t r0 = 0; s == LP_OK && r0 < n; r0 += KNN_TILE) {
        int64_t rows = n - r0 < KNN_TILE ? n - r0 : KNN_TILE;
        for (int64_t c0 = r0; s == LP_OK && c0 < n; c0 += KNN_TILE) {
            int64_t cols = n - c0 < KNN_TILE ? n - c0 : KNN_TILE;
            s = be->gemm(0, 1, (int)rows, (int)cols, (int)d, 1.0f, x + r0 * d, (int)d, x + c0 * d, (int)d, 0.0f, tile,
                         (int)cols);
            if (s == LP_OK) s = tk->topk_tile(tile, rows, cols, r0, c0, norms, k, d2, idx);
            if (s == LP_OK && c0 != r0) s = tk->topk_tile_cols(tile, rows, cols, r0, c0, norms, k, d2, idx);
        }
    }
    if (s == LP_OK) s = tk->topk_finish(x, n, d, k, d2, idx);
    if (norms) be->free(norms);
    if (tile) be->free(tile);
    return s;
}

/* ---- CPU twins of the top-k kernels ---------------------------------------- */

static void heap_sift_down(float *hd, int32_t *hi, int k, int pos) {
    for (;;) {
        int l = 2 * pos + 1, r = l + 1, m = pos;
        if (l < k && (hd[l] > hd[m] || (hd[l] == hd[m] && hi[l] > hi[m]))) m = l;
        if (r < k && (hd[r] > hd[m] || (hd[r] == hd[m] && hi[r] > hi[m]))) m = r;
        if (m == pos) return;
        float td = hd[m];
        int32_t ti = hi[m];
        hd[m] = hd[pos], hi[m] = hi[pos];
        hd[pos] = td, hi[pos] = ti;
        pos = m;
    }
}

lp_status _lp_cpu_tsne_topk_tile(const float *dot, int64_t rows, int64_t cols, int64_t r0, int64_t c0,
                                 const float *norms, int k, float *best_d, int32_t *best_i) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t i = r0 + r;
        float *hd = best_d + i * k;
        int32_t *hi = best_i + i * k;
        const float *row = dot + r * cols;
        float ni = norms[i];
        for (int64_t c = 0; c < cols; c++) {
            int64_t j = c0 + c;
            if (j == i) continue;
            float dd = ni + norms[j] - 2.0f * row[c];
            if (dd < 0) dd = 0;
            /* Ties go to the lower index, so the result does not depend on tiling. */
            if (dd < hd[0] || (dd == hd[0] && j < hi[0])) {
                hd[0] = dd;
                hi[0] = (int32_t)j;
                heap_sift_down(hd, hi, k, 0);
            }
        }
    }
    return LP_OK;
}

lp_status _lp_cpu_tsne_topk_tile_cols(const float *dot, int64_t rows, int64_t cols, int64_t r0, int64_t c0,
                                      const float *norms, int k, float *best_d, int32_t *best_i) {
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < cols; c++) {
        int64_t j = c0 + c;
        float *hd = best_d + j * k;
        int32_t *hi = best_i + j * k;
        float nj = norms[j];
        for (int64_t r = 0; r < rows; r++) {
            int64_t i = r0 + r;
            if (i == j) continue;
            float dd = norms[i] + nj - 2.0f * dot[r * cols + c];
            if (dd < 0) dd = 0;
            if (dd < hd[0] || (dd == hd[0] && i < hi[0])) {
                hd[0] = dd;
                hi[0] = (int32_t)i;
                heap_sift_down(hd, hi, k, 0);
            }
        }
    }
    return LP_OK;
}

typedef struct knn_pair {
    float d;
    int32_t i;
} knn_pair;

static int pair_cmp(const void *a, const void *b) {
    const knn_pair *x = a, *y = b;
    if (x->d != y->d) return x->d < y->d ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

lp_status _lp_cpu_tsne_topk_finish(const float *x, int64_t n, int64_t d, int k, float *best_d, int32_t *best_i) {
    knn_pair *buf = lp_malloc((size_t)n * k * sizeof(knn_pair));
    if (!buf) return LP_ERR_OOM;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        knn_pair *p = buf + i * k;
        const float *xi = x + i * d;
        for (int a = 0; a < k; a++) {
            int32_t j = best_i[i * k + a];
            const float *xj = x + (int64_t)j * d;
            double s = 0;
            for (int64_t t = 0; t < d; t++) {
                double df = (double)xi[t] - xj[t];
                s += df * df;
            }
            p[a].d = (float)s;
            p[a].i = j;
        }
        qsort(p, (size_t)k, sizeof *p, pair_cmp);
        for (int a = 0; a < k; a++) best_d[i * k + a] = p[a].d, best_i[i * k + a] = p[a].i;
    }
    free(buf);
    return LP_OK;
}
