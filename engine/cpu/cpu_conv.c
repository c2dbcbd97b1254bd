/* cpu_conv.c — 2-D convolution on the CPU: im2col + OpenBLAS sgemm per group, over
 * chunks of images for small maps (wide gemms) or bands of output rows for large ones
 * (columns stay in cache); direct gemm for 1x1 stride-1; direct loops for depthwise. */
#include "cpu_internal.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Columns a gemm should see at least before we batch images into one call: below
 * this OpenBLAS runs far from peak (7x7 and 14x14 maps in ResNets). */
#define LP_CONV_MIN_COLS 1024
/* Columns per im2col band in the banded forward (see fwd_chunk). */
#ifndef LP_CONV_TILE_COLS
#define LP_CONV_TILE_COLS 1024
#endif
/* Upper bound on the im2col buffer, in floats (128 MiB). */
#define LP_CONV_MAX_COL ((size_t)32 << 20)

/* Output positions ox in [*lo, *hi) whose input column ox*s + off lies in [0, w). */
static void tap_range(int off, int s, int w, int ow, int *lo, int *hi) {
    int l = off >= 0 ? 0 : (-off + s - 1) / s;
    int h = (w - 1 - off) >= 0 ? (w - 1 - off) / s + 1 : 0;
    if (h > ow) h = ow;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

static int conv_is_direct(const lp_conv_desc *d) {
    return d->kh == 1 && d->kw == 1 && d->sh == 1 && d->sw == 1 && !d->ph0 && !d->pw0 && !d->ph1 && !d->pw1 &&
           d->oh == d->h && d->ow == d->w;
}

static int conv_is_depthwise(const lp_conv_desc *d) {
    return d->groups > 1 && d->groups == d->c && d->k == d->c;
}

static lp_status conv_check(const lp_conv_desc *d, const char *what) {
    if (d->groups <= 0 || d->c % d->groups || d->k % d->groups)
        return lp_fail(LP_ERR_SHAPE, "cpu %s: groups %d must divide channels in %d and out %d", what, d->groups, d->c,
                       d->k);
    if (d->sh <= 0 || d->sw <= 0 || d->dh <= 0 || d->dw <= 0)
        return lp_fail(LP_ERR_ARG, "cpu %s: strides %dx%d and dilations %dx%d must be positive", what, d->sh, d->sw,
                       d->dh, d->dw);
    if (d->x_packed || d->y_packed) return lp_fail(LP_ERR_ARG, "cpu %s: the CPU stores no packed activations", what);
    return LP_OK;
}

/* Images per gemm so the gemm has >= LP_CONV_MIN_COLS columns, within the buffer cap. */
static int conv_chunk(const lp_conv_desc *d, int64_t crow) {
    int64_t ohw = (int64_t)d->oh * d->ow;
    int64_t nb = ohw >= LP_CONV_MIN_COLS ? 1 : (LP_CONV_MIN_COLS + ohw - 1) / (ohw ? ohw : 1);
    if (nb > d->n) nb = d->n;
    while (nb > 1 && (size_t)(crow * nb * ohw) > LP_CONV_MAX_COL) nb--;
    return nb < 1 ? 1 : (int)nb;
}

/* One tap (i, j) of one input plane for output rows [oy0, oy1): dst holds
 * (oy1 - oy0) * ow values, 0 where the tap falls in the padding. */
static void im2col_tap(const lp_conv_desc *d, const float *src, int i, int j, int oy0, int oy1, float *dst) {
    int offx = j * d->dw - d->pw0, lo, hi;
    tap_range(offx, d->sw, d->w, d->ow, &lo, &hi);
    for (int oy = oy0; oy < oy1; oy++) {
        int iy = oy * d->sh - d->ph0 + i * d->dh;
        float *drow = dst + (int64_t)(oy - oy0) * d->ow;
        if (iy < 0 || iy >= d->h) {
            memset(drow, 0, sizeof(float) * d->ow);
            continue;
        }
        const float *srow = src + (int64_t)iy * d->w + offx;
        for (int ox = 0; ox < lo; ox++) drow[ox] = 0.f;
        if (d->sw == 1)
            memcpy(drow + lo, srow + lo, sizeof(float) * (hi - lo));
        else
            for (int ox = lo; ox < hi; ox++) drow[ox] = srow[(int64_t)ox * d->sw];
        for (int ox = hi; ox < d->ow; ox++) drow[ox] = 0.f;
    }
}

/* The adjoint of im2col_tap: the input plane dst += the tap's columns src. */
static void col2im_tap_add(const lp_conv_desc *d, const float *src, int i, int j, int oy0, int oy1, float *dst) {
    int offx = j * d->dw - d->pw0, lo, hi;
    tap_range(offx, d->sw, d->w, d->ow, &lo, &hi);
    for (int oy = oy0; oy < oy1; oy++) {
        int iy = oy * d->sh - d->ph0 + i * d->dh;
        if (iy < 0 || iy >= d->h) continue;
        float *drow = dst + (int64_t)iy * d->w + offx;
        const float *srow = src + (int64_t)(oy - oy0) * d->ow;
        if (d->sw == 1)
            for (int ox = lo; ox < hi; ox++) drow[ox] += srow[ox];
        else
            for (int ox = lo; ox < hi; ox++) drow[(int64_t)ox * d->sw] += srow[ox];
    }
}

/* col[(ci*kh + i)*kw + j][img*ohw + p] = x[n0+img, g*cg + ci] at tap (i, j) of output p (0 in padding). */
static void im2col(const lp_conv_desc *d, const float *x, int n0, int nb, int g, float *col) {
    const int cg = d->c / d->groups, kk = d->kh * d->kw;
    const int64_t ohw = (int64_t)d->oh * d->ow, ld = ohw * nb, hw = (int64_t)d->h * d->w;
    const int rows = cg * kk;
#pragma omp parallel for collapse(2) schedule(static) if ((int64_t)rows * ld > LP_CPU_PAR_MIN)
    for (int r = 0; r < rows; r++) {
        for (int img = 0; img < nb; img++) {
            int ci = r / kk, i = (r % kk) / d->kw, j = r % d->kw;
            const float *src = x + ((int64_t)(n0 + img) * d->c + (int64_t)g * cg + ci) * hw;
            im2col_tap(d, src, i, j, 0, d->oh, col + r * ld + img * ohw);
        }
    }
}

/* im2col of output rows [oy0, oy1) of one image: col has (oy1 - oy0) * ow columns. */
static void im2col_rows(const lp_conv_desc *d, const float *x, int n, int g, int oy0, int oy1, float *col) {
    const int cg = d->c / d->groups, kk = d->kh * d->kw, rows = cg * kk;
    const int64_t ld = (int64_t)(oy1 - oy0) * d->ow, hw = (int64_t)d->h * d->w;
    for (int r = 0; r < rows; r++) {
        int ci = r / kk, i = (r % kk) / d->kw, j = r % d->kw;
        const float *src = x + ((int64_t)n * d->c + (int64_t)g * cg + ci) * hw;
        im2col_tap(d, src, i, j, oy0, oy1, col + r * ld);
    }
}

/* The adjoint of im2col_rows: dx of one image += col for output rows [oy0, oy1). */
static void col2im_rows_add(const lp_conv_desc *d, const float *col, int n, int g, int oy0, int oy1, float *dx) {
    const int cg = d->c / d->groups;
    const int64_t ld = (int64_t)(oy1 - oy0) * d->ow, hw = (int64_t)d->h * d->w;
    for (int ci = 0; ci < cg; ci++) {
        float *dst = dx + ((int64_t)n * d->c + (int64_t)g * cg + ci) * hw;
        for (int i = 0; i < d->kh; i++)
            for (int j = 0; j < d->kw; j++)
                col2im_tap_add(d, col + (int64_t)((ci * d->kh + i) * d->kw + j) * ld, i, j, oy0, oy1, dst);
    }
}

/* The adjoint of im2col: dx[n0+img, g*cg + ci] += col at every tap. One thread per
 * (image, channel) plane, since the taps of one channel overlap in dx. */
static void col2im_add(const lp_conv_desc *d, const float *col, int n0, int nb, int g, float *dx) {
    const int cg = d->c / d->groups, kk = d->kh * d->kw;
    const int64_t ohw = (int64_t)d->oh * d->ow, ld = ohw * nb, hw = (int64_t)d->h * d->w;
#pragma omp parallel for collapse(2) schedule(static) if ((int64_t)cg * kk * ld > LP_CPU_PAR_MIN)
    for (int img = 0; img < nb; img++) {
        for (int ci = 0; ci < cg; ci++) {
            float *dst = dx + ((int64_t)(n0 + img) * d->c + (int64_t)g * cg + ci) * hw;
            for (int i = 0; i < d->kh; i++)
                for (int j = 0; j < d->kw; j++)
                    col2im_tap_add(d, col + (int64_t)((ci * d->kh + i) * d->kw + j) * ld + img * ohw, i, j, 0,
                                   d->oh, dst);
        }
    }
}

/* buf[row][img*ohw + p] = t[n0+img, g*kg + row, p]: dy (or y) of one group, images side by side. */
static void gather_rows(const float *t, int ch, int kg, int64_t ohw, int n0, int nb, int g, float *buf) {
#pragma omp parallel for collapse(2) schedule(static) if ((int64_t)kg * nb * ohw > LP_CPU_PAR_MIN)
    for (int r = 0; r < kg; r++)
        for (int img = 0; img < nb; img++)
            memcpy(buf + ((int64_t)r * nb + img) * ohw, t + ((int64_t)(n0 + img) * ch + (int64_t)g * kg + r) * ohw,
                   sizeof(float) * ohw);
}

/* ---------- depthwise (groups == c == k): direct loops, one thread per plane ----------
 * Each plane is first copied into a zero-padded scratch plane covering every tap, so
 * the tap loops have no bounds checks and run full rows (vectorised for stride 1). */

typedef struct dw_geom {
    int ph, pw;      /* padded plane: rows, columns */
    size_t plane;    /* floats per padded plane */
} dw_geom;

static dw_geom dw_geom_make(const lp_conv_desc *d) {
    dw_geom g;
    g.ph = (d->oh - 1) * d->sh + (d->kh - 1) * d->dh + 1;
    g.pw = (d->ow - 1) * d->sw + (d->kw - 1) * d->dw + 1;
    g.plane = (size_t)g.ph * g.pw;
    return g;
}

/* pad[r][q] = x[r - ph0][q - pw0], 0 outside x. */
static void dw_pad_plane(const lp_conv_desc *d, const dw_geom *g, const float *x, float *pad) {
    for (int r = 0; r < g->ph; r++) {
        float *pr = pad + (size_t)r * g->pw;
        int iy = r - d->ph0;
        if (iy < 0 || iy >= d->h) {
            memset(pr, 0, sizeof(float) * g->pw);
            continue;
        }
        for (int q = 0; q < g->pw; q++) {
            int ix = q - d->pw0;
            pr[q] = (ix >= 0 && ix < d->w) ? x[(int64_t)iy * d->w + ix] : 0.f;
        }
    }
}

static void dw_fwd(const lp_conv_desc *d, const float *x, const float *w, const float *b, float *y, float *scratch,
                   int nt) {
    const int64_t hw = (int64_t)d->h * d->w, ohw = (int64_t)d->oh * d->ow;
    const dw_geom g = dw_geom_make(d);
#pragma omp parallel num_threads(nt)
    {
        float *pad = scratch + g.plane * omp_get_thread_num();
#pragma omp for collapse(2) schedule(static)
        for (int n = 0; n < d->n; n++) {
            for (int ch = 0; ch < d->c; ch++) {
                const float *wp = w + (int64_t)ch * d->kh * d->kw;
                float *yp = y + ((int64_t)n * d->c + ch) * ohw;
                const float bv = b ? b[ch] : 0.f;
                dw_pad_plane(d, &g, x + ((int64_t)n * d->c + ch) * hw, pad);
                for (int oy = 0; oy < d->oh; oy++) {
                    float *restrict yr = yp + (int64_t)oy * d->ow;
                    for (int ox = 0; ox < d->ow; ox++) yr[ox] = d->accumulate ? yr[ox] + bv : bv;
                    for (int i = 0; i < d->kh; i++) {
                        const float *xrow = pad + (size_t)(oy * d->sh + i * d->dh) * g.pw;
                        for (int j = 0; j < d->kw; j++) {
                            const float wv = wp[i * d->kw + j];
                            const float *restrict xr = xrow + j * d->dw;
                            if (d->sw == 1)
                                for (int ox = 0; ox < d->ow; ox++) yr[ox] += wv * xr[ox];
                            else
                                for (int ox = 0; ox < d->ow; ox++) yr[ox] += wv * xr[(int64_t)ox * d->sw];
                        }
                    }
                    if (d->act > 0.f) _lp_cpu_act_rows(yr, 1, d->ow, d->ow, d->act);
                }
            }
        }
    }
}

static void dw_bwd_data(const lp_conv_desc *d, const float *dy, const float *w, float *dx, float *scratch, int nt) {
    const int64_t hw = (int64_t)d->h * d->w, ohw = (int64_t)d->oh * d->ow;
    const dw_geom g = dw_geom_make(d);
#pragma omp parallel num_threads(nt)
    {
        float *pad = scratch + g.plane * omp_get_thread_num();
#pragma omp for collapse(2) schedule(static)
        for (int n = 0; n < d->n; n++) {
            for (int ch = 0; ch < d->c; ch++) {
                const float *wp = w + (int64_t)ch * d->kh * d->kw;
                const float *yp = dy + ((int64_t)n * d->c + ch) * ohw;
                float *xp = dx + ((int64_t)n * d->c + ch) * hw;
                memset(pad, 0, sizeof(float) * g.plane);
                for (int oy = 0; oy < d->oh; oy++) {
                    const float *restrict yr = yp + (int64_t)oy * d->ow;
                    for (int i = 0; i < d->kh; i++) {
                        float *xrow = pad + (size_t)(oy * d->sh + i * d->dh) * g.pw;
                        for (int j = 0; j < d->kw; j++) {
                            const float wv = wp[i * d->kw + j];
                            float *restrict xr = xrow + j * d->dw;
                            if (d->sw == 1)
                                for (int ox = 0; ox < d->ow; ox++) xr[ox] += wv * yr[ox];
                            else
                                for (int ox = 0; ox < d->ow; ox++) xr[(int64_t)ox * d->sw] += wv * yr[ox];
                        }
                    }
                }
                /* the padded plane's interior is dx's share; the border fell on padding */
                for (int iy = 0; iy < d->h; iy++) {
                    int r = iy + d->ph0;
                    if (r >= g.ph) break;
                    const float *pr = pad + (size_t)r * g.pw;
                    for (int ix = 0; ix < d->w; ix++) {
                        int q = ix + d->pw0;
                        if (q < g.pw) xp[(int64_t)iy * d->w + ix] += pr[q];
                    }
                }
            }
        }
    }
}

static void dw_bwd_filter(const lp_conv_desc *d, const float *x, const float *dy, float *dw, float *db,
                          float *scratch, int nt) {
    const int64_t hw = (int64_t)d->h * d->w, ohw = (int64_t)d->oh * d->ow;
    const dw_geom g = dw_geom_make(d);
#pragma omp parallel num_threads(nt)
    {
        float *pad = scratch + g.plane * omp_get_thread_num();
#pragma omp for schedule(static)
        for (int ch = 0; ch < d->c; ch++) {
            float *wp = dw + (int64_t)ch * d->kh * d->kw;
            double bsum = 0;
            for (int n = 0; n < d->n; n++) {
                const float *yp = dy + ((int64_t)n * d->c + ch) * ohw;
                dw_pad_plane(d, &g, x + ((int64_t)n * d->c + ch) * hw, pad);
                if (db) {
                    float part = 0.f;
                    for (int64_t q = 0; q < ohw; q++) part += yp[q];
                    bsum += part;
                }
                for (int i = 0; i < d->kh; i++) {
                    for (int j = 0; j < d->kw; j++) {
                        float acc = 0.f;
                        for (int oy = 0; oy < d->oh; oy++) {
                            const float *restrict xr = pad + (size_t)(oy * d->sh + i * d->dh) * g.pw + j * d->dw;
                            const float *restrict yr = yp + (int64_t)oy * d->ow;
                            if (d->sw == 1)
                                for (int ox = 0; ox < d->ow; ox++) acc += yr[ox] * xr[ox];
                            else
                                for (int ox = 0; ox < d->ow; ox++) acc += yr[ox] * xr[(int64_t)ox * d->sw];
                        }
                        wp[i * d->kw + j] += acc;
                    }
                }
            }
            if (db) db[ch] += (float)bsum;
        }
    }
}

/* One padded plane per thread for the depthwise loops; *nt: the thread count to use. */
static float *dw_scratch(const lp_conv_desc *d, int *nt, const char *what) {
    const dw_geom g = dw_geom_make(d);
    *nt = omp_in_parallel() ? 1 : omp_get_max_threads();
    return _lp_cpu_scratch(g.plane * (size_t)*nt + 1, what);
}

/* ---------- general path ---------- */

/* How the images are split. With at least as many image chunks as threads, each
 * thread runs whole chunks (im2col, single-threaded gemm, scatter) with no barrier
 * in between; with fewer (one image), chunks run in turn and each gemm is split
 * across the threads instead. */
typedef struct conv_plan {
    int cg, kg, direct, nb, nchunks, nt, per_thread;
    int tile_rows; /* one image per chunk: output rows per im2col band */
    int64_t crow, ohw;
    size_t col_sz, buf_sz; /* floats of scratch per worker */
} conv_plan;

static conv_plan conv_plan_make(const lp_conv_desc *d) {
    conv_plan p;
    p.cg = d->c / d->groups;
    p.kg = d->k / d->groups;
    p.crow = (int64_t)p.cg * d->kh * d->kw;
    p.ohw = (int64_t)d->oh * d->ow;
    p.direct = conv_is_direct(d);
    p.nb = conv_chunk(d, p.crow);
    p.nt = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (p.nt > 1 && d->n >= p.nt) {
        int cap = (d->n + p.nt - 1) / p.nt;
        if (p.nb > cap) p.nb = cap;
    }
    p.nchunks = (d->n + p.nb - 1) / p.nb;
    /* bands of >= LP_CONV_TILE_COLS columns: wide enough for an efficient gemm */
    p.tile_rows = d->ow > 0 ? (LP_CONV_TILE_COLS + d->ow - 1) / d->ow : 1;
    if (p.tile_rows < 1) p.tile_rows = 1;
    p.per_thread = p.nt > 1 && p.nchunks >= p.nt;
    p.col_sz = (p.direct && p.nb == 1) ? 0 : (size_t)(p.crow * p.nb * p.ohw);
    if (p.nb == 1 && !p.direct && p.tile_rows < d->oh) p.col_sz = (size_t)(p.crow * p.tile_rows * d->ow);
    p.buf_sz = p.nb > 1 ? (size_t)(p.kg * p.nb * p.ohw) : 0;
    return p;
}

/* Scratch for `workers` workers: col then buf for each. */
static float *conv_scratch(const conv_plan *p, int workers, const char *what) {
    size_t per = p->col_sz + p->buf_sz;
    return _lp_cpu_scratch(per * workers + 1, what);
}

/* The tensors one pass reads and writes; each chunk function names them its own way. */
typedef struct conv_io {
    const float *in, *w, *b;
    float *out;
} conv_io;

static void fwd_chunk(const lp_conv_desc *d, const conv_plan *p, const conv_io *io, int n0, float *col, float *out) {
    const float *x = io->in, *w = io->w, *b = io->b;
    float *y = io->out;
    const int cnt = d->n - n0 < p->nb ? d->n - n0 : p->nb;
    const int64_t cols = cnt * p->ohw, ohw = p->ohw, crow = p->crow;
    const int kg = p->kg;
    for (int g = 0; g < d->groups; g++) {
        const float *wg = w + (int64_t)g * kg * crow;
        const float *bmat = col;
        if (p->nb == 1 && !p->direct && p->tile_rows < d->oh) {
            /* Large maps: im2col a band of output rows at a time so the columns are
             * still in cache when the gemm packs them. */
            float *yg = y + ((int64_t)n0 * d->k + (int64_t)g * kg) * ohw;
            for (int oy0 = 0; oy0 < d->oh; oy0 += p->tile_rows) {
                int oy1 = oy0 + p->tile_rows < d->oh ? oy0 + p->tile_rows : d->oh;
                int64_t tc = (int64_t)(oy1 - oy0) * d->ow;
                float *yt = yg + (int64_t)oy0 * d->ow;
                im2col_rows(d, x, n0, g, oy0, oy1, col);
                if (b)
                    for (int r = 0; r < kg; r++)
                        for (int64_t q = 0; q < tc; q++) yt[r * ohw + q] = (d->accumulate ? yt[r * ohw + q] : 0.f) + b[g * kg + r];
                _lp_cpu_sgemm(0, 0, kg, (int)tc, (int)crow, 1.f, wg, (int)crow, col, (int)tc,
                              b || d->accumulate ? 1.f : 0.f, yt, (int)ohw);
                if (d->act > 0.f) _lp_cpu_act_rows(yt, kg, tc, ohw, d->act);
            }
            continue;
        }
        if (p->direct && p->nb == 1)
            bmat = x + ((int64_t)n0 * d->c + (int64_t)g * p->cg) * ohw;
        else
            im2col(d, x, n0, cnt, g, col);
        if (p->nb == 1) {
            /* One image: the gemm writes y in place, bias pre-filled so beta = 1 adds it. */
            float *yg = y + ((int64_t)n0 * d->k + (int64_t)g * kg) * ohw;
            if (b)
                for (int r = 0; r < kg; r++)
                    for (int64_t q = 0; q < ohw; q++) yg[r * ohw + q] = (d->accumulate ? yg[r * ohw + q] : 0.f) + b[g * kg + r];
            _lp_cpu_sgemm(0, 0, kg, (int)ohw, (int)crow, 1.f, wg, (int)crow, bmat, (int)ohw,
                          b || d->accumulate ? 1.f : 0.f, yg, (int)ohw);
            if (d->act > 0.f) _lp_cpu_act_rows(yg, kg, ohw, ohw, d->act);
        } else {
            _lp_cpu_sgemm(0, 0, kg, (int)cols, (int)crow, 1.f, wg, (int)crow, bmat, (int)cols, 0.f, out, (int)cols);
#pragma omp parallel for collapse(2) schedule(static) if (kg * cols > LP_CPU_PAR_MIN)
            for (int img = 0; img < cnt; img++) {
                for (int r = 0; r < kg; r++) {
                    float *dst = y + ((int64_t)(n0 + img) * d->k + (int64_t)g * kg + r) * ohw;
                    const float *src = out + r * cols + img * ohw;
                    float bv = b ? b[g * kg + r] : 0.f;
                    if (d->accumulate)
                        for (int64_t q = 0; q < ohw; q++) dst[q] += src[q] + bv;
                    else
                        for (int64_t q = 0; q < ohw; q++) dst[q] = src[q] + bv;
                    if (d->act > 0.f) _lp_cpu_act_rows(dst, 1, ohw, ohw, d->act);
                }
            }
        }
    }
}

static void bwd_data_chunk(const lp_conv_desc *d, const conv_plan *p, const conv_io *io, int n0, float *col,
                           float *dyb) {
    const float *dy = io->in, *w = io->w;
    float *dx = io->out;
    const int cnt = d->n - n0 < p->nb ? d->n - n0 : p->nb;
    const int64_t cols = cnt * p->ohw, ohw = p->ohw, crow = p->crow;
    const int kg = p->kg;
    for (int g = 0; g < d->groups; g++) {
        const float *wg = w + (int64_t)g * kg * crow;
        const float *dyg = dyb;
        if (p->nb == 1)
            dyg = dy + ((int64_t)n0 * d->k + (int64_t)g * kg) * ohw;
        else
            gather_rows(dy, d->k, kg, ohw, n0, cnt, g, dyb);
        if (p->nb == 1 && !p->direct && p->tile_rows < d->oh) {
            /* banded, as in fwd_chunk: each band's columns are scattered while cached */
            for (int oy0 = 0; oy0 < d->oh; oy0 += p->tile_rows) {
                int oy1 = oy0 + p->tile_rows < d->oh ? oy0 + p->tile_rows : d->oh;
                int64_t tc = (int64_t)(oy1 - oy0) * d->ow;
                _lp_cpu_sgemm(1, 0, (int)crow, (int)tc, kg, 1.f, wg, (int)crow, dyg + (int64_t)oy0 * d->ow, (int)ohw,
                              0.f, col, (int)tc);
                col2im_rows_add(d, col, n0, g, oy0, oy1, dx);
            }
            continue;
        }
        if (p->direct && p->nb == 1) {
            float *dxg = dx + ((int64_t)n0 * d->c + (int64_t)g * p->cg) * ohw;
            _lp_cpu_sgemm(1, 0, (int)crow, (int)ohw, kg, 1.f, wg, (int)crow, dyg, (int)ohw, 1.f, dxg, (int)ohw);
        } else {
            _lp_cpu_sgemm(1, 0, (int)crow, (int)cols, kg, 1.f, wg, (int)crow, dyg, (int)cols, 0.f, col, (int)cols);
            col2im_add(d, col, n0, cnt, g, dx);
        }
    }
}

/* dw += dy * col^T for the chunk's images (dw: this worker's own accumulator). */
static void bwd_filter_chunk(const lp_conv_desc *d, const conv_plan *p, const float *x, const float *dy, float *dw,
                             int n0, float *col, float *dyb) {
    const int cnt = d->n - n0 < p->nb ? d->n - n0 : p->nb;
    const int64_t cols = cnt * p->ohw, ohw = p->ohw, crow = p->crow;
    const int kg = p->kg;
    for (int g = 0; g < d->groups; g++) {
        float *dwg = dw + (int64_t)g * kg * crow;
        const float *dyg = dyb, *bmat = col;
        if (p->nb == 1)
            dyg = dy + ((int64_t)n0 * d->k + (int64_t)g * kg) * ohw;
        else
            gather_rows(dy, d->k, kg, ohw, n0, cnt, g, dyb);
        if (p->nb == 1 && !p->direct && p->tile_rows < d->oh) {
            for (int oy0 = 0; oy0 < d->oh; oy0 += p->tile_rows) {
                int oy1 = oy0 + p->tile_rows < d->oh ? oy0 + p->tile_rows : d->oh;
                int64_t tc = (int64_t)(oy1 - oy0) * d->ow;
                im2col_rows(d, x, n0, g, oy0, oy1, col);
                _lp_cpu_sgemm(0, 1, kg, (int)crow, (int)tc, 1.f, dyg + (int64_t)oy0 * d->ow, (int)ohw, col, (int)tc,
                              1.f, dwg, (int)crow);
            }
            continue;
        }
        if (p->direct && p->nb == 1)
            bmat = x + ((int64_t)n0 * d->c + (int64_t)g * p->cg) * ohw;
        else
            im2col(d, x, n0, cnt, g, col);
        _lp_cpu_sgemm(0, 1, kg, (int)crow, (int)cols, 1.f, dyg, (int)cols, bmat, (int)cols, 1.f, dwg, (int)crow);
    }
}

typedef void (*conv_chunk_fn)(const lp_conv_desc *d, const conv_plan *p, const conv_io *io, int n0, float *col,
                              float *buf);

/* Run a pass chunk by chunk: chunks in parallel with private scratch when there are
 * enough images, else in turn with the gemm itself threaded. */
static lp_status run_chunks(const lp_conv_desc *d, conv_chunk_fn fn, const conv_io *io, const char *what) {
    conv_plan p = conv_plan_make(d);
    int workers = p.per_thread ? p.nt : 1;
    float *s = conv_scratch(&p, workers, what);
    if (!s) return LP_ERR_OOM;
    if (p.per_thread) {
#pragma omp parallel for schedule(static) num_threads(p.nt)
        for (int ch = 0; ch < p.nchunks; ch++) {
            float *mine = s + (p.col_sz + p.buf_sz) * omp_get_thread_num();
            fn(d, &p, io, ch * p.nb, mine, mine + p.col_sz);
        }
    } else {
        for (int ch = 0; ch < p.nchunks; ch++) fn(d, &p, io, ch * p.nb, s, s + p.col_sz);
    }
    free(s);
    return LP_OK;
}

lp_status _lp_cpu_conv_fwd(const lp_conv_desc *d, const float *x, const float *w, const float *b, float *y) {
    lp_status st = conv_check(d, "conv_fwd");
    if (st) return st;
    if (conv_is_depthwise(d)) {
        int nt;
        float *pad = dw_scratch(d, &nt, "conv_fwd depthwise");
        if (!pad) return LP_ERR_OOM;
        dw_fwd(d, x, w, b, y, pad, nt);
        free(pad);
        return LP_OK;
    }
    conv_io io = {x, w, b, y};
    return run_chunks(d, fwd_chunk, &io, "conv_fwd");
}

lp_status _lp_cpu_conv_bwd_data(const lp_conv_desc *d, const float *dy, const float *w, float *dx) {
    lp_status st = conv_check(d, "conv_bwd_data");
    if (st) return st;
    if (d->overwrite) memset(dx, 0, sizeof(float) * (size_t)d->n * d->c * d->h * d->w); /* the kernels add */
    if (conv_is_depthwise(d)) {
        int nt;
        float *pad = dw_scratch(d, &nt, "conv_bwd_data depthwise");
        if (!pad) return LP_ERR_OOM;
        dw_bwd_data(d, dy, w, dx, pad, nt);
        free(pad);
        return LP_OK;
    }
    conv_io io = {dy, w, NULL, dx};
    return run_chunks(d, bwd_data_chunk, &io, "conv_bwd_data");
}

lp_status _lp_cpu_conv_bwd_filter(const lp_conv_desc *d, const float *x, const float *dy, float *dw, float *db) {
    lp_status st = conv_check(d, "conv_bwd_filter");
    if (st) return st;
    if (conv_is_depthwise(d)) {
        int nt;
        float *pad = dw_scratch(d, &nt, "conv_bwd_filter depthwise");
        if (!pad) return LP_ERR_OOM;
        dw_bwd_filter(d, x, dy, dw, db, pad, nt);
        free(pad);
        return LP_OK;
    }
    conv_plan p = conv_plan_make(d);
    const size_t nw = (size_t)d->k * p.crow;
    if (p.per_thread) {
        /* each worker sums its images into a private dw; the partial sums are added at the end */
        const size_t per = p.col_sz + p.buf_sz + nw;
        float *s = _lp_cpu_scratch(per * p.nt + 1, "conv_bwd_filter");
        if (!s) return LP_ERR_OOM;
        memset(s, 0, sizeof(float) * per * p.nt);
#pragma omp parallel num_threads(p.nt)
        {
            float *mine = s + per * omp_get_thread_num();
#pragma omp for schedule(static)
            for (int ch = 0; ch < p.nchunks; ch++)
                bwd_filter_chunk(d, &p, x, dy, mine + p.col_sz + p.buf_sz, ch * p.nb, mine, mine + p.col_sz);
#pragma omp for schedule(static)
            for (size_t i = 0; i < nw; i++) {
                float acc = 0.f;
                for (int t = 0; t < p.nt; t++) acc += s[per * t + p.col_sz + p.buf_sz + i];
                dw[i] += acc;
            }
        }
        free(s);
    } else {
        float *s = conv_scratch(&p, 1, "conv_bwd_filter");
        if (!s) return LP_ERR_OOM;
        for (int ch = 0; ch < p.nchunks; ch++) bwd_filter_chunk(d, &p, x, dy, dw, ch * p.nb, s, s + p.col_sz);
        free(s);
    }
    if (db) {
        const int64_t ohw = p.ohw;
#pragma omp parallel for schedule(static) if ((int64_t)d->n * d->k * ohw > LP_CPU_PAR_MIN)
        for (int kc = 0; kc < d->k; kc++) {
            double sum = 0;
            for (int n = 0; n < d->n; n++) {
                const float *q = dy + ((int64_t)n * d->k + kc) * ohw;
                float part = 0.f;
                for (int64_t i = 0; i < ohw; i++) part += q[i];
                sum += part;
            }
            db[kc] += (float)sum;
        }
    }
    return LP_OK;
}
