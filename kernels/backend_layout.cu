// backend_layout.cu — the CUDA backend's data movement: transpose (any permutation up
// to LP_MAX_DIMS), strided 2-D copies, general strided slices and padding, forward
// and accumulating backward. A thread per output element; per-dimension index math
// in registers. CPU twin: engine/cpu/cpu_layout.c.
// Backward writes that can collide (a step-0 slice, reflect/edge padding) use
// atomicAdd, so their sums may round differently from the CPU's serial order; every
// other write has exactly one writer.
#include <cuda_runtime.h>

#include "backend_common.cuh"
#include "cuda/cuda_kernels.h"

struct dims6 {
    int nd;
    int64_t s[LP_MAX_DIMS]; // shape walked (the output's)
    int64_t a[LP_MAX_DIMS]; // per-dim stride (or step*stride) into the other tensor
    int64_t b[LP_MAX_DIMS]; // per-dim start (slices) or pad begin
    int64_t n[LP_MAX_DIMS]; // per-dim size of the other tensor (pads)
};

__global__ void transpose_kernel(dims6 p, int64_t total, const float *x, float *y, int accumulate) {
    GRID_LOOP(i, total) {
        int64_t q = i, off = 0;
        for (int d = p.nd - 1; d >= 0; d--) {
            off += (q % p.s[d]) * p.a[d];
            q /= p.s[d];
        }
        y[i] = accumulate ? y[i] + x[off] : x[off];
    }
}

__global__ void copy2d_kernel(int64_t outer, int64_t len, const float *src, int64_t ss, float *dst, int64_t ds,
                              int accumulate) {
    GRID_LOOP(i, outer * len) {
        int64_t o = i / len, j = i % len;
        float v = src[o * ss + j];
        float *d = dst + o * ds + j;
        *d = accumulate ? *d + v : v;
    }
}

// y[i] = x[sum (start + idx*step) * xstride] (fwd) or its reverse, accumulated (bwd).
__global__ void slice_kernel(dims6 p, int64_t total, float *x, float *y, int bwd, int atomic) {
    GRID_LOOP(i, total) {
        int64_t q = i, off = 0;
        for (int d = p.nd - 1; d >= 0; d--) {
            off += (p.b[d] + (q % p.s[d]) * p.n[d]) * p.a[d];
            q /= p.s[d];
        }
        if (!bwd) y[i] = x[off];
        else if (atomic) atomicAdd(x + off, y[i]);
        else x[off] += y[i];
    }
}

// Source index along one axis for output index i (pad begin p, size n), or -1 for
// the constant: the CPU twin's pad_src.
__device__ __forceinline__ int64_t pad_src(int64_t i, int64_t p, int64_t n, int mode) {
    int64_t s = i - p;
    if (s >= 0 && s < n) return s;
    if (mode == 0 || n <= 0) return -1;
    if (mode == 2) return s < 0 ? 0 : n - 1;
    if (n == 1) return 0;
    int64_t period = 2 * (n - 1);
    s %= period;
    if (s < 0) s += period;
    return s < n ? s : period - s;
}

__global__ void pad_kernel(dims6 p, int64_t total, int mode, float value, float *x, float *y, int bwd) {
    GRID_LOOP(i, total) {
        int64_t q = i, off = 0;
        int inside = 1;
        for (int d = p.nd - 1; d >= 0; d--) {
            int64_t m = pad_src(q % p.s[d], p.b[d], p.n[d], mode);
            q /= p.s[d];
            if (m < 0) inside = 0;
            off += m * p.a[d];
        }
        if (!bwd) y[i] = inside ? x[off] : value;
        else if (inside) {
            if (mode == 0) x[off] += y[i];
            else atomicAdd(x + off, y[i]);
        }
    }
}

extern "C" {

int lp_k_transpose(lp_stream s, int ndim, const int64_t *shape, const int *perm, const float *x, float *y,
                   int accumulate) {
    dims6 p;
    int64_t xs[LP_MAX_DIMS], st = 1, total = 1;
    if (ndim == 0) {
        p.nd = 1;
        p.s[0] = 1;
        p.a[0] = 0;
    } else {
        for (int d = ndim - 1; d >= 0; d--) {
            xs[d] = st;
            st *= shape[d];
        }
        p.nd = ndim;
        for (int d = 0; d < ndim; d++) {
            p.s[d] = shape[perm[d]];
            p.a[d] = xs[perm[d]];
            total *= p.s[d];
        }
    }
    if (total <= 0) return 0;
    transpose_kernel<<<grid_for(total), LP_THREADS, 0, (cudaStream_t)s>>>(p, total, x, y, accumulate);
    LAUNCH_END;
}

int lp_k_copy2d(lp_stream s, int64_t outer, int64_t len, const float *src, int64_t src_stride, float *dst,
                int64_t dst_stride, int accumulate) {
    if (outer <= 0 || len <= 0) return 0;
    // rows of dst that overlap would be written by two threads: a race on a GPU
    if (outer > 1 && (dst_stride < 0 ? -dst_stride : dst_stride) < len) return (int)cudaErrorInvalidValue;
    copy2d_kernel<<<grid_for(outer * len), LP_THREADS, 0, (cudaStream_t)s>>>(outer, len, src, src_stride, dst,
                                                                              dst_stride, accumulate);
    LAUNCH_END;
}

int lp_k_slice(lp_stream s, int ndim, const int64_t *xshape, const int64_t *yshape, const int64_t *start,
               const int64_t *step, float *x, float *y, int bwd) {
    dims6 p;
    int64_t st = 1, total = 1;
    int atomic = 0;
    p.nd = ndim;
    for (int d = ndim - 1; d >= 0; d--) {
        p.s[d] = yshape[d];
        p.a[d] = st;
        p.b[d] = start[d];
        p.n[d] = step[d];
        st *= xshape[d];
        total *= yshape[d];
        if (step[d] == 0 && yshape[d] > 1) atomic = 1;
    }
    if (total <= 0) return 0;
    slice_kernel<<<grid_for(total), LP_THREADS, 0, (cudaStream_t)s>>>(p, total, x, y, bwd, atomic);
    LAUNCH_END;
}

static int64_t pad_setup(dims6 *p, int ndim, const int64_t *xshape, const int64_t *pads) {
    int64_t st = 1, total = 1;
    p->nd = ndim;
    for (int d = ndim - 1; d >= 0; d--) {
        p->s[d] = xshape[d] + pads[d] + pads[ndim + d];
        p->a[d] = st;
        p->b[d] = pads[d];
        p->n[d] = xshape[d];
        st *= xshape[d];
        total *= p->s[d];
    }
    return total;
}

int lp_k_pad_fwd(lp_stream s, int ndim, const int64_t *xshape, const int64_t *pads, int mode, float value,
                 const float *x, float *y) {
    dims6 p;
    int64_t total = pad_setup(&p, ndim, xshape, pads);
    if (total <= 0) return 0;
    pad_kernel<<<grid_for(total), LP_THREADS, 0, (cudaStream_t)s>>>(p, total, mode, value, (float *)x, y, 0);
    LAUNCH_END;
}

int lp_k_pad_bwd(lp_stream s, int ndim, const int64_t *xshape, const int64_t *pads, int mode, const float *dy,
                 float *dx) {
    dims6 p;
    int64_t total = pad_setup(&p, ndim, xshape, pads);
    if (total <= 0) return 0;
    pad_kernel<<<grid_for(total), LP_THREADS, 0, (cudaStream_t)s>>>(p, total, mode, 0.f, dx, (float *)dy, 1);
    LAUNCH_END;
}

} // extern "C"
