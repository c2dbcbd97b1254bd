/* train.c — `loupe train`: trains the small Fashion-MNIST CNN from scratch (how the
 * bundled assets/fashion_mnist_cnn.onnx was made), with a progress bar per epoch and
 * the test accuracy after each, then saves the model as ONNX. */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define DEFAULT_DATA "/usr/share/datasets/fashion-mnist"

static void help(void) {
    printf("usage: loupe train [options]\n\n"
           "Train the small Fashion-MNIST CNN (conv1-pool1-conv2-pool2-fc1-fc2) with SGD and\n"
           "momentum on softmax cross-entropy; images are fed in [0,1] with no mean/std.\n\n"
           "  --data DIR          folder with the four Fashion-MNIST IDX files (.gz or not)\n"
           "                      (default " DEFAULT_DATA ")\n"
           "  --epochs N          passes over the training set (default 5)\n"
           "  --batch N           minibatch size (default 64)\n"
           "  --lr F              learning rate (default 0.05)\n"
           "  --momentum F        momentum (default 0.9)\n"
           "  --weight-decay F    L2 weight decay (default 0)\n"
           "  --seed N            initialisation and shuffling seed (default 1)\n"
           "  --limit N           train on the first N images only (default: all 60000)\n"
           "  --device D          cpu, cuda or auto (default: auto)\n"
           "  -o, --output FILE   where to save the model (default fashion_mnist_cnn.onnx)\n"
           "  -h, --help          this help\n");
}

/* dir/name, or dir/name.gz when only the compressed file is there. */
static int find_idx(const char *dir, const char *name, char *out, size_t len) {
    struct stat st;
    snprintf(out, len, "%s/%s", dir, name);
    if (stat(out, &st) == 0) return 1;
    snprintf(out, len, "%s/%s.gz", dir, name);
    return stat(out, &st) == 0;
}

typedef struct train_ui {
    cli_progress bar;
    char label[32];
    int epochs;
    double loss_sum;
    int64_t steps;
} train_ui;

static void on_progress(void *user, int epoch, int64_t done, int64_t total, float loss) {
    train_ui *ui = user;
    if (done <= 0 || ui->bar.total != total || ui->bar.done > done) { /* a new epoch */
        snprintf(ui->label, sizeof ui->label, "epoch %d/%d", epoch + 1, ui->epochs);
        cli_progress_start(&ui->bar, ui->label, total);
        ui->loss_sum = 0;
        ui->steps = 0;
    }
    ui->loss_sum += loss;
    ui->steps++;
    char extra[48];
    snprintf(extra, sizeof extra, "loss %.4f", ui->loss_sum / (double)ui->steps);
    cli_progress_update(&ui->bar, done, extra);
}

static void on_epoch(void *user, int epoch, float train_loss, float acc, float test_loss) {
    train_ui *ui = user;
    cli_progress_end(&ui->bar);
    ui->bar.total = -1; /* the next progress call starts a new bar */
    printf("epoch %d/%d: train loss %.4f, test loss %.4f, test accuracy %.2f%%\n", epoch + 1, ui->epochs, train_loss,
           test_loss, 100.0 * acc);
    fflush(stdout);
}

static int parse_int(const char *opt, const char *s, int min, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < min || v > 1000000000L)
        return cli_fail("%s: expected an integer >= %d, got '%s'", opt, min, s);
    *out = (int)v;
    return 0;
}

static int parse_float(const char *opt, const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || *end || end == s || !(v >= 0)) return cli_fail("%s: expected a number >= 0, got '%s'", opt, s);
    *out = v;
    return 0;
}

int cmd_train(int argc, char **argv) {
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'},          {"data", required_argument, 0, 'd'},
        {"epochs", required_argument, 0, 'e'},  {"batch", required_argument, 0, 'b'},
        {"lr", required_argument, 0, 'l'},      {"momentum", required_argument, 0, 'm'},
        {"weight-decay", required_argument, 0, 'w'}, {"seed", required_argument, 0, 's'},
        {"limit", required_argument, 0, 'n'},   {"output", required_argument, 0, 'o'},
        {"device", required_argument, 0, 'D'},  {0, 0, 0, 0}};
    const char *data = DEFAULT_DATA, *out = "fashion_mnist_cnn.onnx", *device = "auto";
    lp_train_opts o;
    memset(&o, 0, sizeof o);
    o.epochs = 5;
    o.batch = 64;
    o.lr = 0.05f;
    o.momentum = 0.9f;
    o.seed = 1;
    int seed = 1, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'h': help(); return 0;
        case 'd': data = optarg; break;
        case 'e': bad = parse_int("--epochs", optarg, 1, &o.epochs); break;
        case 'b': bad = parse_int("--batch", optarg, 1, &o.batch); break;
        case 'l': bad = parse_float("--lr", optarg, &o.lr); break;
        case 'm': bad = parse_float("--momentum", optarg, &o.momentum); break;
        case 'w': bad = parse_float("--weight-decay", optarg, &o.weight_decay); break;
        case 's': bad = parse_int("--seed", optarg, 0, &seed); break;
        case 'n': bad = parse_int("--limit", optarg, 1, &o.limit); break;
        case 'o': out = optarg; break;
        case 'D': device = optarg; break;
        default: fprintf(stderr, "see: loupe train --help\n"); return 2;
        }
        if (bad) return 1;
    }
    if (optind < argc) return cli_fail("train takes no positional arguments (got '%s'; see loupe train --help)", argv[optind]);
    if (!(o.lr > 0)) return cli_fail("--lr must be > 0");
    if (o.momentum >= 1) return cli_fail("--momentum must be below 1");
    o.seed = (uint64_t)seed;
    if (lp_device_parse(device, &o.device) != LP_OK) return cli_lib_fail();

    struct stat st;
    if (stat(data, &st) != 0 || !S_ISDIR(st.st_mode))
        return cli_fail("%s: no such dataset folder (give the Fashion-MNIST IDX files' folder with --data)", data);
    static const char *files[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                                   "t10k-labels-idx1-ubyte"};
    char paths[4][4096];
    for (int i = 0; i < 4; i++)
        if (!find_idx(data, files[i], paths[i], sizeof paths[i]))
            return cli_fail("%s: missing %s(.gz) (expected the four Fashion-MNIST IDX files)", data, files[i]);
    o.images = paths[0];
    o.labels = paths[1];
    o.test_images = paths[2];
    o.test_labels = paths[3];

    lp_model *m;
    if (lp_model_fashion_cnn(o.seed, &m) != LP_OK) return cli_lib_fail();
    train_ui ui;
    memset(&ui, 0, sizeof ui);
    ui.epochs = o.epochs;
    ui.bar.total = -1;
    o.progress = on_progress;
    o.epoch_end = on_epoch;
    o.user = &ui;
    printf("training the Fashion-MNIST CNN (%lld parameters) on %s: %d epochs, batch %d, lr %g, momentum %g, "
           "weight decay %g, seed %d\n",
           (long long)lp_model_param_count(m), lp_device_name(o.device), o.epochs, o.batch, o.lr, o.momentum,
           o.weight_decay, seed);
    fflush(stdout);
    lp_train_result res;
    if (lp_train(m, &o, &res) != LP_OK) {
        lp_model_free(m);
        return cli_lib_fail();
    }
    if (lp_model_save(m, out) != LP_OK) {
        lp_model_free(m);
        return cli_lib_fail();
    }
    lp_model_free(m);
    printf("test accuracy %.4f (%.2f%%) after %d epochs, %.0f s; saved %s\n", res.test_accuracy,
           100.0 * res.test_accuracy, o.epochs, res.seconds, out);
    return 0;
}
