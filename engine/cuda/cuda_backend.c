/* cuda_backend.c — the CUDA lp_backend tables, one per precision (they differ only in
 * convolution and GEMM), over the stream, allocator, cuDNN/cuBLAS wrappers and our
 * kernels (kernels/backend_*.cu). Argument checks mirror the CPU twin's so a bad
 * shape gives the same error on either device. */
#include "cuda/cuda_internal.h"

#include <math.h>

#define STREAM ((lp_stream)_lp_cuda()->stream) /* only after a table was handed out */

/* ---- memory ---- */
static lp_status g_alloc(size_t bytes, void **p) { return _lp_cuda_alloc(bytes, p); }
static void g_free(void *p) { _lp_cuda_free(p); }
/* Host copies and syncs read or write host memory now: never part of a graph. */
static lp_status g_upload(void *dst, const void *src, size_t bytes) {
    if (_lp_cuda_capturing()) return _lp_cuda_capture_refuse("a host-to-device copy");
    if (bytes) LP_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, _lp_cuda()->stream));
    return LP_OK;
}
static lp_status g_download(void *dst, const void *src, size_t bytes) {
    if (_lp_cuda_capturing()) return _lp_cuda_capture_refuse("a device-to-host copy");
    cudaStream_t s = _lp_cuda()->stream;
    if (bytes) LP_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s));
    LP_CUDA(cudaStreamSynchronize(s)); /* the host reads dst next */
    return LP_OK;
}
static lp_status g_copy(void *dst, const void *src, size_t bytes) {
    if (bytes && dst != src) LP_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, _lp_cuda()->stream));
    return LP_OK;
}
static lp_status g_zero(void *p, size_t bytes) {
    if (bytes) LP_CUDA(cudaMemsetAsync(p, 0, bytes, _lp_cuda()->stream));
    return LP_OK;
}
static lp_status g_sync(void) {
    if (_lp_cuda_capturing()) return _lp_cuda_capture_refuse("a device sync");
    LP_CUDA(cudaStreamSynchronize(_lp_cuda()->stream));
    return LP_OK;
}

/* ---- convolution and GEMM, per precision ---- */
#define PRECISION_FNS(P, tag)                                                                                          \
    static lp_status conv_fwd_##tag(const lp_conv_desc *d, const float *x, const float *w, const float *b, float *y) { \
        return _lp_cuda_conv_fwd(P, d, x, w, b, y);                                                                    \
    }                                                                                                                  \
    static lp_status conv_bwd_data_##tag(const lp_conv_desc *d, const float *dy, const float *w, float *dx) {          \
        return _lp_cuda_conv_bwd_data(P, d, dy, w, dx);                                                                \
    }                                                                                                                  \
    static lp_status conv_bwd_filter_##tag(const lp_conv_desc *d, const float *x, const float *dy, float *dw,         \
                                           float *db) {                                                                \
        return _lp_cuda_conv_bwd_filter(P, d, x, dy, dw, db);                                                          \
    }                                                                                                                  \
    static lp_status gemm_##tag(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,             \
                                const float *b, int ldb, float beta, float *c, int ldc) {                             \
        return _lp_cuda_gemm(P, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);                                 \
    }
PRECISION_FNS(LP_PREC_FP32, fp32)
PRECISION_FNS(LP_PREC_TF32, tf32)
PRECISION_FNS(LP_PREC_BF16, bf16)

/* ---- pooling ---- */
static lp_status pool_check(const lp_pool_desc *d, const char *what) {
    if (d->kh <= 0 || d->kw <= 0 || d->sh <= 0 || d->sw <= 0 || d->dh <= 0 || d->dw <= 0)
        return lp_fail(LP_ERR_ARG, "cuda %s: kernel %dx%d, strides %dx%d and dilations %dx%d must be positive", what,
                       d->kh, d->kw, d->sh, d->sw, d->dh, d->dw);
    return LP_OK;
}
static lp_status g_pool_fwd(const lp_pool_desc *d, const float *x, float *y) {
    LP_TRY(pool_check(d, "pool_fwd"));
    LP_KERNEL(lp_k_pool_fwd(STREAM, d, x, y));
    return LP_OK;
}
static lp_status g_pool_bwd(const lp_pool_desc *d, const float *x, const float *y, const float *dy, float *dx,
                            int accumulate) {
    (void)y; /* the argmax is recomputed from x, as on the CPU */
    LP_TRY(pool_check(d, "pool_bwd"));
    LP_KERNEL(lp_k_pool_bwd(STREAM, d, x, dy, dx, accumulate));
    return LP_OK;
}

/* ---- elementwise ---- */
/* The CPU twin's defaults for absent parameters. */
static void unary_params(lp_unary_kind k, const float *p, float *p0, float *p1) {
    const int clip = k == LP_UN_CLIP || k == LP_UN_HARDTANH;
    const int two = clip || k == LP_UN_HARD_SIGMOID || k == LP_UN_SCALE; /* kinds that read p[1] */
    *p0 = p ? p[0] : k == LP_UN_LEAKY_RELU ? 0.01f : clip ? -INFINITY : k == LP_UN_HARD_SIGMOID ? 0.2f : 1.f;
    *p1 = p && two ? p[1] : clip ? INFINITY : k == LP_UN_HARD_SIGMOID ? 0.5f : 0.f;
}
static lp_status g_unary_fwd(lp_unary_kind k, const float *p, const float *x, float *y, int64_t n) {
    if ((int)k < 0 || k >= LP_UN_COUNT) return lp_fail(LP_ERR_UNSUPPORTED, "cuda unary_fwd: unknown kind %d", (int)k);
    float p0, p1;
    unary_params(k, p, &p0, &p1);
    if (k == LP_UN_IDENTITY) return x == y ? LP_OK : g_copy(y, x, sizeof(float) * (size_t)n);
    LP_KERNEL(lp_k_unary_fwd(STREAM, (int)k, p0, p1, x, y, n));
    return LP_OK;
}
static lp_status g_unary_bwd(lp_unary_kind k, const float *p, const float *x, const float *y, const float *dy,
                             float *dx, int64_t n, int accumulate) {
    if ((int)k < 0 || k >= LP_UN_COUNT) return lp_fail(LP_ERR_UNSUPPORTED, "cuda unary_bwd: unknown kind %d", (int)k);
    float p0, p1;
    unary_params(k, p, &p0, &p1);
    LP_KERNEL(lp_k_unary_bwd(STREAM, (int)k, p0, p1, x, y, dy, dx, n, accumulate));
    return LP_OK;
}
static lp_status g_binary_fwd(lp_binary_kind k, const lp_bcast *bc, const float *a, const float *b, float *y) {
    if ((int)k < 0 || k >= LP_BIN_COUNT) return lp_fail(LP_ERR_UNSUPPORTED, "cuda binary_fwd: unknown kind %d", (int)k);
    LP_KERNEL(lp_k_binary_fwd(STREAM, (int)k, bc, a, b, y));
    return LP_OK;
}

static lp_status g_add_relu(int64_t n, const float *a, const float *b, float *y) {
    LP_KERNEL(lp_k_add_relu(STREAM, a, b, y, n));
    return LP_OK;
}

/* Does the operand with strides s repeat over some output dimension? */
static int broadcast_on(const lp_bcast *bc, const int64_t *s) {
    for (int d = 0; d < bc->ndim; d++)
        if (bc->shape[d] > 1 && s[d] == 0) return 1;
    return 0;
}

/* One operand's gradient: straight into it when it is not broadcast, else densely
 * into scratch and summed over its broadcast dimensions (a fixed-order reduction). */
static lp_status binary_grad(lp_binary_kind k, const lp_bcast *bc, int which, const float *a, const float *b,
                             const float *y, const float *dy, float *g) {
    const int64_t *s = which ? bc->sb : bc->sa;
    if (!broadcast_on(bc, s)) {
        LP_KERNEL(lp_k_binary_bwd(STREAM, (int)k, bc, which, 1, a, b, y, dy, g));
        return LP_OK;
    }
    lp_bcast red = *bc;
    int64_t st = 1;
    for (int d = bc->ndim - 1; d >= 0; d--) {
        red.sa[d] = st;
        red.sb[d] = s[d];
        st *= bc->shape[d];
    }
    void *dense;
    LP_TRY(_lp_cuda_scratch(LP_SLOT_GRAD, sizeof(float) * (size_t)(st > 0 ? st : 1), &dense));
    LP_KERNEL(lp_k_binary_bwd(STREAM, (int)k, bc, which, 0, a, b, y, dy, dense));
    LP_KERNEL(lp_k_reduce_sum(STREAM, &red, dense, g, 1.f, 1));
    return LP_OK;
}
static lp_status g_binary_bwd(lp_binary_kind k, const lp_bcast *bc, const float *a, const float *b, const float *y,
                              const float *dy, float *da, float *db) {
    if ((int)k < 0 || k >= LP_BIN_COUNT) return lp_fail(LP_ERR_UNSUPPORTED, "cuda binary_bwd: unknown kind %d", (int)k);
    if (da) LP_TRY(binary_grad(k, bc, 0, a, b, y, dy, da));
    if (db) LP_TRY(binary_grad(k, bc, 1, a, b, y, dy, db));
    return LP_OK;
}
static lp_status g_reduce_sum(const lp_bcast *bc, const float *x, float *y, float scale, int accumulate) {
    LP_KERNEL(lp_k_reduce_sum(STREAM, bc, x, y, scale, accumulate));
    return LP_OK;
}
static lp_status g_broadcast(const lp_bcast *bc, const float *y, float *x, float scale, int accumulate) {
    LP_KERNEL(lp_k_broadcast(STREAM, bc, y, x, scale, accumulate));
    return LP_OK;
}

/* ---- softmax, layout ---- */
static lp_status g_softmax_fwd(int64_t outer, int64_t axis, int64_t inner, int log, const float *x, float *y) {
    LP_KERNEL(lp_k_softmax_fwd(STREAM, outer, axis, inner, log, x, y));
    return LP_OK;
}
static lp_status g_softmax_bwd(int64_t outer, int64_t axis, int64_t inner, int log, const float *y, const float *dy,
                               float *dx) {
    LP_KERNEL(lp_k_softmax_bwd(STREAM, outer, axis, inner, log, y, dy, dx));
    return LP_OK;
}
static lp_status g_transpose(int ndim, const int64_t *shape, const int *perm, const float *x, float *y, int acc) {
    if (ndim < 0 || ndim > LP_MAX_DIMS)
        return lp_fail(LP_ERR_SHAPE, "cuda transpose: rank %d is not in 0..%d", ndim, LP_MAX_DIMS);
    for (int d = 0; d < ndim; d++)
        if (perm[d] < 0 || perm[d] >= ndim)
            return lp_fail(LP_ERR_ARG, "cuda transpose: perm[%d] = %d out of range", d, perm[d]);
    LP_KERNEL(lp_k_transpose(STREAM, ndim, shape, perm, x, y, acc));
    return LP_OK;
}
static lp_status g_copy2d(int64_t outer, int64_t len, const float *src, int64_t ss, float *dst, int64_t ds, int acc) {
    if (!acc && ss == len && ds == len) return g_copy(dst, src, sizeof(float) * (size_t)(outer * len));
    LP_KERNEL(lp_k_copy2d(STREAM, outer, len, src, ss, dst, ds, acc));
    return LP_OK;
}
static lp_status slice_check(int ndim, const int64_t *xshape, const int64_t *yshape, const int64_t *start,
                             const int64_t *step) {
    if (ndim < 1 || ndim > LP_MAX_DIMS) return lp_fail(LP_ERR_SHAPE, "cuda slice: rank %d is not in 1..%d", ndim, LP_MAX_DIMS);
    for (int d = 0; d < ndim; d++) {
        if (yshape[d] <= 0) continue;
        int64_t last = start[d] + (yshape[d] - 1) * step[d];
        if (start[d] < 0 || start[d] >= xshape[d] || last < 0 || last >= xshape[d])
            return lp_fail(LP_ERR_SHAPE, "cuda slice: dim %d start %lld step %lld x %lld runs outside size %lld", d,
                           (long long)start[d], (long long)step[d], (long long)yshape[d], (long long)xshape[d]);
    }
    return LP_OK;
}
static lp_status g_slice_fwd(int ndim, const int64_t *xshape, const int64_t *yshape, const int64_t *start,
                             const int64_t *step, const float *x, float *y) {
    LP_TRY(slice_check(ndim, xshape, yshape, start, step));
    LP_KERNEL(lp_k_slice(STREAM, ndim, xshape, yshape, start, step, (float *)x, y, 0));
    return LP_OK;
}
static lp_status g_slice_bwd(int ndim, const int64_t *xshape, const int64_t *yshape, const int64_t *start,
                             const int64_t *step, const float *dy, float *dx) {
    LP_TRY(slice_check(ndim, xshape, yshape, start, step));
    LP_KERNEL(lp_k_slice(STREAM, ndim, xshape, yshape, start, step, dx, (float *)dy, 1));
    return LP_OK;
}
static lp_status pad_check(int ndim, const int64_t *xshape, const int64_t *pads, int mode) {
    if (ndim < 1 || ndim > LP_MAX_DIMS) return lp_fail(LP_ERR_SHAPE, "cuda pad: rank %d is not in 1..%d", ndim, LP_MAX_DIMS);
    if (mode < 0 || mode > 2) return lp_fail(LP_ERR_ARG, "cuda pad: unknown mode %d", mode);
    for (int d = 0; d < ndim; d++)
        if (xshape[d] + pads[d] + pads[ndim + d] < 0)
            return lp_fail(LP_ERR_SHAPE, "cuda pad: dim %d of size %lld padded to a negative size", d, (long long)xshape[d]);
    return LP_OK;
}
static lp_status g_pad_fwd(int ndim, const int64_t *xshape, const int64_t *pads, int mode, float value, const float *x,
                           float *y) {
    LP_TRY(pad_check(ndim, xshape, pads, mode));
    LP_KERNEL(lp_k_pad_fwd(STREAM, ndim, xshape, pads, mode, value, x, y));
    return LP_OK;
}
static lp_status g_pad_bwd(int ndim, const int64_t *xshape, const int64_t *pads, int mode, const float *dy, float *dx) {
    LP_TRY(pad_check(ndim, xshape, pads, mode));
    LP_KERNEL(lp_k_pad_bwd(STREAM, ndim, xshape, pads, mode, dy, dx));
    return LP_OK;
}

/* ---- normalisations ---- */
static lp_status g_lrn_fwd(int n, int c, int64_t hw, int size, float alpha, float beta, float bias, const float *x,
                           float *y) {
    if (size <= 0) return lp_fail(LP_ERR_ARG, "cuda lrn_fwd: size %d must be positive", size);
    LP_KERNEL(lp_k_lrn_fwd(STREAM, n, c, hw, size, alpha, beta, bias, x, y));
    return LP_OK;
}
static lp_status g_lrn_bwd(int n, int c, int64_t hw, int size, float alpha, float beta, float bias, const float *x,
                           const float *y, const float *dy, float *dx) {
    (void)y;
    if (size <= 0) return lp_fail(LP_ERR_ARG, "cuda lrn_bwd: size %d must be positive", size);
    LP_KERNEL(lp_k_lrn_bwd(STREAM, n, c, hw, size, alpha, beta, bias, x, dy, dx));
    return LP_OK;
}
static lp_status g_affine_fwd(int n, int c, int64_t hw, const float *x, const float *scale, const float *shift,
                              float *y, float act) {
    LP_KERNEL(lp_k_channel_affine_fwd(STREAM, n, c, hw, x, scale, shift, y, act));
    return LP_OK;
}
static lp_status g_affine_bwd(int n, int c, int64_t hw, const float *x, const float *scale, const float *dy, float *dx,
                              float *dscale, float *dshift) {
    LP_KERNEL(lp_k_channel_affine_bwd(STREAM, n, c, hw, x, scale, dy, dx, dscale, dshift));
    return LP_OK;
}

/* ---- BLAS-1, optimizer ---- */
static lp_status g_axpy(int64_t n, float a, const float *x, float *y) {
    LP_KERNEL(lp_k_axpy(STREAM, n, a, x, y));
    return LP_OK;
}
static lp_status g_scal(int64_t n, float a, float *x) {
    LP_KERNEL(lp_k_scal(STREAM, n, a, x));
    return LP_OK;
}
static lp_status g_fill(int64_t n, float v, float *x) {
    LP_KERNEL(lp_k_fill(STREAM, n, v, x));
    return LP_OK;
}
static lp_status g_sgd(int64_t n, float lr, float mu, float wd, float *w, const float *g, float *v) {
    LP_KERNEL(lp_k_sgd_momentum(STREAM, n, lr, mu, wd, w, g, v));
    return LP_OK;
}

/* ---- packed activations (the bf16 table's; see lp_backend.packed) ---- */
static lp_status g_packed_add(int64_t n, const void *a, const void *b, void *y, float act) {
    LP_KERNEL(lp_k_add_bf16(STREAM, n, a, b, y, act));
    return LP_OK;
}
static lp_status g_unpack(int n, int c, int64_t hw, const void *x, float *y, float act) {
    LP_KERNEL(lp_k_nhwc_bf16_to_nchw(STREAM, n, c, hw, x, NULL, y, 0, act));
    return LP_OK;
}
static lp_status g_pool_bwd_packed(const lp_pool_desc *d, const void *x, const void *dy, int dy_packed, void *dx,
                                   int accumulate) {
    LP_TRY(pool_check(d, "pool_bwd"));
    LP_KERNEL(lp_k_pool_bwd_packed(STREAM, d, d->is_max ? x : NULL, dy, dy_packed, dx, accumulate));
    return LP_OK;
}
static lp_status g_pack(int n, int c, int64_t hw, const float *x, void *y) {
    LP_KERNEL(lp_k_nchw_to_nhwc_bf16(STREAM, n, c, hw, x, y));
    return LP_OK;
}
static lp_status g_packed_relu_bwd(lp_unary_kind k, float cap, int64_t n, const void *y, const void *dy, void *dx,
                                   int accumulate) {
    if (k != LP_UN_RELU && k != LP_UN_HARDTANH && k != LP_UN_RELU_GUIDED && k != LP_UN_RELU_DECONV)
        return lp_fail(LP_ERR_UNSUPPORTED, "cuda packed_relu_bwd: kind %d is not a ReLU's", (int)k);
    LP_KERNEL(lp_k_relu_bwd_bf16(STREAM, (int)k, cap, n, y, dy, dx, accumulate));
    return LP_OK;
}
static lp_status g_pool_fwd_packed(const lp_pool_desc *d, const void *x, void *y, int y_packed) {
    LP_KERNEL(lp_k_pool_fwd_packed(STREAM, d, x, y, y_packed));
    return LP_OK;
}

#define CUDA_TABLE(tag, ...)                                                                                           \
    {                                                                                                                  \
        .name = "cuda", .device = LP_DEVICE_CUDA, .alloc = g_alloc, .free = g_free, .upload = g_upload,                \
        .download = g_download, .copy = g_copy, .zero = g_zero, .sync = g_sync, .conv_fwd = conv_fwd_##tag,           \
        .conv_bwd_data = conv_bwd_data_##tag, .conv_bwd_filter = conv_bwd_filter_##tag, .gemm = gemm_##tag,           \
        .pool_fwd = g_pool_fwd, .pool_bwd = g_pool_bwd, .unary_fwd = g_unary_fwd, .unary_bwd = g_unary_bwd,           \
        .binary_fwd = g_binary_fwd, .add_relu = g_add_relu, .binary_bwd = g_binary_bwd, .reduce_sum = g_reduce_sum,   \
        .broadcast = g_broadcast, .softmax_fwd = g_softmax_fwd, .softmax_bwd = g_softmax_bwd,                         \
        .transpose = g_transpose, .copy2d = g_copy2d, .slice_fwd = g_slice_fwd, .slice_bwd = g_slice_bwd,             \
        .pad_fwd = g_pad_fwd, .pad_bwd = g_pad_bwd, .lrn_fwd = g_lrn_fwd, .lrn_bwd = g_lrn_bwd,                       \
        .channel_affine_fwd = g_affine_fwd, .channel_affine_bwd = g_affine_bwd, .axpy = g_axpy, .scal = g_scal,       \
        .fill = g_fill, .sgd_momentum = g_sgd, __VA_ARGS__                                                             \
    }

/* Only bf16 packs: its convolutions read and write bf16 NHWC anyway. */
static const lp_backend tables[3] = {CUDA_TABLE(fp32, .packed = 0), CUDA_TABLE(tf32, .packed = 0),
                                     CUDA_TABLE(bf16, .packed = 1, .packed_add = g_packed_add, .unpack = g_unpack,
                                                .pack = g_pack, .packed_relu_bwd = g_packed_relu_bwd,
                                                .pool_bwd_packed = g_pool_bwd_packed,
                                                .pool_fwd_packed = g_pool_fwd_packed)};

const lp_backend *lp_backend_cuda_precision(lp_precision p) {
    if ((unsigned)p > LP_PREC_BF16) {
        lp_fail(LP_ERR_ARG, "unknown precision %d", (int)p);
        return NULL;
    }
    return _lp_cuda() ? &tables[p] : NULL;
}

const lp_backend *lp_backend_cuda(void) { return lp_backend_cuda_precision(LP_PREC_FP32); }
