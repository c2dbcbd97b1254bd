/* tensor.c — lp_tensor creation, copies between devices, shape helpers. Memory on a
 * device comes from that device's backend table. */
#include "internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

size_t lp_dtype_size(lp_dtype dt) { return dt == LP_I64 ? 8 : 4; }

int64_t lp_shape_numel(const lp_shape *s) {
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++) n *= s->d[i];
    return n;
}

int lp_shape_eq(const lp_shape *a, const lp_shape *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->d[i] != b->d[i]) return 0;
    return 1;
}

const char *lp_shape_str(int ndim, const int64_t *shape, char *buf, size_t len) {
    size_t o = 0;
    if (len == 0) return buf;
    buf[0] = 0;
    if (ndim == 0) {
        snprintf(buf, len, "scalar");
        return buf;
    }
    for (int i = 0; i < ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, i ? "x%" PRId64 : "%" PRId64, shape[i]);
    return buf;
}

const char *lp_shape_fmt(const lp_shape *s, char *buf, size_t len) { return lp_shape_str(s->ndim, s->d, buf, len); }

int64_t lp_tensor_numel(const lp_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

lp_shape lp_tensor_shape(const lp_tensor *t) {
    lp_shape s = {0};
    s.ndim = t->ndim;
    for (int i = 0; i < t->ndim; i++) s.d[i] = t->shape[i];
    return s;
}

lp_tensor lp_tensor_view(lp_device dev, lp_dtype dt, const lp_shape *s, void *data) {
    lp_tensor t = {0};
    t.ndim = s->ndim;
    for (int i = 0; i < s->ndim; i++) t.shape[i] = s->d[i];
    t.dtype = dt;
    t.device = dev;
    t.data = data;
    t.nbytes = (size_t)lp_shape_numel(s) * lp_dtype_size(dt);
    return t;
}

static lp_status tensor_new(lp_tensor **out, lp_device dev, lp_dtype dt, int ndim, const int64_t *shape, int zero) {
    *out = NULL;
    if (ndim < 0 || ndim > LP_MAX_DIMS) return lp_fail(LP_ERR_ARG, "tensor rank %d is over %d", ndim, LP_MAX_DIMS);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return lp_fail(LP_ERR_SHAPE, "negative dimension %" PRId64, shape[i]);
        if (shape[i] && n > INT64_MAX / 16 / shape[i]) return lp_fail(LP_ERR_OOM, "tensor too large");
        n *= shape[i];
    }
    if (dt == LP_I64) dev = LP_DEVICE_CPU; /* int64 tensors live on the host */
    const lp_backend *be = lp_backend_get(dev);
    if (!be) return LP_ERR_DEVICE;
    lp_tensor *t = lp_calloc(1, sizeof *t);
    if (!t) return LP_ERR_OOM;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->dtype = dt;
    t->device = dev;
    t->nbytes = (size_t)n * lp_dtype_size(dt);
    t->owns = 1;
    lp_status s = be->alloc(t->nbytes, &t->data);
    if (s == LP_OK && zero) s = be->zero(t->data, t->nbytes);
    if (s != LP_OK) {
        if (t->data) be->free(t->data);
        free(t);
        return s;
    }
    *out = t;
    return LP_OK;
}

lp_status lp_tensor_new(lp_tensor **out, lp_device dev, lp_dtype dt, int ndim, const int64_t *shape) {
    return tensor_new(out, dev, dt, ndim, shape, 1);
}

lp_status lp_tensor_new_shape(lp_tensor **out, lp_device dev, lp_dtype dt, const lp_shape *s) {
    return tensor_new(out, dev, dt, s->ndim, s->d, 1);
}

lp_status _lp_tensor_new_uninit(lp_tensor **out, lp_device dev, lp_dtype dt, const lp_shape *s) {
    return tensor_new(out, dev, dt, s->ndim, s->d, 0);
}

void lp_tensor_free(lp_tensor *t) {
    if (!t) return;
    if (t->owns && t->data) {
        const lp_backend *be = lp_backend_get(t->device);
        if (be) be->free(t->data);
    }
    free(t);
}

lp_status lp_tensor_clone(lp_tensor **out, const lp_tensor *src, lp_device dev) {
    LP_TRY(lp_tensor_new(out, dev, src->dtype, src->ndim, src->shape));
    lp_tensor *t = *out;
    if (!t->nbytes) return LP_OK;
    lp_status s;
    if (src->device == LP_DEVICE_CPU && t->device == LP_DEVICE_CPU)
        memcpy(t->data, src->data, t->nbytes), s = LP_OK;
    else if (src->device == LP_DEVICE_CPU)
        s = lp_backend_get(t->device)->upload(t->data, src->data, t->nbytes);
    else if (t->device == LP_DEVICE_CPU)
        s = lp_backend_get(src->device)->download(t->data, src->data, t->nbytes);
    else
        s = lp_backend_get(t->device)->copy(t->data, src->data, t->nbytes);
    if (s != LP_OK) {
        lp_tensor_free(t);
        *out = NULL;
    }
    return s;
}

lp_status lp_tensor_read(const lp_tensor *t, void *dst, size_t nbytes) {
    if (nbytes < t->nbytes) return lp_fail(LP_ERR_ARG, "destination of %zu bytes is smaller than the tensor's %zu", nbytes, t->nbytes);
    if (t->device == LP_DEVICE_CPU) {
        memcpy(dst, t->data, t->nbytes);
        return LP_OK;
    }
    const lp_backend *be = lp_backend_get(t->device);
    if (!be) return LP_ERR_DEVICE;
    return be->download(dst, t->data, t->nbytes);
}
