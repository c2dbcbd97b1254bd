/* fashion_cnn.c — the small CNN Loupe trains on Fashion-MNIST (the bundled default
 * model), built with the graph builder so the trainer needs no ONNX file to start.
 * Node and value names (conv1, relu1, pool1, ... fc2) are what `--layer` takes. */
#include "internal.h"
#include "../rng.h"

#include <math.h>

/* A parameter of `shape`, N(0, std^2) (std 0: zeros), owned by the model. */
static lp_status add_param(lp_model *m, lp_rng *rng, const char *name, int ndim, const int64_t *shape, double std) {
    lp_tensor *t;
    LP_TRY(lp_tensor_new(&t, LP_DEVICE_CPU, LP_F32, ndim, shape));
    float *w = t->data;
    int64_t n = lp_tensor_numel(t);
    for (int64_t i = 0; std > 0 && i < n; i++) w[i] = (float)(std * lp_rng_normal(rng));
    if (lp_model_add_initializer(m, name, t, 1) < 0) return LP_ERR_OOM;
    return LP_OK;
}

static lp_status add_node(lp_model *m, const char *op, const char *name, int n_in, const char *const *in, lp_node **out) {
    const char *outs[1] = {name};
    int i = lp_model_add_node(m, op, name, n_in, in, 1, outs);
    if (i < 0) return LP_ERR_OOM;
    *out = &m->nodes[i];
    return LP_OK;
}

/* Conv 3x3, pad 1, stride 1, He-initialised (fan-in = cin * 9), zero bias. */
static lp_status add_conv(lp_model *m, lp_rng *rng, const char *name, const char *x, int64_t cin, int64_t cout) {
    char wn[64], bn[64];
    snprintf(wn, sizeof wn, "%s.weight", name);
    snprintf(bn, sizeof bn, "%s.bias", name);
    int64_t ws[4] = {cout, cin, 3, 3}, bs[1] = {cout};
    LP_TRY(add_param(m, rng, wn, 4, ws, sqrt(2.0 / (double)(cin * 9))));
    LP_TRY(add_param(m, rng, bn, 1, bs, 0));
    const char *in[3] = {x, wn, bn};
    lp_node *n;
    LP_TRY(add_node(m, "Conv", name, 3, in, &n));
    const int64_t k[2] = {3, 3}, s[2] = {1, 1}, p[4] = {1, 1, 1, 1};
    lp_node_set_ints(n, "kernel_shape", 2, k);
    lp_node_set_ints(n, "strides", 2, s);
    lp_node_set_ints(n, "pads", 4, p);
    return LP_OK;
}

/* Gemm with W as out x in and transB = 1 (PyTorch's Linear layout), He-initialised. */
static lp_status add_fc(lp_model *m, lp_rng *rng, const char *name, const char *x, int64_t fin, int64_t fout) {
    char wn[64], bn[64];
    snprintf(wn, sizeof wn, "%s.weight", name);
    snprintf(bn, sizeof bn, "%s.bias", name);
    int64_t ws[2] = {fout, fin}, bs[1] = {fout};
    LP_TRY(add_param(m, rng, wn, 2, ws, sqrt(2.0 / (double)fin)));
    LP_TRY(add_param(m, rng, bn, 1, bs, 0));
    const char *in[3] = {x, wn, bn};
    lp_node *n;
    LP_TRY(add_node(m, "Gemm", name, 3, in, &n));
    lp_node_set_int(n, "transB", 1);
    return LP_OK;
}

static lp_status add_relu(lp_model *m, const char *name, const char *x) {
    lp_node *n;
    return add_node(m, "Relu", name, 1, &x, &n);
}

static lp_status add_pool(lp_model *m, const char *name, const char *x) {
    lp_node *n;
    LP_TRY(add_node(m, "MaxPool", name, 1, &x, &n));
    const int64_t k[2] = {2, 2};
    lp_node_set_ints(n, "kernel_shape", 2, k);
    lp_node_set_ints(n, "strides", 2, k);
    return LP_OK;
}

static lp_status build(lp_model *m, uint64_t seed) {
    lp_rng rng;
    lp_rng_seed(&rng, seed);
    lp_shape in = {4, {1, 1, 28, 28}};
    if (lp_model_add_input(m, "input", &in) < 0) return LP_ERR_OOM;
    LP_TRY(add_conv(m, &rng, "conv1", "input", 1, 32));
    LP_TRY(add_relu(m, "relu1", "conv1"));
    LP_TRY(add_pool(m, "pool1", "relu1"));
    LP_TRY(add_conv(m, &rng, "conv2", "pool1", 32, 64));
    LP_TRY(add_relu(m, "relu2", "conv2"));
    LP_TRY(add_pool(m, "pool2", "relu2"));
    lp_node *fl;
    const char *pool2 = "pool2";
    LP_TRY(add_node(m, "Flatten", "flatten", 1, &pool2, &fl));
    lp_node_set_int(fl, "axis", 1);
    LP_TRY(add_fc(m, &rng, "fc1", "flatten", 64 * 7 * 7, 128));
    LP_TRY(add_relu(m, "relu3", "fc1"));
    LP_TRY(add_fc(m, &rng, "fc2", "relu3", 128, 10));
    lp_model_mark_output(m, "fc2");
    m->opset = 13;
    return lp_model_finalize(m);
}

lp_status lp_model_fashion_cnn(uint64_t seed, lp_model **out) {
    *out = NULL;
    lp_model *m = lp_model_new();
    if (!m) return LP_ERR_OOM;
    lp_status s = build(m, seed);
    if (s != LP_OK) {
        lp_model_free(m);
        return lp_fail_prefix(s, "building the Fashion-MNIST CNN");
    }
    *out = m;
    return LP_OK;
}
