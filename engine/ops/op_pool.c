/* op_pool.c — MaxPool, AveragePool (1-D and 2-D; ceil_mode, dilations, pads,
 * count_include_pad) and GlobalAveragePool / GlobalMaxPool, all on the backend's
 * pool_fwd / pool_bwd. */
#include "op_util.h"

#include <inttypes.h>
#include <string.h>

typedef struct pool_params {
    _lp_spatial sp;
    int is_max, global, ceil_mode, count_include_pad;
} pool_params;

static lp_status pool_check_common(lp_model *m, lp_node *n, int is_max, int global) {
    if (n->n_in != 1 || n->in[0] < 0) return _lp_op_fail(m, n, LP_ERR_PARSE, "needs 1 input (got %d)", n->n_in);
    if (n->n_out > 1) {
        for (int k = 1; k < n->n_out; k++)
            if (_lp_output_used(m, n, k))
                return _lp_op_fail(m, n, LP_ERR_UNSUPPORTED, "the Indices output of MaxPool is not supported");
    }
    pool_params *p = _lp_op_params(n, sizeof *p);
    if (!p) return LP_ERR_OOM;
    p->is_max = is_max;
    p->global = global;
    if (global) return LP_OK;
    LP_TRY(_lp_spatial_parse(m, n, &p->sp));
    if (!p->sp.nk) return _lp_op_fail(m, n, LP_ERR_PARSE, "missing attribute kernel_shape");
    if (!is_max && p->sp.nd)
        for (int i = 0; i < p->sp.nd; i++)
            if (p->sp.dil[i] != 1) return _lp_op_fail(m, n, LP_ERR_UNSUPPORTED, "AveragePool with dilations is not supported");
    p->ceil_mode = (int)lp_attr_int(n, "ceil_mode", 0);
    p->count_include_pad = (int)lp_attr_int(n, "count_include_pad", 0);
    if (lp_attr_int(n, "storage_order", 0) != 0)
        return _lp_op_fail(m, n, LP_ERR_UNSUPPORTED, "storage_order = 1 is not supported");
    return LP_OK;
}

static lp_status maxpool_check(lp_model *m, lp_node *n) { return pool_check_common(m, n, 1, 0); }
static lp_status avgpool_check(lp_model *m, lp_node *n) { return pool_check_common(m, n, 0, 0); }
static lp_status gmaxpool_check(lp_model *m, lp_node *n) { return pool_check_common(m, n, 1, 1); }
static lp_status gavgpool_check(lp_model *m, lp_node *n) { return pool_check_common(m, n, 0, 1); }

static lp_status pool_desc(const lp_node *n, const lp_shape *x, lp_pool_desc *d) {
    const pool_params *p = n->params;
    char a[96];
    if (x->ndim != 3 && x->ndim != 4)
        return lp_fail(LP_ERR_UNSUPPORTED, "input is %s: only 1-D and 2-D pooling (rank 3 or 4) is supported",
                       lp_shape_fmt(x, a, sizeof a));
    int nsp = x->ndim - 2;
    int64_t sz[2] = {1, x->d[2]};
    if (nsp == 2) {
        sz[0] = x->d[2];
        sz[1] = x->d[3];
    }
    int64_t k[2], s[2], dl[2], p0[2], p1[2], o[2];
    if (p->global) {
        for (int j = 0; j < 2; j++) {
            k[j] = sz[j];
            s[j] = dl[j] = o[j] = 1;
            p0[j] = p1[j] = 0;
        }
    } else {
        LP_TRY(_lp_spatial_resolve(&p->sp, nsp, &x->d[2], NULL, k, s, dl, p0, p1));
        for (int j = 0; j < 2; j++) {
            int64_t span = sz[j] + p0[j] + p1[j] - dl[j] * (k[j] - 1) - 1;
            if (span < 0) return lp_fail(LP_ERR_SHAPE, "input %s is smaller than the pooling window", lp_shape_fmt(x, a, sizeof a));
            o[j] = (p->ceil_mode ? (span + s[j] - 1) / s[j] : span / s[j]) + 1;
            /* As PyTorch and ONNX: the last window must start inside the input or left pad. */
            if (p->ceil_mode && (o[j] - 1) * s[j] >= sz[j] + p0[j]) o[j]--;
        }
    }
    *d = (lp_pool_desc){.n = (int)x->d[0], .c = (int)x->d[1], .h = (int)sz[0], .w = (int)sz[1], .oh = (int)o[0],
                        .ow = (int)o[1], .kh = (int)k[0], .kw = (int)k[1], .sh = (int)s[0], .sw = (int)s[1],
                        .ph0 = (int)p0[0], .pw0 = (int)p0[1], .ph1 = (int)p1[0], .pw1 = (int)p1[1], .dh = (int)dl[0],
                        .dw = (int)dl[1], .is_max = p->is_max, .count_include_pad = p->count_include_pad};
    return LP_OK;
}

static lp_status pool_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    (void)in_const;
    lp_pool_desc d = {0};
    LP_TRY(pool_desc(n, &in[0], &d));
    out[0] = in[0];
    if (in[0].ndim == 3)
        out[0].d[2] = d.ow;
    else {
        out[0].d[2] = d.oh;
        out[0].d[3] = d.ow;
    }
    for (int k = 1; k < n->n_out; k++) { /* unused Indices: same shape, never computed */
        out[k] = out[0];
        out[k].ndim = 0;
    }
    return LP_OK;
}

static lp_status pool_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    lp_shape s = lp_tensor_shape(in[0]);
    lp_pool_desc d = {0};
    LP_TRY(pool_desc(n, &s, &d));
    if (c->pack_in & 1) return c->be->pool_fwd_packed(&d, in[0]->data, out[0]->data, c->pack_out & 1);
    if (c->pack_out)
        return lp_fail(LP_ERR_INTERNAL, "%s cannot write a packed value from an unpacked one", n->op_type);
    return c->be->pool_fwd(&d, in[0]->data, out[0]->data);
}

static lp_status pool_backward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                               lp_tensor *const *dout, lp_tensor *const *din) {
    if (!din[0] || !dout[0]) return LP_OK;
    lp_shape s = lp_tensor_shape(in[0]);
    lp_pool_desc d = {0};
    LP_TRY(pool_desc(n, &s, &d));
    if (c->pack_in & 1) /* a lean run's: x and dx packed, dy packed or not */
        return c->be->pool_bwd_packed(&d, in[0]->data, dout[0]->data, c->pack_out & 1, din[0]->data,
                                      !(c->din_fresh & 1));
    if (c->pack_out)
        return lp_fail(LP_ERR_INTERNAL, "%s cannot take a packed gradient to an unpacked one", n->op_type);
    return c->be->pool_bwd(&d, in[0]->data, out[0]->data, dout[0]->data, din[0]->data, !(c->din_fresh & 1));
}

const lp_op _lp_op_MaxPool = {"MaxPool", maxpool_check, pool_infer, pool_forward, pool_backward, NULL, 0, 1};
const lp_op _lp_op_AveragePool = {"AveragePool", avgpool_check, pool_infer, pool_forward, pool_backward, NULL, 0, 1};
const lp_op _lp_op_GlobalMaxPool = {"GlobalMaxPool", gmaxpool_check, pool_infer, pool_forward, pool_backward,
                                    NULL, 0, 1};
const lp_op _lp_op_GlobalAveragePool = {"GlobalAveragePool", gavgpool_check, pool_infer, pool_forward,
                                        pool_backward, NULL, 0, 1};
