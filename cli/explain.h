/* explain.h — what `loupe explain` hands its report writer: the inputs as fed, how
 * they were preprocessed (to draw them again), the prediction, and each method's
 * attribution with its timing. */
#ifndef LOUPE_CLI_EXPLAIN_H
#define LOUPE_CLI_EXPLAIN_H

#include "loupe.h"

#define EXPLAIN_MAX_METHODS 32

typedef struct explain_method_result {
    const char *method;
    lp_tensor *attr;      /* N x C' x H' x W' host, as lp_explain returns it */
    double seconds;
    int passes;
    const char *layer;    /* the layer it read (CAMs, --layer), or NULL */
} explain_method_result;

typedef struct explain_report {
    const char *out_dir;           /* folder for .npy, PNG and index.html */
    const char *model_path;
    int n;                         /* inputs */
    const char *const *input_names;/* n display names (file base names, or "x.npy[3]") */
    const lp_tensor *input;        /* N x C x H x W as fed to the model (normalised) */
    lp_preprocess pre;             /* mean/std to undo for display */
    const int64_t *targets;        /* per input: the class explained (-1: neuron target) */
    const float *scores;           /* per input: target score */
    const float *probs;            /* per input: softmax probability of the target (NULL if not a class) */
    char **labels;                 /* class names (may be NULL) */
    int n_labels;
    const char *target_desc;       /* "top-1", "class 3", "neuron layer:c:y:x" */
    explain_method_result res[EXPLAIN_MAX_METHODS];
    int n_res;
    lp_sign sign;                  /* picture options (per method when auto) */
    int sign_auto;                 /* choose per method: signed methods diverging, others abs */
    lp_chan_reduce reduce;
    int reduce_auto;               /* saliency: max; others: sum (Captum's) */
    float clip;                    /* outlier percentile (Captum's default 2) */
    lp_colormap cmap;
    float alpha;                   /* overlay opacity */
    const char *device;
    int arrays_only;               /* --no-report: the .npy files only */
} explain_report;

/* Write every output file under r->out_dir (created if missing): per input and method
 * <input>_<method>.npy, _heat.png, _overlay.png, and index.html. Returns 0, or 1 after
 * printing the error line (no half-written file is left). */
int explain_report_write(const explain_report *r);

#endif
