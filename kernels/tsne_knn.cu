// tsne_knn.cu — CUDA kernels of t-SNE's exact kNN: row norms, and the merge of a
// cuBLAS dot-product tile into per-row max-heaps of the k nearest (one thread per
// row, or per column for the mirrored tile; ties to the lower index, as the CPU twin
// in engine/tsne/tsne_knn.c), then the
// exact recomputation and ascending sort. Launchers (C linkage) return a cudaError_t.
#include <cuda_runtime.h>
#include <stdint.h>

// ---- kernels ----------------------------------------------------------------

__global__ void tsne_row_norms_kernel(const float *x, int64_t n, int64_t d, float *out) {
    int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= n) return;
    double s = 0;
    for (int64_t t = lane; t < d; t += 32) s += (double)x[row * d + t] * x[row * d + t];
    for (int off = 16; off > 0; off /= 2) s += __shfl_down_sync(0xffffffffu, s, off);
    if (lane == 0) out[row] = (float)s;
}

__device__ void heap_sift_down(float *hd, int32_t *hi, int k, int pos) {
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

__global__ void tsne_topk_tile_kernel(const float *dot, int64_t rows, int64_t cols, int64_t r0, int64_t c0,
                                      const float *norms, int k, float *best_d, int32_t *best_i) {
    int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
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
        if (dd < hd[0] || (dd == hd[0] && j < hi[0])) {
            hd[0] = dd;
            hi[0] = (int32_t)j;
            heap_sift_down(hd, hi, k, 0);
        }
    }
}

// The tile seen from its columns (the mirrored tile below the diagonal).
__global__ void tsne_topk_tile_cols_kernel(const float *dot, int64_t rows, int64_t cols, int64_t r0, int64_t c0,
                                           const float *norms, int k, float *best_d, int32_t *best_i) {
    int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
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

__global__ void tsne_topk_finish_kernel(const float *x, int64_t n, int64_t d, int k, float *best_d, int32_t *best_i) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float *bd = best_d + i * k;
    int32_t *bi = best_i + i * k;
    const float *xi = x + i * d;
    for (int a = 0; a < k; a++) {
        const float *xj = x + (int64_t)bi[a] * d;
        double s = 0;
        for (int64_t t = 0; t < d; t++) {
            double df = (double)xi[t] - xj[t];
            s += df * df;
        }
        bd[a] = (float)s;
    }
    // Insertion sort: k is a few hundred at most.
    for (int a = 1; a < k; a++) {
        float v = bd[a];
        int32_t vi = bi[a];
        int b = a - 1;
        while (b >= 0 && (bd[b] > v || (bd[b] == v && bi[b] > vi))) {
            bd[b + 1] = bd[b], bi[b + 1] = bi[b];
            b--;
        }
        bd[b + 1] = v, bi[b + 1] = vi;
    }
}

// ---- launchers --------------------------------------------------------------

extern "C" int lp_cuda_tsne_row_norms(const float *x, int64_t n, int64_t d, float *out) {
    int warps = 8;
    tsne_row_norms_kernel<<<(unsigned)((n + warps - 1) / warps), warps * 32>>>(x, n, d, out);
    return (int)cudaGetLastError();
}

extern "C" int lp_cuda_tsne_topk_tile(const float *dot, int64_t rows, int64_t cols, int64_t r0, int64_t c0,
                                      const float *norms, int k, float *best_d, int32_t *best_i) {
    tsne_topk_tile_kernel<<<(unsigned)((rows + 127) / 128), 128>>>(dot, rows, cols, r0, c0, norms, k, best_d, best_i);
    return (int)cudaGetLastError();
}

extern "C" int lp_cuda_tsne_topk_tile_cols(const float *dot, int64_t rows, int64_t cols, int64_t r0, int64_t c0,
                                           const float *norms, int k, float *best_d, int32_t *best_i) {
    tsne_topk_tile_cols_kernel<<<(unsigned)((cols + 127) / 128), 128>>>(dot, rows, cols, r0, c0, norms, k, best_d,
                                                                        best_i);
    return (int)cudaGetLastError();
}

extern "C" int lp_cuda_tsne_topk_finish(const float *x, int64_t n, int64_t d, int k, float *best_d, int32_t *best_i) {
    tsne_topk_finish_kernel<<<(unsigned)((n + 127) / 128), 128>>>(x, n, d, k, best_d, best_i);
    return (int)cudaGetLastError();
}
