/* op_softmax.c — Softmax and LogSoftmax. Opset 13+ normalises over one axis
 * (default -1); older opsets flatten to 2-D at `axis` (default 1) and normalise
 * over everything after it. Both map to the backend's (outer, axis, inner) form. */
#include "op_util.h"

#include <inttypes.h>
#include <string.h>

typedef struct softmax_params {
    int64_t axis;
    int legacy, log;
} softmax_params;

static lp_status softmax_check(lp_model *m, lp_node *n) {
    if (n->n_in != 1 || n->in[0] < 0) return _lp_op_fail(m, n, LP_ERR_PARSE, "needs 1 input (got %d)", n->n_in);
    if (n->n_out != 1) return _lp_op_fail(m, n, LP_ERR_PARSE, "has %d outputs (expected 1)", n->n_out);
    softmax_params *p = _lp_op_params(n, sizeof *p);
    if (!p) return LP_ERR_OOM;
    p->legacy = m->opset > 0 && m->opset < 13;
    p->axis = lp_attr_int(n, "axis", p->legacy ? 1 : -1);
    p->log = !strcmp(n->op_type, "LogSoftmax");
    return LP_OK;
}

static lp_status softmax_dims(const lp_node *n, const lp_shape *x, int64_t *outer, int64_t *len, int64_t *inner) {
    const softmax_params *p = n->params;
    int r = x->ndim, ax = _lp_axis(p->axis, r);
    if (ax < 0) return lp_fail(LP_ERR_SHAPE, "axis %" PRId64 " is out of range for rank %d", p->axis, r);
    *outer = _lp_prod(x->d, 0, ax);
    if (p->legacy) {
        *len = _lp_prod(x->d, ax, r);
        *inner = 1;
    } else {
        *len = x->d[ax];
        *inner = _lp_prod(x->d, ax + 1, r);
    }
    return LP_OK;
}

static lp_status softmax_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    (void)in_const;
    int64_t o = 0, l = 0, i = 0;
    LP_TRY(softmax_dims(n, &in[0], &o, &l, &i));
    out[0] = in[0];
    return LP_OK;
}

static lp_status softmax_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    const softmax_params *p = n->params;
    lp_shape s = lp_tensor_shape(in[0]);
    int64_t o = 0, l = 0, i = 0;
    LP_TRY(softmax_dims(n, &s, &o, &l, &i));
    if (o * l * i == 0) return LP_OK;
    return c->be->softmax_fwd(o, l, i, p->log, in[0]->data, out[0]->data);
}

static lp_status softmax_backward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                                  lp_tensor *const *dout, lp_tensor *const *din) {
    const softmax_params *p = n->params;
    if (!din[0]) return LP_OK;
    lp_shape s = lp_tensor_shape(in[0]);
    int64_t o = 0, l = 0, i = 0;
    LP_TRY(softmax_dims(n, &s, &o, &l, &i));
    if (o * l * i == 0) return LP_OK;
    return c->be->softmax_bwd(o, l, i, p->log, out[0]->data, dout[0]->data, din[0]->data);
}

const lp_op _lp_op_Softmax = {"Softmax", softmax_check, softmax_infer, softmax_forward, softmax_backward, NULL, 0, 0};
const lp_op _lp_op_LogSoftmax = {"LogSoftmax", softmax_check, softmax_infer, softmax_forward, softmax_backward,
                                 NULL, 0, 0};
