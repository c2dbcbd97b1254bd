/* cuda_kernels.h — C-linkage launchers of the backend's own CUDA kernels
 * (kernels/backend_*.cu). Each enqueues on `s` and returns the launch's cudaError_t
 * as an int (0 = success), so the host side can name the kernel in its status.
 * Their CPU twins are the functions of the same name in engine/cpu/. */
#ifndef LOUPE_CUDA_KERNELS_H
#define LOUPE_CUDA_KERNELS_H

#include <stdint.h>

#include "backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct CUstream_st *lp_stream; /* = cudaStream_t */

/* elementwise (backend_elementwise.cu) */
int lp_k_unary_fwd(lp_stream s, int kind, float p0, float p1, const float *x, float *y, int64_t n);
int lp_k_unary_bwd(lp_stream s, int kind, float p0, float p1, const float *x, const float *y, const float *dy,
                   float *dx, int64_t n, int accumulate);
int lp_k_binary_fwd(lp_stream s, int kind, const lp_bcast *bc, const float *a, const float *b, float *y);
int lp_k_add_relu(lp_stream s, const float *a, const float *b, float *y, int64_t n);
/* One operand's gradient over the full output shape: g[i] = d(a op b)/d(which)[i] * dy[i]
 * (which: 0 = a, 1 = b). Accumulated into g at the operand's strides when `direct`
 * (no broadcast on that operand), else written densely (output-sized scratch). */
int lp_k_binary_bwd(lp_stream s, int kind, const lp_bcast *bc, int which, int direct, const float *a,
                    const float *b, const float *y, const float *dy, float *g);
int lp_k_reduce_sum(lp_stream s, const lp_bcast *bc, const float *x, float *y, float scale, int accumulate);
int lp_k_broadcast(lp_stream s, const lp_bcast *bc, const float *y, float *x, float scale, int accumulate);
int lp_k_axpy(lp_stream s, int64_t n, float a, const float *x, float *y);
int lp_k_scal(lp_stream s, int64_t n, float a, float *x);
int lp_k_fill(lp_stream s, int64_t n, float v, float *x);
int lp_k_sgd_momentum(lp_stream s, int64_t n, float lr, float mu, float wd, float *w, const float *g, float *v);

/* layout (backend_layout.cu) */
int lp_k_transpose(lp_stream s, int ndim, const int64_t *shape, const int *perm, const float *x, float *y,
                   int accumulate);
int lp_k_copy2d(lp_stream s, int64_t outer, int64_t len, const float *src, int64_t src_stride, float *dst,
                int64_t dst_stride, int accumulate);
int lp_k_slice(lp_stream s, int ndim, const int64_t *xshape, const int64_t *yshape, const int64_t *start,
               const int64_t *step, float *x, float *y, int bwd);
int lp_k_pad_fwd(lp_stream s, int ndim, const int64_t *xshape, const int64_t *pads, int mode, float value,
                 const float *x, float *y);
int lp_k_pad_bwd(lp_stream s, int ndim, const int64_t *xshape, const int64_t *pads, int mode, const float *dy,
                 float *dx);

/* nn (backend_nn.cu) */
int lp_k_pool_fwd(lp_stream s, const lp_pool_desc *d, const float *x, float *y);
int lp_k_pool_bwd(lp_stream s, const lp_pool_desc *d, const float *x, const float *dy, float *dx, int accumulate);
int lp_k_softmax_fwd(lp_stream s, int64_t outer, int64_t axis, int64_t inner, int is_log, const float *x, float *y);
int lp_k_softmax_bwd(lp_stream s, int64_t outer, int64_t axis, int64_t inner, int is_log, const float *y,
                     const float *dy, float *dx);
int lp_k_lrn_fwd(lp_stream s, int n, int c, int64_t hw, int size, float alpha, float beta, float bias, const float *x,
                 float *y);
int lp_k_lrn_bwd(lp_stream s, int n, int c, int64_t hw, int size, float alpha, float beta, float bias, const float *x,
                 const float *dy, float *dx);
/* y = act(x * scale[c] + shift[c]), act as lp_k_bias_act's */
int lp_k_channel_affine_fwd(lp_stream s, int n, int c, int64_t hw, const float *x, const float *scale,
                            const float *shift, float *y, float act);
int lp_k_channel_affine_bwd(lp_stream s, int n, int c, int64_t hw, const float *x, const float *scale,
                            const float *dy, float *dx, float *dscale, float *dshift);
/* bias over channels of NCHW, then the fused activation: y[n][c][p] = act(y + b[c]); b
 * may be NULL; act as lp_conv_desc.act (min(max(0, .), act) when act > 0, else identity) */
int lp_k_bias_act(lp_stream s, int n, int c, int64_t hw, const float *b, float act, float *y);

/* precision conversions (backend_convert.cu); bf16 is stored as uint16_t */
int lp_k_f32_to_bf16(lp_stream s, int64_t n, const float *x, uint16_t *y);
/* NCHW fp32 -> NHWC bf16 */
int lp_k_nchw_to_nhwc_bf16(lp_stream s, int n, int c, int64_t hw, const float *x, uint16_t *y);
/* NHWC bf16 -> NCHW fp32: y = act(x (+ bias[c] when bias) (+ y when accumulate)), act
 * as lp_k_bias_act's */
int lp_k_nhwc_bf16_to_nchw(lp_stream s, int n, int c, int64_t hw, const uint16_t *x, const float *bias, float *y,
                           int accumulate, float act);
/* Packed activations (bf16; two per 32-bit word, so buffers 4-byte aligned):
 * y = act(a + b) elementwise (b may be NULL: y = act(a)); in place on NHWC y with c
 * channels innermost, y = act(y + bias[channel]) (bias may be NULL). */
/* pooling of a packed x (bf16 NHWC) into y, packed when y_packed, else NCHW fp32 */
int lp_k_pool_fwd_packed(lp_stream s, const lp_pool_desc *d, const uint16_t *x, void *y, int y_packed);
/* dx (packed) (+)= pooling's gradient; x packed (max; NULL for average), dy packed when
 * dy_packed, else NCHW fp32; accumulate: add, else overwrite */
int lp_k_pool_bwd_packed(lp_stream s, const lp_pool_desc *d, const uint16_t *x, const void *dy, int dy_packed,
                         uint16_t *dx, int accumulate);
int lp_k_add_bf16(lp_stream s, int64_t n, const uint16_t *a, const uint16_t *b, uint16_t *y, float act);
/* dx (+)= dy where ReLU's backward of kind k passes it (lp_backend.packed_relu_bwd),
 * all packed; accumulate: add, else overwrite */
int lp_k_relu_bwd_bf16(lp_stream s, int k, float cap, int64_t n, const uint16_t *y, const uint16_t *dy, uint16_t *dx,
                       int accumulate);
int lp_k_bias_act_nhwc_bf16(lp_stream s, int64_t n, int c, const float *bias, float act, uint16_t *y);

#ifdef __cplusplus
}
#endif
#endif
