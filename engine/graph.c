/* graph.c — the graph IR: building models (importer, trainer, tests), attributes,
 * resolving ops, static shape inference, pruning, and the per-node facts that
 * `loupe info` prints. */
#include "internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* ---- building ------------------------------------------------------------------ */

lp_model *lp_model_new(void) { return lp_calloc(1, sizeof(lp_model)); }

int lp_model_find_value(const lp_model *m, const char *name) {
    if (!name || !*name) return -1;
    for (int i = 0; i < m->n_values; i++)
        if (!strcmp(m->values[i].name, name)) return i;
    return -1;
}

int lp_model_has_value(const lp_model *m, const char *name) { return lp_model_find_value(m, name) >= 0; }

const char *lp_model_layer_value(const lp_model *m, const char *name) {
    int id = lp_model_find_value(m, name);
    if (id >= 0) return m->values[id].name;
    for (int i = 0; name && i < m->n_nodes; i++)
        if (m->nodes[i].name && !strcmp(m->nodes[i].name, name) && m->nodes[i].n_out > 0)
            return m->values[m->nodes[i].out[0]].name;
    return NULL;
}

int lp_model_value(lp_model *m, const char *name) {
    int id = lp_model_find_value(m, name);
    if (id >= 0) return id;
    if (m->n_values == m->cap_values) {
        int cap = m->cap_values ? 2 * m->cap_values : 64;
        lp_value *v = realloc(m->values, (size_t)cap * sizeof *v);
        if (!v) {
            lp_fail(LP_ERR_OOM, "out of host memory growing the value table");
            return -1;
        }
        m->values = v;
        m->cap_values = cap;
    }
    lp_value *v = &m->values[m->n_values];
    memset(v, 0, sizeof *v);
    v->name = lp_strdup(name);
    if (!v->name) return -1;
    v->producer = -1;
    v->dtype = LP_F32;
    return m->n_values++;
}

int lp_model_add_input(lp_model *m, const char *name, const lp_shape *s) {
    int id = lp_model_value(m, name);
    if (id < 0) return -1;
    if (m->n_inputs >= (int)(sizeof m->inputs / sizeof m->inputs[0])) {
        lp_fail(LP_ERR_UNSUPPORTED, "too many graph inputs (at most %d)", (int)(sizeof m->inputs / sizeof m->inputs[0]));
        return -1;
    }
    m->values[id].is_input = 1;
    m->values[id].shape = *s;
    m->inputs[m->n_inputs++] = id;
    return id;
}

int lp_model_add_initializer(lp_model *m, const char *name, lp_tensor *t, int is_param) {
    int id = lp_model_value(m, name);
    if (id < 0) {
        lp_tensor_free(t);
        return -1;
    }
    lp_value *v = &m->values[id];
    lp_tensor_free(v->init);
    v->init = t;
    v->is_param = is_param && t->dtype == LP_F32;
    v->dtype = t->dtype;
    v->shape = lp_tensor_shape(t);
    return id;
}

int lp_model_add_node(lp_model *m, const char *op_type, const char *name, int n_in, const char *const *in,
                      int n_out, const char *const *out) {
    if (n_in > LP_MAX_IO || n_out > LP_MAX_IO || n_out < 1) {
        lp_fail(LP_ERR_UNSUPPORTED, "node '%s' (%s): %d inputs / %d outputs (supported: up to %d, at least 1 output)",
                name ? name : "", op_type, n_in, n_out, LP_MAX_IO);
        return -1;
    }
    if (m->n_nodes == m->cap_nodes) {
        int cap = m->cap_nodes ? 2 * m->cap_nodes : 64;
        lp_node *nn = realloc(m->nodes, (size_t)cap * sizeof *nn);
        if (!nn) {
            lp_fail(LP_ERR_OOM, "out of host memory growing the node table");
            return -1;
        }
        m->nodes = nn;
        m->cap_nodes = cap;
    }
    lp_node *n = &m->nodes[m->n_nodes];
    memset(n, 0, sizeof *n);
    n->op_type = lp_strdup(op_type);
    n->name = lp_strdup(name && *name ? name : out[0]);
    n->in = lp_calloc((size_t)(n_in ? n_in : 1), sizeof(int));
    n->out = lp_calloc((size_t)n_out, sizeof(int));
    if (!n->op_type || !n->name || !n->in || !n->out) goto oom;
    n->n_in = n_in;
    n->n_out = n_out;
    for (int i = 0; i < n_in; i++) {
        if (!in[i] || !*in[i]) {
            n->in[i] = -1;
            continue;
        }
        n->in[i] = lp_model_value(m, in[i]);
        if (n->in[i] < 0) goto oom;
    }
    for (int i = 0; i < n_out; i++) {
        if (!out[i] || !*out[i]) { /* an omitted optional output: give it a private name */
            char buf[300];
            snprintf(buf, sizeof buf, "%s:unused_out%d", n->name, i);
            n->out[i] = lp_model_value(m, buf);
        } else {
            n->out[i] = lp_model_value(m, out[i]);
        }
        if (n->out[i] < 0) goto oom;
    }
    return m->n_nodes++;
oom:
    free(n->op_type);
    free(n->name);
    free(n->in);
    free(n->out);
    memset(n, 0, sizeof *n);
    return -1;
}

void lp_model_mark_output(lp_model *m, const char *name) {
    int id = lp_model_value(m, name);
    if (id < 0 || m->n_outputs >= (int)(sizeof m->outputs / sizeof m->outputs[0])) return;
    for (int i = 0; i < m->n_outputs; i++)
        if (m->outputs[i] == id) return;
    m->outputs[m->n_outputs++] = id;
}

/* ---- attributes ---------------------------------------------------------------- */

void lp_attr_clear(lp_attr *a) {
    free(a->name);
    free(a->s);
    lp_tensor_free(a->t);
    free(a->floats);
    free(a->ints);
    for (int i = 0; a->strings && i < a->n; i++) free(a->strings[i]);
    free(a->strings);
    memset(a, 0, sizeof *a);
}

lp_attr *lp_node_add_attr(lp_node *n, const char *name, lp_attr_type type) {
    for (int i = 0; i < n->n_attr; i++)
        if (!strcmp(n->attr[i].name, name)) {
            lp_attr_clear(&n->attr[i]);
            n->attr[i].name = lp_strdup(name);
            n->attr[i].type = type;
            return n->attr[i].name ? &n->attr[i] : NULL;
        }
    lp_attr *a = realloc(n->attr, (size_t)(n->n_attr + 1) * sizeof *a);
    if (!a) {
        lp_fail(LP_ERR_OOM, "out of host memory adding an attribute");
        return NULL;
    }
    n->attr = a;
    a = &n->attr[n->n_attr];
    memset(a, 0, sizeof *a);
    a->name = lp_strdup(name);
    if (!a->name) return NULL;
    a->type = type;
    n->n_attr++;
    return a;
}

void lp_node_set_int(lp_node *n, const char *name, int64_t v) {
    lp_attr *a = lp_node_add_attr(n, name, LP_ATTR_INT);
    if (a) a->i = v;
}

void lp_node_set_float(lp_node *n, const char *name, float v) {
    lp_attr *a = lp_node_add_attr(n, name, LP_ATTR_FLOAT);
    if (a) a->f = v;
}

void lp_node_set_ints(lp_node *n, const char *name, int cnt, const int64_t *v) {
    lp_attr *a = lp_node_add_attr(n, name, LP_ATTR_INTS);
    if (!a) return;
    a->ints = lp_calloc((size_t)(cnt ? cnt : 1), sizeof *a->ints);
    if (!a->ints) return;
    memcpy(a->ints, v, (size_t)cnt * sizeof *v);
    a->n = cnt;
}

void lp_node_set_floats(lp_node *n, const char *name, int cnt, const float *v) {
    lp_attr *a = lp_node_add_attr(n, name, LP_ATTR_FLOATS);
    if (!a) return;
    a->floats = lp_calloc((size_t)(cnt ? cnt : 1), sizeof *a->floats);
    if (!a->floats) return;
    memcpy(a->floats, v, (size_t)cnt * sizeof *v);
    a->n = cnt;
}

void lp_node_set_string(lp_node *n, const char *name, const char *v) {
    lp_attr *a = lp_node_add_attr(n, name, LP_ATTR_STRING);
    if (a) a->s = lp_strdup(v);
}

const lp_attr *lp_node_attr(const lp_node *n, const char *name) {
    for (int i = 0; i < n->n_attr; i++)
        if (!strcmp(n->attr[i].name, name)) return &n->attr[i];
    return NULL;
}

int64_t lp_attr_int(const lp_node *n, const char *name, int64_t dflt) {
    const lp_attr *a = lp_node_attr(n, name);
    if (!a) return dflt;
    if (a->type == LP_ATTR_INT) return a->i;
    if (a->type == LP_ATTR_FLOAT) return lp_float_to_int64(a->f);
    return dflt;
}

float lp_attr_float(const lp_node *n, const char *name, float dflt) {
    const lp_attr *a = lp_node_attr(n, name);
    if (!a) return dflt;
    if (a->type == LP_ATTR_FLOAT) return a->f;
    if (a->type == LP_ATTR_INT) return (float)a->i;
    return dflt;
}

int lp_attr_ints(const lp_node *n, const char *name, int64_t *dst, int max) {
    const lp_attr *a = lp_node_attr(n, name);
    if (!a) return -1;
    if (a->type == LP_ATTR_INT) {
        if (max > 0) dst[0] = a->i;
        return 1;
    }
    if (a->type != LP_ATTR_INTS) return -1;
    for (int i = 0; i < a->n && i < max; i++) dst[i] = a->ints[i];
    return a->n;
}

const char *lp_attr_string(const lp_node *n, const char *name, const char *dflt) {
    const lp_attr *a = lp_node_attr(n, name);
    return (a && a->type == LP_ATTR_STRING && a->s) ? a->s : dflt;
}

const char *lp_node_ctx(const lp_model *m, const lp_node *n, char *buf, size_t len) {
    if (m && m->path)
        snprintf(buf, len, "%s: node '%s' (%s)", m->path, n->name, n->op_type);
    else
        snprintf(buf, len, "node '%s' (%s)", n->name, n->op_type);
    return buf;
}

/* ---- freeing ----------------------------------------------------------------------- */

void lp_node_clear(lp_node *n) {
    free(n->name);
    free(n->op_type);
    free(n->in);
    free(n->out);
    for (int i = 0; i < n->n_attr; i++) lp_attr_clear(&n->attr[i]);
    free(n->attr);
    free(n->params);
    memset(n, 0, sizeof *n);
}

void lp_model_free(lp_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_nodes; i++) lp_node_clear(&m->nodes[i]);
    for (int i = 0; i < m->n_values; i++) {
        free(m->values[i].name);
        lp_tensor_free(m->values[i].init);
    }
    free(m->nodes);
    free(m->values);
    free(m->path);
    free(m->producer);
    free(m);
}

/* ---- shape inference ------------------------------------------------------------- */

lp_dtype lp_node_out_dtype(const lp_model *m, const lp_node *n) {
    if (n->op && n->op->int64_out) return LP_I64;
    if (!strcmp(n->op_type, "Cast")) {
        int64_t to = lp_attr_int(n, "to", 1); /* ONNX TensorProto.DataType */
        return (to == 1 || to == 10 || to == 11 || to == 16) ? LP_F32 : LP_I64;
    }
    if (!strcmp(n->op_type, "ConstantOfShape")) {
        const lp_attr *a = lp_node_attr(n, "value");
        return a && a->t ? a->t->dtype : LP_F32;
    }
    if (!strcmp(n->op_type, "Where"))
        return n->n_in > 1 && n->in[1] >= 0 ? m->values[n->in[1]].dtype : LP_F32;
    if (n->n_in > 0 && n->in[0] >= 0 && m->values[n->in[0]].dtype == LP_I64) return LP_I64;
    return LP_F32;
}

/* Infer one node's outputs into shapes[]/dtypes[] (indexed by value id). */
lp_status lp_node_infer(const lp_model *m, const lp_node *n, lp_shape *shapes) {
    lp_shape in[LP_MAX_IO], out[LP_MAX_IO];
    const lp_tensor *cst[LP_MAX_IO];
    memset(out, 0, sizeof out);
    for (int i = 0; i < n->n_in; i++) {
        int v = n->in[i];
        if (v < 0) {
            memset(&in[i], 0, sizeof in[i]);
            cst[i] = NULL;
            continue;
        }
        in[i] = shapes[v];
        cst[i] = m->values[v].init;
    }
    lp_status s = n->op->infer(n, in, cst, out);
    if (s != LP_OK) {
        char ctx[512];
        return lp_fail_prefix(s, "%s", lp_node_ctx(m, n, ctx, sizeof ctx));
    }
    for (int i = 0; i < n->n_out; i++) shapes[n->out[i]] = out[i];
    return LP_OK;
}

/* Every value's shape when the model's first input is `input` (a batch of any size);
 * a node that cannot take it fails with the input's and the declared shape. */
lp_status _lp_model_shapes_for(const lp_model *m, const lp_shape *input, lp_shape *shapes) {
    for (int v = 0; v < m->n_values; v++) shapes[v] = m->values[v].shape;
    if (m->n_inputs) shapes[m->inputs[0]] = *input;
    for (int i = 0; i < m->n_nodes; i++) {
        lp_status s = lp_node_infer(m, &m->nodes[i], shapes);
        if (s != LP_OK) {
            char a[96], b[96];
            return lp_fail_prefix(s, "input %s (model declares %s)", lp_shape_fmt(input, a, sizeof a),
                                  m->n_inputs ? lp_shape_fmt(&m->values[m->inputs[0]].shape, b, sizeof b) : "none");
        }
    }
    return LP_OK;
}

lp_status lp_model_finalize(lp_model *m) {
    char ctx[512];
    for (int v = 0; v < m->n_values; v++) m->values[v].producer = -1;
    for (int i = 0; i < m->n_nodes; i++) {
        lp_node *n = &m->nodes[i];
        n->op = lp_op_find(n->op_type);
        if (!n->op)
            return lp_fail(LP_ERR_UNSUPPORTED, "%s: unsupported op (supported: %s)", lp_node_ctx(m, n, ctx, sizeof ctx),
                           lp_op_list());
        for (int k = 0; k < n->n_in; k++) {
            int v = n->in[k];
            if (v < 0) continue;
            const lp_value *val = &m->values[v];
            if (!val->is_input && !val->init && val->producer < 0)
                return lp_fail(LP_ERR_PARSE,
                               "%s: input '%s' is not a graph input, an initializer or the output of an earlier node",
                               lp_node_ctx(m, n, ctx, sizeof ctx), val->name);
        }
        for (int k = 0; k < n->n_out; k++) {
            lp_value *val = &m->values[n->out[k]];
            if (val->producer >= 0 || val->is_input || val->init)
                return lp_fail(LP_ERR_PARSE, "%s: output '%s' is already defined elsewhere in the graph",
                               lp_node_ctx(m, n, ctx, sizeof ctx), val->name);
            val->producer = i;
        }
        free(n->params);
        n->params = NULL;
        if (n->op->check) {
            lp_status s = n->op->check(m, n);
            if (s != LP_OK) return s;
        }
    }
    if (m->n_inputs == 0 && m->n_nodes > 0) return lp_fail(LP_ERR_PARSE, "%s: the graph has no input", m->path ? m->path : "model");
    if (m->n_outputs == 0 && m->n_nodes > 0) return lp_fail(LP_ERR_PARSE, "%s: the graph has no output", m->path ? m->path : "model");
    lp_shape *shapes = lp_calloc((size_t)m->n_values, sizeof *shapes);
    if (!shapes) return LP_ERR_OOM;
    for (int v = 0; v < m->n_values; v++) {
        if (m->values[v].init) m->values[v].shape = lp_tensor_shape(m->values[v].init);
        shapes[v] = m->values[v].shape;
    }
    for (int i = 0; i < m->n_nodes; i++) {
        lp_node *n = &m->nodes[i];
        lp_status s = lp_node_infer(m, n, shapes);
        if (s != LP_OK) {
            free(shapes);
            return s;
        }
        lp_dtype dt = lp_node_out_dtype(m, n);
        for (int k = 0; k < n->n_out; k++) {
            m->values[n->out[k]].shape = shapes[n->out[k]];
            m->values[n->out[k]].dtype = dt;
        }
    }
    free(shapes);
    return LP_OK;
}

/* ---- pruning ----------------------------------------------------------------------- */

void lp_model_prune(lp_model *m) {
    char *used = calloc((size_t)m->n_values + 1, 1);
    char *keep = calloc((size_t)m->n_nodes + 1, 1);
    int *remap = calloc((size_t)m->n_values + 1, sizeof(int));
    if (!used || !keep || !remap) goto out; /* pruning is an optimisation: skip on OOM */
    for (int i = 0; i < m->n_outputs; i++) used[m->outputs[i]] = 1;
    for (int i = m->n_nodes - 1; i >= 0; i--) {
        lp_node *n = &m->nodes[i];
        int live = 0;
        for (int k = 0; k < n->n_out; k++) live |= used[n->out[k]];
        if (!live) continue;
        keep[i] = 1;
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] >= 0) used[n->in[k]] = 1;
    }
    for (int i = 0; i < m->n_inputs; i++) used[m->inputs[i]] = 1;
    int nn = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        if (keep[i]) {
            for (int k = 0; k < m->nodes[i].n_out; k++) used[m->nodes[i].out[k]] = 1;
            m->nodes[nn++] = m->nodes[i];
        } else {
            lp_node_clear(&m->nodes[i]);
        }
    }
    m->n_nodes = nn;
    int nv = 0;
    for (int v = 0; v < m->n_values; v++) {
        if (used[v]) {
            remap[v] = nv;
            m->values[nv++] = m->values[v];
        } else {
            remap[v] = -1;
            free(m->values[v].name);
            lp_tensor_free(m->values[v].init);
        }
    }
    m->n_values = nv;
    for (int i = 0; i < m->n_nodes; i++) {
        lp_node *n = &m->nodes[i];
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] >= 0) n->in[k] = remap[n->in[k]];
        for (int k = 0; k < n->n_out; k++) n->out[k] = remap[n->out[k]];
    }
    for (int i = 0; i < m->n_inputs; i++) m->inputs[i] = remap[m->inputs[i]];
    for (int i = 0; i < m->n_outputs; i++) m->outputs[i] = remap[m->outputs[i]];
    for (int v = 0; v < m->n_values; v++) m->values[v].producer = -1;
    for (int i = 0; i < m->n_nodes; i++)
        for (int k = 0; k < m->nodes[i].n_out; k++) m->values[m->nodes[i].out[k]].producer = i;
out:
    free(used);
    free(keep);
    free(remap);
}

/* ---- queries ------------------------------------------------------------------------ */

const char *lp_model_input_name(const lp_model *m) { return m->n_inputs ? m->values[m->inputs[0]].name : ""; }
const char *lp_model_output_name(const lp_model *m) { return m->n_outputs ? m->values[m->outputs[0]].name : ""; }

lp_status lp_model_input_shape(const lp_model *m, int *ndim, int64_t shape[LP_MAX_DIMS]) {
    if (!m->n_inputs) return lp_fail(LP_ERR_ARG, "the model has no input");
    const lp_shape *s = &m->values[m->inputs[0]].shape;
    *ndim = s->ndim;
    for (int i = 0; i < s->ndim; i++) shape[i] = s->d[i];
    return LP_OK;
}

int64_t lp_model_param_count(const lp_model *m) {
    int64_t total = 0;
    for (int v = 0; v < m->n_values; v++)
        if (m->values[v].init && m->values[v].init->dtype == LP_F32) total += lp_tensor_numel(m->values[v].init);
    return total;
}

int lp_model_num_nodes(const lp_model *m) { return m->n_nodes; }

lp_status lp_model_node_info(const lp_model *m, int i, lp_node_info *out) {
    if (i < 0 || i >= m->n_nodes) return lp_fail(LP_ERR_ARG, "node index %d out of range (0..%d)", i, m->n_nodes - 1);
    const lp_node *n = &m->nodes[i];
    memset(out, 0, sizeof *out);
    out->name = n->name;
    out->op = n->op_type;
    out->output = m->values[n->out[0]].name;
    const lp_shape *s = &m->values[n->out[0]].shape;
    out->ndim = s->ndim;
    for (int k = 0; k < s->ndim; k++) out->shape[k] = s->d[k];
    lp_shape in[LP_MAX_IO], os[LP_MAX_IO];
    for (int k = 0; k < n->n_in; k++) {
        int v = n->in[k];
        if (v < 0) {
            memset(&in[k], 0, sizeof in[k]);
            continue;
        }
        in[k] = m->values[v].shape;
        if (m->values[v].init && m->values[v].init->dtype == LP_F32) out->params += lp_tensor_numel(m->values[v].init);
    }
    for (int k = 0; k < n->n_out; k++) os[k] = m->values[n->out[k]].shape;
    if (n->op && n->op->macs) out->macs = n->op->macs(n, in, os);
    return LP_OK;
}
