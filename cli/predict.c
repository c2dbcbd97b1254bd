/* predict.c — `loupe predict [MODEL] INPUT...`: top-k classes with probabilities,
 * optionally the raw logits as .npy. */
#include "cli.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void help(void) {
    printf("usage: loupe predict [MODEL.onnx] INPUT... [options]\n\n"
           "Classify images (PNG/JPEG) or one preprocessed N x C x H x W float32 .npy batch.\n"
           "Without MODEL, the bundled Fashion-MNIST CNN and its labels are used.\n\n"
           "  --labels FILE    class names, one per line (default: the bundled model's)\n"
           "  --top K          classes to show per input (default 5)\n"
           "  --batch N        inputs per forward pass (default 32)\n"
           "  --logits-out F   write the raw logits to F, a NumPy .npy (N x classes, float32)\n" CLI_PRE_HELP
           "  -h, --help       this help\n");
}

static const char *base(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

int cmd_predict(int argc, char **argv) {
    static const struct option opts[] = {{"help", no_argument, 0, 'h'},         {"labels", required_argument, 0, 'l'},
                                          {"top", required_argument, 0, 'k'},    {"batch", required_argument, 0, 'b'},
                                          {"logits-out", required_argument, 0, 'o'}, CLI_PRE_LONGOPTS,
                                          {0, 0, 0, 0}};
    cli_common co;
    cli_common_init(&co);
    const char *labels_path = NULL, *logits_out = NULL;
    int top = 5, batch = 32, c;
    while ((c = getopt_long(argc, argv, "hl:k:b:o:", opts, NULL)) != -1) {
        switch (c) {
        case 'h': help(); return 0;
        case 'l': labels_path = optarg; break;
        case 'k': top = atoi(optarg); if (top < 1) return cli_fail("--top: expected a positive number, got '%s'", optarg); break;
        case 'b': batch = atoi(optarg); if (batch < 1) return cli_fail("--batch: expected a positive number, got '%s'", optarg); break;
        case 'o': logits_out = optarg; break;
        default: {
            int r = cli_common_option(c, optarg, &co);
            if (r == 1) break;
            if (r == 0) return 1;
            fprintf(stderr, "see: loupe predict --help\n");
            return 2;
        }
        }
    }
    const char *model_path = cli_model_arg(argc, argv, &optind);
    int n_in = argc - optind;
    if (n_in < 1) return cli_fail("predict needs at least one INPUT image or .npy (see loupe predict --help)");
    char **inputs = argv + optind;
    int bundled = !strcmp(model_path, cli_default_model());
    char **names = NULL;
    int n_names = 0;
    if (labels_path) {
        n_names = cli_read_labels(labels_path, &names);
        if (!n_names) return cli_fail("%s: cannot read labels (one class name per line)", labels_path);
    } else if (bundled) {
        n_names = cli_read_labels(cli_default_labels(), &names);
    }

    lp_model *m = NULL;
    lp_run *r = NULL;
    lp_tensor *x = NULL, *all = NULL;
    float *host = NULL;
    int rc = 1;
    if (lp_model_load(model_path, &m) != LP_OK) {
        rc = cli_lib_fail();
        goto out;
    }
    if (cli_run_new(m, &co, &r)) goto out;
    if (lp_run_set_forward_only(r, 1) != LP_OK) { /* logits only: memory is the working set */
        rc = cli_lib_fail();
        goto out;
    }
    /* A single .npy is one batch; images go in chunks of --batch. */
    int npy = n_in == 1 && strlen(inputs[0]) > 4 && !strcmp(inputs[0] + strlen(inputs[0]) - 4, ".npy");
    int64_t done = 0, classes = 0, total = 0;
    int64_t chunk = npy ? INT64_MAX : batch; /* rows per forward; halved when the device runs out */
    for (int start = 0; start < n_in; start += npy ? n_in : batch) {
        int cnt = npy ? 1 : (n_in - start < batch ? n_in - start : batch);
        if (cli_load_inputs(m, cnt, inputs + start, &co.pre, &x)) goto out;
        const int64_t rows = x->shape[0], per = rows ? lp_tensor_numel(x) / rows : 0;
        for (int64_t r0 = 0; r0 < rows;) {
            lp_tensor view = *x; /* rows [r0, r0 + nb) of the loaded batch, sharing its data */
            view.shape[0] = rows - r0 < chunk ? rows - r0 : chunk;
            view.data = (float *)x->data + r0 * per;
            view.nbytes = (size_t)(view.shape[0] * per) * sizeof(float);
            view.owns = 0;
            lp_status fs = lp_run_forward(r, &view);
            if (fs == LP_ERR_OOM && view.shape[0] > 1) { /* split the batch rather than fail */
                chunk = view.shape[0] / 2;
                fprintf(stderr, "loupe: %s; retrying with batches of %lld\n", lp_last_error(), (long long)chunk);
                lp_device_memory_trim(co.device);
                continue;
            }
            if (fs != LP_OK) {
                rc = cli_lib_fail();
                goto out;
            }
            const lp_tensor *y = lp_run_output(r);
            int64_t nb = y->shape[0];
            classes = lp_tensor_numel(y) / (nb ? nb : 1);
            if (y->ndim != 2) {
                rc = cli_fail("%s: output '%s' is not N x classes; predict needs a classifier", model_path, lp_model_output_name(m));
                goto out;
            }
            if (n_names && n_names != classes)
                fprintf(stderr, "loupe: warning: %d labels for %lld classes; showing indices where names are missing\n", n_names,
                        (long long)classes);
            float *h = realloc(host, (size_t)(done + nb) * (size_t)classes * sizeof *h);
            if (!h) {
                rc = cli_fail("out of memory");
                goto out;
            }
            host = h;
            lp_tensor_read(y, host + done * classes, (size_t)(nb * classes) * sizeof *h);
            for (int64_t i = 0; i < nb; i++) {
                const float *l = host + (done + i) * classes;
                double mx = -INFINITY, z = 0;
                for (int64_t k = 0; k < classes; k++) mx = fmax(mx, l[k]);
                for (int64_t k = 0; k < classes; k++) z += exp(l[k] - mx);
                if (npy) printf("%s[%lld]\n", base(inputs[0]), (long long)(r0 + i));
                else printf("%s\n", base(inputs[start + r0 + i]));
                char *used = calloc((size_t)classes, 1);
                for (int t = 0; t < top && t < classes && used; t++) {
                    int64_t best = -1;
                    for (int64_t k = 0; k < classes; k++)
                        if (!used[k] && (best < 0 || l[k] > l[best])) best = k;
                    used[best] = 1;
                    double p = exp(l[best] - mx) / z;
                    if (best < n_names) printf("  %7.3f%%  %s (%lld)\n", 100 * p, names[best], (long long)best);
                    else printf("  %7.3f%%  class %lld\n", 100 * p, (long long)best);
                }
                free(used);
            }
            done += nb;
            total = done;
            r0 += nb;
        }
        lp_tensor_free(x);
        x = NULL;
    }
    if (logits_out) {
        int64_t shp[2] = {total, classes};
        if (lp_tensor_new(&all, LP_DEVICE_CPU, LP_F32, 2, shp) != LP_OK) {
            rc = cli_lib_fail();
            goto out;
        }
        memcpy(all->data, host, all->nbytes);
        if (lp_npy_save(logits_out, all) != LP_OK) {
            rc = cli_lib_fail();
            goto out;
        }
    }
    rc = 0;
out:
    lp_tensor_free(x);
    lp_tensor_free(all);
    free(host);
    lp_run_free(r);
    lp_model_free(m);
    cli_free_labels(names, n_names);
    return rc;
}
