/* attribution.c — attribution benchmark: every lp_explain method on one model (resnet50
 * at 224 x 224 by default) beside Captum / pytorch-grad-cam on the same model, input and
 * machine (bench/peer_attribution.py, run in the same process tree). One-pass methods
 * are timed on a batch (images/s); sampling methods on one image (ms per image, at the
 * issue's settings: IG 32 steps, occlusion 16 px patch at stride 8 = 729 positions,
 * RISE 4000 masks). Validates first: Loupe's saliency of the first image must match
 * Captum's float64 saliency (rel L2 <= 1e-3, or 3x fp32 PyTorch's own error if larger),
 * or the program exits 1.
 *
 * usage: attribution [--model resnet50] [--batch 8] [--iters 3] [--dir DIR]
 *                    [--python PY] [--methods a,b,...] [--masks 4000] [--no-peer]
 *                    [--device cpu|cuda]
 * PY must have captum (default: attrib-venv/bin/python, as the tests make it in the
 * build folder). DIR (default bench-attribution) caches the exported model. */
#include "loupe.h"
#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define MAX_METHODS 40

typedef struct opts {
    const char *model, *dir, *python, *methods;
    int batch, iters, peer, masks, ig_steps, samples, patch, stride;
    lp_device dev;
} opts;

/* Sampling methods: timed per image. */
static int per_image(const char *m) {
    static const char *const v[] = {"smoothgrad", "smoothgrad_sq", "vargrad", "integrated_gradients",
                                    "gradient_shap", "scorecam", "ablationcam", "occlusion",
                                    "occlusion_random", "rise"};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        if (!strcmp(m, v[i])) return 1;
    return 0;
}




static double json_num(const char *js, const char *key) {
    char k[96];
    snprintf(k, sizeof k, "\"%s\": ", key);
    const char *p = strstr(js, k);
    return p ? atof(p + strlen(k)) : 0.0;
}

/* The string after "key": in the peer's JSON, into buf ("-" if absent). */
static const char *json_str(const char *js, const char *key, char *buf, size_t len) {
    char k[96];
    snprintf(k, sizeof k, "\"%s\": \"", key);
    const char *p = strstr(js, k);
    snprintf(buf, len, "-");
    if (!p) return buf;
    p += strlen(k);
    size_t n = strcspn(p, "\"");
    snprintf(buf, len, "%.*s", (int)(n < len - 1 ? n : len - 1), p);
    return buf;
}

static int run_peer(const opts *o, const char *mode, const char *methods, const char *one, char *out, size_t len) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "'%s' '%s/peer_attribution.py' --model '%s' --batch %d --dir '%s' %s --methods '%s' --per-image '%s' "
             "--iters %d --ig-steps %d --samples %d --patch %d --stride %d",
             o->python, LOUPE_BENCH_DIR, o->model, o->batch, o->dir, mode, methods, one, o->iters, o->ig_steps,
             o->samples, o->patch, o->stride);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = out ? fread(out, 1, len - 1, p) : 0;
    if (out) out[n] = 0;
    if (!out) {
        char buf[4096];
        while (fread(buf, 1, sizeof buf, p) > 0) {
        }
    }
    return pclose(p) == 0 ? 0 : -1;
}


/* The first `n` rows of x, as a view. */
static lp_tensor rows(const lp_tensor *x, int64_t n) {
    lp_tensor v = *x;
    v.shape[0] = n;
    v.nbytes = (size_t)(lp_tensor_numel(x) / x->shape[0] * n) * sizeof(float);
    v.owns = 0;
    return v;
}

static int usage(void) {
    printf("usage: attribution [--model resnet50] [--batch 8] [--iters 3] [--dir DIR] [--python PY]\n"
           "                   [--methods a,b,...] [--masks 4000] [--ig-steps 32] [--samples 25]\n"
           "                   [--patch 16] [--stride 8] [--no-peer] [--device cpu|cuda]\n"
           "Times every attribution method beside Captum / pytorch-grad-cam on the same model and\n"
           "input (bench/peer_attribution.py); validates saliency against Captum first.\n");
    return 0;
}

int main(int argc, char **argv) {
    opts o = {"resnet50", "bench-attribution", "attrib-venv/bin/python", NULL, 8, 3, 1, 4000, 32, 25, 16, 8,
              LP_DEVICE_CPU};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage();
        else if (!strcmp(a, "--no-peer")) o.peer = 0;
        else if (v && !strcmp(a, "--model")) o.model = v, i++;
        else if (v && !strcmp(a, "--dir")) o.dir = v, i++;
        else if (v && !strcmp(a, "--python")) o.python = v, i++;
        else if (v && !strcmp(a, "--methods")) o.methods = v, i++;
        else if (v && !strcmp(a, "--batch")) o.batch = atoi(v), i++;
        else if (v && !strcmp(a, "--iters")) o.iters = atoi(v), i++;
        else if (v && !strcmp(a, "--masks")) o.masks = atoi(v), i++;
        else if (v && !strcmp(a, "--ig-steps")) o.ig_steps = atoi(v), i++;
        else if (v && !strcmp(a, "--samples")) o.samples = atoi(v), i++;
        else if (v && !strcmp(a, "--patch")) o.patch = atoi(v), i++;
        else if (v && !strcmp(a, "--stride")) o.stride = atoi(v), i++;
        else if (v && !strcmp(a, "--device")) {
            if (lp_device_parse(v, &o.dev) != LP_OK) {
                fprintf(stderr, "attribution: %s\n", lp_last_error());
                return 2;
            }
            i++;
        } else {
            fprintf(stderr, "attribution: unknown argument '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (o.batch < 1 || o.iters < 1 || o.masks < 1 || o.ig_steps < 1) {
        fprintf(stderr, "attribution: counts must be positive\n");
        return 2;
    }
    /* The method list. */
    const char *meth[MAX_METHODS];
    int nm = 0;
    char *mdup = o.methods ? strdup(o.methods) : NULL, *save = NULL;
    if (mdup)
        for (char *t = strtok_r(mdup, ",", &save); t && nm < MAX_METHODS; t = strtok_r(NULL, ",", &save)) meth[nm++] = t;
    else
        for (int i = 0; i < lp_explain_method_count() && nm < MAX_METHODS; i++) meth[nm++] = lp_explain_method_name(i);
    char all[2048] = "", one[2048] = "";
    for (int i = 0; i < nm; i++) {
        strncat(all, meth[i], sizeof all - strlen(all) - 2);
        strcat(all, ",");
        if (per_image(meth[i])) {
            strncat(one, meth[i], sizeof one - strlen(one) - 2);
            strcat(one, ",");
        }
    }

    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/model.onnx", o.dir);
    if (stat(path, &st) != 0) {
        fprintf(stderr, "attribution: exporting %s and Captum's reference saliency to %s ...\n", o.model, o.dir);
        if (run_peer(&o, "--prepare", "", "", NULL, 0)) {
            fprintf(stderr, "attribution: the peer could not prepare %s (is captum importable by %s?)\n", o.dir,
                    o.python);
            return 1;
        }
    }
    lp_model *m = NULL;
    lp_run *r = NULL;
    lp_tensor *x = NULL, *ref = NULL;
    if (lp_model_load(path, &m) != LP_OK || lp_run_new(m, o.dev, &r) != LP_OK) {
        fprintf(stderr, "attribution: %s\n", lp_last_error());
        return 1;
    }
    snprintf(path, sizeof path, "%s/input.npy", o.dir);
    char rpath[4096];
    snprintf(rpath, sizeof rpath, "%s/saliency_ref.npy", o.dir);
    if (lp_npy_load(path, &x) != LP_OK || lp_npy_load(rpath, &ref) != LP_OK) {
        fprintf(stderr, "attribution: %s\n", lp_last_error());
        return 1;
    }
    if (x->shape[0] < o.batch) {
        fprintf(stderr, "attribution: %s holds %lld images, fewer than --batch %d: delete %s to re-export\n", path,
                (long long)x->shape[0], o.batch, o.dir);
        return 1;
    }
    lp_tensor xb = rows(x, o.batch), x1 = rows(x, 1);

    /* Validate before timing. */
    lp_explain_opts eo;
    lp_explain_opts_default(&eo);
    eo.method = "saliency";
    lp_tensor *a = NULL;
    if (lp_explain(r, &x1, &eo, &a, NULL) != LP_OK || lp_tensor_numel(a) != lp_tensor_numel(ref)) {
        fprintf(stderr, "attribution: validation run failed: %s\n", lp_last_error());
        return 1;
    }
    double err = rel_l2(a->data, ref->data, lp_tensor_numel(ref)), bound = 1e-3;
    lp_tensor_free(a);
    snprintf(rpath, sizeof rpath, "%s/bound.txt", o.dir);
    FILE *bf = fopen(rpath, "r");
    if (bf) { /* the peer's: 3x fp32 PyTorch's own distance from float64, if above 1e-3 */
        if (fscanf(bf, "%lf", &bound) != 1) bound = 1e-3;
        fclose(bf);
    }
    printf("validation: saliency vs Captum (float64) rel L2 %.2e, bound %.1e %s\n", err, bound,
           err <= bound ? "(ok)" : "(FAILED)");
    if (err > bound) return 1;

    double secs[MAX_METHODS] = {0};
    for (int k = 0; k < nm; k++) {
        lp_explain_opts_default(&eo);
        eo.method = meth[k];
        eo.batch = o.batch;
        eo.steps = o.ig_steps;
        eo.samples = o.samples;
        eo.patch = o.patch;
        eo.stride = o.stride;
        eo.masks = o.masks;
        int one_img = per_image(meth[k]);
        const lp_tensor *in = one_img ? &x1 : &xb;
        int iters = one_img ? 1 : o.iters;
        double t[16];
        if (iters > 16) iters = 16;
        int ok = 1;
        for (int i = -1; i < iters && ok; i++) { /* i = -1: warm-up (one-pass methods only) */
            if (i < 0 && one_img) continue;
            double t0 = now_s();
            if (lp_explain(r, in, &eo, &a, NULL) != LP_OK) {
                fprintf(stderr, "attribution: %s: %s\n", meth[k], lp_last_error());
                ok = 0;
                break;
            }
            lp_tensor_free(a);
            if (i >= 0) t[i] = now_s() - t0;
        }
        if (!ok) continue;
        qsort(t, (size_t)iters, sizeof t[0], cmp_double);
        secs[k] = t[iters / 2];
        fprintf(stderr, "  %-21s %.3f s\n", meth[k], secs[k]);
    }

    char js[16384] = "";
    if (o.peer && run_peer(&o, "--time", all, one, js, sizeof js))
        fprintf(stderr, "attribution: the peer failed (%s); its column stays empty\n", o.python);

    char tv[64];
    printf("\nattribution: %s, 224 x 224, %s (%s); peer: Captum / pytorch-grad-cam on PyTorch %s, %d threads\n",
           o.model, lp_device_name(o.dev), lp_device_description(o.dev), json_str(js, "torch", tv, sizeof tv),
           (int)json_num(js, "threads"));
    printf("one-pass methods at batch %d (images/s); sampling methods on one image (ms/image): IG %d steps,\n"
           "smoothgrad family and gradient_shap %d samples, occlusion %d px at stride %d, RISE %d masks\n\n",
           o.batch, o.ig_steps, o.samples, o.patch, o.stride, o.masks);
    printf("| method | unit | Loupe | peer | Loupe / peer |\n|---|---|---:|---:|---:|\n");
    for (int k = 0; k < nm; k++) {
        int one_img = per_image(meth[k]);
        double peer = json_num(js, meth[k]);
        if (!secs[k]) {
            printf("| %s | - | failed | | |\n", meth[k]);
            continue;
        }
        double ours = one_img ? 1e3 * secs[k] : o.batch / secs[k];
        double theirs = peer > 0 ? (one_img ? 1e3 * peer : o.batch / peer) : 0;
        if (theirs > 0)
            printf("| %s | %s | %.1f | %.1f | %.2fx |\n", meth[k], one_img ? "ms/image" : "images/s", ours, theirs,
                   one_img ? theirs / ours : ours / theirs);
        else
            printf("| %s | %s | %.1f | (no peer) | |\n", meth[k], one_img ? "ms/image" : "images/s", ours);
    }
    free(mdup);
    lp_tensor_free(x);
    lp_tensor_free(ref);
    lp_run_free(r);
    lp_model_free(m);
    return 0;
}
