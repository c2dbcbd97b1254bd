/* embed.c — `loupe embed [MODEL] --layer NAME INPUT`: what a layer has learned, as
 * a t-SNE map. Runs the model over the inputs in batches, keeps the layer's
 * activations (flattened, or averaged over space with --pool), embeds them (or the
 * layer's channels with --neurons), and writes coordinates, a scatter coloured by
 * label or predicted class, and optionally the input images at their positions. */
#define _POSIX_C_SOURCE 200809L
#include "tsne_cli.h"

#include <dirent.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define OPT_POOL 3001
#define OPT_NEURONS 3002
#define OPT_THUMBS 3003
#define OPT_BATCH 3004

static void help(void) {
    printf("usage: loupe embed [MODEL] --layer NAME INPUT [-o Y.npy] [--plot out.png] [options]\n\n"
           "t-SNE of a layer's activations over many inputs. INPUT is a folder of images, an IDX\n"
           "image file (Fashion-MNIST) or an N x C x H x W .npy batch. Points are coloured by\n"
           "--labels, else by the model's predicted class.\n\n"
           "  --layer NAME          node or value name (see loupe info)\n"
           "  --pool                average each channel over space (C features instead of C*H*W)\n"
           "  --neurons             embed the layer's channels (one point per channel) instead\n"
           "  --thumbnails out.png  the input images drawn at their embedded positions\n"
           "  --limit N             use the first N inputs only\n"
           "  --batch B             forward batch size (default 256)\n"
           "  -o Y.npy              output coordinates\n" TSNE_HELP CLI_PRE_HELP);
}

static int is_image_name(const char *s) {
    const char *e = strrchr(s, '.');
    return e && (!strcasecmp(e, ".png") || !strcasecmp(e, ".jpg") || !strcasecmp(e, ".jpeg"));
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Image files of a folder, sorted by name. Returns the count, or -1 after printing. */
static int list_images(const char *dir, char ***out) {
    DIR *d = opendir(dir);
    if (!d) return cli_fail("%s: cannot open the folder", dir), -1;
    char **v = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_image_name(e->d_name)) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            char **nv = realloc(v, (size_t)cap * sizeof *v);
            if (!nv) break;
            v = nv;
        }
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        v[n] = malloc(len);
        if (!v[n]) break;
        snprintf(v[n], len, "%s/%s", dir, e->d_name);
        n++;
    }
    closedir(d);
    if (n == 0) {
        free(v);
        return cli_fail("%s: no .png or .jpg images in the folder", dir), -1;
    }
    qsort(v, (size_t)n, sizeof *v, cmp_str);
    *out = v;
    return n;
}

static int load_input(const lp_model *m, const char *in, const cli_pre_opts *pre, lp_tensor **x) {
    struct stat st;
    size_t len = strlen(in);
    if (stat(in, &st) == 0 && S_ISDIR(st.st_mode)) {
        char **files = NULL;
        int n = list_images(in, &files);
        if (n < 0) return 1;
        int rc = cli_load_inputs(m, n, files, pre, x);
        for (int i = 0; i < n; i++) free(files[i]);
        free(files);
        return rc;
    }
    if (len >= 4 && !strcmp(in + len - 4, ".npy")) {
        char *p = (char *)in;
        return cli_load_inputs(m, 1, &p, pre, x);
    }
    /* Otherwise an IDX image file: N x 1 x H x W in [0, 1]. */
    if (lp_idx_load_images(in, x) != LP_OK) return cli_lib_fail();
    return 0;
}

/* A batch view of rows [r0, r0 + rows) of x. */
static lp_tensor rows_of(const lp_tensor *x, int64_t r0, int64_t rows) {
    lp_tensor v = *x;
    size_t row = x->nbytes / (size_t)x->shape[0];
    v.shape[0] = rows;
    v.data = (char *)x->data + row * (size_t)r0;
    v.nbytes = row * (size_t)rows;
    v.owns = 0;
    return v;
}

int cmd_embed(int argc, char **argv) {
    static const struct option opts[] = {{"help", no_argument, 0, 'h'},         {"layer", required_argument, 0, 'L'},
                                         {"pool", no_argument, 0, OPT_POOL},     {"neurons", no_argument, 0, OPT_NEURONS},
                                         {"thumbnails", required_argument, 0, OPT_THUMBS},
                                         {"batch", required_argument, 0, OPT_BATCH},
                                         {"limit", required_argument, 0, OPT_LIMIT}, TSNE_LONGOPTS, CLI_PRE_LONGOPTS,
                                         {0, 0, 0, 0}};
    cli_common co;
    cli_common_init(&co);
    cli_tsne_args a;
    memset(&a, 0, sizeof a);
    lp_tsne_opts_default(&a.o);
    const char *layer = NULL, *thumbs = NULL;
    int pool = 0, neurons = 0, c;
    long long batch = 256, limit = 0;
    while ((c = getopt_long(argc, argv, "hL:o:", opts, NULL)) != -1) {
        switch (c) {
        case 'h': help(); return 0;
        case 'L': layer = optarg; continue;
        case OPT_POOL: pool = 1; continue;
        case OPT_NEURONS: neurons = 1; continue;
        case OPT_THUMBS: thumbs = optarg; continue;
        case OPT_BATCH:
        case OPT_LIMIT: {
            char *end;
            long long v = strtoll(optarg, &end, 10);
            if (*end || v < 1) return cli_fail("--%s: expected a positive count, got '%s'", c == OPT_BATCH ? "batch" : "limit", optarg);
            if (c == OPT_BATCH) batch = v;
            else limit = v;
            continue;
        }
        }
        int r = cli_tsne_option(c, optarg, &a);
        if (r == -1) r = cli_common_option(c, optarg, &co);
        if (r == 1) continue;
        if (r == 0) return 1;
        fprintf(stderr, "see: loupe embed --help\n");
        return 2;
    }
    const char *model_path = cli_model_arg(argc, argv, &optind);
    if (!layer) return cli_fail("embed needs --layer NAME (see loupe info MODEL for the names)");
    if (argc - optind != 1) return cli_fail("embed needs one INPUT: a folder of images, an IDX file or a .npy batch");
    if (!a.out && !a.plot && !a.metrics && !thumbs) a.plot = "embed.png";
    if (neurons && thumbs) return cli_fail("--thumbnails draws inputs; with --neurons the points are channels");
    /* --device picks where both the model and the t-SNE run. */
    a.o.device = co.device;
    const char *in = argv[optind];
    lp_model *m = NULL;
    lp_run *r = NULL;
    lp_tensor *x = NULL, *feat = NULL, *y = NULL;
    int64_t *labels = NULL;
    char **names = NULL;
    int n_names = 0, rc = 1;
    float *act = NULL;
    if (lp_model_load(model_path, &m) != LP_OK) return cli_lib_fail();
    const char *value = lp_model_layer_value(m, layer); /* a node name means its first output */
    if (!value) {
        rc = cli_fail("%s: no layer named '%s' (run `loupe info %s` for the names)", model_path, layer, model_path);
        goto out;
    }
    if (load_input(m, in, &co.pre, &x)) goto out;
    if (limit > 0 && limit < x->shape[0]) {
        lp_tensor v = rows_of(x, 0, limit);
        x->shape[0] = v.shape[0];
        x->nbytes = v.nbytes;
    }
    int64_t n = x->shape[0];
    if (a.labels_path && cli_tsne_load_labels(a.labels_path, n, limit > 0, &labels)) goto out;
    if (cli_run_new(m, &co, &r)) goto out;
    if (lp_run_capture(r, value) != LP_OK) {
        rc = cli_lib_fail();
        goto out;
    }
    /* Forward in batches; keep the layer (and the prediction when there are no labels). */
    int64_t per = 0, ch = 1, sp = 1;
    int have_pred = !labels && !neurons;
    if (have_pred && !(labels = malloc((size_t)n * sizeof(int64_t)))) {
        rc = cli_fail("out of memory");
        goto out;
    }
    cli_progress bar;
    cli_progress_start(&bar, "forward", n);
    for (int64_t b0 = 0; b0 < n; b0 += batch) {
        int64_t rows = n - b0 < batch ? n - b0 : batch;
        lp_tensor xb = rows_of(x, b0, rows);
        if (lp_run_forward(r, &xb) != LP_OK) {
            cli_progress_end(&bar);
            rc = cli_lib_fail();
            goto out;
        }
        const lp_tensor *v = lp_run_value(r, value);
        if (!v || v->dtype != LP_F32 || v->shape[0] != rows) {
            cli_progress_end(&bar);
            rc = cli_fail("%s: layer '%s' gave no per-input float activations", model_path, layer);
            goto out;
        }
        int64_t vper = lp_tensor_numel(v) / rows;
        if (!act) {
            per = vper;
            ch = v->ndim >= 2 ? v->shape[1] : vper;
            sp = per / ch;
            if (!(act = malloc((size_t)n * per * sizeof(float)))) {
                cli_progress_end(&bar);
                rc = cli_fail("out of memory for %lld x %lld activations (try --pool or --limit)", (long long)n, (long long)per);
                goto out;
            }
        }
        if (lp_tensor_read(v, act + b0 * per, (size_t)rows * per * sizeof(float)) != LP_OK) {
            cli_progress_end(&bar);
            rc = cli_lib_fail();
            goto out;
        }
        if (have_pred) {
            const lp_tensor *o = lp_run_output(r);
            int64_t k = o ? lp_tensor_numel(o) / rows : 0;
            float *lo = k > 0 ? malloc((size_t)rows * k * sizeof(float)) : NULL;
            if (!lo || lp_tensor_read(o, lo, (size_t)rows * k * sizeof(float)) != LP_OK) {
                free(lo);
                cli_progress_end(&bar);
                rc = cli_fail("%s: cannot read the model output for the predicted classes", model_path);
                goto out;
            }
            for (int64_t i = 0; i < rows; i++) {
                int64_t best = 0;
                for (int64_t j = 1; j < k; j++)
                    if (lo[i * k + j] > lo[i * k + best]) best = j;
                labels[b0 + i] = best;
            }
            free(lo);
        }
        cli_progress_update(&bar, b0 + rows, NULL);
    }
    cli_progress_end(&bar);
    /* Rows to embed: inputs (flattened or pooled) or channels. */
    int64_t rows_n = neurons ? ch : n, cols = neurons ? (pool ? n : n * sp) : (pool ? ch : per);
    int64_t fshape[2] = {rows_n, cols};
    if (lp_tensor_new(&feat, LP_DEVICE_CPU, LP_F32, 2, fshape) != LP_OK) {
        rc = cli_lib_fail();
        goto out;
    }
    float *f = feat->data;
    for (int64_t i = 0; i < n; i++)
        for (int64_t c2 = 0; c2 < ch; c2++) {
            const float *src = act + i * per + c2 * sp;
            if (pool) {
                double s = 0;
                for (int64_t t = 0; t < sp; t++) s += src[t];
                float mean = (float)(s / sp);
                if (neurons) f[c2 * n + i] = mean;
                else f[i * ch + c2] = mean;
            } else if (neurons)
                memcpy(f + c2 * n * sp + i * sp, src, (size_t)sp * sizeof(float));
        }
    if (!pool && !neurons) memcpy(f, act, (size_t)n * per * sizeof(float));
    free(act);
    act = NULL;
    if (neurons) {
        free(labels);
        labels = NULL;
    }
    if (!neurons) {
        const char *np = a.names_path ? a.names_path : (!strcmp(model_path, cli_default_model()) ? cli_default_labels() : NULL);
        if (np) n_names = cli_read_labels(np, &names);
    }
    char title[512];
    snprintf(title, sizeof title, "%s: %s%s (%lld %s)", model_path, layer, pool ? " pooled" : "", (long long)rows_n,
             neurons ? "channels" : "inputs");
    if (cli_tsne_finish(&a, feat, labels, names, n_names, title, &y)) goto out;
    if (thumbs) {
        int64_t nd = x->ndim;
        if (nd != 4) rc = cli_fail("--thumbnails: inputs are not images (shape rank %lld)", (long long)nd);
        else if (lp_thumbnail_plot(thumbs, y->data, n, (int)y->shape[1], x, 1600) != LP_OK) rc = cli_lib_fail();
        else rc = 0;
    } else
        rc = 0;
out:
    free(act);
    free(labels);
    if (names) cli_free_labels(names, n_names);
    lp_tensor_free(y);
    lp_tensor_free(feat);
    lp_tensor_free(x);
    lp_run_free(r);
    lp_model_free(m);
    return rc;
}
