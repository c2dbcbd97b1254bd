/* cpu_norm.c — normalizations on the CPU: softmax / log-softmax over a middle
 * axis, ONNX local response normalization, and the per-channel affine that
 * inference BatchNormalization becomes; forward and (accumulating) backward. */
#include "cpu_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

lp_status _lp_cpu_softmax_fwd(int64_t outer, int64_t axis, int64_t inner, int is_log, const float *x, float *y) {
    if (axis <= 0) return LP_OK;
#pragma omp parallel for collapse(2) schedule(static) if (outer * axis * inner > LP_CPU_PAR_MIN)
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t in = 0; in < inner; in++) {
            const float *xp = x + o * axis * inner + in;
            float *yp = y + o * axis * inner + in;
            float mx = -INFINITY;
            for (int64_t a = 0; a < axis; a++) mx = fmaxf(mx, xp[a * inner]);
            double s = 0;
            if (is_log) {
                for (int64_t a = 0; a < axis; a++) s += expf(xp[a * inner] - mx);
                float ls = (float)log(s);
                for (int64_t a = 0; a < axis; a++) yp[a * inner] = xp[a * inner] - mx - ls;
            } else {
                for (int64_t a = 0; a < axis; a++) {
                    float e = expf(xp[a * inner] - mx);
                    yp[a * inner] = e;
                    s += e;
                }
                float inv = (float)(1.0 / s);
                for (int64_t a = 0; a < axis; a++) yp[a * inner] *= inv;
            }
        }
    }
    return LP_OK;
}

lp_status _lp_cpu_softmax_bwd(int64_t outer, int64_t axis, int64_t inner, int is_log, const float *y, const float *dy,
                              float *dx) {
    if (axis <= 0) return LP_OK;
#pragma omp parallel for collapse(2) schedule(static) if (outer * axis * inner > LP_CPU_PAR_MIN)
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t in = 0; in < inner; in++) {
            const int64_t base = o * axis * inner + in;
            const float *yp = y + base, *gp = dy + base;
            float *dp = dx + base;
            double s = 0;
            if (is_log) { /* dx = dy - softmax * sum(dy) */
                for (int64_t a = 0; a < axis; a++) s += gp[a * inner];
                float fs = (float)s;
                for (int64_t a = 0; a < axis; a++) dp[a * inner] += gp[a * inner] - expf(yp[a * inner]) * fs;
            } else { /* dx = y * (dy - sum(dy * y)) */
                for (int64_t a = 0; a < axis; a++) s += (double)gp[a * inner] * yp[a * inner];
                float fs = (float)s;
                for (int64_t a = 0; a < axis; a++) dp[a * inner] += yp[a * inner] * (gp[a * inner] - fs);
            }
        }
    }
    return LP_OK;
}

/* s[c][p] = bias + alpha/size * sum of x^2 over channels c - floor((size-1)/2) ..
 * c + ceil((size-1)/2) (ONNX's window), for one image. */
static void lrn_scale(int c, int64_t hw, int size, float alpha, float bias, const float *x, float *s) {
    const int lo = (size - 1) / 2, hi = size - 1 - lo;
    const float k = alpha / (float)size;
    for (int ch = 0; ch < c; ch++) {
        float *sp = s + (int64_t)ch * hw;
        for (int64_t p = 0; p < hw; p++) sp[p] = 0.f;
        int a = ch - lo < 0 ? 0 : ch - lo, b = ch + hi >= c ? c - 1 : ch + hi;
        for (int j = a; j <= b; j++) {
            const float *xp = x + (int64_t)j * hw;
            for (int64_t p = 0; p < hw; p++) sp[p] += xp[p] * xp[p];
        }
        for (int64_t p = 0; p < hw; p++) sp[p] = bias + k * sp[p];
    }
}

static lp_status lrn_check(int size, const char *what) {
    if (size <= 0) return lp_fail(LP_ERR_ARG, "cpu %s: size %d must be positive", what, size);
    return LP_OK;
}

lp_status _lp_cpu_lrn_fwd(int n, int c, int64_t hw, int size, float alpha, float beta, float bias, const float *x,
                          float *y) {
    lp_status st = lrn_check(size, "lrn_fwd");
    if (st) return st;
    const int64_t img = (int64_t)c * hw;
    float *s = _lp_cpu_scratch((size_t)(img * n + 1), "lrn_fwd");
    if (!s) return LP_ERR_OOM;
#pragma omp parallel for schedule(static) if (n > 1 && img * n > LP_CPU_PAR_MIN)
    for (int i = 0; i < n; i++) {
        float *si = s + i * img;
        lrn_scale(c, hw, size, alpha, bias, x + i * img, si);
        for (int64_t q = 0; q < img; q++) y[i * img + q] = x[i * img + q] * powf(si[q], -beta);
    }
    free(s);
    return LP_OK;
}

/* y_c = x_c s_c^-b, s_c = bias + a/size sum_{j in win(c)} x_j^2, so
 * dx_j = dy_j s_j^-b - 2 b a/size x_j sum_{c: j in win(c)} dy_c x_c s_c^(-b-1). */
lp_status _lp_cpu_lrn_bwd(int n, int c, int64_t hw, int size, float alpha, float beta, float bias, const float *x,
                          const float *y, const float *dy, float *dx) {
    (void)y; /* s is recomputed from x: y / x is undefined where x = 0 */
    lp_status st = lrn_check(size, "lrn_bwd");
    if (st) return st;
    const int64_t img = (int64_t)c * hw;
    const int lo = (size - 1) / 2, hi = size - 1 - lo;
    const float k = 2.f * beta * alpha / (float)size;
    float *s = _lp_cpu_scratch((size_t)(2 * img * n + 1), "lrn_bwd");
    if (!s) return LP_ERR_OOM;
#pragma omp parallel for schedule(static) if (n > 1 && img * n > LP_CPU_PAR_MIN)
    for (int i = 0; i < n; i++) {
        const float *xi = x + i * img, *gi = dy + i * img;
        float *si = s + 2 * i * img, *ti = si + img, *di = dx + i * img;
        lrn_scale(c, hw, size, alpha, bias, xi, si);
        for (int64_t q = 0; q < img; q++) ti[q] = gi[q] * xi[q] * powf(si[q], -beta - 1.f);
        for (int j = 0; j < c; j++) {
            /* channels ch whose window holds j: j - hi <= ch <= j + lo */
            int a = j - hi < 0 ? 0 : j - hi, b = j + lo >= c ? c - 1 : j + lo;
            float *dp = di + (int64_t)j * hw;
            const float *xp = xi + (int64_t)j * hw, *gp = gi + (int64_t)j * hw, *sp = si + (int64_t)j * hw;
            for (int64_t p = 0; p < hw; p++) {
                float acc = 0.f;
                for (int ch = a; ch <= b; ch++) acc += ti[(int64_t)ch * hw + p];
                dp[p] += gp[p] * powf(sp[p], -beta) - k * xp[p] * acc;
            }
        }
    }
    free(s);
    return LP_OK;
}

lp_status _lp_cpu_channel_affine_fwd(int n, int c, int64_t hw, const float *x, const float *scale, const float *shift,
                                     float *y, float act) {
#pragma omp parallel for collapse(2) schedule(static) if ((int64_t)n * c * hw > LP_CPU_PAR_MIN)
    for (int i = 0; i < n; i++) {
        for (int ch = 0; ch < c; ch++) {
            const int64_t base = ((int64_t)i * c + ch) * hw;
            const float sc = scale[ch], sh = shift ? shift[ch] : 0.f;
            for (int64_t p = 0; p < hw; p++) y[base + p] = x[base + p] * sc + sh;
            if (act > 0.f) _lp_cpu_act_rows(y + base, 1, hw, hw, act);
        }
    }
    return LP_OK;
}

lp_status _lp_cpu_channel_affine_bwd(int n, int c, int64_t hw, const float *x, const float *scale, const float *dy,
                                     float *dx, float *dscale, float *dshift) {
    /* one thread per channel: dscale / dshift sum over the batch without races */
#pragma omp parallel for schedule(static) if ((int64_t)n * c * hw > LP_CPU_PAR_MIN)
    for (int ch = 0; ch < c; ch++) {
        double gs = 0, gb = 0;
        const float sc = scale[ch];
        for (int i = 0; i < n; i++) {
            const int64_t base = ((int64_t)i * c + ch) * hw;
            const float *g = dy + base, *xp = dscale ? x + base : NULL; /* x is read for dscale only */
            float ps = 0.f, pb = 0.f;
            if (dx)
                for (int64_t p = 0; p < hw; p++) dx[base + p] += g[p] * sc;
            if (dscale)
                for (int64_t p = 0; p < hw; p++) ps += g[p] * xp[p];
            if (dshift)
                for (int64_t p = 0; p < hw; p++) pb += g[p];
            gs += ps;
            gb += pb;
        }
        if (dscale) dscale[ch] += (float)gs;
        if (dshift) dshift[ch] += (float)gb;
    }
    return LP_OK;
}
