/* lp_emu_kernel.h (Loupe's CUDA emulator) — the CUDA C kernel language for
 * the kernels (kernels/, .cu) compiled as C++ on the CPU. Each block's threads run as fibers on one
 * host thread: a thread runs until __syncthreads (or a warp shuffle) and the next one
 * goes on, so barriers, shared memory and warp exchanges behave as on a GPU, in the
 * order LOUPE_EMU_ORDER names (forward, reverse, shuffle: emu_runtime.cpp), so races
 * show where some order makes a read see a stale value; a barrier (or warp exchange)
 * that some threads (lanes the mask names) skip by returning stops the emulator. `kernel<<<g, b, sh, s>>>(a)`
 * is rewritten by tests/emu/cu2cpp.py to `lp_emu::Launch(g, b, sh, s).run(kernel, a)`. */
#ifndef LP_EMU_KERNEL_H
#define LP_EMU_KERNEL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct int2 { int x, y; };
struct int4 { int x, y, z, w; };
struct float2 { float x, y; };
struct float4 { float x, y, z, w; };
static inline int2 make_int2(int x, int y) { return {x, y}; }
static inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
static inline float2 make_float2(float x, float y) { return {x, y}; }
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
static const int warpSize = 32;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __shared__ static /* one block runs at a time: a function static is its shared memory */
#define __launch_bounds__(...)

extern "C" {
void lp_emu_syncthreads(void);
/* A warp barrier for the lanes `mask` names; every live lane of the warp must reach it
 * (partial-mask exchanges among fewer lanes are not emulated: they end in the
 * emulator's deadlock report). */
void lp_emu_syncwarp(unsigned mask = 0xffffffffu);
void *lp_emu_lane_slot(unsigned tid); /* 8 bytes a thread, for warp exchanges */
/* After each __shared__ declaration (cu2cpp.py): NaN bytes into the array when the
 * block's first thread reaches it, as shared memory starts undefined on a GPU. */
void lp_emu_shared(const volatile void *p, size_t bytes);
}
#define __syncthreads() lp_emu_syncthreads()
#define __syncwarp(...) lp_emu_syncwarp(__VA_ARGS__)
static inline void __threadfence(void) {}
static inline void __threadfence_block(void) {}

template <class T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    static_assert(sizeof(T) <= 8, "lp_emu: shuffle of a type over 8 bytes");
    const unsigned n = blockDim.x * blockDim.y * blockDim.z;
    const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    memcpy(lp_emu_lane_slot(t), &v, sizeof v);
    lp_emu_syncwarp(mask); /* every lane has written */
    T r = v;
    if ((t % 32) % (unsigned)width + delta < (unsigned)width && t + delta < n) memcpy(&r, lp_emu_lane_slot(t + delta), sizeof r);
    lp_emu_syncwarp(mask); /* every lane has read before the slots are written again */
    return r;
}

template <class T, class U> static inline T atomicAdd(T *p, U v) {
    T old = *p;
    *p = (T)(old + (T)v);
    return old;
}
template <class T, class U> static inline T atomicMax(T *p, U v) {
    T old = *p;
    if ((T)v > old) *p = (T)v;
    return old;
}
template <class T, class U> static inline T atomicMin(T *p, U v) {
    T old = *p;
    if ((T)v < old) *p = (T)v;
    return old;
}
template <class T, class U, class V> static inline T atomicCAS(T *p, U cmp, V v) {
    T old = *p;
    if (old == (T)cmp) *p = (T)v;
    return old;
}
template <class T> static inline T __ldcg(const T *p) { return *p; }
template <class T> static inline T __ldg(const T *p) { return *p; }
template <class T> static inline void __stcg(T *p, T v) { *p = v; }
static inline float __fmul_rn(float a, float b) {
    volatile float r = a * b; /* no contraction into an FMA, as _rn promises */
    return r;
}
static inline float __fadd_rn(float a, float b) {
    volatile float r = a + b;
    return r;
}
static inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
static inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
static inline int __clzll(long long x) { return x ? __builtin_clzll((unsigned long long)x) : 64; }

namespace lp_emu {
/* Runs (or, on a capturing stream, records) body once per thread of the grid. */
void launch(dim3 grid, dim3 block, size_t shmem, void *stream, std::function<void()> body, const void *kernel);

struct Launch {
    dim3 g, b;
    size_t sh;
    void *s;
    template <class S = void *>
    Launch(dim3 grid, dim3 block, size_t shmem = 0, S stream = nullptr) : g(grid), b(block), sh(shmem), s((void *)stream) {}
    template <class... P, class... A> void run(void (*k)(P...), A &&...a) {
        /* Arguments are copied at the launch, as CUDA copies them into the launch. */
        auto args = std::make_tuple(static_cast<std::decay_t<P>>(std::forward<A>(a))...);
        launch(g, b, sh, s, [k, args]() { std::apply(k, args); }, (const void *)k);
    }
};
} // namespace lp_emu

#endif
