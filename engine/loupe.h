/* loupe.h — the one public header of libloupe: tensors, models, runs (forward and
 * backward), image/array I/O and training. Every function returns an lp_status;
 * lp_last_error() holds a one-line message with context. The library never exits
 * or prints. */
#ifndef LOUPE_H
#define LOUPE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status ---------------------------------------------------------------- */
typedef enum lp_status {
    LP_OK = 0,
    LP_ERR_IO,          /* file missing, unreadable, unwritable */
    LP_ERR_PARSE,       /* malformed ONNX / image / npy / idx */
    LP_ERR_UNSUPPORTED, /* unknown op, dtype, format feature */
    LP_ERR_SHAPE,       /* shape mismatch, wrong rank */
    LP_ERR_ARG,         /* bad argument (name not found, value out of range) */
    LP_ERR_OOM,         /* out of memory (host or device) */
    LP_ERR_DEVICE,      /* device missing or a CUDA/cuDNN/cuBLAS failure */
    LP_ERR_INTERNAL
} lp_status;

const char *lp_status_str(lp_status s);
/* The message of the last failing call on this thread ("" if none). */
const char *lp_last_error(void);

/* ---- tensors ---------------------------------------------------------------- */
#define LP_MAX_DIMS 6

typedef enum lp_dtype { LP_F32 = 0, LP_I64 = 1 } lp_dtype;
typedef enum lp_device { LP_DEVICE_CPU = 0, LP_DEVICE_CUDA = 1 } lp_device;

/* A dense, row-major (NCHW for images) tensor. int64 tensors always live on the host. */
typedef struct lp_tensor {
    int ndim;
    int64_t shape[LP_MAX_DIMS];
    lp_dtype dtype;
    lp_device device;
    void *data;
    size_t nbytes;
    int owns; /* data freed by lp_tensor_free */
} lp_tensor;

/* New zero-filled tensor on `dev`. */
lp_status lp_tensor_new(lp_tensor **out, lp_device dev, lp_dtype dt, int ndim, const int64_t *shape);
/* A copy of `src` on `dev`. */
lp_status lp_tensor_clone(lp_tensor **out, const lp_tensor *src, lp_device dev);
void lp_tensor_free(lp_tensor *t);
int64_t lp_tensor_numel(const lp_tensor *t);
size_t lp_dtype_size(lp_dtype dt);
/* Host copy of a (possibly device) tensor's data into dst (nbytes bytes). */
lp_status lp_tensor_read(const lp_tensor *t, void *dst, size_t nbytes);
/* "1x3x224x224" into buf. */
const char *lp_shape_str(int ndim, const int64_t *shape, char *buf, size_t len);

/* ---- devices ---------------------------------------------------------------- */
/* Number of usable CUDA devices (0 when built without CUDA or none present). */
int lp_cuda_device_count(void);
/* Parse "cpu" | "cuda" | "auto" into a device; auto picks CUDA when present. */
lp_status lp_device_parse(const char *s, lp_device *out);
const char *lp_device_name(lp_device d);
/* The device's model name ("NVIDIA H200", or the CPU's from /proc/cpuinfo). */
const char *lp_device_description(lp_device d);
/* Wait until the device has finished all queued work (timing, host reads). */
lp_status lp_device_sync(lp_device d);

/* Device memory as Loupe's caching allocator sees it: bytes handed out now, the most
 * ever handed out since the last reset, and bytes held in the cache for reuse. */
typedef struct lp_memory_stats {
    int64_t in_use, peak, cached;
} lp_memory_stats;
lp_status lp_device_memory(lp_device d, lp_memory_stats *out);
void lp_device_memory_reset_peak(lp_device d);
/* Give cached device memory back to the driver. */
void lp_device_memory_trim(lp_device d);

/* CUDA (fp32 and tf32, and bf16 into packed outputs): cuDNN's fused convolution + bias
 * + activation, decided per forward convolution shape and activation (none / ReLU) on
 * its first call outside a graph: used where it matches Loupe's own
 * convolution-then-kernel path on a sample and runs faster (LOUPE_CUDNN_FUSE=0: never;
 * =1: wherever it matches). The decisions so far; ms_*: one call each, summed over the
 * shapes that were timed. */
typedef struct lp_fusion_stats {
    int fused;      /* matched and ran faster (or LOUPE_CUDNN_FUSE=1) */
    int slower;     /* matched, ran slower: Loupe's path kept */
    int refused;    /* cuDNN refused the fused call */
    int mismatched; /* its sample differed from Loupe's path: that path kept */
    int off;        /* LOUPE_CUDNN_FUSE=0, deciding failed, or Loupe's output was all zeros thrice */
    int untried;    /* after 5 s spent deciding (per process; LOUPE_CUDNN_FUSE_BUDGET_S): Loupe's path */
    double ms_fused, ms_ours;
    double s_deciding; /* seconds spent deciding, this process */
} lp_fusion_stats;
lp_status lp_device_fusion_stats(lp_device d, lp_fusion_stats *out);

/* Math of convolutions and GEMMs. fp32: exact IEEE float (TF32 off); tf32: tensor
 * cores with TF32 inputs; bf16: tensor cores, bfloat16 inputs in NHWC, fp32
 * accumulation. Everything else stays fp32. tf32 and bf16 need the CUDA backend. */
typedef enum lp_precision { LP_PREC_FP32 = 0, LP_PREC_TF32 = 1, LP_PREC_BF16 = 2 } lp_precision;
lp_status lp_precision_parse(const char *s, lp_precision *out);
const char *lp_precision_name(lp_precision p);

/* ---- models (the graph IR) ---------------------------------------------------- */
typedef struct lp_model lp_model;

/* Load an ONNX file (inline or external weights). Folds constants, Shape/Gather
 * chains and BatchNormalization into a preceding Conv; infers static shapes. */
lp_status lp_model_load(const char *path, lp_model **out);
/* Write the model as ONNX (opset 13), weights inline. */
lp_status lp_model_save(const lp_model *m, const char *path);
void lp_model_free(lp_model *m);

/* The model's (first) input: name and declared shape (dynamic dims reported as 1). */
const char *lp_model_input_name(const lp_model *m);
lp_status lp_model_input_shape(const lp_model *m, int *ndim, int64_t shape[LP_MAX_DIMS]);
const char *lp_model_output_name(const lp_model *m);
/* Sum of the element counts of all float initializers (the weights). */
int64_t lp_model_param_count(const lp_model *m);

typedef struct lp_node_info {
    const char *name;   /* node name (ONNX), or its first output's name if unnamed */
    const char *op;     /* ONNX op_type */
    const char *output; /* first output value's name */
    int ndim;           /* static output shape (for the declared input shape) */
    int64_t shape[LP_MAX_DIMS];
    int64_t params;     /* float initializer elements the node reads */
    int64_t macs;       /* multiply-adds per forward (batch of the declared shape) */
} lp_node_info;

int lp_model_num_nodes(const lp_model *m);
lp_status lp_model_node_info(const lp_model *m, int i, lp_node_info *out);
/* Does the model have a value (node output, input, or initializer) of this name? */
int lp_model_has_value(const lp_model *m, const char *name);
/* A layer as users name it: a value name, or a node name meaning its first output.
 * Returns the value's name (owned by the model), or NULL if neither exists. */
const char *lp_model_layer_value(const lp_model *m, const char *name);

/* ---- runs: forward and backward over one batch -------------------------------- */
typedef struct lp_run lp_run;
/* Backward rules: per-op backward functions as data. NULL means the true gradient.
 * Later methods (guided backprop, deconvnet, LRP) build their own tables. */
typedef struct lp_rules lp_rules;

lp_status lp_run_new(lp_model *m, lp_device dev, lp_run **out);
void lp_run_free(lp_run *r);
/* Precision of this run's convolutions and GEMMs (default fp32); LP_ERR_DEVICE for
 * tf32/bf16 on the CPU. */
lp_status lp_run_set_precision(lp_run *r, lp_precision p);
/* Forward-only runs keep only the outputs and captured values: every other activation
 * lives in one arena whose bytes are shared by layers that are never alive at once,
 * so memory is the working set, not the whole network (and a CUDA run replays its
 * passes as graphs); backward is then refused. Off by default. */
lp_status lp_run_set_forward_only(lp_run *r, int on);
/* Lean runs take only plain input gradients (saliency, integrated gradients, Grad-CAM
 * at a captured layer): the forward keeps the outputs, the captured values and what
 * those gradients read (a ReLU's output, not its input; never a convolution's input),
 * and gradients other than the input's and the captured values' share the arena with
 * the forward's transients. Backward with weight gradients, or with a rule table
 * that reads more than the plain backward (LRP's; guided backprop's and deconvnet's
 * do not), is then refused; lp_run_value and lp_run_grad give NULL for what was not
 * kept. Off by default. */
lp_status lp_run_set_lean(lp_run *r, int on);
/* A lean run whose gradients stop at value `stop_at` (Grad-CAM's layer; NULL: the
 * inputs, as lp_run_set_lean(r, 1)): it also drops what only the backward below that
 * value would read. Its backward passes must then stop there too (lp_backward_opts
 * .stop_at, or a value it feeds); the value itself and its gradient are kept. */
lp_status lp_run_set_lean_at(lp_run *r, const char *stop_at);
/* What the executor's speed paths did in this run: activations (Relu, ReLU6's Clip) computed in the pass of the
 * Conv before them (forward-only and lean runs) or of a packed Add, activations
 * stored packed as bf16 NHWC between convolutions (forward-only and lean runs in
 * bf16; lean runs their gradients too), and
 * passes replayed from a CUDA graph (CUDA runs). */
typedef struct lp_run_speed {
    int fused;
    int packed;
    int packed_grads; /* lean runs in bf16: gradients stored packed alike */
    int64_t graph_replays;
    int64_t held_bytes; /* device bytes the run holds for activations and gradients (arena included) */
    int shared_grads;   /* lean runs: Add inputs' gradients kept in the Add's gradient buffer (no copy) */
} lp_run_speed;
void lp_run_speed_info(const lp_run *r, lp_run_speed *out);
/* Keep the named value (or every value with "*") after forward, for reading. */
lp_status lp_run_capture(lp_run *r, const char *value_name);
/* Run forward on `input` (N x ... ; any device). The batch size may differ from
 * the declared one. */
lp_status lp_run_forward(lp_run *r, const lp_tensor *input);
/* A value after forward: the output, a captured value, or an initializer. NULL if absent. */
const lp_tensor *lp_run_value(const lp_run *r, const char *name);
const lp_tensor *lp_run_output(const lp_run *r);

typedef struct lp_backward_opts {
    const char *of;          /* value to differentiate (NULL: the model output) */
    const lp_tensor *seed;   /* d(objective)/d(of), same shape as `of`; NULL: ones */
    int weight_grads;        /* also compute gradients of every float initializer */
    const lp_rules *rules;   /* NULL: the true gradient */
    const char *stop_at;     /* only down to this value (NULL: to the input): the nodes
                              * it does not feed never run; not with weight_grads */
} lp_backward_opts;

/* Backward from `opts->of` to the input (and captured values, and weights on
 * request). Needs a prior lp_run_forward. */
lp_status lp_run_backward(lp_run *r, const lp_backward_opts *opts);
/* Gradient w.r.t. a value (input name, captured value, or initializer when
 * weight_grads). NULL if not computed. */
const lp_tensor *lp_run_grad(const lp_run *r, const char *name);

/* ---- images and arrays ---------------------------------------------------- */
typedef struct lp_image {
    int w, h, c;      /* c: 1 gray, 3 RGB, 4 RGBA */
    float *px;        /* h*w*c floats in [0,1], interleaved (HWC) */
} lp_image;

/* Decode PNG (8/16-bit, gray/RGB/RGBA/palette) or JPEG by content. */
lp_status lp_image_load(const char *path, lp_image *out);
void lp_image_free(lp_image *img);
lp_status lp_image_save_png(const char *path, const lp_image *img);

typedef struct lp_preprocess {
    int size;           /* resize shorter side to this (0: no resize) */
    int crop;           /* center crop to crop x crop (0: none) */
    int channels;       /* 1 or 3: convert gray/RGB(A) as needed */
    float mean[3], std[3];
} lp_preprocess;
/* ImageNet defaults: resize 256, crop 224, RGB, mean/std of ImageNet. */
lp_preprocess lp_preprocess_imagenet(void);
/* Preprocess images into an N x C x H x W host tensor. */
lp_status lp_images_to_tensor(const lp_image *imgs, int n, const lp_preprocess *pp, lp_tensor **out);

/* NumPy .npy (float32, little-endian, C order, any rank <= LP_MAX_DIMS). */
lp_status lp_npy_load(const char *path, lp_tensor **out);
lp_status lp_npy_save(const char *path, const lp_tensor *t);

/* IDX files (MNIST / Fashion-MNIST), gzip'd or not: images as N x 1 x H x W in
 * [0,1]; labels as int64 N. */
lp_status lp_idx_load_images(const char *path, lp_tensor **out);
lp_status lp_idx_load_labels(const char *path, lp_tensor **out);

/* Colour maps for pictures of maps. */
typedef enum lp_colormap { LP_CMAP_GRAY = 0, LP_CMAP_VIRIDIS, LP_CMAP_INFERNO, LP_CMAP_DIVERGING } lp_colormap;
/* Map v in [0,1] (diverging: [-1,1]) to RGB in [0,1]. */
void lp_colormap_rgb(lp_colormap cm, float v, float rgb[3]);
/* A grid picture of c channel maps (c x h x w host floats), each normalised to its own
 * min..max, coloured with `cm`, scaled up by `scale` (nearest), 1-pixel gaps. */
lp_status lp_channel_grid(const float *chw, int c, int h, int w, int scale, lp_colormap cm, lp_image *out);

/* Atomic output: write to path.tmp then rename, so no half-written file remains. */
lp_status lp_file_commit(const char *tmp_path, const char *path);

/* ---- attribution: which inputs made the network say "dog" --------------------- */
/* Methods are named as Captum names them where it has them (snake case):
 * saliency, input_x_gradient, smoothgrad, smoothgrad_sq, vargrad,
 * integrated_gradients, gradient_shap, guided_backprop, deconvnet, lrp, deeplift,
 * cam, gradcam, gradcam_pp, xgradcam, layercam, scorecam, ablationcam, eigencam,
 * guided_gradcam, occlusion, occlusion_random, rise. lp_explain_method_count /
 * lp_explain_method_name / lp_explain_method_summary enumerate them. */
int lp_explain_method_count(void);
const char *lp_explain_method_name(int i);
const char *lp_explain_method_summary(int i);
/* Comma-separated list of every method, for messages. */
const char *lp_explain_method_list(void);
/* The method's name as listed, for a name or an alias (Captum's "deconvolution");
 * NULL if there is no such method. */
const char *lp_explain_method_find(const char *name);

typedef enum lp_target_kind {
    LP_TARGET_TOP1 = 0, /* the predicted class of each input (default) */
    LP_TARGET_CLASS,    /* a class index */
    LP_TARGET_NEURON,   /* one unit: layer, channel (and y, x for spatial layers) */
    LP_TARGET_CHANNEL   /* the mean of one channel of a layer */
} lp_target_kind;

typedef struct lp_target {
    lp_target_kind kind;
    int64_t cls;        /* LP_TARGET_CLASS */
    const char *layer;  /* NEURON / CHANNEL: a value name (see `loupe info`) */
    int64_t channel;    /* NEURON / CHANNEL */
    int64_t y, x;       /* NEURON on a spatial layer */
} lp_target;

/* Baselines of integrated_gradients, gradient_shap and deeplift. */
typedef enum lp_baseline {
    LP_BASELINE_ZERO = 0, /* the zero tensor (Captum's default) */
    LP_BASELINE_BLACK,    /* a black image: per-channel `black` values */
    LP_BASELINE_BLUR,     /* the input under a Gaussian blur of `blur_sigma` pixels */
    LP_BASELINE_UNIFORM,  /* uniform noise in [uniform_lo, uniform_hi], seeded */
    LP_BASELINE_TENSOR    /* `baseline_tensor` (1 or N rows of the input's shape) */
} lp_baseline;

/* Integration rules of integrated_gradients (Captum's names). */
typedef enum lp_ig_rule {
    LP_IG_GAUSS_LEGENDRE = 0, LP_IG_RIEMANN_LEFT, LP_IG_RIEMANN_RIGHT, LP_IG_RIEMANN_MIDDLE,
    LP_IG_RIEMANN_TRAPEZOID
} lp_ig_rule;

/* What occlusion slides over the image. */
typedef enum lp_fill {
    LP_FILL_ZERO = 0, /* 0 after normalisation: the dataset mean, i.e. gray (Captum's default) */
    LP_FILL_BLACK,    /* per-channel `black` */
    LP_FILL_BLUR,     /* the blurred input under the patch */
    LP_FILL_MEAN      /* each image's own per-channel mean */
} lp_fill;

typedef struct lp_explain_opts {
    const char *method;
    lp_target target;
    /* CAM methods: the convolutional layer (NULL: the last 4-D value before the
     * classifier). Gradient methods: attribute at this inner value instead of the
     * input (Captum's layer attributions). */
    const char *layer;
    int batch;                  /* rows per forward/backward pass (0: 16) */
    uint64_t seed;              /* noise, baselines, masks (0: 42) */
    /* integrated_gradients */
    int steps;                  /* 0: 50 */
    lp_ig_rule ig_rule;
    /* integrated_gradients, gradient_shap, deeplift */
    lp_baseline baseline;
    float black[3];             /* a black pixel after normalisation (BLACK baseline/fill) */
    float blur_sigma;           /* 0: 10 pixels */
    float uniform_lo, uniform_hi;
    const lp_tensor *baseline_tensor;
    /* smoothgrad, smoothgrad_sq, vargrad, gradient_shap */
    int samples;                /* 0: 25 (smoothgrad family), 20 (gradient_shap) */
    float noise_std;            /* absolute stdev of the Gaussian noise; 0: 0.15 x (max - min) of each input */
    /* Fixed draws instead of the seeded ones, so that a reference library's own
     * draws can be replayed: noise (samples x input shape), alphas (samples x N). */
    const lp_tensor *noise, *alphas;
    /* lrp: a composite or a single rule for every layer: epsilon_plus_flat (default),
     * epsilon_gamma_box, epsilon_plus, epsilon_alpha2_beta1, epsilon_alpha2_beta1_flat,
     * zero, epsilon, gamma, alpha2_beta1, alpha1_beta0, flat, w_square */
    const char *lrp;
    float epsilon;              /* 0: 1e-6 */
    float gamma;                /* 0: 0.25 */
    float low[3], high[3];      /* zB box bounds for the input layer (normalised units) */
    /* occlusion, occlusion_random */
    int patch, stride;          /* 0: 16, 8 */
    lp_fill fill;
    /* rise */
    int masks;                  /* rise masks, occlusion_random occluders (0: 4000) */
    int cells;                  /* the low-resolution mask grid (0: 7) */
    float keep;                 /* probability a cell is kept (0: 0.5) */
    const lp_tensor *mask_tensor; /* fixed masks (masks x 1 x H x W), replayed instead */
    /* Progress: `done` of `total` rows of work. May be NULL. */
    void (*progress)(void *user, int64_t done, int64_t total);
    void *user;
} lp_explain_opts;

void lp_explain_opts_default(lp_explain_opts *o);

typedef struct lp_explain_info {
    int64_t *targets;           /* per input: the class explained (-1 for neuron targets) */
    float *scores;              /* per input: the target score f(x) */
    int passes;                 /* forward(+backward) passes run */
    const char *layer;          /* out: the layer the method read (a CAM's, the one given to a
                                 * gradient method; owned by the model), NULL for the input */
} lp_explain_info;

/* Attribution of `input` (N x C x H x W host or device, preprocessed) on run `r`'s
 * model. *attr (host, new) is N x C x H x W for input-space methods (as Captum
 * returns them), N x 1 x H x W for maps without channels (CAM, RISE), or the
 * layer's shape when opts->layer is given to a gradient method. info may be NULL;
 * its arrays, when given, must hold N entries. */
lp_status lp_explain(lp_run *r, const lp_tensor *input, const lp_explain_opts *o, lp_tensor **attr,
                     lp_explain_info *info);

/* Reducing a map for pictures (as Captum's visualisation and the survey's papers do). */
typedef enum lp_sign { LP_SIGN_ABS = 0, LP_SIGN_POSITIVE, LP_SIGN_SIGNED } lp_sign;
typedef enum lp_chan_reduce { LP_CHAN_SUM = 0, LP_CHAN_MAX, LP_CHAN_L2, LP_CHAN_MEAN } lp_chan_reduce;
/* attr (N x C x H x W host) to N x 1 x H x W in [0,1] (signed: [-1,1]): channels
 * reduced (sum then sign, as Captum; max and L2 of magnitudes for ABS), then divided
 * by the value below which (100 - clip_percentile)% of the total mass lies
 * (Captum's outlier threshold; 0: the maximum) and clipped. */
lp_status lp_attr_normalize(const lp_tensor *attr, lp_sign sign, lp_chan_reduce red, float clip_percentile,
                            lp_tensor **out);

/* ---- t-SNE (Barnes-Hut; van der Maaten & Hinton 2008, van der Maaten 2014) ---- */
typedef enum lp_tsne_init { LP_TSNE_INIT_PCA = 0, LP_TSNE_INIT_RANDOM = 1 } lp_tsne_init;

/* What an iteration callback sees. `y` (n x dims, host) is valid during the call only. */
typedef struct lp_tsne_progress {
    int iter, iters;      /* iterations done, total */
    double kl;            /* KL(P||Q) estimate of the current embedding (unexaggerated P) */
    int exaggerating;     /* still in the early-exaggeration phase */
    const float *y;
    int64_t n;
    int dims;
} lp_tsne_progress;
/* Return non-zero to stop early (lp_tsne then returns LP_OK with the embedding so far). */
typedef int (*lp_tsne_callback)(const lp_tsne_progress *p, void *user);

typedef struct lp_tsne_opts {
    int dims;                /* 2 or 3 */
    double perplexity;       /* 30; k = 3 x perplexity neighbours */
    double theta;            /* Barnes-Hut accuracy, 0 = exact repulsion; 0.5 */
    int iters;               /* total iterations incl. early exaggeration; 1000 */
    uint64_t seed;           /* PCA start vectors / random init; 42 */
    double learning_rate;    /* 0 = auto: max(200, N / exaggeration) */
    double exaggeration;     /* early exaggeration factor; 12 */
    int exaggeration_iters;  /* 250 (momentum 0.5 during, 0.8 after) */
    lp_tsne_init init;       /* PCA scaled to std 1e-4 (default), or random N(0, 1e-4) */
    lp_tsne_callback callback; /* may be NULL */
    void *user;
    int callback_every;      /* iterations between callbacks; 10 */
    lp_device device;        /* LP_DEVICE_CPU */
} lp_tsne_opts;

typedef struct lp_tsne_stats {
    double kl;               /* KL(P||Q) of the result (Z exact for N <= 20000, else BH at theta 0.25) */
    int iters_done;
    int k;                   /* neighbours used */
    double seconds_knn, seconds_p, seconds_opt;
} lp_tsne_stats;

void lp_tsne_opts_default(lp_tsne_opts *o);
/* Embed the rows of x (N x D, or N x ... flattened; host f32) into *y (N x dims,
 * host). stats may be NULL. Deterministic for a seed on the CPU. */
lp_status lp_tsne(const lp_tensor *x, const lp_tsne_opts *o, lp_tensor **y, lp_tsne_stats *stats);

typedef struct lp_tsne_quality {
    int k;                   /* neighbourhood size (10) */
    int64_t sampled;         /* points the measures average over (N, or a sample) */
    double trustworthiness;  /* Venna & Kaski, as scikit-learn computes it */
    double knn_kept;         /* mean fraction of the k input neighbours kept in y */
    double knn_accuracy;     /* leave-one-out k-NN label accuracy in y (-1: no labels) */
} lp_tsne_quality;
/* Quality of an embedding y of x at k neighbours, exact over all points when
 * N <= max_sample (0: 10000), else over a seeded sample of max_sample points
 * (ranks still against all N). labels (N int64) may be NULL. */
lp_status lp_tsne_metrics(const lp_tensor *x, const lp_tensor *y, const int64_t *labels, int k,
                          int64_t max_sample, uint64_t seed, lp_tsne_quality *out);

/* A scatter plot of y (n x dims; the first two columns are drawn) coloured by
 * label (labels may be NULL; names may be NULL for numbers), with a legend. The
 * format follows the extension: .svg (text) or PNG. */
lp_status lp_scatter_plot(const char *path, const float *y, int64_t n, int dims, const int64_t *labels,
                          const char *const *names, int n_names, const char *title);
/* Images (n x c x h x w host floats in [0,1], c 1 or 3) drawn at their embedded
 * positions on a size x size canvas, as PNG. */
lp_status lp_thumbnail_plot(const char *path, const float *y, int64_t n, int dims, const lp_tensor *images,
                            int size);

/* ---- training (softmax cross-entropy, SGD with momentum) --------------------- */
/* Mean softmax cross-entropy of logits (N x K, host f32) against labels (N ints in
 * [0,K)); dlogits (N x K host f32, may be NULL) receives d(loss)/d(logits). */
lp_status lp_softmax_xent(const lp_tensor *logits, const int64_t *labels, float *loss, lp_tensor *dlogits);

typedef struct lp_train_opts {
    const char *images, *labels;           /* IDX training set (gzip'd or not) */
    const char *test_images, *test_labels; /* IDX test set; NULL: no evaluation */
    int epochs, batch;                     /* 0: 5, 64 */
    float lr, momentum, weight_decay;      /* e.g. 0.05, 0.9, 0 */
    uint64_t seed;                         /* shuffling */
    int limit;                             /* use the first `limit` training images (0: all) */
    lp_device device;
    /* After each step: images done this epoch, of total; `loss` is the step's mean loss. */
    void (*progress)(void *user, int epoch, int64_t done, int64_t total, float loss);
    /* After each epoch: mean training loss, test accuracy and loss (-1 without a test set). */
    void (*epoch_end)(void *user, int epoch, float train_loss, float test_accuracy, float test_loss);
    void *user;
} lp_train_opts;

typedef struct lp_train_result {
    float train_loss;      /* mean loss of the last epoch */
    float test_accuracy;   /* after the last epoch (-1 without a test set) */
    float test_loss;
    int64_t steps;
    double seconds;
} lp_train_result;

/* The small Fashion-MNIST CNN (input 1x1x28x28, logits 1x10; the batch may differ):
 * conv1-relu1-pool1 (32 ch) - conv2-relu2-pool2 (64 ch) - flatten - fc1-relu3 (128) -
 * fc2 (10), He-initialised from `seed`. */
lp_status lp_model_fashion_cnn(uint64_t seed, lp_model **out);
/* Train `m` in place (its weights are updated). res may be NULL. */
lp_status lp_train(lp_model *m, const lp_train_opts *o, lp_train_result *res);
/* Accuracy and mean loss of `m` on images (N x C x H x W) and labels (N int64), in batches. */
lp_status lp_evaluate(lp_model *m, lp_device dev, const lp_tensor *images, const lp_tensor *labels, float *accuracy,
                      float *loss);

#ifdef __cplusplus
}
#endif
#endif
