/* test_onnx.c — ONNX import/export on the fixtures of tests/data/onnx (made by
 * make_fixtures.py): folding (BN into Conv, Shape chains), weight counts, external
 * data, error statuses and messages, corrupt bytes, and a save/load round trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>

#include "internal.h"
#include "testutil.h"

#define FIX(name) LOUPE_TEST_DATA "/onnx/" name

/* A number from expected.txt ("name value" lines written by make_fixtures.py). */
static long long expected(const char *key) {
    FILE *f = fopen(FIX("expected.txt"), "r");
    assert_non_null(f);
    char line[256], k[128];
    long long v, found = -1;
    while (fgets(line, sizeof line, f))
        if (line[0] != '#' && sscanf(line, "%127s %lld", k, &v) == 2 && !strcmp(k, key)) found = v;
    fclose(f);
    if (found < 0) fail_msg("expected.txt has no '%s'", key);
    return found;
}

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Minimal reader for the small float32 .npy files the script writes. */
static float *read_npy(const char *path, int64_t *numel) {
    size_t len;
    unsigned char *buf = read_all(path, &len);
    assert_true(len > 10 && !memcmp(buf, "\x93NUMPY", 6));
    size_t hlen = buf[8] | (size_t)buf[9] << 8, off = 10 + hlen;
    assert_non_null(strstr((char *)buf + 10, "'<f4'"));
    *numel = (int64_t)((len - off) / 4);
    float *out = malloc(len - off + 4);
    memcpy(out, buf + off, len - off);
    free(buf);
    return out;
}

static int count_op(const lp_model *m, const char *op) {
    int c = 0;
    for (int i = 0; i < lp_model_num_nodes(m); i++) {
        lp_node_info info;
        assert_int_equal(lp_model_node_info(m, i, &info), LP_OK);
        c += !strcmp(info.op, op);
    }
    return c;
}

static lp_model *load_ok(const char *path) {
    lp_model *m = NULL;
    lp_status s = lp_model_load(path, &m);
    if (s != LP_OK) fail_msg("%s: %s: %s", path, lp_status_str(s), lp_last_error());
    assert_non_null(m);
    return m;
}

static void expect_error(const char *path, lp_status want, const char *const *needles) {
    lp_model *m = (lp_model *)0x1;
    lp_status s = lp_model_load(path, &m);
    if (s != want) fail_msg("%s: got %s (%s), want %s", path, lp_status_str(s), lp_last_error(), lp_status_str(want));
    assert_null(m);
    for (; *needles; needles++)
        if (!strstr(lp_last_error(), *needles)) fail_msg("%s: message '%s' does not name '%s'", path, lp_last_error(), *needles);
}

/* Run the model on tiny_in.npy and compare with PyTorch's tiny_out.npy. */
static void check_tiny_forward(lp_model *m) {
    int64_t nin, nref;
    float *x = read_npy(FIX("tiny_in.npy"), &nin);
    float *ref = read_npy(FIX("tiny_out.npy"), &nref);
    assert_int_equal(nin, 64);
    int64_t shape[4] = {1, 1, 8, 8};
    lp_tensor *in;
    assert_int_equal(lp_tensor_new(&in, LP_DEVICE_CPU, LP_F32, 4, shape), LP_OK);
    memcpy(in->data, x, 64 * sizeof(float));
    lp_run *r;
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &r), LP_OK);
    lp_status s = lp_run_forward(r, in);
    if (s != LP_OK) fail_msg("forward: %s", lp_last_error());
    const lp_tensor *y = lp_run_output(r);
    assert_non_null(y);
    assert_int_equal(lp_tensor_numel(y), nref);
    float got[64];
    assert_int_equal(lp_tensor_read(y, got, (size_t)nref * sizeof(float)), LP_OK);
    double err = tu_rel_l2(got, ref, nref);
    tu_report_mismatch("tiny logits", got, ref, nref, 1e-5, 1e-4, 5);
    assert_true(err < 1e-5);
    lp_run_free(r);
    lp_tensor_free(in);
    free(x);
    free(ref);
}

static void check_tiny(lp_model *m) {
    assert_int_equal(lp_model_num_nodes(m), expected("tiny_nodes"));
    assert_int_equal(count_op(m, "BatchNormalization"), 0);
    assert_int_equal(count_op(m, "Conv"), 2);
    assert_int_equal(lp_model_param_count(m), expected("tiny_params"));
    assert_string_equal(lp_model_input_name(m), "input");
    assert_string_equal(lp_model_output_name(m), "logits");
    int nd;
    int64_t shape[LP_MAX_DIMS];
    assert_int_equal(lp_model_input_shape(m, &nd, shape), LP_OK);
    assert_int_equal(nd, 4);
    assert_true(shape[0] == 1 && shape[1] == 1 && shape[2] == 8 && shape[3] == 8);
    /* The conv keeps its name and now produces the BN's output value. */
    lp_node_info info;
    assert_int_equal(lp_model_node_info(m, 0, &info), LP_OK);
    assert_string_equal(info.name, "/conv1/Conv");
    assert_string_equal(info.output, "/bn1/BatchNormalization_output_0");
    assert_int_equal(info.ndim, 4);
    assert_true(info.shape[1] == 4 && info.shape[2] == 8 && info.shape[3] == 8);
    assert_false(lp_model_has_value(m, "/conv1/Conv_output_0"));
    assert_false(lp_model_has_value(m, "bn1.running_var"));
    assert_int_equal(lp_model_node_info(m, lp_model_num_nodes(m) - 1, &info), LP_OK);
    assert_int_equal(info.ndim, 2);
    assert_true(info.shape[0] == 1 && info.shape[1] == 5);
}

static void test_tiny_folds_bn(void **state) {
    (void)state;
    lp_model *m = load_ok(FIX("tiny.onnx"));
    check_tiny(m);
    check_tiny_forward(m);
    lp_model_free(m);
}

static void test_external_data(void **state) {
    (void)state;
    lp_model *m = load_ok(FIX("tiny_ext.onnx"));
    check_tiny(m);
    check_tiny_forward(m);
    lp_model_free(m);

    expect_error(FIX("tiny_ext_missing.onnx"), LP_ERR_IO, (const char *[]){"missing.data", "conv1.weight", NULL});
    expect_error(FIX("ext_escape.onnx"), LP_ERR_PARSE, (const char *[]){"ext_escape.onnx", "w_escape", NULL});
    /* From memory there is no folder to read external data from. */
    size_t len;
    unsigned char *buf = read_all(FIX("tiny_ext.onnx"), &len);
    m = (lp_model *)0x1;
    assert_int_equal(lp_model_load_mem(buf, len, "mem.onnx", NULL, &m), LP_ERR_IO);
    assert_null(m);
    assert_non_null(strstr(lp_last_error(), "mem.onnx"));
    free(buf);
}

static void test_shape_chain_folds(void **state) {
    (void)state;
    lp_model *m = load_ok(FIX("shape_chain.onnx"));
    assert_int_equal(lp_model_num_nodes(m), expected("shape_chain_nodes"));
    assert_int_equal(count_op(m, "Relu"), 1);
    assert_int_equal(count_op(m, "Reshape"), 1);
    assert_int_equal(count_op(m, "Shape"), 0);
    lp_node_info info;
    assert_int_equal(lp_model_node_info(m, 1, &info), LP_OK);
    assert_string_equal(info.op, "Reshape");
    assert_int_equal(info.ndim, 2);
    assert_true(info.shape[0] == 2 && info.shape[1] == 60);
    /* The folded target shape copies the batch from the input, so other batch sizes work. */
    int shp = lp_model_find_value(m, "shp");
    assert_true(shp >= 0 && m->values[shp].init && lp_tensor_numel(m->values[shp].init) == 2);
    const int64_t *t = m->values[shp].init->data;
    assert_true(t[0] == 0 && t[1] == -1);
    lp_model_free(m);
}

static void test_standalone_bn_stays(void **state) {
    (void)state;
    lp_model *m = load_ok(FIX("bn_standalone.onnx"));
    assert_int_equal(lp_model_num_nodes(m), expected("bn_standalone_nodes"));
    assert_int_equal(count_op(m, "BatchNormalization"), 1);
    assert_int_equal(lp_model_param_count(m), expected("bn_standalone_params"));
    lp_model_free(m);
}

static void test_initializer_types(void **state) {
    (void)state;
    lp_model *m = load_ok(FIX("dtypes.onnx"));
    assert_int_equal(lp_model_param_count(m), expected("dtypes_params"));
    assert_false(lp_model_has_value(m, "unused_half"));
    int b = lp_model_find_value(m, "b_double");
    assert_true(b >= 0 && m->values[b].init && m->values[b].init->dtype == LP_F32);
    const float want[6] = {0.5f, -1.25f, 2.0f, 0.0f, 1.0f, -3.5f};
    assert_int_equal(tu_report_mismatch("b_double", m->values[b].init->data, want, 6, 0, 0, 6), 0);
    lp_node_info info;
    assert_int_equal(lp_model_node_info(m, 1, &info), LP_OK);
    assert_true(info.ndim == 2 && info.shape[0] == 2 && info.shape[1] == 3);
    lp_model_free(m);
    expect_error(FIX("fp16_used.onnx"), LP_ERR_UNSUPPORTED, (const char *[]){"fp16_used.onnx", "add_half", "unused_half", "FLOAT16", NULL});
}

static void test_errors(void **state) {
    (void)state;
    expect_error(FIX("no_such_model.onnx"), LP_ERR_IO, (const char *[]){"no_such_model.onnx", NULL});
    expect_error(FIX("unknown_op.onnx"), LP_ERR_UNSUPPORTED,
                 (const char *[]){"unknown_op.onnx", "frob1", "FrobnicateXYZ", "unsupported op", NULL});
    expect_error(FIX("missing_init.onnx"), LP_ERR_PARSE, (const char *[]){"missing_init.onnx", "conv_missing", "w_missing", NULL});
    expect_error(FIX("graph_attr.onnx"), LP_ERR_UNSUPPORTED, (const char *[]){"graph_attr.onnx", "if1", NULL});
    expect_error(FIX("bad_count.onnx"), LP_ERR_PARSE, (const char *[]){"bad_count.onnx", "w_short", "70", "72", NULL});
    expect_error(FIX("expected.txt"), LP_ERR_PARSE, (const char *[]){"expected.txt", "not a valid ONNX model", NULL});
    /* Wrong weight rank is found by the Conv's shape inference. */
    lp_model *m = (lp_model *)0x1;
    lp_status s = lp_model_load(FIX("bad_conv_rank.onnx"), &m);
    assert_int_not_equal(s, LP_OK);
    assert_null(m);
    if (!strstr(lp_last_error(), "conv_badrank") || !strstr(lp_last_error(), "bad_conv_rank.onnx"))
        fail_msg("message '%s' does not name the node and file", lp_last_error());
}

/* Truncated and bit-flipped copies of a good file must fail cleanly (or load), never
 * crash; under ASan this also checks for out-of-bounds reads. */
static void test_corrupt_bytes(void **state) {
    (void)state;
    size_t len;
    unsigned char *buf = read_all(FIX("tiny.onnx"), &len);
    int failures = 0;
    for (size_t cut = 0; cut < len; cut += 13) {
        lp_model *m = NULL;
        lp_status s = lp_model_load_mem(buf, cut, "cut.onnx", NULL, &m);
        if (s != LP_OK) {
            assert_null(m);
            assert_non_null(strstr(lp_last_error(), "cut.onnx"));
            failures++;
        }
        lp_model_free(m);
    }
    assert_true(failures > 0);
    lp_model *m = NULL;
    assert_int_equal(lp_model_load_mem(buf, len / 2, "half.onnx", NULL, &m), LP_ERR_PARSE);
    tu_rng rng = {42};
    unsigned char *copy = malloc(len);
    for (int t = 0; t < 300; t++) {
        memcpy(copy, buf, len);
        for (int f = 0; f < 4; f++) {
            size_t pos = (size_t)(tu_next(&rng) % len);
            copy[pos] ^= (unsigned char)(1u << (tu_next(&rng) % 8));
        }
        m = NULL;
        lp_status s = lp_model_load_mem(copy, len, "flip.onnx", NULL, &m);
        if (s != LP_OK) {
            assert_null(m);
            assert_true(lp_last_error()[0] != 0);
        }
        lp_model_free(m);
    }
    free(copy);
    free(buf);
}

/* Inputs the fuzzer once crashed on (tests/data/onnx/fuzz/): each must now load or
 * fail with a message. Run under -DLOUPE_SANITIZE=ON to catch a regression. */
static void test_fuzz_regressions(void **state) {
    (void)state;
    DIR *d = opendir(FIX("fuzz"));
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t nl = strlen(e->d_name);
        if (e->d_name[0] == '.' || nl < 5 || strcmp(e->d_name + nl - 5, ".onnx")) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", FIX("fuzz"), e->d_name);
        size_t len;
        unsigned char *buf = read_all(path, &len);
        lp_model *m = NULL;
        lp_status s = lp_model_load_mem(buf, len, e->d_name, NULL, &m);
        if (s != LP_OK) {
            assert_null(m);
            if (!strstr(lp_last_error(), e->d_name)) fail_msg("%s: message '%s' does not name the file", path, lp_last_error());
        }
        lp_model_free(m);
        free(buf);
        n++;
    }
    closedir(d);
    assert_true(n > 0);
}

/* Prepend a length-delimited field (number `num`) around buf[*at..end). */
static void wrap_field(unsigned char *buf, size_t *at, size_t end, int num) {
    size_t len = end - *at;
    unsigned char v[10];
    int k = 0;
    do {
        v[k++] = (unsigned char)((len & 0x7f) | (len > 0x7f ? 0x80 : 0));
        len >>= 7;
    } while (len);
    *at -= (size_t)k;
    memcpy(buf + *at, v, (size_t)k);
    buf[--*at] = (unsigned char)(num << 3 | 2);
}

/* Subgraphs nested 200000 deep (attribute.g -> graph.node -> node.attribute ...):
 * a refused file, not a stack overflow in the protobuf parser. */
static void test_deep_nesting(void **state) {
    (void)state;
    size_t cap = 16u << 20, at = cap;
    unsigned char *buf = malloc(cap);
    assert_non_null(buf);
    for (int i = 0; i < 200000; i++) {
        wrap_field(buf, &at, cap, 5); /* node.attribute */
        wrap_field(buf, &at, cap, 1); /* graph.node */
        wrap_field(buf, &at, cap, 6); /* attribute.g */
    }
    wrap_field(buf, &at, cap, 7); /* model.graph */
    lp_model *m = NULL;
    assert_int_equal(lp_model_load_mem(buf + at, cap - at, "deep.onnx", NULL, &m), LP_ERR_PARSE);
    assert_null(m);
    assert_non_null(strstr(lp_last_error(), "deep.onnx"));
    free(buf);
}

static void test_save_round_trip(void **state) {
    (void)state;
    lp_model *a = load_ok(FIX("tiny.onnx"));
    char path[256];
    snprintf(path, sizeof path, "/tmp/loupe_test_onnx_%d.onnx", (int)getpid());
    lp_status s = lp_model_save(a, path);
    if (s != LP_OK) fail_msg("save: %s", lp_last_error());
    lp_model *b = load_ok(path);
    unlink(path);
    assert_int_equal(lp_model_num_nodes(b), lp_model_num_nodes(a));
    assert_int_equal(lp_model_param_count(b), lp_model_param_count(a));
    assert_string_equal(lp_model_input_name(b), lp_model_input_name(a));
    assert_string_equal(lp_model_output_name(b), lp_model_output_name(a));
    for (int i = 0; i < a->n_nodes; i++) {
        const lp_node *na = &a->nodes[i], *nb = &b->nodes[i];
        assert_string_equal(na->name, nb->name);
        assert_string_equal(na->op_type, nb->op_type);
        assert_int_equal(na->n_in, nb->n_in);
        assert_int_equal(na->n_attr, nb->n_attr);
        for (int k = 0; k < na->n_in; k++) {
            if (na->in[k] < 0) {
                assert_int_equal(nb->in[k], -1);
                continue;
            }
            const lp_value *va = &a->values[na->in[k]], *vb = &b->values[nb->in[k]];
            assert_string_equal(va->name, vb->name);
            assert_true(lp_shape_eq(&va->shape, &vb->shape));
            assert_true(!va->init == !vb->init);
            if (va->init) {
                assert_int_equal(va->init->nbytes, vb->init->nbytes);
                if (memcmp(va->init->data, vb->init->data, va->init->nbytes))
                    fail_msg("initializer '%s' changed in the round trip", va->name);
            }
        }
        for (int k = 0; k < na->n_attr; k++) {
            const lp_attr *at = lp_node_attr(nb, na->attr[k].name);
            assert_non_null(at);
            assert_int_equal(at->type, na->attr[k].type);
        }
    }
    lp_model_free(a);
    lp_model_free(b);
    /* An unwritable destination is an I/O error naming it. */
    a = load_ok(FIX("shape_chain.onnx"));
    assert_int_equal(lp_model_save(a, "/nonexistent_dir/x.onnx"), LP_ERR_IO);
    assert_non_null(strstr(lp_last_error(), "/nonexistent_dir/x.onnx"));
    lp_model_free(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_folds_bn),
        cmocka_unit_test(test_external_data),
        cmocka_unit_test(test_shape_chain_folds),
        cmocka_unit_test(test_standalone_bn_stays),
        cmocka_unit_test(test_initializer_types),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_corrupt_bytes),
        cmocka_unit_test(test_fuzz_regressions),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_save_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
