/* cpu_internal.h — the CPU backend's functions, shared between the files of
 * engine/cpu/ so that cpu_backend.c can fill the lp_backend table from them. */
#ifndef LOUPE_CPU_INTERNAL_H
#define LOUPE_CPU_INTERNAL_H

#include "../internal.h"

/* cpu_conv.c */
lp_status _lp_cpu_conv_fwd(const lp_conv_desc *d, const float *x, const float *w, const float *b, float *y);
lp_status _lp_cpu_conv_bwd_data(const lp_conv_desc *d, const float *dy, const float *w, float *dx);
lp_status _lp_cpu_conv_bwd_filter(const lp_conv_desc *d, const float *x, const float *dy, float *dw, float *db);

/* cpu_pool.c */
lp_status _lp_cpu_pool_fwd(const lp_pool_desc *d, const float *x, float *y);
lp_status _lp_cpu_pool_bwd(const lp_pool_desc *d, const float *x, const float *y, const float *dy, float *dx,
                           int accumulate);

/* cpu_elementwise.c */
lp_status _lp_cpu_unary_fwd(lp_unary_kind k, const float *p, const float *x, float *y, int64_t n);
lp_status _lp_cpu_unary_bwd(lp_unary_kind k, const float *p, const float *x, const float *y, const float *dy,
                            float *dx, int64_t n, int accumulate);
lp_status _lp_cpu_add_relu(int64_t n, const float *a, const float *b, float *y);
/* A fused activation (lp_conv_desc.act: a ReLU, or ReLU6's Clip) on rows x len floats,
 * `stride` apart, in place while they are cached (the same expressions as the Relu
 * and Clip ops', so fused and unfused agree bit for bit). */
void _lp_cpu_act_rows(float *y, int rows, int64_t len, int64_t stride, float act);
lp_status _lp_cpu_binary_fwd(lp_binary_kind k, const lp_bcast *bc, const float *a, const float *b, float *y);
lp_status _lp_cpu_binary_bwd(lp_binary_kind k, const lp_bcast *bc, const float *a, const float *b, const float *y,
                             const float *dy, float *da, float *db);
lp_status _lp_cpu_reduce_sum(const lp_bcast *bc, const float *x, float *y, float scale, int accumulate);
lp_status _lp_cpu_broadcast(const lp_bcast *bc, const float *y, float *x, float scale, int accumulate);

/* cpu_layout.c */
lp_status _lp_cpu_transpose(int ndim, const int64_t *shape, const int *perm, const float *x, float *y,
                            int accumulate);
lp_status _lp_cpu_copy2d(int64_t outer, int64_t len, const float *src, int64_t src_stride, float *dst,
                         int64_t dst_stride, int accumulate);
lp_status _lp_cpu_slice_fwd(int ndim, const int64_t *xshape, const int64_t *yshape, const int64_t *start,
                            const int64_t *step, const float *x, float *y);
lp_status _lp_cpu_slice_bwd(int ndim, const int64_t *xshape, const int64_t *yshape, const int64_t *start,
                            const int64_t *step, const float *dy, float *dx);
lp_status _lp_cpu_pad_fwd(int ndim, const int64_t *xshape, const int64_t *pads, int mode, float value,
                          const float *x, float *y);
lp_status _lp_cpu_pad_bwd(int ndim, const int64_t *xshape, const int64_t *pads, int mode, const float *dy,
                          float *dx);

/* cpu_norm.c */
lp_status _lp_cpu_softmax_fwd(int64_t outer, int64_t axis, int64_t inner, int log, const float *x, float *y);
lp_status _lp_cpu_softmax_bwd(int64_t outer, int64_t axis, int64_t inner, int log, const float *y,
                              const float *dy, float *dx);
lp_status _lp_cpu_lrn_fwd(int n, int c, int64_t hw, int size, float alpha, float beta, float bias,
                          const float *x, float *y);
lp_status _lp_cpu_lrn_bwd(int n, int c, int64_t hw, int size, float alpha, float beta, float bias,
                          const float *x, const float *y, const float *dy, float *dx);
lp_status _lp_cpu_channel_affine_fwd(int n, int c, int64_t hw, const float *x, const float *scale,
                                     const float *shift, float *y, float act);
lp_status _lp_cpu_channel_affine_bwd(int n, int c, int64_t hw, const float *x, const float *scale,
                                     const float *dy, float *dx, float *dscale, float *dshift);

/* cpu_backend.c: row-major sgemm, OpenMP threads over blocks of C, OpenBLAS itself
 * single-threaded (see there why). */
void _lp_cpu_sgemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
                   int ldb, float beta, float *c, int ldc);
/* cpu_backend.c: 64-byte aligned scratch (NULL on failure, with an LP_ERR_OOM message). */
float *_lp_cpu_scratch(size_t floats, const char *what);

/* Elementwise loops go parallel only above this many elements: below it the
 * thread start costs more than it saves. */
#define LP_CPU_PAR_MIN 32768

#endif
