/* fold.c — load-time graph simplification: constant folding (including Shape of a
 * statically shaped value, so Shape->Gather->Concat->Reshape chains vanish) and
 * BatchNormalization folded into the Conv right before it. Runs before finalize, so
 * it resolves ops and infers shapes itself and simply skips what it cannot handle:
 * finalize reports those nodes with proper messages. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Folding materialises tensors; a constant bigger than this stays a node. */
#define FOLD_MAX_NUMEL ((int64_t)1 << 24)

/* Drop nodes flagged in `dead`, keeping order. */
static void remove_nodes(lp_model *m, const char *dead) {
    int k = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        if (dead[i]) lp_node_clear(&m->nodes[i]);
        else m->nodes[k++] = m->nodes[i];
    }
    m->n_nodes = k;
    for (int v = 0; v < m->n_values; v++) m->values[v].producer = -1;
    for (int i = 0; i < m->n_nodes; i++)
        for (int j = 0; j < m->nodes[i].n_out; j++) m->values[m->nodes[i].out[j]].producer = i;
}

/* A valid shape of at most FOLD_MAX_NUMEL elements (checked without overflow). */
static int small_shape(const lp_shape *s) {
    if (s->ndim < 0 || s->ndim > LP_MAX_DIMS) return 0;
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++) {
        if (s->d[i] < 0 || s->d[i] > FOLD_MAX_NUMEL) return 0;
        n *= s->d[i];
        if (n > FOLD_MAX_NUMEL) return 0;
    }
    return 1;
}

static int is_graph_output(const lp_model *m, int v) {
    for (int i = 0; i < m->n_outputs; i++)
        if (m->outputs[i] == v) return 1;
    return 0;
}

/* Shape (opset 15 adds start/end) of a value whose static shape is known. */
static lp_status fold_shape(const lp_node *n, const lp_shape *in, lp_tensor **out) {
    int64_t r = in->ndim, start = lp_attr_int(n, "start", 0), end = lp_attr_int(n, "end", r);
    if (start < 0) start += r;
    if (end < 0) end += r;
    start = start < 0 ? 0 : start > r ? r : start;
    end = end < start ? start : end > r ? r : end;
    int64_t len = end - start;
    LP_TRY(lp_tensor_new(out, LP_DEVICE_CPU, LP_I64, 1, &len));
    int64_t *d = (*out)->data;
    for (int64_t i = 0; i < len; i++) d[i] = in->d[start + i];
    return LP_OK;
}

/* Constant with any of its value_* attributes. Returns LP_ERR_UNSUPPORTED quietly
 * when there is nothing we can turn into a tensor (finalize will report it). */
static lp_status fold_constant(const lp_node *n, lp_tensor **out) {
    const lp_attr *a;
    if ((a = lp_node_attr(n, "value")) && a->type == LP_ATTR_TENSOR && a->t) return lp_tensor_clone(out, a->t, LP_DEVICE_CPU);
    if ((a = lp_node_attr(n, "value_float")) && a->type == LP_ATTR_FLOAT) {
        LP_TRY(lp_tensor_new(out, LP_DEVICE_CPU, LP_F32, 0, NULL));
        *(float *)(*out)->data = a->f;
        return LP_OK;
    }
    if ((a = lp_node_attr(n, "value_int")) && a->type == LP_ATTR_INT) {
        LP_TRY(lp_tensor_new(out, LP_DEVICE_CPU, LP_I64, 0, NULL));
        *(int64_t *)(*out)->data = a->i;
        return LP_OK;
    }
    if ((a = lp_node_attr(n, "value_floats")) && a->type == LP_ATTR_FLOATS) {
        int64_t len = a->n;
        LP_TRY(lp_tensor_new(out, LP_DEVICE_CPU, LP_F32, 1, &len));
        if (len) memcpy((*out)->data, a->floats, (size_t)len * sizeof(float));
        return LP_OK;
    }
    if ((a = lp_node_attr(n, "value_ints")) && a->type == LP_ATTR_INTS) {
        int64_t len = a->n;
        LP_TRY(lp_tensor_new(out, LP_DEVICE_CPU, LP_I64, 1, &len));
        if (len) memcpy((*out)->data, a->ints, (size_t)len * sizeof(int64_t));
        return LP_OK;
    }
    return LP_ERR_UNSUPPORTED;
}

/* Make node i's outputs constants if all its inputs are. Returns 1 if folded, 0 if
 * not foldable, or -status on a hard error (OOM). `known` marks values with a
 * static shape so far. */
static int try_fold(lp_model *m, int i, char *known, lp_shape *shapes) {
    lp_node *n = &m->nodes[i];
    for (int k = 0; k < n->n_out; k++)
        if (is_graph_output(m, n->out[k])) return 0; /* keep the output produced by a node */
    if (!strcmp(n->op_type, "Constant")) {
        if (n->n_in != 0 || n->n_out != 1) return 0;
        lp_tensor *t;
        if (fold_constant(n, &t) != LP_OK) return 0;
        lp_value *v = &m->values[n->out[0]];
        lp_tensor_free(v->init);
        v->init = t;
        v->is_param = 0;
        v->dtype = t->dtype;
        v->shape = lp_tensor_shape(t);
        shapes[n->out[0]] = v->shape;
        known[n->out[0]] = 1;
        return 1;
    }
    for (int k = 0; k < n->n_in; k++)
        if (n->in[k] >= 0 && !known[n->in[k]]) return 0;
    const lp_op *op = lp_op_find(n->op_type);
    if (!op || !op->infer) return 0;
    n->op = op;
    free(n->params);
    n->params = NULL;
    if (op->check && op->check(m, n) != LP_OK) return 0;
    if (lp_node_infer(m, n, shapes) != LP_OK) return 0;
    lp_dtype dt = lp_node_out_dtype(m, n);
    for (int k = 0; k < n->n_out; k++) {
        lp_value *v = &m->values[n->out[k]];
        v->shape = shapes[n->out[k]];
        v->dtype = dt;
        known[n->out[k]] = 1;
    }
    int shape_of_static = !strcmp(n->op_type, "Shape") && n->n_in == 1 && n->n_out == 1 && n->in[0] >= 0;
    int all_const = 1;
    for (int k = 0; k < n->n_in; k++)
        if (n->in[k] >= 0 && !m->values[n->in[k]].init) all_const = 0;
    if (!all_const && !shape_of_static) return 0;
    if (!op->forward && !shape_of_static) return 0;
    for (int k = 0; k < n->n_out; k++)
        if (!small_shape(&shapes[n->out[k]])) return 0;
    lp_tensor *outs[LP_MAX_IO] = {0};
    lp_status s = LP_OK;
    if (shape_of_static) {
        s = fold_shape(n, &shapes[n->in[0]], &outs[0]);
    } else {
        lp_tensor *ins[LP_MAX_IO];
        for (int k = 0; k < n->n_in; k++) ins[k] = n->in[k] >= 0 ? m->values[n->in[k]].init : NULL;
        for (int k = 0; k < n->n_out && s == LP_OK; k++)
            s = lp_tensor_new_shape(&outs[k], LP_DEVICE_CPU, m->values[n->out[k]].dtype, &shapes[n->out[k]]);
        if (s == LP_OK) s = lp_node_eval_host(m, n, ins, outs);
    }
    if (s != LP_OK) {
        for (int k = 0; k < n->n_out; k++) lp_tensor_free(outs[k]);
        if (s == LP_ERR_OOM) return -(int)s;
        return 0; /* leave the node to run (and fail with context) at forward time */
    }
    for (int k = 0; k < n->n_out; k++) {
        lp_value *v = &m->values[n->out[k]];
        lp_tensor_free(v->init);
        v->init = outs[k];
        v->is_param = 0;
        v->dtype = outs[k]->dtype;
        v->shape = lp_tensor_shape(outs[k]);
        shapes[n->out[k]] = v->shape;
    }
    return 1;
}

/* How many node inputs (and graph outputs) refer to value v. */
static int use_count(const lp_model *m, int v) {
    int c = is_graph_output(m, v);
    for (int i = 0; i < m->n_nodes; i++)
        for (int k = 0; k < m->nodes[i].n_in; k++) c += m->nodes[i].in[k] == v;
    return c;
}

/* A folded Shape chain bakes in the declared batch size. When a Reshape's folded
 * target starts with the input's leading dimension, make that entry 0 ("copy from
 * the input"): the same at the declared batch, and right for any other batch. */
static void keep_batch_dynamic(lp_model *m, const char *dead, const char *folded, const lp_shape *shapes) {
    for (int i = 0; i < m->n_nodes; i++) {
        lp_node *n = &m->nodes[i];
        if (dead[i] || strcmp(n->op_type, "Reshape") || n->n_in < 2 || n->in[0] < 0 || n->in[1] < 0) continue;
        int sv = n->in[1];
        lp_tensor *t = m->values[sv].init;
        if (!folded[sv] || !t || t->dtype != LP_I64 || lp_tensor_numel(t) < 1 || use_count(m, sv) != 1) continue;
        if (lp_attr_int(n, "allowzero", 0) != 0 || shapes[n->in[0]].ndim < 1) continue;
        int64_t *d = t->data;
        if (d[0] == shapes[n->in[0]].d[0]) d[0] = 0;
    }
}

static lp_status fold_constants(lp_model *m) {
    if (!m->n_nodes) return LP_OK;
    char *known = lp_calloc((size_t)m->n_values + 1, 1);
    lp_shape *shapes = lp_calloc((size_t)m->n_values + 1, sizeof *shapes);
    char *dead = lp_calloc((size_t)m->n_nodes, 1);
    char *folded = lp_calloc((size_t)m->n_values + 1, 1);
    lp_status s = LP_OK;
    if (!known || !shapes || !dead || !folded) {
        s = LP_ERR_OOM;
        goto out;
    }
    for (int v = 0; v < m->n_values; v++) {
        lp_value *val = &m->values[v];
        if (val->init) val->shape = lp_tensor_shape(val->init);
        if (val->init || val->is_input) known[v] = 1;
        shapes[v] = val->shape;
    }
    for (int i = 0; i < m->n_nodes; i++) {
        int r = try_fold(m, i, known, shapes);
        if (r < 0) {
            s = (lp_status)-r;
            goto out;
        }
        dead[i] = (char)r;
        for (int k = 0; r && k < m->nodes[i].n_out; k++) folded[m->nodes[i].out[k]] = 1;
    }
    keep_batch_dynamic(m, dead, folded, shapes);
    remove_nodes(m, dead);
out:
    free(folded);
    free(known);
    free(shapes);
    free(dead);
    lp_clear_error(); /* skipped nodes left messages; finalize reports real problems */
    return s;
}

/* A float constant of exactly `c` elements, or NULL. */
static const float *const_vec(const lp_model *m, const lp_node *n, int k, int64_t c) {
    if (k >= n->n_in || n->in[k] < 0) return NULL;
    const lp_tensor *t = m->values[n->in[k]].init;
    if (!t || t->dtype != LP_F32 || t->device != LP_DEVICE_CPU || lp_tensor_numel(t) != c) return NULL;
    return t->data;
}

/* Fold BN node b into the Conv producing its input, if the pattern holds. Returns 1
 * if folded, 0 if not, -status on OOM. */
static int fold_bn(lp_model *m, int b) {
    lp_node *bn = &m->nodes[b];
    if (bn->n_in != 5 || bn->in[0] < 0) return 0;
    for (int k = 1; k < bn->n_out; k++)
        if (use_count(m, bn->out[k])) return 0; /* training-mode statistics are used */
    int x = bn->in[0];
    int ci = m->values[x].producer;
    if (ci < 0 || ci >= b) return 0;
    lp_node *conv = &m->nodes[ci];
    if (strcmp(conv->op_type, "Conv") || conv->n_out != 1 || conv->n_in < 2 || conv->n_in > 3) return 0;
    if (use_count(m, x) != 1 || conv->in[1] < 0) return 0;
    lp_value *wv = &m->values[conv->in[1]];
    lp_tensor *w = wv->init;
    if (!w || w->dtype != LP_F32 || w->device != LP_DEVICE_CPU || w->ndim < 3 || w->shape[0] <= 0) return 0;
    if (use_count(m, conv->in[1]) != 1) return 0; /* a shared weight must not change under its other user */
    int64_t c = w->shape[0];
    const float *scale = const_vec(m, bn, 1, c), *beta = const_vec(m, bn, 2, c), *mean = const_vec(m, bn, 3, c),
                *var = const_vec(m, bn, 4, c);
    if (!scale || !beta || !mean || !var) return 0;
    int has_bias = conv->n_in == 3 && conv->in[2] >= 0;
    if (has_bias && (!const_vec(m, conv, 2, c) || use_count(m, conv->in[2]) != 1)) return 0;
    float eps = lp_attr_float(bn, "epsilon", 1e-5f);

    int bias_id;
    if (has_bias) {
        bias_id = conv->in[2];
    } else {
        /* A new bias initializer named after the conv (made unique if taken). */
        char name[512];
        snprintf(name, sizeof name, "%s.bias", conv->name);
        for (int k = 1; lp_model_find_value(m, name) >= 0; k++) snprintf(name, sizeof name, "%s.bias_%d", conv->name, k);
        lp_tensor *t;
        lp_status s = lp_tensor_new(&t, LP_DEVICE_CPU, LP_F32, 1, &c);
        if (s != LP_OK) return -(int)s;
        bias_id = lp_model_add_initializer(m, name, t, 1);
        if (bias_id < 0) return -(int)LP_ERR_OOM;
        if (conv->n_in < 3) {
            int *in = realloc(conv->in, 3 * sizeof(int));
            if (!in) return -(int)lp_fail(LP_ERR_OOM, "out of host memory folding BatchNormalization");
            conv->in = in;
            conv->n_in = 3;
        }
        conv->in[2] = bias_id;
        /* the values table may have moved */
        wv = &m->values[conv->in[1]];
        w = wv->init;
        scale = const_vec(m, bn, 1, c), beta = const_vec(m, bn, 2, c), mean = const_vec(m, bn, 3, c),
        var = const_vec(m, bn, 4, c);
    }
    float *bias = m->values[bias_id].init->data;
    float *wd = w->data;
    int64_t per = lp_tensor_numel(w) / c;
    for (int64_t o = 0; o < c; o++) {
        double k = (double)scale[o] / sqrt((double)var[o] + (double)eps);
        for (int64_t j = 0; j < per; j++) wd[o * per + j] = (float)(wd[o * per + j] * k);
        bias[o] = (float)(((double)bias[o] - mean[o]) * k + beta[o]);
    }
    /* The conv now produces the BN's output, so downstream references hold. */
    conv->out[0] = bn->out[0];
    return 1;
}

static lp_status fold_batchnorms(lp_model *m) {
    if (!m->n_nodes) return LP_OK;
    char *dead = lp_calloc((size_t)m->n_nodes, 1);
    if (!dead) return LP_ERR_OOM;
    for (int i = 0; i < m->n_nodes; i++) {
        if (strcmp(m->nodes[i].op_type, "BatchNormalization")) continue;
        int r = fold_bn(m, i);
        if (r < 0) {
            free(dead);
            return (lp_status)-r;
        }
        dead[i] = (char)r;
    }
    remove_nodes(m, dead);
    free(dead);
    return LP_OK;
}

/* PyTorch's exporter stores equal weights once and hands them out through Identity
 * nodes. Point the consumers at the stored weight instead of copying it, so the
 * weights stay shared (and counted once, as the file holds them). */
static lp_status bypass_constant_identities(lp_model *m) {
    if (!m->n_nodes) return LP_OK;
    char *dead = lp_calloc((size_t)m->n_nodes, 1);
    if (!dead) return LP_ERR_OOM;
    for (int i = 0; i < m->n_nodes; i++) {
        lp_node *n = &m->nodes[i];
        if (strcmp(n->op_type, "Identity") || n->n_in != 1 || n->n_out != 1 || n->in[0] < 0) continue;
        int from = n->out[0], to = n->in[0];
        if (!m->values[to].init || is_graph_output(m, from)) continue;
        for (int j = i + 1; j < m->n_nodes; j++)
            for (int k = 0; k < m->nodes[j].n_in; k++)
                if (m->nodes[j].in[k] == from) m->nodes[j].in[k] = to;
        dead[i] = 1;
    }
    remove_nodes(m, dead);
    free(dead);
    return LP_OK;
}

lp_status lp_model_fold(lp_model *m) {
    LP_TRY(bypass_constant_identities(m));
    for (int v = 0; v < m->n_values; v++) m->values[v].producer = -1;
    for (int i = 0; i < m->n_nodes; i++)
        for (int k = 0; k < m->nodes[i].n_out; k++) m->values[m->nodes[i].out[k]].producer = i;
    LP_TRY(fold_constants(m));
    return fold_batchnorms(m);
}
