/* test_train.c — training: softmax cross-entropy (loss and gradient) against a double
 * reference, the Fashion-MNIST CNN builder, one SGD step against a hand-made update,
 * and a short run on Fashion-MNIST whose loss must fall (skipped without the dataset). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "testutil.h"

#define DATA "/usr/share/datasets/fashion-mnist"
#define TRAIN_IMAGES DATA "/train-images-idx3-ubyte.gz"
#define TRAIN_LABELS DATA "/train-labels-idx1-ubyte.gz"
#define TEST_IMAGES DATA "/t10k-images-idx3-ubyte.gz"
#define TEST_LABELS DATA "/t10k-labels-idx1-ubyte.gz"

static int have_data(void) {
    if (tu_exists(TRAIN_IMAGES) && tu_exists(TRAIN_LABELS) && tu_exists(TEST_IMAGES) && tu_exists(TEST_LABELS))
        return 1;
    printf("SKIPPED: Fashion-MNIST not found under %s\n", DATA);
    return 0;
}

static void test_xent_reference(void **state) {
    (void)state;
    enum { N = 7, K = 10 };
    tu_rng r = {7};
    int64_t shape[2] = {N, K}, labels[N];
    lp_tensor *x, *dx;
    assert_int_equal(lp_tensor_new(&x, LP_DEVICE_CPU, LP_F32, 2, shape), LP_OK);
    assert_int_equal(lp_tensor_new(&dx, LP_DEVICE_CPU, LP_F32, 2, shape), LP_OK);
    float *xp = x->data;
    for (int i = 0; i < N * K; i++) xp[i] = 4.0f * tu_normal(&r);
    xp[3 * K + 2] = 80.0f; /* exp(80) overflows a float: the max shift must hold */
    xp[5 * K + 1] = -90.0f;
    for (int i = 0; i < N; i++) labels[i] = (int64_t)(tu_next(&r) % K);
    labels[3] = 4; /* the confident row is wrong: a large loss */

    double ref_loss = 0, ref_g[N * K];
    for (int i = 0; i < N; i++) {
        double mx = -INFINITY, s = 0;
        for (int j = 0; j < K; j++) mx = fmax(mx, xp[i * K + j]);
        for (int j = 0; j < K; j++) s += exp((double)xp[i * K + j] - mx);
        double lse = mx + log(s);
        ref_loss += (lse - xp[i * K + labels[i]]) / N;
        for (int j = 0; j < K; j++) ref_g[i * K + j] = (exp(xp[i * K + j] - lse) - (j == labels[i])) / N;
    }
    float loss = 0;
    assert_int_equal(lp_softmax_xent(x, labels, &loss, dx), LP_OK);
    printf("loss %.8f reference %.8f\n", loss, ref_loss);
    assert_true(fabs(loss - ref_loss) <= 1e-5 * fabs(ref_loss));
    double e = tu_rel_l2_d(dx->data, ref_g, N * K);
    printf("gradient rel L2 %.3g\n", e);
    assert_true(e < 1e-6);
    /* Without dlogits the loss is the same. */
    float loss2 = 0;
    assert_int_equal(lp_softmax_xent(x, labels, &loss2, NULL), LP_OK);
    assert_true(loss2 == loss);
    /* Each gradient row sums to zero (softmax minus a one-hot). */
    const float *g = dx->data;
    for (int i = 0; i < N; i++) {
        double s = 0;
        for (int j = 0; j < K; j++) s += g[i * K + j];
        assert_true(fabs(s) < 1e-6);
    }
    lp_tensor_free(x);
    lp_tensor_free(dx);
}

static void test_xent_errors(void **state) {
    (void)state;
    int64_t shape[2] = {2, 3}, bad[2] = {2, 4}, labels[2] = {0, 3};
    lp_tensor *x, *dx;
    assert_int_equal(lp_tensor_new(&x, LP_DEVICE_CPU, LP_F32, 2, shape), LP_OK);
    assert_int_equal(lp_tensor_new(&dx, LP_DEVICE_CPU, LP_F32, 2, bad), LP_OK);
    float loss;
    assert_int_equal(lp_softmax_xent(x, labels, &loss, NULL), LP_ERR_ARG);
    printf("label out of range: %s\n", lp_last_error());
    assert_non_null(strstr(lp_last_error(), "label 3"));
    labels[1] = 1;
    assert_int_equal(lp_softmax_xent(x, labels, &loss, dx), LP_ERR_SHAPE);
    printf("dlogits shape: %s\n", lp_last_error());
    lp_tensor_free(x);
    lp_tensor_free(dx);
}

static void test_fashion_cnn_builder(void **state) {
    (void)state;
    lp_model *m, *m2, *m3;
    assert_int_equal(lp_model_fashion_cnn(5, &m), LP_OK);
    assert_int_equal(lp_model_fashion_cnn(5, &m2), LP_OK);
    assert_int_equal(lp_model_fashion_cnn(6, &m3), LP_OK);
    /* 32*9+32 + 64*32*9+64 + 3136*128+128 + 128*10+10 */
    assert_int_equal(lp_model_param_count(m), 421642);
    const char *names[] = {"conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "fc1", "relu3", "fc2"};
    assert_int_equal(lp_model_num_nodes(m), 10);
    for (int i = 0; i < 10; i++) {
        lp_node_info ni;
        assert_int_equal(lp_model_node_info(m, i, &ni), LP_OK);
        assert_string_equal(ni.name, names[i]);
        assert_true(lp_model_has_value(m, names[i]));
    }
    lp_node_info last;
    assert_int_equal(lp_model_node_info(m, 9, &last), LP_OK);
    assert_int_equal(last.ndim, 2);
    assert_int_equal(last.shape[1], 10);
    /* Same seed, same weights; another seed, others. */
    int w = lp_model_find_value(m, "conv1.weight"), w3 = lp_model_find_value(m3, "conv1.weight");
    assert_true(w >= 0 && w3 >= 0);
    const lp_tensor *t = m->values[w].init, *t2 = m2->values[lp_model_find_value(m2, "conv1.weight")].init;
    assert_memory_equal(t->data, t2->data, t->nbytes);
    assert_memory_not_equal(t->data, m3->values[w3].init->data, t->nbytes);
    /* He init: std sqrt(2 / fan-in); conv2 has 18432 weights, so the sample std is
     * within 3% of it. */
    const lp_tensor *c2 = m->values[lp_model_find_value(m, "conv2.weight")].init;
    double ss = 0, he = sqrt(2.0 / (32 * 9));
    const float *p = c2->data;
    for (int64_t i = 0; i < lp_tensor_numel(c2); i++) ss += (double)p[i] * p[i];
    double sd = sqrt(ss / (double)lp_tensor_numel(c2));
    printf("conv2.weight std %.4f (He: %.4f)\n", sd, he);
    assert_true(fabs(sd - he) < 0.03 * he);
    /* A batch of 3 runs and gives 3 x 10 logits. */
    lp_run *r;
    int64_t xs[4] = {3, 1, 28, 28};
    lp_tensor *x;
    assert_int_equal(lp_tensor_new(&x, LP_DEVICE_CPU, LP_F32, 4, xs), LP_OK);
    tu_rng rng = {3};
    tu_fill_uniform(&rng, x->data, lp_tensor_numel(x), 0, 1);
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &r), LP_OK);
    assert_int_equal(lp_run_forward(r, x), LP_OK);
    const lp_tensor *y = lp_run_output(r);
    assert_int_equal(y->ndim, 2);
    assert_int_equal(y->shape[0], 3);
    assert_int_equal(y->shape[1], 10);
    float before[30], after[30];
    assert_int_equal(lp_tensor_read(y, before, sizeof before), LP_OK);
    lp_run_free(r);
    /* Saved as ONNX and loaded back (how `loupe train` hands the model to the other
     * commands), it computes the same logits. */
    char path[64];
    snprintf(path, sizeof path, "/tmp/loupe_test_train_%d.onnx", (int)getpid());
    assert_int_equal(lp_model_save(m, path), LP_OK);
    lp_model *back;
    lp_status s = lp_model_load(path, &back);
    if (s != LP_OK) printf("%s\n", lp_last_error());
    assert_int_equal(s, LP_OK);
    remove(path);
    assert_int_equal(lp_model_param_count(back), 421642);
    assert_int_equal(lp_run_new(back, LP_DEVICE_CPU, &r), LP_OK);
    assert_int_equal(lp_run_forward(r, x), LP_OK);
    assert_int_equal(lp_tensor_read(lp_run_output(r), after, sizeof after), LP_OK);
    assert_int_equal(tu_report_mismatch("reloaded logits", after, before, 30, 1e-6, 1e-5, 5), 0);
    lp_run_free(r);
    lp_model_free(back);
    lp_tensor_free(x);
    lp_model_free(m);
    lp_model_free(m2);
    lp_model_free(m3);
}

/* One step on a single full batch (order does not matter to a mean), momentum's first
 * step v = g: every weight must move by exactly -lr * (its gradient). */
static void test_one_sgd_step(void **state) {
    (void)state;
    if (!have_data()) skip();
    enum { B = 32 };
    const float lr = 0.1f;
    lp_model *a, *b;
    assert_int_equal(lp_model_fashion_cnn(11, &a), LP_OK);
    assert_int_equal(lp_model_fashion_cnn(11, &b), LP_OK);
    lp_tensor *images, *labels;
    assert_int_equal(lp_idx_load_images(TRAIN_IMAGES, &images), LP_OK);
    assert_int_equal(lp_idx_load_labels(TRAIN_LABELS, &labels), LP_OK);
    lp_shape bs = {4, {B, 1, 28, 28}};
    lp_tensor batch = lp_tensor_view(LP_DEVICE_CPU, LP_F32, &bs, images->data);
    lp_run *r;
    assert_int_equal(lp_run_new(a, LP_DEVICE_CPU, &r), LP_OK);
    assert_int_equal(lp_run_forward(r, &batch), LP_OK);
    int64_t ls[2] = {B, 10};
    lp_tensor *dl;
    assert_int_equal(lp_tensor_new(&dl, LP_DEVICE_CPU, LP_F32, 2, ls), LP_OK);
    float loss;
    assert_int_equal(lp_softmax_xent(lp_run_output(r), labels->data, &loss, dl), LP_OK);
    lp_backward_opts bo = {0};
    bo.seed = dl;
    bo.weight_grads = 1;
    assert_int_equal(lp_run_backward(r, &bo), LP_OK);

    lp_train_opts o = {0};
    o.images = TRAIN_IMAGES;
    o.labels = TRAIN_LABELS;
    o.epochs = 1;
    o.batch = B;
    o.limit = B;
    o.lr = lr;
    o.momentum = 0.9f;
    lp_train_result res;
    assert_int_equal(lp_train(b, &o, &res), LP_OK);
    assert_int_equal(res.steps, 1);
    assert_true(fabs(res.train_loss - loss) < 1e-4);
    const char *params[] = {"conv1.weight", "conv1.bias", "conv2.weight", "fc1.weight", "fc2.weight", "fc2.bias"};
    for (int k = 0; k < 6; k++) {
        const lp_tensor *g = lp_run_grad(r, params[k]);
        assert_non_null(g);
        const lp_tensor *w0 = a->values[lp_model_find_value(a, params[k])].init;
        const lp_tensor *w1 = b->values[lp_model_find_value(b, params[k])].init;
        int64_t n = lp_tensor_numel(w0);
        float *expect = malloc((size_t)n * sizeof(float));
        const float *pw = w0->data, *pg = g->data;
        for (int64_t i = 0; i < n; i++) expect[i] = pw[i] - lr * pg[i];
        double e = tu_rel_l2(w1->data, expect, n);
        printf("%s: updated weights rel L2 %.3g\n", params[k], e);
        assert_int_equal(tu_report_mismatch(params[k], w1->data, expect, n, 1e-6, 1e-4, 5), 0);
        free(expect);
    }
    lp_tensor_free(dl);
    lp_run_free(r);
    lp_tensor_free(images);
    lp_tensor_free(labels);
    lp_model_free(a);
    lp_model_free(b);
}

typedef struct losses {
    float v[256];
    int n;
} losses;

static void record(void *user, int epoch, int64_t done, int64_t total, float loss) {
    (void)epoch, (void)done, (void)total;
    losses *l = user;
    if (l->n < 256) l->v[l->n++] = loss;
}

static void test_short_training(void **state) {
    (void)state;
    if (!have_data()) skip();
    lp_model *m;
    assert_int_equal(lp_model_fashion_cnn(1, &m), LP_OK);
    losses l = {{0}, 0};
    lp_train_opts o = {0};
    o.images = TRAIN_IMAGES;
    o.labels = TRAIN_LABELS;
    o.epochs = 1;
    o.batch = 64;
    o.limit = 2000;
    o.lr = 0.05f;
    o.momentum = 0.9f;
    o.seed = 3;
    o.progress = record;
    o.user = &l;
    lp_train_result res;
    assert_int_equal(lp_train(m, &o, &res), LP_OK);
    assert_int_equal(l.n, 32); /* ceil(2000 / 64) steps */
    assert_int_equal(res.steps, 32);
    double first = 0, last = 0;
    for (int i = 0; i < 5; i++) first += l.v[i] / 5, last += l.v[l.n - 5 + i] / 5;
    printf("mean loss of the first 5 steps %.4f, last 5 %.4f (%.1f s)\n", first, last, res.seconds);
    assert_true(isfinite(last));
    assert_true(last < 0.8 * first);

    /* Better than chance on held-out images (the first 1000 test images). */
    lp_tensor *ti, *tl;
    assert_int_equal(lp_idx_load_images(TEST_IMAGES, &ti), LP_OK);
    assert_int_equal(lp_idx_load_labels(TEST_LABELS, &tl), LP_OK);
    lp_shape is = {4, {1000, 1, 28, 28}}, lsh = {1, {1000}};
    lp_tensor iv = lp_tensor_view(LP_DEVICE_CPU, LP_F32, &is, ti->data);
    lp_tensor lv = lp_tensor_view(LP_DEVICE_CPU, LP_I64, &lsh, tl->data);
    float acc, loss;
    assert_int_equal(lp_evaluate(m, LP_DEVICE_CPU, &iv, &lv, &acc, &loss), LP_OK);
    printf("after 2000 images: accuracy %.3f, loss %.3f on 1000 test images\n", acc, loss);
    assert_true(acc > 0.5f);
    /* Mismatched labels are an error, not a crash. */
    lp_shape bad = {1, {999}};
    lp_tensor lb = lp_tensor_view(LP_DEVICE_CPU, LP_I64, &bad, tl->data);
    assert_int_equal(lp_evaluate(m, LP_DEVICE_CPU, &iv, &lb, &acc, &loss), LP_ERR_SHAPE);
    lp_tensor_free(ti);
    lp_tensor_free(tl);
    lp_model_free(m);
}

static void test_train_errors(void **state) {
    (void)state;
    lp_model *m;
    assert_int_equal(lp_model_fashion_cnn(1, &m), LP_OK);
    lp_train_opts o = {0};
    o.images = "/nonexistent/train-images.gz";
    o.labels = "/nonexistent/train-labels.gz";
    o.lr = 0.1f;
    assert_int_equal(lp_train(m, &o, NULL), LP_ERR_IO);
    printf("missing file: %s\n", lp_last_error());
    assert_non_null(strstr(lp_last_error(), "/nonexistent/train-images.gz"));
    o.lr = 0;
    assert_int_equal(lp_train(m, &o, NULL), LP_ERR_ARG);
    lp_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xent_reference), cmocka_unit_test(test_xent_errors),
        cmocka_unit_test(test_fashion_cnn_builder), cmocka_unit_test(test_one_sgd_step),
        cmocka_unit_test(test_short_training), cmocka_unit_test(test_train_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
