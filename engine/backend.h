/* backend.h — the private lp_backend function table. The CPU backend (engine/cpu/)
 * and the CUDA backend (engine/cuda/ + kernels/) each fill one; ops and methods are
 * written once against it. All float buffers are float32, row-major (NCHW), on the
 * backend's device. "Accumulate" means the result is added (+=) to the destination. */
#ifndef LOUPE_BACKEND_H
#define LOUPE_BACKEND_H

#include "loupe.h"
#include <math.h>

/* 2-D convolution (1-D is H = 1). Weights: K x (C/groups) x KH x KW. */
typedef struct lp_conv_desc {
    int n, c, h, w;        /* input */
    int k, oh, ow;         /* output channels and size */
    int kh, kw;
    int sh, sw;            /* strides */
    int ph0, pw0, ph1, pw1;/* pads: begin (top, left), end (bottom, right) */
    int dh, dw;            /* dilations */
    int groups;
    float act;             /* forward only, when > 0: y = min(max(0, conv + b), act), the
                            * activation fused into the convolution's last pass (the
                            * executor sets it: INFINITY for a ReLU, 6 for ReLU6's Clip) */
    int accumulate;        /* forward only: y = y + conv + b (before the activation), as
                            * the backward passes add (ConvTranspose's input gradient) */
    int x_packed, y_packed;/* backends with `packed`: x / y (conv_fwd), dx / dy
                            * (conv_bwd_data, which accumulates into a packed dx
                            * too) is packed (bf16 NHWC, see lp_backend.packed);
                            * conv_fwd: not with accumulate */
    int overwrite;         /* conv_bwd_data: dx is written, not added to (a gradient's
                            * first contribution: the executor skips its zeroing) */
} lp_conv_desc;

typedef struct lp_pool_desc {
    int n, c, h, w;
    int oh, ow;
    int kh, kw, sh, sw, ph0, pw0, ph1, pw1, dh, dw;
    int is_max;             /* 1 max, 0 average */
    int count_include_pad;  /* average: divide by the full window incl. padding */
} lp_pool_desc;

/* Broadcast of two operands to one output shape (numpy rules). Strides are in
 * elements, 0 on broadcast dimensions. Dimensions are right-aligned and padded to
 * `ndim`. */
typedef struct lp_bcast {
    int ndim;
    int64_t shape[LP_MAX_DIMS];  /* output shape */
    int64_t sa[LP_MAX_DIMS];     /* strides of a (0 where broadcast) */
    int64_t sb[LP_MAX_DIMS];     /* strides of b */
} lp_bcast;

typedef enum lp_unary_kind {
    LP_UN_IDENTITY = 0,
    LP_UN_RELU,
    LP_UN_LEAKY_RELU,   /* p[0] = alpha */
    LP_UN_CLIP,         /* p[0] = min, p[1] = max */
    LP_UN_SIGMOID,
    LP_UN_HARD_SIGMOID, /* p[0] = alpha, p[1] = beta */
    LP_UN_HARD_SWISH,
    LP_UN_ERF,
    LP_UN_SQRT,
    LP_UN_TANH,
    LP_UN_EXP,
    LP_UN_LOG,
    LP_UN_NEG,
    LP_UN_ABS,
    LP_UN_POW,          /* x ^ p[0] (Pow with a scalar constant exponent) */
    LP_UN_SCALE,        /* p[0] * x + p[1] */
    LP_UN_HARDTANH,     /* Clip's forward (p[0] = min, p[1] = max) with PyTorch's hardtanh
                         * gradient (ReLU6's): dy where min < y < max, read from y. Clip's
                         * own is clamp's: dy where min <= x <= max, read from x */
    /* ReLU forward, with a backward rule in place of its derivative (backward reads y,
     * dy): guided backprop's dy where y > 0 and dy > 0; deconvnet's max(0, dy). */
    LP_UN_RELU_GUIDED,
    LP_UN_RELU_DECONV,
    LP_UN_GELU,         /* x Phi(x), with erf (ONNX Gelu, approximate "none") */
    LP_UN_GELU_TANH,    /* its tanh approximation (approximate "tanh"), as PyTorch computes it */
    LP_UN_COUNT
} lp_unary_kind;

#ifdef __CUDACC__
#define LP_HOST_DEVICE __host__ __device__
#else
#define LP_HOST_DEVICE
#endif
/* GELU, x Phi(x), and its tanh approximation, with their derivatives, in PyTorch's
 * formulas: one definition for the CPU loops and the CUDA kernels. */
#define LP_GELU_BETA 0.79788456080286536f /* sqrt(2 / pi) */
#define LP_GELU_KAPPA 0.044715f
static inline LP_HOST_DEVICE float lp_gelu(float x) { return 0.5f * x * (1.f + erff(x * 0.70710678118654752f)); }
static inline LP_HOST_DEVICE float lp_gelu_grad(float x) { /* Phi(x) + x phi(x) */
    return 0.5f * (1.f + erff(x * 0.70710678118654752f)) + x * (0.39894228040143268f * expf(-0.5f * x * x));
}
static inline LP_HOST_DEVICE float lp_gelu_tanh(float x) {
    return 0.5f * x * (1.f + tanhf(LP_GELU_BETA * (x + LP_GELU_KAPPA * x * x * x)));
}
static inline LP_HOST_DEVICE float lp_gelu_tanh_grad(float x) {
    const float x2 = x * x, t = tanhf(LP_GELU_BETA * (x + LP_GELU_KAPPA * x2 * x));
    return 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * LP_GELU_BETA * (1.f + 3.f * LP_GELU_KAPPA * x2);
}

typedef enum lp_binary_kind { LP_BIN_ADD = 0, LP_BIN_SUB, LP_BIN_MUL, LP_BIN_DIV, LP_BIN_POW, LP_BIN_COUNT } lp_binary_kind;

typedef struct lp_backend {
    const char *name;
    lp_device device;
    /* Packed activations: 4-D values a forward-only or lean run stores as bfloat16
     * NHWC (the layout tensor cores read), where only convolutions, pooling and
     * same-shape Add / Relu touch them, so conv -> conv edges skip the fp32
     * NCHW round trip; lean runs pack those values' gradients alike. Set by backends
     * that compute convolutions in bf16 (CUDA's bf16 table); the executor decides which
     * values are packed, and tells the convolutions through lp_conv_desc.x_packed /
     * y_packed. */
    int packed;
    /* y = a + b on n packed values (b may be NULL: y = a), through the activation act
     * as lp_conv_desc.act's (0: none). */
    lp_status (*packed_add)(int64_t n, const void *a, const void *b, void *y, float act);
    /* y (NCHW fp32) = x (a packed n x c x hw value) through the activation act. */
    lp_status (*unpack)(int n, int c, int64_t hw, const void *x, float *y, float act);
    /* The reverse: y (packed) = x (NCHW fp32, n x c x hw). */
    lp_status (*pack)(int n, int c, int64_t hw, const float *x, void *y);
    /* A ReLU's backward on n packed values, k one of LP_UN_RELU (dx (+)= y > 0 ? dy : 0),
     * LP_UN_HARDTANH (ReLU6's, bounds 0 and cap: 0 < y < cap), LP_UN_RELU_GUIDED or
     * LP_UN_RELU_DECONV (which reads no y); accumulate: add to dx, else overwrite. */
    lp_status (*packed_relu_bwd)(lp_unary_kind k, float cap, int64_t n, const void *y, const void *dy, void *dx,
                                 int accumulate);
    /* pool_fwd of a packed x into y, packed when y_packed, else NCHW fp32. */
    lp_status (*pool_fwd_packed)(const lp_pool_desc *d, const void *x, void *y, int y_packed);
    /* A lean run's pool_bwd with x (read by max only) and dx packed (dx accumulates, or
     * is overwritten when not accumulate); dy packed when dy_packed, else NCHW fp32. */
    lp_status (*pool_bwd_packed)(const lp_pool_desc *d, const void *x, const void *dy, int dy_packed, void *dx,
                                 int accumulate);

    /* memory */
    lp_status (*alloc)(size_t bytes, void **p);
    void (*free)(void *p);
    lp_status (*upload)(void *dst, const void *host_src, size_t bytes);
    lp_status (*download)(void *host_dst, const void *src, size_t bytes);
    lp_status (*copy)(void *dst, const void *src, size_t bytes);
    lp_status (*zero)(void *p, size_t bytes);
    lp_status (*sync)(void);

    /* convolution; y = conv(x, w) + b (b may be NULL). bwd_data accumulates into dx;
     * bwd_filter accumulates into dw and db (db may be NULL). */
    lp_status (*conv_fwd)(const lp_conv_desc *d, const float *x, const float *w, const float *b, float *y);
    lp_status (*conv_bwd_data)(const lp_conv_desc *d, const float *dy, const float *w, float *dx);
    lp_status (*conv_bwd_filter)(const lp_conv_desc *d, const float *x, const float *dy, float *dw, float *db);

    /* row-major C = alpha * op(A) op(B) + beta * C; op = transpose when t* != 0.
     * A is m x k after op, B is k x n after op. */
    lp_status (*gemm)(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                      const float *b, int ldb, float beta, float *c, int ldc);

    /* pooling; bwd adds into dx when accumulate, else overwrites it whole (max: the
     * gradient goes to the first maximal element). */
    lp_status (*pool_fwd)(const lp_pool_desc *d, const float *x, float *y);
    lp_status (*pool_bwd)(const lp_pool_desc *d, const float *x, const float *y, const float *dy, float *dx,
                          int accumulate);

    /* elementwise; p = parameters of the kind (may be NULL). bwd adds into dx when
     * accumulate, else overwrites it. */
    lp_status (*unary_fwd)(lp_unary_kind k, const float *p, const float *x, float *y, int64_t n);
    lp_status (*unary_bwd)(lp_unary_kind k, const float *p, const float *x, const float *y,
                           const float *dy, float *dx, int64_t n, int accumulate);
    /* y = a (op) b with broadcasting. bwd accumulates into da / db (either may be NULL),
     * reducing over broadcast dimensions. */
    lp_status (*binary_fwd)(lp_binary_kind k, const lp_bcast *bc, const float *a, const float *b, float *y);
    /* y = max(0, a + b) on n values: a same-shape Add and the Relu that is its only
     * reader in one pass (bit for bit binary_fwd then unary_fwd). */
    lp_status (*add_relu)(int64_t n, const float *a, const float *b, float *y);
    lp_status (*binary_bwd)(lp_binary_kind k, const lp_bcast *bc, const float *a, const float *b,
                            const float *y, const float *dy, float *da, float *db);
    /* y[reduced index] (+)= scale * sum of x over dimensions where bc->sb is 0 and
     * bc->shape > 1. x has shape bc->shape (strides bc->sa contiguous); y is indexed
     * by bc->sb. accumulate: add to y, else overwrite. (ReduceMean, bias grads.) */
    lp_status (*reduce_sum)(const lp_bcast *bc, const float *x, float *y, float scale, int accumulate);
    /* The reverse: x (+)= scale * y broadcast to bc->shape (ReduceMean backward). */
    lp_status (*broadcast)(const lp_bcast *bc, const float *y, float *x, float scale, int accumulate);

    /* softmax over the middle axis of (outer, axis, inner); log = log-softmax.
     * bwd accumulates. */
    lp_status (*softmax_fwd)(int64_t outer, int64_t axis, int64_t inner, int log, const float *x, float *y);
    lp_status (*softmax_bwd)(int64_t outer, int64_t axis, int64_t inner, int log, const float *y,
                             const float *dy, float *dx);

    /* y = x permuted: y.shape[i] = shape[perm[i]]. accumulate: y += permuted x. */
    lp_status (*transpose)(int ndim, const int64_t *shape, const int *perm, const float *x, float *y, int accumulate);
    /* Strided 2-D block copy: for o < outer: dst[o*dst_stride + j] (+)= src[o*src_stride + j], j < len.
     * Serves Concat, Split, Slice on the outermost sliced axis. */
    lp_status (*copy2d)(int64_t outer, int64_t len, const float *src, int64_t src_stride, float *dst,
                        int64_t dst_stride, int accumulate);
    /* General strided slice on up to LP_MAX_DIMS dims: y[i] = x[start + i*step] per dim.
     * bwd: dx[start + i*step] += dy[i]. */
    lp_status (*slice_fwd)(int ndim, const int64_t *xshape, const int64_t *yshape, const int64_t *start,
                           const int64_t *step, const float *x, float *y);
    lp_status (*slice_bwd)(int ndim, const int64_t *xshape, const int64_t *yshape, const int64_t *start,
                           const int64_t *step, const float *dy, float *dx);

    /* Pad (mode 0 constant, 1 reflect, 2 edge) of an ndim tensor; pads[0..ndim) begins,
     * pads[ndim..2ndim) ends (may be negative: crop). bwd accumulates into dx. */
    lp_status (*pad_fwd)(int ndim, const int64_t *xshape, const int64_t *pads, int mode, float value,
                         const float *x, float *y);
    lp_status (*pad_bwd)(int ndim, const int64_t *xshape, const int64_t *pads, int mode, const float *dy,
                         float *dx);

    /* Local response normalization across channels (ONNX LRN), NCHW. bwd accumulates. */
    lp_status (*lrn_fwd)(int n, int c, int64_t hw, int size, float alpha, float beta, float bias,
                         const float *x, float *y);
    lp_status (*lrn_bwd)(int n, int c, int64_t hw, int size, float alpha, float beta, float bias,
                         const float *x, const float *y, const float *dy, float *dx);

    /* Per-channel affine (inference BatchNormalization): y = x * scale[c] + shift[c]
     * (shift may be NULL), then the activation act as lp_conv_desc.act's (0: none; a
     * Relu fused into its BatchNormalization). bwd accumulates dx (may be NULL), dscale,
     * dshift (may be NULL). */
    lp_status (*channel_affine_fwd)(int n, int c, int64_t hw, const float *x, const float *scale,
                                    const float *shift, float *y, float act);
    lp_status (*channel_affine_bwd)(int n, int c, int64_t hw, const float *x, const float *scale,
                                    const float *dy, float *dx, float *dscale, float *dshift);

    /* BLAS-1 style helpers for optimizers and methods. */
    lp_status (*axpy)(int64_t n, float a, const float *x, float *y);   /* y += a x */
    lp_status (*scal)(int64_t n, float a, float *x);                   /* x *= a */
    lp_status (*fill)(int64_t n, float v, float *x);
    /* v = mu v + g + wd w ; w -= lr v */
    lp_status (*sgd_momentum)(int64_t n, float lr, float mu, float wd, float *w, const float *g, float *v);
} lp_backend;

const lp_backend *lp_backend_cpu(void);
/* NULL (with an LP_ERR_DEVICE message) when built without CUDA or no device. */
const lp_backend *lp_backend_cuda(void);
/* The CUDA table whose convolutions and GEMMs use precision p (NULL as above). */
const lp_backend *lp_backend_cuda_precision(lp_precision p);
/* CUDA device facts and the caching allocator's counters (stubs without CUDA). */
const char *lp_cuda_device_name(void);
lp_status lp_cuda_memory_stats(lp_memory_stats *out);
void lp_cuda_memory_reset_peak(void);
void lp_cuda_memory_trim(void);
lp_status lp_cuda_fusion_stats(lp_fusion_stats *out); /* lp_device_fusion_stats for CUDA */
/* CUDA graphs (cuda_graph.c; without CUDA, begin fails and the rest are no-ops).
 * begin starts capturing the backend's stream; end gives the graph, or NULL when the
 * pass was not graphable (none of its work ran: run it again without capture). */
typedef struct lp_graph lp_graph;
lp_status lp_cuda_graph_begin(void);
lp_status lp_cuda_graph_end(lp_graph **out);
lp_status lp_cuda_graph_launch(const lp_graph *g);
void lp_cuda_graph_free(lp_graph *g);
/* Changes whenever a scratch slot moves or is freed: graphs captured before hold
 * stale scratch pointers. */
uint64_t lp_cuda_scratch_epoch(void);
/* The backend for a device, or NULL with a message. */
const lp_backend *lp_backend_get(lp_device dev);

/* Build a broadcast descriptor for a op b -> y (LP_ERR_SHAPE if incompatible). */
lp_status lp_bcast_make(int na, const int64_t *a, int nb, const int64_t *b, lp_bcast *out);

#endif
