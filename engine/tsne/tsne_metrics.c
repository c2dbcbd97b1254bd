/* tsne_metrics.c — how faithful an embedding is: trustworthiness (Venna & Kaski,
 * computed as scikit-learn does, ranks among all N input points), the fraction of
 * each point's k input neighbours kept in the embedding, and leave-one-out k-NN
 * label accuracy. Exact for N <= max_sample, else over a seeded sample of points. */
#include "tsne_internal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MET_ROWS 256

/* Indices of the k smallest of d[0..n) other than `self` (ties to the lower index). */
static void k_smallest(const float *d, int64_t n, int64_t self, int k, int64_t *out) {
    int m = 0;
    for (int64_t j = 0; j < n; j++) {
        if (j == self) continue;
        if (m < k) {
            int p = m++;
            while (p > 0 && (d[out[p - 1]] > d[j])) out[p] = out[p - 1], p--;
            out[p] = j;
        } else if (d[j] < d[out[k - 1]]) {
            int p = k - 1;
            while (p > 0 && d[out[p - 1]] > d[j]) out[p] = out[p - 1], p--;
            out[p] = j;
        }
    }
}

lp_status lp_tsne_metrics(const lp_tensor *x, const lp_tensor *y, const int64_t *labels, int k, int64_t max_sample,
                          uint64_t seed, lp_tsne_quality *out) {
    memset(out, 0, sizeof *out);
    if (!x || !y || x->ndim < 1 || y->ndim != 2) return lp_fail(LP_ERR_SHAPE, "t-SNE metrics: x must be N x D and y N x dims");
    if (x->dtype != LP_F32 || y->dtype != LP_F32 || x->device != LP_DEVICE_CPU || y->device != LP_DEVICE_CPU)
        return lp_fail(LP_ERR_ARG, "t-SNE metrics: x and y must be float32 host tensors");
    int64_t n = x->shape[0], d = n > 0 ? lp_tensor_numel(x) / n : 0;
    int dims = (int)y->shape[1];
    if (y->shape[0] != n)
        return lp_fail(LP_ERR_SHAPE, "t-SNE metrics: x has %lld rows but y has %lld", (long long)n, (long long)y->shape[0]);
    if (k < 1) k = 10;
    if (n < 2 * k + 2) return lp_fail(LP_ERR_ARG, "t-SNE metrics: %lld points are too few for k = %d", (long long)n, k);
    if (max_sample <= 0) max_sample = 10000;
    int64_t ns = n <= max_sample ? n : max_sample;
    const float *xh = x->data, *yh = y->data;

    int64_t *sample = lp_malloc((size_t)ns * sizeof(int64_t));
    float *norms = lp_malloc((size_t)n * sizeof(float));
    float *dots = lp_malloc((size_t)MET_ROWS * n * sizeof(float));
    double *trust = lp_calloc((size_t)ns, sizeof(double));
    int *kept = lp_calloc((size_t)ns, sizeof(int));
    int *right = lp_calloc((size_t)ns, sizeof(int));
    lp_status s = LP_OK;
    if (!sample || !norms || !dots || !trust || !kept || !right) {
        s = LP_ERR_OOM;
        goto done;
    }
    if (ns == n) {
        for (int64_t i = 0; i < n; i++) sample[i] = i;
    } else {
        int64_t *perm = lp_malloc((size_t)n * sizeof(int64_t));
        if (!perm) {
            s = LP_ERR_OOM;
            goto done;
        }
        uint64_t rs = seed ^ 0x7157ull;
        for (int64_t i = 0; i < n; i++) perm[i] = i;
        for (int64_t i = 0; i < ns; i++) {
            int64_t j = i + (int64_t)(_lp_tsne_rand(&rs) % (uint64_t)(n - i));
            int64_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
            sample[i] = perm[i];
        }
        free(perm);
    }
    for (int64_t i = 0; i < n; i++) {
        double a = 0;
        for (int64_t t = 0; t < d; t++) a += (double)xh[i * d + t] * xh[i * d + t];
        norms[i] = (float)a;
    }
    /* Sampled rows in blocks; for the gemm they are gathered contiguously. */
    float *rowsx = lp_malloc((size_t)MET_ROWS * d * sizeof(float));
    if (!rowsx) {
        s = LP_ERR_OOM;
        goto done;
    }
    int failed = 0;
    for (int64_t b0 = 0; b0 < ns; b0 += MET_ROWS) {
        int64_t rows = ns - b0 < MET_ROWS ? ns - b0 : MET_ROWS;
        for (int64_t r = 0; r < rows; r++) memcpy(rowsx + r * d, xh + sample[b0 + r] * d, (size_t)d * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)n, (int)d, 1.0f, rowsx, (int)d, xh, (int)d,
                    0.0f, dots, (int)n);
#pragma omp parallel
        {
            float *de = malloc((size_t)n * sizeof(float));
            int64_t *nin = malloc((size_t)k * sizeof(int64_t)), *nemb = malloc((size_t)k * sizeof(int64_t));
            if (!de || !nin || !nemb) {
#pragma omp atomic write
                failed = 1;
            }
#pragma omp for schedule(dynamic, 4)
            for (int64_t r = 0; r < rows; r++) {
                if (!de || !nin || !nemb) continue;
                int64_t i = sample[b0 + r];
                float *din = dots + r * n;
                for (int64_t j = 0; j < n; j++) {
                    float v = norms[i] + norms[j] - 2.0f * din[j];
                    din[j] = v < 0 ? 0 : v;
                    double e2 = 0;
                    for (int c = 0; c < dims; c++) {
                        double dv = (double)yh[i * dims + c] - yh[j * dims + c];
                        e2 += dv * dv;
                    }
                    de[j] = (float)e2;
                }
                din[i] = 0;
                k_smallest(din, n, i, k, nin);
                k_smallest(de, n, i, k, nemb);
                double t = 0;
                int kk = 0;
                for (int a = 0; a < k; a++) {
                    int64_t j = nemb[a];
                    int in = 0;
                    for (int b = 0; b < k; b++) in |= nin[b] == j;
                    if (in) {
                        kk++;
                        continue;
                    }
                    /* 1-based rank of j among i's input neighbours (self excluded). */
                    int64_t rank = 1;
                    float dj = din[j];
                    for (int64_t l = 0; l < n; l++)
                        if (l != i && (din[l] < dj || (din[l] == dj && l < j))) rank++;
                    if (rank > k) t += (double)(rank - k);
                }
                trust[b0 + r] = t;
                kept[b0 + r] = kk;
                if (labels) {
                    /* Majority among the embedding neighbours; a tie goes to the nearer. */
                    int best = -1, bestc = 0;
                    for (int a = 0; a < k; a++) {
                        int c = 0;
                        for (int b = 0; b < k; b++) c += labels[nemb[b]] == labels[nemb[a]];
                        if (c > bestc) bestc = c, best = a;
                    }
                    right[b0 + r] = best >= 0 && labels[nemb[best]] == labels[i];
                }
            }
            free(de);
            free(nin);
            free(nemb);
        }
        if (failed) {
            s = lp_fail(LP_ERR_OOM, "t-SNE metrics: out of memory for %lld-point scratch", (long long)n);
            break;
        }
    }
    free(rowsx);
    if (s == LP_OK) {
        double ts = 0, ks = 0, rs = 0;
        for (int64_t i = 0; i < ns; i++) ts += trust[i], ks += kept[i], rs += right[i];
        out->k = k;
        out->sampled = ns;
        out->trustworthiness = 1.0 - 2.0 / ((double)ns * k * (2.0 * n - 3.0 * k - 1.0)) * ts;
        out->knn_kept = ks / ((double)ns * k);
        out->knn_accuracy = labels ? rs / ns : -1.0;
    }
done:
    free(sample);
    free(norms);
    free(dots);
    free(trust);
    free(kept);
    free(right);
    return s;
}
