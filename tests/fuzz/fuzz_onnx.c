/* fuzz_onnx.c — libFuzzer target for the ONNX importer: any bytes must give a model
 * or a status with a message, never a crash, leak or out-of-bounds access.
 * Built with -DLOUPE_FUZZ=ON (clang); seeds are the .onnx files of tests/data/onnx. */
#include <stddef.h>
#include <stdint.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lp_model *m = NULL;
    lp_status s = lp_model_load_mem(data, size, "fuzz.onnx", NULL, &m);
    if (s == LP_OK) {
        /* A loaded model must answer its queries. */
        for (int i = 0; i < lp_model_num_nodes(m); i++) {
            lp_node_info info;
            lp_model_node_info(m, i, &info);
        }
        (void)lp_model_param_count(m);
    }
    lp_model_free(m);
    return 0;
}
