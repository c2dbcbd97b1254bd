/* cpu_backend.c — the CPU lp_backend table: memory (aligned host malloc), BLAS
 * gemm and the BLAS-1/optimizer helpers; the heavier ops live in their own files. */
#include "cpu_internal.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* 64 bytes: a cache line and an AVX-512 vector, so BLAS and vector loops start aligned. */
#define LP_CPU_ALIGN 64

static lp_status cpu_alloc(size_t bytes, void **p) {
    size_t sz = (bytes + LP_CPU_ALIGN - 1) / LP_CPU_ALIGN * LP_CPU_ALIGN;
    if (sz == 0) sz = LP_CPU_ALIGN;
    *p = aligned_alloc(LP_CPU_ALIGN, sz);
    if (!*p) return lp_fail(LP_ERR_OOM, "cpu: cannot allocate %zu bytes", bytes);
    return LP_OK;
}

static void cpu_free(void *p) { free(p); }

float *_lp_cpu_scratch(size_t floats, const char *what) {
    void *p = NULL;
    if (cpu_alloc(floats * sizeof(float), &p) != LP_OK) {
        lp_fail(LP_ERR_OOM, "cpu: cannot allocate %zu floats of scratch for %s", floats, what);
        return NULL;
    }
    return p;
}

static lp_status cpu_copy(void *dst, const void *src, size_t bytes) {
    if (bytes && dst != src) memmove(dst, src, bytes);
    return LP_OK;
}

static lp_status cpu_zero(void *p, size_t bytes) {
    if (bytes) memset(p, 0, bytes);
    return LP_OK;
}

static lp_status cpu_sync(void) { return LP_OK; }

/* All CPU parallelism is OpenMP: OpenBLAS runs single-threaded and each OpenMP
 * thread calls it on a block of C. Two thread pools (OpenBLAS pthreads beside
 * libgomp's spinning workers) fought for the cores and ran convs 2x slower. */
static void blas_single_thread(void) {
    static int done;
    if (!done) {
        openblas_set_num_threads(1);
        done = 1;
    }
}

void _lp_cpu_sgemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
                   int ldb, float beta, float *c, int ldc) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {
        /* BLAS may leave C untouched for k = 0; the contract says C = beta C. */
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) c[(int64_t)i * ldc + j] = beta == 0.f ? 0.f : beta * c[(int64_t)i * ldc + j];
        return;
    }
    blas_single_thread();
    const CBLAS_TRANSPOSE oa = ta ? CblasTrans : CblasNoTrans, ob = tb ? CblasTrans : CblasNoTrans;
    int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
    if ((double)m * n * k < 2e6) nt = 1; /* below ~1 ms of work, splitting costs more than it gains */
    if (nt <= 1) {
        cblas_sgemm(CblasRowMajor, oa, ob, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    /* Split the longer side of C into nt blocks (multiples of 16 for the BLAS kernels). */
    const int by_cols = n >= m;
    const int len = by_cols ? n : m;
    int blk = (len + nt - 1) / nt;
    blk = (blk + 15) / 16 * 16;
    const int nblk = (len + blk - 1) / blk;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int t = 0; t < nblk; t++) {
        int s0 = t * blk, cnt = len - s0 < blk ? len - s0 : blk;
        if (by_cols)
            cblas_sgemm(CblasRowMajor, oa, ob, m, cnt, k, alpha, a, lda, tb ? b + (int64_t)s0 * ldb : b + s0, ldb,
                        beta, c + s0, ldc);
        else
            cblas_sgemm(CblasRowMajor, oa, ob, cnt, n, k, alpha, ta ? a + s0 : a + (int64_t)s0 * lda, lda, b, ldb,
                        beta, c + (int64_t)s0 * ldc, ldc);
    }
}

static lp_status cpu_gemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                          const float *b, int ldb, float beta, float *c, int ldc) {
    _lp_cpu_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return LP_OK;
}

static lp_status cpu_axpy(int64_t n, float a, const float *x, float *y) {
#pragma omp parallel for simd if (n > LP_CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
    return LP_OK;
}

static lp_status cpu_scal(int64_t n, float a, float *x) {
#pragma omp parallel for simd if (n > LP_CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) x[i] *= a;
    return LP_OK;
}

static lp_status cpu_fill(int64_t n, float v, float *x) {
#pragma omp parallel for simd if (n > LP_CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) x[i] = v;
    return LP_OK;
}

static lp_status cpu_sgd_momentum(int64_t n, float lr, float mu, float wd, float *w, const float *g, float *v) {
#pragma omp parallel for simd if (n > LP_CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float vi = mu * v[i] + g[i] + wd * w[i];
        v[i] = vi;
        w[i] -= lr * vi;
    }
    return LP_OK;
}

static const lp_backend cpu_backend = {
    .name = "cpu",
    .device = LP_DEVICE_CPU,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .sync = cpu_sync,
    .conv_fwd = _lp_cpu_conv_fwd,
    .conv_bwd_data = _lp_cpu_conv_bwd_data,
    .conv_bwd_filter = _lp_cpu_conv_bwd_filter,
    .gemm = cpu_gemm,
    .pool_fwd = _lp_cpu_pool_fwd,
    .pool_bwd = _lp_cpu_pool_bwd,
    .unary_fwd = _lp_cpu_unary_fwd,
    .unary_bwd = _lp_cpu_unary_bwd,
    .binary_fwd = _lp_cpu_binary_fwd,
    .add_relu = _lp_cpu_add_relu,
    .binary_bwd = _lp_cpu_binary_bwd,
    .reduce_sum = _lp_cpu_reduce_sum,
    .broadcast = _lp_cpu_broadcast,
    .softmax_fwd = _lp_cpu_softmax_fwd,
    .softmax_bwd = _lp_cpu_softmax_bwd,
    .transpose = _lp_cpu_transpose,
    .copy2d = _lp_cpu_copy2d,
    .slice_fwd = _lp_cpu_slice_fwd,
    .slice_bwd = _lp_cpu_slice_bwd,
    .pad_fwd = _lp_cpu_pad_fwd,
    .pad_bwd = _lp_cpu_pad_bwd,
    .lrn_fwd = _lp_cpu_lrn_fwd,
    .lrn_bwd = _lp_cpu_lrn_bwd,
    .channel_affine_fwd = _lp_cpu_channel_affine_fwd,
    .channel_affine_bwd = _lp_cpu_channel_affine_bwd,
    .axpy = cpu_axpy,
    .scal = cpu_scal,
    .fill = cpu_fill,
    .sgd_momentum = cpu_sgd_momentum,
};

const lp_backend *lp_backend_cpu(void) { return &cpu_backend; }
