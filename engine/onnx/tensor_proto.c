/* tensor_proto.c — ONNX TensorProto -> lp_tensor: inline (typed fields or raw_data)
 * and external data files. Shared by initializers and TENSOR attributes; every size
 * and offset comes from an untrusted file, so each is checked before use. */
#include "onnx_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *lp_onnx_dtype_name(int32_t dt) {
    static const char *names[] = {"UNDEFINED", "FLOAT", "UINT8", "INT8", "UINT16", "INT16", "INT32", "INT64",
                                  "STRING", "BOOL", "FLOAT16", "DOUBLE", "UINT32", "UINT64", "COMPLEX64",
                                  "COMPLEX128", "BFLOAT16"};
    return dt >= 0 && dt < (int32_t)(sizeof names / sizeof names[0]) ? names[dt] : "unknown";
}

/* Bytes per element as stored in raw_data, for the types we convert (0: not converted). */
static size_t raw_elem_size(int32_t dt) {
    switch (dt) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: return 4;
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: return 8;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: return 8;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32: return 4;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT16: return 2;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT16: return 2;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT8: return 1;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8: return 1;
    case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL: return 1;
    default: return 0;
    }
}

int lp_onnx_dtype_supported(int32_t dt) { return raw_elem_size(dt) != 0; }

/* Element i of little-endian raw bytes, widened. */
static double raw_get_f(const uint8_t *p, int32_t dt, int64_t i) {
    if (dt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    double d;
    memcpy(&d, p + 8 * i, 8);
    return d;
}

static int64_t raw_get_i(const uint8_t *p, int32_t dt, int64_t i) {
    switch (dt) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: {
        int64_t v;
        memcpy(&v, p + 8 * i, 8);
        return v;
    }
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32: {
        int32_t v;
        memcpy(&v, p + 4 * i, 4);
        return v;
    }
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT16: {
        int16_t v;
        memcpy(&v, p + 2 * i, 2);
        return v;
    }
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT16: {
        uint16_t v;
        memcpy(&v, p + 2 * i, 2);
        return v;
    }
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT8: return (int8_t)p[i];
    default: return p[i]; /* UINT8, BOOL */
    }
}

static int is_float_type(int32_t dt) {
    return dt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT || dt == ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE;
}

/* A relative path inside `dir`: no absolute paths, no ".." component. */
static int safe_relative(const char *loc) {
    if (!*loc || loc[0] == '/' || loc[0] == '\\') return 0;
    const char *p = loc;
    while (*p) {
        const char *e = p;
        while (*e && *e != '/' && *e != '\\') e++;
        if (e - p == 2 && p[0] == '.' && p[1] == '.') return 0;
        p = *e ? e + 1 : e;
    }
    return 1;
}

static int parse_u64(const char *s, int64_t *out) {
    if (!s || !*s) return 0;
    int64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (INT64_MAX - 9) / 10) return 0;
        v = v * 10 + (*s - '0');
    }
    *out = v;
    return 1;
}

/* Read `want` bytes of external data described by tp->external_data. */
static lp_status read_external(const Onnx__TensorProto *tp, const char *dir, const char *file, const char *what,
                               size_t want, uint8_t **out) {
    const char *loc = NULL;
    int64_t offset = 0, length = -1;
    for (size_t k = 0; k < tp->n_external_data; k++) {
        const Onnx__StringStringEntryProto *kv = tp->external_data[k];
        if (!kv || !kv->key || !kv->value) continue;
        if (!strcmp(kv->key, "location")) loc = kv->value;
        else if (!strcmp(kv->key, "offset") && !parse_u64(kv->value, &offset))
            return lp_fail(LP_ERR_PARSE, "%s: %s: bad external data offset '%s'", file, what, kv->value);
        else if (!strcmp(kv->key, "length") && !parse_u64(kv->value, &length))
            return lp_fail(LP_ERR_PARSE, "%s: %s: bad external data length '%s'", file, what, kv->value);
    }
    if (!loc) return lp_fail(LP_ERR_PARSE, "%s: %s: external data without a location", file, what);
    if (!safe_relative(loc))
        return lp_fail(LP_ERR_PARSE, "%s: %s: external data location '%s' must be a relative path inside the model's folder",
                       file, what, loc);
    if (!dir) return lp_fail(LP_ERR_IO, "%s: %s: external data '%s' needs the model's folder (loaded from memory)", file, what, loc);
    if (length >= 0 && (uint64_t)length != want)
        return lp_fail(LP_ERR_PARSE, "%s: %s: external data length %" PRId64 " does not match its shape (%zu bytes)", file,
                       what, length, want);
    size_t plen = strlen(dir) + strlen(loc) + 2;
    char *p = lp_malloc(plen);
    if (!p) return LP_ERR_OOM;
    snprintf(p, plen, "%s/%s", dir, loc);
    FILE *f = fopen(p, "rb");
    if (!f) {
        lp_status s = lp_fail(LP_ERR_IO, "%s: %s: cannot open external data file %s", file, what, p);
        free(p);
        return s;
    }
    struct stat st;
    lp_status s = LP_OK;
    uint8_t *buf = NULL;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        s = lp_fail(LP_ERR_IO, "%s: %s: external data %s is not a regular file", file, what, p);
    } else if ((uint64_t)offset > (uint64_t)st.st_size || want > (uint64_t)st.st_size - (uint64_t)offset) {
        s = lp_fail(LP_ERR_PARSE, "%s: %s: external data range %" PRId64 "+%zu is past the end of %s (%" PRId64 " bytes)",
                    file, what, offset, want, p, (int64_t)st.st_size);
    } else if (!(buf = lp_malloc(want ? want : 1))) {
        s = LP_ERR_OOM;
    } else if (fseeko(f, (off_t)offset, SEEK_SET) != 0 || fread(buf, 1, want, f) != want) {
        s = lp_fail(LP_ERR_IO, "%s: %s: cannot read %zu bytes at offset %" PRId64 " of %s", file, what, want, offset, p);
    }
    fclose(f);
    free(p);
    if (s != LP_OK) {
        free(buf);
        return s;
    }
    *out = buf;
    return LP_OK;
}

lp_status lp_onnx_tensor(const Onnx__TensorProto *tp, const char *dir, const char *file, const char *what,
                         lp_tensor **out) {
    *out = NULL;
    int32_t dt = tp->has_data_type ? tp->data_type : 0;
    size_t esz = raw_elem_size(dt);
    if (!esz)
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: %s has data type %s (supported: FLOAT, DOUBLE, INT64, INT32, INT16, INT8, UINT8, BOOL)",
                       file, what, lp_onnx_dtype_name(dt));
    if (tp->n_dims > LP_MAX_DIMS)
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: %s has rank %zu (at most %d)", file, what, tp->n_dims, LP_MAX_DIMS);
    lp_shape shape = {.ndim = (int)tp->n_dims};
    int64_t numel = 1;
    for (size_t k = 0; k < tp->n_dims; k++) {
        int64_t d = tp->dims[k];
        if (d < 0) return lp_fail(LP_ERR_PARSE, "%s: %s has a negative dimension %" PRId64, file, what, d);
        if (d && numel > (INT64_MAX / 16) / d) return lp_fail(LP_ERR_PARSE, "%s: %s is too large", file, what);
        numel *= d;
        shape.d[k] = d;
    }
    int fl = is_float_type(dt);
    size_t raw_bytes = (size_t)numel * esz;
    const uint8_t *raw = NULL;
    uint8_t *ext = NULL;
    int64_t have; /* element count actually present, checked against the dims */
    if (tp->has_data_location && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) {
        LP_TRY(read_external(tp, dir, file, what, raw_bytes, &ext));
        raw = ext;
        have = numel;
    } else if (tp->has_raw_data) {
        if (tp->raw_data.len % esz)
            return lp_fail(LP_ERR_PARSE, "%s: %s: raw data of %zu bytes is not a whole number of %s elements", file, what,
                           tp->raw_data.len, lp_onnx_dtype_name(dt));
        raw = tp->raw_data.data;
        have = (int64_t)(tp->raw_data.len / esz);
    } else if (dt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) {
        have = (int64_t)tp->n_float_data;
    } else if (dt == ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE) {
        have = (int64_t)tp->n_double_data;
    } else if (dt == ONNX__TENSOR_PROTO__DATA_TYPE__INT64) {
        have = (int64_t)tp->n_int64_data;
    } else {
        have = (int64_t)tp->n_int32_data; /* ONNX keeps all narrow integer types there */
    }
    if (have != numel) {
        free(ext);
        char sb[128];
        return lp_fail(LP_ERR_PARSE, "%s: %s has %" PRId64 " elements but its shape %s needs %" PRId64, file, what, have,
                       lp_shape_fmt(&shape, sb, sizeof sb), numel);
    }
    lp_tensor *t;
    lp_status s = lp_tensor_new_shape(&t, LP_DEVICE_CPU, fl ? LP_F32 : LP_I64, &shape);
    if (s != LP_OK) {
        free(ext);
        return lp_fail_prefix(s, "%s: %s", file, what);
    }
    if (numel == 0) {
        /* nothing to copy (and the typed fields may be NULL) */
    } else if (fl) {
        float *d = t->data;
        if (raw)
            for (int64_t i = 0; i < numel; i++) d[i] = (float)raw_get_f(raw, dt, i);
        else if (dt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
            memcpy(d, tp->float_data, (size_t)numel * sizeof(float));
        else
            for (int64_t i = 0; i < numel; i++) d[i] = (float)tp->double_data[i];
    } else {
        int64_t *d = t->data;
        if (raw)
            for (int64_t i = 0; i < numel; i++) d[i] = raw_get_i(raw, dt, i);
        else if (dt == ONNX__TENSOR_PROTO__DATA_TYPE__INT64)
            memcpy(d, tp->int64_data, (size_t)numel * sizeof(int64_t));
        else
            for (int64_t i = 0; i < numel; i++) d[i] = tp->int32_data[i];
    }
    free(ext);
    *out = t;
    return LP_OK;
}
