/* testutil.h — small helpers shared by the cmocka unit tests: a seeded PRNG,
 * error norms, and a message on the first mismatches. */
#ifndef LOUPE_TESTUTIL_H
#define LOUPE_TESTUTIL_H

#include <stdint.h>
#include <stddef.h>

/* Deterministic PRNG (splitmix64) for test data. */
typedef struct tu_rng { uint64_t s; } tu_rng;
uint64_t tu_next(tu_rng *r);
float tu_uniform(tu_rng *r, float lo, float hi);
float tu_normal(tu_rng *r);
void tu_fill_uniform(tu_rng *r, float *x, int64_t n, float lo, float hi);

/* ||a - b|| / max(||b||, tiny), in double. */
double tu_rel_l2(const float *a, const float *b, int64_t n);
double tu_rel_l2_d(const float *a, const double *b, int64_t n);
double tu_max_abs(const float *a, const float *b, int64_t n);
/* Print the first `k` positions where |a-b| > atol + rtol*|b|; returns the count of such positions. */
int64_t tu_report_mismatch(const char *what, const float *a, const float *b, int64_t n, double atol, double rtol, int k);
/* Does the file exist? */
int tu_exists(const char *path);

#endif
