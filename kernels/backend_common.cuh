// backend_common.cuh — launch geometry shared by the backend's kernels: 256-thread
// blocks, a grid-stride loop (so any element count fits the grid limits) and the
// launcher's return of the launch error.
#ifndef LOUPE_BACKEND_COMMON_CUH
#define LOUPE_BACKEND_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#define LP_THREADS 256
#define GRID_LOOP(i, n)                                                                                                \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)
#define LAUNCH_END return (int)cudaGetLastError()

static inline unsigned grid_for(int64_t n) {
    int64_t b = (n + LP_THREADS - 1) / LP_THREADS;
    return (unsigned)(b < 1 ? 1 : b > 65535 * 8 ? 65535 * 8 : b);
}

// bfloat16 as stored (uint16_t): round to nearest even, and back (exact).
__device__ __forceinline__ uint16_t to_bf16(float v) {
    __nv_bfloat16 h = __float2bfloat16_rn(v);
    return *reinterpret_cast<uint16_t *>(&h);
}
__device__ __forceinline__ float from_bf16(uint16_t u) { return __uint_as_float((unsigned)u << 16); }

// A fused activation (lp_conv_desc.act): min(max(0, v), act) when act > 0 (INFINITY:
// ReLU, 6: ReLU6), else v; in the very expressions of the Relu and Clip kernels, so
// fused and unfused agree bit for bit (signed zeros included).
__device__ __forceinline__ float lp_act(float v, float act) {
    if (!(act > 0.f)) return v;
    return act == INFINITY ? (v > 0.f ? v : 0.f) : fminf(fmaxf(v, 0.f), act);
}

#endif
