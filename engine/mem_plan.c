/* mem_plan.c — offsets in one arena for buffers whose lifetimes (first and last step
 * that touches them, inclusive) are known before a pass: two buffers share bytes only
 * when their lifetimes are disjoint. Greedy by size, largest first, each at the
 * lowest offset free of every placed buffer it lives beside (the planner TFLite's
 * arena uses); within a few percent of the best for CNNs' chains of layers. */
#include "internal.h"

#include <stdlib.h>

typedef struct order_key {
    size_t bytes;
    int first, idx;
} order_key;

static int by_size(const void *a, const void *b) {
    const order_key *x = a, *y = b;
    if (x->bytes != y->bytes) return x->bytes < y->bytes ? 1 : -1;
    if (x->first != y->first) return x->first < y->first ? -1 : 1;
    return x->idx - y->idx; /* a total order: the plan is deterministic */
}

static int by_offset(const void *a, const void *b) {
    const lp_plan_item *x = *(lp_plan_item *const *)a, *y = *(lp_plan_item *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

lp_status lp_mem_plan(lp_plan_item *items, int n, size_t align, size_t *total) {
    *total = 0;
    if (n <= 0) return LP_OK;
    order_key *order = lp_malloc((size_t)n * sizeof *order);
    lp_plan_item **live = lp_malloc((size_t)n * sizeof *live);
    if (!order || !live) {
        free(order);
        free(live);
        return LP_ERR_OOM;
    }
    for (int i = 0; i < n; i++) {
        items[i].bytes = (items[i].bytes + align - 1) / align * align;
        order[i] = (order_key){items[i].bytes, items[i].first, i};
    }
    qsort(order, (size_t)n, sizeof *order, by_size);
    for (int oi = 0; oi < n; oi++) {
        lp_plan_item *it = &items[order[oi].idx];
        int nl = 0;
        for (int pj = 0; pj < oi; pj++) { /* the placed buffers alive beside this one */
            lp_plan_item *p = &items[order[pj].idx];
            if (p->first <= it->last && it->first <= p->last) live[nl++] = p;
        }
        qsort(live, (size_t)nl, sizeof *live, by_offset);
        size_t off = 0;
        for (int k = 0; k < nl; k++) {
            if (off + it->bytes <= live[k]->offset) break; /* fits in the gap below */
            if (live[k]->offset + live[k]->bytes > off) off = live[k]->offset + live[k]->bytes;
        }
        it->offset = off;
        if (off + it->bytes > *total) *total = off + it->bytes;
    }
    free(order);
    free(live);
    return LP_OK;
}
