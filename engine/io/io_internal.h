/* io_internal.h — helpers shared by the engine/io writers: the PATH.tmp-then-rename
 * protocol that keeps half-written outputs from ever appearing under their real name. */
#ifndef LOUPE_IO_INTERNAL_H
#define LOUPE_IO_INTERNAL_H

#include "internal.h"

#include <stdio.h>

/* Largest decoded image, in pixels: keeps a hostile header from asking for gigabytes. */
#define LP_IMAGE_MAX_PIXELS ((int64_t)1 << 26)
#define LP_IMAGE_MAX_SIDE 65535

/* Open "<path>.tmp" for writing; *tmp receives that name (caller frees with free()). */
lp_status lp_atomic_open(const char *path, FILE **f, char **tmp);
/* Close f and, if ok and the close succeeded, rename tmp over path; otherwise remove tmp.
 * Frees tmp. Returns `st` unless the close/rename itself fails. */
lp_status lp_atomic_finish(FILE *f, char *tmp, const char *path, lp_status st);

/* A new host image of w x h x c floats (zeroed). */
lp_status lp_image_alloc(lp_image *img, int w, int h, int c);

#endif
