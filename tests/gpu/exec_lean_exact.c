/* exec_lean_exact.c — lean bf16 runs with packed activations and gradients, checked
 * exactly (part of test_exec_cuda). The models' weights, biases, inputs and seeds are
 * small integers (sparse -1 / 0 / 1), so bf16 rounds nothing: packed bf16, unpacked
 * bf16 (LOUPE_PACK=0) and the CPU must agree bit for bit, and a lost, doubled or
 * uncleared gradient contribution shows at once (random weights' bf16 noise would hide
 * it). The graphs put every kind of reader last at a branch point (a gradient's last
 * reader writes it first: Conv, Relu, Add(x, x), max pooling), leave inputs no window
 * reads (a first writer must still write them), mix grouped and asymmetrically padded
 * convolutions (the fp32 fallback), let pooling write unpacked values to Flatten and
 * Mul, run MobileNet's ReLU6 (fused and packed; its gradient stops at the cap) and
 * DenseNet's Concat -> BatchNormalization -> Relu (the Relu fused into the affine).
 * Each pass also takes a backward from an inner value, one stopping there, and guided
 * backprop's, each followed by the plain one again, which must repeat bit for bit; and CUDA fp32 keep-all runs with weight gradients against the CPU (a Conv's
 * first contribution overwrites in every precision). On the emulator every bf16 case
 * must be exact; on a GPU, where cuDNN might pick an algorithm that rounds, a case
 * counts only when unpacked bf16 equals the CPU there. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attrib/attrib_internal.h"
#include "exec_cuda_tests.h"
#include "internal.h"
#include "testutil.h"

static int on_emulator(void) { return strstr(lp_cuda_device_name(), "emulator") != NULL; }

/* Integers in [-1, 1], zero but for a fraction `frac`. */
static void fill_int(tu_rng *g, float *x, int64_t n, float frac) {
    tu_fill_uniform(g, x, n, 0.f, 1.f);
    for (int64_t i = 0; i < n; i++) x[i] = x[i] < frac / 2 ? -1.f : x[i] < frac ? 1.f : 0.f;
}

static lp_tensor *int_tensor(tu_rng *g, int nd, const int64_t *s, float frac) {
    lp_tensor *t;
    assert_int_equal(lp_tensor_new(&t, LP_DEVICE_CPU, LP_F32, nd, s), LP_OK);
    fill_int(g, t->data, lp_tensor_numel(t), frac);
    return t;
}

static tu_rng wg = {11};
static int op(lp_model *m, const char *type, const char *a, const char *b, const char *out) {
    const char *in[2] = {a, b}, *o[1] = {out};
    int i = lp_model_add_node(m, type, out, b ? 2 : 1, in, 1, o);
    assert_true(i >= 0);
    return i;
}

static void set_window(lp_node *n, int k, int s, const int64_t pads[4]) {
    const int64_t kk[2] = {k, k}, ss[2] = {s, s};
    lp_node_set_ints(n, "kernel_shape", 2, kk);
    lp_node_set_ints(n, "strides", 2, ss);
    lp_node_set_ints(n, "pads", 4, pads);
}

/* Conv `name` (k x c/group x kh x kh, stride, pads) with integer weights (nonzero for a
 * fraction `frac`) and bias. */
static void conv_frac(lp_model *m, const char *name, const char *x, int c, int k, int kh, int stride,
                      const int64_t pads[4], int group, int bias, float frac) {
    char wn[32], bn[32];
    snprintf(wn, sizeof wn, "w_%s", name);
    snprintf(bn, sizeof bn, "b_%s", name);
    const int64_t ws[4] = {k, c / group, kh, kh}, bs[1] = {k};
    assert_true(lp_model_add_initializer(m, wn, int_tensor(&wg, 4, ws, frac), 1) >= 0);
    if (bias) assert_true(lp_model_add_initializer(m, bn, int_tensor(&wg, 1, bs, 0.5f), 1) >= 0);
    const char *in[3] = {x, wn, bn}, *out[1] = {name};
    int i = lp_model_add_node(m, "Conv", name, bias ? 3 : 2, in, 1, out);
    assert_true(i >= 0);
    set_window(&m->nodes[i], kh, stride, pads);
    lp_node_set_int(&m->nodes[i], "group", group);
}

static void conv(lp_model *m, const char *name, const char *x, int c, int k, int kh, int stride, const int64_t pads[4],
                 int group, int bias) {
    conv_frac(m, name, x, c, k, kh, stride, pads, group, bias, 0.12f); /* sparse */
}

static const int64_t P0[4] = {0, 0, 0, 0}, P1[4] = {1, 1, 1, 1}, PA[4] = {0, 1, 2, 1};

static void pool(lp_model *m, const char *type, const char *x, const char *out, int k, int s, const int64_t pads[4],
                 int ceil, int count_pad) {
    lp_node *n = &m->nodes[op(m, type, x, NULL, out)];
    set_window(n, k, s, pads);
    if (ceil) lp_node_set_int(n, "ceil_mode", 1);
    if (count_pad) lp_node_set_int(n, "count_include_pad", 1);
}

static lp_model *begin(int c, int h, int w) {
    lp_model *m = lp_model_new();
    lp_shape in = {4, {1, c, h, w}};
    lp_model_add_input(m, "x", &in);
    return m;
}

static lp_model *finish(lp_model *m, const char *last) {
    op(m, "Flatten", last, NULL, "logits");
    lp_model_mark_output(m, "logits");
    assert_int_equal(lp_model_finalize(m), LP_OK);
    return m;
}

/* A: a Conv as r1's last reader (it writes r1's gradient first, the Add and Conv before
 * it add), a max pooling read before a Conv, a Relu as rb's last reader, average
 * pooling with ceil_mode and count_include_pad, a strided Conv that leaves rows unread. */
static lp_model *model_a(void) {
    lp_model *m = begin(3, 9, 11);
    conv(m, "c1", "x", 3, 8, 3, 1, P1, 1, 1);
    op(m, "Relu", "c1", NULL, "r1");
    conv(m, "c2", "r1", 8, 8, 3, 1, P1, 1, 1);
    op(m, "Add", "c2", "r1", "a");
    conv(m, "c3", "r1", 8, 8, 3, 1, P1, 1, 1);
    op(m, "Add", "a", "c3", "b");
    op(m, "Relu", "b", NULL, "rb");
    pool(m, "MaxPool", "rb", "mp", 3, 1, P1, 0, 0);
    conv(m, "c4", "rb", 8, 8, 3, 1, P1, 1, 0);
    op(m, "Add", "mp", "c4", "s");
    op(m, "Relu", "rb", NULL, "q");
    op(m, "Add", "s", "q", "t");
    pool(m, "AveragePool", "t", "av", 2, 2, P1, 1, 1);
    conv(m, "c5", "av", 8, 6, 3, 3, P0, 1, 1); /* 5x6 -> 1x2: rows 3 and 4 unread */
    return finish(m, "c5");
}

/* B: Add(r1, r1) as r1's only reader, a value read by two Relus and a Conv, an
 * Add+Relu, a 2x2 stride-3 max pooling (unread inputs), and a head of its own. */
static lp_model *model_b(const char *head) {
    lp_model *m = begin(3, 11, 11);
    conv(m, "c1", "x", 3, 8, 3, 1, P1, 1, 1);
    op(m, "Relu", "c1", NULL, "r1");
    op(m, "Add", "r1", "r1", "d");
    op(m, "Relu", "d", NULL, "q1");
    op(m, "Relu", "d", NULL, "q2");
    conv(m, "c2", "d", 8, 8, 3, 1, P1, 1, 1);
    op(m, "Add", "q1", "q2", "e");
    op(m, "Add", "e", "c2", "f");
    op(m, "Relu", "f", NULL, "g");
    pool(m, "MaxPool", "g", "mp", 2, 3, P0, 0, 0); /* 11x11 -> 4x4: row and column 10 unread */
    conv(m, "c3", "mp", 8, 6, 3, 1, P1, 1, 1);
    op(m, "Relu", "c3", NULL, "r3");
    if (!strcmp(head, "MaxPool")) pool(m, "MaxPool", "r3", "hp", 2, 2, P0, 1, 0);
    else op(m, head, "r3", NULL, "hp");
    return finish(m, "hp");
}

/* C: asymmetrically padded and grouped Convs at branch points, first and last readers
 * (the fp32 fallback's overwrite and accumulate), a depthwise Conv, a global average. */
static lp_model *model_c(void) {
    lp_model *m = begin(4, 8, 8);
    conv(m, "c1", "x", 4, 8, 3, 1, P1, 1, 1);
    op(m, "Relu", "c1", NULL, "r1");
    conv(m, "ca", "r1", 8, 8, 3, 1, PA, 1, 1);
    op(m, "Add", "r1", "ca", "a");
    conv(m, "gc", "r1", 8, 8, 3, 1, P1, 2, 1);
    op(m, "Add", "a", "gc", "b");
    op(m, "Relu", "b", NULL, "rb");
    op(m, "Relu", "rb", NULL, "qq");
    conv(m, "ca2", "rb", 8, 8, 3, 1, PA, 1, 1);
    op(m, "Add", "qq", "ca2", "t");
    conv(m, "dw", "t", 8, 8, 3, 1, P1, 8, 1);
    op(m, "Relu", "dw", NULL, "rd");
    op(m, "GlobalAveragePool", "rd", NULL, "gap");
    return finish(m, "gap");
}

/* D: the input read by two Convs; a max pooling reading packed and writing unpacked to
 * a Conv and to Mul(mp, mp). */
static lp_model *model_d(void) {
    lp_model *m = begin(3, 8, 8);
    conv(m, "c1", "x", 3, 8, 3, 1, P1, 1, 1);
    op(m, "Relu", "c1", NULL, "r1");
    conv(m, "c2", "x", 3, 8, 3, 1, P1, 1, 0);
    op(m, "Add", "r1", "c2", "s");
    pool(m, "MaxPool", "s", "mp", 2, 2, P0, 0, 0);
    conv(m, "c3", "mp", 8, 8, 3, 1, P1, 1, 1);
    op(m, "Relu", "c3", NULL, "r3");
    op(m, "Mul", "mp", "mp", "sq");
    op(m, "Add", "r3", "sq", "u");
    op(m, "GlobalAveragePool", "u", NULL, "gap");
    return finish(m, "gap");
}

/* Clip(x, lo, hi) as out: bounds as scalar initializer inputs (opset 11+), or as
 * attributes (as_attrs: opset < 11). */
static void clip(lp_model *m, const char *x, const char *out, float lo, float hi, int as_attrs) {
    if (as_attrs) {
        lp_node *n = &m->nodes[op(m, "Clip", x, NULL, out)];
        lp_node_set_float(n, "min", lo);
        lp_node_set_float(n, "max", hi);
        return;
    }
    char ln[32], hn[32];
    snprintf(ln, sizeof ln, "lo_%s", out);
    snprintf(hn, sizeof hn, "hi_%s", out);
    const int64_t one[1] = {1};
    lp_tensor *lt, *ht;
    assert_int_equal(lp_tensor_new(&lt, LP_DEVICE_CPU, LP_F32, 1, one), LP_OK);
    assert_int_equal(lp_tensor_new(&ht, LP_DEVICE_CPU, LP_F32, 1, one), LP_OK);
    ((float *)lt->data)[0] = lo, ((float *)ht->data)[0] = hi;
    assert_true(lp_model_add_initializer(m, ln, lt, 1) >= 0);
    assert_true(lp_model_add_initializer(m, hn, ht, 1) >= 0);
    const char *in[3] = {x, ln, hn}, *o[1] = {out};
    assert_true(lp_model_add_node(m, "Clip", out, 3, in, 1, o) >= 0);
}

/* E: MobileNet's blocks: ReLU6 (Clip(0, 6); denser weights, so that integer values sit
 * at 6 and at 0, where its gradient stops) after a Conv and a depthwise Conv (fused,
 * packed), a linear bottleneck and a residual Add, a Clip that is not a ReLU6 (clamp's
 * gradient, from its input: neither fused nor packed), and a ReLU6 with bounds as
 * attributes. */
static lp_model *model_e(void) {
    lp_model *m = begin(3, 8, 8);
    conv_frac(m, "c1", "x", 3, 8, 3, 1, P1, 1, 1, 0.6f);
    clip(m, "c1", "r1", 0.f, 6.f, 0);
    conv_frac(m, "dw", "r1", 8, 8, 3, 1, P1, 8, 1, 0.6f);
    clip(m, "dw", "r2", 0.f, 6.f, 1);
    conv(m, "c3", "r2", 8, 8, 1, 1, P0, 1, 1);
    op(m, "Add", "c3", "r1", "a");
    clip(m, "a", "q", 0.f, 2.f, 0);
    conv_frac(m, "c4", "q", 8, 6, 3, 1, P1, 1, 1, 0.6f);
    clip(m, "c4", "r4", 0.f, 6.f, 0);
    op(m, "GlobalAveragePool", "r4", NULL, "gap");
    return finish(m, "gap");
}

/* BatchNormalization of c channels with integer constants that keep values exact: var
 * 1 and epsilon 0 (so the folded scale is `scale` itself), scale in {-1, 1}, mean
 * and B in {-1, 0, 1}. */
static void batchnorm(lp_model *m, const char *x, const char *out, int c) {
    const char *names[4] = {"scale", "B", "mean", "var"};
    char nm[4][32];
    const char *in[5] = {x, nm[0], nm[1], nm[2], nm[3]}, *o[1] = {out};
    const int64_t cs[1] = {c};
    for (int k = 0; k < 4; k++) {
        snprintf(nm[k], sizeof nm[k], "%s_%s", names[k], out);
        lp_tensor *t = int_tensor(&wg, 1, cs, 0.6f);
        float *v = t->data;
        for (int i = 0; i < c; i++) v[i] = k == 3 ? 1.f : k == 0 ? (v[i] == 0.f ? 1.f : v[i]) : v[i];
        assert_true(lp_model_add_initializer(m, nm[k], t, 1) >= 0);
    }
    const int i = lp_model_add_node(m, "BatchNormalization", out, 5, in, 1, o);
    assert_true(i >= 0);
    lp_node_set_float(&m->nodes[i], "epsilon", 0.f);
}

/* F: DenseNet's blocks: Concat -> BatchNormalization -> Relu -> Conv, the Relu fused
 * into the BatchNormalization (not foldable into a Conv after a Concat), and a Conv's
 * output concatenated onto its block's input. */
static void concat(lp_model *m, const char *a, const char *b, const char *out) {
    const char *in[2] = {a, b}, *o[1] = {out};
    lp_node_set_int(&m->nodes[lp_model_add_node(m, "Concat", out, 2, in, 1, o)], "axis", 1);
}

static lp_model *model_f(void) {
    lp_model *m = begin(3, 8, 8); /* 8 x 8: the global average's 1/64 is exact */
    conv(m, "c1", "x", 3, 4, 3, 1, P1, 1, 1);
    conv(m, "c2", "x", 3, 4, 3, 1, P1, 1, 0);
    concat(m, "c1", "c2", "cat");
    batchnorm(m, "cat", "bn", 8);
    op(m, "Relu", "bn", NULL, "r");
    conv(m, "c3", "r", 8, 8, 1, 1, P0, 1, 1);
    op(m, "Relu", "c3", NULL, "r3");
    concat(m, "cat", "r3", "cat2");
    batchnorm(m, "cat2", "bn2", 16);
    op(m, "Relu", "bn2", NULL, "r2");
    conv(m, "c4", "r2", 16, 6, 3, 1, P1, 1, 1);
    op(m, "Relu", "c4", NULL, "r4");
    op(m, "GlobalAveragePool", "r4", NULL, "gap");
    return finish(m, "gap");
}

static lp_tensor *host(const lp_tensor *t) {
    lp_tensor *h;
    assert_non_null(t);
    assert_int_equal(lp_tensor_clone(&h, t, LP_DEVICE_CPU), LP_OK);
    return h;
}

static lp_run *run_of(lp_model *m, lp_device dev, lp_precision p, int lean, int graphs) {
    lp_run *r;
    assert_int_equal(lp_run_new(m, dev, &r), LP_OK);
    if (dev == LP_DEVICE_CUDA) {
        assert_int_equal(lp_run_set_precision(r, p), LP_OK);
        _lp_run_set_graphs(r, graphs);
    }
    if (lean) assert_int_equal(lp_run_set_lean(r, 1), LP_OK);
    return r;
}

/* Forward (unpacked: planned with LOUPE_PACK=0), backward, the gradient of `at`. */
static lp_tensor *grad_of(lp_run *r, const lp_tensor *x, const lp_backward_opts *bo, int unpacked, const char *at) {
    if (unpacked) setenv("LOUPE_PACK", "0", 1);
    lp_status s = lp_run_forward(r, x);
    unsetenv("LOUPE_PACK");
    assert_int_equal(s, LP_OK);
    assert_int_equal(lp_run_backward(r, bo), LP_OK);
    return host(lp_run_grad(r, at));
}

static double rel(const lp_tensor *a, const lp_tensor *b) { return tu_rel_l2(a->data, b->data, lp_tensor_numel(a)); }

static void same_bits(const char *what, const lp_tensor *a, const lp_tensor *b) {
    if (a->nbytes != b->nbytes || memcmp(a->data, b->data, a->nbytes))
        fail_msg("%s: not repeated bit for bit (relative L2 %.3g)", what, rel(a, b));
}

static int n_exact, n_inexact;

/* Packed bf16 against the CPU, exactly, where unpacked bf16 is exact (always on the
 * emulator). */
static void exact(const char *what, const lp_tensor *pk, const lp_tensor *un, const lp_tensor *cpu) {
    const double eu = rel(un, cpu), ep = rel(pk, cpu);
    if (eu != 0 && !on_emulator()) {
        fprintf(stderr, "  %s: unpacked bf16 is %.2e off the CPU here (cuDNN rounded): not counted\n", what, eu);
        n_inexact++;
        return;
    }
    if (eu != 0) fail_msg("%s: unpacked bf16 differs from the CPU (%.3g): the model is not exact in bf16", what, eu);
    if (ep != 0) fail_msg("%s: packed bf16 differs from the CPU (relative L2 %.3g) where unpacked is exact", what, ep);
    n_exact++;
}

static void close_cpu(const char *what, const lp_tensor *got, const lp_tensor *cpu, double tol) {
    const double e = rel(got, cpu);
    if (!(e <= tol)) fail_msg("%s: relative L2 %.3g against the CPU > %.0e", what, e, tol);
}

/* Four passes (batches 3 3 2 3) of model m, graphs on or off; `inner`: a 4-D value to
 * start and stop backwards at. */
static void run_model(const char *name, lp_model *m, const char *inner, int graphs) {
    tu_rng g = {3};
    lp_run *cpu = run_of(m, LP_DEVICE_CPU, LP_PREC_FP32, 0, 0), *cpul = run_of(m, LP_DEVICE_CPU, LP_PREC_FP32, 1, 0);
    lp_run *f32 = run_of(m, LP_DEVICE_CUDA, LP_PREC_FP32, 0, graphs);
    lp_run *f32l = run_of(m, LP_DEVICE_CUDA, LP_PREC_FP32, 1, graphs);
    lp_run *pk = run_of(m, LP_DEVICE_CUDA, LP_PREC_BF16, 1, graphs), *un = run_of(m, LP_DEVICE_CUDA, LP_PREC_BF16, 1, 0);
    const lp_shape *is = &m->values[m->inputs[0]].shape;
    char what[160];
    for (int p = 0; p < 4; p++) {
        const int64_t xs[4] = {p == 2 ? 2 : 3, is->d[1], is->d[2], is->d[3]};
        lp_tensor *x = int_tensor(&g, 4, xs, 0.7f);
        assert_int_equal(lp_run_forward(cpu, x), LP_OK);
        const lp_shape os = lp_tensor_shape(lp_run_output(cpu));
        lp_tensor *seed = int_tensor(&g, os.ndim, os.d, 0.7f);
        assert_non_null(lp_run_value(cpu, inner));
        const lp_shape vs = lp_tensor_shape(lp_run_value(cpu, inner));
        if (!strcmp(name, "E")) { /* ReLU6's inputs at 6 itself, and beyond: where its gradient stops */
            const lp_tensor *c1 = lp_run_value(cpu, "c1");
            int64_t at = 0, over = 0;
            for (int64_t i = 0; i < lp_tensor_numel(c1); i++) {
                at += ((const float *)c1->data)[i] == 6.f;
                over += ((const float *)c1->data)[i] > 6.f;
            }
            assert_true(at > 0 && over > 0);
        }
        lp_backward_opts bo = {.seed = seed}, bw = {.seed = seed, .weight_grads = 1};
        /* keep-all with weight gradients: CUDA fp32 against the CPU */
        lp_tensor *gc = grad_of(cpu, x, &bw, 0, "x"), *gf = grad_of(f32, x, &bw, 0, "x");
        snprintf(what, sizeof what, "%s pass %d: fp32 keep-all input gradient", name, p);
        close_cpu(what, gf, gc, 1e-5);
        for (int v = 0; v < m->n_values; v++) {
            if (!m->values[v].init || m->values[v].dtype != LP_F32) continue;
            lp_tensor *w = host(lp_run_grad(f32, m->values[v].name));
            snprintf(what, sizeof what, "%s pass %d: fp32 gradient of %s", name, p, m->values[v].name);
            close_cpu(what, w, lp_run_grad(cpu, m->values[v].name), 1e-5);
            lp_tensor_free(w);
        }
        lp_tensor *gcl = grad_of(cpul, x, &bo, 0, "x"), *gfl = grad_of(f32l, x, &bo, 0, "x");
        snprintf(what, sizeof what, "%s pass %d: CPU lean", name, p);
        close_cpu(what, gcl, gc, 1e-6);
        snprintf(what, sizeof what, "%s pass %d: fp32 lean", name, p);
        close_cpu(what, gfl, gc, 1e-5);
        /* bf16 lean, packed and not */
        lp_tensor *gp = grad_of(pk, x, &bo, 0, "x"), *gu = grad_of(un, x, &bo, 1, "x");
        snprintf(what, sizeof what, "%s pass %d: input gradient", name, p);
        exact(what, gp, gu, gcl);
        /* from the inner value, twice, and the plain one again between */
        lp_tensor *iseed = int_tensor(&g, vs.ndim, vs.d, 0.7f);
        lp_backward_opts io = {.of = inner, .seed = iseed}, so = {.seed = seed, .stop_at = inner};
        assert_int_equal(lp_run_backward(pk, &io), LP_OK);
        lp_tensor *gi = host(lp_run_grad(pk, "x"));
        assert_int_equal(lp_run_backward(pk, &bo), LP_OK);
        lp_tensor *again = host(lp_run_grad(pk, "x"));
        snprintf(what, sizeof what, "%s pass %d: plain after from '%s'", name, p, inner);
        same_bits(what, gp, again);
        lp_tensor *ic = grad_of(cpul, x, &io, 0, "x"), *iu = grad_of(un, x, &io, 1, "x");
        snprintf(what, sizeof what, "%s pass %d: from '%s'", name, p, inner);
        exact(what, gi, iu, ic);
        /* stopping at it, then plain again */
        assert_int_equal(lp_run_backward(pk, &so), LP_OK);
        assert_int_equal(lp_run_backward(pk, &bo), LP_OK);
        lp_tensor *a3 = host(lp_run_grad(pk, "x"));
        snprintf(what, sizeof what, "%s pass %d: plain after a stop at '%s'", name, p, inner);
        same_bits(what, gp, a3);
        /* guided backprop's rule (on packed Relus), then plain again */
        lp_rules rules;
        assert_int_equal(_lp_guided_rules(&rules, 0), LP_OK);
        lp_backward_opts go = {.seed = seed, .rules = &rules};
        assert_int_equal(lp_run_backward(pk, &go), LP_OK);
        lp_tensor *gg = host(lp_run_grad(pk, "x"));
        assert_int_equal(lp_run_backward(pk, &bo), LP_OK);
        lp_tensor *a4 = host(lp_run_grad(pk, "x"));
        snprintf(what, sizeof what, "%s pass %d: plain after guided backprop", name, p);
        same_bits(what, gp, a4);
        lp_tensor *ggc = grad_of(cpul, x, &go, 0, "x"), *ggu = grad_of(un, x, &go, 1, "x");
        snprintf(what, sizeof what, "%s pass %d: guided backprop", name, p);
        exact(what, gg, ggu, ggc);
        _lp_rules_free(&rules);
        lp_tensor *all[] = {x, seed, gc, gf, gcl, gfl, gp, gu, iseed, gi, again, ic, iu, a3, gg, a4, ggc, ggu};
        for (size_t k = 0; k < sizeof all / sizeof *all; k++) lp_tensor_free(all[k]);
    }
    lp_run_speed sp;
    lp_run_speed_info(pk, &sp);
    fprintf(stderr, "  %s (graphs %s): %d values and %d gradients packed, %d in an Add's gradient buffer, %lld passes "
            "replayed\n", name, graphs ? "on" : "off", sp.packed, sp.packed_grads, sp.shared_grads,
            (long long)sp.graph_replays);
    assert_true(sp.packed > 0 && sp.packed_grads > 0);
    if (!strcmp(name, "A")) assert_int_equal(sp.shared_grads, 4); /* c2, a, mp, s: their Add is their last reader */
    if (!strcmp(name, "E")) assert_int_equal(sp.fused, 3);        /* r1, r2, r4: ReLU6 in its Conv */
    if (!strcmp(name, "F")) assert_int_equal(sp.fused, 4);        /* r, r2 in their BatchNormalization; r3, r4 */
    lp_run *runs[] = {cpu, cpul, f32, f32l, pk, un};
    for (size_t k = 0; k < sizeof runs / sizeof *runs; k++) lp_run_free(runs[k]);
}

void test_lean_exact(void **state) {
    (void)state;
    n_exact = n_inexact = 0;
    /* every model with graphs (captured and replayed passes), A and B eagerly too */
    for (int graphs = 1; graphs >= 0; graphs--) {
        lp_model *m = model_a();
        run_model("A", m, "rb", graphs);
        lp_model_free(m);
        static const char *const heads[3][2] = {{"GlobalAveragePool", "d"}, {"MaxPool", "g"}, {"GlobalMaxPool", "f"}};
        for (int h = 0; h < (graphs ? 3 : 1); h++) {
            char name[48];
            snprintf(name, sizeof name, "B with %s", heads[h][0]);
            m = model_b(heads[h][0]);
            run_model(name, m, heads[h][1], graphs);
            lp_model_free(m);
        }
        if (!graphs) break;
        m = model_c();
        run_model("C from rb", m, "rb", graphs);
        run_model("C from c1 (a fused pre-activation)", m, "c1", graphs);
        lp_model_free(m);
        m = model_d();
        run_model("D", m, "s", graphs);
        lp_model_free(m);
        m = model_e();
        run_model("E", m, "a", graphs);
        lp_model_free(m);
        m = model_f();
        run_model("F", m, "cat", graphs);
        lp_model_free(m);
    }
    fprintf(stderr, "  %d bf16 comparisons exact%s, %d not counted\n", n_exact, on_emulator() ? " (emulator)" : "",
            n_inexact);
    assert_true(n_exact > 0);
}

/* Lean runs stopping at a layer (Grad-CAM's): three kinds of backward, each twice,
 * exact at the layer; a precision round trip; and plain lean and back. */
void test_lean_exact_stop(void **state) {
    (void)state;
    lp_model *m = model_c();
    tu_rng g = {9};
    for (int graphs = 1; graphs >= 0; graphs--) {
        lp_run *cpu = run_of(m, LP_DEVICE_CPU, LP_PREC_FP32, 0, 0), *pk = run_of(m, LP_DEVICE_CUDA, LP_PREC_BF16, 0, graphs);
        assert_int_equal(lp_run_set_lean_at(pk, "rb"), LP_OK);
        for (int p = 0; p < 3; p++) {
            const int64_t xs[4] = {p == 1 ? 2 : 3, 4, 8, 8}, ls[2] = {xs[0], 8}, ts[4] = {xs[0], 8, 8, 8};
            lp_tensor *x = int_tensor(&g, 4, xs, 0.7f), *seed = int_tensor(&g, 2, ls, 0.7f);
            lp_tensor *tseed = int_tensor(&g, 4, ts, 0.7f);
            const lp_backward_opts kinds[3] = {{.seed = seed, .stop_at = "rb"},
                                               {.of = "t", .seed = tseed, .stop_at = "rb"},
                                               {.of = "dw", .seed = tseed, .stop_at = "rb"}};
            lp_tensor *ref[3], *first[3];
            assert_int_equal(lp_run_forward(cpu, x), LP_OK);
            for (int k = 0; k < 3; k++) {
                assert_int_equal(lp_run_backward(cpu, &kinds[k]), LP_OK);
                ref[k] = host(lp_run_grad(cpu, "rb"));
            }
            assert_int_equal(lp_run_forward(pk, x), LP_OK);
            for (int rep = 0; rep < 2; rep++)
                for (int k = 0; k < 3; k++) {
                    assert_int_equal(lp_run_backward(pk, &kinds[k]), LP_OK);
                    lp_tensor *h = host(lp_run_grad(pk, "rb"));
                    if (on_emulator() && rel(h, ref[k]) != 0)
                        fail_msg("stop at rb, pass %d, kind %d: %.3g off the CPU", p, k, rel(h, ref[k]));
                    if (!rep) first[k] = h;
                    else same_bits("stop at rb, again", h, first[k]), lp_tensor_free(h), lp_tensor_free(first[k]);
                }
            /* fp32, then bf16 again, then plain lean and back to the stop */
            assert_int_equal(lp_run_set_precision(pk, LP_PREC_FP32), LP_OK);
            lp_tensor *f = grad_of(pk, x, &kinds[0], 0, "rb");
            close_cpu("stop at rb in fp32", f, ref[0], 1e-5);
            assert_int_equal(lp_run_set_precision(pk, LP_PREC_BF16), LP_OK);
            lp_tensor *b = grad_of(pk, x, &kinds[0], 0, "rb");
            if (on_emulator() && rel(b, ref[0]) != 0) fail_msg("stop at rb, bf16 again: %.3g", rel(b, ref[0]));
            assert_int_equal(lp_run_set_lean(pk, 1), LP_OK);
            lp_backward_opts plain = {.seed = seed};
            lp_tensor *gx = grad_of(pk, x, &plain, 0, "x"), *cx = grad_of(cpu, x, &plain, 0, "x");
            if (on_emulator() && rel(gx, cx) != 0) fail_msg("plain lean after the stop: %.3g", rel(gx, cx));
            assert_int_equal(lp_run_set_lean_at(pk, "rb"), LP_OK);
            lp_tensor *all[] = {x, seed, tseed, ref[0], ref[1], ref[2], f, b, gx, cx};
            for (size_t k = 0; k < sizeof all / sizeof *all; k++) lp_tensor_free(all[k]);
        }
        lp_run_free(cpu), lp_run_free(pk);
    }
    lp_model_free(m);
}

/* Rules on Adds: on Add(r1, r1) (model B; a node whose inputs are one value: its
 * packed gradient gets one fp32 copy, so both contributions land), and on Adds whose
 * input's gradient shares the Add's gradient buffer in a lean plan (model A: the rule
 * reads a copy of dout and adds into a cleared din). Lean bf16 packed and unpacked
 * and lean CPU against the keep-all CPU. */
static lp_status add_rule(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                          lp_tensor *const *dout, lp_tensor *const *din) {
    return lp_op_find("Add")->backward(c, n, in, out, dout, din);
}

static void rule_case(const char *what, lp_model *m) {
    tu_rng g = {4};
    lp_run *cpu = run_of(m, LP_DEVICE_CPU, LP_PREC_FP32, 0, 0), *cpul = run_of(m, LP_DEVICE_CPU, LP_PREC_FP32, 1, 0);
    lp_run *pk = run_of(m, LP_DEVICE_CUDA, LP_PREC_BF16, 1, 0), *un = run_of(m, LP_DEVICE_CUDA, LP_PREC_BF16, 1, 0);
    const lp_shape *is = &m->values[m->inputs[0]].shape;
    const int64_t xs[4] = {2, is->d[1], is->d[2], is->d[3]};
    lp_tensor *x = int_tensor(&g, 4, xs, 0.7f);
    assert_int_equal(lp_run_forward(cpu, x), LP_OK);
    const lp_shape os = lp_tensor_shape(lp_run_output(cpu));
    lp_tensor *seed = int_tensor(&g, os.ndim, os.d, 0.7f);
    lp_rules rules;
    assert_int_equal(_lp_rules_new(&rules, NULL), LP_OK);
    _lp_rules_set(&rules, "Add", add_rule);
    rules.plain_reads = 1;
    lp_backward_opts o = {.seed = seed, .rules = &rules};
    lp_tensor *a = grad_of(cpu, x, &o, 0, "x"), *b = grad_of(pk, x, &o, 0, "x"), *u = grad_of(un, x, &o, 1, "x");
    lp_tensor *l = grad_of(cpul, x, &o, 0, "x");
    exact(what, b, u, a);
    if (rel(l, a) != 0) fail_msg("%s: the lean CPU run differs from keep-all (%.3g)", what, rel(l, a));
    _lp_rules_free(&rules);
    lp_tensor *all[] = {x, seed, a, b, u, l};
    for (size_t k = 0; k < sizeof all / sizeof *all; k++) lp_tensor_free(all[k]);
    lp_run_free(cpu), lp_run_free(cpul), lp_run_free(pk), lp_run_free(un);
    lp_model_free(m);
}

void test_lean_exact_rule_twice(void **state) {
    (void)state;
    n_exact = 0;
    rule_case("a rule on Add(r1, r1)", model_b("GlobalAveragePool"));
    rule_case("a rule on Adds sharing gradient buffers", model_a());
}
