/* tsne_affinity.c — input-space affinities: the per-point bandwidth search that
 * meets the perplexity (the CPU twin of kernels/tsne_affinity.cu) and the
 * symmetrisation of the conditional p_{j|i} into the joint sparse P (CSR). The
 * search follows scikit-learn's _binary_search_perplexity step for step, so P
 * matches it to float rounding. */
#include "tsne_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

lp_status _lp_cpu_tsne_perplexity(const float *d2, int64_t n, int k, double perplexity, float *p) {
    const double target = log(perplexity), tol = 1e-5;
#pragma omp parallel for schedule(dynamic, 64)
    for (int64_t i = 0; i < n; i++) {
        const float *di = d2 + i * k;
        float *pi = p + i * k;
        double beta = 1.0, beta_min = -INFINITY, beta_max = INFINITY;
        double sum = 1.0, used = beta;
        for (int step = 0; step < 100; step++) {
            double sum_dw = 0;
            used = beta;
            sum = 0;
            for (int j = 0; j < k; j++) {
                double w = exp(-(double)di[j] * beta);
                sum += w;
                sum_dw += (double)di[j] * w;
            }
            if (sum == 0.0) sum = 1e-8;
            double entropy = log(sum) + beta * (sum_dw / sum);
            double diff = entropy - target;
            if (fabs(diff) <= tol) break;
            if (diff > 0) {
                beta_min = beta;
                beta = beta_max == INFINITY ? beta * 2.0 : (beta + beta_max) / 2.0;
            } else {
                beta_max = beta;
                beta = beta_min == -INFINITY ? beta / 2.0 : (beta + beta_min) / 2.0;
            }
        }
        /* sklearn keeps the P of the last evaluated beta, which is the one that
         * broke the loop or the last one tried; recompute with it. */
        for (int j = 0; j < k; j++) pi[j] = (float)(exp(-(double)di[j] * used) / sum);
    }
    return LP_OK;
}

void lp_tsne_csr_free(lp_tsne_csr *p) {
    free(p->rowptr);
    free(p->col);
    free(p->val);
    memset(p, 0, sizeof *p);
}

/* P + P^T: every (i, j) entry of the kNN lists and its mirror (j, i), merged per row
 * after a sort by column; duplicates (mutual neighbours) add up. */
typedef struct coo {
    int32_t c;
    float v;
} coo;

static int coo_cmp(const void *a, const void *b) {
    const coo *x = a, *y = b;
    return (x->c > y->c) - (x->c < y->c);
}

lp_status lp_tsne_symmetrize(int64_t n, int k, const int32_t *idx, const float *cond_p, lp_tsne_csr *out) {
    memset(out, 0, sizeof *out);
    int64_t *cnt = lp_calloc((size_t)n + 1, sizeof(int64_t));
    if (!cnt) return LP_ERR_OOM;
    for (int64_t i = 0; i < n; i++)
        for (int a = 0; a < k; a++) {
            int32_t j = idx[i * k + a];
            if (j < 0 || j >= n || j == i)
                return free(cnt), lp_fail(LP_ERR_INTERNAL, "t-SNE: neighbour list of point %lld holds %d", (long long)i, j);
            cnt[i + 1]++;
            cnt[j + 1]++;
        }
    for (int64_t i = 0; i < n; i++) cnt[i + 1] += cnt[i];
    int64_t total = cnt[n];
    coo *e = lp_malloc((size_t)total * sizeof(coo));
    int64_t *fill = e ? lp_malloc((size_t)n * sizeof(int64_t)) : NULL;
    if (!e || !fill) return free(e), free(cnt), LP_ERR_OOM;
    memcpy(fill, cnt, (size_t)n * sizeof(int64_t));
    for (int64_t i = 0; i < n; i++)
        for (int a = 0; a < k; a++) {
            int32_t j = idx[i * k + a];
            float v = cond_p[i * k + a];
            e[fill[i]++] = (coo){j, v};
            e[fill[j]++] = (coo){(int32_t)i, v};
        }
    free(fill);
    out->n = n;
    out->rowptr = lp_malloc(((size_t)n + 1) * sizeof(int64_t));
    out->col = lp_malloc((size_t)total * sizeof(int32_t));
    out->val = lp_malloc((size_t)total * sizeof(float));
    if (!out->rowptr || !out->col || !out->val) return free(e), free(cnt), lp_tsne_csr_free(out), LP_ERR_OOM;
    double sum = 0;
    int64_t nnz = 0;
    for (int64_t i = 0; i < n; i++) {
        coo *row = e + cnt[i];
        int64_t len = cnt[i + 1] - cnt[i];
        qsort(row, (size_t)len, sizeof *row, coo_cmp);
        out->rowptr[i] = nnz;
        for (int64_t a = 0; a < len;) {
            int32_t c = row[a].c;
            double v = 0;
            while (a < len && row[a].c == c) v += row[a++].v;
            out->col[nnz] = c;
            out->val[nnz] = (float)v;
            sum += v;
            nnz++;
        }
    }
    out->rowptr[n] = nnz;
    out->nnz = nnz;
    free(e);
    free(cnt);
    if (!(sum > 0)) return lp_tsne_csr_free(out), lp_fail(LP_ERR_INTERNAL, "t-SNE: P sums to %g", sum);
    for (int64_t a = 0; a < nnz; a++) out->val[a] = (float)(out->val[a] / sum);
    return LP_OK;
}
