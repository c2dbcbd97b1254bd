/* main.c — the `loupe` command: dispatch to subcommands (one file each). */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} cmds[] = {
    {"info", cmd_info, "table of every node: name, op, output shape, parameters, multiply-adds"},
    {"predict", cmd_predict, "top-k classes for images or a .npy batch"},
    {"activations", cmd_activations, "a layer's channel maps as a PNG grid (and .npy)"},
    {"train", cmd_train, "train the small Fashion-MNIST CNN (the bundled default model)"},
    {"tsne", cmd_tsne, "Barnes-Hut t-SNE of the rows of an array, with plot and quality metrics"},
    {"explain", cmd_explain, "attribution maps (saliency, IG, LRP, Grad-CAM, occlusion, RISE...) with an HTML report"},
    {"embed", cmd_embed, "t-SNE map of a layer's activations over many inputs (or of its channels)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: loupe <command> [options]   (loupe <command> --help for each)\n\n"
               "Loupe lets you see inside convolutional networks (ONNX in; PNG, .npy out).\n"
               "MODEL is an .onnx file; when omitted, the bundled Fashion-MNIST CNN is used.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) fprintf(f, "  %-12s %s\n", cmds[i].name, cmds[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("loupe 0.1.0\n");
        return 0;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name)) return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "loupe: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
