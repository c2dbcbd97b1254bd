/* cpu_elementwise.c — unary activations and broadcast binary ops on the CPU,
 * forward and backward, plus reduce_sum / broadcast. Broadcast shapes are first
 * coalesced (adjacent dims merged, size-1 dims dropped) so the common cases (same
 * shape, per-channel vector, scalar) become long contiguous inner loops. */
#include "cpu_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------- unary ---------- */

static float par(const float *p, int i, float dflt) { return p ? p[i] : dflt; }

lp_status _lp_cpu_unary_fwd(lp_unary_kind k, const float *p, const float *x, float *y, int64_t n) {
    const float p0 = par(p, 0, k == LP_UN_LEAKY_RELU ? 0.01f : k == LP_UN_CLIP || k == LP_UN_HARDTANH ? -INFINITY
                                                          : k == LP_UN_HARD_SIGMOID ? 0.2f : 1.f);
    const float p1 = par(p, 1, k == LP_UN_CLIP || k == LP_UN_HARDTANH ? INFINITY : k == LP_UN_HARD_SIGMOID ? 0.5f : 0.f);
    const int par_on = n > LP_CPU_PAR_MIN;
    switch (k) {
    case LP_UN_IDENTITY:
        if (x != y) memmove(y, x, sizeof(float) * n);
        break;
    case LP_UN_RELU:
    case LP_UN_RELU_GUIDED:
    case LP_UN_RELU_DECONV:
#pragma omp parallel for simd if (par_on) schedule(static)
        for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.f ? x[i] : 0.f;
        break;
    case LP_UN_LEAKY_RELU:
#pragma omp parallel for simd if (par_on) schedule(static)
        for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.f ? x[i] : p0 * x[i];
        break;
    case LP_UN_CLIP:
    case LP_UN_HARDTANH:
#pragma omp parallel for simd if (par_on) schedule(static)
        for (int64_t i = 0; i < n; i++) y[i] = fminf(fmaxf(x[i], p0), p1);
        break;
    case LP_UN_SIGMOID:
#pragma omp parallel for if (par_on) schedule(static)
        for (int64_t i = 0; i < n; i++) y[i] = 1.f / (1.f + expf(-x[i]));
        break;
    case LP_UN_HARD_SIGMOID:
#pragma omp parallel for simd if (par_on) schedule(static)
        for (int64_t i = 0; i < n; i++) y[i] = fmaxf(0.f, fminf(1.f, p0 * x[i] + p1));
        break;
    case LP_UN_HARD_SWISH:
#pragma omp parallel for simd if (par_on) schedule(static)
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * fminf(fmaxf(x[i] + 3.f, 0.f), 6.f) * (1.f / 6.f);
        break;
    case LP_UN_ERF:
#pragma omp parallel for if (par_on) schedule(static)
        for (int64_t i = 0; i < n; i++) y[i] = erff(x[i]);
        break;
    case LP_UN_GELU:
#pragma omp parallel for if (par_on) schedule(static)
        for (int64_t i = 0; i < n; i++) y[i] = lp_gelu(x[i]);
        break;
    case LP_UN_GELU_TANH:
#pragma omp parallel for if (par_on) schedule(static)
        for (int64_t i = 0; i < n; i++) y[i] = lp_gelu_tanh(x[i]);
        break;
    case LP_UN_SQRT:
#pragma omp parallel for simd if (par_on) schedule(static)
        for (int64_t i = 0; i < n; i++) y[i] = sqrtf(x[i]);
        break;
    case LP_UN_TANH:
#pragma omp parallel for if (par_on) schedule(static)
        for (int64_t i = 0; i < n; i++) y[i] = tanhf(x[i]);
        break;
    case LP_UN_EXP:
#pragma omp parallel for if (par_on) schedule(static)
        for (int64_t i = 0; i < n; i++) y[i] = expf(x[i]);
        break;
    case LP_UN_LOG:
#pragma omp parallel for if (par_on) schedule(static)
        for (int64_t i = 0; i < n; i++) y[i] = logf(x[i]);
        break;
    case LP_UN_NEG:
#pragma omp parallel for simd if (par_on) schedule(static)
        for (int64_t i = 0; i < n; i++) y[i] = -x[i];
        break;
    case LP_UN_ABS:
#pragma omp parallel for simd if (par_on) schedule(static)
        for (int64_t i = 0; i < n; i++) y[i] = fabsf(x[i]);
        break;
    case LP_UN_POW:
        if (p0 == 2.f) {
#pragma omp parallel for simd if (par_on) schedule(static)
            for (int64_t i = 0; i < n; i++) y[i] = x[i] * x[i];
        } else {
#pragma omp parallel for if (par_on) schedule(static)
            for (int64_t i = 0; i < n; i++) y[i] = powf(x[i], p0);
        }
        break;
    case LP_UN_SCALE:
#pragma omp parallel for simd if (par_on) schedule(static)
        for (int64_t i = 0; i < n; i++) y[i] = p0 * x[i] + p1;
        break;
    default:
        return lp_fail(LP_ERR_UNSUPPORTED, "cpu unary_fwd: unknown kind %d", (int)k);
    }
    return LP_OK;
}

void _lp_cpu_act_rows(float *y, int rows, int64_t len, int64_t stride, float act) {
    for (int r = 0; r < rows; r++) {
        float *restrict yr = y + r * stride;
        if (act == INFINITY)
            for (int64_t q = 0; q < len; q++) yr[q] = yr[q] > 0.f ? yr[q] : 0.f;
        else
            for (int64_t q = 0; q < len; q++) yr[q] = fminf(fmaxf(yr[q], 0.f), act);
    }
}

/* dx[i] (+)= EXPR for i < n: added when accumulate, else written (a first gradient,
 * so dx need not be cleared). */
#define BWD_LOOP(PRAGMA, EXPR)                                               \
    do {                                                                     \
        if (accumulate) {                                                    \
            _Pragma(PRAGMA) for (int64_t i = 0; i < n; i++) dx[i] += (EXPR); \
        } else {                                                             \
            _Pragma(PRAGMA) for (int64_t i = 0; i < n; i++) dx[i] = (EXPR);  \
        }                                                                    \
    } while (0)
#define BWD_SIMD(EXPR) BWD_LOOP("omp parallel for simd if (par_on) schedule(static)", EXPR)
#define BWD(EXPR) BWD_LOOP("omp parallel for if (par_on) schedule(static)", EXPR)

lp_status _lp_cpu_unary_bwd(lp_unary_kind k, const float *p, const float *x, const float *y, const float *dy,
                            float *dx, int64_t n, int accumulate) {
    const float p0 = par(p, 0, k == LP_UN_LEAKY_RELU ? 0.01f : k == LP_UN_CLIP || k == LP_UN_HARDTANH ? -INFINITY
                                                          : k == LP_UN_HARD_SIGMOID ? 0.2f : 1.f);
    const float p1 = par(p, 1, k == LP_UN_CLIP || k == LP_UN_HARDTANH ? INFINITY : k == LP_UN_HARD_SIGMOID ? 0.5f : 0.f);
    const int par_on = n > LP_CPU_PAR_MIN;
    switch (k) {
    case LP_UN_IDENTITY:
        BWD_SIMD(dy[i]);
        break;
    case LP_UN_RELU:
        BWD_SIMD(y[i] > 0.f ? dy[i] : 0.f); /* y > 0 iff x > 0: x may be freed */
        break;
    case LP_UN_LEAKY_RELU:
        BWD_SIMD(x[i] > 0.f ? dy[i] : p0 * dy[i]);
        break;
    case LP_UN_CLIP: /* PyTorch clamp: the gradient passes where min <= x <= max */
        BWD_SIMD((x[i] >= p0 && x[i] <= p1) ? dy[i] : 0.f);
        break;
    case LP_UN_HARDTANH: /* PyTorch's hardtanh (ReLU6): where min < x < max, read from y (y is
                          * strictly inside iff x is), so x may be freed */
        BWD_SIMD((y[i] > p0 && y[i] < p1) ? dy[i] : 0.f);
        break;
    case LP_UN_SIGMOID:
        BWD_SIMD(dy[i] * y[i] * (1.f - y[i]));
        break;
    case LP_UN_HARD_SIGMOID:
        BWD_SIMD((p0 * x[i] + p1 > 0.f && p0 * x[i] + p1 < 1.f) ? p0 * dy[i] : 0.f);
        break;
    case LP_UN_HARD_SWISH: /* PyTorch: 0 below -3, x/3 + 1/2 up to 3 inclusive, 1 above */
        BWD_SIMD(x[i] < -3.f ? 0.f : x[i] <= 3.f ? dy[i] * (x[i] * (1.f / 3.f) + 0.5f) : dy[i]);
        break;
    case LP_UN_ERF:
        BWD(dy[i] * 1.1283791670955126f * expf(-x[i] * x[i]));
        break;
    case LP_UN_GELU:
        BWD(dy[i] * lp_gelu_grad(x[i]));
        break;
    case LP_UN_GELU_TANH:
        BWD(dy[i] * lp_gelu_tanh_grad(x[i]));
        break;
    case LP_UN_SQRT:
        BWD_SIMD(dy[i] * 0.5f / y[i]);
        break;
    case LP_UN_TANH:
        BWD_SIMD(dy[i] * (1.f - y[i] * y[i]));
        break;
    case LP_UN_EXP:
        BWD_SIMD(dy[i] * y[i]);
        break;
    case LP_UN_LOG:
        BWD_SIMD(dy[i] / x[i]);
        break;
    case LP_UN_NEG:
        BWD_SIMD(-dy[i]);
        break;
    case LP_UN_ABS:
        BWD_SIMD(x[i] > 0.f ? dy[i] : x[i] < 0.f ? -dy[i] : 0.f);
        break;
    case LP_UN_POW:
        if (p0 == 2.f) {
            BWD_SIMD(2.f * x[i] * dy[i]);
        } else {
            BWD(dy[i] * p0 * powf(x[i], p0 - 1.f));
        }
        break;
    case LP_UN_SCALE:
        BWD_SIMD(p0 * dy[i]);
        break;
    case LP_UN_RELU_GUIDED:
        BWD_SIMD(y[i] > 0.f && dy[i] > 0.f ? dy[i] : 0.f);
        break;
    case LP_UN_RELU_DECONV:
        BWD_SIMD(dy[i] > 0.f ? dy[i] : 0.f);
        break;
    default:
        return lp_fail(LP_ERR_UNSUPPORTED, "cpu unary_bwd: unknown kind %d", (int)k);
    }
    return LP_OK;
}

#undef BWD
#undef BWD_SIMD
#undef BWD_LOOP

/* ---------- broadcast iteration ---------- */

/* A broadcast with merged dimensions: the output is contiguous; a and b have strides. */
typedef struct bc_iter {
    int nd;
    int64_t shape[LP_MAX_DIMS], sa[LP_MAX_DIMS], sb[LP_MAX_DIMS];
    int64_t outer, inner; /* product of all but the last dim; the last dim */
} bc_iter;

static void bc_coalesce(const lp_bcast *bc, bc_iter *it) {
    int nd = 0;
    for (int i = 0; i < bc->ndim; i++) {
        if (bc->shape[i] == 1) continue;
        if (nd > 0 && it->sa[nd - 1] == bc->sa[i] * bc->shape[i] && it->sb[nd - 1] == bc->sb[i] * bc->shape[i]) {
            it->shape[nd - 1] *= bc->shape[i];
            it->sa[nd - 1] = bc->sa[i];
            it->sb[nd - 1] = bc->sb[i];
            continue;
        }
        it->shape[nd] = bc->shape[i];
        it->sa[nd] = bc->sa[i];
        it->sb[nd] = bc->sb[i];
        nd++;
    }
    for (int i = 0; i < bc->ndim; i++)
        if (bc->shape[i] == 0) nd = -1;
    if (nd == 0) { /* a single element */
        it->shape[0] = 1;
        it->sa[0] = it->sb[0] = 0;
        nd = 1;
    }
    it->nd = nd;
    if (nd < 0) {
        it->outer = it->inner = 0;
        return;
    }
    it->inner = it->shape[nd - 1];
    it->outer = 1;
    for (int i = 0; i < nd - 1; i++) it->outer *= it->shape[i];
}

/* Offsets of a and b at the start of outer row o. */
static void bc_offsets(const bc_iter *it, int64_t o, int64_t *oa, int64_t *ob) {
    int64_t a = 0, b = 0;
    for (int i = it->nd - 2; i >= 0; i--) {
        int64_t q = o % it->shape[i];
        o /= it->shape[i];
        a += q * it->sa[i];
        b += q * it->sb[i];
    }
    *oa = a;
    *ob = b;
}

/* Does an operand with these strides get several outer rows writing one element? */
static int bc_outer_overlaps(const bc_iter *it, const int64_t *s) {
    for (int i = 0; i < it->nd - 1; i++)
        if (s[i] == 0 && it->shape[i] > 1) return 1;
    return 0;
}

static void bin_row_fwd(lp_binary_kind k, int64_t n, const float *a, int64_t sa, const float *b, int64_t sb,
                        float *y) {
#define LP_BIN_LOOP(expr)                                                                                              \
    do {                                                                                                               \
        if (sa == 1 && sb == 1)                                                                                        \
            for (int64_t j = 0; j < n; j++) {                                                                          \
                float av = a[j], bv = b[j];                                                                            \
                y[j] = (expr);                                                                                         \
            }                                                                                                          \
        else if (sa == 1 && sb == 0) {                                                                                 \
            float bv = b[0];                                                                                           \
            for (int64_t j = 0; j < n; j++) {                                                                          \
                float av = a[j];                                                                                       \
                y[j] = (expr);                                                                                         \
            }                                                                                                          \
        } else                                                                                                         \
            for (int64_t j = 0; j < n; j++) {                                                                          \
                float av = a[j * sa], bv = b[j * sb];                                                                  \
                y[j] = (expr);                                                                                         \
            }                                                                                                          \
    } while (0)
    switch (k) {
    case LP_BIN_ADD: LP_BIN_LOOP(av + bv); break;
    case LP_BIN_SUB: LP_BIN_LOOP(av - bv); break;
    case LP_BIN_MUL: LP_BIN_LOOP(av * bv); break;
    case LP_BIN_DIV: LP_BIN_LOOP(av / bv); break;
    case LP_BIN_POW: LP_BIN_LOOP(powf(av, bv)); break;
    default: break;
    }
#undef LP_BIN_LOOP
}

lp_status _lp_cpu_add_relu(int64_t n, const float *a, const float *b, float *y) {
#pragma omp parallel for simd if (n > LP_CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float s = a[i] + b[i];
        y[i] = s > 0.f ? s : 0.f; /* as unary_fwd's Relu */
    }
    return LP_OK;
}

lp_status _lp_cpu_binary_fwd(lp_binary_kind k, const lp_bcast *bc, const float *a, const float *b, float *y) {
    if ((int)k < 0 || k >= LP_BIN_COUNT) return lp_fail(LP_ERR_UNSUPPORTED, "cpu binary_fwd: unknown kind %d", (int)k);
    bc_iter it;
    bc_coalesce(bc, &it);
    if (it.nd < 0) return LP_OK;
    const int64_t sa = it.sa[it.nd - 1], sb = it.sb[it.nd - 1];
#pragma omp parallel for schedule(static) if (it.outer * it.inner > LP_CPU_PAR_MIN && it.outer > 1)
    for (int64_t o = 0; o < it.outer; o++) {
        int64_t oa, ob;
        bc_offsets(&it, o, &oa, &ob);
        bin_row_fwd(k, it.inner, a + oa, sa, b + ob, sb, y + o * it.inner);
    }
    return LP_OK;
}

/* Gradient of one row: da[j*sa] += ga, db[j*sb] += gb (either pointer may be NULL). */
static void bin_row_bwd(lp_binary_kind k, int64_t n, const float *a, int64_t sa, const float *b, int64_t sb,
                        const float *y, const float *dy, float *da, float *db) {
    const int reads = k != LP_BIN_ADD && k != LP_BIN_SUB; /* Add and Sub never read their operands */
    for (int64_t j = 0; j < n; j++) {
        float av = reads ? a[j * sa] : 0.f, bv = reads ? b[j * sb] : 0.f, g = dy[j], ga, gb;
        switch (k) {
        case LP_BIN_ADD: ga = g; gb = g; break;
        case LP_BIN_SUB: ga = g; gb = -g; break;
        case LP_BIN_MUL: ga = g * bv; gb = g * av; break;
        case LP_BIN_DIV: ga = g / bv; gb = -g * av / (bv * bv); break;
        default: { /* POW */
            float yv = y ? y[j] : powf(av, bv);
            ga = g * bv * powf(av, bv - 1.f);
            gb = av > 0.f ? g * yv * logf(av) : 0.f;
        }
        }
        if (da) da[j * sa] += ga;
        if (db) db[j * sb] += gb;
    }
}

lp_status _lp_cpu_binary_bwd(lp_binary_kind k, const lp_bcast *bc, const float *a, const float *b, const float *y,
                             const float *dy, float *da, float *db) {
    if ((int)k < 0 || k >= LP_BIN_COUNT) return lp_fail(LP_ERR_UNSUPPORTED, "cpu binary_bwd: unknown kind %d", (int)k);
    if (!da && !db) return LP_OK;
    bc_iter it;
    bc_coalesce(bc, &it);
    if (it.nd < 0) return LP_OK;
    const int64_t sa = it.sa[it.nd - 1], sb = it.sb[it.nd - 1];
    /* Rows run in parallel only when no two rows add into one element of da or db. */
    int safe = !(da && bc_outer_overlaps(&it, it.sa)) && !(db && bc_outer_overlaps(&it, it.sb));
#pragma omp parallel for schedule(static) if (safe && it.outer * it.inner > LP_CPU_PAR_MIN && it.outer > 1)
    for (int64_t o = 0; o < it.outer; o++) {
        int64_t oa, ob;
        bc_offsets(&it, o, &oa, &ob);
        bin_row_bwd(k, it.inner, a ? a + oa : NULL, sa, b ? b + ob : NULL, sb, y ? y + o * it.inner : NULL, dy + o * it.inner,
                    da ? da + oa : NULL, db ? db + ob : NULL);
    }
    return LP_OK;
}

/* ---------- reduce_sum / broadcast ---------- */

/* Number of elements of the operand indexed by strides s over the broadcast shape. */
static int64_t bc_extent(const lp_bcast *bc, const int64_t *s) {
    int64_t e = 1;
    for (int i = 0; i < bc->ndim; i++) {
        if (bc->shape[i] == 0) return 0;
        e += (bc->shape[i] - 1) * s[i];
    }
    return e;
}

lp_status _lp_cpu_reduce_sum(const lp_bcast *bc, const float *x, float *y, float scale, int accumulate) {
    bc_iter it;
    bc_coalesce(bc, &it);
    int64_t ny = bc_extent(bc, bc->sb);
    float *acc = _lp_cpu_scratch((size_t)(ny > 0 ? ny : 1), "reduce_sum");
    if (!acc) return LP_ERR_OOM;
    memset(acc, 0, sizeof(float) * (ny > 0 ? ny : 1));
    if (it.nd >= 0) {
        const int64_t sa = it.sa[it.nd - 1], sb = it.sb[it.nd - 1];
        int safe = !bc_outer_overlaps(&it, it.sb);
#pragma omp parallel for schedule(static) if (safe && it.outer * it.inner > LP_CPU_PAR_MIN && it.outer > 1)
        for (int64_t o = 0; o < it.outer; o++) {
            int64_t oa, ob;
            bc_offsets(&it, o, &oa, &ob);
            const float *xr = x + oa;
            if (sb == 0) {
                double s = 0;
                for (int64_t j = 0; j < it.inner; j++) s += xr[j * sa];
                acc[ob] += (float)s;
            } else {
                for (int64_t j = 0; j < it.inner; j++) acc[ob + j * sb] += xr[j * sa];
            }
        }
    }
    for (int64_t i = 0; i < ny; i++) y[i] = accumulate ? y[i] + scale * acc[i] : scale * acc[i];
    free(acc);
    return LP_OK;
}

lp_status _lp_cpu_broadcast(const lp_bcast *bc, const float *y, float *x, float scale, int accumulate) {
    bc_iter it;
    bc_coalesce(bc, &it);
    if (it.nd < 0) return LP_OK;
    const int64_t sa = it.sa[it.nd - 1], sb = it.sb[it.nd - 1];
#pragma omp parallel for schedule(static) if (it.outer * it.inner > LP_CPU_PAR_MIN && it.outer > 1)
    for (int64_t o = 0; o < it.outer; o++) {
        int64_t oa, ob;
        bc_offsets(&it, o, &oa, &ob);
        float *xr = x + oa;
        const float *yr = y + ob;
        if (accumulate)
            for (int64_t j = 0; j < it.inner; j++) xr[j * sa] += scale * yr[j * sb];
        else
            for (int64_t j = 0; j < it.inner; j++) xr[j * sa] = scale * yr[j * sb];
    }
    return LP_OK;
}
