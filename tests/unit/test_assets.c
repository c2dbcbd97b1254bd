/* test_assets.c — the bundled default model (assets/fashion_mnist_cnn.onnx): it loads,
 * reaches the test accuracy assets/README.md states on all 10,000 Fashion-MNIST test
 * images, and classifies the sample PNGs (named INDEX_LABEL.png) as their labels.
 * $LOUPE_ASSETS overrides the folder, as it does for the CLI. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loupe.h"
#include "testutil.h"

#define DATA "/usr/share/datasets/fashion-mnist"
#define README_KEY "Measured test accuracy:"

static const char *assets(void) {
    const char *e = getenv("LOUPE_ASSETS");
    return e && *e ? e : LOUPE_ASSETS_DIR;
}

static lp_model *load_model(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/fashion_mnist_cnn.onnx", assets());
    lp_model *m = NULL;
    lp_status s = lp_model_load(path, &m);
    if (s != LP_OK) printf("%s\n", lp_last_error());
    assert_int_equal(s, LP_OK);
    return m;
}

/* The accuracy README.md states after README_KEY, or -1. */
static double readme_accuracy(void) {
    char path[1024], line[1024];
    snprintf(path, sizeof path, "%s/README.md", assets());
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    double acc = -1;
    while (acc < 0 && fgets(line, sizeof line, f)) {
        char *p = strstr(line, README_KEY);
        if (!p) continue;
        p += strlen(README_KEY);
        while (*p && !isdigit((unsigned char)*p)) p++;
        acc = atof(p);
    }
    fclose(f);
    return acc;
}

static void test_model_accuracy(void **state) {
    (void)state;
    if (!tu_exists(DATA "/t10k-images-idx3-ubyte.gz")) {
        printf("SKIPPED: Fashion-MNIST not found under %s\n", DATA);
        skip();
    }
    double stated = readme_accuracy();
    printf("README states test accuracy %.4f\n", stated);
    assert_true(stated >= 0.89 && stated <= 1.0);
    lp_model *m = load_model();
    lp_tensor *x, *y;
    assert_int_equal(lp_idx_load_images(DATA "/t10k-images-idx3-ubyte.gz", &x), LP_OK);
    assert_int_equal(lp_idx_load_labels(DATA "/t10k-labels-idx1-ubyte.gz", &y), LP_OK);
    assert_int_equal(x->shape[0], 10000);
    float acc = 0, loss = 0;
    lp_status s = lp_evaluate(m, LP_DEVICE_CPU, x, y, &acc, &loss);
    if (s != LP_OK) printf("%s\n", lp_last_error());
    assert_int_equal(s, LP_OK);
    printf("bundled model: test accuracy %.4f, loss %.4f\n", acc, loss);
    assert_true(acc >= 0.89f);
    assert_true(acc >= stated - 0.002);
    lp_tensor_free(x);
    lp_tensor_free(y);
    lp_model_free(m);
}

/* "T-shirt/top" -> "t_shirt_top": how sample file names spell labels. */
static void slug(const char *s, char *out, size_t len) {
    size_t k = 0;
    int gap = 0;
    for (; *s && k + 1 < len; s++) {
        if (isalnum((unsigned char)*s)) {
            if (gap && k) out[k++] = '_';
            out[k++] = (char)tolower((unsigned char)*s);
            gap = 0;
        } else {
            gap = 1;
        }
    }
    out[k] = 0;
}

static void test_sample_images(void **state) {
    (void)state;
    char path[1024], names[10][64];
    snprintf(path, sizeof path, "%s/fashion_mnist_labels.txt", assets());
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int n_names = 0;
    char line[256];
    while (n_names < 10 && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        slug(line, names[n_names++], sizeof names[0]);
    }
    fclose(f);
    assert_int_equal(n_names, 10);

    lp_model *m = load_model();
    lp_run *r;
    assert_int_equal(lp_run_new(m, LP_DEVICE_CPU, &r), LP_OK);
    snprintf(path, sizeof path, "%s/images", assets());
    DIR *d = opendir(path);
    assert_non_null(d);
    struct dirent *e;
    int total = 0, right = 0;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".png")) continue;
        char want[64];
        const char *us = strchr(e->d_name, '_');
        assert_non_null(us);
        snprintf(want, sizeof want, "%.*s", (int)(len - 4 - (size_t)(us + 1 - e->d_name)), us + 1);
        int label = -1;
        for (int i = 0; i < 10; i++)
            if (!strcmp(names[i], want)) label = i;
        if (label < 0) printf("%s: label '%s' is not in the labels file\n", e->d_name, want);
        assert_true(label >= 0);

        char file[1300];
        snprintf(file, sizeof file, "%s/%s", path, e->d_name);
        lp_image img;
        assert_int_equal(lp_image_load(file, &img), LP_OK);
        assert_int_equal(img.w, 28);
        assert_int_equal(img.h, 28);
        lp_preprocess pp = {0, 0, 1, {0, 0, 0}, {1, 1, 1}};
        lp_tensor *x;
        assert_int_equal(lp_images_to_tensor(&img, 1, &pp, &x), LP_OK);
        assert_int_equal(lp_run_forward(r, x), LP_OK);
        const lp_tensor *y = lp_run_output(r);
        float logits[10];
        assert_int_equal(lp_tensor_read(y, logits, sizeof logits), LP_OK);
        int best = 0;
        for (int i = 1; i < 10; i++)
            if (logits[i] > logits[best]) best = i;
        printf("%-20s predicted %-12s %s\n", e->d_name, names[best], best == label ? "" : "(WRONG)");
        total++;
        right += best == label;
        lp_tensor_free(x);
        lp_image_free(&img);
    }
    closedir(d);
    printf("%d of %d sample images classified as their labels\n", right, total);
    assert_true(total >= 8);
    assert_true(right * 4 >= total * 3); /* most: at least 3 in 4 */
    lp_run_free(r);
    lp_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_accuracy),
        cmocka_unit_test(test_sample_images),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
