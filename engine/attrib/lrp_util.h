/* lrp_util.h — what the LRP rules (lrp.c) and DeepLift (lrp_deeplift.c) share:
 * elementwise helpers written on the backend table (so the rules run on any device),
 * a scratch list, and calls of a node's own forward/backward on substituted tensors. */
#ifndef LOUPE_LRP_UTIL_H
#define LOUPE_LRP_UTIL_H

#include "attrib_internal.h"

/* Device scratch buffers freed together. */
typedef struct _lp_scratch {
    const lp_backend *be;
    void *p[24];
    int n;
} _lp_scratch;
/* n floats of scratch; zeroed when `zero`. */
lp_status _lp_scratch_get(_lp_scratch *s, int64_t n, int zero, float **out);
void _lp_scratch_free(_lp_scratch *s);

/* y = a (op) b, n floats each (no broadcasting). */
lp_status _lp_ew(const lp_backend *be, lp_binary_kind k, const float *a, const float *b, float *y, int64_t n);
/* y = kind(x) with parameters p0, p1. */
lp_status _lp_un(const lp_backend *be, lp_unary_kind k, float p0, float p1, const float *x, float *y, int64_t n);
/* m = 1 where x > 0, else 0 (the ReLU gradient of ones; exact). ones holds n ones. */
lp_status _lp_step(const lp_backend *be, const float *x, const float *ones, float *m, int64_t n);

/* t with its data replaced (shape kept), as a view. */
lp_tensor _lp_view(const lp_tensor *t, void *data);
/* The node's own backward with one output gradient `dout0` (out[0]'s shape), writing
 * only into din[k] = dst[k] for the k where dst[k] != NULL (dst has n->n_in entries;
 * the op accumulates). */
lp_status _lp_node_bwd(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out, float *dout0,
                       float *const *dst);

#endif
