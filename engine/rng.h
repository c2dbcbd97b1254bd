/* rng.h — the engine's seeded PRNG (splitmix64 with Box-Muller normals): weight
 * initialisation, minibatch shuffling and the stochastic attribution methods
 * (SmoothGrad noise, RISE masks), so a seed reproduces a run exactly on the CPU. */
#ifndef LOUPE_RNG_H
#define LOUPE_RNG_H

#include <stdint.h>

typedef struct lp_rng {
    uint64_t s;
    int has_spare; /* Box-Muller makes normals in pairs */
    double spare;
} lp_rng;

void lp_rng_seed(lp_rng *r, uint64_t seed);
uint64_t lp_rng_next(lp_rng *r);
/* Uniform in [0, 1). */
double lp_rng_uniform(lp_rng *r);
/* Uniform integer in [0, n). */
int64_t lp_rng_below(lp_rng *r, int64_t n);
/* Standard normal. */
double lp_rng_normal(lp_rng *r);
/* Fisher-Yates shuffle of idx[0..n). */
void lp_rng_shuffle(lp_rng *r, int64_t *idx, int64_t n);

#endif
