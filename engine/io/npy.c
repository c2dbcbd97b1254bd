/* npy.c — NumPy .npy arrays (format 1.0/2.0/3.0 read, 1.0 written), float32 C-order
 * only, so Python users can np.load what Loupe writes and hand Loupe their arrays. */
#include "io_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static const char npy_magic[6] = {(char)0x93, 'N', 'U', 'M', 'P', 'Y'};

/* Value of key `key` in the header dict: pointer just past "'key':" and spaces. */
static const char *dict_value(const char *hdr, const char *key) {
    char pat[32];
    snprintf(pat, sizeof pat, "'%s'", key);
    const char *p = strstr(hdr, pat);
    if (!p) {
        snprintf(pat, sizeof pat, "\"%s\"", key);
        p = strstr(hdr, pat);
    }
    if (!p) return NULL;
    p += strlen(pat);
    while (*p == ' ') p++;
    if (*p != ':') return NULL;
    p++;
    while (*p == ' ') p++;
    return p;
}

static lp_status parse_header(const char *path, const char *hdr, int *ndim, int64_t *shape) {
    const char *d = dict_value(hdr, "descr");
    if (!d || (*d != '\'' && *d != '"')) return lp_fail(LP_ERR_PARSE, "%s: header has no 'descr'", path);
    char q = *d++;
    const char *e = strchr(d, q);
    if (!e || e - d > 16) return lp_fail(LP_ERR_PARSE, "%s: bad 'descr' in header", path);
    char descr[20];
    memcpy(descr, d, (size_t)(e - d));
    descr[e - d] = 0;
    if (strcmp(descr, "<f4") != 0)
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: dtype '%s' is not supported (float32 only)", path, descr);
    const char *fo = dict_value(hdr, "fortran_order");
    if (!fo) return lp_fail(LP_ERR_PARSE, "%s: header has no 'fortran_order'", path);
    if (strncmp(fo, "True", 4) == 0) return lp_fail(LP_ERR_UNSUPPORTED, "%s: fortran_order arrays are not supported", path);
    if (strncmp(fo, "False", 5) != 0) return lp_fail(LP_ERR_PARSE, "%s: bad 'fortran_order' in header", path);
    const char *s = dict_value(hdr, "shape");
    if (!s || *s != '(') return lp_fail(LP_ERR_PARSE, "%s: header has no 'shape' tuple", path);
    s++;
    *ndim = 0;
    for (;;) {
        while (*s == ' ' || *s == ',') s++;
        if (*s == ')') break;
        if (*s < '0' || *s > '9') return lp_fail(LP_ERR_PARSE, "%s: bad 'shape' in header", path);
        if (*ndim == LP_MAX_DIMS) return lp_fail(LP_ERR_UNSUPPORTED, "%s: rank over %d is not supported", path, LP_MAX_DIMS);
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno || v < 0 || v > ((int64_t)1 << 40)) return lp_fail(LP_ERR_PARSE, "%s: bad dimension in 'shape'", path);
        shape[(*ndim)++] = v;
        s = end;
        while (*s == ' ') s++;
        if (*s != ',' && *s != ')') return lp_fail(LP_ERR_PARSE, "%s: bad 'shape' in header", path);
    }
    return LP_OK;
}

lp_status lp_npy_load(const char *path, lp_tensor **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return lp_fail(LP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    lp_status st = LP_OK;
    char *hdr = NULL;
    uint8_t pre[12];
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, npy_magic, 6) != 0) {
        st = lp_fail(LP_ERR_PARSE, "%s: not a .npy file", path);
        goto done;
    }
    uint32_t hlen;
    if (pre[6] == 1) {
        hlen = (uint32_t)pre[8] | (uint32_t)pre[9] << 8;
    } else if (pre[6] == 2 || pre[6] == 3) {
        if (fread(pre + 10, 1, 2, f) != 2) {
            st = lp_fail(LP_ERR_PARSE, "%s: truncated header", path);
            goto done;
        }
        hlen = (uint32_t)pre[8] | (uint32_t)pre[9] << 8 | (uint32_t)pre[10] << 16 | (uint32_t)pre[11] << 24;
    } else {
        st = lp_fail(LP_ERR_UNSUPPORTED, "%s: .npy format version %d.%d is not supported", path, pre[6], pre[7]);
        goto done;
    }
    if (hlen > (1u << 20)) {
        st = lp_fail(LP_ERR_PARSE, "%s: header length %u is implausible", path, hlen);
        goto done;
    }
    hdr = lp_malloc(hlen + 1);
    if (!hdr) {
        st = LP_ERR_OOM;
        goto done;
    }
    if (fread(hdr, 1, hlen, f) != hlen) {
        st = lp_fail(LP_ERR_PARSE, "%s: truncated header", path);
        goto done;
    }
    hdr[hlen] = 0;
    int ndim = 0;
    int64_t shape[LP_MAX_DIMS] = {0};
    if ((st = parse_header(path, hdr, &ndim, shape)) != LP_OK) goto done;
    if ((st = lp_tensor_new(out, LP_DEVICE_CPU, LP_F32, ndim, shape)) != LP_OK) {
        lp_fail_prefix(st, "%s", path);
        goto done;
    }
    size_t want = (*out)->nbytes;
    size_t got = want ? fread((*out)->data, 1, want, f) : 0;
    if (got != want) {
        char sb[96];
        st = lp_fail(LP_ERR_PARSE, "%s: truncated: shape %s needs %zu data bytes, file has %zu", path,
                     lp_shape_str(ndim, shape, sb, sizeof sb), want, got);
        goto done;
    }
    if (fgetc(f) != EOF) {
        st = lp_fail(LP_ERR_PARSE, "%s: data is longer than shape's %zu bytes", path, want);
        goto done;
    }
    /* The payload is little-endian; every supported host is too. */
done:
    if (st != LP_OK && *out) {
        lp_tensor_free(*out);
        *out = NULL;
    }
    free(hdr);
    fclose(f);
    return st;
}

lp_status lp_npy_save(const char *path, const lp_tensor *t) {
    const char *descr = t->dtype == LP_F32 ? "<f4" : "<i8";
    char shp[LP_MAX_DIMS * 24 + 4];
    size_t o = 0;
    shp[o++] = '(';
    for (int i = 0; i < t->ndim; i++)
        o += (size_t)snprintf(shp + o, sizeof shp - o, "%" PRId64 ",%s", t->shape[i], i + 1 < t->ndim ? " " : "");
    if (t->ndim > 1) o--; /* numpy writes "(3,)" for rank 1 but "(2, 3)" otherwise */
    shp[o++] = ')';
    shp[o] = 0;
    char hdr[512];
    int n = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shp);
    /* Pad with spaces so magic + version + length + header + '\n' is a multiple of 64. */
    size_t total = 10 + (size_t)n + 1;
    size_t padded = (total + 63) / 64 * 64;
    memset(hdr + n, ' ', padded - total);
    hdr[padded - 10 - 1] = '\n';
    uint16_t hlen = (uint16_t)(padded - 10);

    void *data = NULL;
    if (t->nbytes) {
        data = lp_malloc(t->nbytes);
        if (!data) return LP_ERR_OOM;
        lp_status rs = lp_tensor_read(t, data, t->nbytes);
        if (rs != LP_OK) {
            free(data);
            return lp_fail_prefix(rs, "%s", path);
        }
    }
    FILE *f;
    char *tmp;
    lp_status st = lp_atomic_open(path, &f, &tmp);
    if (st != LP_OK) {
        free(data);
        return st;
    }
    uint8_t pre[10];
    memcpy(pre, npy_magic, 6);
    pre[6] = 1;
    pre[7] = 0;
    pre[8] = (uint8_t)(hlen & 0xFF);
    pre[9] = (uint8_t)(hlen >> 8);
    fwrite(pre, 1, 10, f);
    fwrite(hdr, 1, hlen, f);
    if (t->nbytes) fwrite(data, 1, t->nbytes, f);
    free(data);
    return lp_atomic_finish(f, tmp, path, st);
}
