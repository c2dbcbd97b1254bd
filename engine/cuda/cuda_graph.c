/* cuda_graph.c — CUDA graphs for repeated same-shape passes. The executor captures a
 * pass that repeats the one it just ran (same tensors, shapes and scratch) and from
 * then on replays it as one launch: no per-kernel launch cost, no host work between
 * layers. A pass is graphable only if it queues device work alone: an allocation,
 * free, host copy or sync while capturing is refused (the op fails, the capture is
 * dropped, and the executor runs the pass as usual). Kernel arguments are baked into
 * the graph, so the executor keys a graph on every pointer the pass touches and on
 * the scratch slots' epoch (see _lp_cuda_scratch_epoch). */
#include "cuda/cuda_internal.h"

#include <stdlib.h>

struct lp_graph {
    cudaGraphExec_t exec;
};

static int capturing, refused;

int _lp_cuda_capturing(void) { return capturing; }

lp_status _lp_cuda_capture_refuse(const char *what) {
    refused = 1;
    return lp_fail(LP_ERR_UNSUPPORTED, "%s while capturing a CUDA graph", what);
}

lp_status lp_cuda_graph_begin(void) {
    lp_cuda *c = _lp_cuda();
    if (!c) return LP_ERR_DEVICE;
    if (capturing) return lp_fail(LP_ERR_ARG, "a CUDA graph capture is already under way");
    /* Relaxed: the refusals above, not the driver, keep unsafe calls out of the pass. */
    LP_CUDA(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeRelaxed));
    capturing = 1;
    refused = 0;
    return LP_OK;
}

lp_status lp_cuda_graph_end(lp_graph **out) {
    *out = NULL;
    lp_cuda *c = _lp_cuda();
    if (!c || !capturing) return LP_OK;
    capturing = 0;
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &g);
    if (e != cudaSuccess || refused || !g) {
        cudaGetLastError(); /* an invalidated capture leaves its error behind */
        if (g) cudaGraphDestroy(g);
        return LP_OK;
    }
    cudaGraphExec_t x = NULL;
    e = cudaGraphInstantiate(&x, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return LP_OK;
    }
    lp_graph *gr = malloc(sizeof *gr);
    if (!gr) {
        cudaGraphExecDestroy(x);
        return lp_fail(LP_ERR_OOM, "out of host memory for a CUDA graph");
    }
    gr->exec = x;
    *out = gr;
    return LP_OK;
}

lp_status lp_cuda_graph_launch(const lp_graph *g) {
    lp_cuda *c = _lp_cuda();
    if (!c) return LP_ERR_DEVICE;
    LP_CUDA(cudaGraphLaunch(g->exec, c->stream));
    return LP_OK;
}

void lp_cuda_graph_free(lp_graph *g) {
    if (!g) return;
    cudaGraphExecDestroy(g->exec);
    free(g);
}
