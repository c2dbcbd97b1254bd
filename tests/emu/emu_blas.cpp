/* emu_blas.cpp (Loupe's CUDA emulator) — cuBLAS GEMMs (column-major, as cuBLAS) on
 * the CPU through OpenBLAS, after checking every operand lies in device memory. */
#include <cublas_v2.h>

#include "emu_internal.h"

#include <cblas.h>
#include <stdio.h>

#include <vector>

struct lp_emu_blas {
    cudaStream_t stream;
    cublasMath_t math;
    void *ws;
    size_t ws_bytes;
};

namespace {

/* Elements a column-major rows x cols operand with leading dimension ld spans. */
size_t span(int rows, int cols, int ld) { return rows > 0 && cols > 0 ? (size_t)(cols - 1) * ld + rows : 0; }

cublasStatus_t bad(const char *why) {
    fprintf(stderr, "lp_emu: cuBLAS: %s\n", why);
    return CUBLAS_STATUS_INVALID_VALUE;
}

/* Checks the shapes and operands, then submits C = alpha op(A) op(B) + beta C, with A
 * and B read through `get` (widening or rounding) into fp32 copies at run time. */
cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                    const void *a, int lda, const void *b, int ldb, float beta, float *c, int ldc, size_t esize,
                    float (*get)(const void *, size_t)) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (m < 0 || n < 0 || k < 0) return bad("negative dimension");
    const int ar = ta == CUBLAS_OP_N ? m : k, ac = ta == CUBLAS_OP_N ? k : m;
    const int br = tb == CUBLAS_OP_N ? k : n, bc = tb == CUBLAS_OP_N ? n : k;
    if (lda < (ar > 1 ? ar : 1) || ldb < (br > 1 ? br : 1) || ldc < (m > 1 ? m : 1)) return bad("leading dimension too small");
    if (!m || !n) return CUBLAS_STATUS_SUCCESS;
    const size_t na = span(ar, ac, lda), nb = span(br, bc, ldb), nc = span(m, n, ldc);
    if ((na && !lp_emu::device_range(a, na * esize, "cuBLAS A")) ||
        (nb && !lp_emu::device_range(b, nb * esize, "cuBLAS B")) || !lp_emu::device_range(c, nc * 4, "cuBLAS C"))
        return CUBLAS_STATUS_INVALID_VALUE;
    cudaError_t e = lp_emu::submit(h->stream, [=]() {
        std::vector<float> A(na ? na : 1), B(nb ? nb : 1);
        for (size_t i = 0; i < na; i++) A[i] = get(a, i);
        for (size_t i = 0; i < nb; i++) B[i] = get(b, i);
        if (beta == 0.f) /* BLAS: beta 0 never reads C (it may hold NaN) */
            for (int j = 0; j < n; j++)
                for (int i = 0; i < m; i++) c[(size_t)j * ldc + i] = 0.f;
        if (k == 0) {
            for (int j = 0; j < n; j++)
                for (int i = 0; i < m; i++) c[(size_t)j * ldc + i] *= beta;
            return;
        }
        cblas_sgemm(CblasColMajor, ta == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
                    tb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, m, n, k, alpha, A.data(), lda, B.data(), ldb,
                    beta, c, ldc);
    });
    return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

float get_f32(const void *p, size_t i) { return ((const float *)p)[i]; }
float get_tf32(const void *p, size_t i) { return lp_emu::tf32(((const float *)p)[i]); }
float get_bf16(const void *p, size_t i) { return lp_emu::bf16_to_float(((const uint16_t *)p)[i]); }

} // namespace

extern "C" {

const char *cublasGetStatusString(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: break;
    }
    return "CUBLAS_STATUS_UNKNOWN";
}
cublasStatus_t cublasCreate(cublasHandle_t *h) {
    *h = new lp_emu_blas{nullptr, CUBLAS_DEFAULT_MATH, nullptr, 0};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *ws, size_t bytes) {
    if (bytes && !lp_emu::device_range(ws, bytes, "cuBLAS workspace")) return CUBLAS_STATUS_INVALID_VALUE;
    h->ws = ws, h->ws_bytes = bytes;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m) {
    h->math = m;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float *alpha, const float *a, int lda, const float *b, int ldb, const float *beta,
                           float *c, int ldc) {
    const bool tf32 = h && h->math == CUBLAS_TF32_TENSOR_OP_MATH;
    return gemm(h, ta, tb, m, n, k, *alpha, a, lda, b, ldb, *beta, c, ldc, 4, tf32 ? get_tf32 : get_f32);
}
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *a, cudaDataType at, int lda, const void *b, cudaDataType bt,
                            int ldb, const void *beta, void *c, cudaDataType ct, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t algo) {
    (void)algo;
    if (at != CUDA_R_16BF || bt != CUDA_R_16BF || ct != CUDA_R_32F || compute != CUBLAS_COMPUTE_32F)
        return bad("GemmEx: only bf16 x bf16 -> fp32 with fp32 compute is emulated");
    return gemm(h, ta, tb, m, n, k, *(const float *)alpha, a, lda, b, ldb, *(const float *)beta, (float *)c, ldc, 2,
                get_bf16);
}

} /* extern "C" */
