/* xent.c — mean softmax cross-entropy and its gradient on the host. It is the loss
 * the trainer minimises; log-sum-exp is taken in double around the row maximum so
 * large logits neither overflow nor lose the small probabilities. */
#include "internal.h"

#include <math.h>

lp_status lp_softmax_xent(const lp_tensor *logits, const int64_t *labels, float *loss, lp_tensor *dlogits) {
    char a[96], b[96];
    if (logits->ndim != 2 || logits->dtype != LP_F32 || logits->device != LP_DEVICE_CPU)
        return lp_fail(LP_ERR_SHAPE, "softmax cross-entropy: logits must be a host f32 N x K tensor, got %s",
                       lp_shape_str(logits->ndim, logits->shape, a, sizeof a));
    int64_t n = logits->shape[0], k = logits->shape[1];
    if (n <= 0 || k <= 0) return lp_fail(LP_ERR_SHAPE, "softmax cross-entropy: empty logits %s",
                                         lp_shape_str(logits->ndim, logits->shape, a, sizeof a));
    if (dlogits && (dlogits->ndim != 2 || dlogits->shape[0] != n || dlogits->shape[1] != k ||
                    dlogits->dtype != LP_F32 || dlogits->device != LP_DEVICE_CPU))
        return lp_fail(LP_ERR_SHAPE, "softmax cross-entropy: dlogits is %s but logits are %s (both host f32)",
                       lp_shape_str(dlogits->ndim, dlogits->shape, b, sizeof b),
                       lp_shape_str(logits->ndim, logits->shape, a, sizeof a));
    for (int64_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= k)
            return lp_fail(LP_ERR_ARG, "softmax cross-entropy: label %lld of row %lld is outside [0, %lld)",
                           (long long)labels[i], (long long)i, (long long)k);
    const float *x = logits->data;
    float *dx = dlogits ? dlogits->data : NULL;
    double total = 0;
    for (int64_t i = 0; i < n; i++) {
        const float *row = x + i * k;
        double mx = row[0];
        for (int64_t j = 1; j < k; j++)
            if (row[j] > mx) mx = row[j];
        double sum = 0;
        for (int64_t j = 0; j < k; j++) sum += exp((double)row[j] - mx);
        double lse = mx + log(sum);
        total += lse - row[labels[i]];
        if (dx) {
            float *drow = dx + i * k;
            for (int64_t j = 0; j < k; j++) {
                double p = exp((double)row[j] - lse);
                drow[j] = (float)((p - (j == labels[i] ? 1.0 : 0.0)) / (double)n);
            }
        }
    }
    *loss = (float)(total / (double)n);
    return LP_OK;
}
