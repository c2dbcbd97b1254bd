/* activations.c — `loupe activations [MODEL] INPUT --layer NAME|all`: a layer's
 * channel maps as one PNG grid, and the raw tensor as .npy. */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void help(void) {
    printf("usage: loupe activations [MODEL.onnx] INPUT --layer NAME|all [options]\n\n"
           "Draw a layer's channel maps for one input as a PNG grid (each map scaled to its own\n"
           "min..max). NAME is a node name or a value name as `loupe info` lists them.\n\n"
           "  --layer NAME     the layer (required); 'all' writes every node's output\n"
           "  -o PATH          PNG to write (default activations_<layer>.png); with --layer all,\n"
           "                   a folder (default activations/)\n"
           "  --npy-out PATH   also write the raw N x C x H x W tensor (.npy; a folder with all)\n"
           "  --index I        which input of the batch to draw (default 0)\n"
           "  --scale S        upscale each map S times (default: maps at least 64 px)\n"
           "  --cmap NAME      viridis (default), inferno or gray\n" CLI_PRE_HELP
           "  -h, --help       this help\n");
}

static void sanitize(const char *in, char *out, size_t n) {
    size_t j = 0;
    for (; *in && j + 1 < n; in++) {
        char ch = *in;
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_';
        if (j == 0 && ch == '/') continue;
        out[j++] = ok ? ch : '_';
    }
    out[j] = 0;
    if (!j) snprintf(out, n, "value");
}

/* Write one value's maps for batch item `idx`. */
static int write_value(const lp_tensor *t, const char *name, int idx, int scale, lp_colormap cm, const char *png,
                       const char *npy) {
    if (t->dtype != LP_F32) return 0;
    if (idx >= t->shape[0]) return cli_fail("--index %d: the batch has %lld inputs", idx, (long long)t->shape[0]);
    int c = 1, h = 1, w = 1;
    if (t->ndim == 4) c = (int)t->shape[1], h = (int)t->shape[2], w = (int)t->shape[3];
    else if (t->ndim == 3) c = (int)t->shape[1], w = (int)t->shape[2];
    else if (t->ndim >= 2) w = (int)(lp_tensor_numel(t) / t->shape[0]);
    else w = (int)lp_tensor_numel(t);
    size_t per = (size_t)c * h * w;
    float *host = malloc(t->nbytes ? t->nbytes : 1);
    if (!host) return cli_fail("out of memory");
    if (lp_tensor_read(t, host, t->nbytes) != LP_OK) {
        free(host);
        return cli_lib_fail();
    }
    int s = scale > 0 ? scale : (h > 1 ? (64 + (h > w ? h : w) - 1) / (h > w ? h : w) : 4);
    if (s < 1) s = 1;
    lp_image img = {0};
    int rc = 0;
    if (lp_channel_grid(host + (t->ndim >= 2 ? (size_t)idx * per : 0), c, h, w, s, cm, &img) != LP_OK ||
        lp_image_save_png(png, &img) != LP_OK)
        rc = cli_lib_fail();
    else {
        char sb[96];
        printf("%s (%s) -> %s\n", name, lp_shape_str(t->ndim, t->shape, sb, sizeof sb), png);
    }
    lp_image_free(&img);
    free(host);
    if (!rc && npy && lp_npy_save(npy, t) != LP_OK) rc = cli_lib_fail();
    return rc;
}

int cmd_activations(int argc, char **argv) {
    static const struct option opts[] = {{"help", no_argument, 0, 'h'},   {"layer", required_argument, 0, 'L'},
                                          {"npy-out", required_argument, 0, 'n'}, {"index", required_argument, 0, 'i'},
                                          {"scale", required_argument, 0, 's'},   {"cmap", required_argument, 0, 'c'},
                                          CLI_PRE_LONGOPTS,                       {0, 0, 0, 0}};
    cli_common co;
    cli_common_init(&co);
    const char *layer = NULL, *out = NULL, *npy = NULL;
    int idx = 0, scale = 0, c;
    lp_colormap cm = LP_CMAP_VIRIDIS;
    while ((c = getopt_long(argc, argv, "hL:o:n:i:s:c:", opts, NULL)) != -1) {
        switch (c) {
        case 'h': help(); return 0;
        case 'L': layer = optarg; break;
        case 'o': out = optarg; break;
        case 'n': npy = optarg; break;
        case 'i': idx = atoi(optarg); if (idx < 0) return cli_fail("--index: expected 0 or more"); break;
        case 's': scale = atoi(optarg); if (scale < 1 || scale > 64) return cli_fail("--scale: expected 1..64"); break;
        case 'c':
            if (!strcmp(optarg, "viridis")) cm = LP_CMAP_VIRIDIS;
            else if (!strcmp(optarg, "inferno")) cm = LP_CMAP_INFERNO;
            else if (!strcmp(optarg, "gray")) cm = LP_CMAP_GRAY;
            else return cli_fail("--cmap: unknown colour map '%s' (valid: viridis, inferno, gray)", optarg);
            break;
        default: {
            int r = cli_common_option(c, optarg, &co);
            if (r == 1) break;
            if (r == 0) return 1;
            fprintf(stderr, "see: loupe activations --help\n");
            return 2;
        }
        }
    }
    const char *model_path = cli_model_arg(argc, argv, &optind);
    if (!layer) return cli_fail("activations needs --layer NAME or --layer all (see loupe activations --help)");
    if (argc - optind < 1) return cli_fail("activations needs an INPUT image or .npy (see loupe activations --help)");
    lp_model *m = NULL;
    lp_run *r = NULL;
    lp_tensor *x = NULL;
    int rc = 1;
    if (lp_model_load(model_path, &m) != LP_OK) return cli_lib_fail();
    int all = !strcmp(layer, "all");
    const char *value = layer;
    if (!all) {
        value = lp_model_layer_value(m, layer); /* a node name means its first output */
        if (!value) {
            rc = cli_fail("%s: no layer named '%s' (run `loupe info %s` for the names)", model_path, layer, model_path);
            goto out;
        }
    }
    if (cli_run_new(m, &co, &r)) goto out;
    if (lp_run_capture(r, all ? "*" : value) != LP_OK) {
        rc = cli_lib_fail();
        goto out;
    }
    if (cli_load_inputs(m, argc - optind, argv + optind, &co.pre, &x)) goto out;
    if (lp_run_forward(r, x) != LP_OK) {
        rc = cli_lib_fail();
        goto out;
    }
    if (!all) {
        char def[600], safe[512];
        sanitize(layer, safe, sizeof safe);
        snprintf(def, sizeof def, "activations_%s.png", safe);
        rc = write_value(lp_run_value(r, value), value, idx, scale, cm, out ? out : def, npy);
        goto out;
    }
    const char *dir = out ? out : "activations";
    if (mkdir(dir, 0777) && errno != EEXIST) {
        rc = cli_fail("%s: cannot create folder: %s", dir, strerror(errno));
        goto out;
    }
    if (npy && mkdir(npy, 0777) && errno != EEXIST) {
        rc = cli_fail("%s: cannot create folder: %s", npy, strerror(errno));
        goto out;
    }
    for (int i = 0; i < lp_model_num_nodes(m); i++) {
        lp_node_info ni;
        lp_model_node_info(m, i, &ni);
        char safe[512], png[1200], np[1200];
        sanitize(ni.output, safe, sizeof safe);
        snprintf(png, sizeof png, "%s/%03d_%s.png", dir, i, safe);
        snprintf(np, sizeof np, "%s/%03d_%s.npy", npy ? npy : "", i, safe);
        const lp_tensor *t = lp_run_value(r, ni.output);
        if (t && write_value(t, ni.output, idx, scale, cm, png, npy ? np : NULL)) goto out;
    }
    rc = 0;
out:
    lp_tensor_free(x);
    lp_run_free(r);
    lp_model_free(m);
    return rc;
}
