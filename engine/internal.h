/* internal.h — private engine types: error helpers, the graph IR, the op table
 * and the executor context. Front ends never include this; engine code does. */
#ifndef LOUPE_INTERNAL_H
#define LOUPE_INTERNAL_H

#include "loupe.h"
#include "backend.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

/* ---- errors ---------------------------------------------------------------- */
/* Set the thread's last error (printf-style) and return `s`. */
lp_status lp_fail(lp_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix the current message with "prefix: " (adds context as errors travel up). */
lp_status lp_fail_prefix(lp_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void lp_clear_error(void);

#define LP_TRY(expr)                                                                              \
    do {                                                                                          \
        lp_status _lp_s = (expr);                                                                 \
        if (_lp_s != LP_OK) return _lp_s;                                                         \
    } while (0)

/* malloc/calloc that set an LP_ERR_OOM message on failure. */
void *lp_malloc(size_t n);
void *lp_calloc(size_t n, size_t size);
char *lp_strdup(const char *s);

/* ---- shapes ---------------------------------------------------------------- */
typedef struct lp_shape {
    int ndim;
    int64_t d[LP_MAX_DIMS];
} lp_shape;

int64_t lp_shape_numel(const lp_shape *s);
int lp_shape_eq(const lp_shape *a, const lp_shape *b);
const char *lp_shape_fmt(const lp_shape *s, char *buf, size_t len);
/* A host tensor viewing existing memory (owns = 0). */
lp_tensor lp_tensor_view(lp_device dev, lp_dtype dt, const lp_shape *s, void *data);
lp_status lp_tensor_new_shape(lp_tensor **out, lp_device dev, lp_dtype dt, const lp_shape *s);
/* The same without zero-filling: for outputs an op overwrites whole (every forward). */
lp_status _lp_tensor_new_uninit(lp_tensor **out, lp_device dev, lp_dtype dt, const lp_shape *s);
lp_shape lp_tensor_shape(const lp_tensor *t);

/* ---- attributes ------------------------------------------------------------ */
typedef enum lp_attr_type {
    LP_ATTR_FLOAT = 1, LP_ATTR_INT, LP_ATTR_STRING, LP_ATTR_TENSOR,
    LP_ATTR_FLOATS, LP_ATTR_INTS, LP_ATTR_STRINGS
} lp_attr_type;

typedef struct lp_attr {
    char *name;
    lp_attr_type type;
    float f;
    int64_t i;
    char *s;
    lp_tensor *t;
    int n;          /* count for FLOATS / INTS / STRINGS */
    float *floats;
    int64_t *ints;
    char **strings;
} lp_attr;

/* ---- the graph IR ------------------------------------------------------------ */
#define LP_MAX_IO 64 /* Concat in DenseNet has up to ~49 inputs */

/* A value: a graph input, an initializer (constant), or a node output. */
typedef struct lp_value {
    char *name;
    lp_shape shape;        /* static shape, inferred at load for the declared input */
    lp_dtype dtype;
    int producer;          /* node index, or -1 (input / initializer) */
    int is_input;
    lp_tensor *init;       /* host constant (initializer / folded), or NULL */
    int is_param;          /* a trainable weight (float initializer of the original graph) */
} lp_value;

typedef struct lp_node {
    char *name;
    char *op_type;
    const struct lp_op *op; /* resolved at load */
    int n_in, n_out;
    int *in;                /* value ids, -1 for an omitted optional input */
    int *out;
    int n_attr;
    lp_attr *attr;
    void *params;           /* op-specific parsed attributes (op->check fills; freed with free()) */
} lp_node;

struct lp_model {
    char *path;             /* file it came from (for messages), may be NULL */
    int n_values, cap_values;
    lp_value *values;
    int n_nodes, cap_nodes;
    lp_node *nodes;         /* topological order */
    int n_inputs;
    int inputs[8];          /* graph inputs that are not initializers */
    int n_outputs;
    int outputs[8];
    int64_t opset;
    char *producer;
    int64_t weights_gen;    /* bumped whenever host initializers change (the trainer) */
};

/* Builder, used by the ONNX importer, the trainer and tests. */
lp_model *lp_model_new(void);
/* Find a value by name (-1 if absent). */
int lp_model_find_value(const lp_model *m, const char *name);
/* Get or create a value by name. */
int lp_model_value(lp_model *m, const char *name);
int lp_model_add_input(lp_model *m, const char *name, const lp_shape *s);
/* Takes ownership of `t`. */
int lp_model_add_initializer(lp_model *m, const char *name, lp_tensor *t, int is_param);
/* Add a node; inputs/outputs by value name ("" = omitted optional input).
 * Attributes are added afterwards with lp_node_set_*. Returns node index or -1 (OOM). */
int lp_model_add_node(lp_model *m, const char *op_type, const char *name,
                      int n_in, const char *const *in, int n_out, const char *const *out);
void lp_model_mark_output(lp_model *m, const char *name);
lp_attr *lp_node_add_attr(lp_node *n, const char *name, lp_attr_type type);
void lp_node_set_int(lp_node *n, const char *name, int64_t v);
void lp_node_set_float(lp_node *n, const char *name, float v);
void lp_node_set_ints(lp_node *n, const char *name, int cnt, const int64_t *v);
void lp_node_set_floats(lp_node *n, const char *name, int cnt, const float *v);
void lp_node_set_string(lp_node *n, const char *name, const char *v);

/* Free what a node or attribute holds and zero it (the struct itself stays). */
void lp_node_clear(lp_node *n);
void lp_attr_clear(lp_attr *a);
const lp_attr *lp_node_attr(const lp_node *n, const char *name);
int64_t lp_attr_int(const lp_node *n, const char *name, int64_t dflt);
/* Saturating: a float outside int64's range (or NaN) would be undefined behaviour to cast,
 * and both come straight from files. */
static inline int64_t lp_float_to_int64(float f) {
    if (f != f) return 0;
    if (f >= 9.2e18f) return INT64_MAX;
    if (f <= -9.2e18f) return INT64_MIN;
    return (int64_t)f;
}
/* Monotonic seconds, for progress and the library's own timing decisions. */
static inline double lp_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
float lp_attr_float(const lp_node *n, const char *name, float dflt);
/* Copies up to max ints; returns the count (or -1 if absent). */
int lp_attr_ints(const lp_node *n, const char *name, int64_t *dst, int max);
const char *lp_attr_string(const lp_node *n, const char *name, const char *dflt);

/* Resolve ops, parse attributes (op->check), infer static shapes from the inputs'
 * declared shapes. Called after building or importing. */
lp_status lp_model_finalize(lp_model *m);
/* The dtype of a node's outputs (int64 for shape arithmetic, else float). */
lp_dtype lp_node_out_dtype(const lp_model *m, const lp_node *n);
/* Infer one node's output shapes from shapes[] (indexed by value id) into shapes[]. */
lp_status lp_node_infer(const lp_model *m, const lp_node *n, lp_shape *shapes);
/* Every value's shape (n_values entries) when the first input has shape `input`. */
lp_status _lp_model_shapes_for(const lp_model *m, const lp_shape *input, lp_shape *shapes);
/* Constant folding (any node whose inputs are all constant, incl. Shape of a
 * statically shaped value) and BatchNormalization folding into Conv. */
lp_status lp_model_fold(lp_model *m);
/* Remove nodes whose outputs nobody uses and values nothing refers to. */
void lp_model_prune(lp_model *m);
/* "model.onnx: node 'x' (Conv)" style context for messages. */
const char *lp_node_ctx(const lp_model *m, const lp_node *n, char *buf, size_t len);

/* ---- ops ------------------------------------------------------------------- */
typedef struct lp_ctx {
    const lp_backend *be;
    lp_model *model;
    void *rule_user; /* backward: the rule table's `user` (NULL without rules) */
    float fuse_act;  /* forward, when > 0: the node's output goes straight through this
                      * activation (lp_conv_desc.act's: the executor fuses a Relu or
                      * ReLU6 that is a Conv's only reader, or a Relu that is a
                      * same-shape Add's) */
    const struct lp_tensor *aux; /* what the op's derive made for this node in this run, or NULL;
                                  * the op may keep scratch in it (one node of one run, one
                                  * stream: BatchNormalization's gradient sums) */
    unsigned pack_in, pack_out;  /* bit k set when input / output k is a packed activation
                                  * (lp_backend.packed; the executor packs only values of
                                  * Conv, same-shape Add, Relu and pooling); backward: when
                                  * din[k] / dout[k] are packed (a lean run's; so are the
                                  * values the backward reads) */
    unsigned din_fresh;          /* backward: bit k set when din[k] holds no gradient yet and
                                  * was not cleared: the op writes it rather than adds (set
                                  * only where lp_op.fresh allows, and never for rules) */
} lp_ctx;

/* Ops' forward/backward see tensors on the run's device; int64 tensors (shapes,
 * axes, pads) are always host constants. in[i] is NULL for an omitted input. */
typedef lp_status (*lp_forward_fn)(lp_ctx *c, const lp_node *n, lp_tensor *const *in,
                                   lp_tensor *const *out);
/* Backward: given the forward's inputs, outputs and the output gradients dout,
 * ACCUMULATE (+=) into din[i] for every din[i] != NULL (the executor zeroes them
 * and passes NULL for inputs that need no gradient, e.g. constants or weights when
 * weight gradients are off). dout[j] may be NULL for an output nobody used. */
typedef lp_status (*lp_backward_fn)(lp_ctx *c, const lp_node *n, lp_tensor *const *in,
                                    lp_tensor *const *out, lp_tensor *const *dout,
                                    lp_tensor *const *din);

typedef struct lp_op {
    const char *type; /* ONNX op_type */
    /* Validate attributes and input count; may fill n->params. */
    lp_status (*check)(lp_model *m, lp_node *n);
    /* Output shapes from input shapes; `in_const[i]` is the constant tensor of input
     * i when it is one (needed by Reshape, Pad, Slice...), else NULL. */
    lp_status (*infer)(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const,
                       lp_shape *out);
    lp_forward_fn forward;
    lp_backward_fn backward;      /* NULL: not differentiable (error if reached) */
    /* Multiply-adds for `loupe info` (NULL: 0). */
    int64_t (*macs)(const lp_node *n, const lp_shape *in, const lp_shape *out);
    /* Output dtype is int64 (Shape) — such nodes only run during folding. */
    int int64_out;
    /* Bit k set when backward honours lp_ctx.din_fresh bit k: it writes din[k] whole
     * (so the executor need not clear it first). Ops without it only ever add. */
    unsigned fresh;
} lp_op;

/* Arena planning (engine/mem_plan.c): each item's bytes are rounded up to `align` and
 * given an offset so that items whose step ranges [first, last] overlap never share
 * bytes; *total is the arena's size. */
typedef struct lp_plan_item {
    size_t bytes;
    int first, last;
    size_t offset; /* out */
} lp_plan_item;
lp_status lp_mem_plan(lp_plan_item *items, int n, size_t align, size_t *total);

/* Op registry (engine/ops/registry.c). */
const lp_op *lp_op_find(const char *type);
/* An op's derived constants: a tensor on c->be's device made from the node's
 * constant inputs (BatchNormalization: its folded per-channel affine), which the
 * executor makes once per weight generation and hands back as c->aux; *aux stays
 * NULL when the inputs are not all constants. NULL for ops without one. Keeps
 * per-pass host work out of forward (and so lets a pass be a CUDA graph). */
typedef lp_status (*lp_derive_fn)(lp_ctx *c, const lp_node *n, lp_tensor **aux);
lp_derive_fn lp_op_derive(const lp_op *op);
/* What node n's plain backward (no rule table) reads besides its outputs' gradients,
 * when din_req[k] says which inputs' gradients are asked for: in_read[k] for input
 * k's data, *out_read for its outputs'. Shapes are always there. Lean runs keep only
 * these activations (engine/ops/backward_reads.c). */
void lp_op_backward_reads(const lp_model *m, const lp_node *n, const char *din_req, char *in_read, int *out_read);
/* For error messages: comma-separated list of supported ops. */
const char *lp_op_list(void);

/* Ops are identified in rule tables by their index in the registry. */
int lp_op_index(const lp_op *op);
int lp_op_count(void);

struct lp_rules {
    /* Indexed by lp_op_index; NULL entry = the op's own backward. */
    lp_backward_fn *fn;
    int n;
    void *user;
    int plain_reads; /* every rule reads no more than its op's own backward (what
                      * lp_op_backward_reads lists): a lean run may take the table */
    int packed;      /* every rule reads and writes packed values itself, as its op's
                      * backward (lp_ctx.pack_in / pack_out); else the executor hands
                      * rules on packed nodes fp32 copies */
    int graph_safe;  /* every rule only queues device work (no host reads, allocations,
                      * syncs or state outside the pass): a CUDA run may capture the
                      * backward as a graph, keyed by the rule functions and `user`
                      * (so what `user` points to must not change between passes) */
};

/* The activation node n applies, as lp_conv_desc.act: INFINITY for a Relu, 6 for a
 * ReLU6 (a Clip whose constant bounds are 0 and 6, as PyTorch exports nn.ReLU6, whose
 * gradient is hardtanh's: LP_UN_HARDTANH, from its output); 0 for any other node. A
 * convolution (or a packed value's op) can apply it in its last pass. */
float _lp_act_of(const lp_model *m, const lp_node *n);
/* A ReLU's backward of kind k (LP_UN_RELU, or a rule's: LP_UN_RELU_GUIDED /
 * LP_UN_RELU_DECONV; packed also LP_UN_HARDTANH, a ReLU6's) on node n, whose values are
 * plain or (a lean run's) all packed: din[0] (+)= what passes of dout[0]. */
lp_status _lp_relu_backward(lp_ctx *c, const lp_node *n, lp_unary_kind k, lp_tensor *const *in,
                            lp_tensor *const *out, lp_tensor *const *dout, lp_tensor *const *din, int accumulate);

/* The model a run executes (for the attribution methods). */
lp_model *_lp_run_model(const lp_run *r);
/* What a run keeps: all (both flags 0), forward-only (tail_root >= 0: a forward-only
 * run whose tail from that value can be re-run, _lp_run_forward_from), or lean
 * (lean_root >= 0: its gradients stop at that value). Value ids, -1 for none. */
typedef struct _lp_keep {
    int forward_only, lean;
    int lean_root, tail_root;
} _lp_keep;
void _lp_run_get_keep(const lp_run *r, _lp_keep *k);
lp_status _lp_run_set_keep(lp_run *r, const _lp_keep *k);
/* CUDA graphs for this run on or off (default: on for CUDA unless LOUPE_CUDA_GRAPHS=0). */
void _lp_run_set_graphs(lp_run *r, int on);
/* After a forward: overwrite activation `name` with `value` (its shape and dtype in
 * this run) and re-run only the nodes that depend on it; all else keeps the last
 * forward's values. The edited activation stays for a following backward. */
lp_status _lp_run_forward_from(lp_run *r, const char *name, const lp_tensor *value);

/* ONNX import from memory (`name` is used in messages); lp_model_load reads the
 * file and calls this with the model's folder for external data. */
lp_status lp_model_load_mem(const void *buf, size_t len, const char *name, const char *dir, lp_model **out);
/* Image decode from memory (PNG or JPEG by signature); `name` is used in messages. */
lp_status lp_image_decode(const void *buf, size_t len, const char *name, lp_image *out);

/* Run one node's forward on a backend for host tensors (used by folding). */
lp_status lp_node_eval_host(lp_model *m, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out);

#endif
