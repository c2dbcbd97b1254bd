/* emu_dnn.cpp (Loupe's CUDA emulator) — cuDNN convolutions on the CPU: im2col and
 * OpenBLAS GEMMs over NCHW or NHWC tensors in fp32 or bf16, accumulated in fp32. Descriptors are
 * checked against each other and every pointer against the device allocations, so a
 * wrong descriptor, layout or workspace in the backend fails here as on a GPU (or
 * louder). Grouped bf16 convolutions are reported NOT_SUPPORTED, as some cuDNN builds
 * do, so the backend's tf32 fallback runs in tests (LOUPE_EMU_BF16_GROUPED=1 runs them).
 * The fused convolution + bias + activation runs the convolution, then the epilogue. */
#include <cudnn.h>

#include "emu_internal.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

struct lp_emu_dnn {
    cudaStream_t stream;
};
struct lp_emu_tensor {
    cudnnTensorFormat_t fmt;
    cudnnDataType_t type;
    int n, c, h, w, set;
};
struct lp_emu_filter {
    cudnnTensorFormat_t fmt;
    cudnnDataType_t type;
    int k, c, h, w, set;
};
struct lp_emu_conv {
    int ph, pw, sh, sw, dh, dw, groups, set;
    cudnnConvolutionMode_t mode;
    cudnnMathType_t math;
};
struct lp_emu_act {
    cudnnActivationMode_t mode;
    cudnnNanPropagation_t nan;
    double coef;
    int set;
};

namespace {

const size_t ws_need[3] = {64 << 10, 96 << 10, 128 << 10}; /* per direction, reported by Find/Get */

cudnnStatus_t bad(const char *why) {
    fprintf(stderr, "lp_emu: cuDNN: %s\n", why);
    return CUDNN_STATUS_BAD_PARAM;
}

size_t esize(cudnnDataType_t t) { return t == CUDNN_DATA_BFLOAT16 ? 2 : 4; }

/* One 4-d operand as the loops see it. */
struct View {
    char *p;
    bool bf16, nhwc;
    int n, c, h, w;
    size_t at(int i, int ch, int y, int x) const {
        return nhwc ? (((size_t)i * h + y) * w + x) * c + ch : (((size_t)i * c + ch) * h + y) * w + x;
    }
    float get(size_t i, bool round_tf32) const {
        float v = bf16 ? lp_emu::bf16_to_float(((const uint16_t *)p)[i]) : ((const float *)p)[i];
        return round_tf32 ? lp_emu::tf32(v) : v;
    }
    void put(size_t i, float acc, float alpha, float beta) const { /* beta 0: the old value is not read */
        float v = alpha * acc + (beta != 0.f ? beta * get(i, false) : 0.f);
        if (bf16) ((uint16_t *)p)[i] = lp_emu::float_to_bf16((float)v);
        else ((float *)p)[i] = (float)v;
    }
    size_t count() const { return (size_t)n * c * h * w; }
};

View tview(const lp_emu_tensor *d, const void *p) {
    return View{(char *)p, d->type == CUDNN_DATA_BFLOAT16, d->fmt == CUDNN_TENSOR_NHWC, d->n, d->c, d->h, d->w};
}
View fview(const lp_emu_filter *d, const void *p) {
    return View{(char *)p, d->type == CUDNN_DATA_BFLOAT16, d->fmt == CUDNN_TENSOR_NHWC, d->k, d->c, d->h, d->w};
}

int out_dim(int in, int pad, int k, int dil, int stride) { return (in + 2 * pad - dil * (k - 1) - 1) / stride + 1; }

/* The descriptors agree with each other (as cuDNN checks before running). */
cudnnStatus_t check(const lp_emu_tensor *x, const lp_emu_filter *w, const lp_emu_conv *c, const lp_emu_tensor *y) {
    if (!x->set || !w->set || !c->set || !y->set) return bad("a descriptor was never set");
    if (c->mode != CUDNN_CROSS_CORRELATION) return bad("only cross-correlation is emulated");
    if (x->type != w->type || x->type != y->type) return bad("x, w and y differ in data type");
    if (x->fmt != y->fmt || x->fmt != w->fmt) return bad("x, w and y differ in layout");
    if (x->type != CUDNN_DATA_FLOAT && x->type != CUDNN_DATA_BFLOAT16) return bad("data type not emulated");
    if (w->c * c->groups != x->c || w->k % c->groups) return bad("channels do not match the groups");
    if (y->n != x->n || y->c != w->k || y->h != out_dim(x->h, c->ph, w->h, c->dh, c->sh) ||
        y->w != out_dim(x->w, c->pw, w->w, c->dw, c->sw))
        return bad("y's shape is not the convolution's output shape");
    static const bool grouped = lp_emu::knob("LOUPE_EMU_BF16_GROUPED");
    if (x->type == CUDNN_DATA_BFLOAT16 && c->groups > 1 && !grouped)
        return CUDNN_STATUS_NOT_SUPPORTED;
    return CUDNN_STATUS_SUCCESS;
}

/* im2col of image n, group g: col[(ci, ky, kx)][(oy, ox)], zeros outside the input. */
void im2col(const View &xv, bool r, const lp_emu_filter &w, const lp_emu_conv &c, const lp_emu_tensor &y, int n, int g,
            float *col) {
    const int cg = w.c;
    size_t row = 0;
    for (int ci = 0; ci < cg; ci++)
        for (int ky = 0; ky < w.h; ky++)
            for (int kx = 0; kx < w.w; kx++, row++)
                for (int oy = 0; oy < y.h; oy++) {
                    const int iy = oy * c.sh - c.ph + ky * c.dh;
                    for (int ox = 0; ox < y.w; ox++) {
                        const int ix = ox * c.sw - c.pw + kx * c.dw;
                        float v = 0.f;
                        if (iy >= 0 && iy < xv.h && ix >= 0 && ix < xv.w) v = xv.get(xv.at(n, g * cg + ci, iy, ix), r);
                        col[row * y.h * y.w + (size_t)oy * y.w + ox] = v;
                    }
                }
}

/* The transpose: adds col back into acc (image n's NCHW float copy of x). */
void col2im(const float *col, const lp_emu_filter &w, const lp_emu_conv &c, const lp_emu_tensor &x,
            const lp_emu_tensor &y, int g, float *acc) {
    const int cg = w.c;
    size_t row = 0;
    for (int ci = 0; ci < cg; ci++)
        for (int ky = 0; ky < w.h; ky++)
            for (int kx = 0; kx < w.w; kx++, row++)
                for (int oy = 0; oy < y.h; oy++) {
                    const int iy = oy * c.sh - c.ph + ky * c.dh;
                    if (iy < 0 || iy >= x.h) continue;
                    for (int ox = 0; ox < y.w; ox++) {
                        const int ix = ox * c.sw - c.pw + kx * c.dw;
                        if (ix >= 0 && ix < x.w)
                            acc[((size_t)(g * cg + ci) * x.h + iy) * x.w + ix] += col[row * y.h * y.w + (size_t)oy * y.w + ox];
                    }
                }
}

/* dir 0: y = alpha conv(x, w) + beta y; 1: x = alpha conv^T(y, w) + beta x (y is dy);
 * 2: w = alpha corr(x, y) + beta w (y is dy). GEMMs per image and group in fp32, as
 * cuDNN accumulates, on operands read through the views (bf16 widened, TF32 rounded). */
void conv(int dir, float alpha, float beta, const lp_emu_tensor &X, const View &xv, const lp_emu_filter &W,
          const View &wv, const lp_emu_conv &C, const lp_emu_tensor &Y, const View &yv) {
    const bool r = X.type == CUDNN_DATA_FLOAT && C.math != CUDNN_FMA_MATH;
    const int G = C.groups, cg = W.c, kg = W.k / G, K = cg * W.h * W.w, P = Y.h * Y.w;
    std::vector<float> col((size_t)K * P), wf((size_t)W.k * K), yf((size_t)Y.c * P);
    std::vector<float> dwf(dir == 2 ? wf.size() : 0, 0.f), dxf(dir == 1 ? (size_t)X.c * X.h * X.w : 0);
    for (int k = 0; k < W.k; k++) /* weights as a (k, K) matrix */
        for (int ci = 0; ci < cg; ci++)
            for (int ky = 0; ky < W.h; ky++)
                for (int kx = 0; kx < W.w; kx++)
                    wf[(size_t)k * K + ((size_t)ci * W.h + ky) * W.w + kx] = dir == 2 ? 0.f : wv.get(wv.at(k, ci, ky, kx), r);
    for (int n = 0; n < Y.n; n++) {
        if (dir != 0) /* dy of image n as (k, P) */
            for (int k = 0; k < Y.c; k++)
                for (int p = 0; p < P; p++) yf[(size_t)k * P + p] = yv.get(yv.at(n, k, p / Y.w, p % Y.w), r);
        if (dir == 1) std::fill(dxf.begin(), dxf.end(), 0.f);
        for (int g = 0; g < G; g++) {
            const float *wg = wf.data() + (size_t)g * kg * K;
            float *yg = yf.data() + (size_t)g * kg * P;
            if (dir == 0) {
                im2col(xv, r, W, C, Y, n, g, col.data());
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, kg, P, K, 1.f, wg, K, col.data(), P, 0.f, yg, P);
            } else if (dir == 1) {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, P, kg, 1.f, wg, K, yg, P, 0.f, col.data(), P);
                col2im(col.data(), W, C, X, Y, g, dxf.data());
            } else {
                im2col(xv, r, W, C, Y, n, g, col.data());
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, kg, K, P, 1.f, yg, P, col.data(), P, 1.f,
                            dwf.data() + (size_t)g * kg * K, K);
            }
        }
        if (dir == 0)
            for (int k = 0; k < Y.c; k++)
                for (int p = 0; p < P; p++) yv.put(yv.at(n, k, p / Y.w, p % Y.w), yf[(size_t)k * P + p], alpha, beta);
        if (dir == 1)
            for (int ch = 0; ch < X.c; ch++)
                for (int iy = 0; iy < X.h; iy++)
                    for (int ix = 0; ix < X.w; ix++)
                        xv.put(xv.at(n, ch, iy, ix), dxf[((size_t)ch * X.h + iy) * X.w + ix], alpha, beta);
    }
    if (dir == 2)
        for (int k = 0; k < W.k; k++)
            for (int ci = 0; ci < cg; ci++)
                for (int ky = 0; ky < W.h; ky++)
                    for (int kx = 0; kx < W.w; kx++)
                        wv.put(wv.at(k, ci, ky, kx), dwf[(size_t)k * K + ((size_t)ci * W.h + ky) * W.w + kx], alpha, beta);
}

/* A call's descriptors, workspace and operands, checked as cuDNN would. */
cudnnStatus_t check_call(cudnnHandle_t h, int dir, const lp_emu_tensor *xd, const void *x, const lp_emu_filter *wd,
                         const void *w, const lp_emu_conv *cd, const lp_emu_tensor *yd, const void *y, void *ws,
                         size_t ws_bytes) {
    if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
    cudnnStatus_t st = check(xd, wd, cd, yd);
    if (st) return st;
    if (ws_bytes < ws_need[dir] || !ws) return bad("the workspace is smaller than the algorithm asked for");
    if (!lp_emu::device_range(ws, ws_need[dir], "cuDNN workspace")) return CUDNN_STATUS_BAD_PARAM;
    const size_t es = esize(xd->type);
    if (!lp_emu::device_range(x, tview(xd, x).count() * es, "cuDNN x") ||
        !lp_emu::device_range(w, fview(wd, w).count() * es, "cuDNN w") ||
        !lp_emu::device_range(y, tview(yd, y).count() * es, "cuDNN y"))
        return CUDNN_STATUS_BAD_PARAM;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t run(cudnnHandle_t h, int dir, float alpha, float beta, const lp_emu_tensor *xd, const void *x,
                  const lp_emu_filter *wd, const void *w, const lp_emu_conv *cd, const lp_emu_tensor *yd,
                  const void *y, void *ws, size_t ws_bytes) {
    cudnnStatus_t st = check_call(h, dir, xd, x, wd, w, cd, yd, y, ws, ws_bytes);
    if (st) return st;
    /* Copies: a capture replays this later, with the descriptors as they are now. */
    const lp_emu_tensor X = *xd, Y = *yd;
    const lp_emu_filter W = *wd;
    const lp_emu_conv C = *cd;
    cudaError_t e = lp_emu::submit(h->stream, [=]() {
        conv(dir, alpha, beta, X, tview(&X, x), W, fview(&W, w), C, Y, tview(&Y, y));
    });
    return e == cudaSuccess ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_EXECUTION_FAILED;
}

/* Find and Get: one algorithm, with the descriptor's math type and a workspace (the
 * number is a label only: every algorithm computes alike here). */
template <class Perf, class Algo>
cudnnStatus_t pick(int dir, bool find, const lp_emu_tensor *x, const lp_emu_filter *w, const lp_emu_conv *c,
                   const lp_emu_tensor *y, int req, int *ret, Perf *perf) {
    cudnnStatus_t st = check(x, w, c, y);
    *ret = 0;
    if (st && st != CUDNN_STATUS_NOT_SUPPORTED) return st;
    if (req < 1) return bad("no room for a result");
    if (st == CUDNN_STATUS_NOT_SUPPORTED && find) return st;
    perf[0] = Perf{};
    static const char *fwd_algo = getenv("LOUPE_EMU_FWD_ALGO"); /* forward: IMPLICIT_PRECOMP_GEMM unless set */
    perf[0].algo = (Algo)(dir == 0 && fwd_algo && *fwd_algo ? atoi(fwd_algo) : 1);
    perf[0].status = st; /* heuristics: a result that says it cannot run */
    perf[0].memory = ws_need[dir];
    perf[0].mathType = c->math;
    perf[0].time = 1.f;
    *ret = 1;
    return CUDNN_STATUS_SUCCESS;
}

float scalar(const void *p) { return *(const float *)p; }

} // namespace

extern "C" {

const char *cudnnGetErrorString(cudnnStatus_t s) {
    switch (s) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
    default: break;
    }
    return "CUDNN_STATUS_UNKNOWN";
}
cudnnStatus_t cudnnCreate(cudnnHandle_t *h) {
    *h = new lp_emu_dnn{nullptr};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroy(cudnnHandle_t h) {
    delete h;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t s) {
    h->stream = s;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *d) {
    *d = new lp_emu_tensor{};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d) {
    delete d;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t f, cudnnDataType_t t, int n,
                                         int c, int h, int w) {
    if (n <= 0 || c <= 0 || h <= 0 || w <= 0) return bad("a tensor dimension is not positive");
    *d = lp_emu_tensor{f, t, n, c, h, w, 1};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *d) {
    *d = new lp_emu_filter{};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d) {
    delete d;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t t, cudnnTensorFormat_t f, int k,
                                         int c, int h, int w) {
    if (k <= 0 || c <= 0 || h <= 0 || w <= 0) return bad("a filter dimension is not positive");
    *d = lp_emu_filter{f, t, k, c, h, w, 1};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *d) {
    *d = new lp_emu_conv{};
    (*d)->groups = 1;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d) {
    delete d;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h, int pad_w, int u, int v,
                                              int dil_h, int dil_w, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t compute) {
    if (pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dil_h <= 0 || dil_w <= 0) return bad("bad convolution geometry");
    if (compute != CUDNN_DATA_FLOAT) return bad("compute type not emulated");
    d->ph = pad_h, d->pw = pad_w, d->sh = u, d->sw = v, d->dh = dil_h, d->dw = dil_w, d->mode = mode, d->set = 1;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionGroupCount(cudnnConvolutionDescriptor_t d, int groups) {
    if (groups <= 0) return bad("group count not positive");
    d->groups = groups;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t m) {
    d->math = m;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(cudnnConvolutionDescriptor_t d, cudnnTensorDescriptor_t x,
                                                    cudnnFilterDescriptor_t w, int *n, int *c, int *h, int *wd) {
    if (!d->set || !x->set || !w->set) return bad("a descriptor was never set");
    *n = x->n, *c = w->k, *h = out_dim(x->h, d->ph, w->h, d->dh, d->sh), *wd = out_dim(x->w, d->pw, w->w, d->dw, d->sw);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnFindConvolutionForwardAlgorithm(cudnnHandle_t, cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w,
                                                   cudnnConvolutionDescriptor_t c, cudnnTensorDescriptor_t y, int req,
                                                   int *ret, cudnnConvolutionFwdAlgoPerf_t *perf) {
    return pick<cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t>(0, true, x, w, c, y, req, ret, perf);
}
cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithm(cudnnHandle_t, cudnnFilterDescriptor_t w,
                                                        cudnnTensorDescriptor_t dy, cudnnConvolutionDescriptor_t c,
                                                        cudnnTensorDescriptor_t dx, int req, int *ret,
                                                        cudnnConvolutionBwdDataAlgoPerf_t *perf) {
    return pick<cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t>(1, true, dx, w, c, dy, req, ret, perf);
}
cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithm(cudnnHandle_t, cudnnTensorDescriptor_t x,
                                                          cudnnTensorDescriptor_t dy, cudnnConvolutionDescriptor_t c,
                                                          cudnnFilterDescriptor_t dw, int req, int *ret,
                                                          cudnnConvolutionBwdFilterAlgoPerf_t *perf) {
    return pick<cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t>(2, true, x, dw, c, dy, req, ret,
                                                                                      perf);
}
cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t, cudnnTensorDescriptor_t x,
                                                     cudnnFilterDescriptor_t w, cudnnConvolutionDescriptor_t c,
                                                     cudnnTensorDescriptor_t y, int req, int *ret,
                                                     cudnnConvolutionFwdAlgoPerf_t *perf) {
    return pick<cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t>(0, false, x, w, c, y, req, ret, perf);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnnHandle_t, cudnnFilterDescriptor_t w,
                                                          cudnnTensorDescriptor_t dy, cudnnConvolutionDescriptor_t c,
                                                          cudnnTensorDescriptor_t dx, int req, int *ret,
                                                          cudnnConvolutionBwdDataAlgoPerf_t *perf) {
    return pick<cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t>(1, false, dx, w, c, dy, req, ret,
                                                                                   perf);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnnHandle_t, cudnnTensorDescriptor_t x,
                                                            cudnnTensorDescriptor_t dy,
                                                            cudnnConvolutionDescriptor_t c, cudnnFilterDescriptor_t dw,
                                                            int req, int *ret,
                                                            cudnnConvolutionBwdFilterAlgoPerf_t *perf) {
    return pick<cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t>(2, false, x, dw, c, dy, req, ret,
                                                                                      perf);
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void *alpha, cudnnTensorDescriptor_t xd, const void *x,
                                      cudnnFilterDescriptor_t wd, const void *w, cudnnConvolutionDescriptor_t cd,
                                      cudnnConvolutionFwdAlgo_t, void *ws, size_t ws_bytes, const void *beta,
                                      cudnnTensorDescriptor_t yd, void *y) {
    return run(h, 0, scalar(alpha), scalar(beta), xd, x, wd, w, cd, yd, y, ws, ws_bytes);
}
cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void *alpha, cudnnFilterDescriptor_t wd,
                                           const void *w, cudnnTensorDescriptor_t dyd, const void *dy,
                                           cudnnConvolutionDescriptor_t cd, cudnnConvolutionBwdDataAlgo_t, void *ws,
                                           size_t ws_bytes, const void *beta, cudnnTensorDescriptor_t dxd, void *dx) {
    return run(h, 1, scalar(alpha), scalar(beta), dxd, dx, wd, w, cd, dyd, dy, ws, ws_bytes);
}
cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t h, const void *alpha, cudnnTensorDescriptor_t xd,
                                             const void *x, cudnnTensorDescriptor_t dyd, const void *dy,
                                             cudnnConvolutionDescriptor_t cd, cudnnConvolutionBwdFilterAlgo_t,
                                             void *ws, size_t ws_bytes, const void *beta, cudnnFilterDescriptor_t dwd,
                                             void *dw) {
    return run(h, 2, scalar(alpha), scalar(beta), xd, x, dwd, dw, cd, dyd, dy, ws, ws_bytes);
}

cudnnStatus_t cudnnCreateActivationDescriptor(cudnnActivationDescriptor_t *d) {
    *d = new lp_emu_act{};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyActivationDescriptor(cudnnActivationDescriptor_t d) {
    delete d;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetActivationDescriptor(cudnnActivationDescriptor_t d, cudnnActivationMode_t mode,
                                           cudnnNanPropagation_t nan, double coef) {
    *d = lp_emu_act{mode, nan, coef, 1};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionBiasActivationForward(cudnnHandle_t h, const void *alpha1, cudnnTensorDescriptor_t xd,
                                                    const void *x, cudnnFilterDescriptor_t wd, const void *w,
                                                    cudnnConvolutionDescriptor_t cd, cudnnConvolutionFwdAlgo_t algo,
                                                    void *ws, size_t ws_bytes, const void *alpha2,
                                                    cudnnTensorDescriptor_t zd, const void *z,
                                                    cudnnTensorDescriptor_t bd, const void *bias,
                                                    cudnnActivationDescriptor_t ad, cudnnTensorDescriptor_t yd,
                                                    void *y) {
    if (!ad || !ad->set || !bd || !bd->set || !zd || !zd->set) return bad("fused convolution: a descriptor was never set");
    if (ad->mode != CUDNN_ACTIVATION_RELU && ad->mode != CUDNN_ACTIVATION_CLIPPED_RELU &&
        ad->mode != CUDNN_ACTIVATION_IDENTITY)
        return CUDNN_STATUS_NOT_SUPPORTED;
    /* a cuDNN without a fused kernel for the capped ReLU */
    static const bool no_clip = lp_emu::knob("LOUPE_EMU_FUSED_NO_CLIP");
    if (ad->mode == CUDNN_ACTIVATION_CLIPPED_RELU && no_clip) return CUDNN_STATUS_NOT_SUPPORTED;
    if (ad->mode == CUDNN_ACTIVATION_IDENTITY && algo != CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM)
        return CUDNN_STATUS_NOT_SUPPORTED;
    cudnnStatus_t st = check_call(h, 0, xd, x, wd, w, cd, yd, y, ws, ws_bytes);
    if (st) return st;
    if (zd->type != yd->type || zd->fmt != yd->fmt || zd->n != yd->n || zd->c != yd->c || zd->h != yd->h ||
        zd->w != yd->w)
        return bad("fused convolution: z differs from y");
    /* the bias in y's data type (cuDNN's configurations for float and bfloat16 data) */
    if (bd->type != yd->type) return CUDNN_STATUS_NOT_SUPPORTED;
    if (bd->n != 1 || bd->c != yd->c || bd->h != 1 || bd->w != 1) return bad("fused convolution: the bias is not 1 x K x 1 x 1");
    /* a cuDNN whose fused call fails while capturing (building a kernel anew there) */
    static const bool cap_fail = lp_emu::knob("LOUPE_EMU_FUSED_CAPTURE_FAIL");
    if (cap_fail && lp_emu::capturing()) return CUDNN_STATUS_EXECUTION_FAILED;
    static const bool fault = lp_emu::knob("LOUPE_EMU_FUSED_FAULT");
    const float a1 = scalar(alpha1), a2 = scalar(alpha2);
    const bool read_z = a2 != 0.f || fault;
    const size_t es = esize(yd->type), ny = tview(yd, y).count();
    if (!lp_emu::device_range(bias, es * (size_t)yd->c, "cuDNN bias") ||
        (read_z && !lp_emu::device_range(z, es * ny, "cuDNN z")))
        return CUDNN_STATUS_BAD_PARAM;
    const lp_emu_tensor X = *xd, Y = *yd, Z = *zd, B = *bd;
    const lp_emu_filter W = *wd;
    const lp_emu_conv C = *cd;
    const lp_emu_act act = *ad;
    /* The convolution accumulates in fp32; bias, z and the activation are applied before
     * y is written (rounded to bf16 once, as a fused kernel does). z may be y itself. */
    cudaError_t e = lp_emu::submit(h->stream, [=]() {
        std::vector<float> acc(ny);
        const View av{(char *)acc.data(), false, Y.fmt == CUDNN_TENSOR_NHWC, Y.n, Y.c, Y.h, Y.w};
        conv(0, a1, 0.f, X, tview(&X, x), W, fview(&W, w), C, Y, av);
        const View yv = tview(&Y, y), zv = tview(&Z, z), bv = tview(&B, bias);
        for (int n = 0; n < Y.n; n++)
            for (int k = 0; k < Y.c; k++)
                for (int i = 0; i < Y.h; i++)
                    for (int j = 0; j < Y.w; j++) {
                        const size_t at = yv.at(n, k, i, j);
                        float v = acc[at] + (read_z ? a2 * zv.get(at, false) : 0.f) + bv.get(bv.at(0, k, 0, 0), false);
                        const bool relu = act.mode == CUDNN_ACTIVATION_RELU || act.mode == CUDNN_ACTIVATION_CLIPPED_RELU;
                        if (relu && !(act.nan == CUDNN_PROPAGATE_NAN && v != v)) {
                            v = v > 0.f ? v : 0.f; /* NaN: 0 */
                            if (act.mode == CUDNN_ACTIVATION_CLIPPED_RELU) v = v < (float)act.coef ? v : (float)act.coef;
                        }
                        yv.put(at, v, 1.f, 0.f);
                    }
    });
    return e == cudaSuccess ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_EXECUTION_FAILED;
}

} /* extern "C" */
