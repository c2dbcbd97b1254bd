/* colormap.c — colour maps for pictures of maps (viridis, inferno, a diverging
 * blue-white-red for signed maps, gray) and channel grids: many feature maps tiled
 * into one image, each scaled to its own range so weak channels stay visible. */
#include "io_internal.h"

#include <math.h>
#include <stdlib.h>

/* Degree-6 polynomial fits of matplotlib's viridis and inferno (Matt Zucconi's
 * published coefficients, max error about 1/255): no 256-entry tables to carry. */
static const float viridis_c[7][3] = {
    {0.2777273272234177f, 0.005407344544966578f, 0.3340998053353061f},
    {0.1050930431085774f, 1.404613529898575f, 1.384590162594685f},
    {-0.3308618287255563f, 0.214847559468213f, 0.09509516302823659f},
    {-4.634230498983486f, -5.799100973351585f, -19.33244095627987f},
    {6.228269936347081f, 14.17993336680509f, 56.69055260068105f},
    {4.776384997670288f, -13.74514537774601f, -65.35303263337234f},
    {-5.435455855934631f, 4.645852612178535f, 26.3124352495832f}};
static const float inferno_c[7][3] = {
    {0.0002189403691192265f, 0.001651004631001012f, -0.01948089843709184f},
    {0.1065134194856116f, 0.5639564367884091f, 3.932712388889277f},
    {11.60249308247187f, -3.972853965665698f, -15.9423941062914f},
    {-41.70399613139459f, 17.43639888205313f, 44.35414519872813f},
    {77.162935699427f, -33.40235894210092f, -81.80730925738993f},
    {-71.31942824499214f, 32.62606426397723f, 73.20951985803202f},
    {25.13112622477341f, -12.24266895238567f, -23.07032500287172f}};

/* ColorBrewer RdBu (11 classes) reversed, as matplotlib's RdBu_r: blue at -1, white-ish
 * at 0, red at +1. */
static const uint8_t rdbu_r[11][3] = {{5, 48, 97},    {33, 102, 172},  {67, 147, 195},  {146, 197, 222},
                                      {209, 229, 240}, {247, 247, 247}, {253, 219, 199}, {244, 165, 130},
                                      {214, 96, 77},   {178, 24, 43},   {103, 0, 31}};

static float clamp01(float v) { return v != v ? 0.0f : v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v; }

static void poly(const float c[7][3], float t, float rgb[3]) {
    for (int k = 0; k < 3; k++) {
        float acc = c[6][k];
        for (int i = 5; i >= 0; i--) acc = acc * t + c[i][k];
        rgb[k] = clamp01(acc);
    }
}

void lp_colormap_rgb(lp_colormap cm, float v, float rgb[3]) {
    switch (cm) {
    case LP_CMAP_VIRIDIS: poly(viridis_c, clamp01(v), rgb); return;
    case LP_CMAP_INFERNO: poly(inferno_c, clamp01(v), rgb); return;
    case LP_CMAP_DIVERGING: {
        float t = clamp01((v + 1.0f) * 0.5f) * 10.0f;
        int i = (int)t;
        if (i > 9) i = 9;
        float f = t - (float)i;
        for (int k = 0; k < 3; k++) rgb[k] = ((1.0f - f) * rdbu_r[i][k] + f * rdbu_r[i + 1][k]) / 255.0f;
        return;
    }
    case LP_CMAP_GRAY:
    default: rgb[0] = rgb[1] = rgb[2] = clamp01(v); return;
    }
}

lp_status lp_channel_grid(const float *chw, int c, int h, int w, int scale, lp_colormap cm, lp_image *out) {
    out->w = out->h = out->c = 0;
    out->px = NULL;
    if (c <= 0 || h <= 0 || w <= 0 || scale <= 0)
        return lp_fail(LP_ERR_ARG, "channel grid: bad size c=%d h=%d w=%d scale=%d", c, h, w, scale);
    int cols = (int)ceil(sqrt((double)c));
    int rows = (c + cols - 1) / cols;
    int64_t cw = (int64_t)w * scale, chh = (int64_t)h * scale;
    int64_t W = cols * cw + (cols - 1), H = rows * chh + (rows - 1);
    if (W > LP_IMAGE_MAX_SIDE || H > LP_IMAGE_MAX_SIDE || W * H > LP_IMAGE_MAX_PIXELS)
        return lp_fail(LP_ERR_ARG, "channel grid: %lldx%lld picture is too large (lower the scale)", (long long)W,
                       (long long)H);
    LP_TRY(lp_image_alloc(out, (int)W, (int)H, 3));
    /* Gaps and unused cells: a dark gray that no map colour sits next to unnoticed. */
    for (int64_t i = 0; i < W * H * 3; i++) out->px[i] = 0.12f;
    int diverging = cm == LP_CMAP_DIVERGING;
    for (int k = 0; k < c; k++) {
        const float *m = chw + (size_t)k * (size_t)h * (size_t)w;
        float lo = INFINITY, hi = -INFINITY;
        for (int i = 0; i < h * w; i++)
            if (m[i] == m[i]) {
                if (m[i] < lo) lo = m[i];
                if (m[i] > hi) hi = m[i];
            }
        /* Signed maps keep 0 at the centre colour: scale by the largest magnitude. */
        float amax = fmaxf(fabsf(lo), fabsf(hi));
        int64_t ox = (k % cols) * (cw + 1), oy = (k / cols) * (chh + 1);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                float v = m[(size_t)y * w + x], t;
                if (diverging) t = amax > 0.0f && isfinite(amax) ? v / amax : 0.0f;
                else t = hi > lo && isfinite(hi - lo) ? (v - lo) / (hi - lo) : 0.5f;
                float rgb[3];
                lp_colormap_rgb(cm, t, rgb);
                for (int dy = 0; dy < scale; dy++)
                    for (int dx = 0; dx < scale; dx++) {
                        float *p = out->px + ((oy + (int64_t)y * scale + dy) * W + ox + (int64_t)x * scale + dx) * 3;
                        p[0] = rgb[0];
                        p[1] = rgb[1];
                        p[2] = rgb[2];
                    }
            }
    }
    return LP_OK;
}
