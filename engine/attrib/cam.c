/* cam.c — the class-activation-map family: a map over one convolutional layer's
 * grid, a weighted sum of its channels, upsampled to the input.
 *
 *   cam            Zhou et al. 2016: the classifier's weights of the target class (no
 *                  bias), for models whose layer feeds global average pooling then a
 *                  linear layer
 *   gradcam        channel weight = mean gradient (Selvaraju et al. 2017)
 *   gradcam_pp     Chattopadhay et al. 2018, in pytorch-grad-cam's closed form
 *   xgradcam       sum(gradient x activation) / sum(activation) (Fu et al. 2020)
 *   layercam       per-position weights relu(gradient) (Jiang et al. 2021)
 *   scorecam       softmax over channels of the target score of input x channel mask
 *                  (Wang et al. 2020): one forward per channel, batched
 *   ablationcam    (score - score with the channel zeroed) / score (Desai & Ramaswamy
 *                  2020): one re-run of the network's tail per channel, batched
 *   eigencam       projection on the first principal component (Muhammad & Yeasin 2020)
 *   guided_gradcam guided backprop times the upsampled Grad-CAM (Captum's GuidedGradCam)
 *
 * Output: N x 1 x H x W (guided_gradcam: N x C x H x W), the layer map after ReLU,
 * upsampled bilinearly with half-pixel centres (cv2.resize INTER_LINEAR, as
 * pytorch-grad-cam; torch interpolate align_corners=False, as Captum with
 * interpolate_mode="bilinear"). Not min-max normalised: that is a picture step, and
 * pytorch-grad-cam's min-max of a ReLU'd map commutes with the (linear) upsampling,
 * so its output is exactly the min-max of ours.
 *
 * Where we follow the libraries rather than the papers, or neither:
 *   - scorecam upsamples the channel masks with align_corners=True (pytorch-grad-cam's
 *     UpsamplingBilinear2d), normalises each to [0,1] with (max - min + 1e-8), and
 *     softmaxes the raw target scores (logits), as that library does.
 *   - ablationcam sets the channel to 0. pytorch-grad-cam does so only when the
 *     layer's minimum is 0 (any layer after a ReLU); otherwise it writes min - 1e7,
 *     which we do not copy. A zero original score divides by 1 instead.
 *   - eigencam: the principal direction's sign is arbitrary (LAPACK's choice in the
 *     library); we pick the one whose map correlates positively with the pixels'
 *     (centred) total activation, so the result does not depend on a solver.
 *   - guided_gradcam upsamples bilinearly; Captum's default is nearest.
 *
 * The layer: opts->layer, else the last value in topological order that is
 * N x C x H x W with H x W > 1 and that the target depends on — for a classifier,
 * the feature map before its pooling (ResNet's layer4, VGG's last pool,
 * MobileNet's last conv block). */
#include "attrib_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct cam_layer {
    const char *name;
    int64_t c, h, w, hw, per; /* per = c x hw, one row of the layer */
    float *act, *grad;        /* n x per */
} cam_layer;

static void layer_free(cam_layer *L) {
    free(L->act);
    free(L->grad);
}

/* ---- choosing the layer ------------------------------------------------------------- */
/* Which values the target depends on (need[v] = 1). */
static char *target_deps(const lp_model *m, int target) {
    char *need = lp_calloc((size_t)m->n_values + 1, 1);
    if (!need) return NULL;
    need[target] = 1;
    for (int i = m->n_nodes - 1; i >= 0; i--) {
        const lp_node *n = &m->nodes[i];
        int any = 0;
        for (int k = 0; k < n->n_out; k++) any |= need[n->out[k]];
        for (int k = 0; any && k < n->n_in; k++)
            if (n->in[k] >= 0) need[n->in[k]] = 1;
    }
    return need;
}

/* A value's shape for this call's input (shapes NULL: the static one). */
static lp_shape value_shape(const lp_model *m, const lp_shape *shapes, int v) {
    return shapes ? shapes[v] : m->values[v].shape;
}

static int is_spatial(const lp_shape *s) { return s->ndim == 4 && s->d[2] * s->d[3] != 1; }

/* "a, b, c": the last few spatial node outputs (the usual CAM layers), for messages. */
static const char *spatial_names(const lp_model *m, const lp_shape *shapes, char *buf, size_t len) {
    size_t used = 0;
    int found = 0;
    buf[0] = 0;
    for (int i = m->n_nodes - 1; i >= 0 && found < 4; i--) {
        int v = m->nodes[i].out[0];
        lp_shape s = value_shape(m, shapes, v);
        if (!is_spatial(&s) || m->values[v].dtype != LP_F32) continue;
        int k = snprintf(buf + used, len - used, "%s'%s'", found ? ", " : "", m->values[v].name);
        if (k < 0 || (size_t)k >= len - used) break;
        used += (size_t)k;
        found++;
    }
    if (!found) snprintf(buf, len, "(none: the model has no N x C x H x W layer)");
    return buf;
}

lp_status _lp_cam_layer_missing(const lp_model *m, const char *name) {
    char list[1024];
    return lp_fail(LP_ERR_ARG, "%s: no layer named '%s'; spatial layers near the output: %s",
                   m->path ? m->path : "model", name, spatial_names(m, NULL, list, sizeof list));
}

int _lp_cam_method(const char *method) {
    for (const _lp_method *f = _lp_methods_cam; method && f->name; f++)
        if (!strcmp(f->name, method)) return 1;
    return 0;
}

/* The layer (before any pass, from the shapes this input gives every value, so that
 * the run can keep it and, for gradient CAMs, stop its backward there). */
lp_status _lp_cam_layer(const _lp_xctx *x, const lp_shape *shapes, const char **layer) {
    const lp_model *m = x->m;
    char list[1024], a[96];
    if (x->ndim != 4) return lp_fail(LP_ERR_SHAPE, "%s needs an image input (N x C x H x W)", x->o->method);
    const char *name = x->o->layer;
    if (!name) {
        int target = lp_model_find_value(m, _lp_x_target_value(x));
        char *need = target >= 0 ? target_deps(m, target) : NULL;
        if (!need) return target < 0 ? lp_fail(LP_ERR_INTERNAL, "target value missing") : LP_ERR_OOM;
        for (int i = m->values[target].producer - 1; i >= 0 && !name; i--) {
            int v = m->nodes[i].out[0];
            lp_shape s = value_shape(m, shapes, v);
            if (need[v] && is_spatial(&s) && m->values[v].dtype == LP_F32) name = m->values[v].name;
        }
        free(need);
        if (!name)
            return lp_fail(LP_ERR_ARG, "%s: no spatial (N x C x H x W) layer before the target '%s'; give one with --layer",
                           m->path ? m->path : "model", _lp_x_target_value(x));
    }
    int v = lp_model_find_value(m, name);
    if (v < 0) return _lp_cam_layer_missing(m, name);
    lp_shape s = value_shape(m, shapes, v);
    if (s.ndim != 4 || m->values[v].dtype != LP_F32)
        return lp_fail(LP_ERR_ARG, "layer '%s' is %s, not a spatial map (N x C x H x W); CAM layers near the output: %s",
                       name, lp_shape_fmt(&s, a, sizeof a), spatial_names(m, shapes, list, sizeof list));
    *layer = name;
    return LP_OK;
}

/* The layer lp_explain chose (_lp_cam_layer) and kept, as this run's forward made it. */
static lp_status pick_layer(_lp_xctx *x, cam_layer *L) {
    memset(L, 0, sizeof *L);
    const lp_tensor *t = x->o->layer ? lp_run_value(x->run, x->o->layer) : NULL;
    if (!t) return lp_fail(LP_ERR_INTERNAL, "CAM layer '%s' missing after the forward", x->o->layer ? x->o->layer : "?");
    lp_shape s = lp_tensor_shape(t);
    L->name = x->o->layer;
    L->c = s.d[1];
    L->h = s.d[2];
    L->w = s.d[3];
    L->hw = L->h * L->w;
    L->per = L->c * L->hw;
    return LP_OK;
}

/* Activations (and gradients of the target) at the layer for every input, in batches. */
static lp_status layer_pass(_lp_xctx *x, cam_layer *L, int want_grad) {
    int64_t bs = _lp_x_batch(x);
    L->act = lp_malloc((size_t)(x->n * L->per) * sizeof(float));
    if (want_grad) L->grad = lp_malloc((size_t)(x->n * L->per) * sizeof(float));
    int64_t *owner = lp_malloc((size_t)bs * sizeof *owner);
    lp_status s = L->act && (!want_grad || L->grad) && owner ? LP_OK : LP_ERR_OOM;
    if (s == LP_OK) s = lp_run_capture(x->run, L->name);
    x->total += x->n;
    for (int64_t i0 = 0; s == LP_OK && i0 < x->n; i0 += bs) {
        int64_t b = x->n - i0 < bs ? x->n - i0 : bs;
        const float *rows = x->input + i0 * x->per;
        for (int64_t j = 0; j < b; j++) owner[j] = i0 + j;
        if (want_grad) {
            s = _lp_x_grads(x, rows, b, owner, NULL, L->name, L->grad + i0 * L->per, L->act + i0 * L->per, NULL);
        } else {
            /* The run may still hold these rows' forward (the target pass). */
            if (!(x->fwd_rows == rows && x->fwd_b == b)) s = _lp_x_forward(x, rows, b, owner, NULL);
            const lp_tensor *v = s == LP_OK ? lp_run_value(x->run, L->name) : NULL;
            if (s == LP_OK && !v) s = lp_fail(LP_ERR_INTERNAL, "layer '%s' missing after the forward", L->name);
            if (s == LP_OK) s = lp_tensor_read(v, L->act + i0 * L->per, (size_t)(b * L->per) * sizeof(float));
        }
        if (s == LP_OK) _lp_x_progress(x, b);
    }
    free(owner);
    return s;
}

/* maps (n x hw, the layer-resolution CAMs) -> ReLU -> upsampled N x 1 x H x W. */
static lp_status finish(_lp_xctx *x, const cam_layer *L, float *maps, lp_tensor **attr) {
    int64_t shape[4] = {1, 1, x->h, x->w};
    LP_TRY(_lp_x_new_attr(attr, x->n, 4, shape));
    float *out = (*attr)->data;
    for (int64_t i = 0; i < x->n; i++) {
        float *mp = maps + i * L->hw;
        for (int64_t p = 0; p < L->hw; p++) mp[p] = mp[p] > 0 ? mp[p] : 0;
        _lp_resize_bilinear(mp, 1, (int)L->h, (int)L->w, out + i * (int64_t)x->h * x->w, x->h, x->w);
    }
    return LP_OK;
}

/* maps[i] = sum_k wts[i][k] act[i][k] (n x hw). */
static float *weighted_sum(_lp_xctx *x, const cam_layer *L, const double *wts) {
    float *maps = lp_malloc((size_t)(x->n * L->hw) * sizeof *maps);
    double *acc = lp_malloc((size_t)L->hw * sizeof *acc);
    if (maps && acc) {
        for (int64_t i = 0; i < x->n; i++) {
            memset(acc, 0, (size_t)L->hw * sizeof *acc);
            for (int64_t k = 0; k < L->c; k++) {
                const float *a = L->act + i * L->per + k * L->hw;
                double wk = wts[i * L->c + k];
                for (int64_t p = 0; p < L->hw; p++) acc[p] += wk * a[p];
            }
            for (int64_t p = 0; p < L->hw; p++) maps[i * L->hw + p] = (float)acc[p];
        }
    } else {
        free(maps);
        maps = NULL;
    }
    free(acc);
    return maps;
}

/* Channel weights from the layer's gradients and activations (one row, n x c out). */
typedef void (*weight_fn)(const cam_layer *L, const float *g, const float *a, double *w);

static void w_gradcam(const cam_layer *L, const float *g, const float *a, double *w) {
    (void)a;
    for (int64_t k = 0; k < L->c; k++) {
        double sum = 0;
        for (int64_t p = 0; p < L->hw; p++) sum += g[k * L->hw + p];
        w[k] = sum / (double)L->hw;
    }
}

/* pytorch-grad-cam's Grad-CAM++: alpha = g^2 / (2 g^2 + sum(A) g^3 + 1e-6) (0 where
 * g = 0), weight = sum relu(g) alpha — the paper's closed form with exp(score). */
static void w_gradcam_pp(const cam_layer *L, const float *g, const float *a, double *w) {
    for (int64_t k = 0; k < L->c; k++) {
        const float *gk = g + k * L->hw, *ak = a + k * L->hw;
        double sa = 0, sum = 0;
        for (int64_t p = 0; p < L->hw; p++) sa += ak[p];
        for (int64_t p = 0; p < L->hw; p++) {
            double gp = gk[p], g2 = gp * gp;
            if (gp <= 0) continue; /* relu(g) = 0 */
            sum += gp * g2 / (2 * g2 + sa * g2 * gp + 1e-6);
        }
        w[k] = sum;
    }
}

static void w_xgradcam(const cam_layer *L, const float *g, const float *a, double *w) {
    for (int64_t k = 0; k < L->c; k++) {
        const float *gk = g + k * L->hw, *ak = a + k * L->hw;
        double sa = 0, ga = 0;
        for (int64_t p = 0; p < L->hw; p++) {
            sa += ak[p];
            ga += (double)gk[p] * ak[p];
        }
        w[k] = ga / (sa + 1e-7);
    }
}

static lp_status grad_weighted(_lp_xctx *x, lp_tensor **attr, weight_fn fn) {
    cam_layer L;
    LP_TRY(pick_layer(x, &L));
    lp_status s = layer_pass(x, &L, 1);
    double *w = s == LP_OK ? lp_malloc((size_t)(x->n * L.c) * sizeof *w) : NULL;
    float *maps = NULL;
    if (s == LP_OK && !w) s = LP_ERR_OOM;
    for (int64_t i = 0; s == LP_OK && i < x->n; i++) fn(&L, L.grad + i * L.per, L.act + i * L.per, w + i * L.c);
    if (s == LP_OK && !(maps = weighted_sum(x, &L, w))) s = LP_ERR_OOM;
    if (s == LP_OK) s = finish(x, &L, maps, attr);
    free(w);
    free(maps);
    layer_free(&L);
    return s;
}

static lp_status m_gradcam(_lp_xctx *x, lp_tensor **attr) { return grad_weighted(x, attr, w_gradcam); }
static lp_status m_gradcam_pp(_lp_xctx *x, lp_tensor **attr) { return grad_weighted(x, attr, w_gradcam_pp); }
static lp_status m_xgradcam(_lp_xctx *x, lp_tensor **attr) { return grad_weighted(x, attr, w_xgradcam); }

static lp_status m_layercam(_lp_xctx *x, lp_tensor **attr) {
    cam_layer L;
    LP_TRY(pick_layer(x, &L));
    lp_status s = layer_pass(x, &L, 1);
    float *maps = s == LP_OK ? lp_calloc((size_t)(x->n * L.hw), sizeof *maps) : NULL;
    if (s == LP_OK && !maps) s = LP_ERR_OOM;
    for (int64_t i = 0; s == LP_OK && i < x->n; i++)
        for (int64_t p = 0; p < L.hw; p++) {
            double acc = 0;
            for (int64_t k = 0; k < L.c; k++) {
                int64_t o = i * L.per + k * L.hw + p;
                if (L.grad[o] > 0) acc += (double)L.grad[o] * L.act[o];
            }
            maps[i * L.hw + p] = (float)acc;
        }
    if (s == LP_OK) s = finish(x, &L, maps, attr);
    free(maps);
    layer_free(&L);
    return s;
}

/* ---- cam: the classifier's weights -------------------------------------------------- */
/* The only node reading value v (NULL when none or several). */
static const lp_node *sole_consumer(const lp_model *m, int v) {
    const lp_node *found = NULL;
    for (int i = 0; i < m->n_nodes; i++)
        for (int k = 0; k < m->nodes[i].n_in; k++)
            if (m->nodes[i].in[k] == v) {
                if (found && found != &m->nodes[i]) return NULL;
                found = &m->nodes[i];
            }
    return found;
}

/* Does node n average its N x C x h x w input over all of h x w? */
static int is_gap(const lp_node *n, const cam_layer *L) {
    if (!strcmp(n->op_type, "GlobalAveragePool")) return 1;
    if (!strcmp(n->op_type, "ReduceMean")) {
        int64_t ax[4];
        int na = lp_attr_ints(n, "axes", ax, 4);
        if (na != 2) return 0;
        for (int k = 0; k < 2; k++)
            if (ax[k] < 0) ax[k] += 4;
        return (ax[0] == 2 && ax[1] == 3) || (ax[0] == 3 && ax[1] == 2);
    }
    if (!strcmp(n->op_type, "AveragePool")) {
        int64_t ks[2], pads[4] = {0};
        if (lp_attr_ints(n, "kernel_shape", ks, 2) != 2) return 0;
        int np = lp_attr_ints(n, "pads", pads, 4);
        for (int k = 0; k < np; k++)
            if (pads[k]) return 0;
        return ks[0] == L->h && ks[1] == L->w;
    }
    return 0;
}

/* The classifier weights W (classes x c, scaled by Gemm's alpha) after layer -> global
 * average pool -> (Flatten / Reshape / Squeeze / Identity / Dropout) -> Gemm or MatMul. */
static lp_status classifier_weights(_lp_xctx *x, const cam_layer *L, float **W, int64_t *classes) {
    const lp_model *m = x->m;
    const char *why = NULL;
    const lp_node *n = sole_consumer(m, lp_model_find_value(m, L->name));
    if (!n || !is_gap(n, L)) {
        why = n ? n->op_type : "no single reader (a skip connection?)";
    } else {
        for (n = sole_consumer(m, n->out[0]); n && (!strcmp(n->op_type, "Flatten") || !strcmp(n->op_type, "Reshape") ||
                                                    !strcmp(n->op_type, "Squeeze") || !strcmp(n->op_type, "Identity") ||
                                                    !strcmp(n->op_type, "Dropout"));
             n = sole_consumer(m, n->out[0])) {
        }
        int gemm = n && !strcmp(n->op_type, "Gemm"), matmul = n && !strcmp(n->op_type, "MatMul");
        const lp_tensor *B = (gemm || matmul) && n->n_in >= 2 && n->in[1] >= 0 ? m->values[n->in[1]].init : NULL;
        if (!B || B->dtype != LP_F32 || B->ndim != 2) {
            why = n ? "a pooled node that is not a linear layer with constant weights"
                    : "a pooled value without a single reader";
        } else {
            int tb = gemm && lp_attr_int(n, "transB", 0);
            float alpha = gemm ? lp_attr_float(n, "alpha", 1.0f) : 1.0f;
            int64_t rows = B->shape[0], cols = B->shape[1];
            int64_t cin = tb ? cols : rows;
            *classes = tb ? rows : cols;
            if (cin != L->c || (gemm && lp_attr_int(n, "transA", 0))) {
                why = "a linear layer whose inputs are not the pooled channels";
            } else {
                const float *b = B->data;
                *W = lp_malloc((size_t)(*classes * L->c) * sizeof **W);
                if (!*W) return LP_ERR_OOM;
                for (int64_t c = 0; c < *classes; c++)
                    for (int64_t k = 0; k < L->c; k++) (*W)[c * L->c + k] = alpha * (tb ? b[c * cols + k] : b[k * cols + c]);
                return LP_OK;
            }
        }
    }
    return lp_fail(LP_ERR_UNSUPPORTED,
                   "cam needs the layer to feed global average pooling then a linear classifier (Zhou et al. 2016); "
                   "after layer '%s' the model has %s. Use gradcam, which needs no such head",
                   L->name, why);
}

static lp_status m_cam(_lp_xctx *x, lp_tensor **attr) {
    if (x->o->target.kind == LP_TARGET_NEURON || x->o->target.kind == LP_TARGET_CHANNEL)
        return lp_fail(LP_ERR_ARG, "cam explains a class of the classifier, not a neuron or channel target");
    cam_layer L;
    LP_TRY(pick_layer(x, &L));
    float *W = NULL, *maps = NULL;
    int64_t classes = 0;
    double *w = NULL;
    lp_status s = classifier_weights(x, &L, &W, &classes);
    if (s == LP_OK) s = layer_pass(x, &L, 0);
    if (s == LP_OK && !(w = lp_malloc((size_t)(x->n * L.c) * sizeof *w))) s = LP_ERR_OOM;
    for (int64_t i = 0; s == LP_OK && i < x->n; i++) {
        int64_t t = x->targets[i];
        if (t < 0 || t >= classes) {
            s = lp_fail(LP_ERR_ARG, "target class %lld is not one of the classifier's %lld", (long long)t,
                        (long long)classes);
            break;
        }
        for (int64_t k = 0; k < L.c; k++) w[i * L.c + k] = W[t * L.c + k];
    }
    if (s == LP_OK && !(maps = weighted_sum(x, &L, w))) s = LP_ERR_OOM;
    if (s == LP_OK) s = finish(x, &L, maps, attr);
    free(W);
    free(w);
    free(maps);
    layer_free(&L);
    return s;
}

/* ---- scorecam ----------------------------------------------------------------------- */
/* Bilinear resize with align_corners=True (torch's UpsamplingBilinear2d, which
 * pytorch-grad-cam's Score-CAM uses for its masks). */
static void resize_corners(const float *src, int h, int w, float *dst, int H, int W) {
    float sy = H > 1 ? (float)(h - 1) / (float)(H - 1) : 0, sx = W > 1 ? (float)(w - 1) / (float)(W - 1) : 0;
    for (int Y = 0; Y < H; Y++) {
        float fy = sy * (float)Y;
        int y0 = (int)fy, y1 = y0 + 1 < h ? y0 + 1 : h - 1;
        float ly = fy - (float)y0;
        for (int X = 0; X < W; X++) {
            float fx = sx * (float)X;
            int x0 = (int)fx, x1 = x0 + 1 < w ? x0 + 1 : w - 1;
            float lx = fx - (float)x0;
            dst[Y * W + X] = (1 - ly) * ((1 - lx) * src[y0 * w + x0] + lx * src[y0 * w + x1]) +
                             ly * ((1 - lx) * src[y1 * w + x0] + lx * src[y1 * w + x1]);
        }
    }
}

/* The target score of every (input, channel) row: input x the channel's upsampled,
 * [0,1]-normalised activation. Rows of several inputs share a pass. */
static lp_status m_scorecam(_lp_xctx *x, lp_tensor **attr) {
    cam_layer L;
    LP_TRY(pick_layer(x, &L));
    lp_status s = layer_pass(x, &L, 0);
    int64_t bs = _lp_x_batch(x), total = x->n * L.c, HW = (int64_t)x->h * x->w;
    float *rows = lp_malloc((size_t)(bs * x->per) * sizeof *rows);
    float *mask = lp_malloc((size_t)HW * sizeof *mask);
    float *sc = lp_malloc((size_t)total * sizeof *sc);
    int64_t *owner = lp_malloc((size_t)bs * sizeof *owner);
    double *w = lp_malloc((size_t)total * sizeof *w);
    float *maps = NULL;
    if (s == LP_OK && !(rows && mask && sc && owner && w)) s = LP_ERR_OOM;
    x->total += total;
    for (int64_t r0 = 0; s == LP_OK && r0 < total; r0 += bs) {
        int64_t b = total - r0 < bs ? total - r0 : bs;
        for (int64_t j = 0; j < b; j++) {
            int64_t i = (r0 + j) / L.c, k = (r0 + j) % L.c;
            owner[j] = i;
            resize_corners(L.act + i * L.per + k * L.hw, (int)L.h, (int)L.w, mask, x->h, x->w);
            float lo = mask[0], hi = mask[0];
            for (int64_t p = 1; p < HW; p++) {
                lo = mask[p] < lo ? mask[p] : lo;
                hi = mask[p] > hi ? mask[p] : hi;
            }
            float inv = 1.0f / (hi - lo + 1e-8f);
            for (int64_t p = 0; p < HW; p++) mask[p] = (mask[p] - lo) * inv;
            const float *in = x->input + i * x->per;
            float *row = rows + j * x->per;
            for (int c = 0; c < x->c; c++)
                for (int64_t p = 0; p < HW; p++) row[c * HW + p] = in[c * HW + p] * mask[p];
        }
        s = _lp_x_forward(x, rows, b, owner, sc + r0);
        if (s == LP_OK) _lp_x_progress(x, b);
    }
    for (int64_t i = 0; s == LP_OK && i < x->n; i++) { /* softmax over the channels */
        const float *si = sc + i * L.c;
        double mx = si[0], z = 0;
        for (int64_t k = 1; k < L.c; k++) mx = si[k] > mx ? si[k] : mx;
        for (int64_t k = 0; k < L.c; k++) z += w[i * L.c + k] = exp(si[k] - mx);
        for (int64_t k = 0; k < L.c; k++) w[i * L.c + k] /= z;
    }
    if (s == LP_OK && !(maps = weighted_sum(x, &L, w))) s = LP_ERR_OOM;
    if (s == LP_OK) s = finish(x, &L, maps, attr);
    free(rows);
    free(mask);
    free(sc);
    free(owner);
    free(w);
    free(maps);
    layer_free(&L);
    return s;
}

/* ---- ablationcam -------------------------------------------------------------------- */
/* Per input: one forward of `b` copies, then per batch of b channels the layer's value
 * is overwritten (row j: channel k0 + j zeroed) and only the network's tail re-runs. */
static lp_status m_ablationcam(_lp_xctx *x, lp_tensor **attr) {
    cam_layer L;
    LP_TRY(pick_layer(x, &L));
    lp_status s = layer_pass(x, &L, 0);
    int64_t b = _lp_x_batch(x);
    if (b > L.c) b = L.c;
    float *rows = lp_malloc((size_t)(b * x->per) * sizeof *rows);
    float *val = lp_malloc((size_t)(b * L.per) * sizeof *val);
    float *sc = lp_malloc((size_t)b * sizeof *sc);
    int64_t *owner = lp_malloc((size_t)b * sizeof *owner);
    double *w = lp_malloc((size_t)(x->n * L.c) * sizeof *w);
    float *maps = NULL;
    if (s == LP_OK && !(rows && val && sc && owner && w)) s = LP_ERR_OOM;
    lp_tensor v = {4, {b, L.c, L.h, L.w}, LP_F32, LP_DEVICE_CPU, val, (size_t)(b * L.per) * sizeof(float), 0};
    x->total += x->n * L.c;
    for (int64_t i = 0; s == LP_OK && i < x->n; i++) {
        const float *act = L.act + i * L.per;
        for (int64_t j = 0; j < b; j++) {
            memcpy(rows + j * x->per, x->input + i * x->per, (size_t)x->per * sizeof *rows);
            owner[j] = i;
        }
        s = _lp_x_forward(x, rows, b, owner, NULL);
        double orig = x->scores[i] != 0 ? x->scores[i] : 1.0;
        for (int64_t k0 = 0; s == LP_OK && k0 < L.c; k0 += b) {
            int64_t cnt = L.c - k0 < b ? L.c - k0 : b; /* rows past cnt repeat the last channel */
            for (int64_t j = 0; j < b; j++) {
                int64_t k = k0 + (j < cnt ? j : cnt - 1);
                memcpy(val + j * L.per, act, (size_t)L.per * sizeof *val);
                memset(val + j * L.per + k * L.hw, 0, (size_t)L.hw * sizeof *val);
            }
            s = _lp_run_forward_from(x->run, L.name, &v);
            x->fwd_rows = NULL; /* the run no longer holds a plain forward of any rows */
            if (s == LP_OK) {
                x->passes++;
                s = _lp_x_scores(x, b, owner, sc);
            }
            for (int64_t j = 0; s == LP_OK && j < cnt; j++) w[i * L.c + k0 + j] = (x->scores[i] - sc[j]) / orig;
            if (s == LP_OK) _lp_x_progress(x, cnt);
        }
    }
    if (s == LP_OK && !(maps = weighted_sum(x, &L, w))) s = LP_ERR_OOM;
    if (s == LP_OK) s = finish(x, &L, maps, attr);
    free(rows);
    free(val);
    free(sc);
    free(owner);
    free(w);
    free(maps);
    layer_free(&L);
    return s;
}

/* ---- eigencam ----------------------------------------------------------------------- */
/* The eigenvector of the largest eigenvalue of symmetric a (n x n, destroyed), by
 * cyclic Jacobi rotations (Numerical Recipes' form): robust for the small matrices
 * here, n = min(positions, channels). *lambda receives the eigenvalue. */
static lp_status top_eigvec(double *a, int64_t n, double *vec, double *lambda) {
    double *V = lp_calloc((size_t)(n * n), sizeof *V);
    if (!V) return LP_ERR_OOM;
    for (int64_t i = 0; i < n; i++) V[i * n + i] = 1;
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0, diag = 0;
        for (int64_t p = 0; p < n; p++) {
            diag += a[p * n + p] * a[p * n + p];
            for (int64_t q = p + 1; q < n; q++) off += a[p * n + q] * a[p * n + q];
        }
        if (off <= 1e-24 * diag) break; /* off-diagonals ~1e-12 of the diagonal: converged */
        for (int64_t p = 0; p < n; p++)
            for (int64_t q = p + 1; q < n; q++) {
                double apq = a[p * n + q];
                if (apq == 0) continue;
                double theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
                double t = (theta >= 0 ? 1 : -1) / (fabs(theta) + sqrt(theta * theta + 1));
                double c = 1 / sqrt(t * t + 1), s = t * c, tau = s / (1 + c);
                a[p * n + p] -= t * apq;
                a[q * n + q] += t * apq;
                a[p * n + q] = a[q * n + p] = 0;
                for (int64_t r = 0; r < n; r++) {
                    if (r == p || r == q) continue;
                    double g = a[r * n + p], h = a[r * n + q];
                    a[r * n + p] = a[p * n + r] = g - s * (h + g * tau);
                    a[r * n + q] = a[q * n + r] = h + s * (g - h * tau);
                }
                for (int64_t r = 0; r < n; r++) {
                    double g = V[r * n + p], h = V[r * n + q];
                    V[r * n + p] = g - s * (h + g * tau);
                    V[r * n + q] = h + s * (g - h * tau);
                }
            }
    }
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (a[i * n + i] > a[best * n + best]) best = i;
    for (int64_t i = 0; i < n; i++) vec[i] = V[i * n + best];
    *lambda = a[best * n + best];
    free(V);
    return LP_OK;
}

/* The projection of one input's positions (rows of X = act^T, channels centred over
 * positions) on X's first right singular vector, as pytorch-grad-cam's
 * get_2d_projection, into map (hw). */
static lp_status eigen_map(const cam_layer *L, const float *act, float *map) {
    int64_t hw = L->hw, c = L->c, n = hw <= c ? hw : c;
    double *X = lp_malloc((size_t)(hw * c) * sizeof *X); /* hw x c */
    double *M = lp_calloc((size_t)(n * n), sizeof *M);
    double *u = lp_malloc((size_t)n * sizeof *u), *proj = lp_malloc((size_t)hw * sizeof *proj);
    lp_status s = X && M && u && proj ? LP_OK : LP_ERR_OOM;
    for (int64_t k = 0; s == LP_OK && k < c; k++) {
        double mean = 0;
        for (int64_t p = 0; p < hw; p++) mean += act[k * hw + p];
        mean /= (double)hw;
        for (int64_t p = 0; p < hw; p++) {
            double v = act[k * hw + p];
            X[p * c + k] = v == v ? v - mean : 0; /* NaN -> 0, as the library */
        }
    }
    if (s == LP_OK) {
        /* Fewer positions than channels: eigenvector u of X X^T gives the projection
         * sigma u directly; else v of X^T X gives X v. */
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = i; j < n; j++) {
                double acc = 0;
                if (hw <= c)
                    for (int64_t k = 0; k < c; k++) acc += X[i * c + k] * X[j * c + k];
                else
                    for (int64_t p = 0; p < hw; p++) acc += X[p * c + i] * X[p * c + j];
                M[i * n + j] = M[j * n + i] = acc;
            }
        double lambda;
        s = top_eigvec(M, n, u, &lambda);
        if (s == LP_OK && hw <= c) {
            double sigma = sqrt(lambda > 0 ? lambda : 0);
            for (int64_t p = 0; p < hw; p++) proj[p] = sigma * u[p];
        } else if (s == LP_OK) {
            for (int64_t p = 0; p < hw; p++) {
                double acc = 0;
                for (int64_t k = 0; k < c; k++) acc += X[p * c + k] * u[k];
                proj[p] = acc;
            }
        }
    }
    if (s == LP_OK) { /* sign: positive correlation with each position's total (centred) activation */
        double dot = 0;
        for (int64_t p = 0; p < hw; p++) {
            double tot = 0;
            for (int64_t k = 0; k < c; k++) tot += X[p * c + k];
            dot += tot * proj[p];
        }
        for (int64_t p = 0; p < hw; p++) map[p] = (float)(dot < 0 ? -proj[p] : proj[p]);
    }
    free(X);
    free(M);
    free(u);
    free(proj);
    return s;
}

static lp_status m_eigencam(_lp_xctx *x, lp_tensor **attr) {
    cam_layer L;
    LP_TRY(pick_layer(x, &L));
    lp_status s = layer_pass(x, &L, 0);
    float *maps = s == LP_OK ? lp_malloc((size_t)(x->n * L.hw) * sizeof *maps) : NULL;
    if (s == LP_OK && !maps) s = LP_ERR_OOM;
    for (int64_t i = 0; s == LP_OK && i < x->n; i++) s = eigen_map(&L, L.act + i * L.per, maps + i * L.hw);
    if (s == LP_OK) s = finish(x, &L, maps, attr);
    free(maps);
    layer_free(&L);
    return s;
}

/* ---- guided_gradcam ----------------------------------------------------------------- */
static lp_status m_guided_gradcam(_lp_xctx *x, lp_tensor **attr) {
    lp_tensor *gc = NULL;
    LP_TRY(m_gradcam(x, &gc)); /* N x 1 x H x W, ReLU'd, upsampled */
    lp_rules rules;
    lp_status s = _lp_guided_rules(&rules, 0);
    if (s != LP_OK) {
        lp_tensor_free(gc);
        return s;
    }
    int64_t HW = (int64_t)x->h * x->w;
    s = _lp_x_input_grads(x, &rules, attr);
    for (int64_t i = 0; s == LP_OK && i < x->n; i++) {
        float *out = (float *)(*attr)->data + i * x->per;
        const float *g = (const float *)gc->data + i * HW;
        for (int c = 0; c < x->c; c++)
            for (int64_t p = 0; p < HW; p++) out[c * HW + p] *= g[p];
    }
    _lp_rules_free(&rules);
    lp_tensor_free(gc);
    return s;
}

const _lp_method _lp_methods_cam[] = {
    {"cam", "the classifier's class weights over the last feature map (Zhou et al. 2016); GAP -> linear models",
     m_cam, _LP_KEEP_SCORES},
    {"gradcam", "feature map weighted by mean gradients, ReLU (Selvaraju et al. 2017)", m_gradcam, _LP_KEEP_LEAN},
    {"gradcam_pp", "Grad-CAM++: positive gradients weighted per position (Chattopadhay et al. 2018)", m_gradcam_pp, _LP_KEEP_LEAN},
    {"xgradcam", "weights sum(gradient x activation) / sum(activation) (Fu et al. 2020)", m_xgradcam, _LP_KEEP_LEAN},
    {"layercam", "activation times positive gradient at each position (Jiang et al. 2021)", m_layercam, _LP_KEEP_LEAN},
    {"scorecam", "softmax of the scores of the input masked by each channel (Wang et al. 2020); one forward per channel",
     m_scorecam, _LP_KEEP_SCORES},
    {"ablationcam", "relative score drop when each channel is zeroed (Desai & Ramaswamy 2020); one tail pass per channel",
     m_ablationcam, _LP_KEEP_TAIL},
    {"eigencam", "first principal component of the feature map (Muhammad & Yeasin 2020); no target", m_eigencam, _LP_KEEP_SCORES},
    {"guided_gradcam", "guided backprop times the upsampled Grad-CAM (Selvaraju et al. 2017)", m_guided_gradcam, _LP_KEEP_LEAN_INPUT},
    {NULL, NULL, NULL, 0},
};
