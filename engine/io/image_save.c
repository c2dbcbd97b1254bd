/* image_save.c — 8-bit PNG output of float images (heatmaps, grids, overlays),
 * written atomically through PATH.tmp. */
#include "io_internal.h"

#include <math.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>

lp_status lp_image_save_png(const char *path, const lp_image *img) {
    if (!img || !img->px || img->w <= 0 || img->h <= 0 || img->c < 1 || img->c > 4)
        return lp_fail(LP_ERR_ARG, "%s: cannot save an empty image or one with %d channels", path, img ? img->c : 0);
    static const png_uint_32 formats[5] = {0, PNG_FORMAT_GRAY, PNG_FORMAT_GA, PNG_FORMAT_RGB, PNG_FORMAT_RGBA};
    size_t n = (size_t)img->w * (size_t)img->h * (size_t)img->c;
    uint8_t *px = lp_malloc(n);
    if (!px) return LP_ERR_OOM;
    for (size_t i = 0; i < n; i++) {
        float v = img->px[i];
        v = v != v ? 0.0f : v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v; /* NaN -> 0 */
        px[i] = (uint8_t)lrintf(v * 255.0f);
    }
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.width = (png_uint_32)img->w;
    im.height = (png_uint_32)img->h;
    im.format = formats[img->c];
    FILE *f;
    char *tmp;
    lp_status st = lp_atomic_open(path, &f, &tmp);
    if (st != LP_OK) {
        free(px);
        return st;
    }
    if (!png_image_write_to_stdio(&im, f, 0, px, 0, NULL))
        st = lp_fail(LP_ERR_IO, "%s: PNG write failed: %s", path, im.message);
    png_image_free(&im);
    free(px);
    return lp_atomic_finish(f, tmp, path, st);
}
