/* tsne.c — `loupe tsne X.npy -o Y.npy`: Barnes-Hut t-SNE of the rows of an array
 * (or of an IDX image file), with a progress bar showing the KL estimate, a scatter
 * plot coloured by label, and quality metrics as JSON. The embedding steps shared
 * with `loupe embed` (labels, run, outputs) are the cli_tsne_* functions here. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tsne_cli.h"

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int parse_num(const char *name, const char *arg, double lo, double hi, double *v) {
    char *end;
    double x = strtod(arg, &end);
    if (end == arg || *end || !(x >= lo && x <= hi)) return cli_fail("--%s: expected a number in [%g, %g], got '%s'", name, lo, hi, arg), 0;
    *v = x;
    return 1;
}

/* 1: handled, 0: bad value (message printed), -1: not a t-SNE option. */
int cli_tsne_option(int c, const char *arg, cli_tsne_args *a) {
    double v;
    switch (c) {
    case OPT_DIMS:
        if (strcmp(arg, "2") && strcmp(arg, "3")) return cli_fail("--dims: expected 2 or 3, got '%s'", arg), 0;
        v = atoi(arg);
        a->o.dims = (int)v;
        return 1;
    case OPT_PERP: if (!parse_num("perplexity", arg, 1e-3, 1e6, &v)) return 0; a->o.perplexity = v; return 1;
    case OPT_THETA: if (!parse_num("theta", arg, 0, 10, &v)) return 0; a->o.theta = v; return 1;
    case OPT_ITERS: if (!parse_num("iters", arg, 0, 1e7, &v)) return 0; a->o.iters = (int)v; return 1;
    case OPT_SEED: if (!parse_num("seed", arg, 0, 1.8e19, &v)) return 0; a->o.seed = strtoull(arg, NULL, 10); return 1;
    case OPT_LR: if (!parse_num("learning-rate", arg, 0, 1e9, &v)) return 0; a->o.learning_rate = v; return 1;
    case OPT_EXAG: if (!parse_num("exaggeration", arg, 1e-3, 1e4, &v)) return 0; a->o.exaggeration = v; return 1;
    case OPT_INIT:
        if (!strcmp(arg, "pca")) a->o.init = LP_TSNE_INIT_PCA;
        else if (!strcmp(arg, "random")) a->o.init = LP_TSNE_INIT_RANDOM;
        else return cli_fail("--init: expected pca or random, got '%s'", arg), 0;
        return 1;
    case OPT_LABELS: a->labels_path = arg; return 1;
    case OPT_NAMES: a->names_path = arg; return 1;
    case OPT_PLOT: a->plot = arg; return 1;
    case OPT_METRICS: a->metrics = 1; return 1;
    case 'o': a->out = arg; return 1;
    }
    return -1;
}

/* A .npy of integers ('<i8', '<i4', '<u1') read here, since lp_npy_load is float32 only. */
static int load_int_npy(const char *path, int64_t n, int prefix, int64_t **out) {
    FILE *f = fopen(path, "rb");
    if (!f) return cli_fail("%s: cannot open the labels", path);
    unsigned char pre[10];
    char hdr[4096];
    int rc = 1;
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0 || pre[6] != 1) {
        fclose(f);
        return cli_fail("%s: not a version-1 .npy file", path);
    }
    size_t hl = pre[8] | (size_t)pre[9] << 8;
    if (hl >= sizeof hdr || fread(hdr, 1, hl, f) != hl) {
        fclose(f);
        return cli_fail("%s: truncated .npy header", path);
    }
    hdr[hl] = 0;
    int size = strstr(hdr, "'<i8'") ? 8 : strstr(hdr, "'<i4'") ? 4 : (strstr(hdr, "'|u1'") || strstr(hdr, "'|i1'")) ? 1 : 0;
    const char *sh = strstr(hdr, "'shape': (");
    long long cnt = sh ? strtoll(sh + 10, NULL, 10) : -1;
    if (!size) rc = cli_fail("%s: labels must be integers (int64, int32, uint8) or float32", path);
    else if (strstr(hdr, "'fortran_order': True")) rc = cli_fail("%s: Fortran-order arrays are not supported", path);
    else if (cnt != n && !(prefix && cnt > n)) rc = cli_fail("%s: %lld labels for %lld points (the counts must match)", path, cnt, (long long)n);
    else {
        int64_t *l = malloc((size_t)n * sizeof(int64_t));
        unsigned char b[8];
        int64_t i = 0;
        for (; l && i < n && fread(b, 1, (size_t)size, f) == (size_t)size; i++) {
            if (size == 8) {
                uint64_t u = 0;
                for (int k = 7; k >= 0; k--) u = u << 8 | b[k];
                l[i] = (int64_t)u;
            } else if (size == 4) {
                l[i] = (int32_t)(b[0] | b[1] << 8 | b[2] << 16 | (uint32_t)b[3] << 24);
            } else
                l[i] = strstr(hdr, "'|i1'") ? (int8_t)b[0] : b[0];
        }
        if (!l || i != n) {
            free(l);
            rc = cli_fail("%s: truncated labels (%lld of %lld)", path, (long long)i, (long long)n);
        } else {
            *out = l;
            rc = 0;
        }
    }
    fclose(f);
    return rc;
}

int cli_tsne_load_labels(const char *path, int64_t n, int prefix, int64_t **out) {
    *out = NULL;
    lp_tensor *t = NULL;
    if (ends_with(path, ".npy")) {
        if (lp_npy_load(path, &t) != LP_OK) {
            if (strstr(lp_last_error(), "float32 only")) return load_int_npy(path, n, prefix, out);
            return cli_lib_fail();
        }
    } else if (lp_idx_load_labels(path, &t) != LP_OK)
        return cli_lib_fail();
    int rc = 0;
    int64_t cnt = lp_tensor_numel(t);
    if (cnt != n && !(prefix && cnt > n)) rc = cli_fail("%s: %lld labels for %lld points (the counts must match)", path, (long long)cnt, (long long)n);
    int64_t *l = rc ? NULL : malloc((size_t)n * sizeof(int64_t));
    for (int64_t i = 0; l && i < n; i++) {
        if (t->dtype == LP_I64) l[i] = ((int64_t *)t->data)[i];
        else {
            float v = ((float *)t->data)[i];
            if (v != floorf(v) || fabsf(v) > 1e9f) {
                rc = cli_fail("%s: label %lld is %g, not an integer", path, (long long)i, v);
                break;
            }
            l[i] = (int64_t)v;
        }
    }
    lp_tensor_free(t);
    if (rc) free(l);
    else *out = l;
    return rc;
}

typedef struct progress_ctx {
    cli_progress bar;
} progress_ctx;

static int on_iter(const lp_tsne_progress *p, void *user) {
    progress_ctx *c = user;
    char extra[64];
    snprintf(extra, sizeof extra, "KL %.4f%s", p->kl, p->exaggerating ? " (exaggerated)" : "");
    cli_progress_update(&c->bar, p->iter, extra);
    return 0;
}

/* Run t-SNE on x (rows) and write what was asked: Y, the plot, the metrics JSON. */
int cli_tsne_finish(const cli_tsne_args *a, const lp_tensor *x, const int64_t *labels, char **names, int n_names,
                    const char *title, lp_tensor **y_out) {
    if (y_out) *y_out = NULL;
    lp_tsne_opts o = a->o;
    progress_ctx pc;
    cli_progress_start(&pc.bar, "t-SNE", o.iters);
    o.callback = on_iter;
    o.user = &pc;
    lp_tensor *y = NULL;
    lp_tsne_stats st;
    lp_status s = lp_tsne(x, &o, &y, &st);
    cli_progress_end(&pc.bar);
    if (s != LP_OK) return cli_lib_fail();
    int rc = 0;
    int64_t n = y->shape[0];
    if (a->out && lp_npy_save(a->out, y) != LP_OK) rc = cli_lib_fail();
    if (!rc && a->plot &&
        lp_scatter_plot(a->plot, y->data, n, o.dims, labels, (const char *const *)names, n_names, title) != LP_OK)
        rc = cli_lib_fail();
    if (!rc && a->metrics) {
        lp_tsne_quality q;
        if (lp_tsne_metrics(x, y, labels, 10, 10000, o.seed, &q) != LP_OK) rc = cli_lib_fail();
        else {
            printf("{\"n\": %lld, \"dims\": %d, \"perplexity\": %g, \"theta\": %g, \"iters\": %d, \"k\": %d, "
                   "\"kl\": %.6f, \"trustworthiness\": %.6f, \"knn_kept\": %.6f, \"metric_k\": %d, "
                   "\"metric_points\": %lld, \"metric_exact\": %s",
                   (long long)n, o.dims, o.perplexity, o.theta, st.iters_done, st.k, st.kl, q.trustworthiness,
                   q.knn_kept, q.k, (long long)q.sampled, q.sampled == n ? "true" : "false");
            if (labels) printf(", \"knn_accuracy\": %.6f", q.knn_accuracy);
            printf(", \"seconds_knn\": %.3f, \"seconds_p\": %.3f, \"seconds_opt\": %.3f}\n", st.seconds_knn, st.seconds_p,
                   st.seconds_opt);
        }
    }
    if (!rc && !a->metrics)
        fprintf(stderr, "t-SNE: %lld points -> %d-D, KL %.4f, %.1fs%s%s%s%s\n", (long long)n, o.dims, st.kl,
                st.seconds_knn + st.seconds_p + st.seconds_opt, a->out ? ", wrote " : "", a->out ? a->out : "",
                a->plot ? ", plot " : "", a->plot ? a->plot : "");
    if (y_out && !rc) *y_out = y;
    else lp_tensor_free(y);
    return rc;
}

static void help(void) {
    printf("usage: loupe tsne X.npy|IMAGES.idx -o Y.npy [options]\n\n"
           "Barnes-Hut t-SNE of the rows of X (N x D float32; N x ... is flattened; an IDX image file\n"
           "gives one row per image). Writes the N x dims embedding as .npy.\n\n"
           "  -o Y.npy              output coordinates\n"
           "  --limit N             use the first N rows only\n"
           TSNE_HELP
           "  --device D            cpu, cuda or auto (default: cpu)\n");
}

int cmd_tsne(int argc, char **argv) {
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {"device", required_argument, 0, CLI_OPT_DEVICE},
                                         {"limit", required_argument, 0, OPT_LIMIT}, TSNE_LONGOPTS, {0, 0, 0, 0}};
    cli_tsne_args a;
    memset(&a, 0, sizeof a);
    lp_tsne_opts_default(&a.o);
    long long limit = 0;
    int c;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        if (c == 'h') return help(), 0;
        if (c == CLI_OPT_DEVICE) {
            if (lp_device_parse(optarg, &a.o.device) != LP_OK) return cli_lib_fail();
            continue;
        }
        if (c == OPT_LIMIT) {
            char *end;
            limit = strtoll(optarg, &end, 10);
            if (*end || limit < 1) return cli_fail("--limit: expected a positive row count, got '%s'", optarg);
            continue;
        }
        int r = cli_tsne_option(c, optarg, &a);
        if (r == 1) continue;
        if (r == 0) return 1;
        fprintf(stderr, "see: loupe tsne --help\n");
        return 2;
    }
    if (argc - optind != 1) return cli_fail("tsne needs one input array X.npy (see loupe tsne --help)");
    if (!a.out && !a.plot && !a.metrics) return cli_fail("tsne: nothing to write: give -o Y.npy, --plot or --metrics");
    const char *in = argv[optind];
    lp_tensor *x = NULL;
    if (ends_with(in, ".npy") ? lp_npy_load(in, &x) != LP_OK : lp_idx_load_images(in, &x) != LP_OK) return cli_lib_fail();
    if (limit > 0 && limit < x->shape[0]) {
        /* Rows are contiguous: the first `limit` are a prefix of the buffer. */
        x->nbytes = x->nbytes / (size_t)x->shape[0] * (size_t)limit;
        x->shape[0] = limit;
    }
    int64_t n = x->shape[0];
    int64_t *labels = NULL;
    char **names = NULL;
    int n_names = 0, rc = 1;
    if (a.labels_path && cli_tsne_load_labels(a.labels_path, n, limit > 0, &labels)) goto out;
    if (a.names_path && (n_names = cli_read_labels(a.names_path, &names)) == 0) {
        rc = cli_fail("%s: cannot read label names", a.names_path);
        goto out;
    }
    rc = cli_tsne_finish(&a, x, labels, names, n_names, in, NULL);
out:
    if (names) cli_free_labels(names, n_names);
    free(labels);
    lp_tensor_free(x);
    return rc;
}
