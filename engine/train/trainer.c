/* trainer.c — minibatch SGD with momentum over an IDX dataset, and evaluation. Each
 * step runs the ordinary executor (forward, then backward seeded with the loss
 * gradient and weight gradients on), so training exercises the same code paths the
 * visualisation methods use. Weights are the model's host initializers, updated in
 * place: the executor reads (or re-uploads) them at every forward. */
#include "internal.h"
#include "../rng.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EVAL_BATCH 256

/* Copy rows idx[0..n) of `src` (N x ...) into the first n rows of `dst`. */
static void gather_rows(const lp_tensor *src, const int64_t *idx, int64_t n, float *dst) {
    int64_t row = lp_tensor_numel(src) / src->shape[0];
    const float *s = src->data;
    for (int64_t i = 0; i < n; i++) memcpy(dst + i * row, s + idx[i] * row, (size_t)row * sizeof(float));
}

/* Host logits of the run's output (N x K), into *host (reallocated when the shape changes). */
static lp_status output_logits(lp_run *r, lp_tensor **host) {
    const lp_tensor *y = lp_run_output(r);
    if (!y) return lp_fail(LP_ERR_INTERNAL, "the run has no output after forward");
    if (y->ndim != 2 || y->dtype != LP_F32) {
        char a[96];
        return lp_fail(LP_ERR_SHAPE, "training needs N x K logits as the model output, got %s",
                       lp_shape_str(y->ndim, y->shape, a, sizeof a));
    }
    if (*host && ((*host)->shape[0] != y->shape[0] || (*host)->shape[1] != y->shape[1])) {
        lp_tensor_free(*host);
        *host = NULL;
    }
    if (!*host) LP_TRY(lp_tensor_new(host, LP_DEVICE_CPU, LP_F32, 2, y->shape));
    return lp_tensor_read(y, (*host)->data, (*host)->nbytes);
}

/* The model input must be N x C x H x W matching the images' C x H x W. */
static lp_status check_images(const lp_model *m, const lp_tensor *images, const char *what) {
    int nd;
    int64_t sh[LP_MAX_DIMS];
    char a[96], b[96];
    LP_TRY(lp_model_input_shape(m, &nd, sh));
    int ok = nd == images->ndim;
    for (int i = 1; ok && i < nd; i++) ok = sh[i] == images->shape[i];
    if (!ok)
        return lp_fail(LP_ERR_SHAPE, "%s are %s but the model expects %s (batch may differ)", what,
                       lp_shape_str(images->ndim, images->shape, a, sizeof a), lp_shape_str(nd, sh, b, sizeof b));
    return LP_OK;
}

static lp_status evaluate_run(lp_run *r, const lp_tensor *images, const lp_tensor *labels, float *accuracy,
                              float *loss) {
    int64_t n = images->shape[0], row = lp_tensor_numel(images) / n;
    const int64_t *lab = labels->data;
    lp_tensor *logits = NULL;
    lp_status s = LP_OK;
    int64_t correct = 0;
    double total = 0;
    for (int64_t b0 = 0; b0 < n && s == LP_OK; b0 += EVAL_BATCH) {
        int64_t bn = n - b0 < EVAL_BATCH ? n - b0 : EVAL_BATCH;
        lp_shape bs = lp_tensor_shape(images);
        bs.d[0] = bn;
        lp_tensor view = lp_tensor_view(LP_DEVICE_CPU, LP_F32, &bs, (float *)images->data + b0 * row);
        s = lp_run_forward(r, &view);
        if (s == LP_OK) s = output_logits(r, &logits);
        float l = 0;
        if (s == LP_OK) s = lp_softmax_xent(logits, lab + b0, &l, NULL);
        if (s != LP_OK) break;
        total += (double)l * (double)bn;
        int64_t k = logits->shape[1];
        const float *x = logits->data;
        for (int64_t i = 0; i < bn; i++) {
            int64_t best = 0;
            for (int64_t j = 1; j < k; j++)
                if (x[i * k + j] > x[i * k + best]) best = j;
            correct += best == lab[b0 + i];
        }
    }
    lp_tensor_free(logits);
    if (s != LP_OK) return s;
    if (accuracy) *accuracy = (float)((double)correct / (double)n);
    if (loss) *loss = (float)(total / (double)n);
    return LP_OK;
}

static lp_status check_pair(const lp_tensor *images, const lp_tensor *labels, const char *what) {
    if (images->dtype != LP_F32 || images->device != LP_DEVICE_CPU || images->ndim < 2 || images->shape[0] < 1)
        return lp_fail(LP_ERR_ARG, "%s: images must be a non-empty host f32 N x ... tensor", what);
    if (labels->dtype != LP_I64 || labels->ndim != 1 || labels->shape[0] != images->shape[0])
        return lp_fail(LP_ERR_SHAPE, "%s: %lld images but %lld labels", what, (long long)images->shape[0],
                       (long long)(labels->ndim >= 1 ? labels->shape[0] : 0));
    return LP_OK;
}

lp_status lp_evaluate(lp_model *m, lp_device dev, const lp_tensor *images, const lp_tensor *labels, float *accuracy,
                      float *loss) {
    LP_TRY(check_pair(images, labels, "evaluate"));
    LP_TRY(check_images(m, images, "evaluation images"));
    lp_run *r;
    LP_TRY(lp_run_new(m, dev, &r));
    lp_status s = evaluate_run(r, images, labels, accuracy, loss);
    lp_run_free(r);
    return s;
}

/* Everything one training call holds, freed in one place. */
typedef struct trainer {
    lp_tensor *x, *y, *tx, *ty;  /* train and test sets */
    lp_tensor *batch, *logits, *dlogits;
    int64_t *order;
    int n_params;
    int *param_ids;
    float **mom;                 /* momentum buffers, one per parameter, kept across steps */
    float *grad_host;            /* a host copy of a device gradient */
    lp_run *run;
} trainer;

static void trainer_free(trainer *t, int n_params) {
    lp_tensor_free(t->x);
    lp_tensor_free(t->y);
    lp_tensor_free(t->tx);
    lp_tensor_free(t->ty);
    lp_tensor_free(t->batch);
    lp_tensor_free(t->logits);
    lp_tensor_free(t->dlogits);
    free(t->order);
    free(t->param_ids);
    for (int i = 0; t->mom && i < n_params; i++) free(t->mom[i]);
    free(t->mom);
    free(t->grad_host);
    lp_run_free(t->run);
}

static lp_status load_set(const char *images, const char *labels, lp_tensor **x, lp_tensor **y) {
    LP_TRY(lp_idx_load_images(images, x));
    LP_TRY(lp_idx_load_labels(labels, y));
    if ((*x)->shape[0] != (*y)->shape[0])
        return lp_fail(LP_ERR_SHAPE, "%s has %lld images but %s has %lld labels", images, (long long)(*x)->shape[0],
                       labels, (long long)(*y)->shape[0]);
    return LP_OK;
}

/* SGD-momentum update of every parameter from the run's weight gradients. */
static lp_status sgd_step(trainer *t, lp_model *m, const lp_train_opts *o) {
    const lp_backend *cpu = lp_backend_cpu();
    for (int i = 0; i < t->n_params; i++) {
        lp_value *v = &m->values[t->param_ids[i]];
        const lp_tensor *g = lp_run_grad(t->run, v->name);
        if (!g) continue; /* a parameter the output does not depend on */
        int64_t n = lp_tensor_numel(v->init);
        if (lp_tensor_numel(g) != n) return lp_fail(LP_ERR_INTERNAL, "gradient of '%s' has the wrong size", v->name);
        const float *gd = g->data;
        if (g->device != LP_DEVICE_CPU) {
            LP_TRY(lp_tensor_read(g, t->grad_host, (size_t)n * sizeof(float)));
            gd = t->grad_host;
        }
        LP_TRY(cpu->sgd_momentum(n, o->lr, o->momentum, o->weight_decay, v->init->data, gd, t->mom[i]));
    }
    m->weights_gen++; /* device copies of the weights are stale now */
    return LP_OK;
}

static lp_status train_epochs(trainer *t, lp_model *m, const lp_train_opts *o, lp_train_result *res) {
    int epochs = o->epochs > 0 ? o->epochs : 5, bsz = o->batch > 0 ? o->batch : 64;
    if (!(o->lr > 0) || o->momentum < 0 || o->momentum >= 1 || o->weight_decay < 0)
        return lp_fail(LP_ERR_ARG, "training: need lr > 0, 0 <= momentum < 1, weight decay >= 0 (got %g, %g, %g)",
                       o->lr, o->momentum, o->weight_decay);
    if (!o->images || !o->labels) return lp_fail(LP_ERR_ARG, "training: no training images/labels given");
    LP_TRY(load_set(o->images, o->labels, &t->x, &t->y));
    LP_TRY(check_images(m, t->x, o->images));
    if (o->test_images && o->test_labels) {
        LP_TRY(load_set(o->test_images, o->test_labels, &t->tx, &t->ty));
        LP_TRY(check_images(m, t->tx, o->test_images));
    }
    int64_t n = t->x->shape[0];
    if (o->limit > 0 && o->limit < n) n = o->limit;

    /* Parameters and their momentum buffers. */
    t->param_ids = lp_calloc((size_t)m->n_values + 1, sizeof *t->param_ids);
    t->mom = lp_calloc((size_t)m->n_values + 1, sizeof *t->mom);
    if (!t->param_ids || !t->mom) return LP_ERR_OOM;
    int64_t max_param = 1;
    for (int v = 0; v < m->n_values; v++) {
        if (!m->values[v].is_param || !m->values[v].init) continue;
        int64_t pn = lp_tensor_numel(m->values[v].init);
        t->mom[t->n_params] = lp_calloc((size_t)pn, sizeof(float));
        if (!t->mom[t->n_params]) return LP_ERR_OOM;
        t->param_ids[t->n_params++] = v;
        if (pn > max_param) max_param = pn;
    }
    if (!t->n_params) return lp_fail(LP_ERR_ARG, "training: the model has no trainable weights");
    t->grad_host = lp_malloc((size_t)max_param * sizeof(float));
    t->order = lp_malloc((size_t)n * sizeof *t->order);
    if (!t->grad_host || !t->order) return LP_ERR_OOM;
    for (int64_t i = 0; i < n; i++) t->order[i] = i;
    LP_TRY(lp_run_new(m, o->device, &t->run));

    lp_rng rng;
    lp_rng_seed(&rng, o->seed);
    int64_t *blabels = lp_malloc((size_t)bsz * sizeof *blabels);
    if (!blabels) return LP_ERR_OOM;
    lp_status s = LP_OK;
    double t0 = lp_now_s();
    for (int ep = 0; ep < epochs && s == LP_OK; ep++) {
        lp_rng_shuffle(&rng, t->order, n);
        double sum = 0;
        for (int64_t b0 = 0; b0 < n && s == LP_OK; b0 += bsz) {
            int64_t bn = n - b0 < bsz ? n - b0 : bsz;
            if (!t->batch || t->batch->shape[0] != bn) {
                lp_tensor_free(t->batch);
                t->batch = NULL;
                lp_shape bs = lp_tensor_shape(t->x);
                bs.d[0] = bn;
                s = lp_tensor_new_shape(&t->batch, LP_DEVICE_CPU, LP_F32, &bs);
                if (s != LP_OK) break;
            }
            gather_rows(t->x, t->order + b0, bn, t->batch->data);
            for (int64_t i = 0; i < bn; i++) blabels[i] = ((const int64_t *)t->y->data)[t->order[b0 + i]];
            s = lp_run_forward(t->run, t->batch);
            if (s == LP_OK) s = output_logits(t->run, &t->logits);
            if (s == LP_OK && (!t->dlogits || t->dlogits->shape[0] != bn)) {
                lp_tensor_free(t->dlogits);
                t->dlogits = NULL;
                s = lp_tensor_new(&t->dlogits, LP_DEVICE_CPU, LP_F32, 2, t->logits->shape);
            }
            float loss = 0;
            if (s == LP_OK) s = lp_softmax_xent(t->logits, blabels, &loss, t->dlogits);
            lp_backward_opts bo = {0};
            bo.seed = t->dlogits;
            bo.weight_grads = 1;
            if (s == LP_OK) s = lp_run_backward(t->run, &bo);
            if (s == LP_OK) s = sgd_step(t, m, o);
            if (s != LP_OK) break;
            sum += (double)loss * (double)bn;
            if (res) res->steps++;
            if (o->progress) o->progress(o->user, ep, b0 + bn, n, loss);
        }
        if (s != LP_OK) break;
        float train_loss = (float)(sum / (double)n), acc = -1, tloss = -1;
        if (t->tx) s = evaluate_run(t->run, t->tx, t->ty, &acc, &tloss);
        if (s != LP_OK) break;
        if (res) {
            res->train_loss = train_loss;
            res->test_accuracy = acc;
            res->test_loss = tloss;
        }
        if (o->epoch_end) o->epoch_end(o->user, ep, train_loss, acc, tloss);
    }
    if (res) res->seconds = lp_now_s() - t0;
    free(blabels);
    return s;
}

lp_status lp_train(lp_model *m, const lp_train_opts *o, lp_train_result *res) {
    if (res) {
        memset(res, 0, sizeof *res);
        res->test_accuracy = -1;
        res->test_loss = -1;
    }
    trainer t;
    memset(&t, 0, sizeof t);
    lp_status s = train_epochs(&t, m, o, res);
    trainer_free(&t, t.n_params);
    return s;
}
