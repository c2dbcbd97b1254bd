/* idx.c — IDX files (MNIST, Fashion-MNIST), gzip'd or plain (zlib's gzread reads
 * both): unsigned-byte images as N x 1 x H x W floats in [0,1], labels as int64 N. */
#include "io_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* Read exactly n bytes; a short read is a truncated file. */
static lp_status read_all(gzFile g, void *buf, size_t n, const char *path, const char *what) {
    uint8_t *p = buf;
    while (n > 0) {
        unsigned chunk = n > (1u << 30) ? (1u << 30) : (unsigned)n;
        int got = gzread(g, p, chunk);
        if (got < 0) {
            int err;
            const char *m = gzerror(g, &err);
            return lp_fail(LP_ERR_PARSE, "%s: corrupt data reading %s: %s", path, what, m);
        }
        if (got == 0) return lp_fail(LP_ERR_PARSE, "%s: truncated while reading %s", path, what);
        p += got;
        n -= (size_t)got;
    }
    return LP_OK;
}

/* Open, check the magic (unsigned bytes, `rank` dims) and read the dims. */
static lp_status open_idx(const char *path, int rank, gzFile *g, uint32_t *dims) {
    *g = gzopen(path, "rb");
    if (!*g) return lp_fail(LP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    uint8_t hdr[4 + 4 * 3];
    lp_status st = read_all(*g, hdr, 4 + 4 * (size_t)rank, path, "the header");
    if (st == LP_OK) {
        uint32_t magic = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
        if (magic != 0x800u + (uint32_t)rank)
            st = lp_fail(LP_ERR_PARSE, "%s: IDX magic 0x%08x, expected 0x%08x (unsigned bytes, %d dims)", path, magic,
                         0x800u + (uint32_t)rank, rank);
    }
    for (int i = 0; st == LP_OK && i < rank; i++) {
        const uint8_t *b = hdr + 4 + 4 * i;
        dims[i] = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    }
    if (st != LP_OK) {
        gzclose(*g);
        *g = NULL;
    }
    return st;
}

static lp_status check_end(gzFile g, const char *path) {
    uint8_t b;
    if (gzread(g, &b, 1) > 0) return lp_fail(LP_ERR_PARSE, "%s: data is longer than the header's dims", path);
    return LP_OK;
}

lp_status lp_idx_load_images(const char *path, lp_tensor **out) {
    *out = NULL;
    gzFile g;
    uint32_t d[3];
    LP_TRY(open_idx(path, 3, &g, d));
    lp_status st = LP_OK;
    uint8_t *raw = NULL;
    uint64_t n = (uint64_t)d[0] * d[1] * d[2];
    if (d[0] == 0 || d[1] == 0 || d[2] == 0 || d[1] > 65536 || d[2] > 65536 || n > ((uint64_t)1 << 32)) {
        st = lp_fail(LP_ERR_PARSE, "%s: implausible image dims %ux%ux%u", path, d[0], d[1], d[2]);
        goto done;
    }
    int64_t shape[4] = {d[0], 1, d[1], d[2]};
    if ((st = lp_tensor_new(out, LP_DEVICE_CPU, LP_F32, 4, shape)) != LP_OK) goto done;
    raw = lp_malloc((size_t)n);
    if (!raw) {
        st = LP_ERR_OOM;
        goto done;
    }
    if ((st = read_all(g, raw, (size_t)n, path, "the pixels")) != LP_OK) goto done;
    if ((st = check_end(g, path)) != LP_OK) goto done;
    float *px = (*out)->data;
    for (uint64_t i = 0; i < n; i++) px[i] = raw[i] / 255.0f;
done:
    if (st != LP_OK && *out) {
        lp_tensor_free(*out);
        *out = NULL;
    }
    free(raw);
    gzclose(g);
    return st;
}

lp_status lp_idx_load_labels(const char *path, lp_tensor **out) {
    *out = NULL;
    gzFile g;
    uint32_t d[1];
    LP_TRY(open_idx(path, 1, &g, d));
    lp_status st = LP_OK;
    uint8_t *raw = NULL;
    if (d[0] == 0 || d[0] > (1u << 30)) {
        st = lp_fail(LP_ERR_PARSE, "%s: implausible label count %u", path, d[0]);
        goto done;
    }
    int64_t shape[1] = {d[0]};
    if ((st = lp_tensor_new(out, LP_DEVICE_CPU, LP_I64, 1, shape)) != LP_OK) goto done;
    raw = lp_malloc(d[0]);
    if (!raw) {
        st = LP_ERR_OOM;
        goto done;
    }
    if ((st = read_all(g, raw, d[0], path, "the labels")) != LP_OK) goto done;
    if ((st = check_end(g, path)) != LP_OK) goto done;
    int64_t *lab = (*out)->data;
    for (uint32_t i = 0; i < d[0]; i++) lab[i] = raw[i];
done:
    if (st != LP_OK && *out) {
        lp_tensor_free(*out);
        *out = NULL;
    }
    free(raw);
    gzclose(g);
    return st;
}
