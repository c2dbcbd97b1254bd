/* tsne_bhtree.c — Barnes-Hut repulsion on the CPU: a quadtree (2-D) or octree (3-D)
 * rebuilt each iteration by recursive partitioning, then one traversal per point.
 * Per-point partial sums are reduced serially, so results do not depend on the
 * thread count. Also the exact O(N^2) repulsion the tests and the final KL use. */
#include "tsne_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BH_MAX_DEPTH 48 /* deeper cells hold coincident points: keep them in one leaf */
/* Points per leaf: one, as in bhtsne and openTSNE, so theta means what it means
 * there (bigger leaves measured no faster on Fashion-MNIST). */
#define BH_LEAF 1

/* 32 bytes, so two cells share a cache line: the traversal is memory-bound. */
typedef struct bh_node {
    float com[3];    /* centre of mass */
    float len2;      /* squared side length of the (square / cubic) cell */
    int32_t start;   /* leaf: first point in perm */
    int32_t count;
    int32_t child;   /* index of the first of 2^dims children, or -1 for a leaf */
    int32_t pad;
} bh_node;

typedef struct bh_tree {
    int dims;
    bh_node *nodes;
    int64_t n_nodes, cap;
    int32_t *perm, *tmp;
    const float *y;
} bh_tree;

static int64_t node_new(bh_tree *t) {
    if (t->n_nodes == t->cap) {
        int64_t cap = t->cap ? t->cap * 2 : 1024;
        bh_node *p = realloc(t->nodes, (size_t)cap * sizeof *p);
        if (!p) return -1;
        t->nodes = p;
        t->cap = cap;
    }
    return t->n_nodes++;
}

/* Partition perm[start, start+count) among the cell's children by their orthant. */
static int build(bh_tree *t, int64_t id, int64_t start, int32_t count, const double *ctr, double len, int depth) {
    const int dims = t->dims, nc = 1 << dims;
    bh_node *nd = &t->nodes[id];
    nd->len2 = (float)(len * len);
    nd->start = (int32_t)start;
    nd->count = count;
    nd->child = -1;
    if (count <= BH_LEAF || depth >= BH_MAX_DEPTH) {
        double s[3] = {0, 0, 0};
        for (int32_t a = 0; a < count; a++)
            for (int d = 0; d < dims; d++) s[d] += t->y[(int64_t)t->perm[start + a] * dims + d];
        for (int d = 0; d < 3; d++) nd->com[d] = count ? (float)(s[d] / count) : 0.0f;
        return 0;
    }
    int32_t cnt[8] = {0}, off[8];
    int32_t *p = t->perm + start, *q = t->tmp + start;
    for (int32_t a = 0; a < count; a++) {
        int code = 0;
        for (int d = 0; d < dims; d++) code |= (t->y[(int64_t)p[a] * dims + d] >= ctr[d]) << d;
        cnt[code]++;
    }
    off[0] = 0;
    for (int c = 1; c < nc; c++) off[c] = off[c - 1] + cnt[c - 1];
    for (int32_t a = 0; a < count; a++) {
        int code = 0;
        for (int d = 0; d < dims; d++) code |= (t->y[(int64_t)p[a] * dims + d] >= ctr[d]) << d;
        q[off[code]++] = p[a];
    }
    memcpy(p, q, (size_t)count * sizeof *p);
    int64_t first = t->n_nodes;
    for (int c = 0; c < nc; c++)
        if (node_new(t) < 0) return -1;
    t->nodes[id].child = (int32_t)first;
    int32_t begin = 0;
    double com[3] = {0, 0, 0};
    for (int c = 0; c < nc; c++) {
        double cc[3] = {0, 0, 0};
        for (int d = 0; d < dims; d++) cc[d] = ctr[d] + ((c >> d) & 1 ? 0.25 : -0.25) * len;
        if (build(t, first + c, start + begin, cnt[c], cc, len / 2, depth + 1)) return -1;
        for (int d = 0; d < dims; d++) com[d] += t->nodes[first + c].com[d] * cnt[c];
        begin += cnt[c];
    }
    for (int d = 0; d < 3; d++) t->nodes[id].com[d] = (float)(com[d] / count);
    return 0;
}

lp_status _lp_cpu_tsne_repulsion_bh(int64_t n, int dims, double theta, const float *y, float *rep, double *sum_q) {
    if (n > INT32_MAX) return lp_fail(LP_ERR_ARG, "t-SNE: %lld points is over the tree's limit", (long long)n);
    bh_tree t = {.dims = dims, .y = y};
    double *q = NULL;
    lp_status s = LP_OK;
    t.perm = lp_malloc((size_t)n * sizeof(int32_t));
    t.tmp = lp_malloc((size_t)n * sizeof(int32_t));
    q = lp_malloc((size_t)n * sizeof(double));
    if (!t.perm || !t.tmp || !q) {
        s = LP_ERR_OOM;
        goto done;
    }
    double lo[3] = {INFINITY, INFINITY, INFINITY}, hi[3] = {-INFINITY, -INFINITY, -INFINITY};
    for (int64_t i = 0; i < n; i++) {
        t.perm[i] = (int32_t)i;
        for (int d = 0; d < dims; d++) {
            double v = y[i * dims + d];
            lo[d] = v < lo[d] ? v : lo[d];
            hi[d] = v > hi[d] ? v : hi[d];
        }
    }
    double ctr[3] = {0, 0, 0}, len = 0;
    for (int d = 0; d < dims; d++) {
        ctr[d] = (lo[d] + hi[d]) / 2;
        len = fmax(len, hi[d] - lo[d]);
    }
    /* A margin so the points on the upper faces fall inside the cell. */
    len = len * (1 + 1e-6) + 1e-12;
    if (!isfinite(len)) {
        s = lp_fail(LP_ERR_ARG, "t-SNE: the embedding diverged (non-finite coordinates)");
        goto done;
    }
    if (node_new(&t) < 0 || build(&t, 0, 0, (int32_t)n, ctr, len, 0)) {
        s = lp_fail(LP_ERR_OOM, "t-SNE: out of memory building the Barnes-Hut tree for %lld points", (long long)n);
        goto done;
    }
    const double th2 = theta * theta;
    const bh_node *nodes = t.nodes;
    const int32_t *perm = t.perm;
    /* Threads only pay off past a few thousand points (barriers cost more below). */
#pragma omp parallel if (n >= 2048)
    {
        /* Depth-first: at most 2^dims - 1 pending siblings per level, plus one set of children. */
        int32_t stack[8 * BH_MAX_DEPTH + 16];
        /* Points in tree order: neighbours in a row walk the same cells (cache-warm). */
#pragma omp for schedule(dynamic, 256)
        for (int64_t a = 0; a < n; a++) {
            const int64_t i = perm[a];
            double yi[3] = {0, 0, 0}, f[3] = {0, 0, 0}, sq = 0;
            for (int d = 0; d < dims; d++) yi[d] = y[i * dims + d];
            int64_t top = 0;
            stack[top++] = 0;
            while (top > 0) {
                const bh_node *nd = &nodes[stack[--top]];
                double dv[3] = {0, 0, 0}, d2 = 0;
                for (int d = 0; d < dims; d++) {
                    dv[d] = yi[d] - nd->com[d];
                    d2 += dv[d] * dv[d];
                }
                /* Far enough: the whole cell as one mass at its centre (a leaf too). */
                if (nd->len2 < th2 * d2) {
                    double w = 1.0 / (1.0 + d2), cw = nd->count * w;
                    sq += cw;
                    for (int d = 0; d < dims; d++) f[d] += cw * w * dv[d];
                    continue;
                }
                if (nd->child < 0) {
                    for (int32_t b = 0; b < nd->count; b++) {
                        int64_t j = perm[nd->start + b];
                        if (j == i) continue;
                        double ev[3] = {0, 0, 0}, e2 = 0;
                        for (int d = 0; d < dims; d++) {
                            ev[d] = yi[d] - y[j * dims + d];
                            e2 += ev[d] * ev[d];
                        }
                        double w = 1.0 / (1.0 + e2);
                        sq += w;
                        for (int d = 0; d < dims; d++) f[d] += w * w * ev[d];
                    }
                    continue;
                }
                for (int c = 0; c < (1 << dims); c++)
                    if (nodes[nd->child + c].count) stack[top++] = nd->child + c;
            }
            for (int d = 0; d < dims; d++) rep[i * dims + d] = (float)f[d];
            q[i] = sq;
        }
    }
    double z = 0;
    for (int64_t i = 0; i < n; i++) z += q[i];
    *sum_q = z;
done:
    free(t.nodes);
    free(t.perm);
    free(t.tmp);
    free(q);
    return s;
}

void _lp_cpu_tsne_repulsion_exact(int64_t n, int dims, const float *y, double *rep, double *sum_q) {
    double *q = malloc((size_t)n * sizeof(double));
    double z = 0;
#pragma omp parallel for schedule(dynamic, 64)
    for (int64_t i = 0; i < n; i++) {
        double f[3] = {0, 0, 0}, sq = 0;
        for (int64_t j = 0; j < n; j++) {
            if (j == i) continue;
            double dv[3] = {0, 0, 0}, d2 = 0;
            for (int d = 0; d < dims; d++) {
                dv[d] = (double)y[i * dims + d] - y[j * dims + d];
                d2 += dv[d] * dv[d];
            }
            double w = 1.0 / (1.0 + d2);
            sq += w;
            for (int d = 0; d < dims; d++) f[d] += w * w * dv[d];
        }
        if (rep)
            for (int d = 0; d < dims; d++) rep[i * dims + d] = f[d];
        if (q) q[i] = sq;
        else {
#pragma omp atomic
            z += sq;
        }
    }
    if (q)
        for (int64_t i = 0; i < n; i++) z += q[i];
    free(q);
    *sum_q = z;
}
