/* cpu_forward.c — CPU benchmark: Loupe's forward and input-gradient throughput on
 * resnet18 / resnet50 against PyTorch on the same machine (bench/peer_cpu_forward.py,
 * run in the same process tree), on the runs the CLI uses (forward-only for predict,
 * lean for saliency) and on a keep-all run. Validates first: one forward on the oracle
 * fixture's input must match PyTorch's logits (rel L2 <= 1e-4), or the program exits 1.
 *
 * usage: cpu_forward [--fixtures DIR] [--models resnet18,resnet50] [--batch 8] [--iters 5]
 *                    [--python /usr/bin/python3] [--no-peer]
 * DIR holds <model>/{model.onnx,input.npy,logits.npy} as written by
 * tests/oracle/export_models.py (default: $LOUPE_FIXTURES/oracle, else fixtures/oracle,
 * i.e. run from the build folder after `ctest -L oracle`). */
#include "loupe.h"
#include "bench_util.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_MODELS 8

typedef struct bench_opts {
    const char *fixtures, *models, *python;
    int batch, iters, peer;
} bench_opts;

typedef struct bench_row {
    char name[64];
    int pass, validated;
    double rel, fwd_ips, grad_ips, peer_fwd, peer_grad;
    double all_fwd_ips, all_grad_ips; /* the same passes on a keep-all run */
} bench_row;




static int fail(const char *what) {
    fprintf(stderr, "cpu_forward: %s: %s\n", what, lp_last_error());
    return -1;
}

/* Median seconds of one forward (grad = 0) or forward + input backward (grad = 1). */
static int time_runs(lp_run *r, const lp_tensor *x, int grad, int iters, double *median) {
    double t[64];
    if (iters > 64) iters = 64;
    lp_backward_opts bo = {0}; /* seed NULL: ones, the cost of any one objective */
    for (int i = -1; i < iters; i++) { /* i = -1: warm-up */
        double t0 = now_s();
        if (lp_run_forward(r, x) != LP_OK) return fail("forward");
        if (grad && lp_run_backward(r, &bo) != LP_OK) return fail("backward");
        if (i >= 0) t[i] = now_s() - t0;
    }
    qsort(t, (size_t)iters, sizeof t[0], cmp_double);
    *median = t[iters / 2];
    return 0;
}


/* dir/model/file into path; 0 when it fits. */
static int fixture_path(char *path, size_t len, const bench_opts *o, const char *model,
                        const char *file) {
    int n = snprintf(path, len, "%s/%s/%s", o->fixtures, model, file);
    if (n < 0 || (size_t)n >= len) {
        fprintf(stderr, "cpu_forward: path too long: %s/%s/%s\n", o->fixtures, model, file);
        return -1;
    }
    return 0;
}

static int bench_model(const bench_opts *o, bench_row *row) {
    char path[4096];
    lp_model *m = NULL;
    lp_run *r = NULL, *rf = NULL, *rl = NULL;
    lp_tensor *x = NULL, *ref = NULL, *xb = NULL;
    int rc = -1;
    if (fixture_path(path, sizeof path, o, row->name, "model.onnx")) return -1;
    if (lp_model_load(path, &m) != LP_OK) return fail("load");
    if (fixture_path(path, sizeof path, o, row->name, "input.npy")) goto done;
    if (lp_npy_load(path, &x) != LP_OK) { fail("input"); goto done; }
    if (fixture_path(path, sizeof path, o, row->name, "logits.npy")) goto done;
    if (lp_npy_load(path, &ref) != LP_OK) { fail("logits"); goto done; }
    if (lp_run_new(m, LP_DEVICE_CPU, &r) != LP_OK) { fail("run"); goto done; }

    /* Validate before timing. */
    if (lp_run_forward(r, x) != LP_OK) { fail("forward"); goto done; }
    const lp_tensor *y = lp_run_output(r);
    int64_t n = lp_tensor_numel(ref);
    float *got = malloc((size_t)n * sizeof *got);
    if (!got || lp_tensor_numel(y) != n || lp_tensor_read(y, got, (size_t)n * sizeof *got) != LP_OK) {
        fprintf(stderr, "cpu_forward: %s: output does not match the reference's %lld elements\n",
                row->name, (long long)n);
        free(got);
        goto done;
    }
    row->validated = 1;
    row->rel = rel_l2(got, ref->data, n);
    row->pass = row->rel <= 1e-4;
    free(got);
    if (!row->pass) { rc = 0; goto done; }

    /* The batch: the fixture's images repeated. */
    int64_t shape[LP_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[0] = o->batch;
    if (lp_tensor_new(&xb, LP_DEVICE_CPU, LP_F32, x->ndim, shape) != LP_OK) { fail("batch"); goto done; }
    int64_t per = lp_tensor_numel(x) / x->shape[0];
    for (int i = 0; i < o->batch; i++)
        memcpy((float *)xb->data + i * per, (float *)x->data + (i % x->shape[0]) * per,
               (size_t)per * sizeof(float));
    /* As the CLI runs them: forward-only (predict, perturbation methods) and lean
     * (saliency and the other input-gradient methods); then both on the keep-all run
     * (every activation kept, as for LRP), to show what the modes give. */
    double tf, tg, af, ag;
    if (lp_run_new(m, LP_DEVICE_CPU, &rf) != LP_OK || lp_run_set_forward_only(rf, 1) != LP_OK ||
        lp_run_new(m, LP_DEVICE_CPU, &rl) != LP_OK || lp_run_set_lean(rl, 1) != LP_OK) {
        fail("run");
        goto done;
    }
    if (time_runs(rf, xb, 0, o->iters, &tf) || time_runs(rl, xb, 1, o->iters, &tg) ||
        time_runs(r, xb, 0, o->iters, &af) || time_runs(r, xb, 1, o->iters, &ag))
        goto done;
    row->fwd_ips = o->batch / tf;
    row->grad_ips = o->batch / tg;
    row->all_fwd_ips = o->batch / af;
    row->all_grad_ips = o->batch / ag;
    rc = 0;
done:
    lp_run_free(rf);
    lp_run_free(rl);
    lp_tensor_free(xb);
    lp_tensor_free(ref);
    lp_tensor_free(x);
    lp_run_free(r);
    lp_model_free(m);
    return rc;
}

/* The number after "key": following `from` in the peer's JSON; 0 if absent. */
static double json_after(const char *json, const char *from, const char *key) {
    const char *p = strstr(json, from);
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    p = p ? strstr(p, pat) : NULL;
    return p ? strtod(p + strlen(pat), NULL) : 0.0;
}

static void run_peer(const bench_opts *o, bench_row *rows, int nrows) {
    char dir[4096], cmd[8192], out[8192] = "";
    snprintf(dir, sizeof dir, "%s", __FILE__);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0; else snprintf(dir, sizeof dir, ".");
    snprintf(cmd, sizeof cmd, "'%s' '%s/peer_cpu_forward.py' --models '%s' --batch %d --iters %d",
             o->python, dir, o->models, o->batch, o->iters);
    FILE *p = popen(cmd, "r");
    if (!p) {
        fprintf(stderr, "cpu_forward: cannot run the peer: %s\n", cmd);
        return;
    }
    size_t len = fread(out, 1, sizeof out - 1, p);
    out[len] = 0;
    if (pclose(p) != 0) fprintf(stderr, "cpu_forward: the peer failed: %s\n", cmd);
    for (int i = 0; i < nrows; i++) {
        char key[96];
        snprintf(key, sizeof key, "\"%.64s\":", rows[i].name);
        rows[i].peer_fwd = json_after(out, key, "forward_ips");
        rows[i].peer_grad = json_after(out, key, "grad_ips");
    }
}

static void usage(void) {
    printf("usage: cpu_forward [--fixtures DIR] [--models resnet18,resnet50] [--batch 8]\n"
           "                   [--iters 5] [--python /usr/bin/python3] [--no-peer]\n"
           "Validates each model's logits against PyTorch (fixture from tests/oracle/\n"
           "export_models.py), then times forward and input-gradient images/s at the batch,\n"
           "and the same in PyTorch (bench/peer_cpu_forward.py). Exits 1 if validation fails.\n");
}

int main(int argc, char **argv) {
    const char *env = getenv("LOUPE_FIXTURES");
    static char envdir[4096];
    if (env) snprintf(envdir, sizeof envdir, "%s/oracle", env);
    bench_opts o = {env ? envdir : "fixtures/oracle", "resnet18,resnet50", "/usr/bin/python3",
                    8, 5, 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(); return 0; }
        else if (!strcmp(a, "--no-peer")) o.peer = 0;
        else if (v && !strcmp(a, "--fixtures")) { o.fixtures = v; i++; }
        else if (v && !strcmp(a, "--models")) { o.models = v; i++; }
        else if (v && !strcmp(a, "--python")) { o.python = v; i++; }
        else if (v && !strcmp(a, "--batch")) { o.batch = atoi(v); i++; }
        else if (v && !strcmp(a, "--iters")) { o.iters = atoi(v); i++; }
        else { fprintf(stderr, "cpu_forward: unknown or incomplete option '%s'\n", a); usage(); return 2; }
    }
    if (o.batch < 1 || o.iters < 1 || o.iters > 64) {
        fprintf(stderr, "cpu_forward: --batch must be >= 1 and --iters in 1..64\n");
        return 2;
    }
    bench_row rows[MAX_MODELS];
    int nrows = 0;
    char list[1024];
    snprintf(list, sizeof list, "%s", o.models);
    for (char *s = strtok(list, ","); s && nrows < MAX_MODELS; s = strtok(NULL, ",")) {
        memset(&rows[nrows], 0, sizeof rows[0]);
        snprintf(rows[nrows].name, sizeof rows[0].name, "%s", s);
        nrows++;
    }
    int bad = 0;
    for (int i = 0; i < nrows; i++)
        if (bench_model(&o, &rows[i]) || !rows[i].pass) bad = 1;
    if (o.peer) run_peer(&o, rows, nrows);

    printf("CPU: %s, %d threads (OpenMP); batch %d, median of %d runs after a warm-up\n",
           lp_device_description(LP_DEVICE_CPU),
           omp_get_max_threads(), o.batch, o.iters);
    printf("peer: PyTorch (bench/peer_cpu_forward.py, torch.no_grad forward; autograd.grad "
           "w.r.t. the input)\n");
    printf("loupe: forward-only and lean runs (as predict and saliency run), then a keep-all run\n");
    printf("%-10s %-18s | %-4s | %12s | %14s | %6s\n", "model", "quantity", "pass", "loupe img/s",
           "pytorch img/s", "ratio");
    for (int i = 0; i < nrows; i++) {
        const bench_row *b = &rows[i];
        const char *q[4] = {"forward", "in-grad", "forward (keep-all)", "in-grad (keep-all)"};
        double l[4] = {b->fwd_ips, b->grad_ips, b->all_fwd_ips, b->all_grad_ips};
        double p[4] = {b->peer_fwd, b->peer_grad, b->peer_fwd, b->peer_grad};
        for (int k = 0; k < 4; k++)
            printf("%-10s %-18s | %-4s | %12.2f | %14.2f | %6.2f\n", b->name, q[k],
                   b->pass ? "yes" : "NO", l[k], p[k], p[k] > 0 ? l[k] / p[k] : 0.0);
        if (b->validated)
            printf("%-10s validation: logits rel L2 %.2e (bound 1e-4)\n", b->name, b->rel);
        else
            printf("%-10s validation: not run (error above)\n", b->name);
    }
    return bad ? 1 : 0;
}
