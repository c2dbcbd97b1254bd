/* tsne_cpu.c — the CPU t-SNE kernel table: the twins of kernels/tsne_*.cu. The
 * heavier ones live beside their topic (tsne_knn.c, tsne_affinity.c, tsne_bhtree.c);
 * the per-row attraction over sparse P and the optimizer step are here. Every
 * reduction runs per row then serially, so results are thread-count independent. */
#include "tsne_internal.h"

#include <math.h>
#include <stdlib.h>

static lp_status cpu_row_norms(const float *x, int64_t n, int64_t d, float *out) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        double s = 0;
        for (int64_t t = 0; t < d; t++) s += (double)x[i * d + t] * x[i * d + t];
        out[i] = (float)s;
    }
    return LP_OK;
}

lp_status _lp_cpu_tsne_attraction(int64_t n, int dims, const int64_t *rowptr, const int32_t *col,
                                  const float *val, const float *y, float *attr, double *plogw) {
    double *rowsum = plogw ? malloc((size_t)n * sizeof(double)) : NULL;
    if (plogw && !rowsum) return lp_fail(LP_ERR_OOM, "t-SNE: out of memory for the KL estimate");
#pragma omp parallel for schedule(dynamic, 256) if (n >= 2048)
    for (int64_t i = 0; i < n; i++) {
        double f[3] = {0, 0, 0}, pl = 0;
        for (int64_t a = rowptr[i]; a < rowptr[i + 1]; a++) {
            int64_t j = col[a];
            double dv[3] = {0, 0, 0}, d2 = 0;
            for (int d = 0; d < dims; d++) {
                dv[d] = (double)y[i * dims + d] - y[j * dims + d];
                d2 += dv[d] * dv[d];
            }
            double pw = val[a] / (1.0 + d2);
            for (int d = 0; d < dims; d++) f[d] += pw * dv[d];
            if (rowsum) pl -= val[a] * log1p(d2);
        }
        for (int d = 0; d < dims; d++) attr[i * dims + d] = (float)f[d];
        if (rowsum) rowsum[i] = pl;
    }
    if (rowsum) {
        double s = 0;
        for (int64_t i = 0; i < n; i++) s += rowsum[i];
        *plogw = s;
        free(rowsum);
    }
    return LP_OK;
}

static lp_status cpu_update(int64_t m, float exag, float inv_z, float lr, float mom, const float *attr,
                            const float *rep, float *y, float *upd, float *gains) {
#pragma omp parallel for schedule(static) if (m >= 16384)
    for (int64_t a = 0; a < m; a++) {
        float g = exag * attr[a] - rep[a] * inv_z;
        int sg = (g > 0) - (g < 0), su = (upd[a] > 0) - (upd[a] < 0);
        float gn = sg != su ? gains[a] + 0.2f : gains[a] * 0.8f;
        gains[a] = gn < 0.01f ? 0.01f : gn;
        upd[a] = mom * upd[a] - lr * gains[a] * g;
        y[a] += upd[a];
    }
    return LP_OK;
}

static lp_status cpu_center(int64_t n, int dims, float *y) {
    double mean[3] = {0, 0, 0};
    for (int64_t i = 0; i < n; i++)
        for (int d = 0; d < dims; d++) mean[d] += y[i * dims + d];
    for (int d = 0; d < dims; d++) mean[d] /= (double)n;
    for (int64_t i = 0; i < n; i++)
        for (int d = 0; d < dims; d++) y[i * dims + d] -= (float)mean[d];
    return LP_OK;
}

static const lp_tsne_kernels cpu_kernels = {
    .name = "cpu",
    .device = LP_DEVICE_CPU,
    .row_norms = cpu_row_norms,
    .topk_tile = _lp_cpu_tsne_topk_tile,
    .topk_tile_cols = _lp_cpu_tsne_topk_tile_cols,
    .topk_finish = _lp_cpu_tsne_topk_finish,
    .perplexity = _lp_cpu_tsne_perplexity,
    .attraction = _lp_cpu_tsne_attraction,
    .repulsion = _lp_cpu_tsne_repulsion_bh,
    .update = cpu_update,
    .center = cpu_center,
};

const lp_tsne_kernels *lp_tsne_kernels_cpu(void) { return &cpu_kernels; }
