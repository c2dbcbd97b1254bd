/* cuda_conv.c — convolutions through cuDNN: forward, backward-data and
 * backward-filter in fp32 (FMA math: TF32 off, exact reference), tf32 (tensor cores
 * on fp32 data) and bf16 (tensor cores on bfloat16 copies in NHWC, fp32 accumulation,
 * converted back to NCHW fp32 in the same pass that adds the bias or accumulates).
 * Each (shape, precision, direction) gets a plan once: descriptors plus the fastest
 * algorithm cuDNN measures (cudnnFind*, as PyTorch's benchmark mode), cached, with
 * its workspace taken from a grow-only scratch slot. cuDNN pads symmetrically; an
 * asymmetric pad (TensorFlow's SAME) is made explicit with our pad kernel first.
 * Weight gradients in bf16 mode run in tf32: a bf16 weight gradient would lose what
 * training and second-order methods need, and input-gradient passes never ask for it. */
#include "cuda/cuda_internal.h"

#include <stdlib.h>
#include <string.h>

enum { DIR_FWD = 0, DIR_BWD_DATA = 1, DIR_BWD_FILTER = 2 };

typedef struct conv_plan {
    lp_conv_desc d;
    lp_precision prec;
    int dir;
    int asym;   /* explicit padding: cuDNN sees the padded input with pad 0 */
    int xh, xw; /* input size as cuDNN sees it */
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    int algo;
    size_t ws;
} conv_plan;

#define PLAN_CAP 1024
static conv_plan *plans[PLAN_CAP];
static int n_plans;

static void plan_free(conv_plan *p) {
    if (!p) return;
    if (p->x) cudnnDestroyTensorDescriptor(p->x);
    if (p->y) cudnnDestroyTensorDescriptor(p->y);
    if (p->w) cudnnDestroyFilterDescriptor(p->w);
    if (p->conv) cudnnDestroyConvolutionDescriptor(p->conv);
    free(p);
}

/* fp32 must not use tensor cores (TF32 would round the inputs to 10 mantissa bits). */
static int math_ok(lp_precision prec, cudnnMathType_t m) {
    return prec != LP_PREC_FP32 || (m != CUDNN_TENSOR_OP_MATH && m != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION);
}

/* Workspace a plan may ask for: a quarter of the free memory, at least 256 MiB. */
static size_t ws_limit(void) {
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) {
        cudaGetLastError();
        return (size_t)256 << 20;
    }
    return fr / 4 > ((size_t)256 << 20) ? fr / 4 : (size_t)256 << 20;
}

#define PERF_PICK(perf, ret, p, limit)                                                                                 \
    for (int i_ = 0; i_ < (ret); i_++)                                                                                 \
        if ((perf)[i_].status == CUDNN_STATUS_SUCCESS && math_ok((p)->prec, (perf)[i_].mathType) &&                   \
            (perf)[i_].memory <= (limit)) {                                                                            \
            (p)->algo = (int)(perf)[i_].algo;                                                                          \
            (p)->ws = (perf)[i_].memory;                                                                               \
            math = (perf)[i_].mathType;                                                                                \
            found = 1;                                                                                                 \
            break;                                                                                                     \
        }

/* Measure the algorithms (Find); where that fails (memory), ask cuDNN's heuristics. */
static lp_status plan_algo(lp_cuda *c, conv_plan *p) {
    const size_t limit = ws_limit();
    cudnnMathType_t math = p->prec == LP_PREC_FP32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH;
    int found = 0, ret = 0;
    if (p->dir == DIR_FWD) {
        cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        if (cudnnFindConvolutionForwardAlgorithm(c->dnn, p->x, p->w, p->conv, p->y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                                 &ret, perf) == CUDNN_STATUS_SUCCESS)
            PERF_PICK(perf, ret, p, limit)
        if (!found) {
            LP_DNN(cudnnGetConvolutionForwardAlgorithm_v7(c->dnn, p->x, p->w, p->conv, p->y,
                                                          CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &ret, perf));
            PERF_PICK(perf, ret, p, (size_t)-1)
        }
    } else if (p->dir == DIR_BWD_DATA) {
        cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        if (cudnnFindConvolutionBackwardDataAlgorithm(c->dnn, p->w, p->y, p->conv, p->x,
                                                      CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &ret,
                                                      perf) == CUDNN_STATUS_SUCCESS)
            PERF_PICK(perf, ret, p, limit)
        if (!found) {
            LP_DNN(cudnnGetConvolutionBackwardDataAlgorithm_v7(c->dnn, p->w, p->y, p->conv, p->x,
                                                               CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &ret, perf));
            PERF_PICK(perf, ret, p, (size_t)-1)
        }
    } else {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
        if (cudnnFindConvolutionBackwardFilterAlgorithm(c->dnn, p->x, p->y, p->conv, p->w,
                                                        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &ret,
                                                        perf) == CUDNN_STATUS_SUCCESS)
            PERF_PICK(perf, ret, p, limit)
        if (!found) {
            LP_DNN(cudnnGetConvolutionBackwardFilterAlgorithm_v7(c->dnn, p->x, p->y, p->conv, p->w,
                                                                 CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &ret, perf));
            PERF_PICK(perf, ret, p, (size_t)-1)
        }
    }
    cudaGetLastError(); /* a failed Find may leave an allocation error behind */
    if (!found)
        return lp_fail(LP_ERR_UNSUPPORTED, "cuDNN has no %s algorithm for this convolution in %s",
                       p->dir == DIR_FWD ? "forward" : p->dir == DIR_BWD_DATA ? "backward-data" : "backward-filter",
                       lp_precision_name(p->prec));
    LP_DNN(cudnnSetConvolutionMathType(p->conv, math));
    return LP_OK;
}

static lp_status plan_make(lp_cuda *c, lp_precision prec, int dir, const lp_conv_desc *d, conv_plan *p) {
    p->d = *d;
    p->prec = prec;
    p->dir = dir;
    p->asym = d->ph0 != d->ph1 || d->pw0 != d->pw1;
    p->xh = d->h + (p->asym ? d->ph0 + d->ph1 : 0);
    p->xw = d->w + (p->asym ? d->pw0 + d->pw1 : 0);
    const int bf16 = prec == LP_PREC_BF16;
    const cudnnTensorFormat_t fmt = bf16 ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
    const cudnnDataType_t dt = bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    LP_DNN(cudnnCreateTensorDescriptor(&p->x));
    LP_DNN(cudnnCreateTensorDescriptor(&p->y));
    LP_DNN(cudnnCreateFilterDescriptor(&p->w));
    LP_DNN(cudnnCreateConvolutionDescriptor(&p->conv));
    LP_DNN(cudnnSetTensor4dDescriptor(p->x, fmt, dt, d->n, d->c, p->xh, p->xw));
    LP_DNN(cudnnSetFilter4dDescriptor(p->w, dt, fmt, d->k, d->c / d->groups, d->kh, d->kw));
    LP_DNN(cudnnSetConvolution2dDescriptor(p->conv, p->asym ? 0 : d->ph0, p->asym ? 0 : d->pw0, d->sh, d->sw, d->dh,
                                           d->dw, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    LP_DNN(cudnnSetConvolutionGroupCount(p->conv, d->groups));
    int on, ok, oh, ow;
    LP_DNN(cudnnGetConvolution2dForwardOutputDim(p->conv, p->x, p->w, &on, &ok, &oh, &ow));
    if (on != d->n || ok != d->k || oh != d->oh || ow != d->ow)
        return lp_fail(LP_ERR_SHAPE, "cuDNN convolution output %dx%dx%dx%d differs from the graph's %dx%dx%dx%d", on, ok,
                       oh, ow, d->n, d->k, d->oh, d->ow);
    LP_DNN(cudnnSetTensor4dDescriptor(p->y, fmt, dt, d->n, d->k, d->oh, d->ow));
    return plan_algo(c, p);
}

static lp_status plan_get(lp_cuda *c, lp_precision prec, int dir, const lp_conv_desc *d, conv_plan **out) {
    for (int i = 0; i < n_plans; i++)
        if (plans[i]->prec == prec && plans[i]->dir == dir && !memcmp(&plans[i]->d, d, sizeof *d)) {
            *out = plans[i];
            return LP_OK;
        }
    if (d->groups <= 0 || d->c % d->groups || d->k % d->groups)
        return lp_fail(LP_ERR_ARG, "convolution: %d input and %d output channels do not split into %d groups", d->c,
                       d->k, d->groups);
    conv_plan *p = calloc(1, sizeof *p);
    if (!p) return lp_fail(LP_ERR_OOM, "out of host memory for a convolution plan");
    lp_status s = plan_make(c, prec, dir, d, p);
    if (s) {
        plan_free(p);
        return s;
    }
    if (n_plans == PLAN_CAP) { /* a model with this many shapes: forget the oldest */
        plan_free(plans[0]);
        memmove(plans, plans + 1, sizeof plans[0] * (PLAN_CAP - 1));
        n_plans--;
    }
    plans[n_plans++] = p;
    *out = p;
    return LP_OK;
}

static lp_status workspace(const conv_plan *p, void **ws) {
    *ws = NULL;
    return p->ws ? _lp_cuda_scratch(LP_SLOT_WORKSPACE, p->ws, ws) : LP_OK;
}

/* x padded explicitly (asymmetric pads) into `slot`. */
static lp_status pad_input(lp_cuda *c, const lp_conv_desc *d, const float *x, lp_cuda_slot slot, float **out) {
    const int64_t xs[4] = {d->n, d->c, d->h, d->w}, pads[8] = {0, 0, d->ph0, d->pw0, 0, 0, d->ph1, d->pw1};
    const size_t bytes = sizeof(float) * (size_t)d->n * d->c * (size_t)(d->h + d->ph0 + d->ph1) * (d->w + d->pw0 + d->pw1);
    void *buf;
    LP_TRY(_lp_cuda_scratch(slot, bytes, &buf));
    LP_KERNEL(lp_k_pad_fwd((lp_stream)c->stream, 4, xs, pads, 0, 0.f, x, buf));
    *out = buf;
    return LP_OK;
}

/* Gradient of the padded input (NCHW fp32) accumulated into dx: the crop. */
static lp_status unpad_grad(lp_cuda *c, const lp_conv_desc *d, const float *dxp, float *dx) {
    const int64_t xs[4] = {d->n, d->c, d->h, d->w}, pads[8] = {0, 0, d->ph0, d->pw0, 0, 0, d->ph1, d->pw1};
    LP_KERNEL(lp_k_pad_bwd((lp_stream)c->stream, 4, xs, pads, 0, dxp, dx));
    return LP_OK;
}

static const float one = 1.f, zero = 0.f;

lp_status _lp_cuda_conv_fwd(lp_precision prec, const lp_conv_desc *d, const float *x, const float *w, const float *b,
                            float *y) {
    lp_cuda *c = _lp_cuda();
    if (!c) return LP_ERR_DEVICE;
    conv_plan *p;
    void *ws;
    LP_TRY(plan_get(c, prec, DIR_FWD, d, &p));
    LP_TRY(workspace(p, &ws));
    const lp_stream s = (lp_stream)c->stream;
    const int64_t ohw = (int64_t)d->oh * d->ow;
    if (p->asym) LP_TRY(pad_input(c, d, x, prec == LP_PREC_BF16 ? LP_SLOT_GRAD : LP_SLOT_X, (float **)&x));
    if (prec != LP_PREC_BF16) {
        LP_DNN(cudnnConvolutionForward(c->dnn, &one, p->x, x, p->w, w, p->conv, (cudnnConvolutionFwdAlgo_t)p->algo, ws,
                                       p->ws, &zero, p->y, y));
        if (b) LP_KERNEL(lp_k_add_bias(s, d->n, d->k, ohw, b, y));
        return LP_OK;
    }
    void *x16, *w16, *y16;
    const int64_t xhw = (int64_t)p->xh * p->xw;
    LP_TRY(_lp_cuda_scratch(LP_SLOT_X, sizeof(uint16_t) * (size_t)d->n * d->c * xhw, &x16));
    LP_TRY(_lp_cuda_scratch(LP_SLOT_W, sizeof(uint16_t) * (size_t)d->k * (d->c / d->groups) * d->kh * d->kw, &w16));
    LP_TRY(_lp_cuda_scratch(LP_SLOT_Y, sizeof(uint16_t) * (size_t)d->n * d->k * ohw, &y16));
    LP_KERNEL(lp_k_nchw_to_nhwc_bf16(s, d->n, d->c, xhw, x, x16));
    LP_KERNEL(lp_k_nchw_to_nhwc_bf16(s, d->k, d->c / d->groups, (int64_t)d->kh * d->kw, w, w16));
    LP_DNN(cudnnConvolutionForward(c->dnn, &one, p->x, x16, p->w, w16, p->conv, (cudnnConvolutionFwdAlgo_t)p->algo, ws,
                                   p->ws, &zero, p->y, y16));
    LP_KERNEL(lp_k_nhwc_bf16_to_nchw(s, d->n, d->k, ohw, y16, b, y, 0));
    return LP_OK;
}

lp_status _lp_cuda_conv_bwd_data(lp_precision prec, const lp_conv_desc *d, const float *dy, const float *w, float *dx) {
    lp_cuda *c = _lp_cuda();
    if (!c) return LP_ERR_DEVICE;
    conv_plan *p;
    void *ws;
    LP_TRY(plan_get(c, prec, DIR_BWD_DATA, d, &p));
    LP_TRY(workspace(p, &ws));
    const lp_stream s = (lp_stream)c->stream;
    const int64_t xhw = (int64_t)p->xh * p->xw, ohw = (int64_t)d->oh * d->ow;
    const size_t padded = (size_t)d->n * d->c * xhw;
    if (prec != LP_PREC_BF16) {
        if (!p->asym) { /* beta = 1: cuDNN accumulates into dx itself */
            LP_DNN(cudnnConvolutionBackwardData(c->dnn, &one, p->w, w, p->y, dy, p->conv,
                                                (cudnnConvolutionBwdDataAlgo_t)p->algo, ws, p->ws, &one, p->x, dx));
            return LP_OK;
        }
        void *dxp;
        LP_TRY(_lp_cuda_scratch(LP_SLOT_X, sizeof(float) * padded, &dxp));
        LP_DNN(cudnnConvolutionBackwardData(c->dnn, &one, p->w, w, p->y, dy, p->conv,
                                            (cudnnConvolutionBwdDataAlgo_t)p->algo, ws, p->ws, &zero, p->x, dxp));
        return unpad_grad(c, d, dxp, dx);
    }
    void *dy16, *w16, *dx16;
    LP_TRY(_lp_cuda_scratch(LP_SLOT_Y, sizeof(uint16_t) * (size_t)d->n * d->k * ohw, &dy16));
    LP_TRY(_lp_cuda_scratch(LP_SLOT_W, sizeof(uint16_t) * (size_t)d->k * (d->c / d->groups) * d->kh * d->kw, &w16));
    LP_TRY(_lp_cuda_scratch(LP_SLOT_X, sizeof(uint16_t) * padded, &dx16));
    LP_KERNEL(lp_k_nchw_to_nhwc_bf16(s, d->n, d->k, ohw, dy, dy16));
    LP_KERNEL(lp_k_nchw_to_nhwc_bf16(s, d->k, d->c / d->groups, (int64_t)d->kh * d->kw, w, w16));
    LP_DNN(cudnnConvolutionBackwardData(c->dnn, &one, p->w, w16, p->y, dy16, p->conv,
                                        (cudnnConvolutionBwdDataAlgo_t)p->algo, ws, p->ws, &zero, p->x, dx16));
    if (!p->asym) {
        LP_KERNEL(lp_k_nhwc_bf16_to_nchw(s, d->n, d->c, xhw, dx16, NULL, dx, 1));
        return LP_OK;
    }
    void *dxp;
    LP_TRY(_lp_cuda_scratch(LP_SLOT_GRAD, sizeof(float) * padded, &dxp));
    LP_KERNEL(lp_k_nhwc_bf16_to_nchw(s, d->n, d->c, xhw, dx16, NULL, dxp, 0));
    return unpad_grad(c, d, dxp, dx);
}

lp_status _lp_cuda_conv_bwd_filter(lp_precision prec, const lp_conv_desc *d, const float *x, const float *dy,
                                   float *dw, float *db) {
    lp_cuda *c = _lp_cuda();
    if (!c) return LP_ERR_DEVICE;
    if (prec == LP_PREC_BF16) prec = LP_PREC_TF32; /* see the top of this file */
    conv_plan *p;
    void *ws;
    LP_TRY(plan_get(c, prec, DIR_BWD_FILTER, d, &p));
    LP_TRY(workspace(p, &ws));
    if (p->asym) LP_TRY(pad_input(c, d, x, LP_SLOT_X, (float **)&x));
    if (dw)
        LP_DNN(cudnnConvolutionBackwardFilter(c->dnn, &one, p->x, x, p->y, dy, p->conv,
                                              (cudnnConvolutionBwdFilterAlgo_t)p->algo, ws, p->ws, &one, p->w, dw));
    if (db) { /* db[k] += sum over n, oh, ow of dy */
        const int64_t ohw = (int64_t)d->oh * d->ow;
        lp_bcast bc = {3, {d->n, d->k, ohw}, {(int64_t)d->k * ohw, ohw, 1}, {0, 1, 0}};
        LP_KERNEL(lp_k_reduce_sum((lp_stream)c->stream, &bc, dy, db, 1.f, 1));
    }
    return LP_OK;
}
