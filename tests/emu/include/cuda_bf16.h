/* cuda_bf16.h (Loupe's CUDA emulator) — bfloat16 as CUDA stores it: the upper 16 bits
 * of a float, rounded to nearest even; NaN becomes the canonical 0x7fff. */
#ifndef LP_EMU_CUDA_BF16_H
#define LP_EMU_CUDA_BF16_H
#include <stdint.h>
#include <string.h>

struct __nv_bfloat16 {
    unsigned short x;
};
static inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    __nv_bfloat16 h;
    if ((u & 0x7fffffffu) > 0x7f800000u) h.x = 0x7fff;
    else h.x = (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    return h;
}
static inline float __bfloat162float(__nv_bfloat16 h) {
    uint32_t u = (uint32_t)h.x << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
#endif
