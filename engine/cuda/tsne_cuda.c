/* tsne_cuda.c — the CUDA t-SNE kernel table: host side of kernels/tsne_knn.cu and
 * kernels/tsne_grad.cu. Each launcher's cudaError_t becomes a status naming the
 * kernel. Repulsion here is the exact all-pairs sum (theta is not used on CUDA). */
#include "tsne/tsne_internal.h"

#include <cuda_runtime.h>

int lp_cuda_tsne_row_norms(const float *x, int64_t n, int64_t d, float *out);
int lp_cuda_tsne_topk_tile(const float *dot, int64_t rows, int64_t cols, int64_t r0, int64_t c0, const float *norms,
                           int k, float *best_d, int32_t *best_i);
int lp_cuda_tsne_topk_tile_cols(const float *dot, int64_t rows, int64_t cols, int64_t r0, int64_t c0,
                                const float *norms, int k, float *best_d, int32_t *best_i);
int lp_cuda_tsne_topk_finish(const float *x, int64_t n, int64_t d, int k, float *best_d, int32_t *best_i);
int lp_cuda_tsne_perplexity(const float *d2, int64_t n, int k, double perplexity, float *p);
int lp_cuda_tsne_attraction(int64_t n, int dims, const int64_t *rowptr, const int32_t *col, const float *val,
                            const float *y, float *attr, double *plogw);
int lp_cuda_tsne_repulsion(int64_t n, int dims, const float *y, float *rep, double *sum_q);
int lp_cuda_tsne_update(int64_t m, float exag, float inv_z, float lr, float mom, const float *attr, const float *rep,
                        float *y, float *upd, float *gains);
int lp_cuda_tsne_center(int64_t n, int dims, float *y);

static lp_status check(int err, const char *kernel) {
    if (err == 0) return LP_OK;
    return lp_fail(LP_ERR_DEVICE, "CUDA t-SNE kernel %s: %s", kernel, cudaGetErrorString((cudaError_t)err));
}

static lp_status row_norms(const float *x, int64_t n, int64_t d, float *out) {
    return check(lp_cuda_tsne_row_norms(x, n, d, out), "row_norms");
}
static lp_status topk_tile(const float *dot, int64_t rows, int64_t cols, int64_t r0, int64_t c0, const float *norms,
                           int k, float *best_d, int32_t *best_i) {
    return check(lp_cuda_tsne_topk_tile(dot, rows, cols, r0, c0, norms, k, best_d, best_i), "topk_tile");
}
static lp_status topk_tile_cols(const float *dot, int64_t rows, int64_t cols, int64_t r0, int64_t c0,
                                const float *norms, int k, float *best_d, int32_t *best_i) {
    return check(lp_cuda_tsne_topk_tile_cols(dot, rows, cols, r0, c0, norms, k, best_d, best_i), "topk_tile_cols");
}
static lp_status topk_finish(const float *x, int64_t n, int64_t d, int k, float *best_d, int32_t *best_i) {
    return check(lp_cuda_tsne_topk_finish(x, n, d, k, best_d, best_i), "topk_finish");
}
static lp_status perplexity(const float *d2, int64_t n, int k, double perp, float *p) {
    return check(lp_cuda_tsne_perplexity(d2, n, k, perp, p), "perplexity");
}
static lp_status attraction(int64_t n, int dims, const int64_t *rowptr, const int32_t *col, const float *val,
                            const float *y, float *attr, double *plogw) {
    return check(lp_cuda_tsne_attraction(n, dims, rowptr, col, val, y, attr, plogw), "attraction");
}
static lp_status repulsion(int64_t n, int dims, double theta, const float *y, float *rep, double *sum_q) {
    (void)theta;
    return check(lp_cuda_tsne_repulsion(n, dims, y, rep, sum_q), "repulsion");
}
static lp_status update(int64_t m, float exag, float inv_z, float lr, float mom, const float *attr, const float *rep,
                        float *y, float *upd, float *gains) {
    return check(lp_cuda_tsne_update(m, exag, inv_z, lr, mom, attr, rep, y, upd, gains), "update");
}
static lp_status center(int64_t n, int dims, float *y) { return check(lp_cuda_tsne_center(n, dims, y), "center"); }

static const lp_tsne_kernels cuda_kernels = {
    .name = "cuda",
    .device = LP_DEVICE_CUDA,
    .row_norms = row_norms,
    .topk_tile = topk_tile,
    .topk_tile_cols = topk_tile_cols,
    .topk_finish = topk_finish,
    .perplexity = perplexity,
    .attraction = attraction,
    .repulsion = repulsion,
    .update = update,
    .center = center,
};

const lp_tsne_kernels *lp_tsne_kernels_cuda(void) {
    if (lp_cuda_device_count() <= 0) {
        lp_fail(LP_ERR_DEVICE, "t-SNE on CUDA: no CUDA device is present");
        return NULL;
    }
    return &cuda_kernels;
}
