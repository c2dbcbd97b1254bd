/* tsne_cuda.c — the CUDA t-SNE kernel table: host side of kernels/tsne_knn.cu,
 * kernels/tsne_grad.cu and kernels/tsne_bh.cu. Each launcher's cudaError_t becomes a
 * status naming the kernel. Repulsion is Barnes-Hut on a radix tree for theta > 0 and
 * the exact all-pairs sum (faster than a tree walked to its leaves) for theta = 0. */
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
size_t lp_cuda_tsne_bh_scratch_bytes(int64_t n, int dims);
int lp_cuda_tsne_bh_repulsion(int64_t n, int dims, double theta, const float *y, float *rep, double *sum_q,
                              void *scratch, size_t scratch_bytes);
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
/* The tree's scratch (about 160 bytes a point), kept across calls: the driver calls
 * repulsion once per iteration with the same n, and a cudaMalloc/cudaFree pair each
 * time would synchronise the device. Regrown when a larger n comes; held until exit.
 * Not thread-safe, like the driver that uses it. */
static void *bh_scratch;
static size_t bh_scratch_size;

static lp_status repulsion(int64_t n, int dims, double theta, const float *y, float *rep, double *sum_q) {
    if (theta <= 0 || n < 2) return check(lp_cuda_tsne_repulsion(n, dims, y, rep, sum_q), "repulsion");
    if (n >= INT32_MAX / 2)
        return lp_fail(LP_ERR_ARG, "t-SNE on CUDA: %lld points is over the Barnes-Hut tree's limit", (long long)n);
    size_t need = lp_cuda_tsne_bh_scratch_bytes(n, dims);
    if (need == 0) return lp_fail(LP_ERR_DEVICE, "CUDA t-SNE: sizing the Barnes-Hut tree's sort failed");
    if (need > bh_scratch_size) {
        if (bh_scratch) LP_TRY(check(cudaFree(bh_scratch), "repulsion (free tree scratch)"));
        bh_scratch = NULL, bh_scratch_size = 0;
        cudaError_t e = cudaMalloc(&bh_scratch, need);
        if (e != cudaSuccess) {
            bh_scratch = NULL;
            return lp_fail(LP_ERR_OOM, "CUDA t-SNE: %zu bytes of Barnes-Hut tree scratch for %lld points: %s", need,
                           (long long)n, cudaGetErrorString(e));
        }
        bh_scratch_size = need;
    }
    return check(lp_cuda_tsne_bh_repulsion(n, dims, theta, y, rep, sum_q, bh_scratch, bh_scratch_size),
                 "bh_repulsion");
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
