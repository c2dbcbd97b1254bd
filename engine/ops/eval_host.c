/* eval_host.c — run one node's forward on the CPU backend for host tensors. Constant
 * folding (Shape/Gather/Concat chains, constant subgraphs) evaluates nodes with it. */
#include "internal.h"

lp_status lp_node_eval_host(lp_model *m, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    char ctx[512];
    if (!n->op) return lp_fail(LP_ERR_INTERNAL, "%s: op not resolved", lp_node_ctx(m, n, ctx, sizeof ctx));
    for (int i = 0; i < n->n_in; i++)
        if (in[i] && in[i]->device != LP_DEVICE_CPU)
            return lp_fail(LP_ERR_INTERNAL, "%s: input %d is not on the host", lp_node_ctx(m, n, ctx, sizeof ctx), i);
    lp_ctx c = {.be = lp_backend_cpu(), .model = m};
    if (!c.be) return LP_ERR_DEVICE;
    lp_status s = n->op->forward(&c, n, in, out);
    if (s != LP_OK) return lp_fail_prefix(s, "%s", lp_node_ctx(m, n, ctx, sizeof ctx));
    return LP_OK;
}
