/* fuzz_image.c — libFuzzer target for the image decoders: any bytes must decode or
 * fail with a status, never crash, leak or allocate without bound (seeds:
 * tests/data/images). */
#include <stddef.h>
#include <stdint.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lp_image img;
    if (lp_image_decode(data, size, "fuzz", &img) == LP_OK) lp_image_free(&img);
    return 0;
}
