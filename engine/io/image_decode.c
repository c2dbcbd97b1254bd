/* image_decode.c — PNG (libpng's simplified API) and JPEG (libjpeg with a longjmp
 * error manager) decoding from memory into float HWC images. Any malformed input is a
 * status naming the file: the fuzzer (tests/fuzz/fuzz_image.c) feeds this directly. */
#include "io_internal.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

lp_status lp_image_alloc(lp_image *img, int w, int h, int c) {
    img->w = img->h = img->c = 0;
    img->px = NULL;
    if (w <= 0 || h <= 0 || c <= 0) return lp_fail(LP_ERR_ARG, "image size %dx%dx%d is empty", w, h, c);
    float *px = lp_calloc((size_t)w * (size_t)h * (size_t)c, sizeof *px);
    if (!px) return LP_ERR_OOM;
    img->w = w;
    img->h = h;
    img->c = c;
    img->px = px;
    return LP_OK;
}

void lp_image_free(lp_image *img) {
    if (!img) return;
    free(img->px);
    img->px = NULL;
    img->w = img->h = img->c = 0;
}

static lp_status check_dims(const char *name, int64_t w, int64_t h) {
    if (w <= 0 || h <= 0) return lp_fail(LP_ERR_PARSE, "%s: image has no pixels (%lldx%lld)", name, (long long)w, (long long)h);
    if (w > LP_IMAGE_MAX_SIDE || h > LP_IMAGE_MAX_SIDE || w * h > LP_IMAGE_MAX_PIXELS)
        return lp_fail(LP_ERR_UNSUPPORTED, "%s: image %lldx%lld is over the %lld-pixel limit", name, (long long)w,
                       (long long)h, (long long)LP_IMAGE_MAX_PIXELS);
    return LP_OK;
}

/* ---- PNG ------------------------------------------------------------------ */
static lp_status decode_png(const void *buf, size_t len, const char *name, lp_image *out) {
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&im, buf, len))
        return lp_fail(LP_ERR_PARSE, "%s: corrupt PNG: %s", name, im.message);
    lp_status st = check_dims(name, im.width, im.height);
    if (st != LP_OK) {
        png_image_free(&im);
        return st;
    }
    int color = (im.format & PNG_FORMAT_FLAG_COLOR) != 0;
    int alpha = (im.format & PNG_FORMAT_FLAG_ALPHA) != 0;
    /* 16-bit files without alpha are read as 16-bit "linear": with no gAMA chunk libpng
     * treats them as linear already, so the values come through untouched. With alpha the
     * linear formats are premultiplied, so those (and all 8-bit files) are read as 8-bit
     * sRGB, flagging 16-bit data as sRGB so libpng only rescales it. */
    int wide = (im.format & PNG_FORMAT_FLAG_LINEAR) != 0 && !alpha;
    int c = color ? (alpha ? 4 : 3) : (alpha ? 4 : 1); /* gray+alpha widens to RGBA */
    png_uint_32 fmt = (c >= 3 ? PNG_FORMAT_FLAG_COLOR : 0) | (c == 4 ? PNG_FORMAT_FLAG_ALPHA : 0);
    if (wide) fmt |= PNG_FORMAT_FLAG_LINEAR;
    else im.flags |= PNG_IMAGE_FLAG_16BIT_sRGB;
    im.format = fmt;
    size_t n = (size_t)im.width * im.height * (size_t)c;
    size_t bytes = n * (wide ? 2 : 1);
    void *raw = lp_malloc(bytes);
    if (!raw) {
        png_image_free(&im);
        return LP_ERR_OOM;
    }
    if (!png_image_finish_read(&im, NULL, raw, 0, NULL)) {
        free(raw);
        lp_status s = lp_fail(LP_ERR_PARSE, "%s: corrupt PNG: %s", name, im.message);
        png_image_free(&im);
        return s;
    }
    st = lp_image_alloc(out, (int)im.width, (int)im.height, c);
    if (st == LP_OK) {
        if (wide) {
            const uint16_t *s = raw;
            for (size_t i = 0; i < n; i++) out->px[i] = s[i] / 65535.0f;
        } else {
            const uint8_t *s = raw;
            for (size_t i = 0; i < n; i++) out->px[i] = s[i] / 255.0f;
        }
    }
    free(raw);
    png_image_free(&im);
    return st;
}

/* ---- JPEG ----------------------------------------------------------------- */
typedef struct jpeg_err {
    struct jpeg_error_mgr mgr;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_on_error(j_common_ptr cinfo) {
    jpeg_err *e = (jpeg_err *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->msg);
    longjmp(e->jb, 1);
}

/* Warnings (level -1) are corrupt or truncated data that libjpeg would paper over with
 * gray blocks; an explanation tool must not explain made-up pixels, so they are errors. */
static void jpeg_on_message(j_common_ptr cinfo, int level) {
    if (level < 0) jpeg_on_error(cinfo);
}

typedef struct jpeg_state {
    struct jpeg_decompress_struct ci;
    jpeg_err err;
    uint8_t *row;
} jpeg_state;

static lp_status decode_jpeg(const void *buf, size_t len, const char *name, lp_image *out) {
    /* Heap-allocated so that nothing live in registers is lost across longjmp. */
    jpeg_state *js = lp_calloc(1, sizeof *js);
    if (!js) return LP_ERR_OOM;
    lp_status st = LP_OK;
    js->ci.err = jpeg_std_error(&js->err.mgr);
    js->err.mgr.error_exit = jpeg_on_error;
    js->err.mgr.emit_message = jpeg_on_message;
    if (setjmp(js->err.jb)) {
        st = lp_fail(LP_ERR_PARSE, "%s: corrupt JPEG data: %s", name, js->err.msg);
        lp_image_free(out);
        goto done;
    }
    jpeg_create_decompress(&js->ci);
    /* Progressive files buffer every coefficient of the image; a hostile header must not
     * make that gigabytes (beyond the limit libjpeg fails with an error, it has no backing store). */
    js->ci.mem->max_memory_to_use = 512L << 20;
    jpeg_mem_src(&js->ci, (const unsigned char *)buf, (unsigned long)len);
    jpeg_read_header(&js->ci, TRUE);
    if (js->ci.jpeg_color_space == JCS_CMYK || js->ci.jpeg_color_space == JCS_YCCK) {
        st = lp_fail(LP_ERR_UNSUPPORTED, "%s: CMYK JPEG is not supported (gray or RGB only)", name);
        goto done;
    }
    int c = js->ci.num_components == 1 ? 1 : 3;
    if (js->ci.num_components != 1 && js->ci.num_components != 3) {
        st = lp_fail(LP_ERR_UNSUPPORTED, "%s: JPEG with %d components is not supported", name, js->ci.num_components);
        goto done;
    }
    js->ci.out_color_space = c == 1 ? JCS_GRAYSCALE : JCS_RGB;
    if ((st = check_dims(name, js->ci.image_width, js->ci.image_height)) != LP_OK) goto done;
    jpeg_start_decompress(&js->ci);
    int w = (int)js->ci.output_width, h = (int)js->ci.output_height;
    if ((st = lp_image_alloc(out, w, h, c)) != LP_OK) goto done;
    js->row = lp_malloc((size_t)w * (size_t)c);
    if (!js->row) {
        st = LP_ERR_OOM;
        lp_image_free(out);
        goto done;
    }
    while (js->ci.output_scanline < js->ci.output_height) {
        int y = (int)js->ci.output_scanline;
        JSAMPROW rp = js->row;
        if (jpeg_read_scanlines(&js->ci, &rp, 1) != 1) break;
        float *dst = out->px + (size_t)y * (size_t)w * (size_t)c;
        for (int i = 0; i < w * c; i++) dst[i] = js->row[i] / 255.0f;
    }
    jpeg_finish_decompress(&js->ci);
done:
    jpeg_destroy_decompress(&js->ci);
    free(js->row);
    free(js);
    return st;
}

lp_status lp_image_decode(const void *buf, size_t len, const char *name, lp_image *out) {
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    out->w = out->h = out->c = 0;
    out->px = NULL;
    const uint8_t *b = buf;
    if (len >= 8 && memcmp(b, png_sig, 8) == 0) return decode_png(buf, len, name, out);
    if (len >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return decode_jpeg(buf, len, name, out);
    return lp_fail(LP_ERR_PARSE, "%s: not a PNG or JPEG file", name);
}

lp_status lp_image_load(const char *path, lp_image *out) {
    out->w = out->h = out->c = 0;
    out->px = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return lp_fail(LP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 1 << 16;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) {
                free(buf);
                fclose(f);
                return lp_fail(LP_ERR_OOM, "%s: out of memory reading the file", path);
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return lp_fail(LP_ERR_IO, "%s: read error", path);
    }
    lp_status st = lp_image_decode(buf, len, path, out);
    free(buf);
    return st;
}
