/* explain_report.c — the files `loupe explain` leaves: per input and method the raw
 * map as .npy (1 x C' x H' x W'), a heatmap and an overlay PNG, each input as PNG, and
 * one self-contained index.html (PNGs embedded as data URIs) comparing them all.
 * Every file is written atomically; on failure the files of this run are removed
 * again, so a failed run leaves no partial set behind. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "explain.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DISPLAY_MIN 224 /* small maps (28 x 28) are upscaled to at least this many pixels */
#define PATH_MAX_ 4096

/* ---- bookkeeping: what this run wrote, to undo on failure ------------------------- */
typedef struct written {
    char **paths;
    int n, cap;
} written;

static int track(written *w, const char *path) {
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 64;
        char **p = realloc(w->paths, (size_t)cap * sizeof *p);
        if (!p) return -1;
        w->paths = p;
        w->cap = cap;
    }
    if (!(w->paths[w->n] = strdup(path))) return -1;
    w->n++;
    return 0;
}

static void written_free(written *w, int undo) {
    for (int i = 0; i < w->n; i++) {
        if (undo) remove(w->paths[i]);
        free(w->paths[i]);
    }
    free(w->paths);
    w->paths = NULL;
    w->n = w->cap = 0;
}

/* ---- names ------------------------------------------------------------------------- */
/* Keep [A-Za-z0-9._-]; anything else (spaces, slashes, brackets) becomes '_'. A leading
 * '.' would hide the file, so it becomes '_' too. */
static void sanitize(const char *in, size_t len, char *out, size_t n) {
    size_t j = 0;
    for (size_t i = 0; i < len && in[i] && j + 1 < n; i++) {
        char ch = in[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                 ch == '_' || (ch == '.' && j > 0);
        out[j++] = ok ? ch : '_';
    }
    out[j] = 0;
    if (!j) snprintf(out, n, "input");
}

/* "0_ankle_boot.png" -> "0_ankle_boot"; "batch.npy[3]" -> "batch_3". */
static void make_stem(const char *name, char *out, size_t n) {
    size_t len = strlen(name);
    const char *br = strrchr(name, '[');
    char idx[32] = "";
    if (br && len > 1 && name[len - 1] == ']') {
        size_t k = (size_t)(name + len - 1 - (br + 1));
        if (k < sizeof idx) {
            memcpy(idx, br + 1, k);
            idx[k] = 0;
        }
        len = (size_t)(br - name);
    }
    const char *dot = NULL;
    for (size_t i = 1; i < len; i++)
        if (name[i] == '.') dot = name + i;
    if (dot) len = (size_t)(dot - name);
    char base[512];
    sanitize(name, len, base, sizeof base);
    if (idx[0]) {
        char si[32];
        sanitize(idx, strlen(idx), si, sizeof si);
        snprintf(out, n, "%s_%s", base, si);
    } else {
        snprintf(out, n, "%s", base);
    }
}

static int join(char *buf, const char *dir, const char *stem, const char *suffix) {
    int n = (int)strlen(dir); /* "out/" and "out" name the same folder: no "out//x" in messages */
    while (n > 1 && dir[n - 1] == '/') n--;
    int k = snprintf(buf, PATH_MAX_, "%.*s/%s%s", n, dir, stem, suffix);
    if (k < 0 || k >= PATH_MAX_) return cli_fail("%s/%s%s: path too long", dir, stem, suffix);
    return 0;
}

/* ---- picture options per method ------------------------------------------------------ */
/* Methods whose maps carry a sign worth seeing (Captum's visualisations show them with
 * sign "all"); the rest (saliency, smoothgrad_sq, vargrad, CAMs, rise) are magnitudes. */
static int method_signed(const char *m) {
    static const char *const s[] = {"input_x_gradient", "integrated_gradients", "gradient_shap",   "smoothgrad",
                                    "guided_backprop",  "deconvnet",            "guided_gradcam", "occlusion",
                                    "occlusion_random"};
    for (size_t i = 0; i < sizeof s / sizeof *s; i++)
        if (!strcmp(m, s[i])) return 1;
    return !strncmp(m, "deeplift", 8) || !strncmp(m, "lrp", 3);
}

static lp_sign pick_sign(const explain_report *r, const char *m) {
    if (!r->sign_auto) return r->sign;
    return method_signed(m) ? LP_SIGN_SIGNED : LP_SIGN_ABS;
}

static lp_chan_reduce pick_reduce(const explain_report *r, const char *m) {
    if (!r->reduce_auto) return r->reduce;
    return !strcmp(m, "saliency") ? LP_CHAN_MAX : LP_CHAN_SUM;
}

static const char *sign_name(lp_sign s) {
    return s == LP_SIGN_SIGNED ? "signed" : s == LP_SIGN_POSITIVE ? "positive" : "abs";
}
static const char *reduce_name(lp_chan_reduce c) {
    return c == LP_CHAN_MAX ? "max" : c == LP_CHAN_L2 ? "l2" : c == LP_CHAN_MEAN ? "mean" : "sum";
}

/* A map can be drawn if it is N x C' x H' x W' with some spatial extent; a fully
 * connected layer's N x K (or N x K x 1 x 1) is kept as .npy only. */
static int image_like(const lp_tensor *a) { return a->ndim == 4 && a->shape[2] >= 2 && a->shape[3] >= 2; }

/* ---- pictures ------------------------------------------------------------------------ */
typedef struct geom {
    int c, h, w;  /* input */
    int dh, dw;   /* display size (nearest upscaling) */
} geom;

/* The input as the eye sees it: x * std + mean, clamped to [0, 1], HWC at display size.
 * 1 channel: gray; 3: RGB; other channel counts: their mean, as gray. */
static void input_rgb(const explain_report *r, const geom *g, int i, float *rgb) {
    const float *x = (const float *)r->input->data + (size_t)i * g->c * g->h * g->w;
    size_t hw = (size_t)g->h * g->w;
    for (int y = 0; y < g->dh; y++)
        for (int xx = 0; xx < g->dw; xx++) {
            size_t p = (size_t)(y * g->h / g->dh) * g->w + (size_t)(xx * g->w / g->dw);
            float v[3];
            if (g->c == 3) {
                for (int k = 0; k < 3; k++) {
                    float sd = r->pre.std[k] != 0 ? r->pre.std[k] : 1.0f;
                    v[k] = x[k * hw + p] * sd + r->pre.mean[k];
                }
            } else {
                float acc = 0;
                for (int k = 0; k < g->c; k++) {
                    int kk = k < 3 ? k : 0;
                    float sd = r->pre.std[kk] != 0 ? r->pre.std[kk] : 1.0f;
                    acc += x[k * hw + p] * sd + r->pre.mean[kk];
                }
                v[0] = v[1] = v[2] = acc / (float)g->c;
            }
            float *o = rgb + ((size_t)y * g->dw + xx) * 3;
            for (int k = 0; k < 3; k++) o[k] = v[k] != v[k] ? 0.0f : v[k] < 0 ? 0.0f : v[k] > 1 ? 1.0f : v[k];
        }
}

/* Heatmap and overlay of one normalised map (mh x mw, in [0,1] or [-1,1] when signed),
 * sampled (nearest) to the display size. Unsigned maps blend at a uniform opacity, as
 * Captum's blended_heat_map; signed maps fade with |v| (opacity 2 alpha sqrt|v|, capped
 * at 1) so that white (0) does not wash out the picture while weak values still show. */
static void render(const float *map, int mh, int mw, int sgn, lp_colormap cm, float alpha, const float *base,
                   const geom *g, float *heat, float *over) {
    for (int y = 0; y < g->dh; y++)
        for (int x = 0; x < g->dw; x++) {
            float v = map[(size_t)(y * mh / g->dh) * mw + (size_t)(x * mw / g->dw)];
            float c[3];
            lp_colormap_rgb(sgn ? LP_CMAP_DIVERGING : cm, v, c);
            float a = sgn ? fminf(1.0f, 2.0f * alpha * sqrtf(fabsf(v))) : alpha;
            size_t o = ((size_t)y * g->dw + x) * 3;
            for (int k = 0; k < 3; k++) {
                heat[o + k] = c[k];
                over[o + k] = (1.0f - a) * base[o + k] + a * c[k];
            }
        }
}

static int save_png(written *wr, const char *path, int w, int h, int c, float *px) {
    lp_image im = {w, h, c, px};
    if (lp_image_save_png(path, &im) != LP_OK) return cli_lib_fail();
    if (track(wr, path)) return cli_fail("out of memory");
    return 0;
}

/* ---- HTML ------------------------------------------------------------------------------ */
static void html_esc(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* The PNG at `path` as a base64 data URI (read back: the writer encodes to files). */
static int data_uri(FILE *f, const char *path) {
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    FILE *in = fopen(path, "rb");
    if (!in) return cli_fail("%s: cannot read back: %s", path, strerror(errno));
    fputs("data:image/png;base64,", f);
    unsigned char buf[3 * 1024];
    char enc[4 * 1024];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        size_t j = 0;
        for (size_t i = 0; i < n; i += 3) {
            unsigned v = (unsigned)buf[i] << 16 | (i + 1 < n ? (unsigned)buf[i + 1] << 8 : 0) | (i + 2 < n ? buf[i + 2] : 0);
            enc[j++] = b64[v >> 18 & 63];
            enc[j++] = b64[v >> 12 & 63];
            enc[j++] = i + 1 < n ? b64[v >> 6 & 63] : '=';
            enc[j++] = i + 2 < n ? b64[v & 63] : '=';
        }
        fwrite(enc, 1, j, f);
        if (n < sizeof buf) break; /* a short read ends the file (full chunks are multiples of 3) */
    }
    int bad = ferror(in);
    fclose(in);
    return bad ? cli_fail("%s: read failed", path) : 0;
}

/* A CSS gradient sampling the colour map, for each column's colour bar. */
static void css_gradient(FILE *f, lp_colormap cm, int sgn) {
    fputs("linear-gradient(to right", f);
    for (int i = 0; i <= 10; i++) {
        float v = sgn ? -1.0f + 0.2f * (float)i : 0.1f * (float)i, c[3];
        lp_colormap_rgb(sgn ? LP_CMAP_DIVERGING : cm, v, c);
        fprintf(f, ",#%02x%02x%02x", (int)lrintf(c[0] * 255), (int)lrintf(c[1] * 255), (int)lrintf(c[2] * 255));
    }
    fputc(')', f);
}

static const char css[] =
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px;color:#1d1d1f;"
    "background:#fafafa}\n"
    "h1{font-size:20px;margin:0 0 4px}\n"
    ".meta{color:#555;margin:0 0 14px}.meta b{color:#1d1d1f;font-weight:600}\n"
    ".wrap{overflow-x:auto}\n"
    "table{border-collapse:collapse;background:#fff;box-shadow:0 1px 3px rgba(0,0,0,.08)}\n"
    "th,td{border:1px solid #e4e4e7;padding:8px;text-align:center;vertical-align:top}\n"
    "thead th{background:#f4f4f5;font-weight:600;position:sticky;top:0}\n"
    "td.in{text-align:left;background:#fcfcfc}\n"
    "small{display:block;font-weight:400;color:#666;font-size:12px}\n"
    ".pic{position:relative;display:inline-block;line-height:0}\n"
    ".pic img{width:168px;height:auto;image-rendering:pixelated;border-radius:2px}\n"
    ".pic img.heat{position:absolute;left:0;top:0;opacity:0;transition:opacity .12s}\n"
    ".pic:hover img.heat{opacity:1}\n"
    ".bar{height:8px;width:168px;margin:6px auto 0;border-radius:2px}\n"
    ".ticks{display:flex;justify-content:space-between;width:168px;margin:0 auto;font-size:11px;color:#777;"
    "font-weight:400}\n"
    ".na{color:#8a5a00;font-size:12px;max-width:168px;display:inline-block}\n"
    "footer{color:#666;margin-top:14px;font-size:12px;max-width:900px}\n";

typedef struct col {
    const char *method;
    int drawn;          /* heat/overlay PNGs exist */
    lp_sign sign;
    lp_chan_reduce reduce;
} col;

static int write_html(const explain_report *r, const char *const *stems, const col *cols, int drawn_input,
                      written *wr) {
    char path[PATH_MAX_], tmp[PATH_MAX_ + 8], p[PATH_MAX_];
    if (join(path, r->out_dir, "index", ".html")) return 1;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return cli_fail("%s: cannot write: %s", path, strerror(errno));
    char date[64] = "";
    time_t now = time(NULL);
    struct tm tmv;
    if (gmtime_r(&now, &tmv)) strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", &tmv);

    fputs("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n<title>Loupe explain: ",
          f);
    html_esc(f, r->model_path);
    fprintf(f, "</title>\n<style>\n%s</style></head><body>\n<h1>Attribution maps</h1>\n<p class=\"meta\">", css);
    fputs("model <b>", f);
    html_esc(f, r->model_path);
    fputs("</b> &middot; device <b>", f);
    html_esc(f, r->device ? r->device : "?");
    fputs("</b> &middot; target <b>", f);
    html_esc(f, r->target_desc ? r->target_desc : "top-1 class");
    fprintf(f, "</b> &middot; %d input%s &middot; %s</p>\n", r->n, r->n == 1 ? "" : "s", date);

    int rc = 0;
    fputs("<div class=\"wrap\"><table>\n<thead><tr><th>input<small>prediction</small></th>", f);
    for (int k = 0; k < r->n_res; k++) {
        const explain_method_result *m = &r->res[k];
        char sb[96];
        fputs("<th>", f);
        html_esc(f, m->method);
        fprintf(f, "<small>%.3f s &middot; %d pass%s</small>", m->seconds, m->passes, m->passes == 1 ? "" : "es");
        if (m->layer) {
            fputs("<small>layer ", f);
            html_esc(f, m->layer);
            fputs("</small>", f);
        }
        if (cols[k].drawn) {
            int sgn = cols[k].sign == LP_SIGN_SIGNED;
            fprintf(f, "<small>%s &middot; %s over channels</small><div class=\"bar\" style=\"background:",
                    sign_name(cols[k].sign), reduce_name(cols[k].reduce));
            css_gradient(f, r->cmap, sgn);
            fprintf(f, "\"></div><div class=\"ticks\"><span>%s</span><span>%s</span><span>%s</span></div>",
                    sgn ? "&minus;1" : "0", sgn ? "0" : "0.5", sgn ? "+1" : "1");
        } else {
            int64_t one[LP_MAX_DIMS]; /* per input, as the .npy files hold it */
            memcpy(one, m->attr->shape, sizeof one);
            one[0] = 1;
            fprintf(f, "<small>map %s: not image-like, .npy only</small>", lp_shape_str(m->attr->ndim, one, sb, sizeof sb));
        }
        fputs("</th>", f);
    }
    fputs("</tr></thead>\n<tbody>\n", f);

    for (int i = 0; i < r->n && !rc; i++) {
        fputs("<tr><td class=\"in\">", f);
        if (drawn_input) {
            fputs("<div class=\"pic\"><img alt=\"input\" src=\"", f);
            if ((rc = join(p, r->out_dir, stems[i], "_input.png")) || (rc = data_uri(f, p))) break;
            fputs("\"></div>", f);
        }
        fputs("<div><b>", f);
        html_esc(f, r->input_names[i]);
        fputs("</b></div>", f);
        int64_t t = r->targets ? r->targets[i] : -1;
        if (t >= 0) {
            fputs("<div>", f);
            if (r->labels && t < r->n_labels) {
                html_esc(f, r->labels[t]);
                fprintf(f, " <small style=\"display:inline\">(class %lld)</small>", (long long)t);
            } else {
                fprintf(f, "class %lld", (long long)t);
            }
            fputs("</div>", f);
        }
        if (r->probs && t >= 0) fprintf(f, "<small>p = %.3f</small>", r->probs[i]);
        if (r->scores) fprintf(f, "<small>score %.4g</small>", r->scores[i]);
        fputs("<small>", f);
        html_esc(f, r->target_desc ? r->target_desc : "top-1 class");
        fputs("</small></td>", f);
        for (int k = 0; k < r->n_res && !rc; k++) {
            char suf[256];
            fputs("<td>", f);
            if (cols[k].drawn) {
                fputs("<div class=\"pic\"><img alt=\"overlay\" src=\"", f);
                snprintf(suf, sizeof suf, "_%s_overlay.png", cols[k].method);
                if ((rc = join(p, r->out_dir, stems[i], suf)) || (rc = data_uri(f, p))) break;
                fputs("\"><img class=\"heat\" alt=\"heatmap\" src=\"", f);
                snprintf(suf, sizeof suf, "_%s_heat.png", cols[k].method);
                if ((rc = join(p, r->out_dir, stems[i], suf)) || (rc = data_uri(f, p))) break;
                fputs("\"></div>", f);
            } else {
                fputs("<span class=\"na\">raw map in ", f);
                html_esc(f, stems[i]);
                fputc('_', f);
                html_esc(f, cols[k].method);
                fputs(".npy only</span>", f);
            }
            fputs("</td>", f);
        }
        fputs("</tr>\n", f);
    }
    if (!rc) {
        fprintf(f,
                "</tbody></table></div>\n<footer>Hover a picture to see the heatmap alone. Pictures follow Captum's "
                "visualisation: channels reduced, then divided by the value below which %g%% of the attribution "
                "mass lies, and clipped; signed maps are blue (negative) to red (positive). Raw maps: "
                "<code>&lt;input&gt;_&lt;method&gt;.npy</code> beside this page.</footer>\n</body></html>\n",
                100.0 - (double)r->clip);
    }
    int bad = ferror(f);
    if (fclose(f) != 0) bad = 1;
    if (rc || bad) {
        remove(tmp);
        return rc ? rc : cli_fail("%s: write failed", path);
    }
    if (lp_file_commit(tmp, path) != LP_OK) return cli_lib_fail();
    return track(wr, path) ? cli_fail("out of memory") : 0;
}

/* ---- the whole set ---------------------------------------------------------------------- */
static int write_all(const explain_report *r, char **stems, written *wr) {
    char path[PATH_MAX_], suf[256];
    /* The raw maps first: they are the results; pictures are views of them. */
    for (int k = 0; k < r->n_res; k++) {
        const lp_tensor *a = r->res[k].attr;
        if (a->ndim < 1 || a->shape[0] != r->n)
            return cli_fail("%s: the map has %lld rows for %d inputs", r->res[k].method,
                            (long long)(a->ndim ? a->shape[0] : 0), r->n);
        int64_t per = lp_tensor_numel(a) / a->shape[0];
        for (int i = 0; i < r->n; i++) {
            lp_tensor one = *a;
            one.shape[0] = 1;
            one.data = (float *)a->data + (int64_t)i * per;
            one.nbytes = (size_t)per * sizeof(float);
            one.owns = 0;
            snprintf(suf, sizeof suf, "_%s.npy", r->res[k].method);
            if (join(path, r->out_dir, stems[i], suf)) return 1;
            if (lp_npy_save(path, &one) != LP_OK) return cli_lib_fail();
            if (track(wr, path)) return cli_fail("out of memory");
        }
    }
    if (r->arrays_only) return 0;

    col cols[EXPLAIN_MAX_METHODS];
    geom g = {0};
    int drawable = r->input->ndim == 4 && r->input->dtype == LP_F32 && r->input->device == LP_DEVICE_CPU;
    if (drawable) {
        g.c = (int)r->input->shape[1];
        g.h = (int)r->input->shape[2];
        g.w = (int)r->input->shape[3];
        drawable = g.c > 0 && g.h > 0 && g.w > 0;
    }
    if (drawable) {
        int side = g.h > g.w ? g.h : g.w, s = (DISPLAY_MIN + side - 1) / side;
        s = s < 1 ? 1 : s > 64 ? 64 : s;
        g.dh = g.h * s;
        g.dw = g.w * s;
    }
    size_t npx = drawable ? (size_t)g.dh * g.dw * 3 : 0;
    float *base = NULL, *heat = NULL, *over = NULL;
    if (drawable && (!(base = malloc(npx * sizeof *base)) || !(heat = malloc(npx * sizeof *heat)) ||
                     !(over = malloc(npx * sizeof *over)))) {
        free(base);
        free(heat);
        return cli_fail("out of memory");
    }
    int rc = 0;
    for (int i = 0; i < r->n && drawable && !rc; i++) {
        input_rgb(r, &g, i, base);
        if (g.c != 3) /* gray inputs stay one-channel PNGs */
            for (size_t p = 0; p < (size_t)g.dh * g.dw; p++) heat[p] = base[3 * p];
        if ((rc = join(path, r->out_dir, stems[i], "_input.png"))) break;
        rc = save_png(wr, path, g.dw, g.dh, g.c == 3 ? 3 : 1, g.c == 3 ? base : heat);
    }
    for (int k = 0; k < r->n_res && !rc; k++) {
        const explain_method_result *m = &r->res[k];
        cols[k].method = m->method;
        cols[k].sign = pick_sign(r, m->method);
        cols[k].reduce = pick_reduce(r, m->method);
        cols[k].drawn = drawable && image_like(m->attr);
        if (!cols[k].drawn) continue;
        lp_tensor *nm = NULL;
        if (lp_attr_normalize(m->attr, cols[k].sign, cols[k].reduce, r->clip, &nm) != LP_OK) {
            rc = cli_fail("%s: %s", m->method, lp_last_error());
            break;
        }
        int mh = (int)m->attr->shape[2], mw = (int)m->attr->shape[3];
        for (int i = 0; i < r->n && !rc; i++) {
            input_rgb(r, &g, i, base);
            render((const float *)nm->data + (size_t)i * mh * mw, mh, mw, cols[k].sign == LP_SIGN_SIGNED, r->cmap,
                   r->alpha, base, &g, heat, over);
            snprintf(suf, sizeof suf, "_%s_heat.png", m->method);
            if ((rc = join(path, r->out_dir, stems[i], suf)) || (rc = save_png(wr, path, g.dw, g.dh, 3, heat))) break;
            snprintf(suf, sizeof suf, "_%s_overlay.png", m->method);
            if ((rc = join(path, r->out_dir, stems[i], suf)) || (rc = save_png(wr, path, g.dw, g.dh, 3, over))) break;
        }
        lp_tensor_free(nm);
    }
    free(base);
    free(heat);
    free(over);
    if (!rc) rc = write_html(r, (const char *const *)stems, cols, drawable, wr);
    return rc;
}

int explain_report_write(const explain_report *r) {
    if (r->n_res > EXPLAIN_MAX_METHODS) return cli_fail("too many methods (at most %d)", EXPLAIN_MAX_METHODS);
    struct stat st;
    int made_dir = 0;
    if (stat(r->out_dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return cli_fail("%s: not a folder", r->out_dir);
    } else if (mkdir(r->out_dir, 0777) == 0) {
        made_dir = 1;
    } else {
        return cli_fail("%s: cannot create folder: %s", r->out_dir, strerror(errno));
    }
    /* File stems: unique (a.png and a.jpg, or dir1/x.png and dir2/x.png, would collide). */
    char **stems = calloc((size_t)(r->n > 0 ? r->n : 1), sizeof *stems);
    written wr = {0};
    int rc = stems ? 0 : cli_fail("out of memory");
    for (int i = 0; i < r->n && !rc; i++) {
        char s[600], u[640];
        make_stem(r->input_names[i], s, sizeof s);
        snprintf(u, sizeof u, "%s", s);
        for (int dup = 2, clash = 1; clash; dup++) {
            clash = 0;
            for (int j = 0; j < i && !clash; j++) clash = !strcmp(stems[j], u);
            if (clash) snprintf(u, sizeof u, "%s_%d", s, dup);
        }
        if (!(stems[i] = strdup(u))) rc = cli_fail("out of memory");
    }
    if (!rc) rc = write_all(r, stems, &wr);
    written_free(&wr, rc != 0);
    if (rc && made_dir) rmdir(r->out_dir);
    for (int i = 0; stems && i < r->n; i++) free(stems[i]);
    free(stems);
    return rc;
}
