/* passes.c — the batched passes every attribution method is written on: forward rows
 * (each row an input-shaped image standing for one of the inputs) and read each row's
 * target score; backward from that score alone (a one-hot seed per row, so rows do
 * not mix) to the input or to an inner value, with an optional rule table. */
#include "attrib_internal.h"

#include <stdlib.h>
#include <string.h>

int64_t _lp_x_batch(const _lp_xctx *x) { return x->o->batch > 0 ? x->o->batch : 16; }

void _lp_x_progress(_lp_xctx *x, int64_t rows) {
    x->done += rows;
    if (x->o->progress) x->o->progress(x->o->user, x->done, x->total);
}

const char *_lp_x_target_value(const _lp_xctx *x) {
    const lp_target *t = &x->o->target;
    if (t->kind == LP_TARGET_NEURON || t->kind == LP_TARGET_CHANNEL) return t->layer;
    return lp_model_output_name(x->m);
}

lp_status _lp_x_new_attr(lp_tensor **out, int64_t n, int ndim, const int64_t *row_shape) {
    int64_t shape[LP_MAX_DIMS];
    memcpy(shape, row_shape, (size_t)ndim * sizeof *shape);
    shape[0] = n;
    return lp_tensor_new(out, LP_DEVICE_CPU, LP_F32, ndim, shape);
}

lp_status _lp_x_value_size(_lp_xctx *x, const char *at, int64_t *per, int *ndim, int64_t *shape) {
    const lp_tensor *t = at ? lp_run_value(x->run, at) : NULL;
    if (!at) {
        *per = x->per;
        *ndim = x->ndim;
        memcpy(shape, x->shape, sizeof x->shape);
        shape[0] = 1;
        return LP_OK;
    }
    if (!t) return lp_fail(LP_ERR_ARG, "%s: no value named '%s' (see `loupe info`)", x->m->path ? x->m->path : "model", at);
    *ndim = t->ndim;
    memcpy(shape, t->shape, sizeof t->shape);
    *per = lp_tensor_numel(t) / (t->shape[0] ? t->shape[0] : 1);
    shape[0] = 1;
    return LP_OK;
}

/* Offset of the target unit within one row of the target value (and how many units
 * a channel target averages). */
static lp_status target_unit(_lp_xctx *x, const lp_tensor *v, int64_t row, int64_t *off, int64_t *count) {
    const lp_target *t = &x->o->target;
    int64_t per = lp_tensor_numel(v) / v->shape[0];
    *count = 1;
    if (t->kind == LP_TARGET_NEURON || t->kind == LP_TARGET_CHANNEL) {
        int64_t c = v->ndim >= 2 ? v->shape[1] : per;
        int64_t hw = c ? per / c : 0;
        if (t->channel < 0 || t->channel >= c)
            return lp_fail(LP_ERR_ARG, "target channel %lld is out of range: layer '%s' has %lld channels",
                           (long long)t->channel, t->layer, (long long)c);
        if (t->kind == LP_TARGET_CHANNEL) {
            *off = t->channel * hw;
            *count = hw;
            return LP_OK;
        }
        if (v->ndim == 4) {
            if (t->y < 0 || t->y >= v->shape[2] || t->x < 0 || t->x >= v->shape[3])
                return lp_fail(LP_ERR_ARG, "target position (%lld, %lld) is outside layer '%s' (%lld x %lld)",
                               (long long)t->y, (long long)t->x, t->layer, (long long)v->shape[2],
                               (long long)v->shape[3]);
            *off = t->channel * hw + t->y * v->shape[3] + t->x;
        } else {
            *off = t->channel * hw;
        }
        return LP_OK;
    }
    (void)row;
    return LP_OK;
}

lp_status _lp_x_forward(_lp_xctx *x, const float *rows, int64_t b, const int64_t *owner, float *scores) {
    int64_t shape[LP_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[0] = b;
    lp_tensor in = {x->ndim, {0}, LP_F32, LP_DEVICE_CPU, (void *)rows, (size_t)(b * x->per) * sizeof(float), 0};
    memcpy(in.shape, shape, sizeof shape);
    const char *tv = _lp_x_target_value(x);
    if (tv != lp_model_output_name(x->m)) LP_TRY(lp_run_capture(x->run, tv));
    x->fwd_rows = NULL;
    LP_TRY(lp_run_forward(x->run, &in));
    x->passes++;
    x->fwd_rows = rows;
    x->fwd_b = b;
    return _lp_x_scores(x, b, owner, scores);
}

lp_status _lp_x_scores(_lp_xctx *x, int64_t b, const int64_t *owner, float *scores) {
    const char *tv = _lp_x_target_value(x);
    const lp_tensor *v = lp_run_value(x->run, tv);
    if (!v) return lp_fail(LP_ERR_INTERNAL, "target value '%s' missing after forward", tv);
    int64_t per = lp_tensor_numel(v) / b;
    float *host = lp_malloc((size_t)lp_tensor_numel(v) * sizeof *host);
    if (!host) return LP_ERR_OOM;
    lp_status s = lp_tensor_read(v, host, (size_t)lp_tensor_numel(v) * sizeof *host);
    for (int64_t i = 0; s == LP_OK && i < b; i++) {
        int64_t *tg = &x->targets[owner[i]];
        const float *row = host + i * per;
        const lp_target *t = &x->o->target;
        if (*tg == -2) { /* first sight of this input: resolve its target */
            if (t->kind == LP_TARGET_TOP1) {
                int64_t best = 0;
                for (int64_t k = 1; k < per; k++)
                    if (row[k] > row[best]) best = k;
                *tg = best;
            } else if (t->kind == LP_TARGET_CLASS) {
                if (t->cls < 0 || t->cls >= per)
                    s = lp_fail(LP_ERR_ARG, "target class %lld is out of range: the model has %lld classes",
                                (long long)t->cls, (long long)per);
                *tg = t->cls;
            } else {
                *tg = -1;
            }
        }
        if (s != LP_OK || !scores) continue;
        int64_t off = *tg, cnt = 1;
        if (*tg < 0) s = target_unit(x, v, i, &off, &cnt);
        if (s != LP_OK) continue;
        double acc = 0;
        for (int64_t k = 0; k < cnt; k++) acc += row[off + k];
        scores[i] = (float)(acc / (double)cnt);
    }
    free(host);
    return s;
}

lp_status _lp_x_backward(_lp_xctx *x, int64_t b, const int64_t *owner, const lp_rules *rules, const char *at,
                         float *grad, float *act) {
    const char *tv = _lp_x_target_value(x);
    const lp_tensor *v = lp_run_value(x->run, tv);
    if (!v) return lp_fail(LP_ERR_INTERNAL, "backward before forward");
    int64_t per = lp_tensor_numel(v) / b;
    lp_tensor *seed;
    LP_TRY(lp_tensor_new(&seed, LP_DEVICE_CPU, LP_F32, v->ndim, v->shape));
    float *sd = seed->data;
    lp_status s = LP_OK;
    for (int64_t i = 0; s == LP_OK && i < b; i++) {
        int64_t off = x->targets[owner[i]], cnt = 1;
        if (off < 0) s = target_unit(x, v, i, &off, &cnt);
        for (int64_t k = 0; s == LP_OK && k < cnt; k++) sd[i * per + off + k] = 1.0f / (float)cnt;
    }
    if (s == LP_OK) {
        lp_backward_opts bo = {tv, seed, 0, rules, at}; /* below `at` nothing is read */
        s = lp_run_backward(x->run, &bo);
    }
    lp_tensor_free(seed);
    if (s != LP_OK) return s;
    const char *name = at ? at : lp_model_input_name(x->m);
    const lp_tensor *g = lp_run_grad(x->run, name);
    if (!g) {
        /* The value does not depend on the input along the path to the target, or it is
         * after the target: its gradient is zero by definition only in the first case. */
        return lp_fail(LP_ERR_ARG, "no gradient reaches '%s' from the target '%s' (is it after the target?)", name,
                       tv);
    }
    if (grad) LP_TRY(lp_tensor_read(g, grad, g->nbytes));
    if (act) {
        const lp_tensor *a = at ? lp_run_value(x->run, at) : NULL;
        if (a) LP_TRY(lp_tensor_read(a, act, a->nbytes));
        else memcpy(act, x->fwd_rows, (size_t)(b * x->per) * sizeof *act);
    }
    x->passes++;
    return LP_OK;
}

lp_status _lp_x_grads(_lp_xctx *x, const float *rows, int64_t b, const int64_t *owner, const lp_rules *rules,
                      const char *at, float *grad, float *act, float *scores) {
    if (at) LP_TRY(lp_run_capture(x->run, at));
    /* The run may already hold the forward of exactly these rows: only rows of the
     * caller's input qualify (they never change; a scratch buffer may, at the same address). */
    int of_input = rows >= x->input && rows < x->input + x->n * x->per;
    if (!(of_input && x->fwd_rows == rows && x->fwd_b == b && !scores && lp_run_output(x->run)))
        LP_TRY(_lp_x_forward(x, rows, b, owner, scores));
    return _lp_x_backward(x, b, owner, rules, at, grad, act);
}

lp_status _lp_rules_new(lp_rules *r, void *user) {
    r->n = lp_op_count();
    r->user = user;
    r->plain_reads = r->packed = r->graph_safe = 0;
    r->fn = lp_calloc((size_t)r->n, sizeof *r->fn);
    return r->fn ? LP_OK : LP_ERR_OOM;
}

void _lp_rules_free(lp_rules *r) {
    free(r->fn);
    r->fn = NULL;
}

void _lp_rules_set(lp_rules *r, const char *type, lp_backward_fn fn) {
    int i = lp_op_index(lp_op_find(type));
    if (i >= 0 && i < r->n) r->fn[i] = fn;
}

lp_status _lp_x_input_grads(_lp_xctx *x, const lp_rules *rules, lp_tensor **attr) {
    int64_t bs = _lp_x_batch(x);
    int64_t *owner = lp_malloc((size_t)bs * sizeof *owner);
    if (!owner) return LP_ERR_OOM;
    lp_status s = _lp_x_new_attr(attr, x->n, x->ndim, x->shape);
    x->total += x->n;
    for (int64_t i0 = 0; s == LP_OK && i0 < x->n; i0 += bs) {
        int64_t b = x->n - i0 < bs ? x->n - i0 : bs;
        for (int64_t j = 0; j < b; j++) owner[j] = i0 + j;
        s = _lp_x_grads(x, x->input + i0 * x->per, b, owner, rules, NULL, (float *)(*attr)->data + i0 * x->per, NULL,
                        NULL);
        if (s == LP_OK) _lp_x_progress(x, b);
    }
    free(owner);
    return s;
}
