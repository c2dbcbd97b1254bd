/* lrp_deeplift.c — DeepLIFT's rescale rule (Shrikumar et al. 2017) as Captum 0.7's
 * DeepLift computes it: the inputs and their baselines go through the model as one
 * batch [inputs; baselines] (so every rule sees x and x_ref side by side in its
 * node's tensors, with no state to keep), the target's one-hot seeds both halves,
 * and the backward replaces the gradient of
 *  - elementwise nonlinearities by the multiplier dout (y - y_ref) / (x - x_ref),
 *    falling back to the gradient where |x - x_ref| <= 1e-10 (Captum's eps);
 *  - MaxPool by Captum's maxpool rule (the output differences routed to the argmax of
 *    the input and of the reference, over x - x_ref);
 * linear ops keep their gradient. The attribution is (x - baseline) x multiplier. */
#include "lrp_util.h"

#include <stdlib.h>
#include <string.h>

#define DL_EPS 1e-10f /* Captum's DeepLift eps */

/* m = [|d| > eps], t = 1 - m, and d becomes d m + t (safe to divide by). tmp: cnt floats. */
static lp_status dl_mask(const lp_backend *be, float *d, const float *ones, float *m, float *t, int64_t cnt) {
    LP_TRY(_lp_un(be, LP_UN_ABS, 0, 0, d, t, cnt));
    LP_TRY(_lp_un(be, LP_UN_SCALE, 1.0f, -DL_EPS, t, t, cnt));
    LP_TRY(_lp_step(be, t, ones, m, cnt));
    LP_TRY(_lp_un(be, LP_UN_SCALE, -1.0f, 1.0f, m, t, cnt));
    LP_TRY(_lp_ew(be, LP_BIN_MUL, d, m, d, cnt));
    return be->axpy(cnt, 1.0f, t, d);
}

/* Row halves: the first half of a value's rows are the inputs, the second their references. */
static lp_status halves(const lp_node *n, const lp_tensor *in, const lp_tensor *out, int64_t *hx, int64_t *hy) {
    int64_t nx = lp_tensor_numel(in), ny = lp_tensor_numel(out);
    if (in->ndim < 1 || in->shape[0] % 2 || out->ndim < 1 || out->shape[0] != in->shape[0])
        return lp_fail(LP_ERR_SHAPE, "deeplift needs %s to keep the batch dimension first", n->op_type);
    *hx = nx / 2;
    *hy = ny / 2;
    return LP_OK;
}

static lp_status rescale_rule(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                              lp_tensor *const *dout, lp_tensor *const *din) {
    if (!din[0] || !dout[0]) return LP_OK;
    const lp_backend *be = c->be;
    int64_t h = 0, hy = 0;
    LP_TRY(halves(n, in[0], out[0], &h, &hy));
    if (hy != h) return lp_fail(LP_ERR_SHAPE, "deeplift: %s is not elementwise", n->op_type);
    int64_t tot = 2 * h;
    const float *x = in[0]->data, *y = out[0]->data, *g = dout[0]->data;
    _lp_scratch sc = {be, {0}, 0};
    float *ones = NULL, *d = NULL, *e = NULL, *m = NULL, *t = NULL, *gr = NULL;
    float *dst[LP_MAX_IO] = {0};
    lp_status s = _lp_scratch_get(&sc, tot, 0, &ones);
#define T(call) \
    if (s == LP_OK) s = (call)
    T(_lp_scratch_get(&sc, tot, 0, &d));
    T(_lp_scratch_get(&sc, tot, 0, &e));
    T(_lp_scratch_get(&sc, tot, 0, &m));
    T(_lp_scratch_get(&sc, tot, 0, &t));
    T(_lp_scratch_get(&sc, tot, 1, &gr));
    T(be->fill(tot, 1.0f, ones));
    /* delta in / delta out, the same for both halves (Captum concatenates them twice) */
    T(_lp_ew(be, LP_BIN_SUB, x, x + h, d, h));
    T(be->copy(d + h, d, (size_t)h * sizeof *d));
    T(_lp_ew(be, LP_BIN_SUB, y, y + h, e, h));
    T(be->copy(e + h, e, (size_t)h * sizeof *e));
    T(dl_mask(be, d, ones, m, t, tot));
    T(_lp_ew(be, LP_BIN_DIV, e, d, e, tot));
    T(_lp_ew(be, LP_BIN_MUL, e, m, e, tot));
    T(_lp_ew(be, LP_BIN_MUL, e, g, e, tot));
    T(be->axpy(tot, 1.0f, e, din[0]->data));
    /* where the input did not move: the gradient */
    dst[0] = gr;
    T(_lp_node_bwd(c, n, in, out, dout[0]->data, dst));
    T(_lp_ew(be, LP_BIN_MUL, gr, t, gr, tot));
    T(be->axpy(tot, 1.0f, gr, din[0]->data));
    _lp_scratch_free(&sc);
    return s;
}

/* Captum's maxpool rule: with y = pool(x), y_ref = pool(x_ref) and ymax = max(y, y_ref),
 * U = unpool_x(dout (ymax - y_ref)) + unpool_ref(dout_ref (y - ymax)), and the
 * multiplier of both halves is U / (x - x_ref), or the gradient where x = x_ref. */
static lp_status maxpool_rule(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                              lp_tensor *const *dout, lp_tensor *const *din) {
    if (!din[0] || !dout[0]) return LP_OK;
    const lp_backend *be = c->be;
    int64_t hx = 0, hy = 0;
    LP_TRY(halves(n, in[0], out[0], &hx, &hy));
    const float *x = in[0]->data, *y = out[0]->data, *g = dout[0]->data;
    _lp_scratch sc = {be, {0}, 0};
    float *ones = NULL, *a = NULL, *b = NULL, *u = NULL, *d = NULL, *m = NULL, *t = NULL, *gr = NULL;
    lp_status s = _lp_scratch_get(&sc, hx, 0, &ones);
    T(_lp_scratch_get(&sc, hy, 0, &a));
    T(_lp_scratch_get(&sc, hy, 0, &b));
    T(_lp_scratch_get(&sc, hx, 1, &u));
    T(_lp_scratch_get(&sc, hx, 0, &d));
    T(_lp_scratch_get(&sc, hx, 0, &m));
    T(_lp_scratch_get(&sc, hx, 0, &t));
    T(_lp_scratch_get(&sc, 2 * hx, 1, &gr));
    T(be->fill(hx, 1.0f, ones));
    /* ymax - y_ref = relu(y - y_ref); y - ymax = -relu(y_ref - y) */
    T(_lp_ew(be, LP_BIN_SUB, y, y + hy, a, hy));
    T(_lp_un(be, LP_UN_RELU, 0, 0, a, a, hy));
    T(_lp_ew(be, LP_BIN_MUL, a, g, a, hy));
    T(_lp_ew(be, LP_BIN_SUB, y + hy, y, b, hy));
    T(_lp_un(be, LP_UN_RELU, 0, 0, b, b, hy));
    T(_lp_ew(be, LP_BIN_MUL, b, g + hy, b, hy));
    T(be->scal(hy, -1.0f, b));
    /* unpool each half through its own argmax: the op's backward on half-batch views */
    for (int k = 0; k < 2 && s == LP_OK; k++) {
        lp_tensor vi = _lp_view(in[0], (float *)x + k * hx), vo = _lp_view(out[0], (float *)y + k * hy);
        vi.shape[0] /= 2;
        vi.nbytes /= 2;
        vo.shape[0] /= 2;
        vo.nbytes /= 2;
        lp_tensor *vin[LP_MAX_IO], *vout[LP_MAX_IO];
        for (int j = 0; j < n->n_in; j++) vin[j] = in[j];
        for (int j = 0; j < n->n_out; j++) vout[j] = out[j];
        vin[0] = &vi;
        vout[0] = &vo;
        float *dst[LP_MAX_IO] = {u};
        s = _lp_node_bwd(c, n, vin, vout, k ? b : a, dst);
    }
    T(_lp_ew(be, LP_BIN_SUB, x, x + hx, d, hx));
    T(dl_mask(be, d, ones, m, t, hx));
    T(_lp_ew(be, LP_BIN_DIV, u, d, u, hx));
    T(_lp_ew(be, LP_BIN_MUL, u, m, u, hx));
    /* the gradient of both halves where x = x_ref, U / delta elsewhere */
    float *dst[LP_MAX_IO] = {gr};
    T(_lp_node_bwd(c, n, in, out, (float *)g, dst));
    for (int k = 0; k < 2; k++) {
        T(_lp_ew(be, LP_BIN_MUL, gr + k * hx, t, gr + k * hx, hx));
        T(be->axpy(hx, 1.0f, u, gr + k * hx));
    }
    T(be->axpy(2 * hx, 1.0f, gr, din[0]->data));
#undef T
    _lp_scratch_free(&sc);
    return s;
}

static const char *const rescale_ops[] = {"Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid",
                                          "HardSwish", "Gelu"};

lp_status _lp_m_deeplift(_lp_xctx *x, lp_tensor **attr) {
    if (x->o->layer)
        return lp_fail(LP_ERR_ARG, "deeplift attributes at the input only; --layer works with saliency, "
                                   "input_x_gradient, smoothgrad, smoothgrad_sq, vargrad and the CAM methods");
    int64_t bs = _lp_x_batch(x) / 2; /* inputs per pass: each brings its baseline */
    if (bs < 1) bs = 1;
    lp_rules r = {0};
    float *base = lp_malloc((size_t)(x->n * x->per) * sizeof *base);
    float *rows = lp_malloc((size_t)(2 * bs * x->per) * sizeof *rows);
    float *grad = lp_malloc((size_t)(2 * bs * x->per) * sizeof *grad);
    int64_t *owner = lp_malloc((size_t)(2 * bs) * sizeof *owner);
    lp_status s = base && rows && grad && owner ? LP_OK : LP_ERR_OOM;
    for (int64_t i = 0; s == LP_OK && i < x->n; i++) s = _lp_x_baseline(x, i, base + i * x->per);
    if (s == LP_OK) s = _lp_rules_new(&r, NULL);
    if (s == LP_OK) {
        for (size_t i = 0; i < sizeof rescale_ops / sizeof rescale_ops[0]; i++)
            _lp_rules_set(&r, rescale_ops[i], rescale_rule);
        _lp_rules_set(&r, "MaxPool", maxpool_rule);
        s = _lp_x_new_attr(attr, x->n, x->ndim, x->shape);
    }
    x->total += x->n;
    for (int64_t k0 = 0; s == LP_OK && k0 < x->n; k0 += bs) {
        int64_t b = x->n - k0 < bs ? x->n - k0 : bs;
        const float *in = x->input + k0 * x->per, *bl = base + k0 * x->per;
        memcpy(rows, in, (size_t)(b * x->per) * sizeof *rows);
        memcpy(rows + b * x->per, bl, (size_t)(b * x->per) * sizeof *rows);
        for (int64_t j = 0; j < b; j++) owner[j] = owner[b + j] = k0 + j;
        s = _lp_x_grads(x, rows, 2 * b, owner, &r, NULL, grad, NULL, NULL);
        float *o = (float *)(*attr)->data + k0 * x->per;
        for (int64_t p = 0; s == LP_OK && p < b * x->per; p++) o[p] = (in[p] - bl[p]) * grad[p];
        if (s == LP_OK) _lp_x_progress(x, b);
    }
    if (r.fn) _lp_rules_free(&r);
    free(base);
    free(rows);
    free(grad);
    free(owner);
    return s;
}
