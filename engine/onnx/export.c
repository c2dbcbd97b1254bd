/* export.c — write the graph IR back as ONNX (IR version 8, opset 13 or the source
 * file's if newer, weights inline as raw_data). Used after training and to save a
 * folded model; written to a temporary file and renamed, so no half file remains. */
#include "onnx_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Every allocation of one export, freed together. */
typedef struct arena {
    void **p;
    size_t n, cap;
    int oom;
} arena;

static void *arena_alloc(arena *a, size_t n) {
    if (a->oom) return NULL;
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 256;
        void **p = realloc(a->p, cap * sizeof *p);
        if (!p) {
            a->oom = 1;
            return NULL;
        }
        a->p = p;
        a->cap = cap;
    }
    void *x = calloc(1, n ? n : 1);
    if (!x) {
        a->oom = 1;
        return NULL;
    }
    a->p[a->n++] = x;
    return x;
}

static void arena_free(arena *a) {
    for (size_t i = 0; i < a->n; i++) free(a->p[i]);
    free(a->p);
}

static Onnx__TensorProto *tensor_proto(arena *a, const char *name, const lp_tensor *t) {
    Onnx__TensorProto *tp = arena_alloc(a, sizeof *tp);
    if (!tp) return NULL;
    onnx__tensor_proto__init(tp);
    tp->name = (char *)(name ? name : "");
    tp->n_dims = (size_t)t->ndim;
    tp->dims = arena_alloc(a, sizeof(int64_t) * (size_t)(t->ndim ? t->ndim : 1));
    uint8_t *raw = arena_alloc(a, t->nbytes);
    if (!tp->dims || !raw) return NULL;
    for (int i = 0; i < t->ndim; i++) tp->dims[i] = t->shape[i];
    tp->has_data_type = 1;
    tp->data_type = t->dtype == LP_I64 ? ONNX__TENSOR_PROTO__DATA_TYPE__INT64 : ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    if (lp_tensor_read(t, raw, t->nbytes) != LP_OK) { /* host bytes: little-endian on every target we build for */
        a->oom = 1;
        return NULL;
    }
    tp->has_raw_data = 1;
    tp->raw_data.data = raw;
    tp->raw_data.len = t->nbytes;
    return tp;
}

static Onnx__ValueInfoProto *value_info(arena *a, const lp_value *v) {
    Onnx__ValueInfoProto *vi = arena_alloc(a, sizeof *vi);
    Onnx__TypeProto *tp = arena_alloc(a, sizeof *tp);
    Onnx__TypeProto__Tensor *tt = arena_alloc(a, sizeof *tt);
    Onnx__TensorShapeProto *sp = arena_alloc(a, sizeof *sp);
    Onnx__TensorShapeProto__Dimension **dims = arena_alloc(a, sizeof *dims * (size_t)(v->shape.ndim + 1));
    if (!vi || !tp || !tt || !sp || !dims) return NULL;
    onnx__value_info_proto__init(vi);
    onnx__type_proto__init(tp);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(sp);
    for (int i = 0; i < v->shape.ndim; i++) {
        dims[i] = arena_alloc(a, sizeof **dims);
        if (!dims[i]) return NULL;
        onnx__tensor_shape_proto__dimension__init(dims[i]);
        dims[i]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
        dims[i]->dim_value = v->shape.d[i];
    }
    sp->n_dim = (size_t)v->shape.ndim;
    sp->dim = dims;
    tt->has_elem_type = 1;
    tt->elem_type = v->dtype == LP_I64 ? ONNX__TENSOR_PROTO__DATA_TYPE__INT64 : ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    tt->shape = sp;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    vi->name = v->name;
    vi->type = tp;
    return vi;
}

static Onnx__AttributeProto *attr_proto(arena *a, const lp_attr *at) {
    Onnx__AttributeProto *ap = arena_alloc(a, sizeof *ap);
    if (!ap) return NULL;
    onnx__attribute_proto__init(ap);
    ap->name = at->name;
    ap->has_type = 1;
    switch (at->type) {
    case LP_ATTR_FLOAT:
        ap->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
        ap->has_f = 1;
        ap->f = at->f;
        break;
    case LP_ATTR_INT:
        ap->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
        ap->has_i = 1;
        ap->i = at->i;
        break;
    case LP_ATTR_STRING:
        ap->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
        ap->has_s = 1;
        ap->s.data = (uint8_t *)(at->s ? at->s : "");
        ap->s.len = at->s ? strlen(at->s) : 0;
        break;
    case LP_ATTR_TENSOR:
        ap->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
        if (!at->t || !(ap->t = tensor_proto(a, NULL, at->t))) return NULL;
        break;
    case LP_ATTR_FLOATS:
        ap->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS;
        ap->n_floats = (size_t)at->n;
        ap->floats = at->floats;
        break;
    case LP_ATTR_INTS:
        ap->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
        ap->n_ints = (size_t)at->n;
        ap->ints = at->ints;
        break;
    case LP_ATTR_STRINGS:
        ap->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS;
        ap->n_strings = (size_t)at->n;
        ap->strings = arena_alloc(a, sizeof *ap->strings * (size_t)(at->n + 1));
        if (!ap->strings) return NULL;
        for (int i = 0; i < at->n; i++) {
            ap->strings[i].data = (uint8_t *)at->strings[i];
            ap->strings[i].len = strlen(at->strings[i]);
        }
        break;
    default: return NULL;
    }
    return ap;
}

static Onnx__NodeProto *node_proto(arena *a, const lp_model *m, const lp_node *n) {
    Onnx__NodeProto *np = arena_alloc(a, sizeof *np);
    if (!np) return NULL;
    onnx__node_proto__init(np);
    np->name = n->name;
    np->op_type = n->op_type;
    np->n_input = (size_t)n->n_in;
    np->input = arena_alloc(a, sizeof(char *) * (size_t)(n->n_in + 1));
    np->n_output = (size_t)n->n_out;
    np->output = arena_alloc(a, sizeof(char *) * (size_t)(n->n_out + 1));
    np->n_attribute = (size_t)n->n_attr;
    np->attribute = arena_alloc(a, sizeof(Onnx__AttributeProto *) * (size_t)(n->n_attr + 1));
    if (!np->input || !np->output || !np->attribute) return NULL;
    for (int k = 0; k < n->n_in; k++) np->input[k] = n->in[k] >= 0 ? m->values[n->in[k]].name : "";
    for (int k = 0; k < n->n_out; k++) np->output[k] = m->values[n->out[k]].name;
    for (int k = 0; k < n->n_attr; k++)
        if (!(np->attribute[k] = attr_proto(a, &n->attr[k]))) return NULL;
    return np;
}

static Onnx__ModelProto *model_proto(arena *a, const lp_model *m) {
    Onnx__ModelProto *mp = arena_alloc(a, sizeof *mp);
    Onnx__GraphProto *g = arena_alloc(a, sizeof *g);
    Onnx__OperatorSetIdProto *op = arena_alloc(a, sizeof *op);
    Onnx__OperatorSetIdProto **ops = arena_alloc(a, sizeof *ops);
    if (!mp || !g || !op || !ops) return NULL;
    onnx__model_proto__init(mp);
    onnx__graph_proto__init(g);
    onnx__operator_set_id_proto__init(op);
    mp->has_ir_version = 1;
    mp->ir_version = 8;
    mp->producer_name = "loupe";
    mp->producer_version = "0.1.0";
    /* Node attributes and inputs follow the source file's opset when it is newer. */
    op->domain = "";
    op->has_version = 1;
    op->version = m->opset > 13 ? m->opset : 13;
    ops[0] = op;
    mp->n_opset_import = 1;
    mp->opset_import = ops;
    mp->graph = g;
    g->name = "loupe";

    g->input = arena_alloc(a, sizeof *g->input * (size_t)(m->n_inputs + 1));
    g->output = arena_alloc(a, sizeof *g->output * (size_t)(m->n_outputs + 1));
    g->node = arena_alloc(a, sizeof *g->node * (size_t)(m->n_nodes + 1));
    g->initializer = arena_alloc(a, sizeof *g->initializer * (size_t)(m->n_values + 1));
    if (!g->input || !g->output || !g->node || !g->initializer) return NULL;
    for (int i = 0; i < m->n_inputs; i++)
        if (!(g->input[g->n_input++] = value_info(a, &m->values[m->inputs[i]]))) return NULL;
    for (int i = 0; i < m->n_outputs; i++)
        if (!(g->output[g->n_output++] = value_info(a, &m->values[m->outputs[i]]))) return NULL;
    for (int v = 0; v < m->n_values; v++) {
        const lp_value *val = &m->values[v];
        if (!val->init) continue;
        if (!(g->initializer[g->n_initializer++] = tensor_proto(a, val->name, val->init))) return NULL;
    }
    for (int i = 0; i < m->n_nodes; i++)
        if (!(g->node[g->n_node++] = node_proto(a, m, &m->nodes[i]))) return NULL;
    return mp;
}

lp_status lp_model_save(const lp_model *m, const char *path) {
    arena a = {0};
    Onnx__ModelProto *mp = model_proto(&a, m);
    if (!mp) {
        arena_free(&a);
        return lp_fail(LP_ERR_OOM, "%s: out of host memory building the ONNX model", path);
    }
    size_t len = onnx__model_proto__get_packed_size(mp);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        arena_free(&a);
        return lp_fail(LP_ERR_OOM, "%s: out of host memory (%zu bytes) packing the ONNX model", path, len);
    }
    onnx__model_proto__pack(mp, buf);
    arena_free(&a);

    size_t tlen = strlen(path) + 5;
    char *tmp = malloc(tlen);
    if (!tmp) {
        free(buf);
        return lp_fail(LP_ERR_OOM, "%s: out of host memory", path);
    }
    snprintf(tmp, tlen, "%s.tmp", path);
    lp_status s = LP_OK;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        s = lp_fail(LP_ERR_IO, "%s: cannot write: %s", tmp, strerror(errno));
    } else {
        int bad = fwrite(buf, 1, len, f) != len;
        bad |= fclose(f) != 0;
        if (bad) {
            s = lp_fail(LP_ERR_IO, "%s: write failed (disk full?)", tmp);
            remove(tmp);
        } else {
            s = lp_file_commit(tmp, path); /* removes tmp on failure */
        }
    }
    free(tmp);
    free(buf);
    return s;
}
