// backend_elementwise.cu — the CUDA backend's elementwise kernels: unary activations
// and broadcast binary ops (forward and accumulating backward), reduce_sum /
// broadcast over a broadcast descriptor, and the BLAS-1 / optimizer helpers.
// CPU twins: engine/cpu/cpu_elementwise.c and cpu_backend.c (same formulas, same
// PyTorch conventions at the kinks). Reductions are tree sums in a fixed order, so
// results do not depend on scheduling.
#include <cuda_runtime.h>
#include <math.h>

#include "backend_common.cuh"
#include "cuda/cuda_kernels.h"

// ---- unary -------------------------------------------------------------------

__device__ __forceinline__ float unary_f(int k, float p0, float p1, float x) {
    switch (k) {
    case LP_UN_IDENTITY: return x;
    case LP_UN_RELU:
    case LP_UN_RELU_GUIDED:
    case LP_UN_RELU_DECONV: return x > 0.f ? x : 0.f;
    case LP_UN_LEAKY_RELU: return x > 0.f ? x : p0 * x;
    case LP_UN_CLIP:
    case LP_UN_HARDTANH: return fminf(fmaxf(x, p0), p1);
    case LP_UN_SIGMOID: return 1.f / (1.f + expf(-x));
    case LP_UN_HARD_SIGMOID: return fmaxf(0.f, fminf(1.f, __fadd_rn(__fmul_rn(p0, x), p1))); // unfused, as the CPU
    case LP_UN_HARD_SWISH: return x * fminf(fmaxf(x + 3.f, 0.f), 6.f) * (1.f / 6.f);
    case LP_UN_ERF: return erff(x);
    case LP_UN_GELU: return lp_gelu(x);
    case LP_UN_GELU_TANH: return lp_gelu_tanh(x);
    case LP_UN_SQRT: return sqrtf(x);
    case LP_UN_TANH: return tanhf(x);
    case LP_UN_EXP: return expf(x);
    case LP_UN_LOG: return logf(x);
    case LP_UN_NEG: return -x;
    case LP_UN_ABS: return fabsf(x);
    case LP_UN_POW: return p0 == 2.f ? x * x : powf(x, p0);
    default: return p0 * x + p1; // LP_UN_SCALE
    }
}

__device__ __forceinline__ float unary_g(int k, float p0, float p1, float x, float y, float g) {
    switch (k) {
    case LP_UN_IDENTITY: return g;
    case LP_UN_RELU: return y > 0.f ? g : 0.f; // y > 0 iff x > 0: x may be freed
    case LP_UN_LEAKY_RELU: return x > 0.f ? g : p0 * g;
    case LP_UN_CLIP: return (x >= p0 && x <= p1) ? g : 0.f;
    case LP_UN_HARDTANH: return (y > p0 && y < p1) ? g : 0.f; // from y: x may be freed
    case LP_UN_SIGMOID: return g * y * (1.f - y);
    case LP_UN_HARD_SIGMOID: {
        float v = __fadd_rn(__fmul_rn(p0, x), p1); // unfused: the same kink decisions as the CPU
        return (v > 0.f && v < 1.f) ? p0 * g : 0.f;
    }
    case LP_UN_HARD_SWISH: return x < -3.f ? 0.f : x <= 3.f ? g * (x * (1.f / 3.f) + 0.5f) : g;
    case LP_UN_ERF: return g * 1.1283791670955126f * expf(-x * x);
    case LP_UN_GELU: return g * lp_gelu_grad(x);
    case LP_UN_GELU_TANH: return g * lp_gelu_tanh_grad(x);
    case LP_UN_SQRT: return g * 0.5f / y;
    case LP_UN_TANH: return g * (1.f - y * y);
    case LP_UN_EXP: return g * y;
    case LP_UN_LOG: return g / x;
    case LP_UN_NEG: return -g;
    case LP_UN_ABS: return x > 0.f ? g : x < 0.f ? -g : 0.f;
    case LP_UN_POW: return p0 == 2.f ? 2.f * x * g : g * p0 * powf(x, p0 - 1.f);
    case LP_UN_RELU_GUIDED: return y > 0.f && g > 0.f ? g : 0.f; // rules, not derivatives
    case LP_UN_RELU_DECONV: return g > 0.f ? g : 0.f;
    default: return p0 * g; // LP_UN_SCALE
    }
}

__global__ void unary_fwd_kernel(int k, float p0, float p1, const float *x, float *y, int64_t n) {
    GRID_LOOP(i, n) y[i] = unary_f(k, p0, p1, x[i]);
}

__global__ void unary_bwd_kernel(int k, float p0, float p1, const float *x, const float *y, const float *dy,
                                 float *dx, int64_t n, int accumulate) {
    GRID_LOOP(i, n) {
        const float g = unary_g(k, p0, p1, x ? x[i] : 0.f, y ? y[i] : 0.f, dy[i]);
        dx[i] = accumulate ? dx[i] + g : g; // a first gradient is written: dx need not be cleared
    }
}

// ---- broadcast ---------------------------------------------------------------

// Offsets of a and b for output element i (row-major over bc.shape).
__device__ __forceinline__ void bc_off(const lp_bcast &bc, int64_t i, int64_t *oa, int64_t *ob) {
    int64_t a = 0, b = 0;
    for (int d = bc.ndim - 1; d >= 0; d--) {
        int64_t q = i % bc.shape[d];
        i /= bc.shape[d];
        a += q * bc.sa[d];
        b += q * bc.sb[d];
    }
    *oa = a;
    *ob = b;
}

__device__ __forceinline__ float binary_f(int k, float a, float b) {
    switch (k) {
    case LP_BIN_ADD: return a + b;
    case LP_BIN_SUB: return a - b;
    case LP_BIN_MUL: return a * b;
    case LP_BIN_DIV: return a / b;
    default: return powf(a, b);
    }
}

__global__ void binary_same_kernel(int k, const float *a, const float *b, float *y, int64_t n) {
    GRID_LOOP(i, n) y[i] = binary_f(k, a[i], b[i]);
}

__global__ void add_relu_kernel(const float *a, const float *b, float *y, int64_t n) {
    GRID_LOOP(i, n) y[i] = unary_f(LP_UN_RELU, 0.f, 0.f, binary_f(LP_BIN_ADD, a[i], b[i]));
}

__global__ void binary_fwd_kernel(int k, lp_bcast bc, int64_t n, const float *a, const float *b, float *y) {
    GRID_LOOP(i, n) {
        int64_t oa, ob;
        bc_off(bc, i, &oa, &ob);
        y[i] = binary_f(k, a[oa], b[ob]);
    }
}

// d(a op b)/d(which) * g, as the CPU twin's bin_row_bwd.
__device__ __forceinline__ float binary_g(int k, int which, float a, float b, float y, int has_y, float g) {
    switch (k) {
    case LP_BIN_ADD: return g;
    case LP_BIN_SUB: return which ? -g : g;
    case LP_BIN_MUL: return which ? g * a : g * b;
    case LP_BIN_DIV: return which ? -g * a / (b * b) : g / b;
    default: {
        if (!which) return g * b * powf(a, b - 1.f);
        float yv = has_y ? y : powf(a, b);
        return a > 0.f ? g * yv * logf(a) : 0.f;
    }
    }
}

__global__ void binary_bwd_kernel(int k, lp_bcast bc, int64_t n, int which, int direct, const float *a,
                                  const float *b, const float *y, const float *dy, float *g) {
    GRID_LOOP(i, n) {
        int64_t oa, ob;
        bc_off(bc, i, &oa, &ob);
        const bool reads = k != LP_BIN_ADD && k != LP_BIN_SUB; // Add and Sub never read their operands
        float v = binary_g(k, which, reads ? a[oa] : 0.f, reads ? b[ob] : 0.f, y ? y[i] : 0.f, y != NULL, dy[i]);
        if (direct) g[which ? ob : oa] += v;
        else g[i] = v;
    }
}

// reduce_sum: the kept dims (sb != 0 or size 1) index y; the reduced dims (sb == 0,
// size > 1) are summed. Set up on the host as two small shapes.
struct red_plan {
    int nk, nr;
    int64_t ks[LP_MAX_DIMS], kxa[LP_MAX_DIMS], kyb[LP_MAX_DIMS]; // kept: size, x stride, y stride
    int64_t rs[LP_MAX_DIMS], rxa[LP_MAX_DIMS];                   // reduced: size, x stride
    int64_t nkept, nred;
};

__device__ __forceinline__ void red_kept(const red_plan &p, int64_t o, int64_t *xo, int64_t *yo) {
    int64_t xa = 0, yb = 0;
    for (int d = p.nk - 1; d >= 0; d--) {
        int64_t q = o % p.ks[d];
        o /= p.ks[d];
        xa += q * p.kxa[d];
        yb += q * p.kyb[d];
    }
    *xo = xa;
    *yo = yb;
}

__device__ __forceinline__ int64_t red_inner(const red_plan &p, int64_t r) {
    int64_t xa = 0;
    for (int d = p.nr - 1; d >= 0; d--) {
        int64_t q = r % p.rs[d];
        r /= p.rs[d];
        xa += q * p.rxa[d];
    }
    return xa;
}

// Few terms per output: a thread per output, summed in order.
__global__ void reduce_thread_kernel(red_plan p, const float *x, float *y, float scale, int accumulate) {
    GRID_LOOP(o, p.nkept) {
        int64_t xo, yo;
        red_kept(p, o, &xo, &yo);
        float s = 0.f;
        for (int64_t r = 0; r < p.nred; r++) s += x[xo + red_inner(p, r)];
        y[yo] = accumulate ? y[yo] + scale * s : scale * s;
    }
}

// Many terms per output: a block per output, a strided partial per thread, then a tree.
__global__ void reduce_block_kernel(red_plan p, const float *x, float *y, float scale, int accumulate) {
    __shared__ float part[LP_THREADS];
    for (int64_t o = blockIdx.x; o < p.nkept; o += gridDim.x) {
        int64_t xo, yo;
        red_kept(p, o, &xo, &yo);
        float s = 0.f;
        for (int64_t r = threadIdx.x; r < p.nred; r += blockDim.x) s += x[xo + red_inner(p, r)];
        part[threadIdx.x] = s;
        __syncthreads();
        for (int w = blockDim.x / 2; w > 0; w >>= 1) {
            if ((int)threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
            __syncthreads();
        }
        if (threadIdx.x == 0) y[yo] = accumulate ? y[yo] + scale * part[0] : scale * part[0];
        __syncthreads();
    }
}

__global__ void broadcast_kernel(lp_bcast bc, int64_t n, const float *y, float *x, float scale, int accumulate) {
    GRID_LOOP(i, n) {
        int64_t oa, ob;
        bc_off(bc, i, &oa, &ob);
        x[oa] = accumulate ? x[oa] + scale * y[ob] : scale * y[ob];
    }
}

// ---- BLAS-1 and the optimizer --------------------------------------------------

__global__ void axpy_kernel(int64_t n, float a, const float *x, float *y) { GRID_LOOP(i, n) y[i] += a * x[i]; }
__global__ void scal_kernel(int64_t n, float a, float *x) { GRID_LOOP(i, n) x[i] *= a; }
__global__ void fill_kernel(int64_t n, float v, float *x) { GRID_LOOP(i, n) x[i] = v; }
__global__ void sgd_kernel(int64_t n, float lr, float mu, float wd, float *w, const float *g, float *v) {
    GRID_LOOP(i, n) {
        float vi = mu * v[i] + g[i] + wd * w[i];
        v[i] = vi;
        w[i] -= lr * vi;
    }
}

// ---- launchers -----------------------------------------------------------------

static int64_t bc_numel(const lp_bcast *bc) {
    int64_t n = 1;
    for (int d = 0; d < bc->ndim; d++) n *= bc->shape[d];
    return n;
}

// Is the operand with strides s laid out exactly like the (contiguous) output?
static int bc_dense(const lp_bcast *bc, const int64_t *s) {
    int64_t st = 1;
    for (int d = bc->ndim - 1; d >= 0; d--) {
        if (bc->shape[d] != 1 && s[d] != st) return 0;
        st *= bc->shape[d];
    }
    return 1;
}

extern "C" {

int lp_k_unary_fwd(lp_stream s, int kind, float p0, float p1, const float *x, float *y, int64_t n) {
    if (n <= 0) return 0;
    unary_fwd_kernel<<<grid_for(n), LP_THREADS, 0, (cudaStream_t)s>>>(kind, p0, p1, x, y, n);
    LAUNCH_END;
}

int lp_k_unary_bwd(lp_stream s, int kind, float p0, float p1, const float *x, const float *y, const float *dy,
                   float *dx, int64_t n, int accumulate) {
    if (n <= 0) return 0;
    unary_bwd_kernel<<<grid_for(n), LP_THREADS, 0, (cudaStream_t)s>>>(kind, p0, p1, x, y, dy, dx, n, accumulate);
    LAUNCH_END;
}

int lp_k_binary_fwd(lp_stream s, int kind, const lp_bcast *bc, const float *a, const float *b, float *y) {
    int64_t n = bc_numel(bc);
    if (n <= 0) return 0;
    if (bc_dense(bc, bc->sa) && bc_dense(bc, bc->sb))
        binary_same_kernel<<<grid_for(n), LP_THREADS, 0, (cudaStream_t)s>>>(kind, a, b, y, n);
    else
        binary_fwd_kernel<<<grid_for(n), LP_THREADS, 0, (cudaStream_t)s>>>(kind, *bc, n, a, b, y);
    LAUNCH_END;
}

int lp_k_add_relu(lp_stream s, const float *a, const float *b, float *y, int64_t n) {
    if (n <= 0) return 0;
    add_relu_kernel<<<grid_for(n), LP_THREADS, 0, (cudaStream_t)s>>>(a, b, y, n);
    LAUNCH_END;
}

// A launch whose threads would write one address more than once: a race on a GPU (lost
// updates), which the one-thread-at-a-time emulator cannot show. Refused up front.
static int one_writer(const lp_bcast *bc, const int64_t *stride) {
    for (int d = 0; d < bc->ndim; d++)
        if (bc->shape[d] > 1 && stride[d] == 0) return 0;
    return 1;
}

int lp_k_binary_bwd(lp_stream s, int kind, const lp_bcast *bc, int which, int direct, const float *a,
                    const float *b, const float *y, const float *dy, float *g) {
    int64_t n = bc_numel(bc);
    if (n <= 0) return 0;
    // direct: g is written at the operand's own offset, so it must not be broadcast
    if (direct && !one_writer(bc, which ? bc->sb : bc->sa)) return (int)cudaErrorInvalidValue;
    binary_bwd_kernel<<<grid_for(n), LP_THREADS, 0, (cudaStream_t)s>>>(kind, *bc, n, which, direct, a, b, y, dy, g);
    LAUNCH_END;
}

int lp_k_reduce_sum(lp_stream s, const lp_bcast *bc, const float *x, float *y, float scale, int accumulate) {
    red_plan p;
    p.nk = p.nr = 0;
    p.nkept = p.nred = 1;
    for (int d = 0; d < bc->ndim; d++) {
        if (bc->shape[d] == 0) return 0;
        if (bc->sb[d] == 0 && bc->shape[d] > 1) {
            p.rs[p.nr] = bc->shape[d];
            p.rxa[p.nr++] = bc->sa[d];
            p.nred *= bc->shape[d];
        } else if (bc->shape[d] > 1) {
            p.ks[p.nk] = bc->shape[d];
            p.kxa[p.nk] = bc->sa[d];
            p.kyb[p.nk++] = bc->sb[d];
            p.nkept *= bc->shape[d];
        }
    }
    if (p.nred < 64) {
        reduce_thread_kernel<<<grid_for(p.nkept), LP_THREADS, 0, (cudaStream_t)s>>>(p, x, y, scale, accumulate);
    } else {
        int64_t blocks = p.nkept < 65535 * 4 ? p.nkept : 65535 * 4;
        reduce_block_kernel<<<(unsigned)blocks, LP_THREADS, 0, (cudaStream_t)s>>>(p, x, y, scale, accumulate);
    }
    LAUNCH_END;
}

int lp_k_broadcast(lp_stream s, const lp_bcast *bc, const float *y, float *x, float scale, int accumulate) {
    int64_t n = bc_numel(bc);
    if (n <= 0) return 0;
    if (!one_writer(bc, bc->sa)) return (int)cudaErrorInvalidValue; // x is the full shape
    broadcast_kernel<<<grid_for(n), LP_THREADS, 0, (cudaStream_t)s>>>(*bc, n, y, x, scale, accumulate);
    LAUNCH_END;
}

int lp_k_axpy(lp_stream s, int64_t n, float a, const float *x, float *y) {
    if (n <= 0) return 0;
    axpy_kernel<<<grid_for(n), LP_THREADS, 0, (cudaStream_t)s>>>(n, a, x, y);
    LAUNCH_END;
}

int lp_k_scal(lp_stream s, int64_t n, float a, float *x) {
    if (n <= 0) return 0;
    scal_kernel<<<grid_for(n), LP_THREADS, 0, (cudaStream_t)s>>>(n, a, x);
    LAUNCH_END;
}

int lp_k_fill(lp_stream s, int64_t n, float v, float *x) {
    if (n <= 0) return 0;
    fill_kernel<<<grid_for(n), LP_THREADS, 0, (cudaStream_t)s>>>(n, v, x);
    LAUNCH_END;
}

int lp_k_sgd_momentum(lp_stream s, int64_t n, float lr, float mu, float wd, float *w, const float *g, float *v) {
    if (n <= 0) return 0;
    sgd_kernel<<<grid_for(n), LP_THREADS, 0, (cudaStream_t)s>>>(n, lr, mu, wd, w, g, v);
    LAUNCH_END;
}

} // extern "C"
