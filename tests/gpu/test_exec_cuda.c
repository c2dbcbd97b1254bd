/* test_exec_cuda.c — the executor's CUDA speed paths against the CPU on the bundled
 * model (Conv, Relu, MaxPool, Flatten, Gemm) and a small residual one:
 *  - CUDA graphs: repeated forward + input-gradient passes are captured once their key
 *    repeats and replayed after (both, from a run's fourth pass); every pass's logits
 *    and input gradient must
 *    equal a CUDA run without graphs on the same input (1e-6), and match the CPU. A new batch size, and new weights, must fall back to eager passes and still
 *    be right.
 *  - Backward passes stopping at a layer beside whole ones on one graphed run, and a
 *    lean run planned for the stop: right gradients, no replay serving the other kind.
 *  - BatchNormalization's weight gradients on the device: replayed, and as the CPU's.
 *  - Conv+Relu fusion in forward-only runs: same logits as the CPU.
 *  - Packed activations (bf16 NHWC between convolutions) in forward-only bf16 runs,
 *    through a residual block, a grouped and an asymmetrically padded convolution:
 *    which values are packed, and the logits against unpacked bf16 and the CPU.
 *  - The same in lean bf16 runs, their gradients packed too: input gradients (plain,
 *    guided backprop's and deconvnet's rules, graphed, from a packed value, stopping
 *    at a layer) against unpacked bf16 and the CPU, and several backwards from one
 *    forward; and, bit for bit, on integer-valued models (exec_lean_exact.c).
 *  - Test builds on the emulator: a cached device block handed out again holds NaN
 *    bytes, not what its last user left (so an op reading a buffer it was just given
 *    before writing it fails on later passes too, not only the first).
 * Prints "SKIPPED: ..." (CTest's skip pattern) without a CUDA device. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attrib/attrib_internal.h"
#include "exec_cuda_tests.h"
#include "internal.h"
#include "testutil.h"

static const char *model_path;

static lp_tensor *host_rand(tu_rng *g, int64_t n) {
    int64_t s[4] = {n, 1, 28, 28};
    lp_tensor *t;
    assert_int_equal(lp_tensor_new(&t, LP_DEVICE_CPU, LP_F32, 4, s), LP_OK);
    tu_fill_uniform(g, t->data, lp_tensor_numel(t), 0.f, 1.f);
    return t;
}

static lp_tensor *to_host(const lp_tensor *t) {
    lp_tensor *h;
    assert_non_null(t);
    assert_int_equal(lp_tensor_clone(&h, t, LP_DEVICE_CPU), LP_OK);
    return h;
}

/* Forward and input gradient of the top logit (seed: ones on the output) on run r. */
static void pass(lp_run *r, const lp_tensor *x, lp_tensor **y, lp_tensor **dx) {
    assert_int_equal(lp_run_forward(r, x), LP_OK);
    *y = to_host(lp_run_output(r));
    lp_backward_opts bo = {0};
    assert_int_equal(lp_run_backward(r, &bo), LP_OK);
    *dx = to_host(lp_run_grad(r, "input"));
}

/* Graph replay against eager CUDA: the same kernels on the same data. Not bit for bit,
 * since cuDNN may pick a backward-data algorithm that accumulates with atomics; a
 * replay that read a stale input or weight would be off by far more. */
static void same_pass(const char *what, int p, const lp_tensor *a, const lp_tensor *b) {
    assert_int_equal(a->nbytes, b->nbytes);
    double e = tu_rel_l2(a->data, b->data, lp_tensor_numel(a));
    if (!(e <= 1e-6)) {
        tu_report_mismatch(what, a->data, b->data, lp_tensor_numel(a), 0, 0, 5);
        fail_msg("pass %d: %s differs between the graph replay and eager CUDA (relative L2 %.3g)", p, what, e);
    }
}

static int64_t replays(const lp_run *r) {
    lp_run_speed sp;
    lp_run_speed_info(r, &sp);
    return sp.graph_replays;
}

static void close_to(const char *what, int p, const lp_tensor *a, const lp_tensor *b, double tol) {
    double e = tu_rel_l2(a->data, b->data, lp_tensor_numel(a));
    if (!(e <= tol)) fail_msg("pass %d: %s CUDA vs CPU relative L2 %.3g > %.1g", p, what, e, tol);
}

static void test_graphs(void **state) {
    (void)state;
    lp_model *m;
    assert_int_equal(lp_model_load(model_path, &m), LP_OK);
    lp_run *cpu, *eager, *graphed, *lean;
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &cpu), LP_OK);
    assert_int_equal(lp_run_new(m, LP_DEVICE_CUDA, &eager), LP_OK);
    assert_int_equal(lp_run_new(m, LP_DEVICE_CUDA, &graphed), LP_OK);
    assert_int_equal(lp_run_new(m, LP_DEVICE_CUDA, &lean), LP_OK); /* arena-planned, fused: graphed alike */
    _lp_run_set_graphs(eager, 0);
    _lp_run_set_graphs(graphed, 1);
    _lp_run_set_graphs(lean, 1);
    assert_int_equal(lp_run_set_lean(lean, 1), LP_OK);
    tu_rng g = {2026};
    /* batch per pass: a new size (3) and back (8) each start over; pass 10 has new
     * weights. A key settles within two passes (a scratch slot may grow in the first
     * backward), so from the fourth pass of a run both passes must be replays. */
    const int64_t batch[] = {8, 8, 8, 8, 3, 3, 3, 3, 8, 8, 8, 8, 8, 8};
    const int np = (int)(sizeof batch / sizeof *batch), new_weights = 10;
    int run_len = 0;
    for (int p = 0; p < np; p++) {
        if (p == new_weights) { /* the trainer's way: host copy, then the generation */
            lp_tensor *w = m->values[lp_model_find_value(m, "conv1.weight")].init;
            assert_non_null(w);
            for (int64_t i = 0; i < lp_tensor_numel(w); i++) ((float *)w->data)[i] *= 0.5f;
            m->weights_gen++;
        }
        run_len = p > 0 && batch[p] == batch[p - 1] && p != new_weights ? run_len + 1 : 0;
        const int64_t before = replays(graphed), lean_before = replays(lean);
        lp_tensor *x = host_rand(&g, batch[p]);
        lp_tensor *yc, *dxc, *ye, *dxe, *yg, *dxg, *yl, *dxl;
        pass(cpu, x, &yc, &dxc);
        pass(eager, x, &ye, &dxe);
        pass(graphed, x, &yg, &dxg);
        pass(lean, x, &yl, &dxl);
        close_to("lean run's logits", p, yl, yc, 1e-5);
        close_to("lean run's input gradient", p, dxl, dxc, 1e-5);
        const int64_t lean_replayed = replays(lean) - lean_before;
        if (run_len >= 3 && lean_replayed != 2)
            fail_msg("pass %d: %lld of the lean run's 2 passes came from a graph", p, (long long)lean_replayed);
        if (run_len == 0 && lean_replayed != 0) fail_msg("pass %d: the lean run replayed a stale graph", p);
        lp_tensor_free(yl), lp_tensor_free(dxl);
        same_pass("logits", p, yg, ye);
        same_pass("input gradient", p, dxg, dxe);
        close_to("logits", p, yg, yc, 1e-5);
        close_to("input gradient", p, dxg, dxc, 1e-5);
        const int64_t replayed = replays(graphed) - before;
        if (run_len >= 3 && replayed != 2)
            fail_msg("pass %d (batch %lld, the %d-th alike): %lld of its 2 passes came from a graph", p,
                     (long long)batch[p], run_len + 1, (long long)replayed);
        if (run_len == 0 && replayed != 0) fail_msg("pass %d: replayed a graph after its key changed", p);
        lp_tensor_free(x), lp_tensor_free(yc), lp_tensor_free(dxc), lp_tensor_free(ye), lp_tensor_free(dxe);
        lp_tensor_free(yg), lp_tensor_free(dxg);
    }
    fprintf(stderr, "  %d passes, %lld replayed from CUDA graphs\n", np, (long long)replays(graphed));
    assert_int_equal(replays(eager), 0);
    lp_run_free(cpu);
    lp_run_free(eager);
    lp_run_free(graphed);
    lp_run_free(lean);
    lp_model_free(m);
}

/* Backward passes that stop at a layer (Grad-CAM's) beside whole ones on a graphed
 * run: each kind keeps its own graph key, so a replay never serves the other kind
 * (a stop replaying the whole pass would leave an input gradient; the whole one
 * replaying the stop, none). A lean run planned for the stop replays both its passes
 * from its fourth pass and matches the CPU. */
static void test_stop_graphs(void **state) {
    (void)state;
    lp_model *m;
    assert_int_equal(lp_model_load(model_path, &m), LP_OK);
    const char *layer = lp_model_layer_value(m, "relu2");
    assert_non_null(layer);
    lp_run *cpu, *graphed, *at;
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &cpu), LP_OK);
    assert_int_equal(lp_run_new(m, LP_DEVICE_CUDA, &graphed), LP_OK);
    assert_int_equal(lp_run_new(m, LP_DEVICE_CUDA, &at), LP_OK);
    _lp_run_set_graphs(graphed, 1);
    _lp_run_set_graphs(at, 1);
    assert_int_equal(lp_run_capture(cpu, layer), LP_OK);
    assert_int_equal(lp_run_capture(graphed, layer), LP_OK);
    assert_int_equal(lp_run_set_lean_at(at, layer), LP_OK);
    tu_rng g = {77};
    lp_tensor *x = host_rand(&g, 6);
    const int stops[] = {0, 0, 0, 0, 1, 1, 1, 1, 0, 1, 0, 1};
    const int np = (int)(sizeof stops / sizeof *stops);
    for (int p = 0; p < np; p++) {
        lp_backward_opts bo = {.stop_at = stops[p] ? layer : NULL};
        lp_run *runs[3] = {cpu, graphed, at};
        lp_tensor *gl[3] = {NULL, NULL, NULL};
        for (int i = 0; i < 3; i++) {
            if (i == 2 && !stops[p]) continue;
            assert_int_equal(lp_run_forward(runs[i], x), LP_OK);
            assert_int_equal(lp_run_backward(runs[i], &bo), LP_OK);
            gl[i] = to_host(lp_run_grad(runs[i], layer));
            const lp_tensor *gx = lp_run_grad(runs[i], "input");
            if (stops[p] && gx) fail_msg("pass %d: run %d has an input gradient after a backward stopping at %s", p, i, layer);
            if (!stops[p] && !gx) fail_msg("pass %d: run %d has no input gradient after a whole backward", p, i);
            if (i && !stops[p]) {
                lp_tensor *a = to_host(lp_run_grad(cpu, "input")), *b = to_host(gx);
                close_to("input gradient", p, b, a, 1e-5);
                lp_tensor_free(a), lp_tensor_free(b);
            }
        }
        close_to("layer gradient", p, gl[1], gl[0], 1e-5);
        if (gl[2]) close_to("stop-at run's layer gradient", p, gl[2], gl[0], 1e-5);
        for (int i = 0; i < 3; i++) lp_tensor_free(gl[i]);
    }
    /* The stop-at run's 6 passes are alike: the first eager, the second captured (or
     * eager again where a scratch slot grew), the rest replays: at least 3 x 2. */
    fprintf(stderr, "  stop-at run: %lld of 12 passes replayed; keep-all run: %lld of %d\n", (long long)replays(at),
            (long long)replays(graphed), 2 * np);
    assert_true(replays(at) >= 6);
    assert_true(replays(graphed) > 0);
    /* Weight gradients (any non-zero weight_grads: here the value that, packed into the
     * graph key unnormalised, once equalled a stop at the input) after graphed passes
     * that stop at the input: a pass of another kind, never a replay of those. */
    lp_backward_opts at_input = {.stop_at = "input"}, wg = {.weight_grads = (lp_model_find_value(m, "input") + 1) * 2};
    for (int p = 0; p < 3; p++) {
        assert_int_equal(lp_run_forward(graphed, x), LP_OK);
        assert_int_equal(lp_run_backward(graphed, &at_input), LP_OK);
    }
    assert_int_equal(lp_run_forward(graphed, x), LP_OK);
    assert_int_equal(lp_run_backward(graphed, &wg), LP_OK);
    assert_non_null(lp_run_grad(graphed, "conv1.weight"));
    lp_tensor_free(x);
    lp_run_free(cpu);
    lp_run_free(graphed);
    lp_run_free(at);
    lp_model_free(m);
}

/* BatchNormalization's weight gradients (all four statistics) from its derived
 * constants, on the device alone: a graphed run replays the weight-gradient pass and
 * matches the CPU. */
static void test_bn_weight_grads(void **state) {
    (void)state;
    enum { BC = 5 };
    tu_rng g = {31};
    lp_model *m = lp_model_new();
    lp_shape in = {4, {1, BC, 6, 7}};
    lp_model_add_input(m, "x", &in);
    const char *names[4] = {"scale", "B", "mean", "var"};
    for (int i = 0; i < 4; i++) {
        int64_t cs[1] = {BC};
        lp_tensor *t;
        assert_int_equal(lp_tensor_new(&t, LP_DEVICE_CPU, LP_F32, 1, cs), LP_OK);
        tu_fill_uniform(&g, t->data, BC, i == 3 ? 0.5f : -1.f, 1.5f);
        assert_true(lp_model_add_initializer(m, names[i], t, 1) >= 0);
    }
    const char *bi[] = {"x", "scale", "B", "mean", "var"}, *bo[] = {"y"};
    lp_model_add_node(m, "BatchNormalization", "bn", 5, bi, 1, bo);
    lp_model_mark_output(m, "y");
    assert_int_equal(lp_model_finalize(m), LP_OK);
    lp_run *cpu, *gpu;
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &cpu), LP_OK);
    assert_int_equal(lp_run_new(m, LP_DEVICE_CUDA, &gpu), LP_OK);
    _lp_run_set_graphs(gpu, 1);
    int64_t xs[4] = {4, BC, 6, 7};
    lp_tensor *x;
    assert_int_equal(lp_tensor_new(&x, LP_DEVICE_CPU, LP_F32, 4, xs), LP_OK);
    tu_fill_uniform(&g, x->data, lp_tensor_numel(x), -2.f, 2.f);
    lp_backward_opts wg = {.weight_grads = 1};
    for (int p = 0; p < 4; p++) {
        assert_int_equal(lp_run_forward(cpu, x), LP_OK);
        assert_int_equal(lp_run_backward(cpu, &wg), LP_OK);
        assert_int_equal(lp_run_forward(gpu, x), LP_OK);
        assert_int_equal(lp_run_backward(gpu, &wg), LP_OK);
        for (int i = 0; i < 5; i++) {
            const char *v = i ? names[i - 1] : "x";
            lp_tensor *a = to_host(lp_run_grad(cpu, v)), *b = to_host(lp_run_grad(gpu, v));
            close_to(v, p, b, a, 1e-5);
            lp_tensor_free(a), lp_tensor_free(b);
        }
    }
    fprintf(stderr, "  BatchNormalization weight gradients: %lld of 8 passes replayed\n", (long long)replays(gpu));
    /* Passes 3 and 4, forward and backward: a host round trip in the backward (the old
     * way) would refuse its capture and leave 2. */
    assert_true(replays(gpu) >= 4);
    lp_tensor_free(x);
    lp_run_free(cpu);
    lp_run_free(gpu);
    lp_model_free(m);
}

static void test_fusion(void **state) {
    (void)state;
    lp_model *m;
    assert_int_equal(lp_model_load(model_path, &m), LP_OK);
    lp_run *cpu, *gpu;
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &cpu), LP_OK);
    assert_int_equal(lp_run_new(m, LP_DEVICE_CUDA, &gpu), LP_OK);
    assert_int_equal(lp_run_set_forward_only(gpu, 1), LP_OK);
    lp_run_speed sp;
    lp_run_speed_info(gpu, &sp);
    assert_int_equal(sp.fused, 2); /* conv1+relu1, conv2+relu2 */
    tu_rng g = {7};
    for (int p = 0; p < 5; p++) {
        const int64_t before = replays(gpu);
        lp_tensor *x = host_rand(&g, 16);
        assert_int_equal(lp_run_forward(cpu, x), LP_OK);
        assert_int_equal(lp_run_forward(gpu, x), LP_OK);
        lp_tensor *y = to_host(lp_run_output(gpu));
        close_to("forward-only fused logits", p, y, lp_run_output(cpu), 1e-5);
        assert_true(lp_model_find_value(m, "conv1") >= 0);
        assert_null(lp_run_value(gpu, "conv1")); /* the pre-activation: never stored */
        /* Its activations sit in a planned arena, so the pass is a graph from the third on. */
        if (p >= 2 && replays(gpu) - before != 1) fail_msg("forward-only pass %d did not replay its graph", p);
        lp_tensor_free(y);
        lp_tensor_free(x);
    }
    lp_run_free(cpu);
    lp_run_free(gpu);
    lp_model_free(m);
}

/* A Conv node w_<name> (k x c/group x 3 x 3), with b_<name> when bias; random weights. */
static void add_conv(lp_model *m, tu_rng *g, const char *name, const char *x, int c, int k, int group,
                     const int64_t pads[4], int bias) {
    char wn[32], bn[32];
    snprintf(wn, sizeof wn, "w_%s", name);
    snprintf(bn, sizeof bn, "b_%s", name);
    int64_t ws[4] = {k, c / group, 3, 3}, bs[1] = {k};
    lp_tensor *w, *b;
    assert_int_equal(lp_tensor_new(&w, LP_DEVICE_CPU, LP_F32, 4, ws), LP_OK);
    tu_fill_uniform(g, w->data, lp_tensor_numel(w), -0.4f, 0.4f);
    assert_true(lp_model_add_initializer(m, wn, w, 1) >= 0);
    if (bias) {
        assert_int_equal(lp_tensor_new(&b, LP_DEVICE_CPU, LP_F32, 1, bs), LP_OK);
        tu_fill_uniform(g, b->data, k, -0.2f, 0.2f);
        assert_true(lp_model_add_initializer(m, bn, b, 1) >= 0);
    }
    const char *in[3] = {x, wn, bn}, *out[1] = {name};
    int i = lp_model_add_node(m, "Conv", name, bias ? 3 : 2, in, 1, out);
    assert_true(i >= 0);
    const int64_t k3[2] = {3, 3};
    lp_node_set_ints(&m->nodes[i], "kernel_shape", 2, k3);
    lp_node_set_ints(&m->nodes[i], "pads", 4, pads);
    lp_node_set_int(&m->nodes[i], "group", group);
}

static void add_op(lp_model *m, const char *type, const char *a, const char *b, const char *out) {
    const char *in[2] = {a, b}, *o[1] = {out};
    assert_true(lp_model_add_node(m, type, out, b ? 2 : 1, in, 1, o) >= 0);
}

/* x -> conv1+relu -> r1 -> MaxPool 3x3 s1 p1 -> m1 -> conv2 (grouped) -> y2;
 * a1 = y2 + m1; r2 = relu(a1) -> conv3 (pads 1,0,1,2) -> y3; a2 = y3 + r2;
 * r3 = relu(a2) -> conv4 (5 channels, no bias) -> y4; q1 = relu(y4), q2 = relu(y4);
 * d = q1 + q2; e = d + d -> GlobalMaxPool -> Flatten. Packed: r1, m1, y2, r2, y3, r3,
 * y4, q1, q2, d, e (11; a1 and a2 are never stored: each Add computes its Relu; the
 * two Relus of y4 run packed to packed; odd counts from 5 channels); the pool unpacks.
 * `head`: the global pooling (lean runs take GlobalAveragePool: a global max's
 * gradient follows one argmax, which bf16 rounding moves). */
static lp_model *residual_model(const char *head) {
    tu_rng g = {11};
    lp_model *m = lp_model_new();
    lp_shape in = {4, {1, 3, 9, 11}};
    lp_model_add_input(m, "x", &in);
    const int64_t p1[4] = {1, 1, 1, 1}, pa[4] = {1, 0, 1, 2};
    add_conv(m, &g, "c1", "x", 3, 8, 1, p1, 1);
    add_op(m, "Relu", "c1", NULL, "r1");
    add_op(m, "MaxPool", "r1", NULL, "m1");
    const int64_t k3[2] = {3, 3};
    lp_node_set_ints(&m->nodes[m->n_nodes - 1], "kernel_shape", 2, k3);
    lp_node_set_ints(&m->nodes[m->n_nodes - 1], "pads", 4, p1);
    add_conv(m, &g, "y2", "m1", 8, 8, 2, p1, 1);
    add_op(m, "Add", "y2", "m1", "a1");
    add_op(m, "Relu", "a1", NULL, "r2");
    add_conv(m, &g, "y3", "r2", 8, 8, 1, pa, 1);
    add_op(m, "Add", "y3", "r2", "a2");
    add_op(m, "Relu", "a2", NULL, "r3");
    add_conv(m, &g, "y4", "r3", 8, 5, 1, p1, 0);
    add_op(m, "Relu", "y4", NULL, "q1");
    add_op(m, "Relu", "y4", NULL, "q2");
    add_op(m, "Add", "q1", "q2", "d");
    add_op(m, "Add", "d", "d", "e");
    add_op(m, head, "e", NULL, "gmp");
    add_op(m, "Flatten", "gmp", NULL, "logits");
    lp_model_mark_output(m, "logits");
    assert_int_equal(lp_model_finalize(m), LP_OK);
    return m;
}

static void expect_speed(const lp_run *r, int packed, int fused) {
    lp_run_speed sp;
    lp_run_speed_info(r, &sp);
    if (sp.packed != packed || sp.fused != fused)
        fail_msg("%d values packed and %d activations fused, expected %d and %d", sp.packed, sp.fused, packed, fused);
}

static void expect_grads_packed(const lp_run *r, int packed_grads) {
    lp_run_speed sp;
    lp_run_speed_info(r, &sp);
    if (sp.packed_grads != packed_grads) fail_msg("%d gradients packed, expected %d", sp.packed_grads, packed_grads);
}

/* The packed run's logits against an unpacked bf16 run's and the CPU's. Packing stores
 * the residual sums in bf16 too (as PyTorch's bf16 does), so it is within a few bf16
 * roundings (2^-8 each) of the unpacked run; both within bf16's bound of the CPU. */
static void packed_close(const char *what, int p, const lp_tensor *got, const lp_tensor *plain, const lp_tensor *cpu) {
    lp_tensor *a = to_host(got), *b = to_host(plain);
    double e_plain = tu_rel_l2(a->data, b->data, lp_tensor_numel(a));
    double e_cpu = tu_rel_l2(a->data, cpu->data, lp_tensor_numel(a));
    fprintf(stderr, "  %s %d: packed vs unpacked bf16 %.2e, vs CPU fp32 %.2e\n", what, p, e_plain, e_cpu);
    if (!(e_plain <= 1e-2)) fail_msg("%s %d: packed vs unpacked bf16 relative L2 %.3g > 1e-2", what, p, e_plain);
    if (!(e_cpu <= 3e-2)) fail_msg("%s %d: packed bf16 vs CPU relative L2 %.3g > 3e-2", what, p, e_cpu);
    lp_tensor_free(a), lp_tensor_free(b);
}

/* A forward on the unpacked run: its plan is made now, without packing. */
static void forward_unpacked(lp_run *r, const lp_tensor *x) {
    setenv("LOUPE_PACK", "0", 1);
    lp_status s = lp_run_forward(r, x);
    unsetenv("LOUPE_PACK");
    assert_int_equal(s, LP_OK);
}

/* The packing tests' three runs of m: the CPU's (plain), and two bf16 CUDA runs,
 * forward-only or lean: *pk (graphed) and *plain (run with LOUPE_PACK=0). */
static void packing_runs(lp_model *m, int lean, lp_run **cpu, lp_run **pk, lp_run **plain) {
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, cpu), LP_OK);
    lp_run **gpu[2] = {pk, plain};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(lp_run_new(m, LP_DEVICE_CUDA, gpu[i]), LP_OK);
        assert_int_equal(lp_run_set_precision(*gpu[i], LP_PREC_BF16), LP_OK);
        assert_int_equal(lean ? lp_run_set_lean(*gpu[i], 1) : lp_run_set_forward_only(*gpu[i], 1), LP_OK);
    }
    _lp_run_set_graphs(*pk, 1);
}

/* Pass p's input for the residual model, in *x (the last one freed): batches 3 3 3 2 3,
 * so graphs from the third pass, and a new plan for each new batch. */
static const int pass_batch[5] = {3, 3, 3, 2, 3};
static void residual_input(tu_rng *g, int p, lp_tensor **x) {
    int64_t xs[4] = {pass_batch[p], 3, 9, 11};
    lp_tensor_free(*x);
    assert_int_equal(lp_tensor_new(x, LP_DEVICE_CPU, LP_F32, 4, xs), LP_OK);
    tu_fill_uniform(g, (*x)->data, lp_tensor_numel(*x), -1.f, 1.f);
}

static void test_packing(void **state) {
    (void)state;
    lp_model *m = residual_model("GlobalMaxPool");
    lp_run *cpu, *pk, *plain;
    packing_runs(m, 0, &cpu, &pk, &plain);
    tu_rng g = {5};
    lp_tensor *x = NULL;
    for (int p = 0; p < 5; p++) {
        residual_input(&g, p, &x);
        assert_int_equal(lp_run_forward(cpu, x), LP_OK);
        assert_int_equal(lp_run_forward(pk, x), LP_OK);
        expect_speed(pk, 11, 3); /* conv1+relu, and each residual Add+Relu */
        forward_unpacked(plain, x);
        expect_speed(plain, 0, 3); /* the same fusions unpacked (add_relu) */
        packed_close("pass", p, lp_run_output(pk), lp_run_output(plain), lp_run_output(cpu));
        assert_null(lp_run_value(pk, "y2")); /* packed values are the arena's, never handed out */
    }
    /* the third pass replays (the second was captured); the batch changes after it are eager */
    fprintf(stderr, "  packed forward-only run: %lld of 5 passes replayed\n", (long long)replays(pk));
    assert_true(replays(pk) >= 1);
    /* Asking for a value keeps it unpacked: y3's Add then unpacks r2 and a2 (and so r3);
     * r2's Relu, no longer fused, unpacks in the middle of the network, a2's Add fuses
     * its Relu in fp32, and conv4 reads fp32 and writes packed. */
    assert_int_equal(lp_run_capture(pk, "y3"), LP_OK);
    assert_int_equal(lp_run_forward(pk, x), LP_OK);
    expect_speed(pk, 9, 2);
    lp_tensor *y3 = to_host(lp_run_value(pk, "y3"));
    assert_int_equal(lp_run_capture(cpu, "y3"), LP_OK);
    assert_int_equal(lp_run_forward(cpu, x), LP_OK);
    close_to("captured y3", 0, y3, lp_run_value(cpu, "y3"), 3e-2);
    packed_close("y3 kept", 0, lp_run_output(pk), lp_run_output(plain), lp_run_output(cpu));
    lp_tensor_free(y3);
    /* Another precision makes a new plan (fp32 packs nothing), and bf16 again the old one. */
    assert_int_equal(lp_run_set_precision(pk, LP_PREC_FP32), LP_OK);
    assert_int_equal(lp_run_forward(pk, x), LP_OK);
    expect_speed(pk, 0, 3);
    lp_tensor *y = to_host(lp_run_output(pk));
    close_to("fp32 after bf16", 0, y, lp_run_output(cpu), 1e-5);
    lp_tensor_free(y);
    assert_int_equal(lp_run_set_precision(pk, LP_PREC_BF16), LP_OK);
    assert_int_equal(lp_run_forward(pk, x), LP_OK);
    expect_speed(pk, 9, 2);
    packed_close("bf16 again", 0, lp_run_output(pk), lp_run_output(plain), lp_run_output(cpu));
    lp_run_free(pk);

    /* A tail re-run from r3 (Ablation-CAM's): r3 is kept, so its Relu reads a2 packed
     * (stored now, not fused) and writes it unpacked; the tail (conv4 on, packed) runs
     * again on an edited r3. */
    assert_int_equal(lp_run_new(m, LP_DEVICE_CUDA, &pk), LP_OK);
    assert_int_equal(lp_run_set_precision(pk, LP_PREC_BF16), LP_OK);
    const _lp_keep tail = {1, 0, -1, lp_model_find_value(m, "r3")};
    assert_int_equal(_lp_run_set_keep(pk, &tail), LP_OK);
    assert_int_equal(lp_run_forward(pk, x), LP_OK);
    expect_speed(pk, 11, 2); /* a2 packed in r3's stead; conv1+relu and a1+relu fused */
    lp_tensor *r3 = to_host(lp_run_value(pk, "r3"));
    for (int64_t i = 0; i < lp_tensor_numel(r3); i += 3) ((float *)r3->data)[i] = 0.f; /* ablate every third */
    assert_int_equal(_lp_run_forward_from(pk, "r3", r3), LP_OK);
    assert_int_equal(lp_run_capture(cpu, "r3"), LP_OK);
    assert_int_equal(lp_run_forward(cpu, x), LP_OK);
    assert_int_equal(_lp_run_forward_from(cpu, "r3", r3), LP_OK);
    forward_unpacked(plain, x);
    lp_tensor *yt = to_host(lp_run_output(pk));
    close_to("tail re-run", 0, yt, lp_run_output(cpu), 3e-2);
    lp_tensor_free(yt);
    lp_tensor_free(r3);
    lp_tensor_free(x);
    lp_run_free(cpu);
    lp_run_free(pk);
    lp_run_free(plain);
    lp_model_free(m);
}

/* Forward, then backward with opts on run r; the gradient of `at` on the host. */
static lp_tensor *lean_grad(lp_run *r, const lp_tensor *x, const lp_backward_opts *bo, const char *at) {
    assert_int_equal(lp_run_forward(r, x), LP_OK);
    assert_int_equal(lp_run_backward(r, bo), LP_OK);
    return to_host(lp_run_grad(r, at));
}

/* A gradient of the packed lean run against the unpacked one's (both bf16) and the
 * CPU's. Packing rounds each stored gradient and residual sum to bf16 (as PyTorch's
 * bf16 autograd does), so the two bf16 runs differ by a few roundings. Against fp32,
 * any bf16 input gradient is imprecise: ReLU masks flip, and max pooling's argmax
 * moves (bf16 makes ties in a window common), and a random seed's cancellations
 * magnify both. So the packed run must be within the bound (bf16 logits' x 3)
 * of the CPU, and 3e-2 of the unpacked run, or within 1.5x of the unpacked run's own
 * error (a wrong or missing gradient path is off by far more). */
static void lean_close(const char *what, int p, const lp_tensor *got, const lp_tensor *plain, const lp_tensor *cpu) {
    double e_plain = tu_rel_l2(got->data, plain->data, lp_tensor_numel(got));
    double e_cpu = tu_rel_l2(got->data, cpu->data, lp_tensor_numel(got));
    double e_ref = tu_rel_l2(plain->data, cpu->data, lp_tensor_numel(got));
    fprintf(stderr, "  %s %d: packed vs unpacked bf16 %.2e, vs CPU %.2e (unpacked vs CPU %.2e)\n", what, p, e_plain,
            e_cpu, e_ref);
    if (!(e_plain <= fmax(3e-2, 1.5 * e_ref)))
        fail_msg("%s %d: packed vs unpacked bf16 relative L2 %.3g > max(3e-2, 1.5 x %.3g)", what, p, e_plain, e_ref);
    if (!(e_cpu <= fmax(9e-2, 1.5 * e_ref)))
        fail_msg("%s %d: packed bf16 vs CPU relative L2 %.3g > max(9e-2, 1.5 x %.3g)", what, p, e_cpu, e_ref);
}

static void test_lean_packing(void **state) {
    (void)state;
    lp_model *m = residual_model("GlobalAveragePool");
    lp_run *cpu, *pk, *plain;
    packing_runs(m, 1, &cpu, &pk, &plain);
    lp_backward_opts bo = {0};
    tu_rng g = {7};
    lp_tensor *x = NULL;
    for (int p = 0; p < 5; p++) {
        residual_input(&g, p, &x);
        lp_tensor *gc = lean_grad(cpu, x, &bo, "x"), *gp = lean_grad(pk, x, &bo, "x");
        /* as forward-only, plus the fused conv1's and the two Adds' gradients */
        expect_speed(pk, 11, 3);
        expect_grads_packed(pk, 14);
        setenv("LOUPE_PACK", "0", 1);
        lp_tensor *gu = lean_grad(plain, x, &bo, "x");
        unsetenv("LOUPE_PACK");
        expect_speed(plain, 0, 3);
        packed_close("lean logits", p, lp_run_output(pk), lp_run_output(plain), lp_run_output(cpu));
        lean_close("input gradient", p, gp, gu, gc);
        assert_null(lp_run_value(pk, "r2")); /* packed, read by the backward: still never handed out */
        lp_tensor_free(gc), lp_tensor_free(gp), lp_tensor_free(gu);
    }
    fprintf(stderr, "  packed lean run: %lld of 10 passes replayed\n", (long long)replays(pk));
    assert_true(replays(pk) >= 2);

    /* Several backwards from one forward: the values they read are not overwritten by
     * the gradients of the first (the same result, bit for bit, from the same seed). */
    const int64_t ls[2] = {3, 5};
    lp_tensor *seed;
    assert_int_equal(lp_tensor_new(&seed, LP_DEVICE_CPU, LP_F32, 2, ls), LP_OK);
    tu_fill_uniform(&g, seed->data, lp_tensor_numel(seed), -1.f, 1.f);
    lp_backward_opts so = {.seed = seed};
    lp_tensor *first = lean_grad(pk, x, &so, "x");
    assert_int_equal(lp_run_backward(pk, &bo), LP_OK);
    assert_int_equal(lp_run_backward(pk, &so), LP_OK);
    lp_tensor *again = to_host(lp_run_grad(pk, "x"));
    assert_memory_equal(first->data, again->data, first->nbytes);
    lp_tensor *sc = lean_grad(cpu, x, &so, "x");
    setenv("LOUPE_PACK", "0", 1);
    lp_tensor *su = lean_grad(plain, x, &so, "x");
    unsetenv("LOUPE_PACK");
    lean_close("seeded input gradient", 0, first, su, sc);
    lp_tensor_free(first), lp_tensor_free(again), lp_tensor_free(sc), lp_tensor_free(su);

    /* A backward from a packed value (r3, not kept): its seed is packed in. */
    const int64_t r3s[4] = {3, 8, 9, 11};
    lp_tensor *rseed;
    assert_int_equal(lp_tensor_new(&rseed, LP_DEVICE_CPU, LP_F32, 4, r3s), LP_OK);
    tu_fill_uniform(&g, rseed->data, lp_tensor_numel(rseed), -1.f, 1.f);
    lp_backward_opts ro = {.of = "r3", .seed = rseed};
    lp_tensor *rp = lean_grad(pk, x, &ro, "x"), *rc = lean_grad(cpu, x, &ro, "x");
    setenv("LOUPE_PACK", "0", 1);
    lp_tensor *ru = lean_grad(plain, x, &ro, "x");
    unsetenv("LOUPE_PACK");
    lean_close("from packed r3", 0, rp, ru, rc);
    lp_backward_opts ones = {.of = "r3"}; /* and ones as the seed */
    lp_tensor_free(rp), lp_tensor_free(rc), lp_tensor_free(ru);
    rp = lean_grad(pk, x, &ones, "x"), rc = lean_grad(cpu, x, &ones, "x");
    setenv("LOUPE_PACK", "0", 1);
    ru = lean_grad(plain, x, &ones, "x");
    unsetenv("LOUPE_PACK");
    lean_close("from packed r3, ones", 0, rp, ru, rc);
    lp_tensor_free(rp), lp_tensor_free(rc), lp_tensor_free(ru);

    /* Guided backprop's and deconvnet's Relu rules read packed Relus themselves (one
     * kernel each), and their passes are graphed as the plain one's: eager, captured,
     * then replayed, the same bits each time. */
    for (int dc = 0; dc < 2; dc++) {
        lp_rules rules;
        assert_int_equal(_lp_guided_rules(&rules, dc), LP_OK);
        lp_backward_opts go = {.rules = &rules};
        const char *name = dc ? "deconvnet" : "guided backprop";
        lp_tensor *gp = lean_grad(pk, x, &go, "x"), *gc = lean_grad(cpu, x, &go, "x");
        expect_grads_packed(pk, 14);
        setenv("LOUPE_PACK", "0", 1);
        lp_tensor *gu = lean_grad(plain, x, &go, "x");
        unsetenv("LOUPE_PACK");
        lean_close(name, 0, gp, gu, gc);
        const int64_t r0 = replays(pk);
        for (int k = 0; k < 2; k++) {
            assert_int_equal(lp_run_backward(pk, &go), LP_OK);
            lp_tensor *again = to_host(lp_run_grad(pk, "x"));
            assert_memory_equal(gp->data, again->data, gp->nbytes);
            lp_tensor_free(again);
        }
        fprintf(stderr, "  %s: %lld of 2 backwards replayed\n", name, (long long)(replays(pk) - r0));
        assert_true(replays(pk) > r0);
        lp_tensor_free(gp), lp_tensor_free(gc), lp_tensor_free(gu);
        _lp_rules_free(&rules);
    }

    /* Stopping at r2 (Grad-CAM's run): r2 is kept, so its Relu and y3's Add unpack;
     * the gradient at r2 against the CPU's. */
    assert_int_equal(lp_run_set_lean_at(pk, "r2"), LP_OK);
    lp_backward_opts at = {.stop_at = "r2"};
    lp_tensor *ap = lean_grad(pk, x, &at, "r2"), *ac = lean_grad(cpu, x, &at, "r2");
    lp_run_speed sp;
    lp_run_speed_info(pk, &sp);
    fprintf(stderr, "  stop at r2: %d values and %d gradients packed\n", sp.packed, sp.packed_grads);
    assert_true(sp.packed > 0 && sp.packed < 11);
    close_to("gradient at r2", 0, ap, ac, 9e-2);
    lp_tensor_free(ap), lp_tensor_free(ac);

    /* fp32 packs nothing; bf16 again packs as before. */
    assert_int_equal(lp_run_set_lean(pk, 1), LP_OK);
    assert_int_equal(lp_run_set_precision(pk, LP_PREC_FP32), LP_OK);
    lp_tensor *fp = lean_grad(pk, x, &bo, "x"), *fc = lean_grad(cpu, x, &bo, "x");
    expect_speed(pk, 0, 3);
    expect_grads_packed(pk, 0);
    close_to("fp32 input gradient after bf16", 0, fp, fc, 1e-5);
    lp_tensor_free(fp), lp_tensor_free(fc);
    assert_int_equal(lp_run_set_precision(pk, LP_PREC_BF16), LP_OK);
    lp_tensor *bp = lean_grad(pk, x, &bo, "x");
    expect_grads_packed(pk, 14);
    lp_tensor_free(bp);

    lp_tensor_free(seed), lp_tensor_free(rseed), lp_tensor_free(x);
    lp_run_free(cpu), lp_run_free(pk), lp_run_free(plain);
    lp_model_free(m);
}

#ifdef LOUPE_CUDA_EMU /* a real GPU's build does not poison */
static void test_reuse_poisoned(void **state) {
    (void)state;
    const lp_backend *be = lp_backend_cuda();
    unsigned char host[4096];
    void *a, *b;
    lp_cuda_memory_trim(); /* an empty cache: the block freed below is the one handed out */
    assert_int_equal(be->alloc(sizeof host, &a), LP_OK);
    assert_int_equal(be->zero(a, sizeof host), LP_OK);
    be->free(a);
    assert_int_equal(be->alloc(sizeof host, &b), LP_OK);
    assert_ptr_equal(a, b); /* the cached block itself */
    assert_int_equal(be->download(host, b, sizeof host), LP_OK);
    size_t poisoned = 0;
    for (size_t i = 0; i < sizeof host; i++) poisoned += host[i] == 0xff;
    assert_int_equal(poisoned, sizeof host);
    be->free(b);
}
#endif

int main(int argc, char **argv) {
    if (argc < 2 || (argc > 2 && strcmp(argv[2], "exact"))) {
        fprintf(stderr, "usage: test_exec_cuda MODEL.onnx [exact]\n"
                        "  exact: only the bit-for-bit lean packing cases (exec_lean_exact.c)\n");
        return 2;
    }
    model_path = argv[1];
    if (!lp_backend_cuda()) {
        printf("SKIPPED: %s\n", lp_last_error());
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_graphs),   cmocka_unit_test(test_stop_graphs), cmocka_unit_test(test_bn_weight_grads),
        cmocka_unit_test(test_fusion),   cmocka_unit_test(test_packing),     cmocka_unit_test(test_lean_packing),
#ifdef LOUPE_CUDA_EMU
        cmocka_unit_test(test_reuse_poisoned),
#endif
    };
    const struct CMUnitTest exact[] = {
        cmocka_unit_test(test_lean_exact),
        cmocka_unit_test(test_lean_exact_stop),
        cmocka_unit_test(test_lean_exact_rule_twice),
    };
    if (argc > 2) return cmocka_run_group_tests_name("lean packing, exact", exact, NULL, NULL);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
