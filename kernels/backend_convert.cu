// backend_convert.cu — layout and precision conversions around the tensor-core paths:
// fp32 -> bf16 (round to nearest even, as __float2bfloat16_rn), NCHW fp32 -> NHWC
// bf16 for cuDNN's bf16 convolutions, and back to NCHW fp32 with bias, accumulation
// and the fused ReLU folded into the same pass (one read, one write per element).
// CPU twin: the same rounding in tests (bf16 = the upper 16 bits after RNE).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "backend_common.cuh"
#include "cuda/cuda_kernels.h"

__device__ __forceinline__ uint16_t to_bf16(float v) {
    __nv_bfloat16 h = __float2bfloat16_rn(v);
    return *reinterpret_cast<uint16_t *>(&h);
}

__device__ __forceinline__ float from_bf16(uint16_t u) { return __uint_as_float((unsigned)u << 16); }

__global__ void f32_to_bf16_kernel(int64_t n, const float *x, uint16_t *y) { GRID_LOOP(i, n) y[i] = to_bf16(x[i]); }

// Per image, NCHW <-> NHWC is a (C x HW) <-> (HW x C) matrix transpose: 32 x 32 tiles
// through shared memory, so reads and writes both coalesce (the padding column keeps
// the transposed reads free of bank conflicts). Grid: (HW tiles, C tiles, images).
#define TILE 32
#define TILE_ROWS 8

__global__ void nchw_to_nhwc_kernel(int c, int64_t hw, const float *x, uint16_t *y) {
    __shared__ float t[TILE][TILE + 1];
    const int64_t b = blockIdx.z, p0 = (int64_t)blockIdx.x * TILE;
    const int c0 = blockIdx.y * TILE;
    const float *xb = x + b * c * hw;
    uint16_t *yb = y + b * c * hw;
    for (int r = threadIdx.y; r < TILE; r += TILE_ROWS) { // t[channel][position]
        const int ch = c0 + r;
        const int64_t p = p0 + threadIdx.x;
        if (ch < c && p < hw) t[r][threadIdx.x] = xb[(int64_t)ch * hw + p];
    }
    __syncthreads();
    for (int r = threadIdx.y; r < TILE; r += TILE_ROWS) {
        const int64_t p = p0 + r;
        const int ch = c0 + threadIdx.x;
        if (ch < c && p < hw) yb[p * c + ch] = to_bf16(t[threadIdx.x][r]);
    }
}

// y = act(x + bias[c] (+ y when accumulate)); act is the fused ReLU when relu.
__global__ void nhwc_to_nchw_kernel(int c, int64_t hw, const uint16_t *x, const float *bias, float *y, int accumulate,
                                    int relu) {
    __shared__ float t[TILE][TILE + 1];
    const int64_t b = blockIdx.z, p0 = (int64_t)blockIdx.x * TILE;
    const int c0 = blockIdx.y * TILE;
    const uint16_t *xb = x + b * c * hw;
    float *yb = y + b * c * hw;
    for (int r = threadIdx.y; r < TILE; r += TILE_ROWS) { // t[position][channel]
        const int64_t p = p0 + r;
        const int ch = c0 + threadIdx.x;
        if (ch < c && p < hw) t[r][threadIdx.x] = from_bf16(xb[p * c + ch]);
    }
    __syncthreads();
    for (int r = threadIdx.y; r < TILE; r += TILE_ROWS) {
        const int ch = c0 + r;
        const int64_t p = p0 + threadIdx.x;
        if (ch < c && p < hw) {
            const int64_t o = (int64_t)ch * hw + p;
            float v = t[threadIdx.x][r];
            if (bias) v += bias[ch];
            if (accumulate) v += yb[o];
            if (relu) v = v > 0.f ? v : 0.f;
            yb[o] = v;
        }
    }
}

// Images go in launches of at most 65535 (the grid's z limit).
#define FOR_IMAGE_BATCHES(n, b0, nb)                                                                                   \
    for (int b0 = 0, nb = (n) < 65535 ? (n) : 65535; b0 < (n); b0 += nb, nb = (n) - b0 < 65535 ? (n) - b0 : 65535)

static dim3 tile_grid(int c, int64_t hw, int nb) {
    return dim3((unsigned)((hw + TILE - 1) / TILE), (unsigned)((c + TILE - 1) / TILE), (unsigned)nb);
}

extern "C" {

int lp_k_f32_to_bf16(lp_stream s, int64_t n, const float *x, uint16_t *y) {
    if (n <= 0) return 0;
    f32_to_bf16_kernel<<<grid_for(n), LP_THREADS, 0, (cudaStream_t)s>>>(n, x, y);
    LAUNCH_END;
}

int lp_k_nchw_to_nhwc_bf16(lp_stream s, int n, int c, int64_t hw, const float *x, uint16_t *y) {
    if ((int64_t)n * c * hw <= 0) return 0;
    FOR_IMAGE_BATCHES(n, b0, nb) {
        const int64_t off = (int64_t)b0 * c * hw;
        nchw_to_nhwc_kernel<<<tile_grid(c, hw, nb), dim3(TILE, TILE_ROWS), 0, (cudaStream_t)s>>>(c, hw, x + off,
                                                                                                  y + off);
    }
    LAUNCH_END;
}

int lp_k_nhwc_bf16_to_nchw(lp_stream s, int n, int c, int64_t hw, const uint16_t *x, const float *bias, float *y,
                           int accumulate, int relu) {
    if ((int64_t)n * c * hw <= 0) return 0;
    FOR_IMAGE_BATCHES(n, b0, nb) {
        const int64_t off = (int64_t)b0 * c * hw;
        nhwc_to_nchw_kernel<<<tile_grid(c, hw, nb), dim3(TILE, TILE_ROWS), 0, (cudaStream_t)s>>>(
            c, hw, x + off, bias, y + off, accumulate, relu);
    }
    LAUNCH_END;
}

} // extern "C"
