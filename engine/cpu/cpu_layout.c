/* cpu_layout.c — data movement on the CPU: transpose (any permutation up to
 * LP_MAX_DIMS), strided 2-D copies, general strided slices and padding. Each walks
 * the output in order with per-dimension counters and an inner row loop. */
#include "cpu_internal.h"

#include <stdlib.h>
#include <string.h>

/* Advance the counters idx[0..nd-1) (the dims above the inner one) by one row. */
static void next_row(int nd, const int64_t *shape, int64_t *idx) {
    for (int d = nd - 2; d >= 0; d--) {
        if (++idx[d] < shape[d]) return;
        idx[d] = 0;
    }
}

lp_status _lp_cpu_transpose(int ndim, const int64_t *shape, const int *perm, const float *x, float *y,
                            int accumulate) {
    if (ndim == 0) { /* a scalar: one element */
        y[0] = accumulate ? y[0] + x[0] : x[0];
        return LP_OK;
    }
    if (ndim < 0 || ndim > LP_MAX_DIMS) return lp_fail(LP_ERR_SHAPE, "cpu transpose: rank %d is not in 0..%d", ndim, LP_MAX_DIMS);
    int64_t xs[LP_MAX_DIMS], ys[LP_MAX_DIMS], st[LP_MAX_DIMS];
    int64_t s = 1, total = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        xs[d] = s;
        s *= shape[d];
    }
    for (int d = 0; d < ndim; d++) {
        if (perm[d] < 0 || perm[d] >= ndim) return lp_fail(LP_ERR_ARG, "cpu transpose: perm[%d] = %d out of range", d, perm[d]);
        ys[d] = shape[perm[d]];
        st[d] = xs[perm[d]];
        total *= ys[d];
    }
    if (total == 0) return LP_OK;
    const int64_t inner = ys[ndim - 1], outer = total / inner, si = st[ndim - 1];
#pragma omp parallel if (total > LP_CPU_PAR_MIN)
    {
        int64_t idx[LP_MAX_DIMS] = {0};
        int started = 0;
#pragma omp for schedule(static)
        for (int64_t o = 0; o < outer; o++) {
            if (!started) { /* decode the first row of this thread's block once, then step */
                int64_t q = o;
                for (int d = ndim - 2; d >= 0; d--) {
                    idx[d] = q % ys[d];
                    q /= ys[d];
                }
                started = 1;
            }
            int64_t off = 0;
            for (int d = 0; d < ndim - 1; d++) off += idx[d] * st[d];
            const float *src = x + off;
            float *dst = y + o * inner;
            if (accumulate)
                for (int64_t j = 0; j < inner; j++) dst[j] += src[j * si];
            else
                for (int64_t j = 0; j < inner; j++) dst[j] = src[j * si];
            next_row(ndim, ys, idx);
        }
    }
    return LP_OK;
}

lp_status _lp_cpu_copy2d(int64_t outer, int64_t len, const float *src, int64_t src_stride, float *dst,
                         int64_t dst_stride, int accumulate) {
#pragma omp parallel for schedule(static) if (outer * len > LP_CPU_PAR_MIN && outer > 1)
    for (int64_t o = 0; o < outer; o++) {
        const float *s = src + o * src_stride;
        float *d = dst + o * dst_stride;
        if (accumulate)
            for (int64_t j = 0; j < len; j++) d[j] += s[j];
        else
            memmove(d, s, sizeof(float) * len);
    }
    return LP_OK;
}

/* Shared walk for slices: y (contiguous, yshape) against x at start + i*step. */
static lp_status slice_walk(int ndim, const int64_t *xshape, const int64_t *yshape, const int64_t *start,
                            const int64_t *step, float *x, float *y, int bwd) {
    if (ndim < 1 || ndim > LP_MAX_DIMS) return lp_fail(LP_ERR_SHAPE, "cpu slice: rank %d is not in 1..%d", ndim, LP_MAX_DIMS);
    int64_t xs[LP_MAX_DIMS], s = 1, total = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        xs[d] = s;
        s *= xshape[d];
        total *= yshape[d];
        if (yshape[d] > 0) {
            int64_t last = start[d] + (yshape[d] - 1) * step[d];
            if (start[d] < 0 || start[d] >= xshape[d] || last < 0 || last >= xshape[d])
                return lp_fail(LP_ERR_SHAPE, "cpu slice: dim %d start %lld step %lld x %lld runs outside size %lld", d,
                               (long long)start[d], (long long)step[d], (long long)yshape[d], (long long)xshape[d]);
        }
    }
    if (total == 0) return LP_OK;
    const int64_t inner = yshape[ndim - 1], outer = total / inner, si = step[ndim - 1];
    int64_t idx[LP_MAX_DIMS] = {0};
    /* serial in bwd: a step-0 (broadcasting) slice would have rows add into one dx row */
    for (int64_t o = 0; o < outer; o++) {
        int64_t off = start[ndim - 1];
        for (int d = 0; d < ndim - 1; d++) off += (start[d] + idx[d] * step[d]) * xs[d];
        float *xr = x + off, *yr = y + o * inner;
        if (bwd)
            for (int64_t j = 0; j < inner; j++) xr[j * si] += yr[j];
        else if (si == 1)
            memcpy(yr, xr, sizeof(float) * inner);
        else
            for (int64_t j = 0; j < inner; j++) yr[j] = xr[j * si];
        next_row(ndim, yshape, idx);
    }
    return LP_OK;
}

lp_status _lp_cpu_slice_fwd(int ndim, const int64_t *xshape, const int64_t *yshape, const int64_t *start,
                            const int64_t *step, const float *x, float *y) {
    return slice_walk(ndim, xshape, yshape, start, step, (float *)x, y, 0);
}

lp_status _lp_cpu_slice_bwd(int ndim, const int64_t *xshape, const int64_t *yshape, const int64_t *start,
                            const int64_t *step, const float *dy, float *dx) {
    return slice_walk(ndim, xshape, yshape, start, step, dx, (float *)dy, 1);
}

/* Source index along one axis for output index i (pad begin p, size n), or -1 for
 * the constant. */
static int64_t pad_src(int64_t i, int64_t p, int64_t n, int mode) {
    int64_t s = i - p;
    if (s >= 0 && s < n) return s;
    if (mode == 0 || n <= 0) return -1;
    if (mode == 2) return s < 0 ? 0 : n - 1;
    if (n == 1) return 0;
    int64_t period = 2 * (n - 1); /* reflect without repeating the edge, any distance */
    s %= period;
    if (s < 0) s += period;
    return s < n ? s : period - s;
}

/* Per-axis source maps, so the inner loop is a table lookup. */
static lp_status pad_maps(int ndim, const int64_t *xshape, const int64_t *pads, int mode, int64_t *yshape,
                          int64_t **maps) {
    if (ndim < 1 || ndim > LP_MAX_DIMS) return lp_fail(LP_ERR_SHAPE, "cpu pad: rank %d is not in 1..%d", ndim, LP_MAX_DIMS);
    if (mode < 0 || mode > 2) return lp_fail(LP_ERR_ARG, "cpu pad: unknown mode %d", mode);
    int64_t total = 0;
    for (int d = 0; d < ndim; d++) {
        yshape[d] = xshape[d] + pads[d] + pads[ndim + d];
        if (yshape[d] < 0) return lp_fail(LP_ERR_SHAPE, "cpu pad: dim %d of size %lld padded to a negative size", d, (long long)xshape[d]);
        total += yshape[d];
    }
    int64_t *buf = malloc(sizeof(int64_t) * (total ? total : 1));
    if (!buf) return lp_fail(LP_ERR_OOM, "cpu pad: out of memory");
    for (int d = 0; d < ndim; d++) {
        maps[d] = buf;
        for (int64_t i = 0; i < yshape[d]; i++) buf[i] = pad_src(i, pads[d], xshape[d], mode);
        buf += yshape[d];
    }
    return LP_OK;
}

lp_status _lp_cpu_pad_fwd(int ndim, const int64_t *xshape, const int64_t *pads, int mode, float value,
                          const float *x, float *y) {
    int64_t ys[LP_MAX_DIMS] = {0}, *maps[LP_MAX_DIMS] = {0}, xs[LP_MAX_DIMS], s = 1, total = 1;
    lp_status st = pad_maps(ndim, xshape, pads, mode, ys, maps);
    if (st) return st;
    for (int d = ndim - 1; d >= 0; d--) {
        xs[d] = s;
        s *= xshape[d];
        total *= ys[d];
    }
    if (total > 0) {
        const int64_t inner = ys[ndim - 1], outer = total / inner;
        const int64_t *mi = maps[ndim - 1];
        int64_t idx[LP_MAX_DIMS] = {0};
        for (int64_t o = 0; o < outer; o++) {
            float *yr = y + o * inner;
            int64_t off = 0, inside = 1;
            for (int d = 0; d < ndim - 1; d++) {
                int64_t m = maps[d][idx[d]];
                if (m < 0) inside = 0;
                off += m * xs[d];
            }
            if (!inside)
                for (int64_t j = 0; j < inner; j++) yr[j] = value;
            else
                for (int64_t j = 0; j < inner; j++) yr[j] = mi[j] < 0 ? value : x[off + mi[j]];
            next_row(ndim, ys, idx);
        }
    }
    free(maps[0]);
    return LP_OK;
}

lp_status _lp_cpu_pad_bwd(int ndim, const int64_t *xshape, const int64_t *pads, int mode, const float *dy,
                          float *dx) {
    int64_t ys[LP_MAX_DIMS] = {0}, *maps[LP_MAX_DIMS] = {0}, xs[LP_MAX_DIMS], s = 1, total = 1;
    lp_status st = pad_maps(ndim, xshape, pads, mode, ys, maps);
    if (st) return st;
    for (int d = ndim - 1; d >= 0; d--) {
        xs[d] = s;
        s *= xshape[d];
        total *= ys[d];
    }
    if (total > 0) {
        const int64_t inner = ys[ndim - 1], outer = total / inner;
        const int64_t *mi = maps[ndim - 1];
        int64_t idx[LP_MAX_DIMS] = {0};
        for (int64_t o = 0; o < outer; o++) {
            const float *yr = dy + o * inner;
            int64_t off = 0, inside = 1;
            for (int d = 0; d < ndim - 1; d++) {
                int64_t m = maps[d][idx[d]];
                if (m < 0) inside = 0;
                off += m * xs[d];
            }
            if (inside)
                for (int64_t j = 0; j < inner; j++)
                    if (mi[j] >= 0) dx[off + mi[j]] += yr[j];
            next_row(ndim, ys, idx);
        }
    }
    free(maps[0]);
    return LP_OK;
}
