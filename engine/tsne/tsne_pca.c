/* tsne_pca.c — the PCA start of t-SNE (as openTSNE has it: principal coordinates
 * scaled so the first has a tiny standard deviation) and the seeded random stream.
 * Subspace iteration with BLAS products against the centred data, never forming
 * the D x D covariance, so wide layers (tens of thousands of features) cost O(N D). */
#include "tsne_internal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

uint64_t _lp_tsne_rand(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double _lp_tsne_normal(uint64_t *s) {
    double u1 = ((_lp_tsne_rand(s) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (_lp_tsne_rand(s) >> 11) * (1.0 / 9007199254740992.0);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Orthonormalise the k columns of v (d x k, row-major) by modified Gram-Schmidt. */
static void orthonormalise(float *v, int64_t d, int k) {
    for (int a = 0; a < k; a++) {
        for (int b = 0; b < a; b++) {
            double dot = 0;
            for (int64_t t = 0; t < d; t++) dot += (double)v[t * k + a] * v[t * k + b];
            for (int64_t t = 0; t < d; t++) v[t * k + a] -= (float)(dot * v[t * k + b]);
        }
        double nrm = 0;
        for (int64_t t = 0; t < d; t++) nrm += (double)v[t * k + a] * v[t * k + a];
        nrm = sqrt(nrm);
        /* A rank-deficient direction: leave it zero rather than divide by ~0. */
        for (int64_t t = 0; t < d; t++) v[t * k + a] = nrm > 1e-30 ? (float)(v[t * k + a] / nrm) : 0.0f;
    }
}

/* Eigenvectors of a small symmetric matrix (cyclic Jacobi): a (k x k) is destroyed;
 * vec (k x k) gets the eigenvectors as columns, val the eigenvalues. */
static void jacobi_eig(double *a, int k, double *vec, double *val) {
    for (int i = 0; i < k * k; i++) vec[i] = (i % (k + 1)) == 0;
    for (int sweep = 0; sweep < 60; sweep++) {
        double off = 0;
        for (int p = 0; p < k; p++)
            for (int q = p + 1; q < k; q++) off += a[p * k + q] * a[p * k + q];
        if (off < 1e-30) break;
        for (int p = 0; p < k; p++)
            for (int q = p + 1; q < k; q++) {
                if (fabs(a[p * k + q]) < 1e-300) continue;
                double th = (a[q * k + q] - a[p * k + p]) / (2 * a[p * k + q]);
                double t = (th >= 0 ? 1 : -1) / (fabs(th) + sqrt(th * th + 1));
                double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int r = 0; r < k; r++) {
                    double arp = a[r * k + p], arq = a[r * k + q];
                    a[r * k + p] = c * arp - s * arq;
                    a[r * k + q] = s * arp + c * arq;
                }
                for (int r = 0; r < k; r++) {
                    double apr = a[p * k + r], aqr = a[q * k + r];
                    a[p * k + r] = c * apr - s * aqr;
                    a[q * k + r] = s * apr + c * aqr;
                }
                for (int r = 0; r < k; r++) {
                    double vrp = vec[r * k + p], vrq = vec[r * k + q];
                    vec[r * k + p] = c * vrp - s * vrq;
                    vec[r * k + q] = s * vrp + c * vrq;
                }
            }
    }
    for (int i = 0; i < k; i++) val[i] = a[i * k + i];
}

/* u = (x - 1 mu^T) v  (n x k) */
static void apply(const float *x, const float *mu, int64_t n, int64_t d, int k, const float *v, float *u) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, k, (int)d, 1.0f, x, (int)d, v, k, 0.0f, u, k);
    for (int a = 0; a < k; a++) {
        double mv = 0;
        for (int64_t t = 0; t < d; t++) mv += (double)mu[t] * v[t * k + a];
        for (int64_t i = 0; i < n; i++) u[i * k + a] -= (float)mv;
    }
}

lp_status lp_tsne_pca_init(const float *x, int64_t n, int64_t d, int dims, uint64_t seed, double std, float *y) {
    if (n > INT32_MAX || d > INT32_MAX) return lp_fail(LP_ERR_SHAPE, "t-SNE PCA: %lld x %lld is too large", (long long)n, (long long)d);
    /* Oversampled subspace: the leading directions converge faster. */
    int k = dims + 4;
    if (k > d) k = (int)d;
    float *mu = lp_calloc((size_t)d, sizeof(float));
    float *v = lp_malloc((size_t)d * k * sizeof(float));
    float *u = lp_malloc((size_t)n * k * sizeof(float));
    if (!mu || !v || !u) return free(mu), free(v), free(u), LP_ERR_OOM;
    double *acc = lp_calloc((size_t)d, sizeof(double));
    if (!acc) return free(mu), free(v), free(u), LP_ERR_OOM;
    for (int64_t i = 0; i < n; i++)
        for (int64_t t = 0; t < d; t++) acc[t] += x[i * d + t];
    for (int64_t t = 0; t < d; t++) mu[t] = (float)(acc[t] / n);
    free(acc);
    uint64_t rs = seed ^ 0x5ca1ab1eull;
    for (int64_t t = 0; t < d * k; t++) v[t] = (float)_lp_tsne_normal(&rs);
    orthonormalise(v, d, k);
    for (int it = 0; it < 30; it++) {
        apply(x, mu, n, d, k, v, u);
        /* v = (x - 1 mu^T)^T u */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, k, (int)n, 1.0f, x, (int)d, u, k, 0.0f, v, k);
        for (int a = 0; a < k; a++) {
            double su = 0;
            for (int64_t i = 0; i < n; i++) su += u[i * k + a];
            for (int64_t t = 0; t < d; t++) v[t * k + a] -= (float)(mu[t] * su);
        }
        orthonormalise(v, d, k);
    }
    apply(x, mu, n, d, k, v, u);
    /* Rayleigh-Ritz: rotate the subspace so its columns are ordered principal axes. */
    double b[64], vec[64], val[8];
    for (int p = 0; p < k; p++)
        for (int q = 0; q < k; q++) {
            double s = 0;
            for (int64_t i = 0; i < n; i++) s += (double)u[i * k + p] * u[i * k + q];
            b[p * k + q] = s;
        }
    jacobi_eig(b, k, vec, val);
    int order[8];
    for (int a = 0; a < k; a++) order[a] = a;
    for (int a = 0; a < k; a++)
        for (int c = a + 1; c < k; c++)
            if (val[order[c]] > val[order[a]]) {
                int t = order[a];
                order[a] = order[c];
                order[c] = t;
            }
    for (int c = 0; c < dims; c++) {
        int e = c < k ? order[c] : -1;
        double big = 0;
        for (int64_t i = 0; i < n; i++) {
            double s = 0;
            if (e >= 0)
                for (int a = 0; a < k; a++) s += (double)u[i * k + a] * vec[a * k + e];
            y[i * dims + c] = (float)s;
            if (fabs(s) > fabs(big)) big = s;
        }
        /* Fix the sign (largest coordinate positive), as scikit-learn's svd_flip does. */
        if (big < 0)
            for (int64_t i = 0; i < n; i++) y[i * dims + c] = -y[i * dims + c];
    }
    free(mu);
    free(v);
    free(u);
    double m = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) m += y[i * dims];
    m /= n;
    for (int64_t i = 0; i < n; i++) s2 += (y[i * dims] - m) * (y[i * dims] - m);
    double sd = sqrt(s2 / n);
    if (!(sd > 0)) return lp_fail(LP_ERR_ARG, "t-SNE PCA: the input rows are all identical (no variance)");
    for (int64_t t = 0; t < n * dims; t++) y[t] = (float)(y[t] * std / sd);
    return LP_OK;
}
