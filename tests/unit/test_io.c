/* test_io.c — engine/io: decoding every PNG/JPEG flavour of tests/data/images against
 * PIL's pixels (made by make_images.py), corrupt and missing files, .npy round trips and
 * errors, IDX (Fashion-MNIST), preprocessing against torchvision, colour maps, channel
 * grids and atomic writes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "io/io_internal.h"
#include "testutil.h"

#define IMG(name) LOUPE_TEST_DATA "/images/" name
#define FMNIST "/usr/share/datasets/fashion-mnist/"

static char tmpdir[64];

static int setup(void **state) {
    (void)state;
    strcpy(tmpdir, "/tmp/loupe_test_io_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *tmp(const char *name) {
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static void expect_ok(lp_status s) {
    if (s != LP_OK) fail_msg("status %s: %s", lp_status_str(s), lp_last_error());
}

static void expect_err(lp_status got, lp_status want, const char *needle) {
    if (got != want)
        fail_msg("expected %s, got %s (%s)", lp_status_str(want), lp_status_str(got), lp_last_error());
    if (needle && !strstr(lp_last_error(), needle)) fail_msg("message '%s' lacks '%s'", lp_last_error(), needle);
    printf("  ok error: %s\n", lp_last_error());
}

/* ---- decoding ------------------------------------------------------------- */
static void check_decode(const char *img_path, const char *npy_path, double atol) {
    lp_image im;
    expect_ok(lp_image_load(img_path, &im));
    lp_tensor *ref;
    expect_ok(lp_npy_load(npy_path, &ref));
    assert_int_equal(ref->ndim, 3);
    if (im.h != ref->shape[0] || im.w != ref->shape[1] || im.c != ref->shape[2])
        fail_msg("%s: decoded %dx%dx%d, PIL %lldx%lldx%lld", img_path, im.h, im.w, im.c, (long long)ref->shape[0],
                 (long long)ref->shape[1], (long long)ref->shape[2]);
    int64_t n = lp_tensor_numel(ref);
    int64_t bad = tu_report_mismatch(img_path, im.px, ref->data, n, atol, 0.0, 5);
    printf("  %s: %dx%dx%d, max |diff| %.3g\n", img_path, im.w, im.h, im.c, tu_max_abs(im.px, ref->data, n));
    assert_int_equal(bad, 0);
    lp_tensor_free(ref);
    lp_image_free(&im);
}

static void test_decode_formats(void **state) {
    (void)state;
    /* 8- and 16-bit PNGs are exact (both sides divide the same integers); JPEGs use the
     * same libjpeg-turbo with default (islow, fancy upsampling) settings as PIL. */
    check_decode(IMG("rgb.png"), IMG("rgb.npy"), 1e-6);
    check_decode(IMG("rgba.png"), IMG("rgba.npy"), 1e-6);
    check_decode(IMG("gray.png"), IMG("gray.npy"), 1e-6);
    check_decode(IMG("gray_alpha.png"), IMG("gray_alpha.npy"), 1e-6);
    check_decode(IMG("palette.png"), IMG("palette.npy"), 1e-6);
    check_decode(IMG("gray16.png"), IMG("gray16.npy"), 1e-6);
    check_decode(IMG("rgb16.png"), IMG("rgb16.npy"), 1e-6);
    check_decode(IMG("rgb.jpg"), IMG("rgb_jpg.npy"), 1.5 / 255);
    check_decode(IMG("rgb_progressive.jpg"), IMG("rgb_progressive_jpg.npy"), 1.5 / 255);
    check_decode(IMG("gray.jpg"), IMG("gray_jpg.npy"), 1.5 / 255);
}

static void test_decode_errors(void **state) {
    (void)state;
    const char *bad[] = {IMG("bad_truncated.png"), IMG("bad_crc.png"), IMG("bad_truncated.jpg"),
                         IMG("bad_not_image.png")};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        lp_image im = {1, 1, 1, NULL};
        expect_err(lp_image_load(bad[i], &im), LP_ERR_PARSE, bad[i]);
        assert_null(im.px);
    }
    expect_err(lp_image_load(IMG("bad_not_image.png"), &(lp_image){0}), LP_ERR_PARSE, "not a PNG or JPEG file");
    expect_err(lp_image_load(IMG("bad_truncated.jpg"), &(lp_image){0}), LP_ERR_PARSE, "corrupt JPEG data");
    expect_err(lp_image_load(IMG("no_such_file.png"), &(lp_image){0}), LP_ERR_IO, "no_such_file.png");
    /* Empty and signature-only buffers. */
    lp_image im;
    expect_err(lp_image_decode("", 0, "empty", &im), LP_ERR_PARSE, "empty");
    const unsigned char sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    expect_err(lp_image_decode(sig, sizeof sig, "sig.png", &im), LP_ERR_PARSE, "sig.png");
    const unsigned char soi[3] = {0xFF, 0xD8, 0xFF};
    expect_err(lp_image_decode(soi, sizeof soi, "soi.jpg", &im), LP_ERR_PARSE, "soi.jpg");
}

/* A PNG header claiming a huge image must be refused before any allocation. */
static void test_decode_huge_dims(void **state) {
    (void)state;
    FILE *f = fopen(IMG("gray.png"), "rb");
    assert_non_null(f);
    unsigned char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    /* IHDR width/height at bytes 16..23; the CRC no longer matches, and libpng checks
     * it first, so patch the CRC too (zlib's crc32 over type + data). */
    unsigned char *ihdr = buf + 8; /* length, "IHDR", 13 data bytes, CRC */
    const unsigned char dims[8] = {0, 0, 0x7F, 0xFF, 0, 0, 0x7F, 0xFF}; /* 32767 x 32767 */
    memcpy(ihdr + 8, dims, 8);
    extern unsigned long crc32(unsigned long, const unsigned char *, unsigned int);
    unsigned long crc = crc32(0, ihdr + 4, 17);
    unsigned char *c = ihdr + 4 + 17;
    c[0] = (unsigned char)(crc >> 24), c[1] = (unsigned char)(crc >> 16), c[2] = (unsigned char)(crc >> 8),
    c[3] = (unsigned char)crc;
    lp_image im;
    expect_err(lp_image_decode(buf, n, "huge.png", &im), LP_ERR_UNSUPPORTED, "pixel limit");
}

/* ---- saving ------------------------------------------------------------------ */
static void test_png_save_roundtrip(void **state) {
    (void)state;
    for (int c = 1; c <= 4; c++) {
        lp_image a;
        expect_ok(lp_image_alloc(&a, 7, 5, c));
        for (int i = 0; i < 7 * 5 * c; i++) a.px[i] = (float)((i * 37) % 256) / 255.0f;
        const char *p = tmp("out.png");
        expect_ok(lp_image_save_png(p, &a));
        assert_false(tu_exists(tmp("out.png.tmp")));
        lp_image b;
        expect_ok(lp_image_load(p, &b));
        /* Gray+alpha reads back as RGBA. */
        int want_c = c == 2 ? 4 : c;
        assert_int_equal(b.c, want_c);
        assert_int_equal(b.w, 7);
        assert_int_equal(b.h, 5);
        for (int i = 0; i < 7 * 5; i++)
            for (int k = 0; k < want_c; k++) {
                int src_k = c == 2 ? (k == 3 ? 1 : 0) : k;
                float want = a.px[i * c + src_k], got = b.px[i * want_c + k];
                if (fabsf(want - got) > 0.5f / 255) fail_msg("c=%d pixel %d ch %d: saved %g read %g", c, i, k, want, got);
            }
        lp_image_free(&a);
        lp_image_free(&b);
    }
}

static void test_atomic_write_failure(void **state) {
    (void)state;
    lp_image a;
    expect_ok(lp_image_alloc(&a, 2, 2, 3));
    const char *dir = tmp("missing_dir");
    char p[300];
    snprintf(p, sizeof p, "%s/x.png", dir);
    expect_err(lp_image_save_png(p, &a), LP_ERR_IO, "x.png");
    assert_false(tu_exists(dir));
    lp_tensor *t;
    int64_t s[1] = {3};
    expect_ok(lp_tensor_new(&t, LP_DEVICE_CPU, LP_F32, 1, s));
    snprintf(p, sizeof p, "%s/x.npy", dir);
    expect_err(lp_npy_save(p, t), LP_ERR_IO, "x.npy");
    assert_false(tu_exists(dir));
    /* Commit of a missing temp file fails and creates nothing. */
    expect_err(lp_file_commit(tmp("nope.tmp"), tmp("nope")), LP_ERR_IO, "nope");
    assert_false(tu_exists(tmp("nope")));
    lp_tensor_free(t);
    lp_image_free(&a);
}

/* ---- npy ------------------------------------------------------------------ */
static void test_npy_roundtrip(void **state) {
    (void)state;
    int64_t shapes[5][4] = {{0}, {5}, {3, 4}, {2, 3, 4}, {2, 1, 3, 2}};
    for (int r = 0; r <= 4; r++) {
        lp_tensor *t, *u;
        expect_ok(lp_tensor_new(&t, LP_DEVICE_CPU, LP_F32, r, shapes[r]));
        float *d = t->data;
        for (int64_t i = 0; i < lp_tensor_numel(t); i++) d[i] = (float)i * 0.5f - 3.25f;
        const char *p = tmp("rt.npy");
        expect_ok(lp_npy_save(p, t));
        assert_false(tu_exists(tmp("rt.npy.tmp")));
        /* NumPy's layout: the data starts at a multiple of 64 and the header ends in '\n'. */
        struct stat st;
        assert_int_equal(stat(p, &st), 0);
        int64_t hdr = (int64_t)st.st_size - (int64_t)t->nbytes;
        if (hdr % 64 != 0) fail_msg("rank %d: header of %lld bytes is not 64-aligned", r, (long long)hdr);
        expect_ok(lp_npy_load(p, &u));
        assert_int_equal(u->ndim, r);
        for (int i = 0; i < r; i++) assert_int_equal(u->shape[i], t->shape[i]);
        assert_int_equal(tu_report_mismatch("npy", u->data, t->data, lp_tensor_numel(t), 0, 0, 5), 0);
        lp_tensor_free(t);
        lp_tensor_free(u);
    }
}

static void write_npy_raw(const char *p, int major, const char *dict, size_t data_bytes) {
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    size_t pre = major == 1 ? 10 : 12;
    size_t len = strlen(dict) + 1, total = (pre + len + 63) / 64 * 64;
    size_t hl = total - pre;
    fwrite("\x93NUMPY", 1, 6, f);
    fputc(major, f);
    fputc(0, f);
    for (size_t i = 0; i < pre - 8; i++) fputc((int)((hl >> (8 * i)) & 0xFF), f);
    fputs(dict, f);
    for (size_t i = len; i < hl; i++) fputc(' ', f);
    fputc('\n', f);
    for (size_t i = 0; i < data_bytes; i++) fputc(0, f);
    fclose(f);
}

static void test_npy_errors(void **state) {
    (void)state;
    lp_tensor *t = NULL;
    const char *p = tmp("f8.npy");
    write_npy_raw(p, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 16);
    expect_err(lp_npy_load(p, &t), LP_ERR_UNSUPPORTED, "dtype '<f8' is not supported (float32 only)");
    expect_err(lp_npy_load(p, &t), LP_ERR_UNSUPPORTED, "f8.npy");
    p = tmp("fortran.npy");
    write_npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 16);
    expect_err(lp_npy_load(p, &t), LP_ERR_UNSUPPORTED, "fortran");
    p = tmp("short.npy");
    write_npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 20);
    expect_err(lp_npy_load(p, &t), LP_ERR_PARSE, "short.npy: truncated");
    p = tmp("long.npy");
    write_npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 12);
    expect_err(lp_npy_load(p, &t), LP_ERR_PARSE, "long.npy");
    p = tmp("rank7.npy");
    write_npy_raw(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, 1), }", 4);
    expect_err(lp_npy_load(p, &t), LP_ERR_UNSUPPORTED, "rank");
    p = tmp("garbage.npy");
    FILE *f = fopen(p, "wb");
    fputs("not numpy at all", f);
    fclose(f);
    expect_err(lp_npy_load(p, &t), LP_ERR_PARSE, "garbage.npy");
    expect_err(lp_npy_load(tmp("absent.npy"), &t), LP_ERR_IO, "absent.npy");
    assert_null(t);
    /* Format 2.0 (4-byte header length) loads. */
    p = tmp("v2.npy");
    write_npy_raw(p, 2, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 1), }", 12);
    expect_ok(lp_npy_load(p, &t));
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 3);
    assert_int_equal(t->shape[1], 1);
    lp_tensor_free(t);
}

/* ---- IDX ------------------------------------------------------------------- */
static void test_idx_small(void **state) {
    (void)state;
    const char *p = tmp("small-idx3");
    FILE *f = fopen(p, "wb");
    const unsigned char hdr[16] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3};
    fwrite(hdr, 1, 16, f);
    for (int i = 0; i < 12; i++) fputc(i * 20, f);
    fclose(f);
    lp_tensor *t;
    expect_ok(lp_idx_load_images(p, &t));
    assert_int_equal(t->ndim, 4);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 1);
    assert_int_equal(t->shape[2], 2);
    assert_int_equal(t->shape[3], 3);
    for (int i = 0; i < 12; i++) assert_float_equal(((float *)t->data)[i], i * 20 / 255.0f, 1e-7);
    lp_tensor_free(t);
    expect_err(lp_idx_load_labels(p, &t), LP_ERR_PARSE, "magic");
    p = tmp("short-idx3");
    f = fopen(p, "wb");
    fwrite(hdr, 1, 16, f);
    for (int i = 0; i < 11; i++) fputc(i, f);
    fclose(f);
    expect_err(lp_idx_load_images(p, &t), LP_ERR_PARSE, "short-idx3: truncated");
    expect_err(lp_idx_load_images(tmp("absent-idx3"), &t), LP_ERR_IO, "absent-idx3");
}

static void test_idx_fashion_mnist(void **state) {
    (void)state;
    if (!tu_exists(FMNIST "t10k-images-idx3-ubyte.gz") || !tu_exists(FMNIST "t10k-labels-idx1-ubyte.gz")) {
        printf("  SKIP: Fashion-MNIST test set not found under " FMNIST "\n");
        skip();
    }
    lp_tensor *x, *y;
    expect_ok(lp_idx_load_images(FMNIST "t10k-images-idx3-ubyte.gz", &x));
    expect_ok(lp_idx_load_labels(FMNIST "t10k-labels-idx1-ubyte.gz", &y));
    assert_int_equal(x->ndim, 4);
    assert_int_equal(x->shape[0], 10000);
    assert_int_equal(x->shape[1], 1);
    assert_int_equal(x->shape[2], 28);
    assert_int_equal(x->shape[3], 28);
    assert_int_equal(y->ndim, 1);
    assert_int_equal(y->shape[0], 10000);
    assert_int_equal(y->dtype, LP_I64);
    const float *px = x->data;
    double sum = 0;
    for (int64_t i = 0; i < lp_tensor_numel(x); i++) {
        if (!(px[i] >= 0.0f && px[i] <= 1.0f)) fail_msg("pixel %lld = %g outside [0,1]", (long long)i, px[i]);
        sum += px[i];
    }
    /* The test set is balanced: 1000 of each of the 10 classes. */
    int count[10] = {0};
    const int64_t *lab = y->data;
    for (int i = 0; i < 10000; i++) {
        if (lab[i] < 0 || lab[i] > 9) fail_msg("label %d = %lld", i, (long long)lab[i]);
        count[lab[i]]++;
    }
    for (int k = 0; k < 10; k++) assert_int_equal(count[k], 1000);
    /* Fashion-MNIST's mean pixel is about 0.286. */
    double mean = sum / (double)lp_tensor_numel(x);
    printf("  Fashion-MNIST t10k: mean pixel %.4f\n", mean);
    assert_true(mean > 0.27 && mean < 0.30);
    lp_tensor_free(x);
    lp_tensor_free(y);
}

/* ---- preprocessing ------------------------------------------------------------ */
static void check_pp(int size, int crop, const char *ref_path) {
    lp_image im;
    expect_ok(lp_image_load(IMG("rgb.png"), &im));
    lp_preprocess pp = lp_preprocess_imagenet();
    pp.size = size;
    pp.crop = crop;
    lp_tensor *t, *ref;
    expect_ok(lp_images_to_tensor(&im, 1, &pp, &t));
    expect_ok(lp_npy_load(ref_path, &ref));
    assert_int_equal(t->ndim, 4);
    for (int i = 0; i < 4; i++) assert_int_equal(t->shape[i], ref->shape[i]);
    int64_t n = lp_tensor_numel(t);
    /* PIL resizes 8-bit images with 8-bit intermediate rounding; Loupe resizes in float.
     * One or two levels (2/255 / std 0.224) after normalisation: 2.5e-2 absolute. */
    double mx = tu_max_abs(t->data, ref->data, n);
    printf("  resize %d crop %d vs torchvision: max |diff| %.4f\n", size, crop, mx);
    assert_int_equal(tu_report_mismatch(ref_path, t->data, ref->data, n, 2.5e-2, 0, 5), 0);
    lp_tensor_free(t);
    lp_tensor_free(ref);
    lp_image_free(&im);
}

static void test_preprocess_torchvision(void **state) {
    (void)state;
    check_pp(20, 16, IMG("pp_down_20_16.npy"));
    check_pp(36, 32, IMG("pp_up_36_32.npy"));
}

static void test_preprocess_shapes(void **state) {
    (void)state;
    lp_image a, b;
    expect_ok(lp_image_alloc(&a, 6, 4, 1));
    expect_ok(lp_image_alloc(&b, 5, 4, 4));
    for (int i = 0; i < 24; i++) a.px[i] = (float)i / 24.0f;
    for (int i = 0; i < 80; i++) b.px[i] = 0.25f;
    lp_image both[2] = {a, b};
    lp_preprocess pp = {0, 0, 3, {0, 0, 0}, {1, 1, 1}};
    lp_tensor *t = NULL;
    expect_err(lp_images_to_tensor(both, 2, &pp, &t), LP_ERR_SHAPE, "5x4");
    assert_null(t);
    /* No resize, crop 4: gray -> RGB replicates, RGBA drops alpha, crop centred. */
    pp.crop = 4;
    expect_ok(lp_images_to_tensor(both, 2, &pp, &t));
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 3);
    assert_int_equal(t->shape[2], 4);
    assert_int_equal(t->shape[3], 4);
    const float *d = t->data;
    for (int ch = 0; ch < 3; ch++)
        for (int y = 0; y < 4; y++)
            for (int x = 0; x < 4; x++) {
                assert_float_equal(d[(ch * 4 + y) * 4 + x], a.px[y * 6 + x + 1], 1e-6);
                assert_float_equal(d[48 + (ch * 4 + y) * 4 + x], 0.25f, 1e-6);
            }
    lp_tensor_free(t);
    pp.crop = 5;
    expect_err(lp_images_to_tensor(both, 2, &pp, &t), LP_ERR_SHAPE, "crop 5");
    lp_image_free(&a);
    lp_image_free(&b);
}

/* ---- colour maps and grids ----------------------------------------------------- */
static void near_rgb(lp_colormap cm, float v, float r, float g, float b, float tol) {
    float c[3];
    lp_colormap_rgb(cm, v, c);
    if (fabsf(c[0] - r) > tol || fabsf(c[1] - g) > tol || fabsf(c[2] - b) > tol)
        fail_msg("cmap %d at %g: (%g %g %g), want (%g %g %g)", cm, v, c[0], c[1], c[2], r, g, b);
}

static void test_colormaps(void **state) {
    (void)state;
    /* Reference values: matplotlib's viridis/inferno tables at 0, 0.5, 1. */
    near_rgb(LP_CMAP_VIRIDIS, 0.0f, 0.267f, 0.005f, 0.329f, 0.015f);
    near_rgb(LP_CMAP_VIRIDIS, 0.5f, 0.128f, 0.567f, 0.551f, 0.015f);
    near_rgb(LP_CMAP_VIRIDIS, 1.0f, 0.993f, 0.906f, 0.144f, 0.015f);
    near_rgb(LP_CMAP_INFERNO, 0.0f, 0.001f, 0.000f, 0.014f, 0.015f);
    near_rgb(LP_CMAP_INFERNO, 0.5f, 0.735f, 0.216f, 0.330f, 0.015f);
    near_rgb(LP_CMAP_INFERNO, 1.0f, 0.988f, 0.998f, 0.645f, 0.015f);
    near_rgb(LP_CMAP_DIVERGING, 0.0f, 0.969f, 0.969f, 0.969f, 0.005f);
    near_rgb(LP_CMAP_DIVERGING, -1.0f, 0.020f, 0.188f, 0.380f, 0.005f);
    near_rgb(LP_CMAP_DIVERGING, 1.0f, 0.404f, 0.0f, 0.122f, 0.005f);
    near_rgb(LP_CMAP_GRAY, 0.3f, 0.3f, 0.3f, 0.3f, 1e-6f);
    near_rgb(LP_CMAP_GRAY, 7.0f, 1.0f, 1.0f, 1.0f, 0);
}

static void test_channel_grid(void **state) {
    (void)state;
    enum { C = 5, H = 3, W = 4, S = 2 };
    float maps[C * H * W];
    for (int i = 0; i < C * H * W; i++) maps[i] = (float)(i % (H * W)) * (float)(i / (H * W) + 1);
    for (int i = 0; i < H * W; i++) maps[2 * H * W + i] = 7.0f; /* constant channel */
    lp_image g;
    expect_ok(lp_channel_grid(maps, C, H, W, S, LP_CMAP_VIRIDIS, &g));
    /* 5 maps -> 3 columns x 2 rows of 8x6 cells with 1-pixel gaps. */
    assert_int_equal(g.c, 3);
    assert_int_equal(g.w, 3 * W * S + 2);
    assert_int_equal(g.h, 2 * H * S + 1);
    float lo[3], hi[3], mid[3];
    lp_colormap_rgb(LP_CMAP_VIRIDIS, 0.0f, lo);
    lp_colormap_rgb(LP_CMAP_VIRIDIS, 1.0f, hi);
    lp_colormap_rgb(LP_CMAP_VIRIDIS, 0.5f, mid);
    /* Each map scaled to its own range: every cell's first pixel is the min colour,
     * the last the max; the constant map is mid-scale. */
    for (int k = 0; k < C; k++) {
        int ox = (k % 3) * (W * S + 1), oy = (k / 3) * (H * S + 1);
        const float *first = g.px + ((size_t)oy * g.w + ox) * 3;
        const float *last = g.px + ((size_t)(oy + H * S - 1) * g.w + ox + W * S - 1) * 3;
        const float *wl = k == 2 ? mid : lo, *wh = k == 2 ? mid : hi;
        for (int j = 0; j < 3; j++) {
            assert_float_equal(first[j], wl[j], 1e-6);
            assert_float_equal(last[j], wh[j], 1e-6);
        }
    }
    /* A gap pixel is dark, and distinct from the map colours there. */
    const float *gap = g.px + ((size_t)0 * g.w + W * S) * 3;
    assert_true(gap[0] < 0.2f && gap[1] < 0.2f && gap[2] < 0.2f);
    lp_image_free(&g);
    expect_err(lp_channel_grid(maps, 0, H, W, S, LP_CMAP_GRAY, &g), LP_ERR_ARG, "channel grid");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_formats),        cmocka_unit_test(test_decode_errors),
        cmocka_unit_test(test_decode_huge_dims),      cmocka_unit_test(test_png_save_roundtrip),
        cmocka_unit_test(test_atomic_write_failure),  cmocka_unit_test(test_npy_roundtrip),
        cmocka_unit_test(test_npy_errors),            cmocka_unit_test(test_idx_small),
        cmocka_unit_test(test_idx_fashion_mnist),     cmocka_unit_test(test_preprocess_torchvision),
        cmocka_unit_test(test_preprocess_shapes),     cmocka_unit_test(test_colormaps),
        cmocka_unit_test(test_channel_grid),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
