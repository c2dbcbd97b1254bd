/* tsne.c — benchmark: Loupe's Barnes-Hut t-SNE on the CPU against openTSNE (BH and
 * FFT) and scikit-learn (BH), run by bench/peer_tsne.py, on the first N of Fashion-MNIST's
 * 70,000 images (training set, then test set; 784 pixels / 255), 1,000 iterations, the
 * same parameters. Every
 * embedding is scored by the same code (lp_tsne_metrics: trustworthiness at k = 10,
 * exact up to 10,000 points, else a 10,000-point sample). Prints a table.
 *
 *   build/bench/tsne [--peers opentsne-bh,opentsne-fft,sklearn-bh|none] [--peers-only]
 *                    [--python build/tsne-venv/bin/python] [--script bench/peer_tsne.py] [N ...]
 * Run from the repository root; N defaults to 5000 20000 70000. */
#define _POSIX_C_SOURCE 200809L
#include "loupe.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist/"

/* All 70,000 Fashion-MNIST images (train, then test) and their labels, as one set. */
static lp_status load_fmnist(lp_tensor **x, lp_tensor **labels) {
    lp_tensor *xs[2] = {0}, *ls[2] = {0};
    const char *set[2] = {"train", "t10k"};
    char p[256];
    lp_status s = LP_OK;
    for (int i = 0; i < 2 && s == LP_OK; i++) {
        snprintf(p, sizeof p, FMNIST_DIR "%s-images-idx3-ubyte.gz", set[i]);
        s = lp_idx_load_images(p, &xs[i]);
        snprintf(p, sizeof p, FMNIST_DIR "%s-labels-idx1-ubyte.gz", set[i]);
        if (s == LP_OK) s = lp_idx_load_labels(p, &ls[i]);
    }
    if (s == LP_OK) {
        int64_t n = xs[0]->shape[0] + xs[1]->shape[0], xshape[LP_MAX_DIMS], lshape[1] = {n};
        for (int d = 0; d < xs[0]->ndim; d++) xshape[d] = xs[0]->shape[d];
        xshape[0] = n;
        s = lp_tensor_new(x, LP_DEVICE_CPU, LP_F32, xs[0]->ndim, xshape);
        if (s == LP_OK) s = lp_tensor_new(labels, LP_DEVICE_CPU, LP_I64, 1, lshape);
        if (s == LP_OK) {
            memcpy((*x)->data, xs[0]->data, xs[0]->nbytes);
            memcpy((char *)(*x)->data + xs[0]->nbytes, xs[1]->data, xs[1]->nbytes);
            memcpy((*labels)->data, ls[0]->data, ls[0]->nbytes);
            memcpy((char *)(*labels)->data + ls[0]->nbytes, ls[1]->data, ls[1]->nbytes);
        }
    }
    for (int i = 0; i < 2; i++) {
        lp_tensor_free(xs[i]);
        lp_tensor_free(ls[i]);
    }
    return s;
}


static int die(const char *what) {
    fprintf(stderr, "bench tsne: %s: %s\n", what, lp_last_error());
    return 1;
}

/* The first n rows of x as a view (rows are contiguous). */
static lp_tensor prefix(const lp_tensor *x, int64_t n) {
    lp_tensor v = *x;
    v.shape[0] = n;
    v.nbytes = x->nbytes / (size_t)x->shape[0] * (size_t)n;
    v.owns = 0;
    return v;
}

/* Validation before timing: a 1,500-point run must separate the classes. */
static int validate(const lp_tensor *x, const int64_t *labels) {
    lp_tensor v = prefix(x, 1500);
    lp_tsne_opts o;
    lp_tsne_opts_default(&o);
    o.iters = 500;
    lp_tensor *y = NULL;
    lp_tsne_quality q;
    if (lp_tsne(&v, &o, &y, NULL) != LP_OK) return die("validation run");
    lp_status s = lp_tsne_metrics(&v, y, labels, 10, 0, 1, &q);
    lp_tensor_free(y);
    if (s != LP_OK) return die("validation metrics");
    if (q.knn_accuracy < 0.7 || q.trustworthiness < 0.95) {
        fprintf(stderr, "bench tsne: validation failed: 10-NN accuracy %.3f, trustworthiness %.4f\n", q.knn_accuracy,
                q.trustworthiness);
        return 1;
    }
    printf("validation (1,500 points, 500 iterations): 10-NN accuracy %.3f, trustworthiness %.4f\n", q.knn_accuracy,
           q.trustworthiness);
    return 0;
}

static void row(int64_t n, const char *who, double sec, const lp_tsne_quality *q) {
    printf("| %6lld | %-14s | %9.1f | %15.4f | %12.3f | %8lld |\n", (long long)n, who, sec, q->trustworthiness,
           q->knn_accuracy, (long long)q->sampled);
    fflush(stdout);
}

int main(int argc, char **argv) {
    const char *peers = "opentsne-bh,opentsne-fft,sklearn-bh", *python = "build/tsne-venv/bin/python",
               *script = "bench/peer_tsne.py";
    int64_t sizes[16];
    int ns = 0, peers_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--peers") && i + 1 < argc) peers = argv[++i];
        else if (!strcmp(argv[i], "--peers-only")) peers_only = 1;
        else if (!strcmp(argv[i], "--python") && i + 1 < argc) python = argv[++i];
        else if (!strcmp(argv[i], "--script") && i + 1 < argc) script = argv[++i];
        else if (ns < 16 && atoll(argv[i]) >= 100) sizes[ns++] = atoll(argv[i]);
        else {
            fprintf(stderr, "usage: %s [--peers LIST|none] [--peers-only] [--python PY] [--script peer_tsne.py] [N ...]\n", argv[0]);
            return 2;
        }
    }
    if (!ns) sizes[ns++] = 5000, sizes[ns++] = 20000, sizes[ns++] = 70000;
    lp_tensor *x = NULL, *lt = NULL;
    if (load_fmnist(&x, &lt) != LP_OK) return die("Fashion-MNIST");
    const int64_t *labels = lt->data;
    if (validate(x, labels)) return 1;
    printf("\nt-SNE on the CPU, Fashion-MNIST (784 pixels), perplexity 30, theta 0.5, 1,000 iterations, exact kNN;\n"
           "trustworthiness at k = 10 and 10-NN label accuracy scored by Loupe for every tool.\n\n");
    printf("| N      | tool           | seconds   | trustworthiness | 10-NN acc.   | scored   |\n");
    printf("|--------|----------------|-----------|-----------------|--------------|----------|\n");
    int rc = 0;
    for (int si = 0; si < ns; si++) {
        int64_t n = sizes[si] < x->shape[0] ? sizes[si] : x->shape[0];
        lp_tensor v = prefix(x, n);
        lp_tsne_quality q;
        if (peers_only) goto peers;
        lp_tsne_opts o;
        lp_tsne_opts_default(&o);
        lp_tensor *y = NULL;
        double t0 = now_s();
        if (lp_tsne(&v, &o, &y, NULL) != LP_OK) return die("loupe t-SNE");
        double sec = now_s() - t0;
        if (lp_tsne_metrics(&v, y, labels, 10, 10000, 1, &q) != LP_OK) return die("metrics");
        row(n, "loupe (BH)", sec, &q);
        lp_tensor_free(y);
    peers:
        if (!strcmp(peers, "none")) continue;
        char cmd[4096], dir[256], list[512];
        snprintf(dir, sizeof dir, "/tmp/loupe_bench_tsne_%lld", (long long)n);
        snprintf(list, sizeof list, "%s", peers);
        for (char *p = list; *p; p++)
            if (*p == ',') *p = ' ';
        snprintf(cmd, sizeof cmd, "%s %s %lld %s %s", python, script, (long long)n, dir, list);
        FILE *pp = popen(cmd, "r");
        if (!pp) {
            fprintf(stderr, "bench tsne: cannot run %s\n", cmd);
            return 1;
        }
        char line[512];
        while (fgets(line, sizeof line, pp)) {
            char method[64];
            double psec;
            const char *m = strstr(line, "\"method\": \""), *s = strstr(line, "\"seconds\": ");
            if (!m || !s || sscanf(m + 11, "%63[^\"]", method) != 1 || sscanf(s + 11, "%lf", &psec) != 1) continue;
            char path[512];
            snprintf(path, sizeof path, "%s/y_%s.npy", dir, method);
            lp_tensor *py = NULL;
            if (lp_npy_load(path, &py) != LP_OK) return die(path);
            if (lp_tsne_metrics(&v, py, labels, 10, 10000, 1, &q) != LP_OK) return die("peer metrics");
            row(n, method, psec, &q);
            lp_tensor_free(py);
        }
        if (pclose(pp) != 0) {
            fprintf(stderr, "bench tsne: the peer script failed: %s\n", cmd);
            rc = 1;
        }
    }
    lp_tensor_free(x);
    lp_tensor_free(lt);
    return rc;
}
