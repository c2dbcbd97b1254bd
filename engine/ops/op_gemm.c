/* op_gemm.c — Gemm (alpha, beta, transA/B, broadcast bias C) and MatMul (2-D,
 * batched with numpy broadcasting of the leading dims, 1-D operands), all as
 * calls to the backend's row-major gemm. */
#include "op_util.h"

#include <inttypes.h>
#include <string.h>

/* ---- Gemm -------------------------------------------------------------------------- */

typedef struct gemm_params {
    float alpha, beta;
    int ta, tb;
} gemm_params;

static lp_status gemm_check(lp_model *m, lp_node *n) {
    if (n->n_in < 2 || n->n_in > 3 || n->in[0] < 0 || n->in[1] < 0)
        return _lp_op_fail(m, n, LP_ERR_PARSE, "needs inputs A, B and an optional C (got %d)", n->n_in);
    if (n->n_out != 1) return _lp_op_fail(m, n, LP_ERR_PARSE, "has %d outputs (expected 1)", n->n_out);
    gemm_params *p = _lp_op_params(n, sizeof *p);
    if (!p) return LP_ERR_OOM;
    p->alpha = lp_attr_float(n, "alpha", 1.0f);
    p->beta = lp_attr_float(n, "beta", 1.0f);
    p->ta = lp_attr_int(n, "transA", 0) != 0;
    p->tb = lp_attr_int(n, "transB", 0) != 0;
    return LP_OK;
}

static lp_status gemm_dims(const lp_node *n, const lp_shape *in, int64_t *M, int64_t *N, int64_t *K, lp_bcast *cb) {
    const gemm_params *p = n->params;
    char a[96], b[96];
    if (in[0].ndim != 2 || in[1].ndim != 2)
        return lp_fail(LP_ERR_SHAPE, "A %s and B %s must be 2-D", lp_shape_fmt(&in[0], a, sizeof a), lp_shape_fmt(&in[1], b, sizeof b));
    *M = p->ta ? in[0].d[1] : in[0].d[0];
    *K = p->ta ? in[0].d[0] : in[0].d[1];
    int64_t kb = p->tb ? in[1].d[1] : in[1].d[0];
    *N = p->tb ? in[1].d[0] : in[1].d[1];
    if (kb != *K)
        return lp_fail(LP_ERR_SHAPE, "A %s and B %s do not multiply (transA %d, transB %d)", lp_shape_fmt(&in[0], a, sizeof a),
                       lp_shape_fmt(&in[1], b, sizeof b), p->ta, p->tb);
    if (n->n_in > 2 && n->in[2] >= 0) {
        int64_t y[2] = {*M, *N};
        LP_TRY(lp_bcast_make(2, y, in[2].ndim, in[2].d, cb));
        if (cb->ndim != 2 || cb->shape[0] != *M || cb->shape[1] != *N)
            return lp_fail(LP_ERR_SHAPE, "bias C %s does not broadcast to %" PRId64 "x%" PRId64, lp_shape_fmt(&in[2], a, sizeof a), *M, *N);
    }
    return LP_OK;
}

static lp_status gemm_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    (void)in_const;
    int64_t M = 0, N = 0, K = 0;
    lp_bcast cb;
    LP_TRY(gemm_dims(n, in, &M, &N, &K, &cb));
    out[0].ndim = 2;
    out[0].d[0] = M;
    out[0].d[1] = N;
    return LP_OK;
}

static void shapes_of(const lp_node *n, lp_tensor *const *in, lp_shape *s) {
    for (int i = 0; i < n->n_in && i < 3; i++) {
        if (in[i]) s[i] = lp_tensor_shape(in[i]);
        else memset(&s[i], 0, sizeof s[i]);
    }
}

static lp_status gemm_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    const gemm_params *p = n->params;
    lp_shape s[3];
    int64_t M = 0, N = 0, K = 0;
    lp_bcast cb;
    shapes_of(n, in, s);
    LP_TRY(gemm_dims(n, s, &M, &N, &K, &cb));
    int has_c = n->n_in > 2 && in[2];
    if (has_c) LP_TRY(c->be->broadcast(&cb, in[2]->data, out[0]->data, p->beta, 0));
    return c->be->gemm(p->ta, p->tb, (int)M, (int)N, (int)K, p->alpha, in[0]->data, (int)in[0]->shape[1], in[1]->data,
                       (int)in[1]->shape[1], has_c ? 1.0f : 0.0f, out[0]->data, (int)N);
}

static lp_status gemm_backward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                               lp_tensor *const *dout, lp_tensor *const *din) {
    (void)out;
    const gemm_params *p = n->params;
    lp_shape s[3];
    int64_t M64 = 0, N64 = 0, K64 = 0;
    lp_bcast cb;
    shapes_of(n, in, s);
    LP_TRY(gemm_dims(n, s, &M64, &N64, &K64, &cb));
    int M = (int)M64, N = (int)N64, K = (int)K64;
    const float *A = in[0]->data, *B = in[1]->data, *dY = dout[0]->data;
    int lda = (int)in[0]->shape[1], ldb = (int)in[1]->shape[1];
    float al = p->alpha;
    if (din[0]) { /* d op(A) = alpha dY op(B)^T, stored transposed when transA */
        float *dA = din[0]->data;
        if (!p->ta) LP_TRY(c->be->gemm(0, !p->tb, M, K, N, al, dY, N, B, ldb, 1.0f, dA, K));
        else LP_TRY(c->be->gemm(p->tb, 1, K, M, N, al, B, ldb, dY, N, 1.0f, dA, M));
    }
    if (din[1]) { /* d op(B) = alpha op(A)^T dY */
        float *dB = din[1]->data;
        if (!p->tb) LP_TRY(c->be->gemm(!p->ta, 0, K, N, M, al, A, lda, dY, N, 1.0f, dB, N));
        else LP_TRY(c->be->gemm(1, p->ta, N, K, M, al, dY, N, A, lda, 1.0f, dB, K));
    }
    if (n->n_in > 2 && din[2]) LP_TRY(c->be->reduce_sum(&cb, dY, din[2]->data, p->beta, 1));
    return LP_OK;
}

static int64_t gemm_macs(const lp_node *n, const lp_shape *in, const lp_shape *out) {
    (void)out;
    int64_t M = 0, N = 0, K = 0;
    lp_bcast cb;
    if (gemm_dims(n, in, &M, &N, &K, &cb) != LP_OK) return 0;
    return M * N * K;
}

const lp_op _lp_op_Gemm = {"Gemm", gemm_check, gemm_infer, gemm_forward, gemm_backward, gemm_macs, 0, 0};

/* ---- MatMul ------------------------------------------------------------------------ */

/* A batched product: out[b] = A[ia(b)] x B[ib(b)], each M x K times K x N. */
typedef struct mm_plan {
    int64_t M, N, K;
    lp_bcast bat;  /* broadcast of the batch dims (ndim 0: none) */
    int64_t nbatch;
    lp_shape out;
} mm_plan;

static lp_status mm_plan_make(const lp_shape *a, const lp_shape *b, mm_plan *pl) {
    char x[96], y[96];
    if (a->ndim < 1 || b->ndim < 1) return lp_fail(LP_ERR_SHAPE, "MatMul operands must have rank >= 1");
    int ra = a->ndim, rb = b->ndim;
    pl->M = ra == 1 ? 1 : a->d[ra - 2];
    pl->K = a->d[ra - 1];
    int64_t kb = rb == 1 ? b->d[0] : b->d[rb - 2];
    pl->N = rb == 1 ? 1 : b->d[rb - 1];
    if (kb != pl->K)
        return lp_fail(LP_ERR_SHAPE, "A %s and B %s do not multiply", lp_shape_fmt(a, x, sizeof x), lp_shape_fmt(b, y, sizeof y));
    int ba = ra > 2 ? ra - 2 : 0, bb = rb > 2 ? rb - 2 : 0;
    memset(&pl->bat, 0, sizeof pl->bat);
    if (ba || bb) {
        LP_TRY(lp_bcast_make(ba, a->d, bb, b->d, &pl->bat));
    }
    pl->nbatch = _lp_prod(pl->bat.shape, 0, pl->bat.ndim);
    pl->out.ndim = 0;
    for (int i = 0; i < pl->bat.ndim; i++) pl->out.d[pl->out.ndim++] = pl->bat.shape[i];
    if (ra > 1) pl->out.d[pl->out.ndim++] = pl->M;
    if (rb > 1) pl->out.d[pl->out.ndim++] = pl->N;
    return LP_OK;
}

/* Matrix offsets (in matrices) of A and B for output batch index i. */
static void mm_offsets(const mm_plan *pl, int64_t i, int64_t *ia, int64_t *ib) {
    int64_t rem = i;
    *ia = *ib = 0;
    for (int d = pl->bat.ndim - 1; d >= 0; d--) {
        int64_t id = rem % pl->bat.shape[d];
        rem /= pl->bat.shape[d];
        *ia += id * pl->bat.sa[d];
        *ib += id * pl->bat.sb[d];
    }
}

static lp_status matmul_check(lp_model *m, lp_node *n) {
    if (n->n_in != 2 || n->in[0] < 0 || n->in[1] < 0) return _lp_op_fail(m, n, LP_ERR_PARSE, "needs 2 inputs (got %d)", n->n_in);
    if (n->n_out != 1) return _lp_op_fail(m, n, LP_ERR_PARSE, "has %d outputs (expected 1)", n->n_out);
    return LP_OK;
}

static lp_status matmul_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    (void)n;
    (void)in_const;
    mm_plan pl;
    LP_TRY(mm_plan_make(&in[0], &in[1], &pl));
    out[0] = pl.out;
    return LP_OK;
}

/* B with no batch dims against a batched, contiguous A: one gemm with M' = batch * M. */
static int mm_fold_batch(const lp_tensor *b) { return b->ndim <= 2; }

static lp_status matmul_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    (void)n;
    lp_shape sa = lp_tensor_shape(in[0]), sb = lp_tensor_shape(in[1]);
    mm_plan pl;
    LP_TRY(mm_plan_make(&sa, &sb, &pl));
    const float *A = in[0]->data, *B = in[1]->data;
    float *Y = out[0]->data;
    int M = (int)pl.M, N = (int)pl.N, K = (int)pl.K;
    if (mm_fold_batch(in[1])) return c->be->gemm(0, 0, (int)(pl.nbatch * M), N, K, 1.0f, A, K, B, N, 0.0f, Y, N);
    for (int64_t i = 0; i < pl.nbatch; i++) {
        int64_t ia, ib;
        mm_offsets(&pl, i, &ia, &ib);
        LP_TRY(c->be->gemm(0, 0, M, N, K, 1.0f, A + ia * M * K, K, B + ib * K * N, N, 0.0f, Y + i * M * N, N));
    }
    return LP_OK;
}

static lp_status matmul_backward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                                 lp_tensor *const *dout, lp_tensor *const *din) {
    (void)n;
    (void)out;
    lp_shape sa = lp_tensor_shape(in[0]), sb = lp_tensor_shape(in[1]);
    mm_plan pl;
    LP_TRY(mm_plan_make(&sa, &sb, &pl));
    const float *A = in[0]->data, *B = in[1]->data, *dY = dout[0]->data;
    float *dA = din[0] ? din[0]->data : NULL, *dB = din[1] ? din[1]->data : NULL;
    int M = (int)pl.M, N = (int)pl.N, K = (int)pl.K;
    if (mm_fold_batch(in[1])) {
        int MB = (int)(pl.nbatch * M);
        if (dA) LP_TRY(c->be->gemm(0, 1, MB, K, N, 1.0f, dY, N, B, N, 1.0f, dA, K));
        if (dB) LP_TRY(c->be->gemm(1, 0, K, N, MB, 1.0f, A, K, dY, N, 1.0f, dB, N));
        return LP_OK;
    }
    /* Broadcast batch entries accumulate into the same dA / dB matrix: beta = 1. */
    for (int64_t i = 0; i < pl.nbatch; i++) {
        int64_t ia, ib;
        mm_offsets(&pl, i, &ia, &ib);
        const float *g = dY + i * M * N;
        if (dA) LP_TRY(c->be->gemm(0, 1, M, K, N, 1.0f, g, N, B + ib * K * N, N, 1.0f, dA + ia * M * K, K));
        if (dB) LP_TRY(c->be->gemm(1, 0, K, N, M, 1.0f, A + ia * M * K, K, g, N, 1.0f, dB + ib * K * N, N));
    }
    return LP_OK;
}

static int64_t matmul_macs(const lp_node *n, const lp_shape *in, const lp_shape *out) {
    (void)n;
    (void)out;
    mm_plan pl;
    if (mm_plan_make(&in[0], &in[1], &pl) != LP_OK) return 0;
    return pl.nbatch * pl.M * pl.N * pl.K;
}

const lp_op _lp_op_MatMul = {"MatMul", matmul_check, matmul_infer, matmul_forward, matmul_backward, matmul_macs, 0, 0};
