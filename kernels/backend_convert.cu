// backend_convert.cu — layout and precision conversions around the tensor-core paths:
// fp32 -> bf16 (round to nearest even, as __float2bfloat16_rn), NCHW fp32 -> NHWC
// bf16 for cuDNN's bf16 convolutions, and back to NCHW fp32 with bias and
// accumulation folded into the same pass (one read, one write per element).
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

// Thread per output (NHWC) element: writes coalesce, reads stride by hw (cached in L2).
__global__ void nchw_to_nhwc_kernel(int n, int c, int64_t hw, const float *x, uint16_t *y) {
    GRID_LOOP(i, (int64_t)n * c * hw) {
        int ch = (int)(i % c);
        int64_t r = i / c, p = r % hw, b = r / hw;
        y[i] = to_bf16(x[(b * c + ch) * hw + p]);
    }
}

// Thread per output (NCHW) element.
__global__ void nhwc_to_nchw_kernel(int n, int c, int64_t hw, const uint16_t *x, const float *bias, float *y,
                                    int accumulate) {
    GRID_LOOP(i, (int64_t)n * c * hw) {
        int64_t p = i % hw, r = i / hw;
        int ch = (int)(r % c);
        int64_t b = r / c;
        float v = from_bf16(x[(b * hw + p) * c + ch]);
        if (bias) v += bias[ch];
        y[i] = accumulate ? y[i] + v : v;
    }
}

extern "C" {

int lp_k_f32_to_bf16(lp_stream s, int64_t n, const float *x, uint16_t *y) {
    if (n <= 0) return 0;
    f32_to_bf16_kernel<<<grid_for(n), LP_THREADS, 0, (cudaStream_t)s>>>(n, x, y);
    LAUNCH_END;
}

int lp_k_nchw_to_nhwc_bf16(lp_stream s, int n, int c, int64_t hw, const float *x, uint16_t *y) {
    int64_t total = (int64_t)n * c * hw;
    if (total <= 0) return 0;
    nchw_to_nhwc_kernel<<<grid_for(total), LP_THREADS, 0, (cudaStream_t)s>>>(n, c, hw, x, y);
    LAUNCH_END;
}

int lp_k_nhwc_bf16_to_nchw(lp_stream s, int n, int c, int64_t hw, const uint16_t *x, const float *bias, float *y,
                           int accumulate) {
    int64_t total = (int64_t)n * c * hw;
    if (total <= 0) return 0;
    nhwc_to_nchw_kernel<<<grid_for(total), LP_THREADS, 0, (cudaStream_t)s>>>(n, c, hw, x, bias, y, accumulate);
    LAUNCH_END;
}

} // extern "C"
