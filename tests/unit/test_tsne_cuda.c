/* test_tsne_cuda.c — each CUDA t-SNE kernel (kernels/tsne_*.cu through the table in
 * engine/cuda/tsne_cuda.c) against its CPU twin on the same inputs. Without CUDA
 * (build or device) it prints "SKIPPED: <reason>" and exits 0; CTest's gpu.tsne_kernels
 * entry reports that as skipped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "tsne/tsne_internal.h"

#ifdef LOUPE_HAVE_CUDA
#include <cuda_runtime.h>

/* kernels/tsne_bh.cu, called directly to walk the tree at theta = 0. */
size_t lp_cuda_tsne_bh_scratch_bytes(int64_t n, int dims);
int lp_cuda_tsne_bh_repulsion(int64_t n, int dims, double theta, const float *y, float *rep, double *sum_q,
                              void *scratch, size_t scratch_bytes);

static void *dev_copy(const void *h, size_t bytes) {
    void *d = NULL;
    assert_int_equal(cudaMalloc(&d, bytes), cudaSuccess);
    if (h) assert_int_equal(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice), cudaSuccess);
    return d;
}

static void host_copy(void *h, const void *d, size_t bytes) {
    assert_int_equal(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
}

static void test_knn_kernels(void **state) {
    (void)state;
    const lp_tsne_kernels *gk = lp_tsne_kernels_cuda(), *ck = lp_tsne_kernels_cpu();
    assert_non_null(gk);
    const int64_t n = 700, d = 33;
    const int k = 12;
    tu_rng r = {5};
    float *x = malloc(n * d * sizeof(float)), *nc = malloc(n * sizeof(float)), *ng = malloc(n * sizeof(float));
    for (int64_t a = 0; a < n * d; a++) x[a] = tu_normal(&r);
    float *dx = dev_copy(x, n * d * sizeof(float)), *dn = dev_copy(NULL, n * sizeof(float));
    assert_int_equal(gk->row_norms(dx, n, d, dn), LP_OK);
    host_copy(ng, dn, n * sizeof(float));
    ck->row_norms(x, n, d, nc);
    assert_int_equal(tu_report_mismatch("row_norms", ng, nc, n, 1e-5, 1e-5, 5), 0);
    /* One tile of all rows x all columns, dot products from the host. */
    float *dot = malloc(n * n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0;
            for (int64_t t = 0; t < d; t++) s += (double)x[i * d + t] * x[j * d + t];
            dot[i * n + j] = (float)s;
        }
    float *bd = malloc(n * k * sizeof(float)), *gd = malloc(n * k * sizeof(float));
    int32_t *bi = malloc(n * k * sizeof(int32_t)), *gi = malloc(n * k * sizeof(int32_t));
    for (int64_t a = 0; a < n * k; a++) bd[a] = INFINITY, bi[a] = -1;
    float *ddot = dev_copy(dot, n * n * sizeof(float)), *dbd = dev_copy(bd, n * k * sizeof(float));
    int32_t *dbi = dev_copy(bi, n * k * sizeof(int32_t));
    assert_int_equal(gk->topk_tile(ddot, n, n, 0, 0, dn, k, dbd, dbi), LP_OK);
    assert_int_equal(gk->topk_finish(dx, n, d, k, dbd, dbi), LP_OK);
    host_copy(gd, dbd, n * k * sizeof(float));
    host_copy(gi, dbi, n * k * sizeof(int32_t));
    ck->topk_tile(dot, n, n, 0, 0, nc, k, bd, bi);
    ck->topk_finish(x, n, d, k, bd, bi);
    assert_int_equal(tu_report_mismatch("knn distances", gd, bd, n * k, 1e-5, 1e-5, 5), 0);
    assert_memory_equal(gi, bi, n * k * sizeof(int32_t));
    /* The symmetric tiling: two diagonal half tiles and one off-diagonal tile merged
     * into rows and columns, on both devices; the result must equal the full tile's. */
    {
        const int64_t h = n / 2;
        float *sub = malloc(h * h * sizeof(float)), *sd = malloc(n * k * sizeof(float));
        int32_t *si = malloc(n * k * sizeof(int32_t));
        float *gsd = malloc(n * k * sizeof(float));
        int32_t *gsi = malloc(n * k * sizeof(int32_t));
        for (int64_t a = 0; a < n * k; a++) sd[a] = INFINITY, si[a] = -1;
        float *dsub = dev_copy(NULL, h * h * sizeof(float)), *dsd = dev_copy(sd, n * k * sizeof(float));
        int32_t *dsi = dev_copy(si, n * k * sizeof(int32_t));
        const int64_t blocks[3][2] = {{0, 0}, {h, h}, {0, h}};
        for (int b = 0; b < 3; b++) {
            int64_t r0 = blocks[b][0], c0 = blocks[b][1];
            for (int64_t r = 0; r < h; r++)
                for (int64_t c = 0; c < h; c++) sub[r * h + c] = dot[(r0 + r) * n + c0 + c];
            assert_int_equal(cudaMemcpy(dsub, sub, h * h * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
            assert_int_equal(gk->topk_tile(dsub, h, h, r0, c0, dn, k, dsd, dsi), LP_OK);
            ck->topk_tile(sub, h, h, r0, c0, nc, k, sd, si);
            if (r0 != c0) {
                assert_int_equal(gk->topk_tile_cols(dsub, h, h, r0, c0, dn, k, dsd, dsi), LP_OK);
                ck->topk_tile_cols(sub, h, h, r0, c0, nc, k, sd, si);
            }
        }
        assert_int_equal(gk->topk_finish(dx, n, d, k, dsd, dsi), LP_OK);
        ck->topk_finish(x, n, d, k, sd, si);
        host_copy(gsd, dsd, n * k * sizeof(float));
        host_copy(gsi, dsi, n * k * sizeof(int32_t));
        assert_memory_equal(si, bi, n * k * sizeof(int32_t));
        assert_memory_equal(gsi, bi, n * k * sizeof(int32_t));
        assert_int_equal(tu_report_mismatch("tiled knn distances", gsd, sd, n * k, 1e-5, 1e-5, 5), 0);
        cudaFree(dsub), cudaFree(dsd), cudaFree(dsi);
        free(sub), free(sd), free(si), free(gsd), free(gsi);
    }
    /* Perplexity on those neighbours. */
    float *pc = malloc(n * k * sizeof(float)), *pg = malloc(n * k * sizeof(float));
    float *dp = dev_copy(NULL, n * k * sizeof(float));
    assert_int_equal(gk->perplexity(dbd, n, k, 4.0, dp), LP_OK);
    host_copy(pg, dp, n * k * sizeof(float));
    ck->perplexity(bd, n, k, 4.0, pc);
    assert_int_equal(tu_report_mismatch("perplexity", pg, pc, n * k, 1e-7, 1e-5, 5), 0);
    cudaFree(dx), cudaFree(dn), cudaFree(ddot), cudaFree(dbd), cudaFree(dbi), cudaFree(dp);
    free(x), free(nc), free(ng), free(dot), free(bd), free(gd), free(bi), free(gi), free(pc), free(pg);
}

static void test_gradient_kernels(void **state) {
    (void)state;
    const lp_tsne_kernels *gk = lp_tsne_kernels_cuda(), *ck = lp_tsne_kernels_cpu();
    const int64_t n = 3000;
    for (int dims = 2; dims <= 3; dims++) {
        tu_rng r = {7 + dims};
        float *y = malloc(n * dims * sizeof(float));
        for (int64_t a = 0; a < n * dims; a++) y[a] = 10 * tu_normal(&r);
        const int k = 9;
        int32_t *idx = malloc(n * k * sizeof(int32_t));
        float *cp = malloc(n * k * sizeof(float));
        for (int64_t i = 0; i < n; i++)
            for (int a = 0; a < k; a++) {
                idx[i * k + a] = (int32_t)((i + 1 + a * 37) % n);
                cp[i * k + a] = tu_uniform(&r, 0.01f, 1);
            }
        lp_tsne_csr p;
        assert_int_equal(lp_tsne_symmetrize(n, k, idx, cp, &p), LP_OK);
        int64_t *drp = dev_copy(p.rowptr, (n + 1) * sizeof(int64_t));
        int32_t *dcol = dev_copy(p.col, p.nnz * sizeof(int32_t));
        float *dval = dev_copy(p.val, p.nnz * sizeof(float)), *dy = dev_copy(y, n * dims * sizeof(float));
        float *dattr = dev_copy(NULL, n * dims * sizeof(float)), *drep = dev_copy(NULL, n * dims * sizeof(float));
        float *ac = malloc(n * dims * sizeof(float)), *ag = malloc(n * dims * sizeof(float));
        double plc, plg, zg;
        assert_int_equal(gk->attraction(n, dims, drp, dcol, dval, dy, dattr, &plg), LP_OK);
        host_copy(ag, dattr, n * dims * sizeof(float));
        ck->attraction(n, dims, p.rowptr, p.col, p.val, y, ac, &plc);
        assert_int_equal(tu_report_mismatch("attraction", ag, ac, n * dims, 1e-9, 1e-5, 5), 0);
        assert_true(fabs(plg - plc) <= 1e-9 * fabs(plc));
        /* At theta 0 the CUDA repulsion is the exact kernel: compare with the exact CPU sum
         * (the tree is tested in test_bh_repulsion). */
        double *rex = malloc(n * dims * sizeof(double)), zex;
        float *rg = malloc(n * dims * sizeof(float));
        assert_int_equal(gk->repulsion(n, dims, 0.0, dy, drep, &zg), LP_OK);
        host_copy(rg, drep, n * dims * sizeof(float));
        _lp_cpu_tsne_repulsion_exact(n, dims, y, rex, &zex);
        double rel = tu_rel_l2_d(rg, rex, n * dims);
        printf("CUDA %dD: repulsion rel L2 %.3g, Z rel %.3g\n", dims, rel, fabs(zg - zex) / zex);
        assert_true(rel < 1e-5);
        assert_true(fabs(zg - zex) <= 1e-9 * zex);
        /* Two optimizer steps and centring. */
        float *upd = calloc(n * dims, sizeof(float)), *gains = malloc(n * dims * sizeof(float));
        for (int64_t a = 0; a < n * dims; a++) gains[a] = 1;
        float *dupd = dev_copy(upd, n * dims * sizeof(float)), *dg = dev_copy(gains, n * dims * sizeof(float));
        for (int s = 0; s < 2; s++) {
            assert_int_equal(gk->update(n * dims, 12, (float)(1 / zex), 250, 0.5f, dattr, drep, dy, dupd, dg), LP_OK);
            ck->update(n * dims, 12, (float)(1 / zex), 250, 0.5f, ag, rg, y, upd, gains);
        }
        assert_int_equal(gk->center(n, dims, dy), LP_OK);
        ck->center(n, dims, y);
        float *yg = malloc(n * dims * sizeof(float));
        host_copy(yg, dy, n * dims * sizeof(float));
        assert_int_equal(tu_report_mismatch("update + center", yg, y, n * dims, 1e-4, 1e-5, 5), 0);
        lp_tsne_csr_free(&p);
        cudaFree(drp), cudaFree(dcol), cudaFree(dval), cudaFree(dy), cudaFree(dattr), cudaFree(drep), cudaFree(dupd),
            cudaFree(dg);
        free(y), free(idx), free(cp), free(ac), free(ag), free(rex), free(rg), free(upd), free(gains), free(yg);
    }
}
/* Clustered points with duplicates: 8 Gaussian clusters, a run of 64 identical points,
 * 300 copies of earlier points, and points sharing one coordinate. */
static void bh_points(int64_t n, int dims, uint64_t seed, float *y) {
    tu_rng r = {seed};
    float ctr[8][3];
    for (int c = 0; c < 8; c++)
        for (int d = 0; d < 3; d++) ctr[c][d] = tu_uniform(&r, -30, 30);
    for (int64_t i = 0; i < n; i++) {
        int c = (int)(tu_next(&r) % 8);
        float sd = c == 0 ? 0.05f : 1.0f + c;
        for (int d = 0; d < dims; d++) y[i * dims + d] = ctr[c][d] + sd * tu_normal(&r);
    }
    for (int64_t i = 100; i < 164; i++)
        for (int d = 0; d < dims; d++) y[i * dims + d] = y[99 * dims + d];
    for (int64_t i = 500; i < 800; i++) {
        int64_t j = (int64_t)(tu_next(&r) % 500);
        for (int d = 0; d < dims; d++) y[i * dims + d] = y[j * dims + d];
    }
    for (int64_t i = 1000; i < 1100; i++) y[i * dims] = y[1000 * dims];
}

static double z_rel(double z, double zex) { return fabs(z - zex) / zex; }

/* The GPU tree against the exact sum at theta 0 (it must descend to every point), and
 * at theta 0.5 against the CPU quadtree's error on the same points; then bitwise
 * repeatability. */
static void test_bh_repulsion(void **state) {
    (void)state;
    const lp_tsne_kernels *gk = lp_tsne_kernels_cuda();
    assert_non_null(gk);
    const int64_t n = 4000;
    for (int dims = 2; dims <= 3; dims++) {
        const size_t m = (size_t)n * dims;
        float *y = malloc(m * sizeof(float)), *rg = malloc(m * sizeof(float)), *rc = malloc(m * sizeof(float));
        float *rg2 = malloc(m * sizeof(float));
        double *rex = malloc(m * sizeof(double)), zex, zg, zc, zg2;
        bh_points(n, dims, 11 + dims, y);
        _lp_cpu_tsne_repulsion_exact(n, dims, y, rex, &zex);
        float *dy = dev_copy(y, m * sizeof(float)), *drep = dev_copy(NULL, m * sizeof(float));
        size_t bytes = lp_cuda_tsne_bh_scratch_bytes(n, dims);
        assert_true(bytes > 0);
        void *scratch = dev_copy(NULL, bytes);
        assert_int_equal(lp_cuda_tsne_bh_repulsion(n, dims, 0.0, dy, drep, &zg, scratch, bytes), cudaSuccess);
        host_copy(rg, drep, m * sizeof(float));
        double rel0 = tu_rel_l2_d(rg, rex, (int64_t)m);
        printf("CUDA BH %dD theta 0: rel L2 %.3g, Z rel %.3g\n", dims, rel0, z_rel(zg, zex));
        assert_true(rel0 <= 1e-5);
        assert_true(z_rel(zg, zex) <= 1e-9);
        assert_int_equal(gk->repulsion(n, dims, 0.5, dy, drep, &zg), LP_OK);
        host_copy(rg, drep, m * sizeof(float));
        assert_int_equal(_lp_cpu_tsne_repulsion_bh(n, dims, 0.5, y, rc, &zc), LP_OK);
        double eg = tu_rel_l2_d(rg, rex, (int64_t)m), ec = tu_rel_l2_d(rc, rex, (int64_t)m);
        printf("CUDA BH %dD theta 0.5: rel L2 %.3g (CPU BH %.3g), Z rel %.3g (CPU BH %.3g)\n", dims, eg, ec,
               z_rel(zg, zex), z_rel(zc, zex));
        assert_true(eg <= 2 * ec + 1e-3);
        assert_true(z_rel(zg, zex) <= 2 * z_rel(zc, zex) + 1e-3);
        assert_int_equal(gk->repulsion(n, dims, 0.5, dy, drep, &zg2), LP_OK);
        host_copy(rg2, drep, m * sizeof(float));
        assert_memory_equal(rg, rg2, m * sizeof(float));
        assert_true(zg == zg2);
        /* theta 0 through the table: the exact kernel, repeatable too. */
        assert_int_equal(gk->repulsion(n, dims, 0.0, dy, drep, &zg), LP_OK);
        assert_int_equal(gk->repulsion(n, dims, 0.0, dy, drep, &zg2), LP_OK);
        assert_true(zg == zg2 && z_rel(zg, zex) <= 1e-9);
        cudaFree(dy), cudaFree(drep), cudaFree(scratch);
        free(y), free(rg), free(rc), free(rg2), free(rex);
    }
}
#endif

int main(void) {
#ifndef LOUPE_HAVE_CUDA
    printf("SKIPPED: built without CUDA (configure with -DLOUPE_CUDA=ON on a machine with nvcc)\n");
    return 0;
#else
    if (lp_cuda_device_count() <= 0) {
        printf("SKIPPED: no CUDA device on this machine\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_knn_kernels), cmocka_unit_test(test_gradient_kernels),
                                       cmocka_unit_test(test_bh_repulsion)};
    return cmocka_run_group_tests(tests, NULL, NULL);
#endif
}
