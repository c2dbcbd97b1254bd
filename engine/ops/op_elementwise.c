/* op_elementwise.c — the elementwise ops: activations and math on one tensor (the
 * backend's unary kinds) and Add/Sub/Mul/Div/Pow with numpy broadcasting. int64
 * Add/Sub/Mul/Div run on the host, for shape arithmetic during constant folding. */
#include "op_util.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>

/* ---- unary ------------------------------------------------------------------------ */

typedef struct unary_params {
    lp_unary_kind kind;
    float p[2];
} unary_params;

static lp_unary_kind unary_kind_of(const char *t) {
    static const struct { const char *name; lp_unary_kind kind; } tab[] = {
        {"Relu", LP_UN_RELU},       {"LeakyRelu", LP_UN_LEAKY_RELU}, {"Clip", LP_UN_CLIP},
        {"Sigmoid", LP_UN_SIGMOID}, {"HardSigmoid", LP_UN_HARD_SIGMOID}, {"HardSwish", LP_UN_HARD_SWISH},
        {"Gelu", LP_UN_GELU},
        {"Erf", LP_UN_ERF},         {"Sqrt", LP_UN_SQRT},             {"Tanh", LP_UN_TANH},
        {"Exp", LP_UN_EXP},         {"Log", LP_UN_LOG},               {"Neg", LP_UN_NEG},
        {"Abs", LP_UN_ABS}};
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (!strcmp(tab[i].name, t)) return tab[i].kind;
    return LP_UN_COUNT;
}

static lp_status unary_check(lp_model *m, lp_node *n) {
    lp_unary_kind k = unary_kind_of(n->op_type);
    int max_in = k == LP_UN_CLIP ? 3 : 1;
    if (n->n_in < 1 || n->n_in > max_in || n->in[0] < 0)
        return _lp_op_fail(m, n, LP_ERR_PARSE, "has %d inputs (expected %s)", n->n_in, max_in == 1 ? "1" : "1 to 3");
    if (n->n_out != 1) return _lp_op_fail(m, n, LP_ERR_PARSE, "has %d outputs (expected 1)", n->n_out);
    unary_params *p = _lp_op_params(n, sizeof *p);
    if (!p) return LP_ERR_OOM;
    p->kind = k;
    switch (k) {
    case LP_UN_LEAKY_RELU: p->p[0] = lp_attr_float(n, "alpha", 0.01f); break;
    case LP_UN_HARD_SIGMOID:
        p->p[0] = lp_attr_float(n, "alpha", 0.2f);
        p->p[1] = lp_attr_float(n, "beta", 0.5f);
        break;
    case LP_UN_CLIP: /* opset < 11 attributes; inputs 1 and 2 (read at run time) override */
        p->p[0] = lp_attr_float(n, "min", -FLT_MAX);
        p->p[1] = lp_attr_float(n, "max", FLT_MAX);
        for (int i = 1; i < n->n_in; i++)
            if (n->in[i] >= 0 && m->values[n->in[i]].shape.ndim > 1)
                return _lp_op_fail(m, n, LP_ERR_UNSUPPORTED, "Clip %s must be a scalar", i == 1 ? "min" : "max");
        break;
    case LP_UN_GELU: { /* opset 20; "tanh": PyTorch's approximate='tanh' */
        const char *a = lp_attr_string(n, "approximate", "none");
        if (!strcmp(a, "tanh")) p->kind = LP_UN_GELU_TANH;
        else if (strcmp(a, "none"))
            return _lp_op_fail(m, n, LP_ERR_PARSE, "has approximate='%s' (expected 'none' or 'tanh')", a);
        break;
    }
    default: break;
    }
    return LP_OK;
}

static lp_status same_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    (void)in_const;
    for (int k = 0; k < n->n_out; k++) out[k] = in[0];
    return LP_OK;
}

/* The kind's parameters for this call: Clip reads its bounds from inputs 1 and 2. */
static lp_status unary_p(lp_ctx *c, const lp_node *n, lp_tensor *const *in, float p[2]) {
    const unary_params *up = n->params;
    p[0] = up->p[0];
    p[1] = up->p[1];
    if (up->kind == LP_UN_CLIP)
        for (int i = 1; i < n->n_in && i < 3; i++)
            if (in[i]) LP_TRY(_lp_input_scalar(c, n, in, i, &p[i - 1]));
    return LP_OK;
}

float _lp_act_of(const lp_model *m, const lp_node *n) {
    const unary_params *up = n->params;
    if (!strcmp(n->op->type, "Relu")) return n->n_in == 1 ? INFINITY : 0.f;
    if (strcmp(n->op->type, "Clip") || !up) return 0.f;
    float b[2] = {up->p[0], up->p[1]}; /* opset < 11: attributes; else constant inputs */
    for (int i = 1; i < n->n_in && i < 3; i++) {
        const int v = n->in[i];
        if (v < 0) return 0.f; /* an omitted bound: none, so not ReLU6 */
        const lp_tensor *t = m ? m->values[v].init : NULL;
        if (!t || t->dtype != LP_F32 || t->device != LP_DEVICE_CPU || lp_tensor_numel(t) != 1) return 0.f;
        b[i - 1] = ((const float *)t->data)[0];
    }
    return b[0] == 0.f && b[1] == 6.f ? 6.f : 0.f; /* ReLU6; other Clips keep clamp's gradient */
}

static lp_status unary_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    const unary_params *up = n->params;
    float p[2];
    if (in[0]->dtype != LP_F32) return lp_fail(LP_ERR_UNSUPPORTED, "%s on int64 data is not supported", n->op_type);
    if (c->pack_out && !c->pack_in) return lp_fail(LP_ERR_INTERNAL, "%s cannot pack an unpacked value", n->op_type);
    if (c->pack_in) { /* a packed Relu (or ReLU6): to a packed value, or unpacked to NCHW fp32 */
        const float act = _lp_act_of(c->model, n);
        if (!(act > 0.f) || in[0]->ndim != 4) return lp_fail(LP_ERR_INTERNAL, "%s cannot read a packed value", n->op_type);
        if (c->pack_out) return c->be->packed_add(lp_tensor_numel(in[0]), in[0]->data, NULL, out[0]->data, act);
        return c->be->unpack((int)in[0]->shape[0], (int)in[0]->shape[1], in[0]->shape[2] * in[0]->shape[3],
                             in[0]->data, out[0]->data, act);
    }
    LP_TRY(unary_p(c, n, in, p));
    return c->be->unary_fwd(up->kind, p, in[0]->data, out[0]->data, lp_tensor_numel(in[0]));
}

lp_status _lp_relu_backward(lp_ctx *c, const lp_node *n, lp_unary_kind k, lp_tensor *const *in,
                            lp_tensor *const *out, lp_tensor *const *dout, lp_tensor *const *din, int accumulate) {
    if (!din[0] || !dout[0]) return LP_OK;
    const int64_t cnt = lp_tensor_numel(dout[0]);
    if (c->pack_in || c->pack_out) { /* a lean run's packed Relu (or ReLU6): y, dy and dx all packed */
        const float cap = _lp_act_of(c->model, n);
        if (c->pack_in != 1 || c->pack_out != 1 || !(cap > 0.f) || (k != LP_UN_RELU_DECONV && !out[0]->data))
            return lp_fail(LP_ERR_INTERNAL, "%s cannot take a packed gradient", n->op_type);
        return c->be->packed_relu_bwd(k, cap, cnt, out[0]->data, dout[0]->data, din[0]->data, accumulate);
    }
    return c->be->unary_bwd(k, NULL, in[0]->data, out[0]->data, dout[0]->data, din[0]->data, cnt, accumulate);
}

static lp_status unary_backward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                                lp_tensor *const *dout, lp_tensor *const *din) {
    const unary_params *up = n->params;
    float p[2];
    if (!din[0]) return LP_OK;
    /* a ReLU6 (Clip(0, 6)) takes hardtanh's gradient, as PyTorch's nn.ReLU6 */
    const lp_unary_kind k = up->kind == LP_UN_CLIP && _lp_act_of(c->model, n) > 0.f ? LP_UN_HARDTANH : up->kind;
    if (k == LP_UN_RELU || c->pack_in || c->pack_out) /* packed: a Relu's or ReLU6's */
        return _lp_relu_backward(c, n, k, in, out, dout, din, !(c->din_fresh & 1));
    LP_TRY(unary_p(c, n, in, p));
    return c->be->unary_bwd(k, p, in[0]->data, out[0]->data, dout[0]->data, din[0]->data, lp_tensor_numel(in[0]),
                            !(c->din_fresh & 1));
}

#define UNARY_OP(NAME) \
    const lp_op _lp_op_##NAME = {#NAME, unary_check, same_infer, unary_forward, unary_backward, NULL, 0, 1};
UNARY_OP(Relu)
UNARY_OP(LeakyRelu)
UNARY_OP(Clip)
UNARY_OP(Sigmoid)
UNARY_OP(HardSigmoid)
UNARY_OP(HardSwish)
UNARY_OP(Gelu)
UNARY_OP(Erf)
UNARY_OP(Tanh)
UNARY_OP(Exp)
UNARY_OP(Log)
UNARY_OP(Neg)
UNARY_OP(Abs)
UNARY_OP(Sqrt)

/* ---- binary ----------------------------------------------------------------------- */

typedef struct binary_params {
    lp_binary_kind kind;
} binary_params;

static lp_status binary_check(lp_model *m, lp_node *n) {
    if (n->n_in != 2 || n->in[0] < 0 || n->in[1] < 0)
        return _lp_op_fail(m, n, LP_ERR_PARSE, "needs 2 inputs (got %d)", n->n_in);
    if (n->n_out != 1) return _lp_op_fail(m, n, LP_ERR_PARSE, "has %d outputs (expected 1)", n->n_out);
    binary_params *p = _lp_op_params(n, sizeof *p);
    if (!p) return LP_ERR_OOM;
    const char *t = n->op_type;
    p->kind = !strcmp(t, "Add") ? LP_BIN_ADD
              : !strcmp(t, "Sub") ? LP_BIN_SUB
              : !strcmp(t, "Mul") ? LP_BIN_MUL
              : !strcmp(t, "Div") ? LP_BIN_DIV
                                  : LP_BIN_POW;
    return LP_OK;
}

static lp_status binary_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    (void)n;
    (void)in_const;
    lp_bcast bc;
    LP_TRY(lp_bcast_make(in[0].ndim, in[0].d, in[1].ndim, in[1].d, &bc));
    out[0].ndim = bc.ndim;
    for (int i = 0; i < bc.ndim; i++) out[0].d[i] = bc.shape[i];
    return LP_OK;
}

/* int64 arithmetic on the host (shape computations while folding). */
static lp_status binary_i64(lp_binary_kind k, const lp_bcast *bc, const int64_t *a, const int64_t *b, int64_t *y) {
    int64_t total = _lp_prod(bc->shape, 0, bc->ndim);
    for (int64_t i = 0; i < total; i++) {
        int64_t rem = i, oa = 0, ob = 0;
        for (int d = bc->ndim - 1; d >= 0; d--) {
            int64_t idx = rem % bc->shape[d];
            rem /= bc->shape[d];
            oa += idx * bc->sa[d];
            ob += idx * bc->sb[d];
        }
        int64_t x = a[oa], z = b[ob];
        switch (k) {
        case LP_BIN_ADD: y[i] = x + z; break;
        case LP_BIN_SUB: y[i] = x - z; break;
        case LP_BIN_MUL: y[i] = x * z; break;
        case LP_BIN_DIV:
            if (z == 0) return lp_fail(LP_ERR_ARG, "integer division by zero");
            y[i] = x / z;
            break;
        default: return lp_fail(LP_ERR_UNSUPPORTED, "Pow on int64 data is not supported");
        }
    }
    return LP_OK;
}

/* Pow with a one-element exponent is the unary x^p: better behaved for x <= 0. */
static int pow_scalar(const binary_params *p, lp_tensor *const *in) {
    return p->kind == LP_BIN_POW && lp_tensor_numel(in[1]) == 1 && lp_tensor_numel(in[0]) >= 1 &&
           in[1]->ndim <= in[0]->ndim;
}

static lp_status binary_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    const binary_params *p = n->params;
    lp_bcast bc;
    LP_TRY(lp_bcast_make(in[0]->ndim, in[0]->shape, in[1]->ndim, in[1]->shape, &bc));
    if (in[0]->dtype == LP_I64 || in[1]->dtype == LP_I64) {
        if (in[0]->dtype != in[1]->dtype)
            return lp_fail(LP_ERR_UNSUPPORTED, "mixed int64 and float operands are not supported");
        return binary_i64(p->kind, &bc, in[0]->data, in[1]->data, out[0]->data);
    }
    if (c->pack_in || c->pack_out || c->fuse_act > 0.f) { /* the executor packs and fuses only same-shape Adds */
        const int64_t cnt = lp_tensor_numel(out[0]);
        const int packed = c->pack_in == 3 && c->pack_out == 1, plain = !c->pack_in && !c->pack_out;
        if (p->kind != LP_BIN_ADD || !(packed || plain) || (plain && (!c->be->add_relu || c->fuse_act != INFINITY)) ||
            lp_tensor_numel(in[0]) != cnt || lp_tensor_numel(in[1]) != cnt)
            return lp_fail(LP_ERR_INTERNAL, "%s cannot mix packed and unpacked values, nor fuse a Relu here",
                           n->op_type);
        if (plain) return c->be->add_relu(cnt, in[0]->data, in[1]->data, out[0]->data); /* + its Relu */
        return c->be->packed_add(cnt, in[0]->data, in[1]->data, out[0]->data, c->fuse_act);
    }
    if (pow_scalar(p, in)) {
        float e[2] = {0, 0};
        LP_TRY(_lp_input_scalar(c, n, in, 1, &e[0]));
        return c->be->unary_fwd(LP_UN_POW, e, in[0]->data, out[0]->data, lp_tensor_numel(in[0]));
    }
    return c->be->binary_fwd(p->kind, &bc, in[0]->data, in[1]->data, out[0]->data);
}

/* A same-shape Add's first contribution to an input gradient: dout itself, copied
 * (bytes), or nothing to do where a lean plan gave din dout's buffer. */
static lp_status add_first(lp_ctx *c, const lp_tensor *din, const lp_tensor *dout, size_t bytes) {
    return din->data == dout->data ? LP_OK : c->be->copy(din->data, dout->data, bytes);
}

static lp_status binary_backward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out,
                                 lp_tensor *const *dout, lp_tensor *const *din) {
    const binary_params *p = n->params;
    if (!din[0] && !din[1]) return LP_OK;
    if (c->pack_in || c->pack_out) { /* a lean run's packed Add: the gradient adds to both */
        const int64_t cnt = lp_tensor_numel(out[0]);
        if (p->kind != LP_BIN_ADD || c->pack_in != 3 || c->pack_out != 1 || lp_tensor_numel(in[0]) != cnt ||
            lp_tensor_numel(in[1]) != cnt)
            return lp_fail(LP_ERR_INTERNAL, "%s cannot mix packed and unpacked gradients", n->op_type);
        for (int k = 0; k < 2; k++) /* in order: Add(x, x)'s second is no longer fresh */
            if (din[k] && (c->din_fresh >> k & 1u)) LP_TRY(add_first(c, din[k], dout[0], (size_t)cnt * 2)); /* bf16 */
            else if (din[k]) LP_TRY(c->be->packed_add(cnt, din[k]->data, dout[0]->data, din[k]->data, 0));
        return LP_OK;
    }
    if (pow_scalar(p, in) && !din[1]) {
        float e[2] = {0, 0};
        LP_TRY(_lp_input_scalar(c, n, in, 1, &e[0]));
        return c->be->unary_bwd(LP_UN_POW, e, in[0]->data, out[0]->data, dout[0]->data, din[0]->data,
                                lp_tensor_numel(in[0]), !(c->din_fresh & 1));
    }
    lp_bcast bc;
    LP_TRY(lp_bcast_make(in[0]->ndim, in[0]->shape, in[1]->ndim, in[1]->shape, &bc));
    float *da = din[0] ? din[0]->data : NULL, *db = din[1] ? din[1]->data : NULL;
    for (int k = 0; k < 2; k++) /* in order: Add(x, x)'s second is no longer fresh */
        if (din[k] && (c->din_fresh >> k & 1u)) {
            if (p->kind == LP_BIN_ADD && din[k]->nbytes == dout[0]->nbytes) {
                LP_TRY(add_first(c, din[k], dout[0], dout[0]->nbytes));
                if (k == 0) da = NULL;
                else db = NULL;
            } else { /* reduced over broadcast axes, or another kind's: added to zeros */
                LP_TRY(c->be->zero(din[k]->data, din[k]->nbytes));
            }
        }
    if (!da && !db) return LP_OK;
    return c->be->binary_bwd(p->kind, &bc, in[0]->data, in[1]->data, out[0]->data, dout[0]->data, da, db);
}

#define BINARY_OP(NAME) \
    const lp_op _lp_op_##NAME = {#NAME, binary_check, binary_infer, binary_forward, binary_backward, NULL, 0, 3};
BINARY_OP(Add)
BINARY_OP(Sub)
BINARY_OP(Mul)
BINARY_OP(Div)
BINARY_OP(Pow)
