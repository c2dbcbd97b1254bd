/* nocuda.c — device discovery for builds without CUDA. */
#include "internal.h"

#ifndef LOUPE_HAVE_CUDA
int lp_cuda_device_count(void) { return 0; }

const lp_backend *lp_backend_cuda(void) {
    lp_fail(LP_ERR_DEVICE, "this build of Loupe has no CUDA backend (configure with -DLOUPE_CUDA=ON)");
    return NULL;
}

const lp_backend *lp_backend_cuda_precision(lp_precision p) {
    (void)p;
    return lp_backend_cuda();
}

const char *lp_cuda_device_name(void) { return "no CUDA device (built without CUDA)"; }

lp_status lp_cuda_memory_stats(lp_memory_stats *out) {
    (void)out;
    return lp_fail(LP_ERR_DEVICE, "this build of Loupe has no CUDA backend");
}
void lp_cuda_memory_reset_peak(void) {}
void lp_cuda_memory_trim(void) {}
lp_status lp_cuda_fusion_stats(lp_fusion_stats *out) {
    (void)out;
    return lp_fail(LP_ERR_DEVICE, "this build of Loupe has no CUDA backend");
}

lp_status lp_cuda_graph_begin(void) { return lp_fail(LP_ERR_DEVICE, "this build of Loupe has no CUDA backend"); }
lp_status lp_cuda_graph_end(lp_graph **out) {
    *out = NULL;
    return LP_OK;
}
lp_status lp_cuda_graph_launch(const lp_graph *g) {
    (void)g;
    return lp_fail(LP_ERR_DEVICE, "this build of Loupe has no CUDA backend");
}
void lp_cuda_graph_free(lp_graph *g) { (void)g; }
uint64_t lp_cuda_scratch_epoch(void) { return 0; }
#endif
