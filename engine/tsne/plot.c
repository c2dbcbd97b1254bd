/* plot.c — pictures of embeddings: a scatter coloured by label with a legend, as
 * PNG (a small rasteriser of our own: blended discs, filled squares, the built-in
 * bitmap font) or as SVG text; and thumbnails of the inputs at their positions. */
#include "tsne_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Tableau-like 20-colour palette: 10 strong colours, then their light twins. */
static const float palette[20][3] = {
    {0.12f, 0.47f, 0.71f}, {1.00f, 0.50f, 0.05f}, {0.17f, 0.63f, 0.17f}, {0.84f, 0.15f, 0.16f},
    {0.58f, 0.40f, 0.74f}, {0.55f, 0.34f, 0.29f}, {0.89f, 0.47f, 0.76f}, {0.50f, 0.50f, 0.50f},
    {0.74f, 0.74f, 0.13f}, {0.09f, 0.75f, 0.81f}, {0.68f, 0.78f, 0.91f}, {1.00f, 0.73f, 0.47f},
    {0.60f, 0.87f, 0.54f}, {1.00f, 0.60f, 0.59f}, {0.77f, 0.69f, 0.84f}, {0.77f, 0.61f, 0.58f},
    {0.97f, 0.71f, 0.82f}, {0.78f, 0.78f, 0.78f}, {0.86f, 0.86f, 0.55f}, {0.62f, 0.85f, 0.90f},
};

#define MAX_LEGEND 40

typedef struct canvas {
    int w, h;
    float *px; /* RGB */
} canvas;

static void blend(canvas *c, int x, int y, const float *rgb, float a) {
    if (x < 0 || y < 0 || x >= c->w || y >= c->h) return;
    float *p = c->px + ((size_t)y * c->w + x) * 3;
    for (int k = 0; k < 3; k++) p[k] = p[k] * (1 - a) + rgb[k] * a;
}

static void disc(canvas *c, double cx, double cy, double r, const float *rgb, float a) {
    for (int y = (int)floor(cy - r); y <= (int)ceil(cy + r); y++)
        for (int x = (int)floor(cx - r); x <= (int)ceil(cx + r); x++) {
            double d = hypot(x + 0.5 - cx, y + 0.5 - cy);
            if (d <= r) blend(c, x, y, rgb, a);
        }
}

static void rect(canvas *c, int x0, int y0, int w, int h, const float *rgb) {
    for (int y = y0; y < y0 + h; y++)
        for (int x = x0; x < x0 + w; x++) blend(c, x, y, rgb, 1.0f);
}

/* Text at (x, y) top-left, each font pixel drawn as scale x scale. */
static void text(canvas *c, int x, int y, const char *s, int scale, const float *rgb) {
    for (; *s; s++, x += 7 * scale) {
        const uint8_t *g = _lp_font_glyph(*s);
        for (int r = 0; r < 10; r++)
            for (int b = 0; b < 8; b++)
                if (g[r] >> b & 1) rect(c, x + b * scale, y + r * scale, scale, scale, rgb);
    }
}

/* Distinct labels in ascending order (at most max), and each point's colour slot. */
static int distinct_labels(const int64_t *labels, int64_t n, int64_t *uniq, int max) {
    int m = 0;
    for (int64_t i = 0; i < n; i++) {
        int lo = 0, hi = m;
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (uniq[mid] < labels[i]) lo = mid + 1;
            else hi = mid;
        }
        if (lo < m && uniq[lo] == labels[i]) continue;
        if (m == max) return -1;
        memmove(uniq + lo + 1, uniq + lo, (size_t)(m - lo) * sizeof *uniq);
        uniq[lo] = labels[i];
        m++;
    }
    return m;
}

static int slot_of(const int64_t *uniq, int m, int64_t v) {
    int lo = 0, hi = m;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (uniq[mid] < v) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static void label_name(char *buf, size_t len, int64_t v, const char *const *names, int n_names) {
    if (names && v >= 0 && v < n_names && names[v]) snprintf(buf, len, "%s", names[v]);
    else snprintf(buf, len, "%lld", (long long)v);
}

/* The data-to-pixel map: equal scales on both axes, centred in a size x size box. */
typedef struct frame {
    double x0, y0, s, ox, oy;
} frame;

static frame fit(const float *y, int64_t n, int dims, int box, int margin) {
    double lo[2] = {INFINITY, INFINITY}, hi[2] = {-INFINITY, -INFINITY};
    for (int64_t i = 0; i < n; i++)
        for (int d = 0; d < 2; d++) {
            double v = y[i * dims + d];
            if (v < lo[d]) lo[d] = v;
            if (v > hi[d]) hi[d] = v;
        }
    double span = fmax(hi[0] - lo[0], hi[1] - lo[1]);
    if (!(span > 0)) span = 1;
    frame f;
    f.s = (box - 2.0 * margin) / span;
    f.x0 = lo[0], f.y0 = lo[1];
    f.ox = margin + ((box - 2.0 * margin) - (hi[0] - lo[0]) * f.s) / 2;
    f.oy = margin + ((box - 2.0 * margin) - (hi[1] - lo[1]) * f.s) / 2;
    return f;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcasecmp(s + a - b, suf);
}

static lp_status check_points(const float *y, int64_t n, int dims) {
    if (n < 1 || dims < 2 || dims > 3) return lp_fail(LP_ERR_ARG, "plot: need n >= 1 points of 2 or 3 dims (got %lld x %d)", (long long)n, dims);
    for (int64_t i = 0; i < n * dims; i++)
        if (!isfinite(y[i])) return lp_fail(LP_ERR_ARG, "plot: point %lld has a non-finite coordinate", (long long)(i / dims));
    return LP_OK;
}

static void xml_text(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else fputc(*s, f);
    }
}

static lp_status write_svg(const char *path, const float *y, int64_t n, int dims, const int64_t *labels,
                           const int64_t *uniq, int m, const char *const *names, int n_names, const char *title) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return lp_fail(LP_ERR_IO, "%s: cannot write the plot", path);
    const int box = 800, legend = m > 0 ? 220 : 0;
    frame fr = fit(y, n, dims, box, 20);
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\">\n",
            box + legend, box + 30, box + legend, box + 30);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    if (title) {
        fprintf(f, "<text x=\"20\" y=\"20\" font-family=\"sans-serif\" font-size=\"16\">");
        xml_text(f, title);
        fprintf(f, "</text>\n");
    }
    fprintf(f, "<g transform=\"translate(0,30)\" fill-opacity=\"0.7\">\n");
    for (int64_t i = 0; i < n; i++) {
        int s = labels ? slot_of(uniq, m, labels[i]) : 0;
        const float *c = palette[s % 20];
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2\" fill=\"#%02x%02x%02x\"/>\n",
                fr.ox + (y[i * dims] - fr.x0) * fr.s, box - (fr.oy + (y[i * dims + 1] - fr.y0) * fr.s),
                (int)(c[0] * 255), (int)(c[1] * 255), (int)(c[2] * 255));
    }
    fprintf(f, "</g>\n");
    for (int s = 0; s < m; s++) {
        char name[256];
        label_name(name, sizeof name, uniq[s], names, n_names);
        const float *c = palette[s % 20];
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"12\" fill=\"#%02x%02x%02x\"/>", box + 10, 50 + s * 20,
                (int)(c[0] * 255), (int)(c[1] * 255), (int)(c[2] * 255));
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-family=\"sans-serif\" font-size=\"13\">", box + 30, 61 + s * 20);
        xml_text(f, name);
        fprintf(f, "</text>\n");
    }
    fprintf(f, "</svg>\n");
    if (fclose(f) != 0) return remove(tmp), lp_fail(LP_ERR_IO, "%s: write failed", path);
    return lp_file_commit(tmp, path);
}

lp_status lp_scatter_plot(const char *path, const float *y, int64_t n, int dims, const int64_t *labels,
                          const char *const *names, int n_names, const char *title) {
    LP_TRY(check_points(y, n, dims));
    int64_t uniq[MAX_LEGEND];
    int m = 0;
    if (labels) {
        m = distinct_labels(labels, n, uniq, MAX_LEGEND);
        if (m < 0) return lp_fail(LP_ERR_ARG, "%s: more than %d distinct labels to colour by", path, MAX_LEGEND);
    }
    if (ends_with(path, ".svg")) return write_svg(path, y, n, dims, labels, uniq, m, names, n_names, title);
    const int box = 800, top = 30, legend = m > 0 ? 220 : 0;
    canvas c = {box + legend, box + top, NULL};
    c.px = lp_malloc((size_t)c.w * c.h * 3 * sizeof(float));
    if (!c.px) return LP_ERR_OOM;
    for (size_t i = 0; i < (size_t)c.w * c.h * 3; i++) c.px[i] = 1.0f;
    const float black[3] = {0, 0, 0};
    if (title) text(&c, 20, 8, title, 1, black);
    frame fr = fit(y, n, dims, box, 20);
    /* Smaller, fainter dots for big sets so the structure stays visible. */
    double r = n > 20000 ? 1.2 : n > 2000 ? 1.8 : 2.6;
    float a = n > 20000 ? 0.5f : 0.8f;
    for (int64_t i = 0; i < n; i++) {
        int s = labels ? slot_of(uniq, m, labels[i]) : 0;
        disc(&c, fr.ox + (y[i * dims] - fr.x0) * fr.s, top + box - (fr.oy + (y[i * dims + 1] - fr.y0) * fr.s), r,
             palette[s % 20], a);
    }
    for (int s = 0; s < m; s++) {
        char name[64];
        label_name(name, sizeof name, uniq[s], names, n_names);
        rect(&c, box + 10, top + 20 + s * 20, 12, 12, palette[s % 20]);
        text(&c, box + 30, top + 21 + s * 20, name, 1, black);
    }
    lp_image img = {c.w, c.h, 3, c.px};
    lp_status st = lp_image_save_png(path, &img);
    free(c.px);
    return st;
}

lp_status lp_thumbnail_plot(const char *path, const float *y, int64_t n, int dims, const lp_tensor *images, int size) {
    LP_TRY(check_points(y, n, dims));
    if (!images || images->ndim != 4 || images->shape[0] != n || images->dtype != LP_F32 ||
        images->device != LP_DEVICE_CPU || (images->shape[1] != 1 && images->shape[1] != 3))
        return lp_fail(LP_ERR_SHAPE, "%s: thumbnails need n x 1|3 x h x w host images for the %lld points", path, (long long)n);
    if (size < 64 || size > 16384) return lp_fail(LP_ERR_ARG, "%s: canvas size %d is out of range", path, size);
    int ch = (int)images->shape[1], ih = (int)images->shape[2], iw = (int)images->shape[3];
    /* Thumbnails about 1/40 of the canvas, never upscaled past 2x. */
    double ts = fmin(2.0, size / 40.0 / fmax(ih, iw));
    int th = (int)fmax(1, ih * ts), tw = (int)fmax(1, iw * ts);
    canvas c = {size, size, lp_malloc((size_t)size * size * 3 * sizeof(float))};
    if (!c.px) return LP_ERR_OOM;
    for (size_t i = 0; i < (size_t)size * size * 3; i++) c.px[i] = 1.0f;
    frame fr = fit(y, n, dims, size, tw + 2);
    const float *px = images->data;
    for (int64_t i = 0; i < n; i++) {
        int cx = (int)(fr.ox + (y[i * dims] - fr.x0) * fr.s) - tw / 2;
        int cy = size - (int)(fr.oy + (y[i * dims + 1] - fr.y0) * fr.s) - th / 2;
        const float *im = px + (size_t)i * ch * ih * iw;
        for (int v = 0; v < th; v++)
            for (int u = 0; u < tw; u++) {
                int sy = (int)(v / ts), sx = (int)(u / ts);
                if (sy >= ih) sy = ih - 1;
                if (sx >= iw) sx = iw - 1;
                float rgb[3];
                for (int k = 0; k < 3; k++) {
                    float val = im[(size_t)(ch == 3 ? k : 0) * ih * iw + (size_t)sy * iw + sx];
                    rgb[k] = val < 0 ? 0 : val > 1 ? 1 : val;
                }
                /* Fashion-MNIST is white on black: draw it dark on the white canvas. */
                if (ch == 1) rgb[0] = rgb[1] = rgb[2] = 1 - rgb[0];
                blend(&c, cx + u, cy + v, rgb, 1.0f);
            }
    }
    lp_image img = {size, size, 3, c.px};
    lp_status st = lp_image_save_png(path, &img);
    free(c.px);
    return st;
}
