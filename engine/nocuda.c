/* nocuda.c — device discovery for builds without CUDA. */
#include "internal.h"

#ifndef LOUPE_HAVE_CUDA
int lp_cuda_device_count(void) { return 0; }

const lp_backend *lp_backend_cuda(void) {
    lp_fail(LP_ERR_DEVICE, "this build of Loupe has no CUDA backend (configure with -DLOUPE_CUDA=ON)");
    return NULL;
}
#endif
