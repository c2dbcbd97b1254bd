/* explain.c — lp_explain: the method registry (the families' tables joined), option
 * defaults, target resolution (one forward of the inputs gives top-1 classes and the
 * target scores) and the dispatch to a method. */
#include "attrib_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const _lp_method *method_find(const char *name);

static const _lp_method *const families[] = {_lp_methods_grad, _lp_methods_lrp, _lp_methods_cam,
                                             _lp_methods_perturb};
#define N_FAMILIES (int)(sizeof families / sizeof families[0])

static const _lp_method *method_at(int i) {
    for (int f = 0; f < N_FAMILIES; f++)
        for (const _lp_method *m = families[f]; m->name; m++)
            if (i-- == 0) return m;
    return NULL;
}

int lp_explain_method_count(void) {
    int n = 0;
    while (method_at(n)) n++;
    return n;
}

const char *lp_explain_method_name(int i) {
    const _lp_method *m = method_at(i);
    return m ? m->name : NULL;
}

const char *lp_explain_method_summary(int i) {
    const _lp_method *m = method_at(i);
    return m ? m->summary : NULL;
}

const char *lp_explain_method_list(void) {
    static char buf[1024];
    if (buf[0]) return buf;
    size_t len = 0;
    for (int i = 0; method_at(i); i++)
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", i ? ", " : "", method_at(i)->name);
    return buf;
}

const char *lp_explain_method_find(const char *name) {
    const _lp_method *m = method_find(name);
    return m ? m->name : NULL;
}

static const _lp_method *method_find(const char *name) {
    if (name && !strcmp(name, "deconvolution")) name = "deconvnet"; /* Captum's class name */
    for (int i = 0; name && method_at(i); i++)
        if (!strcmp(method_at(i)->name, name)) return method_at(i);
    return NULL;
}

void lp_explain_opts_default(lp_explain_opts *o) {
    memset(o, 0, sizeof *o);
    o->method = "saliency";
    o->uniform_hi = 1.0f;
    for (int c = 0; c < 3; c++) {
        o->low[c] = -1e30f; /* no box unless the caller knows the input's range */
        o->high[c] = 1e30f;
    }
}

/* Zero fields of the caller's options become the documented defaults. */
static void fill_defaults(lp_explain_opts *o) {
    if (o->batch <= 0) o->batch = 16;
    if (!o->seed) o->seed = 42;
    if (o->steps <= 0) o->steps = 50;
    if (o->blur_sigma <= 0) o->blur_sigma = 10.0f;
    if (o->samples <= 0) o->samples = !strcmp(o->method, "gradient_shap") ? 20 : 25;
    if (!o->lrp) o->lrp = "epsilon_plus_flat";
    if (o->epsilon <= 0) o->epsilon = 1e-6f;
    if (o->gamma <= 0) o->gamma = 0.25f;
    if (o->patch <= 0) o->patch = 16;
    if (o->stride <= 0) o->stride = 8;
    if (o->masks <= 0) o->masks = 4000;
    if (o->cells <= 0) o->cells = 7;
    if (o->keep <= 0) o->keep = 0.5f;
}

/* Users name layers by node or value name; the methods work on value names. */
static lp_status resolve_layer(const lp_model *m, const char **name) {
    const char *v = lp_model_layer_value(m, *name);
    if (!v)
        return lp_fail(LP_ERR_ARG, "%s: no layer named '%s' (see `loupe info` for node and output names)",
                       m->path ? m->path : "model", *name);
    *name = v;
    return LP_OK;
}

static lp_status check_layers(lp_model *m, lp_explain_opts *o) {
    lp_target *t = &o->target;
    if (o->layer && _lp_cam_method(o->method) && !lp_model_layer_value(m, o->layer))
        return _lp_cam_layer_missing(m, o->layer);
    if (o->layer) LP_TRY(resolve_layer(m, &o->layer));
    if (t->kind != LP_TARGET_NEURON && t->kind != LP_TARGET_CHANNEL) return LP_OK;
    if (!t->layer) return lp_fail(LP_ERR_ARG, "a neuron or channel target needs a layer");
    return resolve_layer(m, &t->layer);
}

/* The run mode method `meth` needs (layer: opts->layer, resolved). */
static _lp_keep method_keep(const lp_model *m, const _lp_method *meth, const char *layer) {
    int id = layer ? lp_model_find_value(m, layer) : -1;
    _lp_keep k = {meth->keep == _LP_KEEP_SCORES || meth->keep == _LP_KEEP_TAIL,
                  meth->keep == _LP_KEEP_LEAN || meth->keep == _LP_KEEP_LEAN_INPUT, -1, -1};
    if (meth->keep == _LP_KEEP_LEAN) k.lean_root = id;
    if (meth->keep == _LP_KEEP_TAIL) k.tail_root = id;
    return k;
}

/* CAM methods choose their layer before the first pass, from the shapes this input
 * gives every value, so that the run keeps it from the start. */
static lp_status cam_layer(const _lp_xctx *x, const lp_tensor *input, const char **layer) {
    const lp_model *m = x->m;
    lp_shape is = lp_tensor_shape(input), *shapes = NULL;
    const lp_shape *decl = m->n_inputs ? &m->values[m->inputs[0]].shape : NULL;
    /* (an input of another rank or channel count: static shapes, the forward says why) */
    if (x->ndim == 4 && decl && decl->ndim == 4 && decl->d[1] == is.d[1]) {
        if (!(shapes = lp_malloc((size_t)m->n_values * sizeof *shapes))) return LP_ERR_OOM;
        lp_status s = _lp_model_shapes_for(m, &is, shapes);
        if (s != LP_OK) {
            free(shapes);
            return s;
        }
    }
    lp_status s = _lp_cam_layer(x, shapes, layer);
    free(shapes);
    return s;
}

lp_status lp_explain(lp_run *r, const lp_tensor *input, const lp_explain_opts *opts, lp_tensor **attr,
                     lp_explain_info *info) {
    *attr = NULL;
    lp_explain_opts o;
    if (opts) o = *opts;
    else lp_explain_opts_default(&o);
    if (!o.method) o.method = "saliency";
    const _lp_method *meth = method_find(o.method);
    if (!meth) return lp_fail(LP_ERR_ARG, "unknown method '%s' (valid: %s)", o.method, lp_explain_method_list());
    fill_defaults(&o);
    if (input->dtype != LP_F32) return lp_fail(LP_ERR_UNSUPPORTED, "input must be float32");
    if (input->ndim < 2 || input->shape[0] < 1) return lp_fail(LP_ERR_SHAPE, "input needs a batch dimension");

    /* The run keeps what this method reads, and goes back to its caller's setting after. */
    _lp_keep was;
    _lp_run_get_keep(r, &was);

    _lp_xctx x = {0};
    x.run = r;
    x.m = _lp_run_model(r);
    x.o = &o;
    x.n = input->shape[0];
    x.per = lp_tensor_numel(input) / x.n;
    x.ndim = input->ndim;
    memcpy(x.shape, input->shape, sizeof x.shape);
    if (input->ndim == 4) {
        x.c = (int)input->shape[1];
        x.h = (int)input->shape[2];
        x.w = (int)input->shape[3];
    }
    lp_status s = check_layers(x.m, &o);
    if (s == LP_OK && _lp_cam_method(o.method)) s = cam_layer(&x, input, &o.layer);
    if (s != LP_OK) return s;

    float *host = NULL;
    if (input->device != LP_DEVICE_CPU) {
        host = lp_malloc(input->nbytes);
        if (!host) return LP_ERR_OOM;
        s = lp_tensor_read(input, host, input->nbytes);
        if (s != LP_OK) goto out;
        x.input = host;
    } else {
        x.input = input->data;
    }
    x.targets = lp_calloc((size_t)x.n, sizeof *x.targets);
    x.scores = lp_calloc((size_t)x.n, sizeof *x.scores);
    int64_t *owner = lp_calloc((size_t)x.n, sizeof *owner);
    if (!x.targets || !x.scores || !owner) {
        s = LP_ERR_OOM;
        goto out2;
    }
    _lp_keep k = method_keep(x.m, meth, o.layer);
    s = _lp_run_set_keep(r, &k);
    if (s == LP_OK && o.layer) s = lp_run_capture(r, o.layer); /* layer methods read it after the first forward */
    if (s != LP_OK) goto out2;
    /* Targets and scores at the inputs: a forward in batches. The last batch's
     * forward stays in the run, so a one-pass method on <= batch inputs reuses it. */
    int64_t bs = _lp_x_batch(&x);
    for (int64_t i0 = 0; i0 < x.n; i0 += bs) {
        int64_t b = x.n - i0 < bs ? x.n - i0 : bs;
        for (int64_t i = 0; i < b; i++) {
            owner[i] = i0 + i;
            x.targets[i0 + i] = -2; /* resolve: top-1 or the class */
        }
        s = _lp_x_forward(&x, x.input + i0 * x.per, b, owner, x.scores + i0);
        if (s != LP_OK) goto out2;
    }
    s = meth->run(&x, attr);
    if (s == LP_OK && info) {
        if (info->targets) memcpy(info->targets, x.targets, (size_t)x.n * sizeof *x.targets);
        if (info->scores) memcpy(info->scores, x.scores, (size_t)x.n * sizeof *x.scores);
        info->passes = x.passes;
        info->layer = o.layer;
    }
    if (s != LP_OK) {
        lp_tensor_free(*attr);
        *attr = NULL;
    }
out2:
    free(owner);
    free(x.targets);
    free(x.scores);
out:
    free(host);
    lp_status ks = _lp_run_set_keep(r, &was); /* the caller's setting again */
    return s != LP_OK ? s : ks;
}
