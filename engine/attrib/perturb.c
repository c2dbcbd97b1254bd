/* perturb.c — the input-modification family: methods that only run forwards on
 * altered copies of the input and read how the target score moves.
 *
 * occlusion (Zeiler & Fergus 2014), as Captum's Occlusion with sliding window
 *   (C, patch, patch) and strides (C, stride, stride): windows start at multiples of
 *   the stride, ceil((H - patch) / stride) + 1 of them per axis, so the last one may
 *   hang over the edge and is cut off there. Each window replaces all channels under
 *   it by the fill; a pixel's attribution is the mean over the windows covering it of
 *   score(x) - score(occluded). N x C x H x W (every channel equal, as Captum's).
 *   A stride above the patch (Captum refuses it) leaves uncovered pixels at 0.
 *
 * occlusion_random (after Zhou et al. 2014, "Object detectors emerge in deep scene
 *   CNNs", sec. 3.1): `masks` square occluders of side `patch`, top-left corners drawn
 *   uniformly (seeded) among the positions where the occluder lies fully inside the
 *   image, shared by all inputs; each replaces all channels under it by the fill. The
 *   discrepancy map of input i at pixel p is
 *       D_i(p) = mean over occluders k covering p of (s_i - s_i,k),
 *   s_i the target score at the input and s_i,k with occluder k; 0 where no occluder
 *   falls. N x 1 x H x W. Zhou et al. used ~5000 occluders of 11 x 11 per image (a
 *   dense grid at stride 3) with random content; here positions are random and the
 *   content is the fill, so the map reads like occlusion's. Any target works, but
 *   the method is meant for one unit (--neuron): its map outlines the unit's
 *   empirical receptive field.
 *
 * rise (Petsiuk et al. 2018): `masks` binary grids of cells x cells, each cell kept
 *   with probability `keep`, upsampled bilinearly (half-pixel centres, clamped edges:
 *   torch's interpolate; the authors' skimage resize mirrors instead) from a grid cell
 *   of CH = ceil(H / cells) x CW = ceil(W / cells) pixels to (cells + 1) CH x
 *   (cells + 1) CW, then cropped at an offset drawn in [0, CH) x [0, CW). With the
 *   input multiplied by mask M_k (0 after normalisation: the dataset mean),
 *       S_i = sum_k score(x_i * M_k) M_k / (masks * keep),  N x 1 x H x W.
 *   Masks are drawn in order from one seeded stream and shared by all inputs, so a
 *   seed gives the same masks at any batch size; opts->mask_tensor replays given
 *   masks (masks x 1 x H x W) instead.
 *
 * All three make rows (altered copies standing for an input) in batches of
 * opts->batch and fold each row's score back; progress counts rows. */
#include "attrib_internal.h"
#include "../rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- the row loop ------------------------------------------------------------------ */
typedef struct pert pert;
struct pert {
    int64_t rows;
    /* Fill row r (x->per floats) and say which input it stands for. */
    lp_status (*make)(_lp_xctx *x, pert *p, int64_t r, float *row, int64_t *owner);
    /* Fold row r's target score into the method's sums. */
    void (*fold)(_lp_xctx *x, pert *p, int64_t r, float score);
    void *u;
};

static lp_status pert_loop(_lp_xctx *x, pert *p) {
    int64_t bs = _lp_x_batch(x);
    float *rows = lp_malloc((size_t)(bs * x->per) * sizeof *rows);
    float *scores = lp_malloc((size_t)bs * sizeof *scores);
    int64_t *owner = lp_malloc((size_t)bs * sizeof *owner);
    lp_status s = rows && scores && owner ? LP_OK : LP_ERR_OOM;
    x->total += p->rows;
    for (int64_t r0 = 0; s == LP_OK && r0 < p->rows; r0 += bs) {
        int64_t b = p->rows - r0 < bs ? p->rows - r0 : bs;
        for (int64_t j = 0; s == LP_OK && j < b; j++) s = p->make(x, p, r0 + j, rows + j * x->per, owner + j);
        if (s == LP_OK) s = _lp_x_forward(x, rows, b, owner, scores);
        for (int64_t j = 0; s == LP_OK && j < b; j++) p->fold(x, p, r0 + j, scores[j]);
        if (s == LP_OK) _lp_x_progress(x, b);
    }
    free(rows);
    free(scores);
    free(owner);
    return s;
}

static lp_status check_image(_lp_xctx *x) {
    if (x->o->layer)
        return lp_fail(LP_ERR_ARG, "%s attributes at the input only; --layer works with saliency, input_x_gradient, "
                                   "smoothgrad, smoothgrad_sq, vargrad and the CAM methods", x->o->method);
    if (x->ndim != 4 || x->h < 1 || x->w < 1)
        return lp_fail(LP_ERR_SHAPE, "%s needs image inputs (N x C x H x W)", x->o->method);
    return LP_OK;
}

static lp_status check_patch(_lp_xctx *x) {
    int p = x->o->patch;
    if (p > x->h || p > x->w)
        return lp_fail(LP_ERR_ARG, "the patch (%d x %d) is larger than the image (%d x %d)", p, p,
                       x->h, x->w);
    return LP_OK;
}

/* What the fill puts under a patch: a whole image per input (n x per, new). */
static lp_status fill_images(_lp_xctx *x, float **out) {
    const lp_explain_opts *o = x->o;
    int64_t hw = (int64_t)x->h * x->w;
    float *f = lp_calloc((size_t)(x->n * x->per), sizeof *f);
    if (!f) return LP_ERR_OOM;
    for (int64_t i = 0; i < x->n; i++) {
        const float *in = x->input + i * x->per;
        float *fi = f + i * x->per;
        switch (o->fill) {
        case LP_FILL_ZERO: break;
        case LP_FILL_BLACK:
            for (int c = 0; c < x->c; c++)
                for (int64_t p = 0; p < hw; p++) fi[c * hw + p] = o->black[x->c == 3 ? c : 0];
            break;
        case LP_FILL_BLUR: _lp_blur(in, x->c, x->h, x->w, o->blur_sigma, fi); break;
        case LP_FILL_MEAN:
            for (int c = 0; c < x->c; c++) {
                double acc = 0;
                for (int64_t p = 0; p < hw; p++) acc += in[c * hw + p];
                for (int64_t p = 0; p < hw; p++) fi[c * hw + p] = (float)(acc / (double)hw);
            }
            break;
        default:
            free(f);
            return lp_fail(LP_ERR_ARG, "unknown fill kind %d", (int)o->fill);
        }
    }
    *out = f;
    return LP_OK;
}

/* ---- occlusion and occlusion_random: square patches -------------------------------- */
typedef struct patches {
    int64_t count;     /* patches per input */
    int *y0, *x0;      /* top-left corners (NULL: the sliding grid below) */
    int ny, nx;        /* grid: windows per axis */
    float *fill;       /* n x per */
    double *sum;       /* n x h x w: summed score drops */
    int64_t *cover;    /* h x w: patches covering each pixel (the same for every input) */
} patches;

static void patch_at(_lp_xctx *x, const patches *ps, int64_t k, int *y0, int *y1, int *x0, int *x1) {
    int p = x->o->patch;
    if (ps->y0) {
        *y0 = ps->y0[k];
        *x0 = ps->x0[k];
    } else {
        *y0 = (int)(k / ps->nx) * x->o->stride;
        *x0 = (int)(k % ps->nx) * x->o->stride;
    }
    *y1 = *y0 + p < x->h ? *y0 + p : x->h; /* Captum cuts the last window at the edge */
    *x1 = *x0 + p < x->w ? *x0 + p : x->w;
}

static lp_status make_patch(_lp_xctx *x, pert *pt, int64_t r, float *row, int64_t *owner) {
    patches *ps = pt->u;
    int64_t i = r / ps->count, hw = (int64_t)x->h * x->w;
    int y0, y1, x0, x1;
    patch_at(x, ps, r % ps->count, &y0, &y1, &x0, &x1);
    const float *fi = ps->fill + i * x->per;
    memcpy(row, x->input + i * x->per, (size_t)x->per * sizeof *row);
    for (int c = 0; c < x->c; c++)
        for (int y = y0; y < y1; y++) {
            int64_t o = c * hw + (int64_t)y * x->w + x0;
            memcpy(row + o, fi + o, (size_t)(x1 - x0) * sizeof *row);
        }
    *owner = i;
    return LP_OK;
}

static void fold_patch(_lp_xctx *x, pert *pt, int64_t r, float score) {
    patches *ps = pt->u;
    int64_t i = r / ps->count;
    int y0, y1, x0, x1;
    patch_at(x, ps, r % ps->count, &y0, &y1, &x0, &x1);
    double d = (double)(x->scores[i] - score); /* Captum's eval_diff, in the model's precision */
    double *si = ps->sum + i * (int64_t)x->h * x->w;
    for (int y = y0; y < y1; y++)
        for (int xx = x0; xx < x1; xx++) si[(int64_t)y * x->w + xx] += d;
}

/* Runs the patches; out (n x channels x h x w) = sum / cover, repeated over channels. */
static lp_status run_patches(_lp_xctx *x, patches *ps, int channels, lp_tensor **attr) {
    int64_t hw = (int64_t)x->h * x->w;
    ps->sum = lp_calloc((size_t)(x->n * hw), sizeof *ps->sum);
    ps->cover = lp_calloc((size_t)hw, sizeof *ps->cover);
    lp_status s = ps->sum && ps->cover ? LP_OK : LP_ERR_OOM;
    if (s == LP_OK) s = fill_images(x, &ps->fill);
    if (s == LP_OK) {
        for (int64_t k = 0; k < ps->count; k++) {
            int y0, y1, x0, x1;
            patch_at(x, ps, k, &y0, &y1, &x0, &x1);
            for (int y = y0; y < y1; y++)
                for (int xx = x0; xx < x1; xx++) ps->cover[(int64_t)y * x->w + xx]++;
        }
        pert pt = {x->n * ps->count, make_patch, fold_patch, ps};
        s = pert_loop(x, &pt);
    }
    if (s == LP_OK) {
        int64_t shape[4] = {1, channels, x->h, x->w};
        s = _lp_x_new_attr(attr, x->n, 4, shape);
    }
    if (s == LP_OK) {
        float *a = (*attr)->data;
        for (int64_t i = 0; i < x->n; i++)
            for (int c = 0; c < channels; c++)
                for (int64_t p = 0; p < hw; p++)
                    a[(i * channels + c) * hw + p] =
                        ps->cover[p] ? (float)(ps->sum[i * hw + p] / (double)ps->cover[p]) : 0.0f;
    }
    free(ps->sum);
    free(ps->cover);
    free(ps->fill);
    return s;
}

static lp_status m_occlusion(_lp_xctx *x, lp_tensor **attr) {
    LP_TRY(check_image(x));
    LP_TRY(check_patch(x));
    int p = x->o->patch, st = x->o->stride;
    patches ps = {0};
    ps.ny = (x->h - p + st - 1) / st + 1; /* ceil((H - patch) / stride) + 1, as Captum's shift counts */
    ps.nx = (x->w - p + st - 1) / st + 1;
    ps.count = (int64_t)ps.ny * ps.nx;
    return run_patches(x, &ps, x->c, attr);
}

static lp_status m_occlusion_random(_lp_xctx *x, lp_tensor **attr) {
    LP_TRY(check_image(x));
    LP_TRY(check_patch(x));
    int p = x->o->patch;
    patches ps = {0};
    ps.count = x->o->masks;
    ps.y0 = lp_malloc((size_t)ps.count * sizeof *ps.y0);
    ps.x0 = lp_malloc((size_t)ps.count * sizeof *ps.x0);
    lp_status s = ps.y0 && ps.x0 ? LP_OK : LP_ERR_OOM;
    if (s == LP_OK) {
        lp_rng rng;
        lp_rng_seed(&rng, x->o->seed);
        for (int64_t k = 0; k < ps.count; k++) {
            ps.y0[k] = (int)lp_rng_below(&rng, x->h - p + 1);
            ps.x0[k] = (int)lp_rng_below(&rng, x->w - p + 1);
        }
        s = run_patches(x, &ps, 1, attr);
    }
    free(ps.y0);
    free(ps.x0);
    return s;
}

/* ---- rise ------------------------------------------------------------------------- */
typedef struct rise_state {
    int64_t masks, hw;
    const float *fixed;  /* replayed masks (masks x h x w), or NULL */
    lp_rng rng;
    int64_t made;        /* masks drawn so far */
    int64_t slots;       /* ring of drawn masks: more than one batch can span */
    float *ring;         /* slots x hw */
    float *grid, *up;    /* cells^2, upsampled (cells + 1)^2 CH CW */
    double *sum;         /* n x hw */
} rise_state;

/* Draws the next mask of the stream into its ring slot. */
static void rise_draw(_lp_xctx *x, rise_state *rs) {
    int s = x->o->cells, ch = (x->h + s - 1) / s, cw = (x->w + s - 1) / s;
    int uh = (s + 1) * ch, uw = (s + 1) * cw;
    for (int k = 0; k < s * s; k++) rs->grid[k] = lp_rng_uniform(&rs->rng) < x->o->keep ? 1.0f : 0.0f;
    int dy = (int)lp_rng_below(&rs->rng, ch), dx = (int)lp_rng_below(&rs->rng, cw);
    _lp_resize_bilinear(rs->grid, 1, s, s, rs->up, uh, uw);
    float *m = rs->ring + (rs->made % rs->slots) * rs->hw;
    for (int y = 0; y < x->h; y++) memcpy(m + (int64_t)y * x->w, rs->up + (int64_t)(y + dy) * uw + dx, (size_t)x->w * sizeof *m);
    rs->made++;
}

static const float *rise_mask(_lp_xctx *x, rise_state *rs, int64_t k) {
    if (rs->fixed) return rs->fixed + k * rs->hw;
    while (rs->made <= k) rise_draw(x, rs);
    return rs->ring + (k % rs->slots) * rs->hw;
}

/* Rows run mask-major (row r: mask r / n on input r % n), so masks are drawn in order. */
static lp_status make_rise(_lp_xctx *x, pert *pt, int64_t r, float *row, int64_t *owner) {
    rise_state *rs = pt->u;
    int64_t i = r % x->n;
    const float *m = rise_mask(x, rs, r / x->n), *in = x->input + i * x->per;
    for (int c = 0; c < x->c; c++)
        for (int64_t p = 0; p < rs->hw; p++) row[c * rs->hw + p] = in[c * rs->hw + p] * m[p];
    *owner = i;
    return LP_OK;
}

static void fold_rise(_lp_xctx *x, pert *pt, int64_t r, float score) {
    rise_state *rs = pt->u;
    const float *m = rise_mask(x, rs, r / x->n);
    double *si = rs->sum + (r % x->n) * rs->hw;
    for (int64_t p = 0; p < rs->hw; p++) si[p] += (double)score * m[p];
}

static lp_status m_rise(_lp_xctx *x, lp_tensor **attr) {
    LP_TRY(check_image(x));
    const lp_explain_opts *o = x->o;
    if (!(o->keep > 0 && o->keep < 1))
        return lp_fail(LP_ERR_ARG, "keep probability %g is outside (0, 1)", (double)o->keep);
    rise_state rs = {0};
    rs.hw = (int64_t)x->h * x->w;
    rs.masks = o->masks;
    if (o->mask_tensor) {
        const lp_tensor *t = o->mask_tensor;
        int64_t cnt = lp_tensor_numel(t);
        if (t->dtype != LP_F32 || t->device != LP_DEVICE_CPU || t->ndim < 2 || cnt == 0 ||
            cnt != t->shape[0] * rs.hw)
            return lp_fail(LP_ERR_SHAPE, "fixed masks must be host float32, masks x 1 x %d x %d", x->h, x->w);
        rs.fixed = t->data;
        rs.masks = t->shape[0];
    } else {
        int s = o->cells, ch = (x->h + s - 1) / s, cw = (x->w + s - 1) / s;
        lp_rng_seed(&rs.rng, o->seed);
        /* A batch of b rows spans at most b masks; one more slot keeps the oldest alive. */
        rs.slots = _lp_x_batch(x) + 1;
        rs.ring = lp_malloc((size_t)(rs.slots * rs.hw) * sizeof *rs.ring);
        rs.grid = lp_malloc((size_t)s * s * sizeof *rs.grid);
        rs.up = lp_malloc((size_t)(s + 1) * ch * (size_t)(s + 1) * cw * sizeof *rs.up);
    }
    rs.sum = lp_calloc((size_t)(x->n * rs.hw), sizeof *rs.sum);
    lp_status s = rs.sum && (rs.fixed || (rs.ring && rs.grid && rs.up)) ? LP_OK : LP_ERR_OOM;
    if (s == LP_OK) {
        pert pt = {rs.masks * x->n, make_rise, fold_rise, &rs};
        s = pert_loop(x, &pt);
    }
    if (s == LP_OK) {
        int64_t shape[4] = {1, 1, x->h, x->w};
        s = _lp_x_new_attr(attr, x->n, 4, shape);
    }
    if (s == LP_OK) {
        float *a = (*attr)->data;
        double norm = 1.0 / ((double)rs.masks * o->keep);
        for (int64_t k = 0; k < x->n * rs.hw; k++) a[k] = (float)(rs.sum[k] * norm);
    }
    free(rs.ring);
    free(rs.grid);
    free(rs.up);
    free(rs.sum);
    return s;
}

const _lp_method _lp_methods_perturb[] = {
    {"occlusion", "score drop when a sliding patch is replaced by the fill (Zeiler & Fergus 2014)", m_occlusion, _LP_KEEP_SCORES},
    {"occlusion_random", "discrepancy map of random occluders for one unit (Zhou et al. 2014)", m_occlusion_random, _LP_KEEP_SCORES},
    {"rise", "score-weighted sum of random upsampled binary masks (Petsiuk et al. 2018)", m_rise, _LP_KEEP_SCORES},
    {NULL, NULL, NULL, 0},
};
