/* cuda_blas.c — GEMM through cuBLAS for the three precisions. Loupe's matrices are
 * row-major; cuBLAS is column-major, so C = op(A) op(B) is computed as
 * C^T = op(B)^T op(A)^T: the operands swap places and keep their transposes.
 * fp32 runs cuBLAS's default (FMA, no TF32) math, tf32 allows TF32 tensor cores, bf16
 * converts A and B to bfloat16 and accumulates in fp32 into the fp32 C. */
#include "cuda/cuda_internal.h"

/* Elements spanned by a row-major rows x cols operand with leading dimension ld. */
static int64_t span(int rows, int cols, int ld) { return rows > 0 && cols > 0 ? (int64_t)(rows - 1) * ld + cols : 0; }

lp_status _lp_cuda_gemm(lp_precision p, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                        const float *b, int ldb, float beta, float *c, int ldc) {
    lp_cuda *cx = _lp_cuda();
    if (!cx) return LP_ERR_DEVICE;
    if (m <= 0 || n <= 0) return LP_OK;
    const lp_stream s = (lp_stream)cx->stream;
    if (k <= 0) { /* C = beta C: no product to form (beta 0 writes zeros, as BLAS) */
        for (int r = 0; r < (ldc == n ? 1 : m); r++) {
            const int64_t cnt = ldc == n ? (int64_t)m * n : n;
            float *row = c + (int64_t)r * ldc;
            LP_KERNEL(beta == 0.f ? lp_k_fill(s, cnt, 0.f, row) : lp_k_scal(s, cnt, beta, row));
        }
        return LP_OK;
    }
    const cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    if (p != LP_PREC_BF16) {
        LP_BLAS(cublasSetMathMode(cx->blas, p == LP_PREC_TF32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
        LP_BLAS(cublasSgemm(cx->blas, ob, oa, n, m, k, &alpha, b, ldb, a, lda, &beta, c, ldc));
        return LP_OK;
    }
    const int64_t na = ta ? span(k, m, lda) : span(m, k, lda), nb = tb ? span(n, k, ldb) : span(k, n, ldb);
    void *a16, *b16;
    LP_TRY(_lp_cuda_scratch(LP_SLOT_X, sizeof(uint16_t) * (size_t)na, &a16));
    LP_TRY(_lp_cuda_scratch(LP_SLOT_W, sizeof(uint16_t) * (size_t)nb, &b16));
    LP_KERNEL(lp_k_f32_to_bf16(s, na, a, a16));
    LP_KERNEL(lp_k_f32_to_bf16(s, nb, b, b16));
    LP_BLAS(cublasSetMathMode(cx->blas, CUBLAS_DEFAULT_MATH));
    LP_BLAS(cublasGemmEx(cx->blas, ob, oa, n, m, k, &alpha, b16, CUDA_R_16BF, ldb, a16, CUDA_R_16BF, lda, &beta, c,
                         CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return LP_OK;
}
