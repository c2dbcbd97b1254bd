/* gpu_forward.c — GPU benchmark: Loupe's forward images/s (batch 256) and input-gradient
 * (saliency) images/s (batch 64) for resnet50, vgg16 and resnet18 at 224 x 224 in fp32,
 * tf32 and bf16, each beside PyTorch in the same run (bench/peer_gpu_forward.py: cuDNN
 * benchmark mode, channels-last autocast for bf16, torch.autograd.grad w.r.t. the input
 * only), with the ratio and both peak device memories.
 *
 * One peer process (started first, fork/exec with pipes) works model by model: it exports
 * the torchvision model (random init, seeded, eval) to ONNX in a temporary folder, writes
 * a 2-image validation batch with PyTorch's float64 logits and input gradient, times
 * PyTorch's cells (JSON lines, echoed as they come), says model_done and waits on its
 * stdin; Loupe then loads the same ONNX file, validates each precision (logits and input
 * gradient vs PyTorch float64, rel L2) and times it, one table row per cell printed as
 * soon as it is measured, then lets the peer go on. For the first model the bf16 cells
 * (forward and input gradient) are measured a second time with packed activations off
 * (LOUPE_PACK=0), a line under each row, so the table shows what packing gives on that
 * card. So the two never share the GPU, and a
 * timeout still leaves every complete row so far (resnet50's first, vgg16's last). A row
 * whose validation fails says WRONG and the program exits 1: a fast-but-wrong backend
 * cannot look good.
 *
 * usage: gpu_forward [--device cuda|cpu] [--quick] [--models resnet50,resnet18,vgg16]
 *                    [--precisions fp32,tf32,bf16] [--batch-fwd 256] [--batch-grad 64]
 *                    [--seconds 1.0] [--max-iters 20] [--warmup 2] [--python PY]
 *                    [--dir DIR] [--keep] [--no-peer]
 * Timing (both sides alike): `warmup` calls, then calls each followed by a device sync
 * until >= `seconds` have passed and 3 calls are done, or `max-iters` calls.
 * PY: $LOUPE_PYTHON, else /usr/bin/python3 (torch, torchvision, onnx). DIR: where the
 * exports go (default: a new folder under $TMPDIR, removed at the end). --no-peer: the
 * peer only exports (no PyTorch timing). --quick (with --device cpu, a smoke test of the
 * whole flow without a GPU): resnet18, fp32, batch 2, one call, no warm-up.
 * Without a CUDA device (and --device cuda) it prints "SKIPPED: no CUDA device", exit 0.
 * Expected run time on an H200: about 90-120 s in all (resnet50's rows after ~40 s); give
 * it a 150 s limit. On this build machine, `--device cpu --quick` takes ~15 s. */
#include "loupe.h"
#include "bench_util.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_MODELS 3
#define NPREC 3
#define PEER_SCRIPT "peer_gpu_forward.py"

typedef struct bench_opts {
    const char *python, *dir;
    char models[256], precs[64];
    lp_device dev;
    int batch_fwd, batch_grad, max_iters, warmup, keep, peer;
    double seconds;
} bench_opts;

typedef struct peer_cell {
    int have;
    double ips, peak_mib, secs;
    int iters;
} peer_cell;

typedef struct model_row {
    char name[32];
    int exported, have_ref, cls;
    double torch_err_logits[NPREC], torch_err_grad[NPREC]; /* PyTorch's own, vs float64 */
    double grad_change;  /* the reference gradient's change under a 1e-5 input perturbation */
    peer_cell cell[NPREC][2];                              /* [precision][forward, grad] */
} model_row;

static const char *const PASS_NAMES[2] = {"forward", "grad"};
/* Validation bounds (rel L2 vs PyTorch float64): the design's forward bounds; the input
 * gradient 3x those (fp32: 1e-3, as the CPU oracle). Each is raised to 3x PyTorch's own
 * error at that precision where that is larger (an engine no worse than PyTorch passes),
 * the gradient's also to 3x its change under a 1e-5 relative input perturbation (max-pool
 * windows with near-tied maxima route it either way: tests/oracle/export_models.py). A
 * raised gradient bound is then at most max(0.95, 1.3x that error) and 0.99, as in
 * tests/oracle/oracle_check.c: a gradient no better than zero (rel L2 1) never passes. */
static const double BOUND_LOGITS[NPREC] = {1e-4, 1e-2, 3e-2};
static const double BOUND_GRAD[NPREC] = {1e-3, 3e-2, 9e-2};

/* ---- the temporary folder, removed at exit and on SIGTERM/SIGINT (timeout) ---------- */
#define MAX_TEMP_FILES (MAX_MODELS * 5)
static char g_temp_dir[4096];
static char g_temp_files[MAX_TEMP_FILES][4200];
static int g_temp_n, g_temp_active;

static void temp_remove(void) {
    if (!g_temp_active) return;
    for (int i = 0; i < g_temp_n; i++) unlink(g_temp_files[i]); /* async-signal-safe */
    rmdir(g_temp_dir);
    g_temp_active = 0;
}

static void on_signal(int sig) {
    temp_remove();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* ---- the peer's JSON lines (flat objects from json.dumps: "key": value) ------------- */
static const char *json_find(const char *js, const char *key) {
    char k[96];
    snprintf(k, sizeof k, "\"%s\":", key);
    const char *p = strstr(js, k);
    if (!p) return NULL;
    p += strlen(k);
    while (*p == ' ') p++;
    return p;
}

static double json_num(const char *js, const char *key, double dflt) {
    const char *p = json_find(js, key);
    char *end;
    double v = p ? strtod(p, &end) : dflt;
    return p && end != p ? v : dflt;
}

static const char *json_str(const char *js, const char *key, char *buf, size_t len) {
    const char *p = json_find(js, key);
    buf[0] = 0;
    if (!p || *p != '"') return buf;
    p++;
    size_t n = strcspn(p, "\"");
    snprintf(buf, len, "%.*s", (int)(n < len - 1 ? n : len - 1), p);
    return buf;
}

static int prec_index(const char *s) {
    lp_precision p;
    if (lp_precision_parse(s, &p) != LP_OK) return -1;
    return (int)p;
}

static model_row *find_model(model_row *rows, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(rows[i].name, name)) return &rows[i];
    return NULL;
}

static void peer_script(char *path, size_t len) {
    snprintf(path, len, "%s/%s", LOUPE_BENCH_DIR, PEER_SCRIPT);
    if (access(path, R_OK) != 0) snprintf(path, len, "bench/%s", PEER_SCRIPT); /* from the checkout root */
}

/* The peer process: its stdout (JSON lines) and, with --interleave, its stdin, on which
 * one line lets it go on to the next model. */
typedef struct peer_proc {
    pid_t pid;
    FILE *out, *in;
    int done; /* "done" seen or its output ended */
    char desc[512];
} peer_proc;

static int peer_start(const bench_opts *o, peer_proc *pp) {
    /* The peer exports, measures and reports one model at a time (model_done), then waits
     * for a line on stdin while Loupe measures that model: each model's rows are complete
     * as early as they can be, and the two never share the GPU at the same time. */
    char script[4200], batch_fwd[16], batch_grad[16], secs[32], iters[16], warm[16];
    int to_child[2], from_child[2];
    memset(pp, 0, sizeof *pp);
    snprintf(pp->desc, sizeof pp->desc, "PyTorch: no report");
    peer_script(script, sizeof script);
    snprintf(batch_fwd, sizeof batch_fwd, "%d", o->batch_fwd);
    snprintf(batch_grad, sizeof batch_grad, "%d", o->batch_grad);
    snprintf(secs, sizeof secs, "%g", o->seconds);
    snprintf(iters, sizeof iters, "%d", o->max_iters);
    snprintf(warm, sizeof warm, "%d", o->warmup);
    char *argv[] = {(char *)o->python, script, "--out", (char *)o->dir, "--device", (char *)lp_device_name(o->dev),
                    "--models", (char *)o->models, "--precisions", (char *)o->precs, "--batch-fwd", batch_fwd,
                    "--batch-grad", batch_grad, "--seconds", secs, "--max-iters", iters, "--warmup", warm,
                    o->peer ? "--interleave" : "--export-only", NULL};
    printf("peer:");
    for (char **a = argv; *a; a++) printf(" %s", *a);
    printf("\n");
    fflush(stdout);
    if (pipe(to_child) != 0) return -1;
    if (pipe(from_child) != 0) {
        close(to_child[0]);
        close(to_child[1]);
        return -1;
    }
    pp->pid = fork();
    if (pp->pid < 0) return -1;
    if (pp->pid == 0) {
        dup2(to_child[0], 0);
        dup2(from_child[1], 1);
        close(to_child[0]);
        close(to_child[1]);
        close(from_child[0]);
        close(from_child[1]);
        execvp(argv[0], argv);
        fprintf(stderr, "gpu_forward: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    pp->out = fdopen(from_child[0], "r");
    pp->in = fdopen(to_child[1], "w");
    return pp->out && pp->in ? 0 : -1;
}

/* Reads and echoes the peer's reports into rows until it says it is done with `model`
 * (NULL: until its output ends). */
static void peer_pump(peer_proc *pp, model_row *rows, int nrows, const char *model) {
    char line[8192], s1[64], s2[64], s3[64], msg[1024];
    while (!pp->done && fgets(line, sizeof line, pp->out)) {
        if (line[0] != '{') {
            printf("peer| %s", line);
            continue;
        }
        json_str(line, "kind", s1, sizeof s1);
        model_row *r = find_model(rows, nrows, json_str(line, "model", s2, sizeof s2));
        if (!strcmp(s1, "info")) {
            char dev[256], torch[64], bf16[128];
            json_str(line, "device", dev, sizeof dev);
            json_str(line, "torch", torch, sizeof torch);
            json_str(line, "bf16", bf16, sizeof bf16);
            snprintf(pp->desc, sizeof pp->desc, "PyTorch %s, cuDNN %.0f, on %s; bf16 = %s", torch,
                     json_num(line, "cudnn", 0), dev, bf16);
            printf("peer: %s\n", pp->desc);
        } else if (!strcmp(s1, "export") && r) {
            r->exported = 1;
            printf("peer: exported %s (opset %.0f, %s exporter) in %.1f s\n", r->name,
                   json_num(line, "opset", 0), json_str(line, "exporter", s3, sizeof s3),
                   json_num(line, "seconds", 0));
        } else if (!strcmp(s1, "ref") && r) {
            r->have_ref = 1;
            r->cls = (int)json_num(line, "class", 0);
            r->grad_change = json_num(line, "grad_change_perturbed", 0);
            for (int k = 0; k < NPREC; k++) {
                char key[64];
                snprintf(key, sizeof key, "torch_err_logits_%s", lp_precision_name((lp_precision)k));
                r->torch_err_logits[k] = json_num(line, key, 0);
                snprintf(key, sizeof key, "torch_err_grad_%s", lp_precision_name((lp_precision)k));
                r->torch_err_grad[k] = json_num(line, key, 0);
            }
        } else if (!strcmp(s1, "cell") && r) {
            int k = prec_index(json_str(line, "prec", s3, sizeof s3));
            int g = !strcmp(json_str(line, "pass", msg, sizeof msg), "grad");
            if (k < 0) continue;
            peer_cell *c = &r->cell[k][g];
            c->have = 1;
            c->ips = json_num(line, "ips", 0);
            c->peak_mib = json_num(line, "peak_mib", -1);
            c->secs = json_num(line, "seconds", 0);
            c->iters = (int)json_num(line, "iters", 0);
            printf("pytorch: %-9s %-4s %-7s batch %3.0f: %9.1f img/s (%d calls in %.2f s), peak %.0f MiB\n",
                   r->name, s3, PASS_NAMES[g], json_num(line, "batch", 0), c->ips, c->iters, c->secs,
                   c->peak_mib);
        } else if (!strcmp(s1, "error")) {
            char text[1024];
            printf("pytorch: %s %s %s: ERROR %s\n", s2, json_str(line, "prec", s3, sizeof s3),
                   json_str(line, "pass", msg, sizeof msg), json_str(line, "message", text, sizeof text));
        } else if (!strcmp(s1, "done")) {
            printf("peer: done in %.1f s\n", json_num(line, "seconds", 0));
            pp->done = 1;
        } else if (!strcmp(s1, "model_done") && model && !strcmp(s2, model)) {
            fflush(stdout);
            return;
        }
        fflush(stdout);
    }
    pp->done = 1;
}

/* Lets the peer go on to its next model. */
static void peer_next(peer_proc *pp) {
    if (pp->in && !pp->done) {
        fputs("next\n", pp->in);
        fflush(pp->in);
    }
}

/* Closes its stdin (it stops), reads what is left, waits; its exit status. */
static int peer_finish(peer_proc *pp, model_row *rows, int nrows) {
    int st = 0;
    if (pp->in) fclose(pp->in);
    pp->in = NULL;
    if (pp->out) {
        peer_pump(pp, rows, nrows, NULL);
        fclose(pp->out);
    }
    if (pp->pid > 0 && waitpid(pp->pid, &st, 0) == pp->pid && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        fprintf(stderr, "gpu_forward: the peer %s %d\n", WIFEXITED(st) ? "exited with status" : "died of signal",
                WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        return 1;
    }
    return 0;
}

/* ---- Loupe ------------------------------------------------------------------------- */
static double rel_l2_t(const lp_tensor *got, const lp_tensor *ref) {
    int64_t n = lp_tensor_numel(ref);
    if (!got || lp_tensor_numel(got) != n) return INFINITY;
    float *a = malloc((size_t)n * sizeof *a);
    double e = INFINITY;
    if (a && lp_tensor_read(got, a, (size_t)n * sizeof *a) == LP_OK) {
        e = rel_l2(a, ref->data, n);
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(a[i])) e = INFINITY;
    }
    free(a);
    return e;
}

/* N x ... host tensor of `batch` rows cycling through x's rows, on dev. */
static lp_status batch_of(const lp_tensor *x, int batch, lp_device dev, lp_tensor **out) {
    int64_t shape[LP_MAX_DIMS];
    lp_tensor *h = NULL;
    memcpy(shape, x->shape, sizeof shape);
    shape[0] = batch;
    lp_status s = lp_tensor_new(&h, LP_DEVICE_CPU, LP_F32, x->ndim, shape);
    if (s != LP_OK) return s;
    int64_t per = lp_tensor_numel(x) / x->shape[0];
    for (int i = 0; i < batch; i++)
        memcpy((float *)h->data + (int64_t)i * per, (const float *)x->data + (i % x->shape[0]) * per,
               (size_t)per * sizeof(float));
    if (dev == LP_DEVICE_CPU) {
        *out = h;
        return LP_OK;
    }
    s = lp_tensor_clone(out, h, dev);
    lp_tensor_free(h);
    return s;
}

/* rows x ncls one-hot on class cls, on dev: d(sum_n logits[n, cls]). */
static lp_status seed_of(int rows, int64_t ncls, int cls, lp_device dev, lp_tensor **out) {
    int64_t shape[2] = {rows, ncls};
    lp_tensor *h = NULL;
    lp_status s = lp_tensor_new(&h, LP_DEVICE_CPU, LP_F32, 2, shape);
    if (s != LP_OK) return s;
    for (int i = 0; i < rows; i++) ((float *)h->data)[(int64_t)i * ncls + cls] = 1.0f;
    if (dev == LP_DEVICE_CPU) {
        *out = h;
        return LP_OK;
    }
    s = lp_tensor_clone(out, h, dev);
    lp_tensor_free(h);
    return s;
}

static lp_status new_run(lp_model *m, const bench_opts *o, int k, lp_run **r) {
    lp_status s = lp_run_new(m, o->dev, r);
    if (s == LP_OK) s = lp_run_set_precision(*r, (lp_precision)k);
    return s;
}

/* Logits and input gradient of the validation batch at precision k, rel L2 vs PyTorch's
 * float64 references. */
/* Validation takes the timed cells' own paths: logits from a forward-only run (fused
 * Conv+Relu) on its second pass, the gradient from a lean run's third forward +
 * backward (replayed from CUDA graphs where they are on). */
static lp_status validate(lp_model *m, const bench_opts *o, int k, const lp_tensor *x, const lp_tensor *ref_logits,
                          const lp_tensor *ref_grad, int cls, double *e_logits, double *e_grad) {
    lp_run *f = NULL, *r = NULL;
    lp_tensor *seed = NULL;
    int64_t ncls = lp_tensor_numel(ref_logits) / ref_logits->shape[0];
    lp_status s = new_run(m, o, k, &f);
    if (s == LP_OK) s = lp_run_set_forward_only(f, 1);
    for (int i = 0; i < 2 && s == LP_OK; i++) s = lp_run_forward(f, x);
    if (s == LP_OK) {
        *e_logits = rel_l2_t(lp_run_output(f), ref_logits);
        s = seed_of((int)x->shape[0], ncls, cls, LP_DEVICE_CPU, &seed);
    }
    if (s == LP_OK) s = new_run(m, o, k, &r);
    if (s == LP_OK) s = lp_run_set_lean(r, 1);
    lp_backward_opts bo = {.of = NULL, .seed = seed, .weight_grads = 0, .rules = NULL};
    for (int i = 0; i < 3 && s == LP_OK; i++) {
        s = lp_run_forward(r, x);
        if (s == LP_OK) s = lp_run_backward(r, &bo);
    }
    if (s == LP_OK) *e_grad = rel_l2_t(lp_run_grad(r, lp_model_input_name(m)), ref_grad);
    lp_tensor_free(seed);
    lp_run_free(f);
    lp_run_free(r);
    return s;
}

typedef struct cell_result {
    double ips, peak_mib, secs;
    int iters, passes; /* timed; all, warm-up included */
    lp_run_speed speed; /* fused Relus, packed values, passes replayed from CUDA graphs */
} cell_result;

/* One timed cell: forward (grad = 0) or forward + input backward (grad = 1) at `batch`. */
static lp_status loupe_cell(lp_model *m, const bench_opts *o, int k, int grad, const lp_tensor *xval,
                            int64_t ncls, int cls, cell_result *res) {
    int batch = grad ? o->batch_grad : o->batch_fwd;
    lp_tensor *x = NULL, *seed = NULL;
    lp_run *r = NULL;
    lp_status s = batch_of(xval, batch, o->dev, &x);
    if (s == LP_OK && grad) s = seed_of(batch, ncls, cls, o->dev, &seed);
    if (s == LP_OK) s = new_run(m, o, k, &r);
    /* Forward cells keep only the working set, as PyTorch under no_grad does; input-
     * gradient cells only what that gradient reads, as autograd's saved tensors. */
    if (s == LP_OK) s = grad ? lp_run_set_lean(r, 1) : lp_run_set_forward_only(r, 1);
    lp_backward_opts bo = {.of = NULL, .seed = seed, .weight_grads = 0, .rules = NULL};
    if (s == LP_OK) {
        lp_device_memory_reset_peak(o->dev);
        for (int i = 0; i < o->warmup && s == LP_OK; i++) {
            s = lp_run_forward(r, x);
            if (s == LP_OK && grad) s = lp_run_backward(r, &bo);
        }
        if (s == LP_OK) s = lp_device_sync(o->dev);
    }
    int n = 0;
    double t0 = now_s(), el = 0;
    while (s == LP_OK) {
        s = lp_run_forward(r, x);
        if (s == LP_OK && grad) s = lp_run_backward(r, &bo);
        if (s == LP_OK) s = lp_device_sync(o->dev);
        if (s != LP_OK) break;
        n++;
        el = now_s() - t0;
        if (n >= o->max_iters || (el >= o->seconds && n >= (o->max_iters < 3 ? o->max_iters : 3))) break;
    }
    if (s == LP_OK) {
        lp_memory_stats ms;
        res->iters = n;
        res->secs = el;
        res->ips = el > 0 ? batch * n / el : 0;
        res->peak_mib = lp_device_memory(o->dev, &ms) == LP_OK ? (double)ms.peak / (1 << 20) : -1;
        lp_run_speed_info(r, &res->speed);
        res->passes = o->warmup + n;
    }
    lp_run_free(r);
    lp_tensor_free(seed);
    lp_tensor_free(x);
    lp_device_memory_trim(o->dev);
    return s;
}

static void fmt_num(char *buf, size_t len, double v, const char *f) {
    if (v > 0) snprintf(buf, len, f, v);
    else snprintf(buf, len, "-");
}

static void print_header(void) {
    printf("\n%-9s %-4s %-7s %5s | %11s | %11s | %6s | %9s | %9s | %-24s | %-5s | %s\n", "model", "prec", "pass",
           "batch", "loupe img/s", "torch img/s", "ratio", "loupe MiB", "torch MiB",
           "rel L2 vs torch fp64", "check", "loupe speed paths");
    printf("----------------------------------+-------------+-------------+--------+-----------+"
           "-----------+--------------------------+-------+------------------\n");
    fflush(stdout);
}

/* One row, printed as soon as its cell is measured. */
static void print_row(const model_row *mr, int k, int g, int batch, const cell_result *lr, const char *err,
                      double e, double bound, int validated) {
    const peer_cell *pc = &mr->cell[k][g];
    char l[32], t[32], ratio[32], lm[32], tm[32], val[64];
    fmt_num(l, sizeof l, lr ? lr->ips : 0, "%.1f");
    fmt_num(t, sizeof t, pc->have ? pc->ips : 0, "%.1f");
    fmt_num(ratio, sizeof ratio, lr && pc->have && pc->ips > 0 ? lr->ips / pc->ips : 0, "%.3f");
    fmt_num(lm, sizeof lm, lr ? lr->peak_mib : 0, "%.0f");
    fmt_num(tm, sizeof tm, pc->have ? pc->peak_mib : 0, "%.0f");
    if (validated) snprintf(val, sizeof val, "%.2e (<= %.1e)", e, bound);
    else snprintf(val, sizeof val, "not validated");
    char sp[160] = "-", pg[32] = "", sg[40] = "";
    if (lr && lr->speed.packed_grads) snprintf(pg, sizeof pg, " (+%d gradients)", lr->speed.packed_grads);
    if (lr && lr->speed.shared_grads) snprintf(sg, sizeof sg, ", %d Add gradients shared", lr->speed.shared_grads);
    if (lr)
        snprintf(sp, sizeof sp, "%d activations fused, %d values packed%s%s, %lld of %d passes from graphs", lr->speed.fused,
                 lr->speed.packed, pg, sg, (long long)lr->speed.graph_replays / (g ? 2 : 1), lr->passes);
    printf("%-9s %-4s %-7s %5d | %11s | %11s | %6s | %9s | %9s | %-24s | %-5s | %s", mr->name,
           lp_precision_name((lp_precision)k), g ? "in-grad" : "forward", batch, l, t, ratio, lm, tm, val,
           !validated ? "-" : (e <= bound ? "ok" : "WRONG"), sp);
    if (err) printf("  ERROR: %s", err);
    printf("\n");
    fflush(stdout);
}

static int load_npy(const char *dir, const char *model, const char *suffix, lp_tensor **out) {
    char path[4400];
    snprintf(path, sizeof path, "%s/%s.%s", dir, model, suffix);
    if (lp_npy_load(path, out) != LP_OK) {
        fprintf(stderr, "gpu_forward: %s\n", lp_last_error());
        return -1;
    }
    return 0;
}

/* A bf16 cell (g: input gradient) again with activations unpacked (LOUPE_PACK=0:
 * fp32 NCHW between convolutions, converted around each), to measure what packing gives. */
static void ab_pack_row(lp_model *m, const bench_opts *o, const model_row *mr, int g, const lp_tensor *x, int64_t ncls,
                        const cell_result *packed) {
    cell_result ur = {0};
    const char *what = g ? "in-grad" : "forward";
    setenv("LOUPE_PACK", "0", 1); /* read when the run plans its first pass */
    lp_status s = loupe_cell(m, o, LP_PREC_BF16, g, x, ncls, mr->cls, &ur);
    unsetenv("LOUPE_PACK");
    if (s != LP_OK)
        printf("%-9s bf16 %s unpacked (LOUPE_PACK=0): ERROR: %s\n", mr->name, what, lp_last_error());
    else
        printf("%-9s bf16 %s unpacked (LOUPE_PACK=0): %.1f images/s, peak %.0f MiB; packed (%d values, %d gradients) "
               "is %.2fx that\n",
               mr->name, what, ur.ips, ur.peak_mib, packed->speed.packed, packed->speed.packed_grads,
               ur.ips > 0 ? packed->ips / ur.ips : 0);
    fflush(stdout);
}

/* Every cell of one model; returns the number of failures (errors, WRONG rows). With
 * ab_pack, the bf16 cells are also measured unpacked (ab_pack_row). */
static int bench_model(const bench_opts *o, model_row *mr, const int *precs, int nprec, int ab_pack) {
    char path[4400], err[6000];
    lp_model *m = NULL;
    lp_tensor *x = NULL, *ref_logits = NULL, *ref_grad = NULL;
    int bad = 0;
    snprintf(path, sizeof path, "%s/%s.onnx", o->dir, mr->name);
    if (!mr->exported || !mr->have_ref) snprintf(err, sizeof err, "the peer did not export %s", mr->name);
    else if (lp_model_load(path, &m) != LP_OK) snprintf(err, sizeof err, "load %s: %s", path, lp_last_error());
    else if (load_npy(o->dir, mr->name, "input.npy", &x) || load_npy(o->dir, mr->name, "logits.npy", &ref_logits) ||
             load_npy(o->dir, mr->name, "grad.npy", &ref_grad))
        snprintf(err, sizeof err, "validation batch of %s unreadable", mr->name);
    else err[0] = 0;
    if (err[0]) {
        for (int i = 0; i < nprec; i++)
            for (int g = 0; g < 2; g++) print_row(mr, precs[i], g, g ? o->batch_grad : o->batch_fwd, NULL, err, 0, 0, 0);
        bad = 2 * nprec;
        goto done;
    }
    int64_t ncls = lp_tensor_numel(ref_logits) / ref_logits->shape[0];
    for (int i = 0; i < nprec; i++) {
        int k = precs[i];
        double e[2] = {INFINITY, INFINITY}, bound[2];
        bound[0] = fmax(BOUND_LOGITS[k], 3 * mr->torch_err_logits[k]);
        const double peer_grad = fmax(mr->torch_err_grad[k], mr->grad_change);
        bound[1] = fmax(BOUND_GRAD[k], fmin(3 * peer_grad, fmin(fmax(0.95, 1.3 * peer_grad), 0.99)));
        lp_status vs = validate(m, o, k, x, ref_logits, ref_grad, mr->cls, &e[0], &e[1]);
        char verr[1200] = "";
        if (vs != LP_OK) snprintf(verr, sizeof verr, "validation: %.1100s", lp_last_error());
        for (int g = 0; g < 2; g++) {
            cell_result lr = {0};
            lp_status s = loupe_cell(m, o, k, g, x, ncls, mr->cls, &lr);
            const char *msg = s != LP_OK ? lp_last_error() : (verr[0] ? verr : NULL);
            char cerr[1200];
            if (s != LP_OK) snprintf(cerr, sizeof cerr, "%.1100s", msg);
            print_row(mr, k, g, g ? o->batch_grad : o->batch_fwd, s == LP_OK ? &lr : NULL,
                      s != LP_OK ? cerr : msg, e[g], bound[g], vs == LP_OK);
            if (s != LP_OK || vs != LP_OK || !(e[g] <= bound[g])) bad++;
            if (ab_pack && s == LP_OK && k == LP_PREC_BF16) ab_pack_row(m, o, mr, g, x, ncls, &lr);
        }
    }
done:
    lp_tensor_free(x);
    lp_tensor_free(ref_logits);
    lp_tensor_free(ref_grad);
    lp_model_free(m);
    lp_device_memory_trim(o->dev);
    return bad;
}

static void usage(void) {
    printf("usage: gpu_forward [--device cuda|cpu] [--quick] [--models resnet50,resnet18,vgg16]\n"
           "                   [--precisions fp32,tf32,bf16] [--batch-fwd 256] [--batch-grad 64]\n"
           "                   [--seconds 1.0] [--max-iters 20] [--warmup 2] [--python PY]\n"
           "                   [--dir DIR] [--keep] [--no-peer]\n"
           "Forward and input-gradient images/s of Loupe beside PyTorch (bench/peer_gpu_forward.py)\n"
           "on the same ONNX exports, with peak device memory and a validation of each precision\n"
           "against PyTorch's fp32 logits and gradient. Exits 1 if any cell fails or is WRONG.\n"
           "--quick: resnet18, fp32, batch 2, one call (with --device cpu: the flow without a GPU).\n");
}

int main(int argc, char **argv) {
    const char *py = getenv("LOUPE_PYTHON");
    bench_opts o = {py && *py ? py : "/usr/bin/python3", NULL, "resnet50,resnet18,vgg16", "fp32,tf32,bf16",
                    LP_DEVICE_CUDA, 256, 64, 20, 2, 0, 1, 1.0};
    int quick = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(); return 0; }
        else if (!strcmp(a, "--quick")) quick = 1;
        else if (!strcmp(a, "--keep")) o.keep = 1;
        else if (!strcmp(a, "--no-peer")) o.peer = 0;
        else if (v && !strcmp(a, "--device")) {
            if (!strcmp(v, "cpu")) o.dev = LP_DEVICE_CPU;
            else if (!strcmp(v, "cuda")) o.dev = LP_DEVICE_CUDA;
            else { fprintf(stderr, "gpu_forward: --device cpu|cuda\n"); return 2; }
            i++;
        }
        else if (v && !strcmp(a, "--models")) { snprintf(o.models, sizeof o.models, "%s", v); i++; }
        else if (v && !strcmp(a, "--precisions")) { snprintf(o.precs, sizeof o.precs, "%s", v); i++; }
        else if (v && !strcmp(a, "--python")) { o.python = v; i++; }
        else if (v && !strcmp(a, "--dir")) { o.dir = v; i++; }
        else if (v && !strcmp(a, "--batch-fwd")) { o.batch_fwd = atoi(v); i++; }
        else if (v && !strcmp(a, "--batch-grad")) { o.batch_grad = atoi(v); i++; }
        else if (v && !strcmp(a, "--seconds")) { o.seconds = atof(v); i++; }
        else if (v && !strcmp(a, "--max-iters")) { o.max_iters = atoi(v); i++; }
        else if (v && !strcmp(a, "--warmup")) { o.warmup = atoi(v); i++; }
        else { fprintf(stderr, "gpu_forward: unknown or incomplete option '%s'\n", a); usage(); return 2; }
    }
    if (quick) {
        snprintf(o.models, sizeof o.models, "resnet18");
        snprintf(o.precs, sizeof o.precs, "fp32");
        o.batch_fwd = o.batch_grad = 2;
        o.seconds = 0;
        o.max_iters = 1;
        o.warmup = 0;
    }
    if (o.batch_fwd < 1 || o.batch_grad < 1 || o.max_iters < 1 || o.warmup < 0 || o.seconds < 0) {
        fprintf(stderr, "gpu_forward: batches and --max-iters must be >= 1, --warmup and --seconds >= 0\n");
        return 2;
    }
    if (o.dev == LP_DEVICE_CUDA && lp_cuda_device_count() <= 0) {
        printf("SKIPPED: no CUDA device\n");
        return 0;
    }

    model_row rows[MAX_MODELS];
    int nrows = 0, precs[NPREC], nprec = 0;
    char list[256];
    memset(rows, 0, sizeof rows);
    snprintf(list, sizeof list, "%s", o.models);
    for (char *s = strtok(list, ","); s; s = strtok(NULL, ",")) {
        if (nrows == MAX_MODELS || (strcmp(s, "resnet50") && strcmp(s, "resnet18") && strcmp(s, "vgg16"))) {
            fprintf(stderr, "gpu_forward: --models: '%s': at most %d of resnet50, resnet18, vgg16\n", s, MAX_MODELS);
            return 2;
        }
        snprintf(rows[nrows++].name, sizeof rows[0].name, "%s", s);
    }
    snprintf(list, sizeof list, "%s", o.precs);
    for (char *s = strtok(list, ","); s; s = strtok(NULL, ",")) {
        int k = prec_index(s);
        if (k < 0 || nprec == NPREC) {
            fprintf(stderr, "gpu_forward: --precisions: %s\n", k < 0 ? lp_last_error() : "at most 3");
            return 2;
        }
        if (k != LP_PREC_FP32 && o.dev == LP_DEVICE_CPU) {
            fprintf(stderr, "gpu_forward: precision %s needs --device cuda\n", s);
            return 2;
        }
        precs[nprec++] = k;
    }

    char tmpl[4096];
    if (!o.dir) {
        const char *tmp = getenv("TMPDIR");
        snprintf(tmpl, sizeof tmpl, "%s/loupe-gpu-forward.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(tmpl)) {
            fprintf(stderr, "gpu_forward: cannot make a folder %s: %s\n", tmpl, strerror(errno));
            return 1;
        }
        o.dir = tmpl;
        if (!o.keep) {
            static const char *const suffix[5] = {"onnx", "onnx.data", "input.npy", "logits.npy", "grad.npy"};
            snprintf(g_temp_dir, sizeof g_temp_dir, "%s", tmpl);
            for (int i = 0; i < nrows; i++)
                for (int j = 0; j < 5; j++)
                    snprintf(g_temp_files[g_temp_n++], sizeof g_temp_files[0], "%.4000s/%.31s.%s", tmpl, rows[i].name,
                             suffix[j]);
            g_temp_active = 1;
            signal(SIGTERM, on_signal);
            signal(SIGINT, on_signal);
            atexit(temp_remove);
        }
    } else if (mkdir(o.dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "gpu_forward: cannot make %s: %s\n", o.dir, strerror(errno));
        return 1;
    }

    /* cuDNN's fused convolutions are decided on each shape's first call (a warm-up call,
     * untimed, as PyTorch's benchmark mode tunes its algorithms; about 11 calls of the
     * convolution each). More room than a program's 5 s, for more of the table's shapes,
     * but bounded: the GPU check gives this bench 125 s. */
    setenv("LOUPE_CUDNN_FUSE_BUDGET_S", "15", 0);
    double t_start = now_s();
    printf("Loupe gpu_forward: %s (%s); models %s; precisions %s; forward batch %d, input-gradient batch %d\n",
           lp_device_description(o.dev), lp_device_name(o.dev), o.models, o.precs, o.batch_fwd, o.batch_grad);
    printf("timing: %d warm-up calls, then synced calls until >= %.2g s and 3 calls, or %d calls\n", o.warmup,
           o.seconds, o.max_iters);
    printf("order: per model, the peer's export and PyTorch's cells, then Loupe's rows\n");
    fflush(stdout);
    signal(SIGPIPE, SIG_IGN); /* a peer that died must not kill the bench */
    peer_proc pp;
    if (peer_start(&o, &pp)) {
        fprintf(stderr, "gpu_forward: cannot start the peer (%s): %s\n", o.python, strerror(errno));
        return 1;
    }
    int bad = 0;
    for (int i = 0; i < nrows; i++) {
        peer_pump(&pp, rows, nrows, rows[i].name);
        if (i == 0) {
            printf("\nLoupe on %s: %s\n", lp_device_name(o.dev), lp_device_description(o.dev));
            printf("peer: %s%s\n", pp.desc, o.peer ? "" : " (--no-peer: not timed)");
            printf("validation: Loupe's logits (forward rows) and input gradient of class t (in-grad rows) on a\n"
                   "2-image batch vs PyTorch float64; bound: fp32 1e-4 / 1e-3, tf32 1e-2 / 3e-2, bf16 3e-2 /\n"
                   "9e-2, or 3x PyTorch's own error at that precision if larger (for the gradient also 3x\n"
                   "its change under a 1e-5 input perturbation: max-pool near-ties, as the CPU oracle).\n"
                   "peak MiB: device memory high-water mark of the cell (weights and inputs included).\n");
        }
        print_header();
        bad += bench_model(&o, &rows[i], precs, nprec, i == 0); /* the first model only: the check's time is short */
        peer_next(&pp);
    }
    if (peer_finish(&pp, rows, nrows)) bad++;
    lp_fusion_stats fs;
    if (o.dev == LP_DEVICE_CUDA && lp_device_fusion_stats(o.dev, &fs) == LP_OK)
        printf("\ncuDNN fused conv + bias + act (shapes x activation, all models): %d fused, %d slower, "
               "%d refused, %d mismatched, %d off, %d untried; one call each: %.2f ms fused vs %.2f ms ours; "
               "%.2f s deciding, on first calls (budget LOUPE_CUDNN_FUSE_BUDGET_S=%s; LOUPE_CUDNN_FUSE=0: never)\n",
               fs.fused, fs.slower, fs.refused, fs.mismatched, fs.off, fs.untried, fs.ms_fused, fs.ms_ours,
               fs.s_deciding, getenv("LOUPE_CUDNN_FUSE_BUDGET_S"));
    printf("%s: %d failing cell%s; %.1f s in all\n", bad ? "FAIL" : "done", bad, bad == 1 ? "" : "s",
           now_s() - t_start);
    return bad ? 1 : 0;
}
