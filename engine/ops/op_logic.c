/* op_logic.c — Equal, Not, Where, Mod, Range and ScatterND: the index arithmetic that
 * transformer classifiers (ViT, Swin) export around their reshapes and masks. They run on the host while
 * constant folding removes them; booleans are int64 0/1 (Loupe has no bool dtype).
 * None is differentiable. */
#include "op_util.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

static lp_status logic_check(lp_model *m, lp_node *n) {
    int want = !strcmp(n->op_type, "Not") ? 1 : !strcmp(n->op_type, "Equal") || !strcmp(n->op_type, "Mod") ? 2 : 3;
    if (n->n_in != want) return _lp_op_fail(m, n, LP_ERR_PARSE, "has %d inputs (expected %d)", n->n_in, want);
    for (int i = 0; i < n->n_in; i++)
        if (n->in[i] < 0) return _lp_op_fail(m, n, LP_ERR_PARSE, "input %d is empty", i);
    if (n->n_out != 1) return _lp_op_fail(m, n, LP_ERR_PARSE, "has %d outputs (expected 1)", n->n_out);
    if (!strcmp(n->op_type, "Mod") && lp_attr_int(n, "fmod", 0) != 0)
        return _lp_op_fail(m, n, LP_ERR_UNSUPPORTED, "fmod = 1 is not supported");
    return LP_OK;
}

/* Element i of a host tensor as a double (int64 or float). */
static double host_at(const lp_tensor *t, int64_t i) {
    return t->dtype == LP_I64 ? (double)((const int64_t *)t->data)[i] : (double)((const float *)t->data)[i];
}

static void host_set(lp_tensor *t, int64_t i, double v) {
    if (t->dtype == LP_I64) ((int64_t *)t->data)[i] = (int64_t)v;
    else ((float *)t->data)[i] = (float)v;
}

static lp_status host_only(lp_tensor *const *in, int cnt, lp_tensor *const *out) {
    for (int i = 0; i < cnt; i++)
        if (in[i]->device != LP_DEVICE_CPU)
            return lp_fail(LP_ERR_UNSUPPORTED, "runs on host constants only (it should have been folded)");
    if (out[0]->device != LP_DEVICE_CPU) return lp_fail(LP_ERR_UNSUPPORTED, "runs on host constants only (it should have been folded)");
    return LP_OK;
}

/* Offsets into each input for output element i under numpy broadcasting. */
static void bcast_offsets(int nd, const int64_t *oshape, const lp_tensor *const *in, int cnt, int64_t i, int64_t *off) {
    int64_t rem = i, stride[3] = {1, 1, 1};
    for (int k = 0; k < cnt; k++) off[k] = 0;
    for (int d = nd - 1; d >= 0; d--) {
        int64_t id = rem % oshape[d];
        rem /= oshape[d];
        for (int k = 0; k < cnt; k++) {
            int dk = d - (nd - in[k]->ndim);
            if (dk < 0) continue;
            if (in[k]->shape[dk] != 1) off[k] += id * stride[k];
            stride[k] *= in[k]->shape[dk];
        }
    }
}

static lp_status bcast_shape(int cnt, const lp_shape *in, lp_shape *out) {
    lp_bcast bc;
    int64_t acc[LP_MAX_DIMS];
    int nd = in[0].ndim;
    memcpy(acc, in[0].d, sizeof acc);
    for (int k = 1; k < cnt; k++) {
        LP_TRY(lp_bcast_make(nd, acc, in[k].ndim, in[k].d, &bc));
        nd = bc.ndim;
        memcpy(acc, bc.shape, sizeof acc);
    }
    out->ndim = nd;
    memcpy(out->d, acc, sizeof acc);
    return LP_OK;
}

static lp_status logic_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    (void)in_const;
    return bcast_shape(n->n_in, in, &out[0]);
}

static lp_status logic_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    (void)c;
    LP_TRY(host_only(in, n->n_in, out));
    lp_tensor *y = out[0];
    int is_eq = !strcmp(n->op_type, "Equal"), is_mod = !strcmp(n->op_type, "Mod"), is_not = !strcmp(n->op_type, "Not");
    for (int64_t i = 0; i < lp_tensor_numel(y); i++) {
        int64_t off[3];
        bcast_offsets(y->ndim, y->shape, (const lp_tensor *const *)in, n->n_in, i, off);
        double a = host_at(in[0], off[0]), b = is_not ? 0 : host_at(in[1], off[1]);
        if (is_not) {
            host_set(y, i, a == 0);
        } else if (is_eq) {
            host_set(y, i, a == b);
        } else if (is_mod) { /* fmod = 0: the result takes the divisor's sign, as Python's % */
            if (b == 0) return lp_fail(LP_ERR_ARG, "Mod by zero");
            double r = fmod(a, b);
            if (r != 0 && ((r < 0) != (b < 0))) r += b;
            host_set(y, i, r);
        } else { /* Where(cond, x, y) */
            host_set(y, i, a != 0 ? b : host_at(in[2], off[2]));
        }
    }
    return LP_OK;
}

const lp_op _lp_op_Equal = {"Equal", logic_check, logic_infer, logic_forward, NULL, NULL, 0, 0};
const lp_op _lp_op_Where = {"Where", logic_check, logic_infer, logic_forward, NULL, NULL, 0, 0};
const lp_op _lp_op_Mod = {"Mod", logic_check, logic_infer, logic_forward, NULL, NULL, 0, 0};
const lp_op _lp_op_Not = {"Not", logic_check, logic_infer, logic_forward, NULL, NULL, 0, 0};

/* ---- Range ------------------------------------------------------------------------- */

static lp_status range_check(lp_model *m, lp_node *n) {
    if (n->n_in != 3 || n->in[0] < 0 || n->in[1] < 0 || n->in[2] < 0)
        return _lp_op_fail(m, n, LP_ERR_PARSE, "needs start, limit and delta (got %d inputs)", n->n_in);
    return LP_OK;
}

static lp_status range_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    (void)n;
    (void)in;
    if (!in_const[0] || !in_const[1] || !in_const[2]) return lp_fail(LP_ERR_UNSUPPORTED, "start, limit and delta must be constants");
    double s = host_at(in_const[0], 0), l = host_at(in_const[1], 0), d = host_at(in_const[2], 0);
    if (d == 0) return lp_fail(LP_ERR_ARG, "Range delta is 0");
    double cnt = ceil((l - s) / d);
    out[0].ndim = 1;
    out[0].d[0] = cnt > 0 ? (int64_t)cnt : 0;
    return LP_OK;
}

static lp_status range_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    (void)c;
    LP_TRY(host_only(in, n->n_in, out));
    double s = host_at(in[0], 0), d = host_at(in[2], 0);
    for (int64_t i = 0; i < lp_tensor_numel(out[0]); i++) host_set(out[0], i, s + (double)i * d);
    return LP_OK;
}

const lp_op _lp_op_Range = {"Range", range_check, range_infer, range_forward, NULL, NULL, 0, 0};

/* ---- ScatterND (Swin's attention-mask construction, folded) --------------------------- */

static lp_status scatternd_check(lp_model *m, lp_node *n) {
    if (n->n_in != 3 || n->in[0] < 0 || n->in[1] < 0 || n->in[2] < 0)
        return _lp_op_fail(m, n, LP_ERR_PARSE, "needs data, indices and updates (got %d inputs)", n->n_in);
    const char *red = lp_attr_string(n, "reduction", "none");
    if (strcmp(red, "none")) return _lp_op_fail(m, n, LP_ERR_UNSUPPORTED, "reduction '%s' is not supported", red);
    return LP_OK;
}

static lp_status scatternd_infer(const lp_node *n, const lp_shape *in, const lp_tensor *const *in_const, lp_shape *out) {
    (void)n;
    (void)in_const;
    char a[96], b[96];
    int q = in[1].ndim, r = in[0].ndim;
    int64_t k = q ? in[1].d[q - 1] : 0;
    if (q < 1 || k < 1 || k > r || in[2].ndim != q - 1 + r - (int)k)
        return lp_fail(LP_ERR_SHAPE, "indices %s do not fit data %s", lp_shape_fmt(&in[1], a, sizeof a), lp_shape_fmt(&in[0], b, sizeof b));
    out[0] = in[0];
    return LP_OK;
}

static lp_status scatternd_forward(lp_ctx *c, const lp_node *n, lp_tensor *const *in, lp_tensor *const *out) {
    (void)c;
    LP_TRY(host_only(in, n->n_in, out));
    const lp_tensor *x = in[0], *ind = in[1], *upd = in[2];
    lp_tensor *y = out[0];
    if (ind->dtype != LP_I64) return lp_fail(LP_ERR_UNSUPPORTED, "indices must be int64");
    if (upd->dtype != x->dtype) return lp_fail(LP_ERR_UNSUPPORTED, "updates and data differ in dtype");
    memcpy(y->data, x->data, x->nbytes);
    int r = x->ndim, k = (int)ind->shape[ind->ndim - 1];
    int64_t slice = _lp_prod(x->shape, k, r), cnt = lp_tensor_numel(ind) / k;
    size_t es = lp_dtype_size(x->dtype);
    for (int64_t j = 0; j < cnt; j++) {
        int64_t off = 0;
        for (int d = 0; d < k; d++) {
            int64_t id = ((const int64_t *)ind->data)[j * k + d];
            if (id < 0) id += x->shape[d];
            if (id < 0 || id >= x->shape[d])
                return lp_fail(LP_ERR_ARG, "index %" PRId64 " is out of range for axis %d", id, d);
            off = off * x->shape[d] + id;
        }
        memcpy((char *)y->data + (size_t)(off * slice) * es, (const char *)upd->data + (size_t)(j * slice) * es,
               (size_t)slice * es);
    }
    return LP_OK;
}

const lp_op _lp_op_ScatterND = {"ScatterND", scatternd_check, scatternd_infer, scatternd_forward, NULL, NULL, 0, 0};
