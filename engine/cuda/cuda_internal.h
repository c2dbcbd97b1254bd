/* cuda_internal.h — shared state of the CUDA backend (engine/cuda/): the one stream
 * all work is queued on, the cuDNN and cuBLAS handles, the caching allocator's
 * grow-only scratch slots, and the call checks that turn a CUDA, cuDNN or cuBLAS
 * error into a status naming the call, its file and line. */
#ifndef LOUPE_CUDA_INTERNAL_H
#define LOUPE_CUDA_INTERNAL_H

#include "internal.h"
#include "cuda/cuda_kernels.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

typedef struct lp_cuda {
    cudaStream_t stream;
    cudnnHandle_t dnn;
    cublasHandle_t blas;
    void *blas_ws; /* cuBLAS's fixed workspace */
    int device;
    char name[256];
} lp_cuda;

/* The initialised context (handles made on first use), or NULL with a status set. */
lp_cuda *_lp_cuda(void);

lp_status _lp_cuda_fail(int code, const char *what, const char *call, const char *file, int line);
#define LP_CUDA(call)                                                                                                  \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess) return _lp_cuda_fail((int)e_, "CUDA", #call, __FILE__, __LINE__);                       \
    } while (0)
#define LP_DNN(call)                                                                                                   \
    do {                                                                                                               \
        cudnnStatus_t e_ = (call);                                                                                     \
        if (e_ != CUDNN_STATUS_SUCCESS) return _lp_cuda_fail((int)e_, "cuDNN", #call, __FILE__, __LINE__);             \
    } while (0)
#define LP_BLAS(call)                                                                                                  \
    do {                                                                                                               \
        cublasStatus_t e_ = (call);                                                                                    \
        if (e_ != CUBLAS_STATUS_SUCCESS) return _lp_cuda_fail((int)e_, "cuBLAS", #call, __FILE__, __LINE__);           \
    } while (0)
/* Our own kernels' launchers return a cudaError_t as int. */
#define LP_KERNEL(call)                                                                                                \
    do {                                                                                                               \
        int e_ = (call);                                                                                               \
        if (e_ != 0) return _lp_cuda_fail(e_, "CUDA", #call, __FILE__, __LINE__);                                     \
    } while (0)

/* Caching allocator (cuda_memory.c). */
lp_status _lp_cuda_alloc(size_t bytes, void **p);
void _lp_cuda_free(void *p);
/* Grow-only scratch slots for workspaces and converted copies: valid until the next
 * call for the same slot. Safe to reuse between ops because every op runs on the
 * one stream, in order. */
typedef enum lp_cuda_slot {
    LP_SLOT_WORKSPACE = 0, /* cuDNN workspace */
    LP_SLOT_X,             /* converted / padded input */
    LP_SLOT_W,             /* converted weights */
    LP_SLOT_Y,             /* converted output */
    LP_SLOT_GRAD,          /* dense gradient before a reduction */
    LP_SLOT_UNPACK_X,      /* fp32 NCHW copies of a packed input and output, where a */
    LP_SLOT_UNPACK_Y,      /* convolution cannot run on the packed layout */
    LP_SLOT_COUNT
} lp_cuda_slot;
lp_status _lp_cuda_scratch(lp_cuda_slot slot, size_t bytes, void **p);
/* Give the cached free blocks back to the driver (after the stream drains). */
void _lp_cuda_release_cache(void);
/* Not thread-safe beyond the allocator: the scratch slots and convolution plans assume
 * one thread drives the backend at a time, as the executor does. */

/* Graph capture (cuda_graph.c): while a pass is being captured, whatever cannot be
 * replayed (allocation, free, host copy, sync) calls _lp_cuda_capture_refuse, which
 * drops the capture and returns the status to hand back. */
int _lp_cuda_capturing(void);
lp_status _lp_cuda_capture_refuse(const char *what);

/* cuDNN convolution (cuda_conv.c) for one precision. */
lp_status _lp_cuda_conv_fwd(lp_precision p, const lp_conv_desc *d, const float *x, const float *w, const float *b,
                            float *y);
lp_status _lp_cuda_conv_bwd_data(lp_precision p, const lp_conv_desc *d, const float *dy, const float *w, float *dx);
lp_status _lp_cuda_conv_bwd_filter(lp_precision p, const lp_conv_desc *d, const float *x, const float *dy, float *dw,
                                   float *db);
/* cuBLAS GEMM (cuda_blas.c), row-major as lp_backend.gemm. */
lp_status _lp_cuda_gemm(lp_precision p, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                        const float *b, int ldb, float beta, float *c, int ldc);

#endif
