/* import.c — ONNX model import: protobuf bytes -> graph IR through the builder of
 * internal.h, then constant/BN folding, pruning and finalization (shape inference).
 * Files are untrusted input: every count and reference is checked, nothing crashes. */
#include "onnx_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_INPUT_DIM ((int64_t)1 << 24)
#define MAX_INPUT_NUMEL ((int64_t)1 << 34)

/* protobuf-c unpacks nested messages recursively with no depth limit, so a small
 * file of deeply nested subgraphs overflows the stack. Real ONNX files nest a few
 * levels; refuse anything past Google protobuf's own default limit. */
#define MAX_NESTING 100

static int read_varint(const uint8_t *p, size_t len, size_t *i, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && *i < len; shift += 7) {
        uint8_t b = p[(*i)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 1;
        }
    }
    return 0;
}

/* Walk the wire format, reading every length-delimited field as a possible nested
 * message. Returns -1 if messages nest deeper than MAX_NESTING, else 0 (bytes that
 * are not a message simply end the walk of that field). */
static int nesting_too_deep(const uint8_t *p, size_t len, int depth) {
    if (depth > MAX_NESTING) return -1;
    size_t i = 0;
    while (i < len) {
        uint64_t key, v;
        if (!read_varint(p, len, &i, &key) || (key >> 3) == 0) return 0;
        switch (key & 7) {
        case 0:
            if (!read_varint(p, len, &i, &v)) return 0;
            break;
        case 1:
            if (len - i < 8) return 0;
            i += 8;
            break;
        case 5:
            if (len - i < 4) return 0;
            i += 4;
            break;
        case 2:
            if (!read_varint(p, len, &i, &v) || v > len - i) return 0;
            if (nesting_too_deep(p + i, (size_t)v, depth + 1) < 0) return -1;
            i += (size_t)v;
            break;
        default: return 0;
        }
    }
    return 0;
}

static const char *str_or_empty(const char *s) { return s ? s : ""; }

static int default_domain(const char *d) { return !d || !*d || !strcmp(d, "ai.onnx"); }

/* Initializers whose data type we do not convert: an error only if a node uses one. */
typedef struct skipped_init {
    const char *name;
    int32_t dtype;
} skipped_init;

typedef struct importer {
    lp_model *m;
    const char *file;
    const char *dir;
    skipped_init *skipped;
    size_t n_skipped;
} importer;

static lp_status read_opset(importer *im, const Onnx__ModelProto *mp) {
    int found = 0;
    for (size_t i = 0; i < mp->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *o = mp->opset_import[i];
        if (!o || !default_domain(o->domain)) continue;
        im->m->opset = o->has_version ? o->version : 1;
        found = 1;
    }
    if (!found) return lp_fail(LP_ERR_PARSE, "%s: no opset_import for the default ONNX domain", im->file);
    return LP_OK;
}

static lp_status read_initializers(importer *im, const Onnx__GraphProto *g) {
    im->skipped = lp_calloc(g->n_initializer + 1, sizeof *im->skipped);
    if (!im->skipped) return LP_ERR_OOM;
    for (size_t i = 0; i < g->n_initializer; i++) {
        const Onnx__TensorProto *tp = g->initializer[i];
        if (!tp || !tp->name || !*tp->name)
            return lp_fail(LP_ERR_PARSE, "%s: initializer #%zu has no name", im->file, i);
        int32_t dt = tp->has_data_type ? tp->data_type : 0;
        if (!lp_onnx_dtype_supported(dt)) {
            im->skipped[im->n_skipped].name = tp->name;
            im->skipped[im->n_skipped++].dtype = dt;
            continue;
        }
        char what[300];
        snprintf(what, sizeof what, "initializer '%s'", tp->name);
        lp_tensor *t;
        LP_TRY(lp_onnx_tensor(tp, im->dir, im->file, what, &t));
        int is_param = dt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT || dt == ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE;
        if (lp_model_add_initializer(im->m, tp->name, t, is_param) < 0) return LP_ERR_OOM;
    }
    return LP_OK;
}

static lp_status read_inputs(importer *im, const Onnx__GraphProto *g) {
    for (size_t i = 0; i < g->n_input; i++) {
        const Onnx__ValueInfoProto *vi = g->input[i];
        if (!vi || !vi->name || !*vi->name) return lp_fail(LP_ERR_PARSE, "%s: graph input #%zu has no name", im->file, i);
        int id = lp_model_find_value(im->m, vi->name);
        if (id >= 0 && im->m->values[id].init) continue; /* an initializer listed as input (old exporters) */
        int skipped = 0;
        for (size_t k = 0; k < im->n_skipped; k++) skipped |= !strcmp(im->skipped[k].name, vi->name);
        if (skipped) continue;
        if (!vi->type || vi->type->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !vi->type->tensor_type)
            return lp_fail(LP_ERR_UNSUPPORTED, "%s: graph input '%s' is not a tensor", im->file, vi->name);
        const Onnx__TypeProto__Tensor *tt = vi->type->tensor_type;
        if (tt->has_elem_type && tt->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
            return lp_fail(LP_ERR_UNSUPPORTED, "%s: graph input '%s' has element type %s (supported: FLOAT)", im->file,
                           vi->name, lp_onnx_dtype_name(tt->elem_type));
        if (!tt->shape)
            return lp_fail(LP_ERR_UNSUPPORTED, "%s: graph input '%s' has no declared shape", im->file, vi->name);
        if (tt->shape->n_dim > LP_MAX_DIMS)
            return lp_fail(LP_ERR_UNSUPPORTED, "%s: graph input '%s' has rank %zu (at most %d)", im->file, vi->name,
                           tt->shape->n_dim, LP_MAX_DIMS);
        lp_shape s = {.ndim = (int)tt->shape->n_dim};
        int64_t numel = 1;
        for (size_t k = 0; k < tt->shape->n_dim; k++) {
            const Onnx__TensorShapeProto__Dimension *d = tt->shape->dim[k];
            int64_t v = 1; /* dim_param ("batch") or missing: a batch of one */
            if (d && d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) {
                v = d->dim_value;
                if (v <= 0 || v > MAX_INPUT_DIM)
                    return lp_fail(LP_ERR_SHAPE, "%s: graph input '%s' has dimension %zu = %" PRId64 " (must be 1..%" PRId64 ")",
                                   im->file, vi->name, k, v, MAX_INPUT_DIM);
            }
            s.d[k] = v;
            numel *= v;
            if (numel > MAX_INPUT_NUMEL)
                return lp_fail(LP_ERR_SHAPE, "%s: graph input '%s' is too large", im->file, vi->name);
        }
        if (im->m->n_inputs >= (int)(sizeof im->m->inputs / sizeof im->m->inputs[0]))
            return lp_fail(LP_ERR_UNSUPPORTED, "%s: more than %d graph inputs", im->file,
                           (int)(sizeof im->m->inputs / sizeof im->m->inputs[0]));
        if (lp_model_add_input(im->m, vi->name, &s) < 0) return LP_ERR_OOM;
    }
    return LP_OK;
}

/* Copy one attribute; `ctx` names the node for messages. */
static lp_status read_attr(importer *im, lp_node *n, const Onnx__AttributeProto *a, const char *ctx) {
    if (!a || !a->name || !*a->name) return lp_fail(LP_ERR_PARSE, "%s: attribute without a name", ctx);
    int type = a->has_type ? (int)a->type : 0;
    if (!type) { /* IR version 1 files leave the type out: infer it from the filled field */
        if (a->g || a->n_graphs) type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH;
        else if (a->t) type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
        else if (a->n_floats) type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS;
        else if (a->n_ints) type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
        else if (a->n_strings) type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS;
        else if (a->has_s) type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
        else if (a->has_f) type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
        else type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    }
    lp_attr *at;
    switch (type) {
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT:
        if (!(at = lp_node_add_attr(n, a->name, LP_ATTR_FLOAT))) return LP_ERR_OOM;
        at->f = a->f;
        return LP_OK;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT:
        if (!(at = lp_node_add_attr(n, a->name, LP_ATTR_INT))) return LP_ERR_OOM;
        at->i = a->i;
        return LP_OK;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING: {
        if (!(at = lp_node_add_attr(n, a->name, LP_ATTR_STRING))) return LP_ERR_OOM;
        size_t len = a->has_s ? a->s.len : 0;
        if (!(at->s = lp_malloc(len + 1))) return LP_ERR_OOM;
        if (len) memcpy(at->s, a->s.data, len);
        at->s[len] = 0;
        return LP_OK;
    }
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR: {
        if (!a->t) return lp_fail(LP_ERR_PARSE, "%s: tensor attribute '%s' has no tensor", ctx, a->name);
        char what[300];
        snprintf(what, sizeof what, "attribute '%s' of node '%s'", a->name, n->name);
        lp_tensor *t;
        LP_TRY(lp_onnx_tensor(a->t, im->dir, im->file, what, &t));
        if (!(at = lp_node_add_attr(n, a->name, LP_ATTR_TENSOR))) {
            lp_tensor_free(t);
            return LP_ERR_OOM;
        }
        at->t = t;
        return LP_OK;
    }
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS:
        if (a->n_floats > INT32_MAX) return lp_fail(LP_ERR_PARSE, "%s: attribute '%s' is too long", ctx, a->name);
        if (!(at = lp_node_add_attr(n, a->name, LP_ATTR_FLOATS))) return LP_ERR_OOM;
        if (!(at->floats = lp_calloc(a->n_floats + 1, sizeof(float)))) return LP_ERR_OOM;
        if (a->n_floats) memcpy(at->floats, a->floats, a->n_floats * sizeof(float));
        at->n = (int)a->n_floats;
        return LP_OK;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS:
        if (a->n_ints > INT32_MAX) return lp_fail(LP_ERR_PARSE, "%s: attribute '%s' is too long", ctx, a->name);
        if (!(at = lp_node_add_attr(n, a->name, LP_ATTR_INTS))) return LP_ERR_OOM;
        if (!(at->ints = lp_calloc(a->n_ints + 1, sizeof(int64_t)))) return LP_ERR_OOM;
        if (a->n_ints) memcpy(at->ints, a->ints, a->n_ints * sizeof(int64_t));
        at->n = (int)a->n_ints;
        return LP_OK;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS:
        if (a->n_strings > INT32_MAX) return lp_fail(LP_ERR_PARSE, "%s: attribute '%s' is too long", ctx, a->name);
        if (!(at = lp_node_add_attr(n, a->name, LP_ATTR_STRINGS))) return LP_ERR_OOM;
        if (!(at->strings = lp_calloc(a->n_strings + 1, sizeof(char *)))) return LP_ERR_OOM;
        for (size_t k = 0; k < a->n_strings; k++) {
            if (!(at->strings[k] = lp_malloc(a->strings[k].len + 1))) return LP_ERR_OOM;
            at->n = (int)k + 1; /* so a failure part-way frees what exists */
            if (a->strings[k].len) memcpy(at->strings[k], a->strings[k].data, a->strings[k].len);
            at->strings[k][a->strings[k].len] = 0;
        }
        return LP_OK;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH:
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS:
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: attribute '%s' is a subgraph (control flow is not supported)", ctx, a->name);
    default:
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: attribute '%s' has an unsupported type %d", ctx, a->name, type);
    }
}

static lp_status read_nodes(importer *im, const Onnx__GraphProto *g) {
    for (size_t i = 0; i < g->n_node; i++) {
        const Onnx__NodeProto *np = g->node[i];
        if (!np) return lp_fail(LP_ERR_PARSE, "%s: node #%zu is empty", im->file, i);
        const char *op = str_or_empty(np->op_type);
        const char *first_out = np->n_output && np->output[0] ? np->output[0] : "";
        const char *name = np->name && *np->name ? np->name : first_out;
        char ctx[600];
        snprintf(ctx, sizeof ctx, "%s: node '%s' (%s)", im->file, name, op);
        if (!*op) return lp_fail(LP_ERR_PARSE, "%s: node #%zu ('%s') has no op_type", im->file, i, name);
        if (!default_domain(np->domain))
            return lp_fail(LP_ERR_UNSUPPORTED, "%s: unsupported op domain '%s'", ctx, np->domain);
        if (np->n_output < 1 || np->n_output > LP_MAX_IO || np->n_input > LP_MAX_IO)
            return lp_fail(LP_ERR_UNSUPPORTED, "%s: %zu inputs / %zu outputs (supported: up to %d, at least 1 output)", ctx,
                           np->n_input, np->n_output, LP_MAX_IO);
        const char *ins[LP_MAX_IO], *outs[LP_MAX_IO];
        for (size_t k = 0; k < np->n_input; k++) {
            ins[k] = str_or_empty(np->input[k]);
            for (size_t s = 0; *ins[k] && s < im->n_skipped; s++)
                if (!strcmp(im->skipped[s].name, ins[k]))
                    return lp_fail(LP_ERR_UNSUPPORTED, "%s: initializer '%s' has data type %s (not supported)", ctx, ins[k],
                                   lp_onnx_dtype_name(im->skipped[s].dtype));
        }
        for (size_t k = 0; k < np->n_output; k++) outs[k] = str_or_empty(np->output[k]);
        int idx = lp_model_add_node(im->m, op, name, (int)np->n_input, ins, (int)np->n_output, outs);
        if (idx < 0) return LP_ERR_OOM;
        for (size_t k = 0; k < np->n_attribute; k++)
            LP_TRY(read_attr(im, &im->m->nodes[idx], np->attribute[k], ctx));
    }
    return LP_OK;
}

static lp_status read_outputs(importer *im, const Onnx__GraphProto *g) {
    if (g->n_output == 0) return lp_fail(LP_ERR_PARSE, "%s: the graph has no output", im->file);
    for (size_t i = 0; i < g->n_output; i++) {
        const Onnx__ValueInfoProto *vi = g->output[i];
        if (!vi || !vi->name || !*vi->name) return lp_fail(LP_ERR_PARSE, "%s: graph output #%zu has no name", im->file, i);
        if (lp_model_find_value(im->m, vi->name) < 0)
            return lp_fail(LP_ERR_PARSE, "%s: graph output '%s' is not produced by any node", im->file, vi->name);
        if (im->m->n_outputs >= (int)(sizeof im->m->outputs / sizeof im->m->outputs[0]))
            return lp_fail(LP_ERR_UNSUPPORTED, "%s: more than %d graph outputs", im->file,
                           (int)(sizeof im->m->outputs / sizeof im->m->outputs[0]));
        lp_model_mark_output(im->m, vi->name);
    }
    return LP_OK;
}

static lp_status import_graph(importer *im, const Onnx__ModelProto *mp) {
    const Onnx__GraphProto *g = mp->graph;
    if (!g) return lp_fail(LP_ERR_PARSE, "%s: the model has no graph", im->file);
    LP_TRY(read_opset(im, mp));
    if (g->n_sparse_initializer)
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: sparse initializers are not supported", im->file);
    LP_TRY(read_initializers(im, g));
    LP_TRY(read_inputs(im, g));
    LP_TRY(read_nodes(im, g));
    LP_TRY(read_outputs(im, g));
    if (mp->producer_name && !(im->m->producer = lp_strdup(mp->producer_name))) return LP_ERR_OOM;
    /* Fold first: a Reshape fed by a Shape chain only has a static shape once the
     * chain is a constant. Folding skips what it cannot do; finalize then reports
     * unknown ops, dangling values and bad shapes with the node's name. */
    LP_TRY(lp_model_fold(im->m));
    lp_model_prune(im->m);
    return lp_model_finalize(im->m);
}

lp_status lp_model_load_mem(const void *buf, size_t len, const char *name, const char *dir, lp_model **out) {
    *out = NULL;
    const char *file = name ? name : "model";
    if (nesting_too_deep(buf, len, 0) < 0)
        return lp_fail(LP_ERR_PARSE, "%s: not a valid ONNX model (messages nested deeper than %d levels)", file, MAX_NESTING);
    Onnx__ModelProto *mp = onnx__model_proto__unpack(NULL, len, buf);
    if (!mp) return lp_fail(LP_ERR_PARSE, "%s: not a valid ONNX model (protobuf parse failed)", file);
    importer im = {.file = file, .dir = dir};
    im.m = lp_model_new();
    lp_status s = LP_ERR_OOM;
    if (im.m && (im.m->path = lp_strdup(file))) s = import_graph(&im, mp);
    free(im.skipped);
    onnx__model_proto__free_unpacked(mp, NULL);
    if (s != LP_OK) {
        lp_model_free(im.m);
        return s;
    }
    *out = im.m;
    return LP_OK;
}

lp_status lp_model_load(const char *path, lp_model **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return lp_fail(LP_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return lp_fail(LP_ERR_IO, "%s: not a regular file", path);
    }
    size_t len = (size_t)st.st_size;
    uint8_t *buf = lp_malloc(len ? len : 1);
    if (!buf) {
        fclose(f);
        return LP_ERR_OOM;
    }
    if (fread(buf, 1, len, f) != len) {
        fclose(f);
        free(buf);
        return lp_fail(LP_ERR_IO, "%s: read failed", path);
    }
    fclose(f);
    /* External data lives next to the model file. */
    char *dir = lp_strdup(path);
    if (!dir) {
        free(buf);
        return LP_ERR_OOM;
    }
    char *slash = strrchr(dir, '/');
    if (slash == dir) slash[1] = 0;
    else if (slash) *slash = 0;
    else strcpy(dir, ".");
    lp_status s = lp_model_load_mem(buf, len, path, dir, out);
    free(dir);
    free(buf);
    return s;
}
