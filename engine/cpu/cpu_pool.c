/* cpu_pool.c — max and average pooling on the CPU, forward and backward, with
 * pads, strides, dilation and ceil-mode windows that run past the padded input. */
#include "cpu_internal.h"

#include <math.h>
#include <string.h>

/* Valid taps of one window axis: taps t in [lo, hi) land inside [0, n); `padded`
 * counts the taps inside [-p0, n + p1) (the count_include_pad divisor). */
static void win_range(int start, int k, int dil, int n, int p0, int p1, int *lo, int *hi, int *padded) {
    int l = 0, h = 0, pc = 0;
    l = k;
    for (int t = 0; t < k; t++) {
        int i = start + t * dil;
        if (i >= -p0 && i < n + p1) pc++;
        if (i >= 0 && i < n) {
            if (t < l) l = t;
            h = t + 1;
        }
    }
    if (l > h) l = h;
    *lo = l;
    *hi = h;
    *padded = pc;
}

static lp_status pool_check(const lp_pool_desc *d, const char *what) {
    if (d->kh <= 0 || d->kw <= 0 || d->sh <= 0 || d->sw <= 0 || d->dh <= 0 || d->dw <= 0)
        return lp_fail(LP_ERR_ARG, "cpu %s: kernel %dx%d, strides %dx%d and dilations %dx%d must be positive", what,
                       d->kh, d->kw, d->sh, d->sw, d->dh, d->dw);
    return LP_OK;
}

lp_status _lp_cpu_pool_fwd(const lp_pool_desc *d, const float *x, float *y) {
    lp_status st = pool_check(d, "pool_fwd");
    if (st) return st;
    const int64_t hw = (int64_t)d->h * d->w, ohw = (int64_t)d->oh * d->ow;
#pragma omp parallel for schedule(static) if ((int64_t)d->n * d->c * ohw * d->kh * d->kw > LP_CPU_PAR_MIN)
    for (int64_t pl = 0; pl < (int64_t)d->n * d->c; pl++) {
        const float *xp = x + pl * hw;
        float *yp = y + pl * ohw;
        for (int oy = 0; oy < d->oh; oy++) {
            int ys = oy * d->sh - d->ph0, ilo, ihi, ipc;
            win_range(ys, d->kh, d->dh, d->h, d->ph0, d->ph1, &ilo, &ihi, &ipc);
            for (int ox = 0; ox < d->ow; ox++) {
                int xs = ox * d->sw - d->pw0, jlo, jhi, jpc;
                win_range(xs, d->kw, d->dw, d->w, d->pw0, d->pw1, &jlo, &jhi, &jpc);
                float r;
                if (d->is_max) {
                    r = -INFINITY;
                    for (int i = ilo; i < ihi; i++) {
                        int iy = ys + i * d->dh;
                        if (iy < 0 || iy >= d->h) continue;
                        for (int j = jlo; j < jhi; j++) {
                            int ix = xs + j * d->dw;
                            if (ix < 0 || ix >= d->w) continue;
                            float v = xp[(int64_t)iy * d->w + ix];
                            if (v > r) r = v;
                        }
                    }
                } else {
                    float s = 0.f;
                    int cnt = 0;
                    for (int i = ilo; i < ihi; i++) {
                        int iy = ys + i * d->dh;
                        if (iy < 0 || iy >= d->h) continue;
                        for (int j = jlo; j < jhi; j++) {
                            int ix = xs + j * d->dw;
                            if (ix < 0 || ix >= d->w) continue;
                            s += xp[(int64_t)iy * d->w + ix];
                            cnt++;
                        }
                    }
                    int div = d->count_include_pad ? ipc * jpc : cnt;
                    r = div > 0 ? s / (float)div : 0.f;
                }
                yp[(int64_t)oy * d->ow + ox] = r;
            }
        }
    }
    return LP_OK;
}

lp_status _lp_cpu_pool_bwd(const lp_pool_desc *d, const float *x, const float *y, const float *dy, float *dx,
                           int accumulate) {
    (void)y; /* the argmax is recomputed from x so ties resolve to the first element, as documented */
    lp_status st = pool_check(d, "pool_bwd");
    if (st) return st;
    const int64_t hw = (int64_t)d->h * d->w, ohw = (int64_t)d->oh * d->ow;
#pragma omp parallel for schedule(static) if ((int64_t)d->n * d->c * ohw * d->kh * d->kw > LP_CPU_PAR_MIN)
    for (int64_t pl = 0; pl < (int64_t)d->n * d->c; pl++) {
        const float *xp = x ? x + pl * hw : NULL; /* average pooling's backward never reads x */
        const float *gp = dy + pl * ohw;
        float *dp = dx + pl * hw;
        if (!accumulate) memset(dp, 0, sizeof *dp * (size_t)hw); /* windows scatter into their plane */
        for (int oy = 0; oy < d->oh; oy++) {
            int ys = oy * d->sh - d->ph0, ilo, ihi, ipc;
            win_range(ys, d->kh, d->dh, d->h, d->ph0, d->ph1, &ilo, &ihi, &ipc);
            for (int ox = 0; ox < d->ow; ox++) {
                int xs = ox * d->sw - d->pw0, jlo, jhi, jpc;
                win_range(xs, d->kw, d->dw, d->w, d->pw0, d->pw1, &jlo, &jhi, &jpc);
                float g = gp[(int64_t)oy * d->ow + ox];
                if (d->is_max) {
                    float best = -INFINITY;
                    int64_t at = -1;
                    for (int i = ilo; i < ihi; i++) {
                        int iy = ys + i * d->dh;
                        if (iy < 0 || iy >= d->h) continue;
                        for (int j = jlo; j < jhi; j++) {
                            int ix = xs + j * d->dw;
                            if (ix < 0 || ix >= d->w) continue;
                            float v = xp[(int64_t)iy * d->w + ix];
                            if (v > best || at < 0) {
                                best = v;
                                at = (int64_t)iy * d->w + ix;
                            }
                        }
                    }
                    if (at >= 0) dp[at] += g;
                } else {
                    int cnt = 0;
                    for (int i = ilo; i < ihi; i++) {
                        int iy = ys + i * d->dh;
                        if (iy < 0 || iy >= d->h) continue;
                        for (int j = jlo; j < jhi; j++) {
                            int ix = xs + j * d->dw;
                            if (ix >= 0 && ix < d->w) cnt++;
                        }
                    }
                    int div = d->count_include_pad ? ipc * jpc : cnt;
                    if (div <= 0) continue;
                    float gv = g / (float)div;
                    for (int i = ilo; i < ihi; i++) {
                        int iy = ys + i * d->dh;
                        if (iy < 0 || iy >= d->h) continue;
                        for (int j = jlo; j < jhi; j++) {
                            int ix = xs + j * d->dw;
                            if (ix >= 0 && ix < d->w) dp[(int64_t)iy * d->w + ix] += gv;
                        }
                    }
                }
            }
        }
    }
    return LP_OK;
}
