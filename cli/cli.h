/* cli.h — shared pieces of the `loupe` command: subcommand entry points, error
 * reporting (one line on stderr, non-zero exit), the default model, progress bars. */
#ifndef LOUPE_CLI_H
#define LOUPE_CLI_H

#include "loupe.h"
#include <stdint.h>

/* Subcommands: each parses its own options (getopt_long) and answers --help. */
int cmd_info(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_activations(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_tsne(int argc, char **argv);
int cmd_embed(int argc, char **argv);
int cmd_explain(int argc, char **argv);

/* Print "loupe: <msg>" to stderr; returns 1 (the exit code). */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print "loupe: <lp_last_error()>" and return 1. */
int cli_lib_fail(void);

/* The bundled default model and sample images (assets/): $LOUPE_ASSETS, else the
 * source tree's assets folder compiled in. */
const char *cli_assets_dir(void);
/* assets/fashion_mnist_cnn.onnx */
const char *cli_default_model(void);
/* assets/fashion_mnist_labels.txt */
const char *cli_default_labels(void);
/* Does the path end with ".onnx"? (to tell an optional MODEL argument from inputs) */
int cli_is_onnx(const char *path);

/* Load inputs for a model: images (preprocessed to the model's input shape: a
 * 1-channel 28x28 model gets gray 28x28 with no normalisation unless given; an
 * ImageNet-shaped model the ImageNet recipe) or one .npy (N x C x H x W, fed as is). */
typedef struct cli_pre_opts {
    int size, crop;          /* -1: from the model's input shape */
    int has_mean, has_std;
    float mean[3], std[3];
} cli_pre_opts;
void cli_pre_defaults(cli_pre_opts *o);
/* getopt_long entries shared by commands that take inputs, and their handler:
 * returns 1 if `c` was one of them (0 on a bad value after printing, -1 if not one). */
#define CLI_OPT_SIZE 1001
#define CLI_OPT_CROP 1002
#define CLI_OPT_MEAN 1003
#define CLI_OPT_STD 1004
#define CLI_OPT_DEVICE 1005
#define CLI_OPT_PRECISION 1006
#define CLI_PRE_LONGOPTS                                                                       \
    {"size", required_argument, 0, CLI_OPT_SIZE}, {"crop", required_argument, 0, CLI_OPT_CROP}, \
        {"mean", required_argument, 0, CLI_OPT_MEAN}, {"std", required_argument, 0, CLI_OPT_STD},  \
        {"device", required_argument, 0, CLI_OPT_DEVICE}, {"precision", required_argument, 0, CLI_OPT_PRECISION}
#define CLI_PRE_HELP                                                                             \
    "  --size N         resize the shorter image side to N (default: from the model's input)\n"   \
    "  --crop N         center-crop N x N (default: the model's input size)\n"                    \
    "  --mean a,b,c     per-channel mean to subtract (default: ImageNet's for 3-channel\n"         \
    "                   inputs of 64 px or more, else 0)\n"                                        \
    "  --std a,b,c      per-channel std to divide by (default: ImageNet's, else 1)\n"              \
    "  --device D       cpu, cuda or auto (default: auto)\n"                                     \
    "  --precision P    fp32 (default, exact), tf32 or bf16 (tensor cores; CUDA only)\n"
typedef struct cli_common {
    cli_pre_opts pre;
    lp_device device;
    lp_precision precision;
} cli_common;
void cli_common_init(cli_common *o);
int cli_common_option(int c, const char *arg, cli_common *o);
/* A run of the model on the chosen device and precision; 0, or 1 after printing. */
int cli_run_new(lp_model *m, const cli_common *o, lp_run **out);
/* MODEL is optional: argv[*optind] if it ends with .onnx (advancing *optind), else the default. */
const char *cli_model_arg(int argc, char **argv, int *optind_);
/* Parse "a,b,c" (1 or 3 floats) into v; returns count or -1. */
int cli_parse_floats(const char *s, float *v, int max);
/* The preprocessing cli_load_inputs applies to images for this model and options
 * (also what a .npy batch is assumed to have had: mean/std say what black is). */
void cli_resolve_pre(const lp_model *m, const cli_pre_opts *o, lp_preprocess *out);
/* Returns 0, or 1 after printing the error line. */
int cli_load_inputs(const lp_model *m, int n, char **paths, const cli_pre_opts *o, lp_tensor **out);

/* Read a labels file, one class name per line. Returns the count (0 on failure). */
int cli_read_labels(const char *path, char ***names);
void cli_free_labels(char **names, int n);

/* A one-line progress bar on stderr (only when stderr is a terminal, or
 * LOUPE_PROGRESS=1): "label [#####.....] 42/100 12.3 it/s extra". */
typedef struct cli_progress {
    const char *label;
    int64_t total, done;
    double t0, last;
    int enabled;
} cli_progress;
void cli_progress_start(cli_progress *p, const char *label, int64_t total);
void cli_progress_update(cli_progress *p, int64_t done, const char *extra);
void cli_progress_end(cli_progress *p);
double cli_now(void);

#endif
