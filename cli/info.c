/* info.c — `loupe info [MODEL]`: every node with its output shape, parameters and
 * multiply-adds, and the totals. */
#include "cli.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>

static void help(void) {
    printf("usage: loupe info [MODEL.onnx]\n\n"
           "Print a table of every node (name, op, output shape, parameters, multiply-adds)\n"
           "for the model's declared input shape, and the totals. Without MODEL, the bundled\n"
           "Fashion-MNIST CNN.\n");
}

static void human(double v, char *buf, size_t n) {
    if (v >= 1e9) snprintf(buf, n, "%.2f G", v / 1e9);
    else if (v >= 1e6) snprintf(buf, n, "%.2f M", v / 1e6);
    else if (v >= 1e3) snprintf(buf, n, "%.2f K", v / 1e3);
    else snprintf(buf, n, "%.0f", v);
}

int cmd_info(int argc, char **argv) {
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'h') {
            help();
            return 0;
        }
        return 2;
    }
    if (argc - optind > 1) return cli_fail("info takes one MODEL (see loupe info --help)");
    const char *path = optind < argc ? argv[optind] : cli_default_model();
    lp_model *m;
    if (lp_model_load(path, &m) != LP_OK) return cli_lib_fail();
    int nd;
    int64_t shape[LP_MAX_DIMS];
    char sbuf[128];
    lp_model_input_shape(m, &nd, shape);
    printf("model  %s\ninput  %s %s\noutput %s\n\n", path, lp_model_input_name(m), lp_shape_str(nd, shape, sbuf, sizeof sbuf),
           lp_model_output_name(m));
    printf("%-4s  %-40s  %-20s  %-18s  %12s  %14s\n", "#", "name", "op", "output shape", "params", "mult-adds");
    int64_t total_macs = 0;
    for (int i = 0; i < lp_model_num_nodes(m); i++) {
        lp_node_info ni;
        lp_model_node_info(m, i, &ni);
        total_macs += ni.macs;
        printf("%-4d  %-40s  %-20s  %-18s  %12" PRId64 "  %14" PRId64 "\n", i, ni.name, ni.op,
               lp_shape_str(ni.ndim, ni.shape, sbuf, sizeof sbuf), ni.params, ni.macs);
    }
    char a[32], b[32];
    int64_t params = lp_model_param_count(m);
    human((double)params, a, sizeof a);
    human((double)total_macs, b, sizeof b);
    printf("\nnodes %d   parameters %" PRId64 " (%s)   multiply-adds %" PRId64 " (%sMAC) per forward at %s\n",
           lp_model_num_nodes(m), params, a, total_macs, b, lp_shape_str(nd, shape, sbuf, sizeof sbuf));
    lp_model_free(m);
    return 0;
}
