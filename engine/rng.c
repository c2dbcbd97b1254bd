/* rng.c — splitmix64 and Box-Muller: small, fast, and identical on every platform,
 * which is what reproducible initialisation and shuffling need (libc rand is not). */
#include "rng.h"

#include <math.h>

void lp_rng_seed(lp_rng *r, uint64_t seed) {
    r->s = seed;
    r->has_spare = 0;
    r->spare = 0;
}

uint64_t lp_rng_next(lp_rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double lp_rng_uniform(lp_rng *r) { return (double)(lp_rng_next(r) >> 11) * (1.0 / 9007199254740992.0); }

int64_t lp_rng_below(lp_rng *r, int64_t n) {
    /* The modulo bias is below 2^-40 for any n we shuffle; not worth rejection sampling. */
    return (int64_t)(lp_rng_next(r) % (uint64_t)n);
}

double lp_rng_normal(lp_rng *r) {
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    double u1 = lp_rng_uniform(r), u2 = lp_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300; /* log(0) */
    double rad = sqrt(-2.0 * log(u1)), th = 6.283185307179586 * u2;
    r->spare = rad * sin(th);
    r->has_spare = 1;
    return rad * cos(th);
}

void lp_rng_shuffle(lp_rng *r, int64_t *idx, int64_t n) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = lp_rng_below(r, i + 1);
        int64_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}
