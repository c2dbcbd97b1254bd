/* preprocess.c — images to a model's input batch: channel conversion, PIL-style
 * antialiased bilinear resize of the shorter side, torchvision's center crop, and
 * per-channel normalisation, so Loupe's inputs match a PyTorch pipeline's. */
#include "io_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

lp_preprocess lp_preprocess_imagenet(void) {
    lp_preprocess p = {256, 224, 3, {0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}};
    return p;
}

/* Convert to `ch` (1 or 3) channels: gray <-> RGB, alpha dropped (not composited:
 * the model should see the colour the pixel would have had). RGB -> gray uses PIL's
 * ITU-R 601 weights, as Image.convert("L") does. */
static lp_status convert_channels(const lp_image *in, int ch, lp_image *out) {
    LP_TRY(lp_image_alloc(out, in->w, in->h, ch));
    size_t n = (size_t)in->w * (size_t)in->h;
    for (size_t i = 0; i < n; i++) {
        const float *s = in->px + i * (size_t)in->c;
        float *d = out->px + i * (size_t)ch;
        if (in->c < 3) {
            for (int k = 0; k < ch; k++) d[k] = s[0];
        } else if (ch == 1) {
            d[0] = 0.299f * s[0] + 0.587f * s[1] + 0.114f * s[2];
        } else {
            d[0] = s[0];
            d[1] = s[1];
            d[2] = s[2];
        }
    }
    return LP_OK;
}

/* Weights of one output sample along an axis, as PIL's precompute_coeffs builds them:
 * a triangle filter whose support widens by the downscale factor (antialiasing). */
typedef struct taps {
    int *first, *count;
    float *w; /* out_size x ksize */
    int ksize;
} taps;

static lp_status make_taps(int in_size, int out_size, taps *t) {
    double scale = (double)in_size / out_size;
    double fscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * fscale;
    t->ksize = (int)ceil(support) * 2 + 1;
    t->first = lp_malloc(sizeof(int) * (size_t)out_size);
    t->count = lp_malloc(sizeof(int) * (size_t)out_size);
    t->w = lp_calloc((size_t)out_size * (size_t)t->ksize, sizeof(float));
    if (!t->first || !t->count || !t->w) return LP_ERR_OOM;
    for (int o = 0; o < out_size; o++) {
        double center = (o + 0.5) * scale;
        int lo = (int)(center - support + 0.5);
        int hi = (int)(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in_size) hi = in_size;
        int cnt = hi - lo;
        if (cnt > t->ksize) cnt = t->ksize;
        double ww = 0.0;
        float *dst = t->w + (size_t)o * (size_t)t->ksize;
        for (int x = 0; x < cnt; x++) {
            double u = fabs((x + lo - center + 0.5) / fscale);
            double v = u < 1.0 ? 1.0 - u : 0.0;
            dst[x] = (float)v;
            ww += v;
        }
        for (int x = 0; x < cnt; x++) dst[x] = ww != 0.0 ? (float)(dst[x] / ww) : 0.0f;
        t->first[o] = lo;
        t->count[o] = cnt;
    }
    return LP_OK;
}

static void free_taps(taps *t) {
    free(t->first);
    free(t->count);
    free(t->w);
}

/* Resample HWC `in` to ow x oh: horizontal pass, then vertical (PIL's order). */
static lp_status resize(const lp_image *in, int ow, int oh, lp_image *out) {
    int c = in->c;
    taps tx = {0}, ty = {0};
    lp_image mid = {0};
    lp_status st = make_taps(in->w, ow, &tx);
    if (st == LP_OK) st = make_taps(in->h, oh, &ty);
    if (st == LP_OK) st = lp_image_alloc(&mid, ow, in->h, c);
    if (st == LP_OK) st = lp_image_alloc(out, ow, oh, c);
    if (st != LP_OK) goto done;
    for (int y = 0; y < in->h; y++)
        for (int x = 0; x < ow; x++) {
            const float *k = tx.w + (size_t)x * (size_t)tx.ksize;
            for (int ch = 0; ch < c; ch++) {
                double acc = 0.0;
                for (int i = 0; i < tx.count[x]; i++)
                    acc += k[i] * in->px[((size_t)y * in->w + (size_t)(tx.first[x] + i)) * c + ch];
                mid.px[((size_t)y * ow + x) * c + ch] = (float)acc;
            }
        }
    for (int y = 0; y < oh; y++) {
        const float *k = ty.w + (size_t)y * (size_t)ty.ksize;
        for (int x = 0; x < ow; x++)
            for (int ch = 0; ch < c; ch++) {
                double acc = 0.0;
                for (int i = 0; i < ty.count[y]; i++)
                    acc += k[i] * mid.px[((size_t)(ty.first[y] + i) * ow + x) * c + ch];
                out->px[((size_t)y * ow + x) * c + ch] = (float)acc;
            }
    }
done:
    if (st != LP_OK) lp_image_free(out);
    lp_image_free(&mid);
    free_taps(&tx);
    free_taps(&ty);
    return st;
}

/* Output size of one image after resize and crop, the way torchvision computes it. */
static void plan(const lp_image *im, const lp_preprocess *pp, int *rw, int *rh, int *ow, int *oh) {
    *rw = im->w;
    *rh = im->h;
    if (pp->size > 0 && !(im->w <= im->h ? im->w == pp->size : im->h == pp->size)) {
        if (im->w <= im->h) {
            *rw = pp->size;
            *rh = (int)((double)pp->size * im->h / im->w);
        } else {
            *rh = pp->size;
            *rw = (int)((double)pp->size * im->w / im->h);
        }
    }
    *ow = pp->crop > 0 ? pp->crop : *rw;
    *oh = pp->crop > 0 ? pp->crop : *rh;
}

lp_status lp_images_to_tensor(const lp_image *imgs, int n, const lp_preprocess *pp, lp_tensor **out) {
    *out = NULL;
    if (n <= 0) return lp_fail(LP_ERR_ARG, "no images to preprocess");
    if (pp->channels != 1 && pp->channels != 3)
        return lp_fail(LP_ERR_ARG, "preprocess: channels must be 1 or 3, not %d", pp->channels);
    if (pp->size < 0 || pp->crop < 0) return lp_fail(LP_ERR_ARG, "preprocess: negative size or crop");
    for (int k = 0; k < pp->channels; k++)
        if (!(pp->std[k] > 0.0f)) return lp_fail(LP_ERR_ARG, "preprocess: std[%d] = %g must be positive", k, pp->std[k]);
    int W = 0, H = 0;
    for (int i = 0; i < n; i++) {
        const lp_image *im = &imgs[i];
        if (!im->px || im->w <= 0 || im->h <= 0 || (im->c != 1 && im->c != 3 && im->c != 4))
            return lp_fail(LP_ERR_ARG, "image %d is empty or has %d channels", i, im->c);
        int rw, rh, ow, oh;
        plan(im, pp, &rw, &rh, &ow, &oh);
        if (pp->crop > rw || pp->crop > rh)
            return lp_fail(LP_ERR_SHAPE, "image %d: crop %d is larger than the %dx%d image after resize", i, pp->crop,
                           rw, rh);
        if (i == 0) {
            W = ow;
            H = oh;
        } else if (ow != W || oh != H) {
            return lp_fail(LP_ERR_SHAPE, "image %d is %dx%d after preprocessing but image 0 is %dx%d (set a crop)", i,
                           ow, oh, W, H);
        }
    }
    int C = pp->channels;
    int64_t shape[4] = {n, C, H, W};
    LP_TRY(lp_tensor_new(out, LP_DEVICE_CPU, LP_F32, 4, shape));
    float *dst = (*out)->data;
    lp_status st = LP_OK;
    for (int i = 0; i < n && st == LP_OK; i++) {
        const lp_image *im = &imgs[i];
        lp_image conv = {0}, rs = {0};
        int rw, rh, ow, oh;
        plan(im, pp, &rw, &rh, &ow, &oh);
        st = convert_channels(im, C, &conv);
        if (st == LP_OK) {
            if (rw != conv.w || rh != conv.h) st = resize(&conv, rw, rh, &rs);
            else {
                rs = conv;
                conv.px = NULL;
            }
        }
        if (st == LP_OK) {
            /* Python's round() is half-to-even, as is nearbyint in the default mode. */
            int top = (int)nearbyint((rh - oh) / 2.0), left = (int)nearbyint((rw - ow) / 2.0);
            float *img_out = dst + (size_t)i * C * H * W;
            for (int ch = 0; ch < C; ch++) {
                float m = pp->mean[ch], s = pp->std[ch];
                for (int y = 0; y < H; y++)
                    for (int x = 0; x < W; x++)
                        img_out[((size_t)ch * H + y) * W + x] =
                            (rs.px[((size_t)(y + top) * rw + (size_t)(x + left)) * C + ch] - m) / s;
            }
        }
        lp_image_free(&conv);
        lp_image_free(&rs);
    }
    if (st != LP_OK) {
        lp_tensor_free(*out);
        *out = NULL;
    }
    return st;
}
