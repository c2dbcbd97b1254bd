/* tsne_cli.h — what `loupe tsne` (cli/tsne.c) shares with `loupe embed`
 * (cli/embed.c): the t-SNE options, label loading, and running + writing outputs. */
#ifndef LOUPE_TSNE_CLI_H
#define LOUPE_TSNE_CLI_H

#include "cli.h"

typedef struct cli_tsne_args {
    lp_tsne_opts o;
    const char *out, *plot, *labels_path, *names_path;
    int metrics;
} cli_tsne_args;
int cli_tsne_option(int c, const char *arg, cli_tsne_args *a);
/* With `prefix`, a longer label file is fine: its first n labels are used (--limit). */
int cli_tsne_load_labels(const char *path, int64_t n, int prefix, int64_t **out);
/* Runs t-SNE on the rows of x and writes -o / --plot / --metrics; the embedding is
 * handed back in *y_out when that is non-NULL (else freed). */
int cli_tsne_finish(const cli_tsne_args *a, const lp_tensor *x, const int64_t *labels, char **names, int n_names,
                    const char *title, lp_tensor **y_out);

#define OPT_PERP 2001
#define OPT_THETA 2002
#define OPT_ITERS 2003
#define OPT_SEED 2004
#define OPT_LR 2005
#define OPT_INIT 2006
#define OPT_EXAG 2007
#define OPT_LABELS 2008
#define OPT_PLOT 2009
#define OPT_METRICS 2010
#define OPT_NAMES 2011
#define OPT_DIMS 2012
#define OPT_LIMIT 2013

#define TSNE_LONGOPTS                                                                                                 \
    {"dims", required_argument, 0, OPT_DIMS}, {"perplexity", required_argument, 0, OPT_PERP},                        \
        {"theta", required_argument, 0, OPT_THETA}, {"iters", required_argument, 0, OPT_ITERS},                      \
        {"seed", required_argument, 0, OPT_SEED}, {"learning-rate", required_argument, 0, OPT_LR},                   \
        {"exaggeration", required_argument, 0, OPT_EXAG}, {"init", required_argument, 0, OPT_INIT},                 \
        {"labels", required_argument, 0, OPT_LABELS}, {"label-names", required_argument, 0, OPT_NAMES},              \
        {"plot", required_argument, 0, OPT_PLOT}, {"metrics", no_argument, 0, OPT_METRICS}

#define TSNE_HELP                                                                                              \
    "  --dims 2|3            output dimensions (default 2)\n"                                              \
    "  --perplexity P        effective neighbour count (default 30; uses 3P neighbours)\n"                \
    "  --theta T             Barnes-Hut accuracy, 0 = exact (default 0.5)\n"                              \
    "  --iters N             iterations incl. 250 of early exaggeration (default 1000)\n"                 \
    "  --seed S              seed of the PCA start / random init (default 42)\n"                          \
    "  --learning-rate L     default max(200, N/12)\n"                                                     \
    "  --exaggeration E      early exaggeration (default 12)\n"                                           \
    "  --init pca|random     start (default pca, scaled to std 1e-4)\n"                                   \
    "  --labels L            labels (.npy of integers or float32, or IDX labels) to colour by\n"          \
    "  --label-names FILE    class names, one per line (label i -> line i)\n"                             \
    "  --plot out.png|.svg   scatter plot coloured by label, with a legend\n"                             \
    "  --metrics             print KL, trustworthiness and kNN preservation (k = 10; exact up to\n"       \
    "                        10,000 points, else on a 10,000-point sample) as JSON on stdout\n"

#endif
