/* device.c — CUDA device discovery. The CUDA backend's table (cuDNN/cuBLAS and the
 * kernels/ launches) is the CUDA issue's work; until it lands, asking for it is a
 * clear LP_ERR_DEVICE rather than a silent CPU fallback. */
#include "internal.h"

#include <cuda_runtime.h>

int lp_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky "no driver" error */
        return 0;
    }
    return n;
}

const lp_backend *lp_backend_cuda(void) {
    lp_fail(LP_ERR_DEVICE, "the CUDA backend is not available in this build yet; use --device cpu");
    return NULL;
}
