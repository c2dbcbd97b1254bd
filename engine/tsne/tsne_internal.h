/* tsne_internal.h — the t-SNE kernel table and the pieces the driver (tsne.c) is
 * built from. One driver serves both devices: it only calls this table and the
 * device's lp_backend (memory, gemm). The CPU table lives in tsne_cpu.c; the CUDA
 * one (engine/cuda/tsne_*.c + kernels/tsne_*.cu) when LOUPE_HAVE_CUDA. */
#ifndef LOUPE_TSNE_INTERNAL_H
#define LOUPE_TSNE_INTERNAL_H

#include "internal.h"

#include <stdint.h>

/* All pointers are in the table's device memory unless said otherwise. */
typedef struct lp_tsne_kernels {
    const char *name;
    lp_device device;
    /* out[i] = |x_i|^2 for n rows of d floats. */
    lp_status (*row_norms)(const float *x, int64_t n, int64_t d, float *out);
    /* Merge a tile of dot products (rows x cols, row-major, dot[r*cols+c] = x_{r0+r}.x_{c0+c})
     * into each row's running k smallest squared distances (best_d/best_i, n x k, max-heaps;
     * start as +inf/-1). The point itself is never its own neighbour. */
    lp_status (*topk_tile)(const float *dot, int64_t rows, int64_t cols, int64_t r0, int64_t c0,
                           const float *norms, int k, float *best_d, int32_t *best_i);
    /* The same tile seen from its columns: merge dot[r*cols+c] into the heap of
     * point c0+c (the tiles below the diagonal are never computed). */
    lp_status (*topk_tile_cols)(const float *dot, int64_t rows, int64_t cols, int64_t r0, int64_t c0,
                                const float *norms, int k, float *best_d, int32_t *best_i);
    /* Sort each row's heap ascending and recompute the k squared distances exactly
     * (in double) from x, so cancellation in |a|^2+|b|^2-2ab does not reach P. */
    lp_status (*topk_finish)(const float *x, int64_t n, int64_t d, int k, float *best_d, int32_t *best_i);
    /* Conditional p_{j|i} (n x k) from squared distances: per-row binary search for
     * the Gaussian precision whose entropy is log(perplexity) (scikit-learn's rule). */
    lp_status (*perplexity)(const float *d2, int64_t n, int k, double perplexity, float *p);
    /* attr_i = sum_j p_ij w_ij (y_i - y_j), w = 1/(1+|y_i-y_j|^2), over CSR P. When
     * plogw is non-NULL it receives sum_ij p_ij log w_ij (for the KL estimate). */
    lp_status (*attraction)(int64_t n, int dims, const int64_t *rowptr, const int32_t *col, const float *val,
                            const float *y, float *attr, double *plogw);
    /* rep_i = sum_{j!=i} w_ij^2 (y_i - y_j) by Barnes-Hut at theta; *sum_q = sum_{i!=j} w_ij. */
    lp_status (*repulsion)(int64_t n, int dims, double theta, const float *y, float *rep, double *sum_q);
    /* grad = exag*attr - rep/z (m = n*dims coordinates); per-coordinate gains (+0.2
     * when grad and upd have opposite signs, x0.8 else, at least 0.01);
     * upd = mom*upd - lr*gains*grad; y += upd. */
    lp_status (*update)(int64_t m, float exag, float inv_z, float lr, float mom, const float *attr,
                        const float *rep, float *y, float *upd, float *gains);
    /* Subtract the column means of y (n x dims). */
    lp_status (*center)(int64_t n, int dims, float *y);
} lp_tsne_kernels;

const lp_tsne_kernels *lp_tsne_kernels_cpu(void);
#ifdef LOUPE_HAVE_CUDA
/* NULL with a message when no device. */
const lp_tsne_kernels *lp_tsne_kernels_cuda(void);
#endif

/* Symmetric joint P in CSR (host): P_ij = (p_{j|i} + p_{i|j}) / sum, from the kNN
 * lists (n x k) and conditional p (n x k). Rows sorted by column. */
typedef struct lp_tsne_csr {
    int64_t n, nnz;
    int64_t *rowptr; /* n + 1 */
    int32_t *col;
    float *val;
} lp_tsne_csr;
lp_status lp_tsne_symmetrize(int64_t n, int k, const int32_t *idx, const float *cond_p, lp_tsne_csr *out);
void lp_tsne_csr_free(lp_tsne_csr *p);

/* CPU twins, exposed for the tests and for the CUDA kernels' comparisons. */
lp_status _lp_cpu_tsne_perplexity(const float *d2, int64_t n, int k, double perplexity, float *p);
lp_status _lp_cpu_tsne_attraction(int64_t n, int dims, const int64_t *rowptr, const int32_t *col,
                                  const float *val, const float *y, float *attr, double *plogw);
lp_status _lp_cpu_tsne_repulsion_bh(int64_t n, int dims, double theta, const float *y, float *rep,
                                    double *sum_q);
lp_status _lp_cpu_tsne_topk_tile(const float *dot, int64_t rows, int64_t cols, int64_t r0, int64_t c0,
                                 const float *norms, int k, float *best_d, int32_t *best_i);
lp_status _lp_cpu_tsne_topk_tile_cols(const float *dot, int64_t rows, int64_t cols, int64_t r0, int64_t c0,
                                      const float *norms, int k, float *best_d, int32_t *best_i);
lp_status _lp_cpu_tsne_topk_finish(const float *x, int64_t n, int64_t d, int k, float *best_d, int32_t *best_i);
/* Exact O(N^2) repulsion (reference for tests, and Z for the final KL). */
void _lp_cpu_tsne_repulsion_exact(int64_t n, int dims, const float *y, double *rep, double *sum_q);
/* Exact kNN of the rows of x (n x d, device memory of tk/be) by gemm tiles and the
 * table's top-k merge: idx/d2 (n x k, device) ascending. */
lp_status _lp_tsne_knn(const lp_tsne_kernels *tk, const lp_backend *be, const float *x, int64_t n, int64_t d,
                       int k, int32_t *idx, float *d2);

/* PCA initialisation (host): the first `dims` principal coordinates of x (n x d),
 * scaled so the first column has standard deviation `std`; deterministic per seed. */
lp_status lp_tsne_pca_init(const float *x, int64_t n, int64_t d, int dims, uint64_t seed, double std, float *y);

/* splitmix64 stream, for seeds. */
uint64_t _lp_tsne_rand(uint64_t *s);
double _lp_tsne_normal(uint64_t *s);

/* Raster helpers shared by the plots (plot_font.c): 5x7 glyph bitmap rows, ' '..'~'. */
const uint8_t *_lp_font_glyph(char ch);

#endif
