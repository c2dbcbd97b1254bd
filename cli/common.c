/* common.c — what every `loupe` subcommand shares: error lines, where the bundled
 * model lives, loading inputs for a model, labels, and the progress bar. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef LOUPE_ASSETS_DIR
#define LOUPE_ASSETS_DIR "assets"
#endif

int cli_fail(const char *fmt, ...) {
    va_list ap;
    fputs("loupe: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

int cli_lib_fail(void) { return cli_fail("%s", lp_last_error()); }

const char *cli_assets_dir(void) {
    const char *e = getenv("LOUPE_ASSETS");
    return e && *e ? e : LOUPE_ASSETS_DIR;
}

static const char *asset(const char *file) {
    static char buf[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", cli_assets_dir(), file);
    return buf[k];
}

const char *cli_default_model(void) { return asset("fashion_mnist_cnn.onnx"); }
const char *cli_default_labels(void) { return asset("fashion_mnist_labels.txt"); }

int cli_is_onnx(const char *path) {
    size_t n = strlen(path);
    return n >= 5 && !strcmp(path + n - 5, ".onnx");
}

static int is_npy(const char *path) {
    size_t n = strlen(path);
    return n >= 4 && !strcmp(path + n - 4, ".npy");
}

void cli_pre_defaults(cli_pre_opts *o) {
    memset(o, 0, sizeof *o);
    o->size = o->crop = -1;
}

void cli_common_init(cli_common *o) {
    memset(o, 0, sizeof *o); /* precision fp32 */
    cli_pre_defaults(&o->pre);
    lp_device_parse("auto", &o->device);
}

int cli_common_option(int c, const char *arg, cli_common *o) {
    float v[3];
    int n;
    switch (c) {
    case CLI_OPT_SIZE:
    case CLI_OPT_CROP: {
        char *end;
        long x = strtol(arg, &end, 10);
        if (*end || x < 1 || x > 16384) return cli_fail("--%s: expected a size in pixels, got '%s'", c == CLI_OPT_SIZE ? "size" : "crop", arg), 0;
        if (c == CLI_OPT_SIZE) o->pre.size = (int)x;
        else o->pre.crop = (int)x;
        return 1;
    }
    case CLI_OPT_MEAN:
    case CLI_OPT_STD:
        n = cli_parse_floats(arg, v, 3);
        if (n != 1 && n != 3) return cli_fail("--%s: expected 1 or 3 comma-separated numbers, got '%s'", c == CLI_OPT_MEAN ? "mean" : "std", arg), 0;
        for (int k = 0; k < 3; k++) {
            float x = v[n == 1 ? 0 : k];
            if (c == CLI_OPT_STD && !(x > 0)) return cli_fail("--std: values must be positive"), 0;
            if (c == CLI_OPT_MEAN) o->pre.mean[k] = x;
            else o->pre.std[k] = x;
        }
        if (c == CLI_OPT_MEAN) o->pre.has_mean = 1;
        else o->pre.has_std = 1;
        return 1;
    case CLI_OPT_DEVICE:
        if (lp_device_parse(arg, &o->device) != LP_OK) return cli_lib_fail(), 0;
        return 1;
    case CLI_OPT_PRECISION:
        if (lp_precision_parse(arg, &o->precision) != LP_OK) return cli_lib_fail(), 0;
        return 1;
    }
    return -1;
}

int cli_run_new(lp_model *m, const cli_common *o, lp_run **out) {
    *out = NULL;
    if (lp_run_new(m, o->device, out) != LP_OK) return cli_lib_fail(), 1;
    if (lp_run_set_precision(*out, o->precision) != LP_OK) {
        lp_run_free(*out);
        *out = NULL;
        return cli_lib_fail(), 1;
    }
    return 0;
}

const char *cli_model_arg(int argc, char **argv, int *optind_) {
    if (*optind_ < argc && cli_is_onnx(argv[*optind_])) return argv[(*optind_)++];
    return cli_default_model();
}

int cli_parse_floats(const char *s, float *v, int max) {
    int n = 0;
    const char *p = s;
    while (*p && n < max) {
        char *end;
        v[n] = strtof(p, &end);
        if (end == p) return -1;
        n++;
        p = end;
        if (*p == ',') p++;
        else if (*p) return -1;
    }
    return *p ? -1 : n;
}

void cli_resolve_pre(const lp_model *m, const cli_pre_opts *o, lp_preprocess *out) {
    int nd;
    int64_t shape[LP_MAX_DIMS] = {1, 1, 1, 1};
    if (lp_model_input_shape(m, &nd, shape) != LP_OK || nd != 4) nd = 0;
    int c = nd ? (int)shape[1] : 1, h = nd ? (int)shape[2] : 0, w = nd ? (int)shape[3] : 0;
    lp_preprocess pp;
    int imagenet = c == 3 && h >= 64;
    if (imagenet) {
        pp = lp_preprocess_imagenet();
        pp.crop = h;
        pp.size = h * 256 / 224;
    } else {
        memset(&pp, 0, sizeof pp);
        pp.channels = c;
        pp.size = h < w ? h : w;
        pp.crop = h == w ? h : 0;
        for (int k = 0; k < 3; k++) pp.mean[k] = 0.0f, pp.std[k] = 1.0f;
    }
    pp.channels = c;
    if (o && o->size >= 0) pp.size = o->size;
    if (o && o->crop >= 0) pp.crop = o->crop;
    if (o && o->has_mean)
        for (int k = 0; k < 3; k++) pp.mean[k] = o->mean[k];
    if (o && o->has_std)
        for (int k = 0; k < 3; k++) pp.std[k] = o->std[k];
    *out = pp;
}

int cli_load_inputs(const lp_model *m, int n, char **paths, const cli_pre_opts *o, lp_tensor **out) {
    *out = NULL;
    int nd;
    int64_t shape[LP_MAX_DIMS];
    if (lp_model_input_shape(m, &nd, shape) != LP_OK) return cli_lib_fail();
    if (n == 1 && is_npy(paths[0])) {
        lp_tensor *t;
        if (lp_npy_load(paths[0], &t) != LP_OK) return cli_lib_fail();
        if (t->ndim != nd) {
            char a[96], b[96];
            lp_shape_str(t->ndim, t->shape, a, sizeof a);
            lp_shape_str(nd, shape, b, sizeof b);
            lp_tensor_free(t);
            return cli_fail("%s: array is %s but the model's input is %s (N may differ)", paths[0], a, b);
        }
        *out = t;
        return 0;
    }
    for (int i = 0; i < n; i++)
        if (is_npy(paths[i])) {
            return cli_fail("%s: give one .npy batch alone, not mixed with other inputs", paths[i]);
        }
    if (nd != 4) {
        return cli_fail("the model's input has rank %d: images need an N x C x H x W input; pass a .npy", nd);
    }
    int h = (int)shape[2], w = (int)shape[3];
    lp_preprocess pp;
    cli_resolve_pre(m, o, &pp);
    lp_image *imgs = calloc((size_t)n, sizeof *imgs);
    if (!imgs) return cli_fail("out of memory");
    lp_status s = LP_OK;
    int loaded = 0;
    for (; loaded < n && s == LP_OK; loaded++) s = lp_image_load(paths[loaded], &imgs[loaded]);
    if (s == LP_OK) s = lp_images_to_tensor(imgs, n, &pp, out);
    for (int i = 0; i < loaded; i++) lp_image_free(&imgs[i]);
    free(imgs);
    if (s == LP_OK && ((*out)->shape[2] != h || (*out)->shape[3] != w)) {
        char a[96], b[96];
        lp_shape_str((*out)->ndim, (*out)->shape, a, sizeof a);
        lp_shape_str(nd, shape, b, sizeof b);
        lp_tensor_free(*out);
        *out = NULL;
        return cli_fail("preprocessed images are %s but the model's input is %s: set --size/--crop", a, b);
    }
    return s == LP_OK ? 0 : cli_lib_fail();
}

int cli_read_labels(const char *path, char ***names) {
    *names = NULL;
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[512];
    int n = 0, cap = 0;
    char **v = NULL;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **nv = realloc(v, (size_t)cap * sizeof *nv);
            if (!nv) break;
            v = nv;
        }
        v[n] = strdup(line);
        if (!v[n]) break;
        n++;
    }
    fclose(f);
    *names = v;
    return n;
}

void cli_free_labels(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void cli_progress_start(cli_progress *p, const char *label, int64_t total) {
    memset(p, 0, sizeof *p);
    p->label = label;
    p->total = total;
    p->t0 = p->last = cli_now();
    const char *e = getenv("LOUPE_PROGRESS");
    p->enabled = e ? atoi(e) != 0 : isatty(2);
}

static void progress_draw(cli_progress *p, const char *extra, int final) {
    const int width = 30;
    double el = cli_now() - p->t0;
    int fill = p->total > 0 ? (int)(width * p->done / p->total) : 0;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    double rate = el > 0 ? p->done / el : 0;
    double eta = rate > 0 && p->total > p->done ? (p->total - p->done) / rate : 0;
    fprintf(stderr, "\r%s [%s] %lld/%lld %.1f it/s, %s %.0fs %s\033[K", p->label, bar, (long long)p->done,
            (long long)p->total, rate, final ? "took" : "eta", final ? el : eta, extra ? extra : "");
    if (final) fputc('\n', stderr);
    fflush(stderr);
}

void cli_progress_update(cli_progress *p, int64_t done, const char *extra) {
    p->done = done;
    if (!p->enabled) return;
    double t = cli_now();
    if (t - p->last < 0.1 && done < p->total) return;
    p->last = t;
    progress_draw(p, extra, 0);
}

void cli_progress_end(cli_progress *p) {
    if (!p->enabled) return;
    progress_draw(p, NULL, 1);
}
