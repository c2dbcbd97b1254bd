/* tsne.c — the t-SNE driver, one for both devices: checks the input, finds the exact
 * kNN, builds the sparse joint P, then runs the optimizer (early exaggeration,
 * momentum, gains) with Barnes-Hut repulsion, all through the t-SNE kernel table.
 * The gradient is openTSNE's (no factor 4), so learning rates carry over from it. */
#include "tsne_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void lp_tsne_opts_default(lp_tsne_opts *o) {
    memset(o, 0, sizeof *o);
    o->dims = 2;
    o->perplexity = 30;
    o->theta = 0.5;
    o->iters = 1000;
    o->seed = 42;
    o->learning_rate = 0;
    o->exaggeration = 12;
    o->exaggeration_iters = 250;
    o->init = LP_TSNE_INIT_PCA;
    o->callback_every = 10;
    o->device = LP_DEVICE_CPU;
}

static lp_status check_input(const lp_tensor *x, const lp_tsne_opts *o, int64_t *n_out, int64_t *d_out) {
    char sh[96];
    if (!x || x->ndim < 1) return lp_fail(LP_ERR_SHAPE, "t-SNE: the input must be an N x D array");
    lp_shape_str(x->ndim, x->shape, sh, sizeof sh);
    if (x->dtype != LP_F32) return lp_fail(LP_ERR_UNSUPPORTED, "t-SNE: the input (%s) must be float32", sh);
    if (x->device != LP_DEVICE_CPU) return lp_fail(LP_ERR_ARG, "t-SNE: the input (%s) must be a host tensor", sh);
    int64_t n = x->shape[0], d = n > 0 ? lp_tensor_numel(x) / n : 0;
    if (x->ndim == 1) d = 1;
    if (n < 4) return lp_fail(LP_ERR_SHAPE, "t-SNE: the input %s has %lld rows; t-SNE needs at least 4", sh, (long long)n);
    if (d < 1) return lp_fail(LP_ERR_SHAPE, "t-SNE: the input %s has no features", sh);
    if (o->dims != 2 && o->dims != 3) return lp_fail(LP_ERR_ARG, "t-SNE: dims must be 2 or 3 (got %d)", o->dims);
    if (!(o->perplexity > 0)) return lp_fail(LP_ERR_ARG, "t-SNE: perplexity must be positive (got %g)", o->perplexity);
    /* Each point needs 3 x perplexity neighbours (openTSNE's rule), all distinct from it. */
    if (3.0 * o->perplexity > (double)(n - 1))
        return lp_fail(LP_ERR_ARG, "t-SNE: perplexity %g is too large for %lld points: it uses 3 x perplexity = %g neighbours per point and each has only %lld others (use a perplexity of at most %g)",
                       o->perplexity, (long long)n, 3.0 * o->perplexity, (long long)(n - 1), floor((n - 1) / 3.0));
    if (!(o->theta >= 0) || o->theta > 10) return lp_fail(LP_ERR_ARG, "t-SNE: theta must be in [0, 10] (got %g)", o->theta);
    if (o->iters < 0) return lp_fail(LP_ERR_ARG, "t-SNE: iterations must be >= 0 (got %d)", o->iters);
    if (o->learning_rate < 0 || !isfinite(o->learning_rate))
        return lp_fail(LP_ERR_ARG, "t-SNE: learning rate must be >= 0 (0 = auto; got %g)", o->learning_rate);
    if (!(o->exaggeration > 0)) return lp_fail(LP_ERR_ARG, "t-SNE: exaggeration must be positive (got %g)", o->exaggeration);
    const float *p = x->data;
    for (int64_t i = 0; i < n; i++)
        for (int64_t t = 0; t < d; t++)
            if (!isfinite(p[i * d + t]))
                return lp_fail(LP_ERR_ARG, "t-SNE: row %lld of the input %s holds %s at column %lld", (long long)i, sh,
                               isnan(p[i * d + t]) ? "NaN" : "Inf", (long long)t);
    *n_out = n;
    *d_out = d;
    return LP_OK;
}

static const lp_tsne_kernels *kernels_for(lp_device dev) {
    if (dev == LP_DEVICE_CPU) return lp_tsne_kernels_cpu();
#ifdef LOUPE_HAVE_CUDA
    if (dev == LP_DEVICE_CUDA) return lp_tsne_kernels_cuda();
#endif
    lp_fail(LP_ERR_DEVICE, "t-SNE: no %s kernels in this build", lp_device_name(dev));
    return NULL;
}

/* Device buffers the optimizer works on, carved from one allocation. */
typedef struct tsne_bufs {
    void *block;
    float *y, *upd, *gains, *attr, *rep;
    int64_t *rowptr;
    int32_t *col;
    float *val;
} tsne_bufs;

static lp_status bufs_alloc(const lp_backend *be, int64_t n, int dims, const lp_tsne_csr *p, tsne_bufs *b) {
    size_t m = (size_t)n * dims * sizeof(float);
    size_t a = (m + 255) & ~(size_t)255;
    size_t rp = (((size_t)n + 1) * sizeof(int64_t) + 255) & ~(size_t)255;
    size_t cl = ((size_t)p->nnz * sizeof(int32_t) + 255) & ~(size_t)255;
    size_t vl = (size_t)p->nnz * sizeof(float);
    LP_TRY(be->alloc(5 * a + rp + cl + vl, &b->block));
    char *c = b->block;
    b->y = (float *)c, b->upd = (float *)(c + a), b->gains = (float *)(c + 2 * a);
    b->attr = (float *)(c + 3 * a), b->rep = (float *)(c + 4 * a);
    b->rowptr = (int64_t *)(c + 5 * a);
    b->col = (int32_t *)(c + 5 * a + rp);
    b->val = (float *)(c + 5 * a + rp + cl);
    LP_TRY(be->upload(b->rowptr, p->rowptr, ((size_t)n + 1) * sizeof(int64_t)));
    LP_TRY(be->upload(b->col, p->col, (size_t)p->nnz * sizeof(int32_t)));
    LP_TRY(be->upload(b->val, p->val, (size_t)p->nnz * sizeof(float)));
    LP_TRY(be->zero(b->upd, m));
    return be->fill((int64_t)n * dims, 1.0f, b->gains);
}

/* kNN and P: conditional affinities on the device, symmetrised on the host. */
static lp_status build_p(const lp_tsne_kernels *tk, const lp_backend *be, const float *xh, int64_t n, int64_t d,
                         const lp_tsne_opts *o, int k, lp_tsne_csr *p, lp_tsne_stats *st) {
    double t0 = lp_now_s();
    float *xd = NULL, *d2 = NULL, *cp = NULL;
    int32_t *idx = NULL;
    float *cph = NULL;
    int32_t *idxh = NULL;
    size_t nk = (size_t)n * k;
    lp_status s = be->alloc((size_t)n * d * sizeof(float), (void **)&xd);
    if (s == LP_OK) s = be->alloc(nk * sizeof(float), (void **)&d2);
    if (s == LP_OK) s = be->alloc(nk * sizeof(float), (void **)&cp);
    if (s == LP_OK) s = be->alloc(nk * sizeof(int32_t), (void **)&idx);
    if (s == LP_OK) s = be->upload(xd, xh, (size_t)n * d * sizeof(float));
    if (s == LP_OK) s = _lp_tsne_knn(tk, be, xd, n, d, k, idx, d2);
    double t1 = lp_now_s();
    if (s == LP_OK) s = tk->perplexity(d2, n, k, o->perplexity, cp);
    if (s == LP_OK) {
        cph = lp_malloc(nk * sizeof(float));
        idxh = lp_malloc(nk * sizeof(int32_t));
        if (!cph || !idxh) s = LP_ERR_OOM;
    }
    if (s == LP_OK) s = be->download(cph, cp, nk * sizeof(float));
    if (s == LP_OK) s = be->download(idxh, idx, nk * sizeof(int32_t));
    if (s == LP_OK) s = lp_tsne_symmetrize(n, k, idxh, cph, p);
    if (st) st->seconds_knn = t1 - t0, st->seconds_p = lp_now_s() - t1;
    free(cph);
    free(idxh);
    if (xd) be->free(xd);
    if (d2) be->free(d2);
    if (cp) be->free(cp);
    if (idx) be->free(idx);
    return s;
}

/* KL(P||Q) = sum p log p - sum p log w + log Z, with w = 1 / (1 + d^2). */
static double kl_from(double plogp, double plogw, double z) { return plogp - plogw + log(z); }

lp_status lp_tsne(const lp_tensor *x, const lp_tsne_opts *opts, lp_tensor **y_out, lp_tsne_stats *st) {
    lp_tsne_opts def;
    if (!opts) lp_tsne_opts_default(&def), opts = &def;
    if (!y_out) return lp_fail(LP_ERR_ARG, "t-SNE: no output given");
    *y_out = NULL;
    if (st) memset(st, 0, sizeof *st);
    int64_t n = 0, d = 0;
    LP_TRY(check_input(x, opts, &n, &d));
    const lp_tsne_kernels *tk = kernels_for(opts->device);
    const lp_backend *be = tk ? lp_backend_get(opts->device) : NULL;
    if (!tk || !be) return LP_ERR_DEVICE;
    const int dims = opts->dims;
    int k = (int)fmin(floor(3.0 * opts->perplexity), (double)(n - 1));
    if (k < 1) k = 1;
    if (st) st->k = k;

    lp_tsne_csr p;
    memset(&p, 0, sizeof p);
    LP_TRY(build_p(tk, be, x->data, n, d, opts, k, &p, st));
    double plogp = 0;
    for (int64_t a = 0; a < p.nnz; a++)
        if (p.val[a] > 0) plogp += p.val[a] * log((double)p.val[a]);

    int64_t shape[2] = {n, dims};
    lp_tensor *y = NULL;
    tsne_bufs b;
    memset(&b, 0, sizeof b);
    lp_status s = lp_tensor_new(&y, LP_DEVICE_CPU, LP_F32, 2, shape);
    if (s != LP_OK) goto done;
    float *yh = y->data;
    if (opts->init == LP_TSNE_INIT_RANDOM) {
        uint64_t rs = opts->seed;
        for (int64_t t = 0; t < n * dims; t++) yh[t] = (float)(1e-4 * _lp_tsne_normal(&rs));
    } else {
        s = lp_tsne_pca_init(x->data, n, d, dims, opts->seed, 1e-4, yh);
        if (s != LP_OK) goto done;
    }
    s = bufs_alloc(be, n, dims, &p, &b);
    if (s == LP_OK) s = be->upload(b.y, yh, (size_t)n * dims * sizeof(float));
    if (s != LP_OK) goto done;

    const double lr = opts->learning_rate > 0 ? opts->learning_rate : fmax(200.0, n / opts->exaggeration);
    const int every = opts->callback_every > 0 ? opts->callback_every : 10;
    double t0 = lp_now_s(), z = 1;
    int it;
    for (it = 0; it < opts->iters; it++) {
        int early = it < opts->exaggeration_iters;
        int report = opts->callback && ((it + 1) % every == 0 || it + 1 == opts->iters);
        double plogw = 0;
        s = tk->attraction(n, dims, b.rowptr, b.col, b.val, b.y, b.attr, report ? &plogw : NULL);
        if (s == LP_OK) s = tk->repulsion(n, dims, opts->theta, b.y, b.rep, &z);
        if (s == LP_OK && !(z > 0)) s = lp_fail(LP_ERR_INTERNAL, "t-SNE: normalisation Z = %g at iteration %d", z, it);
        if (s == LP_OK)
            s = tk->update(n * dims, early ? (float)opts->exaggeration : 1.0f, (float)(1.0 / z), (float)lr,
                           early ? 0.5f : 0.8f, b.attr, b.rep, b.y, b.upd, b.gains);
        if (s == LP_OK) s = tk->center(n, dims, b.y);
        if (s != LP_OK) goto done;
        if (report) {
            /* The KL of the positions the gradient was taken at; one step behind y. */
            s = be->download(yh, b.y, (size_t)n * dims * sizeof(float));
            if (s != LP_OK) goto done;
            lp_tsne_progress pr = {.iter = it + 1, .iters = opts->iters, .kl = kl_from(plogp, plogw, z),
                                   .exaggerating = early, .y = yh, .n = n, .dims = dims};
            if (opts->callback(&pr, opts->user)) {
                it++;
                break;
            }
        }
    }
    if (st) st->seconds_opt = lp_now_s() - t0, st->iters_done = it;
    s = be->download(yh, b.y, (size_t)n * dims * sizeof(float));
    if (s != LP_OK) goto done;
    for (int64_t t = 0; t < n * dims; t++)
        if (!isfinite(yh[t])) {
            s = lp_fail(LP_ERR_INTERNAL, "t-SNE: the embedding diverged (try a smaller learning rate than %g)", lr);
            goto done;
        }
    if (st) {
        /* The final KL, with Z exact where that is affordable. */
        double plogw = 0, zf;
        for (int64_t i = 0; i < n; i++)
            for (int64_t a = p.rowptr[i]; a < p.rowptr[i + 1]; a++) {
                int64_t j = p.col[a];
                double d2 = 0;
                for (int dd = 0; dd < dims; dd++) {
                    double v = (double)yh[i * dims + dd] - yh[j * dims + dd];
                    d2 += v * v;
                }
                plogw -= p.val[a] * log1p(d2);
            }
        if (n <= 20000) _lp_cpu_tsne_repulsion_exact(n, dims, yh, NULL, &zf);
        else {
            float *rep = lp_malloc((size_t)n * dims * sizeof(float));
            if (!rep) {
                s = LP_ERR_OOM;
                goto done;
            }
            s = _lp_cpu_tsne_repulsion_bh(n, dims, 0.25, yh, rep, &zf);
            free(rep);
            if (s != LP_OK) goto done;
        }
        st->kl = kl_from(plogp, plogw, zf);
    }
    s = LP_OK;
done:
    if (b.block) be->free(b.block);
    lp_tsne_csr_free(&p);
    if (s != LP_OK) lp_tensor_free(y);
    else *y_out = y;
    return s;
}
