// backend_convert.cu — layout and precision conversions around the tensor-core paths:
// fp32 -> bf16 (round to nearest even, as __float2bfloat16_rn), NCHW fp32 -> NHWC
// bf16 for cuDNN's bf16 convolutions, and back to NCHW fp32 with bias, accumulation
// and the fused ReLU folded into the same pass (one read, one write per element).
// Packed activations (lp_backend.packed: bf16 NHWC values that conv->conv edges keep)
// get their own elementwise kernels: bias + ReLU in place after cuDNN, Add / ReLU
// on two packed operands, and ReLU's gradient (lean runs keep gradients packed too). CPU twin: the same rounding in tests (bf16 = the upper 16
// bits after RNE).
#include <cuda_runtime.h>

#include "backend_common.cuh"
#include "cuda/cuda_kernels.h"

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

// y = lp_act(x + bias[c] (+ y when accumulate), act): a fused activation.
__global__ void nhwc_to_nchw_kernel(int c, int64_t hw, const uint16_t *x, const float *bias, float *y, int accumulate,
                                    float act) {
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
            yb[o] = lp_act(v, act);
        }
    }
}

// Few channels (an RGB image, a 1-channel map): the 32 x 32 tiles would leave most
// of each block idle, so one thread per element instead; reads along each channel's
// plane and writes along positions stay close within a warp.
#define FEW_CHANNELS 8
__global__ void nchw_to_nhwc_few_kernel(int c, int64_t hw, int64_t total, const float *x, uint16_t *y) {
    GRID_LOOP(i, total) { // i indexes y (NHWC)
        const int ch = (int)(i % c);
        const int64_t pos = i / c, b = pos / hw, p = pos % hw;
        y[i] = to_bf16(x[(b * c + ch) * hw + p]);
    }
}

__global__ void nhwc_to_nchw_few_kernel(int c, int64_t hw, int64_t total, const uint16_t *x, const float *bias, float *y,
                                        int accumulate, float act) {
    GRID_LOOP(i, total) { // i indexes y (NCHW)
        const int64_t plane = i / hw, p = i % hw, b = plane / c;
        const int ch = (int)(plane % c);
        float v = from_bf16(x[(b * hw + p) * c + ch]);
        if (bias) v += bias[ch];
        if (accumulate) v += y[i];
        y[i] = lp_act(v, act);
    }
}

// Packed kernels read and write two values per 32-bit word (buffers are at least
// 4-byte aligned); the last value of an odd count alone.
__device__ __forceinline__ float lo16(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float hi16(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }
__device__ __forceinline__ uint32_t pack2(float a, float b) {
    return (uint32_t)to_bf16(a) | (uint32_t)to_bf16(b) << 16;
}
// y = lp_act(a (+ b), act) on n packed values: the same layout on all three, so any.
__global__ void add_bf16_kernel(int64_t n, const uint16_t *a, const uint16_t *b, uint16_t *y, float act) {
    GRID_LOOP(i, (n + 1) / 2) {
        const int64_t e = 2 * i;
        if (e + 1 < n) {
            const uint32_t u = reinterpret_cast<const uint32_t *>(a)[i];
            float v0 = lo16(u), v1 = hi16(u);
            if (b) {
                const uint32_t w = reinterpret_cast<const uint32_t *>(b)[i];
                v0 += lo16(w), v1 += hi16(w);
            }
            reinterpret_cast<uint32_t *>(y)[i] = pack2(lp_act(v0, act), lp_act(v1, act));
        } else {
            y[e] = to_bf16(lp_act(from_bf16(a[e]) + (b ? from_bf16(b[e]) : 0.f), act));
        }
    }
}

// In place on NHWC y (n values, c channels innermost): y = lp_act(y + bias[channel], act).
__global__ void bias_act_nhwc_bf16_kernel(int64_t n, int c, const float *bias, float act, uint16_t *y) {
    GRID_LOOP(i, (n + 1) / 2) {
        const int64_t e = 2 * i;
        const int c0 = (int)(e % c), c1 = c0 + 1 == c ? 0 : c0 + 1;
        const float b0 = bias ? bias[c0] : 0.f, b1 = bias ? bias[c1] : 0.f;
        if (e + 1 < n) {
            uint32_t *w = reinterpret_cast<uint32_t *>(y) + i;
            const uint32_t u = *w;
            *w = pack2(lp_act(lo16(u) + b0, act), lp_act(hi16(u) + b1, act));
        } else {
            y[e] = to_bf16(lp_act(from_bf16(y[e]) + b0, act));
        }
    }
}

// Does ReLU's backward of kind k pass gradient g where the output is y? LP_UN_RELU:
// y > 0; LP_UN_HARDTANH (ReLU6's, bounds 0 and cap): 0 < y < cap; guided backprop's
// rule: y > 0 and g > 0; deconvnet's: g > 0 (reads no y).
__device__ __forceinline__ bool relu_passes(int k, float cap, float y, float g) {
    if (k == LP_UN_RELU_DECONV) return g > 0.f;
    return y > 0.f && (k == LP_UN_RELU || (k == LP_UN_HARDTANH ? y < cap : g > 0.f));
}

// ReLU's input gradient (or a rule's, above) on packed values: dx = (dx +) dy where it
// passes, else 0; a gradient's first contribution overwrites (the executor skips
// clearing it), later ones add.
__global__ void relu_bwd_bf16_kernel(int k, float cap, int64_t n, const uint16_t *y, const uint16_t *dy, uint16_t *dx,
                                     int accumulate) {
    GRID_LOOP(i, (n + 1) / 2) {
        const int64_t e = 2 * i;
        if (e + 1 < n) {
            const uint32_t yy = y ? reinterpret_cast<const uint32_t *>(y)[i] : 0u;
            const uint32_t g = reinterpret_cast<const uint32_t *>(dy)[i];
            const bool p0 = relu_passes(k, cap, lo16(yy), lo16(g)), p1 = relu_passes(k, cap, hi16(yy), hi16(g));
            uint32_t *w = reinterpret_cast<uint32_t *>(dx) + i;
            if (accumulate) {
                const uint32_t d = *w;
                *w = pack2(lo16(d) + (p0 ? lo16(g) : 0.f), hi16(d) + (p1 ? hi16(g) : 0.f));
            } else {
                *w = (p0 ? g & 0xffffu : 0u) | (p1 ? g & 0xffff0000u : 0u); // exact: no rounding
            }
        } else {
            const float g0 = relu_passes(k, cap, y ? from_bf16(y[e]) : 0.f, from_bf16(dy[e])) ? from_bf16(dy[e]) : 0.f;
            dx[e] = to_bf16(accumulate ? from_bf16(dx[e]) + g0 : g0);
        }
    }
}

// Images go in launches of at most 65535 (the grid's z limit).
#define FOR_IMAGE_BATCHES(n, b0, nb)                                                                                   \
    for (int b0 = 0, nb = (n) < 65535 ? (n) : 65535; b0 < (n); b0 += nb, nb = (n) - b0 < 65535 ? (n) - b0 : 65535)

static dim3 tile_grid(int c, int64_t hw, int nb) {
    return dim3((unsigned)((hw + TILE - 1) / TILE), (unsigned)((c + TILE - 1) / TILE), (unsigned)nb);
}

// The packed kernels above read two values per 32-bit word: a buffer that is not
// 4-byte aligned would fault on a GPU (not on the emulator), so it is refused here.
static bool aligned4(const void *p) { return ((uintptr_t)p & 3u) == 0; }
#define REQUIRE_ALIGNED4(...)                                                                                          \
    do {                                                                                                               \
        const void *ps_[] = {__VA_ARGS__};                                                                             \
        for (const void *p_ : ps_)                                                                                     \
            if (!aligned4(p_)) return (int)cudaErrorMisalignedAddress;                                                 \
    } while (0)

extern "C" {

int lp_k_f32_to_bf16(lp_stream s, int64_t n, const float *x, uint16_t *y) {
    if (n <= 0) return 0;
    f32_to_bf16_kernel<<<grid_for(n), LP_THREADS, 0, (cudaStream_t)s>>>(n, x, y);
    LAUNCH_END;
}

int lp_k_nchw_to_nhwc_bf16(lp_stream s, int n, int c, int64_t hw, const float *x, uint16_t *y) {
    const int64_t total = (int64_t)n * c * hw;
    if (total <= 0) return 0;
    if (c <= FEW_CHANNELS) {
        nchw_to_nhwc_few_kernel<<<grid_for(total), LP_THREADS, 0, (cudaStream_t)s>>>(c, hw, total, x, y);
        LAUNCH_END;
    }
    FOR_IMAGE_BATCHES(n, b0, nb) {
        const int64_t off = (int64_t)b0 * c * hw;
        nchw_to_nhwc_kernel<<<tile_grid(c, hw, nb), dim3(TILE, TILE_ROWS), 0, (cudaStream_t)s>>>(c, hw, x + off,
                                                                                                  y + off);
    }
    LAUNCH_END;
}

int lp_k_nhwc_bf16_to_nchw(lp_stream s, int n, int c, int64_t hw, const uint16_t *x, const float *bias, float *y,
                           int accumulate, float act) {
    const int64_t total = (int64_t)n * c * hw;
    if (total <= 0) return 0;
    if (c <= FEW_CHANNELS) {
        nhwc_to_nchw_few_kernel<<<grid_for(total), LP_THREADS, 0, (cudaStream_t)s>>>(c, hw, total, x, bias, y,
                                                                                     accumulate, act);
        LAUNCH_END;
    }
    FOR_IMAGE_BATCHES(n, b0, nb) {
        const int64_t off = (int64_t)b0 * c * hw;
        nhwc_to_nchw_kernel<<<tile_grid(c, hw, nb), dim3(TILE, TILE_ROWS), 0, (cudaStream_t)s>>>(
            c, hw, x + off, bias, y + off, accumulate, act);
    }
    LAUNCH_END;
}

int lp_k_add_bf16(lp_stream s, int64_t n, const uint16_t *a, const uint16_t *b, uint16_t *y, float act) {
    if (n <= 0) return 0;
    REQUIRE_ALIGNED4(a, b, y);
    add_bf16_kernel<<<grid_for((n + 1) / 2), LP_THREADS, 0, (cudaStream_t)s>>>(n, a, b, y, act);
    LAUNCH_END;
}

int lp_k_relu_bwd_bf16(lp_stream s, int k, float cap, int64_t n, const uint16_t *y, const uint16_t *dy, uint16_t *dx,
                       int accumulate) {
    if (n <= 0) return 0;
    REQUIRE_ALIGNED4(y, dy, dx);
    relu_bwd_bf16_kernel<<<grid_for((n + 1) / 2), LP_THREADS, 0, (cudaStream_t)s>>>(k, cap, n, y, dy, dx, accumulate);
    LAUNCH_END;
}

int lp_k_bias_act_nhwc_bf16(lp_stream s, int64_t n, int c, const float *bias, float act, uint16_t *y) {
    if (n <= 0 || c <= 0 || (!bias && !(act > 0.f))) return 0;
    REQUIRE_ALIGNED4(y);
    bias_act_nhwc_bf16_kernel<<<grid_for((n + 1) / 2), LP_THREADS, 0, (cudaStream_t)s>>>(n, c, bias, act, y);
    LAUNCH_END;
}

} // extern "C"
