/* attrib_internal.h — what the attribution methods share: the per-call context, the
 * method tables (one per family, in the file that implements it), the batched
 * forward/backward passes that turn a target into scores and gradients, and the
 * image helpers (blur, bilinear resize) that baselines, fills and CAMs need. */
#ifndef LOUPE_ATTRIB_INTERNAL_H
#define LOUPE_ATTRIB_INTERNAL_H

#include "../internal.h"

typedef struct _lp_xctx {
    lp_run *run;
    lp_model *m;
    const lp_explain_opts *o; /* defaults filled in */
    const float *input;       /* host, n x per */
    int64_t n, per;
    int ndim;                 /* the input's shape */
    int64_t shape[LP_MAX_DIMS];
    int c, h, w;              /* for 4-D inputs */
    int64_t *targets;         /* per input: class, or -1 for neuron/channel targets */
    float *scores;            /* per input: the target score at the input */
    int passes;
    int64_t done, total;      /* progress, in rows of work */
    const float *fwd_rows;    /* rows the run's current forward was made on (NULL: unknown) */
    int64_t fwd_b;
} _lp_xctx;

typedef lp_status (*_lp_method_fn)(_lp_xctx *x, lp_tensor **attr);

/* What a method's passes read of the run, so lp_explain keeps no more: every value
 * (rule tables that read more than the plain backward: LRP, DeepLIFT), the plain gradient's needs (a lean run, stopping at opts->layer when
 * there is one: the CAM layer, a layer attribution), the target scores and
 * opts->layer alone (a forward-only run), or those and what the tail from opts->layer
 * reads (a forward-only run whose tail re-runs: Ablation-CAM). */
enum {
    _LP_KEEP_ALL = 0,
    _LP_KEEP_LEAN,       /* gradients stop at opts->layer when there is one */
    _LP_KEEP_LEAN_INPUT, /* lean, gradients to the input even with a layer (Guided Grad-CAM) */
    _LP_KEEP_SCORES,
    _LP_KEEP_TAIL        /* forward-only, the tail from opts->layer re-runnable */
};

typedef struct _lp_method {
    const char *name;
    const char *summary;
    _lp_method_fn run;
    int keep;
} _lp_method;

/* Each family's table ends with a {NULL} entry. */
extern const _lp_method _lp_methods_grad[];    /* grad_methods.c */
extern const _lp_method _lp_methods_lrp[];     /* lrp.c */
extern const _lp_method _lp_methods_cam[];     /* cam.c */
extern const _lp_method _lp_methods_perturb[]; /* perturb.c */

/* ---- passes (passes.c) ----------------------------------------------------------- */
/* Forward `b` rows (b x per host floats, each row an input-shaped image) where row i
 * stands for input owner[i]; scores[i] = the target score of row i (may be NULL). */
lp_status _lp_x_forward(_lp_xctx *x, const float *rows, int64_t b, const int64_t *owner, float *scores);
/* Resolve targets and read each row's target score from the run's current forward
 * (after _lp_x_forward, or after the caller re-ran part of it). */
lp_status _lp_x_scores(_lp_xctx *x, int64_t b, const int64_t *owner, float *scores);
/* The value name the target reads (the model output, or the neuron's layer). */
const char *_lp_x_target_value(const _lp_xctx *x);
/* After _lp_x_forward: backward of the target score of every row, with `rules`
 * (NULL: true gradient). grad (b x size of `at`, host) receives d score / d at,
 * where `at` is a value name (NULL: the input); act (may be NULL) the activation of
 * `at` for the same rows. */
lp_status _lp_x_backward(_lp_xctx *x, int64_t b, const int64_t *owner, const lp_rules *rules, const char *at,
                         float *grad, float *act);
/* Both: forward then backward. */
lp_status _lp_x_grads(_lp_xctx *x, const float *rows, int64_t b, const int64_t *owner, const lp_rules *rules,
                      const char *at, float *grad, float *act, float *scores);
/* Elements per row of value `at` (NULL: the input) for this run's batch, and its
 * per-row shape (ndim includes the batch dimension, set to 1). */
lp_status _lp_x_value_size(_lp_xctx *x, const char *at, int64_t *per, int *ndim, int64_t *shape);
/* The (rule-modified) gradient of the target w.r.t. every input, in batches: *attr new,
 * of the input's shape. */
lp_status _lp_x_input_grads(_lp_xctx *x, const lp_rules *rules, lp_tensor **attr);
/* Rows per pass (opts->batch). */
int64_t _lp_x_batch(const _lp_xctx *x);
void _lp_x_progress(_lp_xctx *x, int64_t rows);
/* A new host tensor of n rows with a row shape (ndim includes the batch dim). */
lp_status _lp_x_new_attr(lp_tensor **out, int64_t n, int ndim, const int64_t *row_shape);
/* A rule table with every entry NULL except the ones the caller sets. */
lp_status _lp_rules_new(lp_rules *r, void *user);
void _lp_rules_free(lp_rules *r);
/* Set `fn` as the rule of op `type` (must exist). */
void _lp_rules_set(lp_rules *r, const char *type, lp_backward_fn fn);

/* cam.c: is `method` one of the CAM family; the not-found error for a CAM layer,
 * naming a few spatial layers. */
int _lp_cam_method(const char *method);
lp_status _lp_cam_layer_missing(const lp_model *m, const char *name);
/* cam.c: the CAM layer for this call (opts->layer, else the last spatial value the
 * target depends on), from `shapes` (every value's, for this input). */
lp_status _lp_cam_layer(const _lp_xctx *x, const lp_shape *shapes, const char **layer);

/* Guided backprop's (deconvnet: 1) ReLU rule table (grad_methods.c); free with _lp_rules_free. */
lp_status _lp_guided_rules(lp_rules *r, int deconvnet);

/* ---- baselines and images (maps.c) ---------------------------------------------- */
/* The baseline of input row i (per floats) into out. */
lp_status _lp_x_baseline(_lp_xctx *x, int64_t i, float *out);
/* Gaussian blur of c planes, as torchvision's gaussian_blur: kernel size
 * 2 ceil(3 sigma) + 1 (capped by the image), reflected edges. */
void _lp_blur(const float *src, int c, int h, int w, float sigma, float *dst);
/* Bilinear resize with half-pixel centres (torch interpolate, align_corners=False,
 * and cv2.resize INTER_LINEAR) of c planes h x w to H x W. */
void _lp_resize_bilinear(const float *src, int c, int h, int w, float *dst, int H, int W);

#endif
