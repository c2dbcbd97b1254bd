// tsne_grad.cu — CUDA kernels of t-SNE's affinities and optimizer: the per-point
// perplexity search, attraction over CSR P, repulsion, the gains/momentum step and
// centring. CPU twins: engine/tsne/tsne_affinity.c, tsne_cpu.c, tsne_bhtree.c.
// Repulsion here is the exact all-pairs sum in shared-memory tiles, used for theta = 0
// (and as the tests' GPU reference); theta > 0 takes the radix tree in tsne_bh.cu.
// Launchers (C linkage) return a cudaError_t.
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

// ---- kernels ----------------------------------------------------------------

__global__ void tsne_perplexity_kernel(const float *d2, int64_t n, int k, double perplexity, float *p) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float *di = d2 + i * k;
    float *pi = p + i * k;
    const double target = log(perplexity), tol = 1e-5;
    double beta = 1.0, beta_min = -INFINITY, beta_max = INFINITY, sum = 1.0, used = beta;
    for (int step = 0; step < 100; step++) {
        double sum_dw = 0;
        used = beta;
        sum = 0;
        for (int j = 0; j < k; j++) {
            double w = exp(-(double)di[j] * beta);
            sum += w;
            sum_dw += (double)di[j] * w;
        }
        if (sum == 0.0) sum = 1e-8;
        double diff = log(sum) + beta * (sum_dw / sum) - target;
        if (fabs(diff) <= tol) break;
        if (diff > 0) {
            beta_min = beta;
            beta = beta_max == INFINITY ? beta * 2.0 : (beta + beta_max) / 2.0;
        } else {
            beta_max = beta;
            beta = beta_min == -INFINITY ? beta / 2.0 : (beta + beta_min) / 2.0;
        }
    }
    for (int j = 0; j < k; j++) pi[j] = (float)(exp(-(double)di[j] * used) / sum);
}

__global__ void tsne_attraction_kernel(int64_t n, int dims, const int64_t *rowptr, const int32_t *col,
                                       const float *val, const float *y, float *attr, double *plogw) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
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
        if (plogw) pl -= val[a] * log1p(d2);
    }
    for (int d = 0; d < dims; d++) attr[i * dims + d] = (float)f[d];
    if (plogw) atomicAdd(plogw, pl);
}

#define REP_TILE 256
// part[blockIdx.x] = the block's sum of w, reduced in a fixed order (no float atomics:
// Z and with it the whole run are bitwise repeatable).
__global__ void tsne_repulsion_kernel(int64_t n, int dims, const float *y, float *rep, double *part) {
    __shared__ float tile[REP_TILE * 3];
    __shared__ double red[REP_TILE];
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    double yi[3] = {0, 0, 0}, f[3] = {0, 0, 0}, sq = 0;
    if (i < n)
        for (int d = 0; d < dims; d++) yi[d] = y[i * dims + d];
    for (int64_t t0 = 0; t0 < n; t0 += REP_TILE) {
        int64_t j = t0 + threadIdx.x;
        for (int d = 0; d < dims; d++) tile[threadIdx.x * 3 + d] = j < n ? y[j * dims + d] : 0.0f;
        __syncthreads();
        int64_t m = n - t0 < REP_TILE ? n - t0 : REP_TILE;
        if (i < n)
            for (int64_t b = 0; b < m; b++) {
                if (t0 + b == i) continue;
                double dv[3] = {0, 0, 0}, d2 = 0;
                for (int d = 0; d < dims; d++) {
                    dv[d] = yi[d] - tile[b * 3 + d];
                    d2 += dv[d] * dv[d];
                }
                double w = 1.0 / (1.0 + d2);
                sq += w;
                for (int d = 0; d < dims; d++) f[d] += w * w * dv[d];
            }
        __syncthreads();
    }
    if (i < n)
        for (int d = 0; d < dims; d++) rep[i * dims + d] = (float)f[d];
    red[threadIdx.x] = sq;
    __syncthreads();
    for (int w = REP_TILE / 2; w > 0; w /= 2) {
        if ((int)threadIdx.x < w) red[threadIdx.x] += red[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) part[blockIdx.x] = red[0];
}

__global__ void tsne_update_kernel(int64_t m, float exag, float inv_z, float lr, float mom, const float *attr,
                                   const float *rep, float *y, float *upd, float *gains) {
    int64_t a = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (a >= m) return;
    float g = exag * attr[a] - rep[a] * inv_z;
    int sg = (g > 0) - (g < 0), su = (upd[a] > 0) - (upd[a] < 0);
    float gn = sg != su ? gains[a] + 0.2f : gains[a] * 0.8f;
    gains[a] = gn < 0.01f ? 0.01f : gn;
    upd[a] = mom * upd[a] - lr * gains[a] * g;
    y[a] += upd[a];
}

// One block: column sums of y in double, then every thread subtracts the means.
__global__ void tsne_center_kernel(int64_t n, int dims, float *y) {
    __shared__ double part[256 * 3];
    __shared__ double mean[3];
    double s[3] = {0, 0, 0};
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        for (int d = 0; d < dims; d++) s[d] += y[i * dims + d];
    for (int d = 0; d < 3; d++) part[threadIdx.x * 3 + d] = s[d];
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w /= 2) {
        if ((int)threadIdx.x < w)
            for (int d = 0; d < 3; d++) part[threadIdx.x * 3 + d] += part[(threadIdx.x + w) * 3 + d];
        __syncthreads();
    }
    if (threadIdx.x < 3) mean[threadIdx.x] = part[threadIdx.x] / (double)n;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        for (int d = 0; d < dims; d++) y[i * dims + d] -= (float)mean[d];
}

// ---- launchers --------------------------------------------------------------

static unsigned blocks(int64_t n, int t) { return (unsigned)((n + t - 1) / t); }

extern "C" int lp_cuda_tsne_perplexity(const float *d2, int64_t n, int k, double perplexity, float *p) {
    tsne_perplexity_kernel<<<blocks(n, 128), 128>>>(d2, n, k, perplexity, p);
    return (int)cudaGetLastError();
}

// plogw (host pointer, may be NULL) receives sum p log w.
extern "C" int lp_cuda_tsne_attraction(int64_t n, int dims, const int64_t *rowptr, const int32_t *col,
                                       const float *val, const float *y, float *attr, double *plogw) {
    double *dsum = NULL;
    cudaError_t e = cudaSuccess;
    if (plogw) {
        if ((e = cudaMalloc(&dsum, sizeof(double))) != cudaSuccess) return (int)e;
        cudaMemset(dsum, 0, sizeof(double));
    }
    tsne_attraction_kernel<<<blocks(n, 128), 128>>>(n, dims, rowptr, col, val, y, attr, dsum);
    e = cudaGetLastError();
    if (plogw) {
        if (e == cudaSuccess) e = cudaMemcpy(plogw, dsum, sizeof(double), cudaMemcpyDeviceToHost);
        cudaFree(dsum);
    }
    return (int)e;
}

// sum_q is a host pointer: the blocks' partial sums added on the host in block order.
extern "C" int lp_cuda_tsne_repulsion(int64_t n, int dims, const float *y, float *rep, double *sum_q) {
    const unsigned nb = blocks(n, REP_TILE);
    double *dpart = NULL, *hpart = (double *)malloc(nb * sizeof(double));
    if (!hpart) return (int)cudaErrorMemoryAllocation;
    cudaError_t e = cudaMalloc(&dpart, nb * sizeof(double));
    if (e == cudaSuccess) {
        tsne_repulsion_kernel<<<nb, REP_TILE>>>(n, dims, y, rep, dpart);
        e = cudaGetLastError();
        if (e == cudaSuccess) e = cudaMemcpy(hpart, dpart, nb * sizeof(double), cudaMemcpyDeviceToHost);
        cudaError_t f = cudaFree(dpart);
        if (e == cudaSuccess) e = f;
    }
    double z = 0;
    for (unsigned b = 0; e == cudaSuccess && b < nb; b++) z += hpart[b];
    if (e == cudaSuccess) *sum_q = z;
    free(hpart);
    return (int)e;
}

extern "C" int lp_cuda_tsne_update(int64_t m, float exag, float inv_z, float lr, float mom, const float *attr,
                                   const float *rep, float *y, float *upd, float *gains) {
    tsne_update_kernel<<<blocks(m, 256), 256>>>(m, exag, inv_z, lr, mom, attr, rep, y, upd, gains);
    return (int)cudaGetLastError();
}

extern "C" int lp_cuda_tsne_center(int64_t n, int dims, float *y) {
    tsne_center_kernel<<<1, 256>>>(n, dims, y);
    return (int)cudaGetLastError();
}
