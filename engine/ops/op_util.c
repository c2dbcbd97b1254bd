/* op_util.c — helpers shared by the op files (see op_util.h): node-named errors,
 * constant inputs, axes and auto_pad arithmetic. */
#include "op_util.h"

#include <stdlib.h>
#include <string.h>

lp_status _lp_op_fail(const lp_model *m, const lp_node *n, lp_status s, const char *fmt, ...) {
    char ctx[512], msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return lp_fail(s, "%s: %s", lp_node_ctx(m, n, ctx, sizeof ctx), msg);
}

void *_lp_op_params(lp_node *n, size_t size) {
    free(n->params);
    n->params = lp_calloc(1, size);
    return n->params;
}

int _lp_axis(int64_t axis, int ndim) {
    if (axis < -ndim || axis >= ndim) return -1;
    return (int)(axis < 0 ? axis + ndim : axis);
}

const lp_tensor *_lp_const_in(const lp_model *m, const lp_node *n, int i) {
    if (i >= n->n_in || n->in[i] < 0) return NULL;
    return m->values[n->in[i]].init;
}

int _lp_tensor_ints(const lp_tensor *t, int64_t *dst, int max) {
    if (!t || t->device != LP_DEVICE_CPU) return -1;
    int64_t cnt = lp_tensor_numel(t);
    for (int64_t i = 0; i < cnt && i < max; i++)
        dst[i] = t->dtype == LP_I64 ? ((const int64_t *)t->data)[i] : lp_float_to_int64(((const float *)t->data)[i]);
    return (int)cnt;
}

lp_status _lp_tensor_scalar(const lp_backend *be, const lp_tensor *t, float *v) {
    if (lp_tensor_numel(t) < 1) return lp_fail(LP_ERR_SHAPE, "expected a scalar, got an empty tensor");
    if (t->dtype == LP_I64) {
        *v = (float)((const int64_t *)t->data)[0];
        return LP_OK;
    }
    if (t->device == LP_DEVICE_CPU) {
        *v = ((const float *)t->data)[0];
        return LP_OK;
    }
    return be->download(v, t->data, sizeof(float));
}

const lp_tensor *_lp_input_host(const lp_ctx *c, const lp_node *n, lp_tensor *const *in, int k) {
    int id = n->in[k];
    const lp_value *val = id >= 0 && c->model ? &c->model->values[id] : NULL;
    return val && val->init ? val->init : in ? in[k] : NULL;
}

lp_status _lp_input_scalar(const lp_ctx *c, const lp_node *n, lp_tensor *const *in, int k, float *v) {
    return _lp_tensor_scalar(c->be, _lp_input_host(c, n, in, k), v);
}

int64_t _lp_prod(const int64_t *shape, int a, int b) {
    int64_t p = 1;
    for (int i = a; i < b; i++) p *= shape[i];
    return p;
}

lp_status _lp_acc(const lp_backend *be, int64_t n, const float *src, float *dst) {
    if (n == 0) return LP_OK;
    return be->axpy(n, 1.0f, src, dst);
}

lp_status _lp_copy_tensor(const lp_backend *be, const lp_tensor *src, lp_tensor *dst) {
    size_t nb = src->nbytes < dst->nbytes ? src->nbytes : dst->nbytes;
    if (nb == 0 || src->data == dst->data) return LP_OK;
    if (src->dtype == LP_I64 || (src->device == LP_DEVICE_CPU && dst->device == LP_DEVICE_CPU &&
                                 be->device == LP_DEVICE_CPU)) {
        memcpy(dst->data, src->data, nb);
        return LP_OK;
    }
    return be->copy(dst->data, src->data, nb);
}

int _lp_output_used(const lp_model *m, const lp_node *n, int k) {
    int v = n->out[k];
    for (int i = 0; i < m->n_outputs; i++)
        if (m->outputs[i] == v) return 1;
    for (int i = 0; i < m->n_nodes; i++)
        for (int j = 0; j < m->nodes[i].n_in; j++)
            if (m->nodes[i].in[j] == v) return 1;
    return 0;
}

int _lp_auto_pad(const char *s) {
    if (!s || !strcmp(s, "NOTSET") || !*s) return LP_PAD_NOTSET;
    if (!strcmp(s, "VALID")) return LP_PAD_VALID;
    if (!strcmp(s, "SAME_UPPER")) return LP_PAD_SAME_UPPER;
    if (!strcmp(s, "SAME_LOWER")) return LP_PAD_SAME_LOWER;
    return -1;
}

void _lp_same_pads(int mode, int64_t in, int64_t k, int64_t s, int64_t d, int64_t *p0, int64_t *p1) {
    if (mode == LP_PAD_VALID) {
        *p0 = *p1 = 0;
        return;
    }
    if (mode != LP_PAD_SAME_UPPER && mode != LP_PAD_SAME_LOWER) return;
    int64_t out = (in + s - 1) / s;
    int64_t total = (out - 1) * s + (k - 1) * d + 1 - in;
    if (total < 0) total = 0;
    if (mode == LP_PAD_SAME_UPPER) {
        *p0 = total / 2;
        *p1 = total - total / 2;
    } else {
        *p0 = total - total / 2;
        *p1 = total / 2;
    }
}

static lp_status spatial_list(const lp_model *m, const lp_node *n, const char *name, int64_t *dst, int max, int *cnt) {
    int64_t tmp[8];
    int c = lp_attr_ints(n, name, tmp, 8);
    *cnt = c < 0 ? 0 : c;
    if (c > max)
        return _lp_op_fail(m, n, LP_ERR_UNSUPPORTED, "attribute %s has %d entries (only 1-D and 2-D are supported)", name, c);
    for (int i = 0; i < *cnt; i++) {
        if (tmp[i] < 0 || (strcmp(name, "pads") && tmp[i] < 1))
            return _lp_op_fail(m, n, LP_ERR_PARSE, "bad attribute %s[%d] = %lld", name, i, (long long)tmp[i]);
        dst[i] = tmp[i];
    }
    return LP_OK;
}

lp_status _lp_spatial_parse(const lp_model *m, const lp_node *n, _lp_spatial *sp) {
    memset(sp, 0, sizeof *sp);
    LP_TRY(spatial_list(m, n, "kernel_shape", sp->kernel, 2, &sp->nk));
    LP_TRY(spatial_list(m, n, "strides", sp->strides, 2, &sp->ns));
    LP_TRY(spatial_list(m, n, "dilations", sp->dil, 2, &sp->nd));
    LP_TRY(spatial_list(m, n, "pads", sp->pads, 4, &sp->np));
    if (sp->np % 2) return _lp_op_fail(m, n, LP_ERR_PARSE, "bad attribute pads: %d entries (must be even)", sp->np);
    const char *ap = lp_attr_string(n, "auto_pad", "NOTSET");
    sp->auto_pad = _lp_auto_pad(ap);
    if (sp->auto_pad < 0) return _lp_op_fail(m, n, LP_ERR_PARSE, "bad attribute auto_pad '%s'", ap);
    return LP_OK;
}

lp_status _lp_spatial_resolve(const _lp_spatial *sp, int nsp, const int64_t *in_sp, const int64_t *kernel_w,
                              int64_t k[2], int64_t s[2], int64_t d[2], int64_t p0[2], int64_t p1[2]) {
    if ((sp->nk && sp->nk != nsp) || (sp->ns && sp->ns != nsp) || (sp->nd && sp->nd != nsp) ||
        (sp->np && sp->np != 2 * nsp))
        return lp_fail(LP_ERR_SHAPE, "kernel_shape/strides/dilations/pads do not match a %d-D input", nsp);
    for (int j = 0; j < 2; j++) {
        k[j] = s[j] = d[j] = 1;
        p0[j] = p1[j] = 0;
    }
    for (int i = 0; i < nsp; i++) {
        int j = 2 - nsp + i;
        k[j] = sp->nk ? sp->kernel[i] : (kernel_w ? kernel_w[i] : 1);
        if (kernel_w && sp->nk && kernel_w[i] != sp->kernel[i])
            return lp_fail(LP_ERR_SHAPE, "kernel_shape[%d] = %lld but the weight's kernel is %lld", i,
                           (long long)sp->kernel[i], (long long)kernel_w[i]);
        s[j] = sp->ns ? sp->strides[i] : 1;
        d[j] = sp->nd ? sp->dil[i] : 1;
        p0[j] = sp->np ? sp->pads[i] : 0;
        p1[j] = sp->np ? sp->pads[nsp + i] : 0;
        _lp_same_pads(sp->auto_pad, in_sp[i], k[j], s[j], d[j], &p0[j], &p1[j]);
    }
    return LP_OK;
}
