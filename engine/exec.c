/* exec.c — the executor: one forward over a batch (by default every value kept, so
 * methods can read any activation and backward can reuse them; forward-only and lean
 * runs keep less, in a planned arena), and backward from any value to
 * the input, intermediates and weights, with per-op rules taken from a table so that
 * modified backward passes (guided, deconvnet, LRP) reuse this code unchanged. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* A CUDA graph of one pass and the key it was captured under: every pointer, shape
 * and setting the pass's kernels were launched with. A pass whose key repeats the
 * last pass's is captured; from then on the same key replays the graph. */
typedef struct pass_graph {
    uint64_t *key;
    size_t n_key;
    int refused;    /* this key's pass is not graphable (it copies to or from the host) */
    lp_graph *g;
    char *live;     /* backward: which gradients the pass leaves live */
} pass_graph;

struct lp_run {
    lp_model *m;
    lp_device dev;
    const lp_backend *be;
    lp_tensor **val;   /* per value: its tensor after forward */
    char *owned;       /* val[v] belongs to the run (else it is the model's constant) */
    lp_tensor **grad;  /* per value: gradient buffer (kept across backward passes) */
    char *grad_live;   /* grad[v] holds this backward's gradient */
    lp_shape *shapes;  /* per value: this run's shapes */
    char *capture;     /* values the caller asked for */
    int capture_all;
    int has_forward;
    int64_t gen;       /* the model's weights_gen the device copies hold (-1: none yet) */
    int forward_only;  /* no backward: activations share one arena (below) */
    int lean;          /* backward passes are plain input gradients: only what they read is kept */
    int lean_root;     /* lean: the value its gradients stop at (-1: the inputs) */
    int tail_root;     /* forward-only: the value its tail re-runs from (-1: none) */
    int *fuse;         /* per node (forward_only, lean): the Relu node fused into this Conv, or -1 */
    char *fused;       /* per node: a Relu computed by its Conv (skipped) */
    int graphs;        /* CUDA graphs: -1 not decided yet, 0 off, 1 on */
    pass_graph pg[2];  /* [0] forward, [1] backward */
    uint64_t *key;     /* the key of the pass about to run */
    size_t n_key;
    int64_t n_replays; /* passes replayed from a graph */
    lp_tensor **aux;   /* per node: its op's derived constants (lp_op.derive), or NULL */
    int64_t aux_gen;   /* the weights_gen they were derived from (-1: none yet) */
    /* The memory plan of forward-only and lean runs, made per set of shapes: values no
     * one reads after the forward, and (lean) gradients no one reads after the backward,
     * are views into one arena, at offsets that share bytes between buffers that are
     * never alive at once. Their addresses are fixed, so the passes can be graphs. */
    lp_tensor *arena;
    char *transient;   /* per value: its activation lives in the arena (read only in the forward) */
    char *gtransient;  /* per value: its gradient lives in the arena (read only in the backward) */
    char *packed;      /* per value (lp_backend.packed): stored packed, bf16 NHWC; 2: and a
                        * lean run's backward reads it (so it lives through that) */
    char *gpacked;     /* per value (lean, lp_backend.packed): its gradient is packed */
    int shared_grads;  /* lean: gradients sharing an Add's output gradient's buffer */
    lp_shape *plan_shapes; /* the shapes the plan was made for */
    int plan_ok;       /* the plan matches the run's mode and captures */
};

static int planned(const lp_run *r) { return r->forward_only || r->lean; }
static void drop_plan(lp_run *r);

static lp_status value_id(const lp_run *r, const char *name, int *id) {
    *id = lp_model_find_value(r->m, name);
    if (*id < 0)
        return lp_fail(LP_ERR_ARG, "%s: no value named '%s' (see `loupe info` for node and output names)",
                       r->m->path ? r->m->path : "model", name);
    return LP_OK;
}

lp_status lp_run_new(lp_model *m, lp_device dev, lp_run **out) {
    *out = NULL;
    const lp_backend *be = lp_backend_get(dev);
    if (!be) return LP_ERR_DEVICE;
    lp_run *r = lp_calloc(1, sizeof *r);
    if (!r) return LP_ERR_OOM;
    size_t nv = (size_t)m->n_values + 1;
    r->m = m;
    r->dev = dev;
    r->be = be;
    r->gen = -1;
    r->graphs = -1;
    r->aux_gen = -1;
    r->lean_root = r->tail_root = -1;
    r->val = lp_calloc(nv, sizeof *r->val);
    r->owned = lp_calloc(nv, 1);
    r->grad = lp_calloc(nv, sizeof *r->grad);
    r->grad_live = lp_calloc(nv, 1);
    r->shapes = lp_calloc(nv, sizeof *r->shapes);
    r->capture = lp_calloc(nv, 1);
    if (!r->val || !r->owned || !r->grad || !r->grad_live || !r->shapes || !r->capture) {
        lp_run_free(r);
        return LP_ERR_OOM;
    }
    *out = r;
    return LP_OK;
}

lp_status lp_run_set_precision(lp_run *r, lp_precision p) {
    if (p == LP_PREC_FP32 && r->dev == LP_DEVICE_CPU) return LP_OK;
    if (r->dev != LP_DEVICE_CUDA)
        return lp_fail(LP_ERR_DEVICE, "precision %s needs the CUDA backend (tensor cores); the CPU computes in fp32",
                       lp_precision_name(p));
    const lp_backend *be = lp_backend_cuda_precision(p);
    if (!be) return LP_ERR_DEVICE;
    if (be != r->be && planned(r) && (be->packed || r->be->packed)) drop_plan(r); /* which values pack depends on it */
    r->be = be;
    return LP_OK;
}

void lp_run_free(lp_run *r) {
    if (!r) return;
    for (int v = 0; r->val && v < r->m->n_values; v++) {
        if (r->owned[v]) lp_tensor_free(r->val[v]);
        if (r->grad) lp_tensor_free(r->grad[v]);
    }
    free(r->val);
    free(r->owned);
    free(r->grad);
    free(r->grad_live);
    free(r->shapes);
    free(r->capture);
    free(r->fuse);
    free(r->fused);
    lp_tensor_free(r->arena);
    free(r->transient);
    free(r->gtransient);
    free(r->packed);
    free(r->gpacked);
    free(r->plan_shapes);
    for (int p = 0; p < 2; p++) {
        lp_cuda_graph_free(r->pg[p].g);
        free(r->pg[p].key);
        free(r->pg[p].live);
    }
    free(r->key);
    for (int i = 0; r->aux && i < r->m->n_nodes; i++) lp_tensor_free(r->aux[i]);
    free(r->aux);
    free(r);
}

/* Is node n an activation a convolution can apply in its last pass: a Relu, or a
 * ReLU6 (Clip(0, 6), as PyTorch exports it)? Both may also run on packed values: 6 is
 * exact in bf16, so a packed output at the cap still tells the backward where to stop. */
static int is_act(const lp_model *m, const lp_node *n) { return _lp_act_of(m, n) > 0.f; }

/* Forward-only and lean runs fuse each activation (a ReLU, or ReLU6) that is a
 * convolution's only reader into the convolution's last pass (bias and activation in
 * one read and write), and each one that is a BatchNormalization's (DenseNet's and
 * pre-activation ResNets' BN -> ReLU, where BN follows a Concat or an Add and so is
 * not folded into a Conv) into its per-channel affine: the pre-activation is never
 * stored (the activations' backwards read their outputs). Runs that keep activations
 * do not fuse, since methods and backward rules may read any value. */
static lp_status plan_fusion(lp_run *r) {
    const lp_model *m = r->m;
    int *readers = lp_calloc((size_t)m->n_values + 1, sizeof *readers);
    r->fuse = lp_calloc((size_t)m->n_nodes + 1, sizeof *r->fuse);
    r->fused = lp_calloc((size_t)m->n_nodes + 1, 1);
    if (!readers || !r->fuse || !r->fused) {
        free(readers), free(r->fuse), free(r->fused);
        r->fuse = NULL, r->fused = NULL;
        return LP_ERR_OOM;
    }
    for (int i = 0; i < m->n_nodes; i++) {
        r->fuse[i] = -1;
        for (int k = 0; k < m->nodes[i].n_in; k++)
            if (m->nodes[i].in[k] >= 0) readers[m->nodes[i].in[k]]++;
    }
    for (int k = 0; k < m->n_outputs; k++) readers[m->outputs[k]]++; /* an output is kept: never fused away */
    const char *off = getenv("LOUPE_FUSE");
    for (int j = 0; j < m->n_nodes && !(off && !strcmp(off, "0")); j++) {
        const lp_node *n = &m->nodes[j];
        if (!is_act(m, n) || n->n_out != 1 || n->in[0] < 0) continue;
        int v = n->in[0], i = m->values[v].producer;
        const char *t = i >= 0 ? m->nodes[i].op->type : "";
        if (i < 0 || readers[v] != 1 || (strcmp(t, "Conv") && strcmp(t, "BatchNormalization")) || m->nodes[i].n_out != 1)
            continue;
        r->fuse[i] = j;
        r->fused[j] = 1;
    }
    free(readers);
    return LP_OK;
}

/* The Relu node fused into Conv node i in this pass, or -1: a value the caller asked
 * to keep is stored as computed. */
static int fusion_partner(const lp_run *r, int i) {
    int j = r->fuse[i];
    const int v = r->m->nodes[i].out[0];
    if (j < 0 || r->capture_all || r->capture[v] || v == r->lean_root || v == r->tail_root) return -1;
    return j;
}

/* Is node i a Relu that its convolution computed (skipped in this pass)? */
static int fused_away(const lp_run *r, int i) {
    return planned(r) && r->fused && r->fused[i] && fusion_partner(r, r->m->values[r->m->nodes[i].in[0]].producer) == i;
}

/* Forget the Add+Relu pairs a packing plan fused (plan_packing). */
static void unfuse_adds(lp_run *r) {
    for (int i = 0; r->fuse && i < r->m->n_nodes; i++)
        if (r->fuse[i] >= 0 && !strcmp(r->m->nodes[i].op->type, "Add")) r->fused[r->fuse[i]] = 0, r->fuse[i] = -1;
}

/* Is node j an activation its Conv computed (so the Conv writes its output, packed if
 * plan_packing says so)? A BatchNormalization's writes fp32 only. */
static int conv_fused(const lp_run *r, int j) {
    const lp_model *m = r->m;
    return fused_away(r, j) && !strcmp(m->nodes[m->values[m->nodes[j].in[0]].producer].op->type, "Conv");
}

/* Forget the memory plan: every activation and gradient the run made goes (the next
 * forward makes them again, as the mode then says). */
static void drop_plan(lp_run *r) {
    for (int v = 0; v < r->m->n_values; v++) {
        if (r->owned[v] && !r->m->values[v].init) {
            lp_tensor_free(r->val[v]);
            r->val[v] = NULL;
            r->owned[v] = 0;
        }
        lp_tensor_free(r->grad[v]);
        r->grad[v] = NULL;
        r->grad_live[v] = 0;
    }
    lp_tensor_free(r->arena);
    r->arena = NULL;
    if (r->transient) memset(r->transient, 0, (size_t)r->m->n_values);
    if (r->gtransient) memset(r->gtransient, 0, (size_t)r->m->n_values);
    if (r->packed) memset(r->packed, 0, (size_t)r->m->n_values);
    if (r->gpacked) memset(r->gpacked, 0, (size_t)r->m->n_values);
    unfuse_adds(r);
    r->plan_ok = 0;
    r->shared_grads = 0;
    r->has_forward = 0;
}

/* Gradients stop, and tails re-run, at float values the graph computes (or its input). */
static lp_status activation_id(const lp_run *r, int id, const char *what) {
    const lp_value *v = &r->m->values[id];
    if (v->dtype != LP_F32 || v->init)
        return lp_fail(LP_ERR_ARG, "%s '%s': a constant or integer value, not an activation", what, v->name);
    return LP_OK;
}

lp_status _lp_run_set_keep(lp_run *r, const _lp_keep *k) {
    const int fo = k->forward_only && !k->lean, lean = k->lean;
    const int root = lean ? k->lean_root : -1, tail = fo ? k->tail_root : -1;
    if (root >= 0) LP_TRY(activation_id(r, root, "lean run stopping at"));
    if (tail >= 0) LP_TRY(activation_id(r, tail, "forward-only run re-running from"));
    if (fo == r->forward_only && lean == r->lean && root == r->lean_root && tail == r->tail_root) return LP_OK;
    if ((fo || lean) && !r->fuse) LP_TRY(plan_fusion(r));
    drop_plan(r); /* what the old mode kept is not what the new one needs */
    r->forward_only = fo;
    r->lean = lean;
    r->lean_root = root;
    r->tail_root = tail;
    return LP_OK;
}

void _lp_run_get_keep(const lp_run *r, _lp_keep *k) {
    *k = (_lp_keep){r->forward_only, r->lean, r->lean_root, r->tail_root};
}

lp_status lp_run_set_forward_only(lp_run *r, int on) {
    _lp_keep k = {on, on ? 0 : r->lean, r->lean_root, -1};
    return _lp_run_set_keep(r, &k);
}

lp_status lp_run_set_lean(lp_run *r, int on) {
    _lp_keep k = {on ? 0 : r->forward_only, on, -1, -1};
    return _lp_run_set_keep(r, &k);
}

lp_status lp_run_set_lean_at(lp_run *r, const char *stop_at) {
    int id = -1;
    if (stop_at) LP_TRY(value_id(r, stop_at, &id));
    _lp_keep k = {0, 1, id, -1};
    return _lp_run_set_keep(r, &k);
}

lp_status lp_run_capture(lp_run *r, const char *name) {
    if (!strcmp(name, "*")) {
        if (planned(r) && !r->capture_all && r->plan_ok) r->has_forward = 0; /* it kept only some */
        r->plan_ok &= r->capture_all;
        r->capture_all = 1;
        return LP_OK;
    }
    int id;
    LP_TRY(value_id(r, name, &id));
    if (planned(r) && !r->capture[id] && !r->capture_all && r->transient && r->transient[id])
        r->has_forward = 0; /* the last forward did not keep it */
    r->plan_ok &= r->capture[id];
    r->capture[id] = 1;
    return LP_OK;
}

/* A run-owned tensor for value v of shape s, reusing the last one when it fits. */
static lp_status ensure_tensor(lp_run *r, int v, const lp_shape *s, lp_dtype dt) {
    lp_tensor *t = r->val[v];
    if (t && r->owned[v] && t->dtype == dt) {
        lp_shape ts = lp_tensor_shape(t);
        if (lp_shape_eq(&ts, s)) return LP_OK;
    }
    if (r->owned[v]) lp_tensor_free(t);
    r->val[v] = NULL;
    r->owned[v] = 0;
    /* Planned runs' tensors are remade whenever their plan is: skip the fill, as every
     * op's forward writes its whole output (_lp_run_forward_from relies on it too). */
    if (planned(r) && dt == LP_F32) LP_TRY(_lp_tensor_new_uninit(&r->val[v], r->dev, dt, s));
    else LP_TRY(lp_tensor_new_shape(&r->val[v], r->dev, dt, s));
    r->owned[v] = 1;
    return LP_OK;
}

/* Ops' derived constants (lp_op.derive), once per weight generation, on the run's
 * device. */
static lp_status derive_constants(lp_run *r) {
    lp_model *m = r->m;
    if (r->aux_gen == m->weights_gen) return LP_OK;
    if (!r->aux && !(r->aux = lp_calloc((size_t)m->n_nodes + 1, sizeof *r->aux))) return LP_ERR_OOM;
    lp_ctx c = {.be = r->be, .model = m};
    for (int i = 0; i < m->n_nodes; i++) {
        lp_tensor_free(r->aux[i]);
        r->aux[i] = NULL;
        lp_derive_fn derive = lp_op_derive(m->nodes[i].op);
        if (!derive) continue;
        lp_status s = derive(&c, &m->nodes[i], &r->aux[i]);
        if (s != LP_OK) {
            char ctx[512];
            return lp_fail_prefix(s, "%s", lp_node_ctx(m, &m->nodes[i], ctx, sizeof ctx));
        }
    }
    r->aux_gen = m->weights_gen;
    return LP_OK;
}

/* Constants live in the model on the host; on another device the run keeps a copy. */
static lp_status bind_constants(lp_run *r) {
    lp_model *m = r->m;
    /* Device copies of the weights stay valid until the host weights change. */
    if (r->dev != LP_DEVICE_CPU && r->gen == m->weights_gen) return LP_OK;
    for (int v = 0; v < m->n_values; v++) {
        lp_tensor *init = m->values[v].init;
        if (!init) continue;
        r->shapes[v] = lp_tensor_shape(init);
        if (r->dev == LP_DEVICE_CPU || init->dtype == LP_I64) {
            r->val[v] = init;
            r->owned[v] = 0;
        } else {
            LP_TRY(ensure_tensor(r, v, &r->shapes[v], init->dtype));
            LP_TRY(r->be->upload(r->val[v]->data, init->data, init->nbytes));
        }
    }
    r->gen = m->weights_gen;
    return derive_constants(r);
}

/* Which values carry a gradient: those that depend on the input, or on `root` alone
 * when root >= 0 (a backward that stops there), or with weight gradients on a weight. */
static void grad_required(const lp_model *m, int weight_grads, int root, char *req) {
    memset(req, 0, (size_t)m->n_values + 1);
    for (int i = 0; root < 0 && i < m->n_inputs; i++) req[m->inputs[i]] = 1;
    if (root >= 0) req[root] = 1;
    if (weight_grads)
        for (int v = 0; v < m->n_values; v++)
            if (m->values[v].is_param) req[v] = 1;
    for (int i = 0; i < m->n_nodes; i++) {
        const lp_node *n = &m->nodes[i];
        int any = 0;
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] >= 0 && req[n->in[k]] && m->values[n->in[k]].dtype == LP_F32) any = 1;
        for (int k = 0; k < n->n_out; k++)
            req[n->out[k]] = (any || n->out[k] == root) && m->values[n->out[k]].dtype == LP_F32;
    }
}

/* Values a forward-only or lean run must keep whole after its forward: inputs,
 * outputs, captures, int64 values (keep), and (lean) what the plain backward reads
 * (bread). */
static void plan_keep(const lp_run *r, const char *req, char *keep, char *bread) {
    const lp_model *m = r->m;
    for (int v = 0; v < m->n_values; v++)
        keep[v] = r->capture[v] || m->values[v].dtype != LP_F32 || m->values[v].init != NULL;
    for (int i = 0; i < m->n_inputs; i++) keep[m->inputs[i]] = 1;
    for (int k = 0; k < m->n_outputs; k++) keep[m->outputs[k]] = 1;
    if (r->lean_root >= 0) keep[r->lean_root] = 1; /* where its gradients stop: what they are for */
    if (r->tail_root >= 0) { /* the tail re-runs: what it reads from before its root stays */
        char *down = lp_calloc((size_t)m->n_values + 1, 1);
        if (down) down[r->tail_root] = keep[r->tail_root] = 1;
        for (int i = 0; down && i < m->n_nodes; i++) {
            const lp_node *n = &m->nodes[i];
            int tail = 0;
            for (int k = 0; k < n->n_in; k++) tail |= n->in[k] >= 0 && down[n->in[k]];
            if (!tail) continue;
            for (int k = 0; k < n->n_in; k++)
                if (n->in[k] >= 0 && !down[n->in[k]]) keep[n->in[k]] = 1;
            for (int k = 0; k < n->n_out; k++) down[n->out[k]] = 1;
        }
        if (!down) memset(keep, 1, (size_t)m->n_values); /* out of memory: keep all, still right */
        free(down);
    }
    for (int i = 0; req && i < m->n_nodes; i++) {
        const lp_node *n = &m->nodes[i];
        char din[LP_MAX_IO] = {0}, rd[LP_MAX_IO];
        int any = 0, out_read;
        for (int k = 0; k < n->n_in; k++) any |= din[k] = n->in[k] >= 0 && req[n->in[k]];
        if (!any) continue; /* the backward never runs this node */
        lp_op_backward_reads(m, n, din, rd, &out_read);
        for (int k = 0; k < n->n_in; k++)
            if (rd[k] && n->in[k] >= 0) bread[n->in[k]] = 1;
        for (int k = 0; out_read && k < n->n_out; k++) bread[n->out[k]] = 1;
    }
}

static int pools(const lp_node *n) {
    const char *t = n->op->type;
    return !strcmp(t, "MaxPool") || !strcmp(t, "AveragePool") || !strcmp(t, "GlobalMaxPool") ||
           !strcmp(t, "GlobalAveragePool");
}

/* Can node i hold value v packed (lp_backend.packed), as its output or (as_input)
 * an input? Convolutions and pooling read and write the layout directly (v as the
 * data input, not a weight), forward and backward; Relu (and ReLU6) and same-shape
 * Add are elementwise, so any layout is theirs. Of these, a lean backward
 * reads only a Relu's output and a max pooling's input (a Conv's input only for
 * weight gradients, which lean runs never take), and reads them packed. */
static int packs(const lp_run *r, int i, int v, int as_input) {
    const lp_node *n = &r->m->nodes[i];
    const char *t = n->op->type;
    if (!strcmp(t, "Conv"))
        return !as_input || (n->in[0] == v && n->in[1] != v && (n->n_in < 3 || n->in[2] != v));
    if (is_act(r->m, n)) return !as_input || n->in[0] == v; /* not a Clip's bounds */
    if (pools(n)) return n->in[0] == v || n->out[0] == v; /* not its unused Indices */
    if (!strcmp(t, "Add"))
        return n->n_in == 2 && n->in[0] >= 0 && n->in[1] >= 0 &&
               lp_shape_eq(&r->shapes[n->in[0]], &r->shapes[n->out[0]]) &&
               lp_shape_eq(&r->shapes[n->in[1]], &r->shapes[n->out[0]]);
    return 0;
}

/* Which activations a forward-only or lean run stores packed, as bf16 NHWC (backends
 * with lp_backend.packed; LOUPE_PACK=0 turns it off): 4-D values the caller does not
 * keep, that a Conv (or the Relu fused into one), a same-shape Add, a Relu or a
 * pooling writes and only such nodes read ("Relu" here: also ReLU6). An Add's inputs
 * and output are packed together or not at all; a pooling (and, forward-only, a Relu) may read a packed
 * value and write it unpacked (where the network leaves its convolutions), not the
 * reverse. Everything else stays fp32 NCHW, so other ops never see the layout. A lean
 * run packs those values' gradients too (gpacked), and the values its backward reads
 * (Relu outputs, max pooling inputs) live on packed; there a Relu is all packed or
 * not at all. */
static void plan_packing(lp_run *r, const char *keep, const char *bread) { /* bread: see packs() */
    const lp_model *m = r->m;
    char *pk = r->packed, *gpk = r->gpacked;
    memset(pk, 0, (size_t)m->n_values);
    memset(gpk, 0, (size_t)m->n_values);
    unfuse_adds(r);
    const char *off = getenv("LOUPE_PACK");
    if (!planned(r) || !r->be->packed || r->capture_all || (off && !strcmp(off, "0"))) return;
    for (int v = 0; v < m->n_values; v++) {
        const int p = m->values[v].producer;
        pk[v] = !keep[v] && p >= 0 && m->values[v].dtype == LP_F32 && r->shapes[v].ndim == 4 &&
                lp_shape_numel(&r->shapes[v]) > 0 &&
                (fused_away(r, p) ? conv_fused(r, p) : packs(r, p, v, 0) && fusion_partner(r, p) < 0);
    }
    for (int i = 0; i < m->n_nodes; i++)
        for (int k = 0; k < m->nodes[i].n_in; k++) {
            const int v = m->nodes[i].in[k];
            if (v >= 0 && pk[v] && (fused_away(r, i) || !packs(r, i, v, 1))) pk[v] = 0;
        }
    for (int changed = 1; changed;) {
        changed = 0;
        for (int i = 0; i < m->n_nodes; i++) {
            const lp_node *n = &m->nodes[i];
            if (fused_away(r, i)) continue;
            if (!strcmp(n->op->type, "Add")) {
                const int a = pk[n->in[0]], b = pk[n->in[1]], o = pk[n->out[0]];
                if ((a || b || o) && !(a && b && o)) pk[n->in[0]] = pk[n->in[1]] = pk[n->out[0]] = 0, changed = 1;
            } else if (r->lean && is_act(m, n) && pk[n->in[0]] != pk[n->out[0]]) {
                pk[n->in[0]] = pk[n->out[0]] = 0, changed = 1;
            } else if ((is_act(m, n) || pools(n)) && pk[n->out[0]] && !pk[n->in[0]]) {
                pk[n->out[0]] = 0, changed = 1;
            }
        }
    }
    /* Lean: each packed value's gradient is packed, and so is a fused Relu's input's
     * (never stored; its gradient runs from the Relu's backward to the Conv's). */
    for (int v = 0; r->lean && v < m->n_values; v++) gpk[v] = pk[v];
    for (int j = 0; r->lean && j < m->n_nodes; j++)
        if (fused_away(r, j)) gpk[m->nodes[j].in[0]] = pk[m->nodes[j].out[0]];
    for (int v = 0; r->lean && v < m->n_values; v++)
        if (pk[v] && bread[v]) pk[v] = 2; /* read again by the backward */
}

/* A same-shape Add whose only reader is a Relu computes the Relu too (a ResNet's
 * residual sum is never stored), as a Conv does its Relu: packed (packed_add) or in
 * fp32 (add_relu), the Add's inputs, output and the Relu's output all alike. After
 * plan_packing; LOUPE_FUSE=0 turns it off with the Conv fusions. */
static void fuse_adds(lp_run *r, const char *keep) {
    const lp_model *m = r->m;
    char *pk = r->packed; /* plan_packing unfused the last plan's Adds */
    const char *off = getenv("LOUPE_FUSE");
    if (!planned(r) || !r->fuse || r->capture_all || (off && !strcmp(off, "0"))) return;
    int *readers = lp_calloc((size_t)m->n_values + 1, sizeof *readers);
    if (!readers) return; /* out of memory: no such fusion, still right */
    for (int i = 0; i < m->n_nodes; i++)
        for (int k = 0; k < m->nodes[i].n_in; k++)
            if (m->nodes[i].in[k] >= 0) readers[m->nodes[i].in[k]]++;
    for (int j = 0; j < m->n_nodes; j++) {
        const lp_node *n = &m->nodes[j];
        if (strcmp(n->op->type, "Relu") || n->n_in != 1 || n->in[0] < 0 || fused_away(r, j)) continue;
        const int v = n->in[0], y = n->out[0], i = m->values[v].producer;
        if (i < 0 || readers[v] != 1 || keep[v] || strcmp(m->nodes[i].op->type, "Add")) continue;
        const lp_node *a = &m->nodes[i];
        if (a->n_in != 2 || a->in[0] < 0 || a->in[1] < 0 || m->values[v].dtype != LP_F32 ||
            !lp_shape_eq(&r->shapes[a->in[0]], &r->shapes[v]) || !lp_shape_eq(&r->shapes[a->in[1]], &r->shapes[v]))
            continue;
        const int packed = pk[v] && pk[y] && pk[a->in[0]] && pk[a->in[1]];
        const int plain = !pk[v] && !pk[y] && !pk[a->in[0]] && !pk[a->in[1]] && r->be->add_relu;
        if (!packed && !plain) continue;
        r->fuse[i] = j, r->fused[j] = 1;
        pk[v] = 0; /* never stored */
    }
    free(readers);
}

/* The memory plan for this pass's shapes (see lp_run.arena). Steps 0..T-1 are the
 * forward's nodes, T..2T-1 the backward's, last node first. */
static lp_status ensure_plan(lp_run *r) {
    const lp_model *m = r->m;
    const int T = m->n_nodes, nv = m->n_values;
    if (r->plan_ok && !memcmp(r->plan_shapes, r->shapes, (size_t)nv * sizeof *r->shapes)) return LP_OK;
    drop_plan(r);
    if (!r->plan_shapes) r->plan_shapes = lp_calloc((size_t)nv + 1, sizeof *r->plan_shapes);
    if (!r->transient) r->transient = lp_calloc((size_t)nv + 1, 1);
    if (!r->gtransient) r->gtransient = lp_calloc((size_t)nv + 1, 1);
    if (!r->packed) r->packed = lp_calloc((size_t)nv + 1, 1);
    if (!r->gpacked) r->gpacked = lp_calloc((size_t)nv + 1, 1);
    char *keep = lp_calloc(2 * ((size_t)nv + 1), 1), *bread = keep ? keep + nv + 1 : NULL;
    char *req = r->lean ? lp_calloc((size_t)nv + 1, 1) : NULL;
    int *first = lp_malloc(((size_t)nv + 1) * 2 * sizeof *first), *last = first ? first + nv + 1 : NULL;
    int *gfirst = lp_malloc(((size_t)nv + 1) * 2 * sizeof *gfirst), *gitem = gfirst ? gfirst + nv + 1 : NULL;
    lp_plan_item *it = lp_malloc(((size_t)nv + 1) * 2 * sizeof *it);
    int *who = lp_malloc(((size_t)nv + 1) * 2 * sizeof *who); /* item -> value (+nv: its gradient) */
    lp_status s = LP_OK;
    if (!r->plan_shapes || !r->transient || !r->gtransient || !r->packed || !r->gpacked || !keep || (r->lean && !req) ||
        !first || !gfirst || !it || !who) {
        s = LP_ERR_OOM;
        goto out;
    }
    if (req) grad_required(m, 0, r->lean_root, req);
    plan_keep(r, req, keep, bread);
    plan_packing(r, keep, bread);
    fuse_adds(r, keep);
    for (int v = 0; v < nv; v++) first[v] = last[v] = gfirst[v] = gitem[v] = -1; /* gitem: a gradient's item */
    for (int i = 0; i < T; i++) {
        const lp_node *n = &m->nodes[i];
        for (int k = 0; k < n->n_in; k++) /* a gradient's first step: its last reader's backward */
            if (n->in[k] >= 0) gfirst[n->in[k]] = 2 * T - 1 - i;
        if (fused_away(r, i)) continue;
        const int fj = fusion_partner(r, i);
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] >= 0) last[n->in[k]] = i;
        for (int k = 0; k < n->n_out; k++) {
            int v = fj >= 0 ? m->nodes[fj].out[0] : n->out[k]; /* fused: the conv writes the ReLU's output */
            if (first[v] < 0) first[v] = i;
            if (last[v] < i) last[v] = i;
        }
    }
    int ni = 0;
    for (int v = 0; v < nv; v++) {
        if (r->capture_all || keep[v] || (bread[v] && !r->packed[v]) || m->values[v].producer < 0) continue;
        const int64_t bytes = lp_shape_numel(&r->shapes[v]) * (r->packed[v] ? 2 : (int64_t)sizeof(float));
        if (first[v] >= 0 && bytes > 0) {
            /* packed for a lean backward: alive to the last step, for every backward of this forward */
            it[ni] = (lp_plan_item){(size_t)bytes, first[v], r->packed[v] == 2 ? 2 * T - 1 : last[v], 0};
            who[ni++] = v;
        }
        r->transient[v] = 1; /* also when never stored (a fused pre-activation) */
    }
    for (int v = 0; req && v < nv; v++) {
        /* gradients the caller cannot ask for: of values neither captured nor outputs */
        if (!req[v] || r->capture_all || r->capture[v] || v == r->lean_root || m->values[v].producer < 0) continue;
        int is_out = 0;
        for (int k = 0; k < m->n_outputs; k++) is_out |= m->outputs[k] == v;
        const int64_t bytes = lp_shape_numel(&r->shapes[v]) * (r->gpacked[v] ? 2 : (int64_t)sizeof(float));
        if (is_out || bytes <= 0) continue;
        r->gtransient[v] = 1;
        gitem[v] = ni;
        int g0 = gfirst[v] < 0 ? T : gfirst[v]; /* never read by a node: seeded as the pass starts */
        it[ni] = (lp_plan_item){(size_t)bytes, g0, 2 * T - 1 - m->values[v].producer, 0};
        who[ni++] = nv + v;
    }
    /* A same-shape Add hands its gradient unchanged to both inputs. An input whose first
     * gradient is the Add's (the Add is its last reader) takes the Add's gradient
     * buffer as its own, so that backward step copies nothing (binary_backward sees
     * din == dout): one item for both, alive from the output's first step to the
     * input's last. Walking the nodes last first extends chains of Adds to their root. */
    for (int i = T - 1; req && i >= 0; i--) {
        const lp_node *n = &m->nodes[i];
        if (strcmp(n->op->type, "Add") || n->n_in != 2 || n->in[0] < 0 || n->in[0] == n->in[1]) continue;
        const int o = n->out[0];
        for (int k = 0; k < 2 && gitem[o] >= 0; k++) {
            const int v = n->in[k];
            if (v < 0 || gitem[v] < 0 || gfirst[v] != 2 * T - 1 - i || r->gpacked[v] != r->gpacked[o] ||
                !lp_shape_eq(&r->shapes[v], &r->shapes[o]))
                continue;
            lp_plan_item *root = &it[gitem[o]];
            const int end = it[gitem[v]].last;
            it[gitem[v]].bytes = 0; /* its own item goes unused */
            if (root->last < end) root->last = end;
            gitem[v] = gitem[o];
            r->shared_grads++;
            break;
        }
    }
    size_t total = 0;
    s = lp_mem_plan(it, ni, 256, &total);
    if (s == LP_OK && total) {
        lp_shape as = {1, {(int64_t)(total / sizeof(float))}};
        s = _lp_tensor_new_uninit(&r->arena, r->dev, LP_F32, &as);
    }
    for (int k = 0; s == LP_OK && k < ni; k++) {
        int v = who[k] % nv, is_grad = who[k] >= nv;
        lp_tensor *t = lp_malloc(sizeof *t);
        if (!t) {
            s = LP_ERR_OOM;
            break;
        }
        const size_t at = it[is_grad ? gitem[v] : k].offset; /* an Add's input's gradient: the Add's */
        *t = lp_tensor_view(r->dev, LP_F32, &r->shapes[v], (char *)r->arena->data + at);
        if (is_grad ? r->gpacked[v] : r->packed[v]) t->nbytes = (size_t)lp_shape_numel(&r->shapes[v]) * 2; /* bf16 */
        if (is_grad) r->grad[v] = t;
        else r->val[v] = t, r->owned[v] = 1;
    }
    if (s == LP_OK) {
        memcpy(r->plan_shapes, r->shapes, (size_t)nv * sizeof *r->shapes);
        r->plan_ok = 1;
    } else {
        drop_plan(r);
    }
out:
    free(keep), free(req), free(first), free(gfirst), free(it), free(who);
    return s;
}

/* ---- CUDA graphs ------------------------------------------------------------------ */

static int graphs_on(lp_run *r) {
    if (r->graphs < 0) {
        const char *e = getenv("LOUPE_CUDA_GRAPHS");
        r->graphs = r->dev == LP_DEVICE_CUDA && !(e && !strcmp(e, "0"));
    }
    return r->graphs;
}

/* The key of the pass about to run (phase 0 forward, 1 backward) into r->key. */
static lp_status pass_key(lp_run *r, int phase, int of, uint64_t variant) {
    const lp_model *m = r->m;
    size_t n = 7 + (size_t)m->n_values * (3 + LP_MAX_DIMS);
    if (!r->key) {
        r->key = lp_calloc(n, sizeof *r->key);
        if (!r->key) return LP_ERR_OOM;
    }
    uint64_t *k = r->key;
    size_t o = 0;
    k[o++] = (uint64_t)phase;
    k[o++] = (uint64_t)(uintptr_t)r->be; /* the precision */
    k[o++] = lp_cuda_scratch_epoch();
    k[o++] = (uint64_t)m->weights_gen;   /* ops read scalar constants on the host */
    k[o++] = (uint64_t)(int64_t)of;
    k[o++] = variant; /* backward: weight gradients, where it stops, the rules */
    uint64_t h = 1469598103934665603ull; /* FNV-1a of what the plan packs and fuses (ops see it, not the pointers) */
    for (int v = 0; r->packed && v < m->n_values; v++) h = (h ^ (uint64_t)r->packed[v]) * 1099511628211ull;
    for (int v = 0; r->gpacked && v < m->n_values; v++) h = (h ^ (uint64_t)r->gpacked[v]) * 1099511628211ull;
    for (int i = 0; r->fused && i < m->n_nodes; i++) h = (h ^ (uint64_t)r->fused[i]) * 1099511628211ull;
    k[o++] = h;
    for (int v = 0; v < m->n_values; v++) {
        k[o++] = r->val[v] ? (uint64_t)(uintptr_t)r->val[v]->data : 0;
        k[o++] = phase && r->grad[v] ? (uint64_t)(uintptr_t)r->grad[v]->data : 0;
        k[o++] = (uint64_t)r->shapes[v].ndim;
        for (int d = 0; d < LP_MAX_DIMS; d++) k[o++] = d < r->shapes[v].ndim ? (uint64_t)r->shapes[v].d[d] : 0;
    }
    r->n_key = o;
    return LP_OK;
}

enum { PASS_EAGER, PASS_CAPTURE, PASS_REPLAY };

static int pass_mode(const lp_run *r, const pass_graph *pg) {
    if (!pg->key || pg->n_key != r->n_key || memcmp(pg->key, r->key, r->n_key * sizeof *r->key)) return PASS_EAGER;
    return pg->g ? PASS_REPLAY : pg->refused ? PASS_EAGER : PASS_CAPTURE;
}

/* After an eager pass: remember its key (a new key drops the old graph). */
static lp_status pass_seen(lp_run *r, pass_graph *pg) {
    if (pg->key && pg->n_key == r->n_key && !memcmp(pg->key, r->key, r->n_key * sizeof *r->key)) return LP_OK;
    lp_cuda_graph_free(pg->g);
    pg->g = NULL;
    pg->refused = 0;
    if (!pg->key) {
        pg->key = lp_malloc(r->n_key * sizeof *pg->key);
        if (!pg->key) return LP_ERR_OOM;
    }
    memcpy(pg->key, r->key, r->n_key * sizeof *pg->key);
    pg->n_key = r->n_key;
    return LP_OK;
}

/* Run body(r, arg) as `mode` says: captured and launched, or (capture refused, or
 * eager) as usual. *done is 1 when the graph ran the pass. */
typedef lp_status (*pass_body)(lp_run *r, void *arg);
static lp_status pass_capture(lp_run *r, pass_graph *pg, pass_body body, void *arg, int *done) {
    *done = 0;
    if (lp_cuda_graph_begin() != LP_OK) {
        lp_clear_error();
        pg->refused = 1;
        return LP_OK;
    }
    lp_status s = body(r, arg);
    lp_graph *g = NULL;
    lp_status e = lp_cuda_graph_end(&g);
    if (s != LP_OK || e != LP_OK || !g) { /* nothing of the pass ran: the caller runs it again */
        lp_cuda_graph_free(g);
        pg->refused = 1;
        if (e == LP_ERR_OOM) return e; /* with its message */
        lp_clear_error();
        return LP_OK;
    }
    lp_status l = lp_cuda_graph_launch(g);
    if (l != LP_OK) {
        lp_cuda_graph_free(g);
        pg->refused = 1;
        return l;
    }
    pg->g = g; /* kept only once it ran: a backward replay also needs the live set recorded next */
    *done = 1;
    return LP_OK;
}

/* One pass's nodes (phase 0 forward, 1 backward): replayed from its graph, captured
 * and launched, or run as usual, after which its key is remembered for the next.
 * Backward passes also keep which gradients the pass leaves live, for replays. */
static lp_status run_pass(lp_run *r, int phase, int graphed, int of, uint64_t variant, pass_body body, void *arg) {
    if (!graphed) return body(r, arg);
    pass_graph *pg = &r->pg[phase];
    const size_t nv = (size_t)r->m->n_values;
    if (phase && !pg->live && !(pg->live = lp_malloc(nv + 1))) return LP_ERR_OOM;
    LP_TRY(pass_key(r, phase, of, variant));
    int mode = pass_mode(r, pg), done = 0;
    if (mode == PASS_REPLAY) {
        LP_TRY(lp_cuda_graph_launch(pg->g));
        r->n_replays++;
        if (phase) memcpy(r->grad_live, pg->live, nv);
        return LP_OK;
    }
    if (mode == PASS_CAPTURE) {
        LP_TRY(pass_capture(r, pg, body, arg, &done));
        if (done) {
            if (phase) memcpy(pg->live, r->grad_live, nv);
            return LP_OK;
        }
        if (phase) { /* the refused attempt's marks: the pass below redoes them */
            memset(r->grad_live, 0, nv);
            r->grad_live[of] = 1;
        }
    }
    LP_TRY(body(r, arg));
    LP_TRY(pass_key(r, phase, of, variant)); /* after the pass: its tensors exist now */
    return pass_seen(r, pg);
}

void lp_run_speed_info(const lp_run *r, lp_run_speed *out) {
    out->fused = out->packed = out->packed_grads = 0;
    out->shared_grads = planned(r) && r->plan_ok ? r->shared_grads : 0;
    for (int i = 0; i < r->m->n_nodes; i++) out->fused += fused_away(r, i); /* as run: captures unfuse */
    for (int v = 0; r->packed && planned(r) && v < r->m->n_values; v++) out->packed += r->packed[v] != 0;
    for (int v = 0; r->gpacked && planned(r) && v < r->m->n_values; v++) out->packed_grads += r->gpacked[v];
    out->held_bytes = r->arena ? (int64_t)r->arena->nbytes : 0;
    for (int v = 0; v < r->m->n_values; v++) {
        const lp_tensor *a = r->val[v], *g = r->grad[v];
        if (a && r->owned[v] && a->owns && !r->m->values[v].init) out->held_bytes += (int64_t)a->nbytes;
        if (g && g->owns) out->held_bytes += (int64_t)g->nbytes;
    }
    out->graph_replays = r->n_replays;
}

void _lp_run_set_graphs(lp_run *r, int on) { r->graphs = on ? r->dev == LP_DEVICE_CUDA : 0; }

/* Node i's forward as the pass runs it: a fused Conv writes its Relu's output (and
 * the Relu is skipped: *skip). */
static lp_status run_node(lp_run *r, lp_ctx *c, int i, int *skip) {
    lp_model *m = r->m;
    const lp_node *n = &m->nodes[i];
    lp_tensor *in[LP_MAX_IO], *out[LP_MAX_IO];
    const int fj = planned(r) ? fusion_partner(r, i) : -1;
    *skip = fused_away(r, i);
    if (*skip) return LP_OK; /* this ReLU ran inside its convolution */
    const char *pk = planned(r) ? r->packed : NULL;
    c->pack_in = c->pack_out = 0;
    for (int k = 0; k < n->n_in; k++) {
        in[k] = n->in[k] >= 0 ? r->val[n->in[k]] : NULL;
        if (pk && n->in[k] >= 0 && pk[n->in[k]]) c->pack_in |= 1u << k;
    }
    for (int k = 0; k < n->n_out; k++) {
        int v = fj >= 0 ? m->nodes[fj].out[0] : n->out[k]; /* fused: the conv writes the ReLU's output */
        LP_TRY(ensure_tensor(r, v, &r->shapes[v], m->values[v].dtype));
        out[k] = r->val[v];
        if (pk && pk[v]) c->pack_out |= 1u << k;
    }
    const char *t = n->op->type;
    if ((c->pack_in || c->pack_out) && strcmp(t, "Conv") && !is_act(m, n) && strcmp(t, "Add") && !pools(n)) {
        char ctx[512]; /* the planner packs nothing else: a bug, not bad input */
        return lp_fail(LP_ERR_INTERNAL, "%s: a packed value reached an op that cannot read it",
                       lp_node_ctx(m, n, ctx, sizeof ctx));
    }
    c->fuse_act = fj >= 0 ? _lp_act_of(m, &m->nodes[fj]) : 0.f; /* its Relu's or ReLU6's */
    c->aux = r->aux[i];
    lp_status s = n->op->forward(c, n, in, out);
    if (s != LP_OK) {
        char ctx[512];
        return lp_fail_prefix(s, "%s", lp_node_ctx(m, n, ctx, sizeof ctx));
    }
    return LP_OK;
}

/* The forward pass's nodes (the executor's loop; captured whole when graphs are on). */
static lp_status forward_nodes(lp_run *r, void *arg) {
    (void)arg;
    lp_ctx c = {.be = r->be, .model = r->m};
    int skip;
    for (int i = 0; i < r->m->n_nodes; i++) LP_TRY(run_node(r, &c, i, &skip));
    return LP_OK;
}

lp_status lp_run_forward(lp_run *r, const lp_tensor *input) {
    lp_model *m = r->m;
    char a[96], b[96];
    r->has_forward = 0;
    if (!m->n_inputs) return lp_fail(LP_ERR_ARG, "the model has no input");
    int in_id = m->inputs[0];
    const lp_shape *decl = &m->values[in_id].shape;
    lp_shape is = lp_tensor_shape(input);
    if (input->dtype != LP_F32) return lp_fail(LP_ERR_UNSUPPORTED, "input must be float32");
    if (is.ndim != decl->ndim || (decl->ndim >= 2 && is.d[1] != decl->d[1]))
        return lp_fail(LP_ERR_SHAPE, "input is %s but the model '%s' expects %s (batch may differ)",
                       lp_shape_fmt(&is, a, sizeof a), m->path ? m->path : "model", lp_shape_fmt(decl, b, sizeof b));
    LP_TRY(bind_constants(r));
    LP_TRY(_lp_model_shapes_for(m, &is, r->shapes)); /* shapes for this batch */
    if (planned(r)) LP_TRY(ensure_plan(r));
    LP_TRY(ensure_tensor(r, in_id, &is, LP_F32));
    if (input->device == r->dev)
        LP_TRY(r->be->copy(r->val[in_id]->data, input->data, input->nbytes));
    else if (input->device == LP_DEVICE_CPU)
        LP_TRY(r->be->upload(r->val[in_id]->data, input->data, input->nbytes));
    else {
        lp_tensor *tmp;
        LP_TRY(lp_tensor_clone(&tmp, input, r->dev));
        lp_tensor_free(r->val[in_id]);
        r->val[in_id] = tmp;
    }
    LP_TRY(run_pass(r, 0, graphs_on(r), -1, 0, forward_nodes, NULL));
    r->has_forward = 1;
    return LP_OK;
}


lp_model *_lp_run_model(const lp_run *r) { return r->m; }

/* Only the nodes downstream of `name` run again, so a method that edits one
 * activation many times (Ablation-CAM) pays for the tail of the network alone. A
 * forward-only run can do so from its tail root (_lp_keep.tail_root), whose tail
 * reads nothing the arena reuses. */
lp_status _lp_run_forward_from(lp_run *r, const char *name, const lp_tensor *value) {
    lp_model *m = r->m;
    int id;
    LP_TRY(value_id(r, name, &id));
    if (!r->has_forward) return lp_fail(LP_ERR_ARG, "forward from '%s' needs a forward pass first", name);
    if (planned(r) && !(r->forward_only && r->tail_root == id))
        return lp_fail(LP_ERR_ARG, "forward from '%s': this run is %s (it keeps only some activations)", name,
                       r->forward_only ? "forward-only" : "lean");
    if (!r->owned[id] || m->values[id].init)
        return lp_fail(LP_ERR_ARG, "value '%s' is a constant of the model, not an activation", name);
    lp_shape vs = lp_tensor_shape(value);
    if (!lp_shape_eq(&vs, &r->shapes[id]) || value->dtype != r->val[id]->dtype) {
        char a[96], b[96];
        return lp_fail(LP_ERR_SHAPE, "value '%s' is %s in this run, not %s", name,
                       lp_shape_fmt(&r->shapes[id], a, sizeof a), lp_shape_fmt(&vs, b, sizeof b));
    }
    lp_tensor *dst = r->val[id];
    lp_status s;
    if (value->device == r->dev) s = r->be->copy(dst->data, value->data, dst->nbytes);
    else if (value->device == LP_DEVICE_CPU) s = r->be->upload(dst->data, value->data, dst->nbytes);
    else s = lp_fail(LP_ERR_ARG, "value for '%s' is on another device", name);
    if (s != LP_OK) return s;
    char *dirty = lp_calloc((size_t)m->n_values + 1, 1);
    if (!dirty) return LP_ERR_OOM;
    dirty[id] = 1;
    r->has_forward = 0; /* until the tail is consistent again */
    lp_ctx c = {.be = r->be, .model = m};
    for (int i = m->values[id].producer + 1; s == LP_OK && i < m->n_nodes; i++) {
        const lp_node *n = &m->nodes[i];
        int any = 0, skip;
        for (int k = 0; k < n->n_in; k++) any |= n->in[k] >= 0 && dirty[n->in[k]];
        if (!any) continue;
        for (int k = 0; k < n->n_out; k++) dirty[n->out[k]] = 1;
        s = run_node(r, &c, i, &skip);
        const int fj = s == LP_OK && !skip && planned(r) ? fusion_partner(r, i) : -1;
        if (fj >= 0) dirty[m->nodes[fj].out[0]] = 1; /* written by the fused conv */
    }
    free(dirty);
    if (s == LP_OK) r->has_forward = 1;
    return s;
}

const lp_tensor *lp_run_value(const lp_run *r, const char *name) {
    int id = lp_model_find_value(r->m, name);
    if (id < 0 || !r->has_forward || (r->transient && r->transient[id])) return NULL; /* its bytes are reused */
    return r->val[id];
}

const lp_tensor *lp_run_output(const lp_run *r) {
    if (!r->has_forward || !r->m->n_outputs) return NULL;
    return r->val[r->m->outputs[0]];
}

const lp_tensor *lp_run_grad(const lp_run *r, const char *name) {
    int id = lp_model_find_value(r->m, name);
    return id < 0 || !r->grad_live[id] || (r->gtransient && r->gtransient[id]) ? NULL : r->grad[id];
}

/* Test builds (LOUPE_POISON_FRESH): a buffer its first writer is to write whole starts
 * as NaN (all bits set: NaN in fp32 and in packed bf16 alike), so a missed element
 * shows; elsewhere a no-op. */
static lp_status poison_fresh(const lp_run *r, lp_tensor *g) {
#ifdef LOUPE_POISON_FRESH
    const uint32_t bits = 0xffffffffu;
    float nan;
    memcpy(&nan, &bits, sizeof nan);
    return r->be->fill((int64_t)(g->nbytes / sizeof(float)), nan, g->data);
#else
    (void)r, (void)g;
    return LP_OK;
#endif
}

/* A gradient buffer for value v, zeroed when `clear` (else its first writer writes it
 * whole), reusing last pass's when the shape fits. */
static lp_status ensure_grad(lp_run *r, int v, int clear) {
    lp_tensor *g = r->grad[v];
    r->grad_live[v] = 1;
    if (g) {
        lp_shape gs = lp_tensor_shape(g);
        if (lp_shape_eq(&gs, &r->shapes[v])) return clear ? r->be->zero(g->data, g->nbytes) : poison_fresh(r, g);
        lp_tensor_free(g);
        r->grad[v] = NULL;
    }
    lp_status s = lp_tensor_new_shape(&r->grad[v], r->dev, LP_F32, &r->shapes[v]);
    if (s != LP_OK) r->grad_live[v] = 0;
    return s == LP_OK && !clear ? poison_fresh(r, r->grad[v]) : s;
}

/* The backward pass's nodes, from value `of` down (captured whole when graphs are on). */
typedef struct backward_arg {
    const lp_backward_opts *opts;
    const char *req;
    int of;
} backward_arg;

/* A value as a backward reads it: a lean run's unkept activations come as their
 * shape with no data (the op's backward does not read them: lp_op_backward_reads),
 * but for the packed ones the backward reads (in the arena through the backward). */
static lp_tensor *arg_value(const lp_run *r, int v, lp_tensor *shell) {
    if (r->val[v] && (!(r->transient && r->transient[v]) || (r->packed && r->packed[v] == 2))) return r->val[v];
    *shell = lp_tensor_view(r->dev, r->m->values[v].dtype, &r->shapes[v], NULL);
    return shell;
}

/* An fp32 NCHW copy of packed tensor t in a new buffer (*buf, the caller frees it),
 * as a view in *u. */
static lp_status unpacked_copy(const lp_backend *be, const lp_tensor *t, lp_tensor *u, void **buf) {
    lp_shape sh = lp_tensor_shape(t);
    LP_TRY(be->alloc((size_t)lp_shape_numel(&sh) * sizeof(float), buf));
    *u = lp_tensor_view(t->device, LP_F32, &sh, *buf);
    return be->unpack((int)sh.d[0], (int)sh.d[1], sh.d[2] * sh.d[3], t->data, *buf, 0);
}

/* A backward rule (guided backprop's Relu) on a lean run's packed node: it sees fp32
 * NCHW copies of the packed values and gradients, and the input gradients it
 * accumulates are packed back. A tensor in two slots (Add(x, x)'s gradient) gets one
 * copy, so both contributions reach it. (Rules run eagerly, so the buffers may come
 * and go.) */
static lp_status rule_unpacked(lp_ctx *c, lp_backward_fn fn, const lp_node *n, lp_tensor **in, lp_tensor **out,
                               lp_tensor **dout, lp_tensor **din) {
    const lp_backend *be = c->be;
    lp_tensor u[4 * LP_MAX_IO], *a[4][LP_MAX_IO];
    lp_tensor **orig[4] = {in, out, dout, din};
    void *buf[4 * LP_MAX_IO] = {0};
    const int cnt[4] = {n->n_in, n->n_out, n->n_out, n->n_in};
    lp_status s = LP_OK;
    for (int g = 0; g < 4; g++)
        for (int k = 0; k < cnt[g]; k++) {
            lp_tensor *t = orig[g][k];
            a[g][k] = t;
            const unsigned bits = g == 0 || g == 3 ? c->pack_in : c->pack_out;
            if (s != LP_OK || !t || !t->data || !(bits >> k & 1u)) continue;
            for (int j = 0; j < k && a[g][k] == t; j++) /* the same tensor as an earlier slot: its copy */
                if (orig[g][j] == t) a[g][k] = a[g][j];
            if (a[g][k] != t) continue;
            s = unpacked_copy(be, t, &u[g * LP_MAX_IO + k], &buf[g * LP_MAX_IO + k]);
            a[g][k] = &u[g * LP_MAX_IO + k];
        }
    lp_ctx plain = *c;
    plain.pack_in = plain.pack_out = 0;
    if (s == LP_OK) s = fn(&plain, n, a[0], a[1], a[2], a[3]);
    for (int k = 0; s == LP_OK && k < n->n_in; k++) { /* each copy packed back once */
        const lp_tensor *t = din[k];
        if (t && buf[3 * LP_MAX_IO + k])
            s = be->pack((int)t->shape[0], (int)t->shape[1], t->shape[2] * t->shape[3], a[3][k]->data, t->data);
    }
    if (s == LP_OK) s = be->sync(); /* the buffers go next */
    for (int i = 0; i < 4 * LP_MAX_IO; i++)
        if (buf[i]) be->free(buf[i]);
    return s;
}

/* Node n's backward fn: a rule on packed values runs on fp32 copies, unless its table
 * reads packed values itself. */
static lp_status call_backward(lp_ctx *c, const lp_rules *rules, lp_backward_fn fn, const lp_node *n,
                               lp_tensor **in, lp_tensor **out, lp_tensor **dout, lp_tensor **din) {
    if ((c->pack_in || c->pack_out) && fn != n->op->backward && !rules->packed)
        return rule_unpacked(c, fn, n, in, out, dout, din);
    return fn(c, n, in, out, dout, din);
}

/* A rule on an Add whose input `k`'s gradient shares the Add's gradient buffer (a lean
 * plan's; it holds dout): rules add into din, so dout moves to a copy and din starts
 * at zero. */
static lp_status rule_shared(lp_ctx *c, const lp_rules *rules, lp_backward_fn fn, const lp_node *n, lp_tensor **in,
                             lp_tensor **out, lp_tensor **dout, lp_tensor **din, int k) {
    const lp_backend *be = c->be;
    lp_tensor d = *dout[0], *dcopy[LP_MAX_IO];
    memcpy(dcopy, dout, sizeof dcopy);
    LP_TRY(be->alloc(d.nbytes, &d.data));
    d.owns = 0;
    dcopy[0] = &d;
    lp_status s = be->copy(d.data, dout[0]->data, d.nbytes);
    if (s == LP_OK) s = be->zero(din[k]->data, din[k]->nbytes);
    if (s == LP_OK) s = call_backward(c, rules, fn, n, in, out, dcopy, din);
    if (s == LP_OK) s = be->sync(); /* the copy goes next */
    be->free(d.data);
    return s;
}

static lp_status backward_nodes(lp_run *r, void *arg) {
    const backward_arg *a = arg;
    lp_model *m = r->m;
    const lp_backward_opts *opts = a->opts;
    const char *req = a->req;
    lp_status s = LP_OK;
    lp_ctx c = {.be = r->be, .model = m, .rule_user = opts->rules ? opts->rules->user : NULL};
    const char *gpk = r->lean ? r->gpacked : NULL;
    int last = m->values[a->of].producer;
    for (int i = last; i >= 0; i--) {
        const lp_node *n = &m->nodes[i];
        lp_tensor *in[LP_MAX_IO], *out[LP_MAX_IO], *dout[LP_MAX_IO], *din[LP_MAX_IO];
        lp_tensor shell[2 * LP_MAX_IO];
        int live = 0;
        for (int k = 0; k < n->n_out; k++) {
            dout[k] = r->grad_live[n->out[k]] ? r->grad[n->out[k]] : NULL;
            out[k] = arg_value(r, n->out[k], &shell[LP_MAX_IO + k]);
            live |= dout[k] != NULL;
        }
        if (!live) continue;
        lp_backward_fn fn = n->op->backward;
        if (opts->rules) {
            int idx = lp_op_index(n->op);
            if (idx >= 0 && idx < opts->rules->n && opts->rules->fn[idx]) fn = opts->rules->fn[idx];
        }
        char ctx[512];
        c.pack_in = c.pack_out = c.din_fresh = 0; /* packed gradients (a lean run's), as plan_packing chose */
        for (int k = 0; gpk && k < n->n_in; k++)
            if (n->in[k] >= 0 && gpk[n->in[k]]) c.pack_in |= 1u << k;
        for (int k = 0; gpk && k < n->n_out; k++)
            if (gpk[n->out[k]]) c.pack_out |= 1u << k;
        const int conv = !strcmp(n->op->type, "Conv"), add = !strcmp(n->op->type, "Add");
        const int packing = conv || add || is_act(m, n) || pools(n);
        if ((c.pack_in || c.pack_out) && !packing)
            return lp_fail(LP_ERR_INTERNAL, "%s: a packed gradient reached an op that cannot read it",
                           lp_node_ctx(m, n, ctx, sizeof ctx));
        int need = 0, shared = -1;
        for (int k = 0; k < n->n_in; k++) {
            int v = n->in[k];
            in[k] = v >= 0 ? arg_value(r, v, &shell[k]) : NULL;
            din[k] = NULL;
            if (v < 0 || !req[v]) continue;
            if (!r->grad_live[v]) {
                /* A gradient's first contribution is written rather than added, so it need
                 * not be cleared first, by the ops that know how (lp_op.fresh; rules add). */
                const int fresh = fn == n->op->backward && (n->op->fresh >> k & 1u);
                if (r->gtransient && r->gtransient[v] && dout[0] && r->grad[v] && r->grad[v]->data == dout[0]->data) {
                    shared = k; /* an Add's input's gradient in the Add's buffer (ensure_plan): it holds dout */
                    r->grad_live[v] = 1;
                } else {
                    s = ensure_grad(r, v, !fresh);
                    if (s != LP_OK) return s;
                }
                c.din_fresh |= (unsigned)fresh << k;
            }
            din[k] = r->grad[v];
            need = 1;
        }
        if (!need) continue;
        if (!fn) {
            s = lp_fail(LP_ERR_UNSUPPORTED, "%s: no gradient is defined for this op", lp_node_ctx(m, n, ctx, sizeof ctx));
            return s;
        }
        c.aux = r->aux[i];
        if (shared >= 0 && fn != n->op->backward) s = rule_shared(&c, opts->rules, fn, n, in, out, dout, din, shared);
        else s = call_backward(&c, opts->rules, fn, n, in, out, dout, din);
        if (s != LP_OK) {
            s = lp_fail_prefix(s, "%s (backward)", lp_node_ctx(m, n, ctx, sizeof ctx));
            return s;
        }
    }
    return LP_OK;
}

/* A lean run that stops at a value kept only what the backward from there reads: a
 * backward needing a gradient below it would read activations that are gone. */
static lp_status lean_covers(const lp_run *r, const char *req) {
    const lp_model *m = r->m;
    char *plan = lp_calloc((size_t)m->n_values + 1, 1);
    if (!plan) return LP_ERR_OOM;
    grad_required(m, 0, r->lean_root, plan);
    int v = 0;
    while (v < m->n_values && (!req[v] || plan[v])) v++;
    free(plan);
    if (v == m->n_values) return LP_OK;
    const char *root = m->values[r->lean_root].name;
    return lp_fail(LP_ERR_ARG, "backward needs the gradient of '%s', but this lean run keeps only what gradients down to "
                   "'%s' read (stop at '%s' or a value it feeds)", m->values[v].name, root, root);
}

/* Backward's seed (opts' seed, or ones) into g, the gradient of value `of`; a packed
 * gradient (a lean run's activation the caller did not keep) through an fp32 copy. */
static lp_status seed_grad(lp_run *r, int of, const lp_tensor *seed, lp_tensor *g) {
    const lp_backend *be = r->be;
    const lp_shape *gs = &r->shapes[of];
    const int64_t n = lp_shape_numel(gs);
    const size_t bytes = (size_t)n * sizeof(float);
    if (seed) {
        lp_shape ss = lp_tensor_shape(seed);
        if (!lp_shape_eq(&ss, gs) || seed->dtype != LP_F32) {
            char a[96], b[96];
            return lp_fail(LP_ERR_SHAPE, "backward seed is %s but value '%s' is %s", lp_shape_fmt(&ss, a, sizeof a),
                           r->m->values[of].name, lp_shape_fmt(gs, b, sizeof b));
        }
        if (seed->device != r->dev && seed->device != LP_DEVICE_CPU)
            return lp_fail(LP_ERR_ARG, "backward seed is on another device");
    }
    const int packed = r->lean && r->gpacked && r->gpacked[of];
    void *dst = g->data;
    if (packed) LP_TRY(be->alloc(bytes, &dst));
    lp_status s = !seed                      ? be->fill(n, 1.0f, dst)
                  : seed->device == r->dev ? be->copy(dst, seed->data, bytes)
                                           : be->upload(dst, seed->data, bytes);
    if (packed) {
        if (s == LP_OK) s = be->pack((int)gs->d[0], (int)gs->d[1], gs->d[2] * gs->d[3], dst, g->data);
        if (s == LP_OK) s = be->sync(); /* dst goes next */
        be->free(dst);
    }
    return s;
}

lp_status lp_run_backward(lp_run *r, const lp_backward_opts *opts) {
    lp_model *m = r->m;
    lp_backward_opts dflt = {0};
    if (!opts) opts = &dflt;
    if (!r->has_forward) return lp_fail(LP_ERR_ARG, "backward needs a forward pass first");
    if (r->forward_only) return lp_fail(LP_ERR_ARG, "backward: this run is forward-only (its activations are freed)");
    if (r->lean && ((opts->rules && !opts->rules->plain_reads) || opts->weight_grads))
        return lp_fail(LP_ERR_ARG, "backward with %s: this run is lean (it keeps only what the plain input gradient reads)",
                       opts->weight_grads ? "weight gradients" : "a rule table that reads more than the plain backward");
    int of = m->n_outputs ? m->outputs[0] : -1, stop = -1;
    if (opts->of) LP_TRY(value_id(r, opts->of, &of));
    if (opts->stop_at) {
        LP_TRY(value_id(r, opts->stop_at, &stop));
        LP_TRY(activation_id(r, stop, "backward stopping at"));
        if (opts->weight_grads)
            return lp_fail(LP_ERR_ARG, "backward stopping at '%s' cannot also take weight gradients", opts->stop_at);
    }
    if (of < 0) return lp_fail(LP_ERR_ARG, "the model has no output to differentiate");
    if (m->values[of].dtype != LP_F32) return lp_fail(LP_ERR_ARG, "value '%s' is not a float tensor", m->values[of].name);

    size_t nv = (size_t)m->n_values;
    char *req = lp_calloc(nv + 1, 1);
    if (!req) return LP_ERR_OOM;
    grad_required(m, opts->weight_grads, stop, req);
    lp_status s = LP_OK;
    if (r->lean && r->lean_root >= 0 && (s = lean_covers(r, req)) != LP_OK) goto out;
    memset(r->grad_live, 0, nv); /* gradients of an earlier backward would mislead */
    s = ensure_grad(r, of, 0); /* the seed writes it whole */
    if (s != LP_OK) goto out;
    s = seed_grad(r, of, opts->seed, r->grad[of]);
    if (s != LP_OK) goto out;

    backward_arg ba = {opts, req, of};
    /* Rules may carry host state the kernels are launched with: only the plain gradient
     * and graph-safe rule tables are graphed, keyed by the rule functions. */
    const lp_rules *rules = opts->rules;
    uint64_t variant = (uint64_t)(opts->weight_grads ? 1 : 0) | (uint64_t)(stop + 1) << 1;
    for (int i = 0; rules && i <= rules->n; i++) /* the functions, then the state they read */
        variant = (variant ^ (uint64_t)(i < rules->n ? (uintptr_t)rules->fn[i] : (uintptr_t)rules->user)) *
                  1099511628211ull;
    s = run_pass(r, 1, graphs_on(r) && (!rules || rules->graph_safe), of, variant, backward_nodes, &ba);
out:
    free(req);
    return s;
}
