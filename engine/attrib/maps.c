/* maps.c — turning attributions into pictures' numbers (Captum's channel reduction
 * and cumulative-mass outlier threshold), and the image operations baselines, fills
 * and CAM upsampling share: torchvision's Gaussian blur and half-pixel bilinear resize. */
#include "attrib_internal.h"
#include "../rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Captum's _cumulative_sum_threshold: the smallest sorted value at which the running
 * sum reaches `percentile` % of the total. `v` is sorted in place. */
static float mass_threshold(float *v, int64_t n, float percentile) {
    qsort(v, (size_t)n, sizeof *v, cmp_float);
    double total = 0;
    for (int64_t i = 0; i < n; i++) total += v[i];
    double acc = 0, goal = total * 0.01 * percentile;
    for (int64_t i = 0; i < n; i++) {
        acc += v[i];
        if (acc >= goal) return v[i];
    }
    return n ? v[n - 1] : 0.0f;
}

lp_status lp_attr_normalize(const lp_tensor *attr, lp_sign sign, lp_chan_reduce red, float clip_percentile,
                            lp_tensor **out) {
    *out = NULL;
    if (attr->device != LP_DEVICE_CPU || attr->dtype != LP_F32 || attr->ndim < 2)
        return lp_fail(LP_ERR_ARG, "lp_attr_normalize needs a host float N x C x ... tensor");
    if (clip_percentile < 0 || clip_percentile >= 100)
        return lp_fail(LP_ERR_ARG, "percentile clipping %g is outside [0, 100)", (double)clip_percentile);
    int64_t n = attr->shape[0], c = attr->shape[1], hw = lp_tensor_numel(attr) / (n * c);
    int64_t shape[LP_MAX_DIMS];
    memcpy(shape, attr->shape, sizeof shape);
    shape[1] = 1;
    LP_TRY(lp_tensor_new(out, LP_DEVICE_CPU, LP_F32, attr->ndim, shape));
    float *tmp = lp_malloc((size_t)hw * sizeof *tmp);
    if (!tmp) {
        lp_tensor_free(*out);
        *out = NULL;
        return LP_ERR_OOM;
    }
    const float *a = attr->data;
    float *o = (*out)->data;
    for (int64_t i = 0; i < n; i++) {
        const float *ai = a + i * c * hw;
        float *oi = o + i * hw;
        for (int64_t p = 0; p < hw; p++) {
            double acc = 0;
            for (int64_t k = 0; k < c; k++) {
                double v = ai[k * hw + p];
                if (red == LP_CHAN_SUM || red == LP_CHAN_MEAN) acc += v;
                else if (red == LP_CHAN_L2) acc += v * v;
                else if (k == 0 || (sign == LP_SIGN_SIGNED ? fabs(v) > fabs(acc) : (sign == LP_SIGN_ABS ? fabs(v) : v) > acc))
                    acc = sign == LP_SIGN_ABS ? fabs(v) : v; /* max: of magnitudes, or signed max */
            }
            if (red == LP_CHAN_MEAN) acc /= (double)c;
            if (red == LP_CHAN_L2) acc = sqrt(acc);
            if (sign == LP_SIGN_ABS) acc = fabs(acc);
            else if (sign == LP_SIGN_POSITIVE && acc < 0) acc = 0;
            oi[p] = (float)acc;
        }
        for (int64_t p = 0; p < hw; p++) tmp[p] = fabsf(oi[p]);
        float th = mass_threshold(tmp, hw, 100.0f - clip_percentile);
        float inv = th > 1e-30f ? 1.0f / th : 0.0f;
        for (int64_t p = 0; p < hw; p++) {
            float v = oi[p] * inv;
            oi[p] = v > 1 ? 1 : v < -1 ? -1 : v;
        }
    }
    free(tmp);
    return LP_OK;
}

static int reflect(int i, int n) {
    if (n == 1) return 0;
    while (i < 0 || i >= n) i = i < 0 ? -i : 2 * (n - 1) - i;
    return i;
}

void _lp_blur(const float *src, int c, int h, int w, float sigma, float *dst) {
    int r = (int)ceilf(3.0f * sigma);
    int cap = (h < w ? h : w) - 1; /* reflect padding needs the radius below the size */
    if (r > cap) r = cap > 0 ? cap : 0;
    int ks = 2 * r + 1;
    float *k = malloc((size_t)ks * sizeof *k), *tmp = malloc((size_t)h * w * sizeof *tmp);
    if (!k || !tmp) { /* no memory for scratch: leave the input unblurred rather than crash */
        memcpy(dst, src, (size_t)c * h * w * sizeof *dst);
        free(k);
        free(tmp);
        return;
    }
    double sum = 0;
    for (int i = 0; i < ks; i++) {
        double x = (double)(i - r) / sigma;
        k[i] = (float)exp(-0.5 * x * x);
        sum += k[i];
    }
    for (int i = 0; i < ks; i++) k[i] = (float)(k[i] / sum);
    for (int ch = 0; ch < c; ch++) {
        const float *s = src + (size_t)ch * h * w;
        float *d = dst + (size_t)ch * h * w;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                float acc = 0;
                for (int i = 0; i < ks; i++) acc += k[i] * s[y * w + reflect(x + i - r, w)];
                tmp[y * w + x] = acc;
            }
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                float acc = 0;
                for (int i = 0; i < ks; i++) acc += k[i] * tmp[reflect(y + i - r, h) * w + x];
                d[y * w + x] = acc;
            }
    }
    free(k);
    free(tmp);
}

void _lp_resize_bilinear(const float *src, int c, int h, int w, float *dst, int H, int W) {
    float sy = (float)h / (float)H, sx = (float)w / (float)W;
    for (int y = 0; y < H; y++) {
        float fy = ((float)y + 0.5f) * sy - 0.5f;
        if (fy < 0) fy = 0;
        int y0 = (int)fy, y1 = y0 + 1 < h ? y0 + 1 : h - 1;
        float wy = fy - (float)y0;
        for (int x = 0; x < W; x++) {
            float fx = ((float)x + 0.5f) * sx - 0.5f;
            if (fx < 0) fx = 0;
            int x0 = (int)fx, x1 = x0 + 1 < w ? x0 + 1 : w - 1;
            float wx = fx - (float)x0;
            for (int ch = 0; ch < c; ch++) {
                const float *s = src + (size_t)ch * h * w;
                float top = s[y0 * w + x0] * (1 - wx) + s[y0 * w + x1] * wx;
                float bot = s[y1 * w + x0] * (1 - wx) + s[y1 * w + x1] * wx;
                dst[(size_t)ch * H * W + (size_t)y * W + x] = top * (1 - wy) + bot * wy;
            }
        }
    }
}

lp_status _lp_x_baseline(_lp_xctx *x, int64_t i, float *out) {
    const lp_explain_opts *o = x->o;
    const float *in = x->input + i * x->per;
    int64_t hw = x->c ? x->per / x->c : x->per;
    switch (o->baseline) {
    case LP_BASELINE_ZERO:
        memset(out, 0, (size_t)x->per * sizeof *out);
        return LP_OK;
    case LP_BASELINE_BLACK:
        for (int64_t p = 0; p < x->per; p++) out[p] = o->black[x->c == 3 ? (p / hw) % 3 : 0];
        return LP_OK;
    case LP_BASELINE_BLUR:
        if (x->ndim != 4) return lp_fail(LP_ERR_SHAPE, "a blurred baseline needs image inputs (N x C x H x W)");
        _lp_blur(in, x->c, x->h, x->w, o->blur_sigma, out);
        return LP_OK;
    case LP_BASELINE_UNIFORM: {
        lp_rng r;
        lp_rng_seed(&r, o->seed + 7919u * (uint64_t)i);
        for (int64_t p = 0; p < x->per; p++)
            out[p] = o->uniform_lo + (o->uniform_hi - o->uniform_lo) * (float)lp_rng_uniform(&r);
        return LP_OK;
    }
    case LP_BASELINE_TENSOR: {
        const lp_tensor *b = o->baseline_tensor;
        if (!b || b->dtype != LP_F32 || b->device != LP_DEVICE_CPU || lp_tensor_numel(b) % x->per ||
            (lp_tensor_numel(b) / x->per != 1 && lp_tensor_numel(b) / x->per != x->n))
            return lp_fail(LP_ERR_SHAPE, "the baseline tensor must hold 1 or %lld host rows of %lld floats",
                           (long long)x->n, (long long)x->per);
        int64_t rows = lp_tensor_numel(b) / x->per;
        memcpy(out, (const float *)b->data + (rows == 1 ? 0 : i) * x->per, (size_t)x->per * sizeof *out);
        return LP_OK;
    }
    }
    return lp_fail(LP_ERR_ARG, "unknown baseline kind %d", (int)o->baseline);
}
