/* explain.c — `loupe explain [MODEL] INPUT... --method M[,M...]`: attribution maps by
 * any of the library's methods, one lp_explain call per method over all inputs
 * (batched inside), then .npy arrays, heatmaps, overlays and one HTML page. */
#include "cli.h"
#include "explain.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void help(void) {
    printf("usage: loupe explain [MODEL.onnx] INPUT... --method M[,M...] [options]\n\n"
           "Attribution maps: which input pixels (or which units of a layer) made the model\n"
           "give its answer. INPUT: images (PNG/JPEG) or one preprocessed N x C x H x W .npy.\n"
           "Writes, per input and method, <input>_<method>.npy (the raw map, as Captum returns\n"
           "it), _heat.png and _overlay.png, and one index.html comparing them all.\n\n"
           "methods (--method, comma-separated, or 'all'):\n");
    for (int i = 0; i < lp_explain_method_count(); i++)
        printf("  %-21s %s\n", lp_explain_method_name(i), lp_explain_method_summary(i));
    printf("\ntarget:\n"
           "  --target T       top1 (default) or a class index\n"
           "  --neuron L:c[:y:x]  one unit of layer L (an output name from `loupe info`)\n"
           "  --channel L:c    the mean of channel c of layer L\n"
           "  --layer NAME     CAM layer (default: the last spatial layer), or the inner layer\n"
           "                   gradient methods attribute to (Captum's layer attributions)\n"
           "method options:\n"
           "  --steps N        integrated_gradients steps (50)\n"
           "  --ig-rule R      gausslegendre (default), riemann_left, riemann_right,\n"
           "                   riemann_middle, riemann_trapezoid\n"
           "  --baseline B     zero (default: Captum's), black, blur, uniform, or FILE.npy\n"
           "  --blur-sigma S   blurred baseline / fill sigma in pixels (10)\n"
           "  --samples N      smoothgrad family (25), gradient_shap (20)\n"
           "  --noise S        noise stdev in input units (smoothgrad default: 0.15 x range;\n"
           "                   gradient_shap default: 0)\n"
           "  --lrp C          LRP composite or rule: epsilon_plus_flat (default),\n"
           "                   epsilon_gamma_box, epsilon_plus, epsilon_alpha2_beta1, zero,\n"
           "                   epsilon, gamma, alpha2_beta1, alpha1_beta0, flat, w_square\n"
           "  --epsilon E      LRP epsilon (1e-6)     --gamma G   LRP gamma (0.25)\n"
           "  --patch P        occlusion patch size in pixels (16)\n"
           "  --stride S       occlusion stride (8)\n"
           "  --fill F         occlusion fill: zero (the dataset mean, default), black, blur, mean\n"
           "  --masks N        rise masks / occlusion_random occluders (4000)\n"
           "  --cells N        rise grid (7)    --keep P  rise keep probability (0.5)\n"
           "  --seed N         noise, baselines and masks (42)\n"
           "  --batch N        rows per forward/backward pass (16)\n"
           "output:\n"
           "  -o, --out DIR    output folder (default: explain)\n"
           "  --npy-out F      also write the raw map of the (single) method to F\n"
           "  --no-report      only the .npy arrays (no PNG, no HTML)\n"
           "  --sign S         auto (default), abs, positive or signed for pictures\n"
           "  --reduce R       auto (default: max for saliency, else sum), sum, max, l2, mean\n"
           "  --clip P         clip the top P%% of attribution mass (2, as Captum)\n"
           "  --cmap C         viridis, inferno (default), gray\n"
           "  --alpha A        overlay opacity (0.5)\n"
           "  --labels FILE    class names (default: the bundled model's)\n" CLI_PRE_HELP
           "  -h, --help       this help\n");
}

static const char *base(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* "layer:c[:y:x]" into the target; the layer name may itself hold ':' (it is
 * everything before the last 1 or 3 numeric fields). */
static int parse_unit(const char *s, lp_target *t, int with_pos, char **layer_out) {
    char *dup = strdup(s);
    if (!dup) return -1;
    long long v[3];
    int k = 0;
    char *end = dup + strlen(dup);
    while (k < (with_pos ? 3 : 1)) {
        char *colon = strrchr(dup, ':');
        if (!colon) break;
        char *num_end;
        long long x = strtoll(colon + 1, &num_end, 10);
        if (num_end == colon + 1 || *num_end) break;
        v[k++] = x;
        *colon = 0;
        end = colon;
    }
    (void)end;
    if (k == 0 || (with_pos && k == 2) || !dup[0]) {
        free(dup);
        return -1;
    }
    t->layer = dup;
    *layer_out = dup;
    if (k == 1) t->channel = v[0];
    else { /* fields were read right to left */
        t->x = v[0];
        t->y = v[1];
        t->channel = v[2];
    }
    return 0;
}

static int parse_enum(const char *arg, const char *flag, const char *const *names, int n, int *out) {
    for (int i = 0; i < n; i++)
        if (!strcmp(arg, names[i])) {
            *out = i;
            return 1;
        }
    char list[256] = "";
    for (int i = 0; i < n; i++) {
        strncat(list, names[i], sizeof list - strlen(list) - 1);
        if (i + 1 < n) strncat(list, ", ", sizeof list - strlen(list) - 1);
    }
    cli_fail("%s: unknown value '%s' (valid: %s)", flag, arg, list);
    return 0;
}

static int pos_int(const char *flag, const char *arg, int *out) {
    char *e;
    long v = strtol(arg, &e, 10);
    if (e == arg || *e || v < 1 || v > 100000000) {
        cli_fail("%s: expected a positive number, got '%s'", flag, arg);
        return 0;
    }
    *out = (int)v;
    return 1;
}

static int pos_float(const char *flag, const char *arg, float *out) {
    char *e;
    float v = strtof(arg, &e);
    if (e == arg || *e || !(v > 0) || !isfinite(v)) {
        cli_fail("%s: expected a positive number, got '%s'", flag, arg);
        return 0;
    }
    *out = v;
    return 1;
}

/* Refuse an output folder that cannot be made or written before the (possibly long)
 * computation, so the error is the only line and nothing is left behind. */
static int check_out_dir(const char *dir) {
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return cli_fail("%s: not a folder", dir);
        if (access(dir, W_OK | X_OK)) return cli_fail("%s: cannot write: %s", dir, strerror(errno));
        return 0;
    }
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", dir);
    size_t n = strlen(parent);
    while (n > 1 && parent[n - 1] == '/') parent[--n] = 0;
    char *slash = strrchr(parent, '/');
    if (!slash) snprintf(parent, sizeof parent, ".");
    else if (slash == parent) parent[1] = 0;
    else *slash = 0;
    if (stat(parent, &st) != 0 || !S_ISDIR(st.st_mode))
        return cli_fail("%s: cannot create folder: %s does not exist", dir, parent);
    if (access(parent, W_OK | X_OK)) return cli_fail("%s: cannot create folder: %s", dir, strerror(errno));
    return 0;
}

typedef struct progress_ctx {
    cli_progress bar;
    int started;
    const char *label;
} progress_ctx;

static void on_progress(void *user, int64_t done, int64_t total) {
    progress_ctx *p = user;
    if (!p->started) {
        cli_progress_start(&p->bar, p->label, total);
        p->started = 1;
    }
    p->bar.total = total;
    cli_progress_update(&p->bar, done, NULL);
}

enum {
    O_TARGET = 2000, O_NEURON, O_CHANNEL, O_LAYER, O_STEPS, O_IGRULE, O_BASELINE, O_BLUR, O_SAMPLES, O_NOISE,
    O_LRP, O_EPS, O_GAMMA, O_PATCH, O_STRIDE, O_FILL, O_MASKS, O_CELLS, O_KEEP, O_SEED, O_BATCH, O_NPY,
    O_NOREPORT, O_SIGN, O_REDUCE, O_CLIP, O_CMAP, O_ALPHA, O_LABELS, O_NOISE_NPY, O_ALPHAS_NPY, O_MASKS_NPY
};

int cmd_explain(int argc, char **argv) {
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'}, {"method", required_argument, 0, 'm'}, {"out", required_argument, 0, 'o'},
        {"target", required_argument, 0, O_TARGET}, {"neuron", required_argument, 0, O_NEURON},
        {"channel", required_argument, 0, O_CHANNEL}, {"layer", required_argument, 0, O_LAYER},
        {"attribute-layer", required_argument, 0, O_LAYER}, {"steps", required_argument, 0, O_STEPS},
        {"ig-rule", required_argument, 0, O_IGRULE}, {"baseline", required_argument, 0, O_BASELINE},
        {"blur-sigma", required_argument, 0, O_BLUR}, {"samples", required_argument, 0, O_SAMPLES},
        {"noise", required_argument, 0, O_NOISE}, {"lrp", required_argument, 0, O_LRP},
        {"epsilon", required_argument, 0, O_EPS}, {"gamma", required_argument, 0, O_GAMMA},
        {"patch", required_argument, 0, O_PATCH}, {"stride", required_argument, 0, O_STRIDE},
        {"fill", required_argument, 0, O_FILL}, {"masks", required_argument, 0, O_MASKS},
        {"cells", required_argument, 0, O_CELLS}, {"keep", required_argument, 0, O_KEEP},
        {"seed", required_argument, 0, O_SEED}, {"batch", required_argument, 0, O_BATCH},
        {"npy-out", required_argument, 0, O_NPY}, {"no-report", no_argument, 0, O_NOREPORT},
        {"sign", required_argument, 0, O_SIGN}, {"reduce", required_argument, 0, O_REDUCE},
        {"clip", required_argument, 0, O_CLIP}, {"cmap", required_argument, 0, O_CMAP},
        {"alpha", required_argument, 0, O_ALPHA}, {"labels", required_argument, 0, O_LABELS},
        /* replay a reference library's random draws (used by the oracle tests) */
        {"noise-npy", required_argument, 0, O_NOISE_NPY}, {"alphas-npy", required_argument, 0, O_ALPHAS_NPY},
        {"masks-npy", required_argument, 0, O_MASKS_NPY},
        CLI_PRE_LONGOPTS, {0, 0, 0, 0}};
    static const char *const ig_rules[] = {"gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
                                           "riemann_trapezoid"};
    static const char *const baselines[] = {"zero", "black", "blur", "uniform"};
    static const char *const fills[] = {"zero", "black", "blur", "mean"};
    static const char *const signs[] = {"abs", "positive", "signed", "auto"};
    static const char *const reduces[] = {"sum", "max", "l2", "mean", "auto"};
    static const char *const cmaps[] = {"gray", "viridis", "inferno"};

    cli_common co;
    cli_common_init(&co);
    lp_explain_opts eo;
    lp_explain_opts_default(&eo);
    explain_report rep;
    memset(&rep, 0, sizeof rep);
    rep.out_dir = "explain";
    rep.sign_auto = rep.reduce_auto = 1;
    rep.clip = 2.0f;
    rep.cmap = LP_CMAP_INFERNO;
    rep.alpha = 0.5f;
    const char *methods_arg = NULL, *npy_out = NULL, *labels_path = NULL, *baseline_npy = NULL;
    const char *noise_npy = NULL, *alphas_npy = NULL, *masks_npy = NULL;
    char *unit_layer = NULL;
    int no_report = 0, c, e;
    char target_desc[256] = "top-1 class";
    while ((c = getopt_long(argc, argv, "hm:o:", opts, NULL)) != -1) {
        switch (c) {
        case 'h': help(); return 0;
        case 'm': methods_arg = optarg; break;
        case 'o': rep.out_dir = optarg; break;
        case O_TARGET:
            if (!strcmp(optarg, "top1")) eo.target.kind = LP_TARGET_TOP1;
            else {
                char *end;
                long long v = strtoll(optarg, &end, 10);
                if (end == optarg || *end || v < 0) return cli_fail("--target: expected top1 or a class index, got '%s'", optarg);
                eo.target.kind = LP_TARGET_CLASS;
                eo.target.cls = v;
                snprintf(target_desc, sizeof target_desc, "class %lld", v);
            }
            break;
        case O_NEURON:
        case O_CHANNEL:
            free(unit_layer);
            unit_layer = NULL;
            if (parse_unit(optarg, &eo.target, c == O_NEURON, &unit_layer))
                return cli_fail("%s: expected %s, got '%s'", c == O_NEURON ? "--neuron" : "--channel",
                                c == O_NEURON ? "LAYER:channel or LAYER:channel:y:x" : "LAYER:channel", optarg);
            eo.target.kind = c == O_NEURON ? LP_TARGET_NEURON : LP_TARGET_CHANNEL;
            snprintf(target_desc, sizeof target_desc, "%s %s", c == O_NEURON ? "neuron" : "channel", optarg);
            break;
        case O_LAYER: eo.layer = optarg; break;
        case O_STEPS: if (!pos_int("--steps", optarg, &eo.steps)) return 1; break;
        case O_IGRULE: if (!parse_enum(optarg, "--ig-rule", ig_rules, 5, &e)) return 1; eo.ig_rule = (lp_ig_rule)e; break;
        case O_BASELINE:
            if (strlen(optarg) > 4 && !strcmp(optarg + strlen(optarg) - 4, ".npy")) {
                baseline_npy = optarg;
                eo.baseline = LP_BASELINE_TENSOR;
            } else {
                if (!parse_enum(optarg, "--baseline", baselines, 4, &e)) return 1;
                eo.baseline = (lp_baseline)e;
            }
            break;
        case O_BLUR: if (!pos_float("--blur-sigma", optarg, &eo.blur_sigma)) return 1; break;
        case O_SAMPLES: if (!pos_int("--samples", optarg, &eo.samples)) return 1; break;
        case O_NOISE: if (!pos_float("--noise", optarg, &eo.noise_std)) return 1; break;
        case O_LRP: eo.lrp = optarg; break;
        case O_EPS: if (!pos_float("--epsilon", optarg, &eo.epsilon)) return 1; break;
        case O_GAMMA: if (!pos_float("--gamma", optarg, &eo.gamma)) return 1; break;
        case O_PATCH: if (!pos_int("--patch", optarg, &eo.patch)) return 1; break;
        case O_STRIDE: if (!pos_int("--stride", optarg, &eo.stride)) return 1; break;
        case O_FILL: if (!parse_enum(optarg, "--fill", fills, 4, &e)) return 1; eo.fill = (lp_fill)e; break;
        case O_MASKS: if (!pos_int("--masks", optarg, &eo.masks)) return 1; break;
        case O_CELLS: if (!pos_int("--cells", optarg, &eo.cells)) return 1; break;
        case O_KEEP:
            if (!pos_float("--keep", optarg, &eo.keep) || eo.keep >= 1) return eo.keep >= 1 ? cli_fail("--keep: expected a probability in (0, 1), got '%s'", optarg) : 1;
            break;
        case O_SEED: eo.seed = strtoull(optarg, NULL, 10); break;
        case O_BATCH: if (!pos_int("--batch", optarg, &eo.batch)) return 1; break;
        case O_NPY: npy_out = optarg; break;
        case O_NOREPORT: no_report = 1; break;
        case O_SIGN: if (!parse_enum(optarg, "--sign", signs, 4, &e)) return 1; rep.sign_auto = e == 3; if (e < 3) rep.sign = (lp_sign)e; break;
        case O_REDUCE: if (!parse_enum(optarg, "--reduce", reduces, 5, &e)) return 1; rep.reduce_auto = e == 4; if (e < 4) rep.reduce = (lp_chan_reduce)e; break;
        case O_CLIP: {
            char *end;
            rep.clip = strtof(optarg, &end);
            if (end == optarg || *end || !(rep.clip >= 0 && rep.clip < 100)) return cli_fail("--clip: expected a percentage in [0, 100), got '%s'", optarg);
            break;
        }
        case O_CMAP: if (!parse_enum(optarg, "--cmap", cmaps, 3, &e)) return 1; rep.cmap = (lp_colormap)e; break;
        case O_ALPHA: {
            char *end;
            rep.alpha = strtof(optarg, &end);
            if (end == optarg || *end || !(rep.alpha >= 0 && rep.alpha <= 1)) return cli_fail("--alpha: expected a number in [0, 1], got '%s'", optarg);
            break;
        }
        case O_LABELS: labels_path = optarg; break;
        case O_NOISE_NPY: noise_npy = optarg; break;
        case O_ALPHAS_NPY: alphas_npy = optarg; break;
        case O_MASKS_NPY: masks_npy = optarg; break;
        default: {
            int r = cli_common_option(c, optarg, &co);
            if (r == 1) break;
            if (r == 0) return 1;
            fprintf(stderr, "see: loupe explain --help\n");
            return 2;
        }
        }
    }
    const char *model_path = cli_model_arg(argc, argv, &optind);
    int n_in = argc - optind;
    if (n_in < 1) return cli_fail("explain needs at least one INPUT image or .npy (see loupe explain --help)");
    if (!methods_arg) methods_arg = "saliency";

    /* The method list: validated up front, so a typo costs nothing. */
    const char *methods[EXPLAIN_MAX_METHODS];
    int n_methods = 0;
    char *mdup = strdup(methods_arg), *save = NULL;
    if (!mdup) return cli_fail("out of memory");
    if (!strcmp(mdup, "all")) {
        for (int i = 0; i < lp_explain_method_count() && n_methods < EXPLAIN_MAX_METHODS; i++)
            methods[n_methods++] = lp_explain_method_name(i);
    } else {
        for (char *tok = strtok_r(mdup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            const char *name = lp_explain_method_find(tok);
            if (name) methods[n_methods++] = name;
            else {
                int rc = cli_fail("--method: unknown method '%s' (valid: %s)", tok, lp_explain_method_list());
                free(mdup);
                return rc;
            }
            if (n_methods == EXPLAIN_MAX_METHODS) break;
        }
    }
    free(mdup);
    if (npy_out && n_methods != 1) return cli_fail("--npy-out takes one method; use --out DIR for several");
    if (!(no_report && npy_out) && check_out_dir(rep.out_dir)) return 1;

    lp_model *m = NULL;
    lp_run *r = NULL;
    lp_tensor *x = NULL, *base_t = NULL, *noise_t = NULL, *alphas_t = NULL, *masks_t = NULL;
    char **names = NULL, **in_names = NULL;
    int n_names = 0, rc = 1;
    int64_t *targets = NULL;
    float *scores = NULL, *probs = NULL;
    if (labels_path) {
        n_names = cli_read_labels(labels_path, &names);
        if (!n_names) return cli_fail("%s: cannot read labels (one class name per line)", labels_path);
    } else if (!strcmp(model_path, cli_default_model())) {
        n_names = cli_read_labels(cli_default_labels(), &names);
    }
    if (lp_model_load(model_path, &m) != LP_OK) {
        rc = cli_lib_fail();
        goto out;
    }
    if (cli_run_new(m, &co, &r)) goto out;
    if (cli_load_inputs(m, n_in, argv + optind, &co.pre, &x)) goto out;
    cli_resolve_pre(m, &co.pre, &rep.pre);
    /* What black is, and the input's range (LRP's zB box), after this normalisation. */
    for (int k = 0; k < 3; k++) {
        float sd = rep.pre.std[k] != 0 ? rep.pre.std[k] : 1.0f;
        eo.black[k] = (0.0f - rep.pre.mean[k]) / sd;
        eo.low[k] = eo.black[k];
        eo.high[k] = (1.0f - rep.pre.mean[k]) / sd;
    }
    if (baseline_npy && lp_npy_load(baseline_npy, &base_t) != LP_OK) { rc = cli_lib_fail(); goto out; }
    if (noise_npy && lp_npy_load(noise_npy, &noise_t) != LP_OK) { rc = cli_lib_fail(); goto out; }
    if (alphas_npy && lp_npy_load(alphas_npy, &alphas_t) != LP_OK) { rc = cli_lib_fail(); goto out; }
    if (masks_npy && lp_npy_load(masks_npy, &masks_t) != LP_OK) { rc = cli_lib_fail(); goto out; }
    eo.baseline_tensor = base_t;
    eo.noise = noise_t;
    eo.alphas = alphas_t;
    eo.mask_tensor = masks_t;

    int64_t n = x->shape[0];
    targets = calloc((size_t)n, sizeof *targets);
    scores = calloc((size_t)n, sizeof *scores);
    probs = calloc((size_t)n, sizeof *probs);
    in_names = calloc((size_t)n, sizeof *in_names);
    if (!targets || !scores || !probs || !in_names) { rc = cli_fail("out of memory"); goto out; }
    for (int64_t i = 0; i < n; i++) {
        char buf[512];
        if (n_in == 1 && n > 1) snprintf(buf, sizeof buf, "%s[%lld]", base(argv[optind]), (long long)i);
        else snprintf(buf, sizeof buf, "%s", base(argv[optind + i]));
        in_names[i] = strdup(buf);
        if (!in_names[i]) { rc = cli_fail("out of memory"); goto out; }
    }

    for (int k = 0; k < n_methods; k++) {
        progress_ctx pc = {{0}, 0, methods[k]};
        eo.method = methods[k];
        eo.progress = on_progress;
        eo.user = &pc;
        lp_explain_info info = {targets, scores, 0, NULL};
        double t0 = cli_now();
        lp_tensor *attr = NULL;
        lp_status s = lp_explain(r, x, &eo, &attr, &info);
        if (pc.started) cli_progress_end(&pc.bar);
        if (s != LP_OK) {
            rc = cli_fail("%s: %s", methods[k], lp_last_error());
            goto out;
        }
        rep.res[rep.n_res].method = methods[k];
        rep.res[rep.n_res].attr = attr;
        rep.res[rep.n_res].seconds = cli_now() - t0;
        rep.res[rep.n_res].passes = info.passes;
        rep.res[rep.n_res].layer = info.layer;
        rep.n_res++;
        fprintf(stderr, "%-21s %8.3f s  (%d pass%s%s%s%s)\n", methods[k], rep.res[rep.n_res - 1].seconds, info.passes,
                info.passes == 1 ? "" : "es", info.layer ? ", layer '" : "", info.layer ? info.layer : "",
                info.layer ? "'" : "");
    }
    /* The probability of each input's target class, for the page. */
    if (eo.target.kind == LP_TARGET_TOP1 || eo.target.kind == LP_TARGET_CLASS) {
        if (lp_run_forward(r, x) != LP_OK) { rc = cli_lib_fail(); goto out; }
        const lp_tensor *y = lp_run_output(r);
        int64_t k = lp_tensor_numel(y) / n;
        float *l = malloc((size_t)lp_tensor_numel(y) * sizeof *l);
        if (!l || lp_tensor_read(y, l, (size_t)lp_tensor_numel(y) * sizeof *l) != LP_OK) { free(l); rc = cli_fail("cannot read the model output"); goto out; }
        for (int64_t i = 0; i < n; i++) {
            double mx = -INFINITY, z = 0;
            for (int64_t j = 0; j < k; j++) mx = fmax(mx, l[i * k + j]);
            for (int64_t j = 0; j < k; j++) z += exp(l[i * k + j] - mx);
            probs[i] = targets[i] >= 0 && targets[i] < k ? (float)(exp(l[i * k + targets[i]] - mx) / z) : 0.0f;
        }
        free(l);
        rep.probs = probs;
    }
    if (npy_out && lp_npy_save(npy_out, rep.res[0].attr) != LP_OK) { rc = cli_lib_fail(); goto out; }
    rep.model_path = model_path;
    rep.n = (int)n;
    rep.input_names = (const char *const *)in_names;
    rep.input = x;
    rep.targets = targets;
    rep.scores = scores;
    rep.labels = names;
    rep.n_labels = n_names;
    rep.target_desc = target_desc;
    rep.device = lp_device_name(co.device);
    rep.arrays_only = no_report;
    if (!(no_report && npy_out) && (rc = explain_report_write(&rep))) goto out;
    rc = 0;
out:
    for (int k = 0; k < rep.n_res; k++) lp_tensor_free(rep.res[k].attr);
    for (int64_t i = 0; in_names && x && i < x->shape[0]; i++) free(in_names[i]);
    free(in_names);
    free(targets);
    free(scores);
    free(probs);
    free(unit_layer);
    lp_tensor_free(x);
    lp_tensor_free(base_t);
    lp_tensor_free(noise_t);
    lp_tensor_free(alphas_t);
    lp_tensor_free(masks_t);
    lp_run_free(r);
    lp_model_free(m);
    cli_free_labels(names, n_names);
    return rc;
}
