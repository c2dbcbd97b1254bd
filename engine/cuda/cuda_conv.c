/* cuda_conv.c — convolutions through cuDNN: forward, backward-data and
 * backward-filter in fp32 (FMA math: TF32 off, exact reference), tf32 (tensor cores
 * on fp32 data) and bf16 (tensor cores on bfloat16 copies in NHWC, fp32 accumulation,
 * converted back to NCHW fp32 in the same pass that adds the bias or accumulates;
 * packed activations and gradients, already bf16 NHWC, go to cuDNN as they are).
 * Backward-data writes dx instead of adding to it when asked (lp_conv_desc.overwrite:
 * a gradient's first contribution). Each (shape, precision, direction) gets a plan once: descriptors plus the fastest
 * algorithm cuDNN measures (cudnnFind*, as PyTorch's benchmark mode), cached, with
 * its workspace taken from a grow-only scratch slot. cuDNN pads symmetrically; an
 * asymmetric pad (TensorFlow's SAME) is made explicit with our pad kernel first.
 * Weight gradients in bf16 mode run in tf32: a bf16 weight gradient would lose what
 * training and second-order methods need, and input-gradient passes never ask for it.
 * Forwards with a bias and no activation, a ReLU or a capped ReLU (fp32 and tf32, and
 * bf16 into a packed output) may run as cuDNN's fused convolution + bias + activation
 * (see fuse_decide). */
#include "cuda/cuda_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { DIR_FWD = 0, DIR_BWD_DATA = 1, DIR_BWD_FILTER = 2 };

enum { FUSE_NONE, FUSE_RELU, FUSE_CAPPED, FUSE_KINDS }; /* the fused call's activations */

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
    int unsupported; /* bf16 only: cuDNN has no kernel for it (remembered, so the tf32
                      * fallback costs no new measurement, nor a graph capture) */
    /* forward (fp32, tf32, bf16 into packed outputs): cuDNN's fused call or ours, per
     * activation kind (FUSE_*), with the times measured for one call of each (ms; 0
     * where not timed) */
    signed char fuse[FUSE_KINDS];
    signed char fuse_zero[FUSE_KINDS]; /* decisions put off: ours gave a sample of zeros */
    float fuse_ms[FUSE_KINDS][2];
    float fuse_cap; /* the cap the capped kind was first tried with (0: not yet) */
    cudnnTensorDescriptor_t bias; /* 1 x K x 1 x 1, made with the first decision */
} conv_plan;

enum { FUSE_UNDECIDED = 0, FUSE_YES, FUSE_SLOWER, FUSE_REFUSED, FUSE_MISMATCH, FUSE_OFF, FUSE_UNTRIED };

#define PLAN_CAP 1024
static conv_plan *plans[PLAN_CAP];
static int n_plans;

static void plan_free(conv_plan *p) {
    if (!p) return;
    if (p->x) cudnnDestroyTensorDescriptor(p->x);
    if (p->y) cudnnDestroyTensorDescriptor(p->y);
    if (p->w) cudnnDestroyFilterDescriptor(p->w);
    if (p->conv) cudnnDestroyConvolutionDescriptor(p->conv);
    if (p->bias) cudnnDestroyTensorDescriptor(p->bias);
    free(p);
}

/* fp32 must not use tensor cores (TF32 would round the inputs to 10 mantissa bits):
 * only FMA math, which is also what the descriptor is set to before measuring. */
static int math_ok(lp_precision prec, cudnnMathType_t m) {
    return prec != LP_PREC_FP32 || m == CUDNN_FMA_MATH || m == CUDNN_DEFAULT_MATH;
}

/* fp32 is the reference: no FFT or non-fused Winograd transforms, whose rounding can
 * reach 1e-5 relative on some shapes. */
static int exact_ok(lp_precision prec, int dir, int algo) {
    if (prec != LP_PREC_FP32) return 1;
    if (dir == DIR_FWD)
        return algo != CUDNN_CONVOLUTION_FWD_ALGO_FFT && algo != CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING &&
               algo != CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED;
    if (dir == DIR_BWD_DATA)
        return algo != CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT && algo != CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING &&
               algo != CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED;
    return algo != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT && algo != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING &&
           algo != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED;
}

/* Workspace a plan may ask for: a quarter of the free memory, at most 2 GiB (the slot
 * is kept), at least 256 MiB where that much is free. */
static size_t ws_limit(void) {
    size_t fr = 0, tot = 0;
    const size_t floor_b = (size_t)256 << 20, cap_b = (size_t)2 << 30;
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) {
        cudaGetLastError();
        return floor_b;
    }
    size_t l = fr / 4 < cap_b ? fr / 4 : cap_b;
    if (l < floor_b) l = fr / 2 < floor_b ? fr / 2 : floor_b;
    return l;
}

#define PERF_PICK(perf, ret, p, limit)                                                                                 \
    for (int i_ = 0; i_ < (ret); i_++)                                                                                 \
        if ((perf)[i_].status == CUDNN_STATUS_SUCCESS && math_ok((p)->prec, (perf)[i_].mathType) &&                   \
            exact_ok((p)->prec, (p)->dir, (int)(perf)[i_].algo) && (perf)[i_].memory <= (limit)) {                     \
            (p)->algo = (int)(perf)[i_].algo;                                                                          \
            (p)->ws = (perf)[i_].memory;                                                                               \
            math = (perf)[i_].mathType;                                                                                \
            found = 1;                                                                                                 \
            break;                                                                                                     \
        }

/* cuDNN's measured choice (Find, which allocates its own buffers: on failure the
 * allocator's cache is returned and Find tried once more); else its heuristics.
 * `limit` bounds the workspace. */
static lp_status plan_algo(lp_cuda *c, conv_plan *p, size_t limit) {
    cudnnMathType_t math = p->prec == LP_PREC_FP32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH;
    LP_DNN(cudnnSetConvolutionMathType(p->conv, math));
    int found = 0, ret = 0;
    for (int attempt = 0; attempt < 2 && !found; attempt++) {
        if (attempt) _lp_cuda_release_cache();
        cudnnStatus_t st;
        if (p->dir == DIR_FWD) {
            cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
            st = cudnnFindConvolutionForwardAlgorithm(c->dnn, p->x, p->w, p->conv, p->y,
                                                      CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &ret, perf);
            if (st == CUDNN_STATUS_SUCCESS) PERF_PICK(perf, ret, p, limit)
        } else if (p->dir == DIR_BWD_DATA) {
            cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
            st = cudnnFindConvolutionBackwardDataAlgorithm(c->dnn, p->w, p->y, p->conv, p->x,
                                                           CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &ret, perf);
            if (st == CUDNN_STATUS_SUCCESS) PERF_PICK(perf, ret, p, limit)
        } else {
            cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
            st = cudnnFindConvolutionBackwardFilterAlgorithm(c->dnn, p->x, p->y, p->conv, p->w,
                                                             CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &ret, perf);
            if (st == CUDNN_STATUS_SUCCESS) PERF_PICK(perf, ret, p, limit)
        }
        cudaGetLastError(); /* a failed Find may leave an allocation error behind */
        if (st == CUDNN_STATUS_SUCCESS) break; /* measured: nothing fits the limit, ask the heuristics */
    }
    if (!found) {
        if (p->dir == DIR_FWD) {
            cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
            LP_DNN(cudnnGetConvolutionForwardAlgorithm_v7(c->dnn, p->x, p->w, p->conv, p->y,
                                                          CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &ret, perf));
            PERF_PICK(perf, ret, p, limit)
        } else if (p->dir == DIR_BWD_DATA) {
            cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
            LP_DNN(cudnnGetConvolutionBackwardDataAlgorithm_v7(c->dnn, p->w, p->y, p->conv, p->x,
                                                               CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &ret, perf));
            PERF_PICK(perf, ret, p, limit)
        } else {
            cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
            LP_DNN(cudnnGetConvolutionBackwardFilterAlgorithm_v7(c->dnn, p->x, p->y, p->conv, p->w,
                                                                 CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &ret, perf));
            PERF_PICK(perf, ret, p, limit)
        }
    }
    if (!found)
        return lp_fail(LP_ERR_UNSUPPORTED, "cuDNN has no %s algorithm for this convolution in %s",
                       p->dir == DIR_FWD ? "forward" : p->dir == DIR_BWD_DATA ? "backward-data" : "backward-filter",
                       lp_precision_name(p->prec));
    if (p->prec == LP_PREC_FP32) math = CUDNN_FMA_MATH; /* as PyTorch: never let fp32 drift to TF32 */
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
    return plan_algo(c, p, ws_limit());
}

static lp_status plan_get(lp_cuda *c, lp_precision prec, int dir, const lp_conv_desc *d, conv_plan **out) {
    for (int i = 0; i < n_plans; i++)
        if (plans[i]->prec == prec && plans[i]->dir == dir && !memcmp(&plans[i]->d, d, sizeof *d)) {
            if (plans[i]->unsupported)
                return lp_fail(LP_ERR_UNSUPPORTED, "cuDNN has no bf16 algorithm for this convolution");
            *out = plans[i];
            return LP_OK;
        }
    if (_lp_cuda_capturing()) return _lp_cuda_capture_refuse("a convolution plan being measured");
    if (d->groups <= 0 || d->c % d->groups || d->k % d->groups)
        return lp_fail(LP_ERR_SHAPE, "cuda conv: %d input and %d output channels do not split into %d groups", d->c,
                       d->k, d->groups);
    if (d->sh <= 0 || d->sw <= 0 || d->dh <= 0 || d->dw <= 0 || d->kh <= 0 || d->kw <= 0)
        return lp_fail(LP_ERR_ARG, "cuda conv: kernel %dx%d, strides %dx%d and dilations %dx%d must be positive", d->kh,
                       d->kw, d->sh, d->sw, d->dh, d->dw);
    conv_plan *p = calloc(1, sizeof *p);
    if (!p) return lp_fail(LP_ERR_OOM, "out of host memory for a convolution plan");
    lp_status s = plan_make(c, prec, dir, d, p);
    if (s) {
        plan_free(p);
        if (s != LP_ERR_UNSUPPORTED || prec != LP_PREC_BF16 || !(p = calloc(1, sizeof *p))) return s;
        p->d = *d, p->prec = prec, p->dir = dir, p->unsupported = 1;
    }
    if (n_plans == PLAN_CAP) { /* a model with this many shapes: forget the oldest */
        plan_free(plans[0]);
        memmove(plans, plans + 1, sizeof plans[0] * (PLAN_CAP - 1));
        n_plans--;
    }
    plans[n_plans++] = p;
    *out = p;
    return p->unsupported ? s : LP_OK;
}

/* The plan's workspace; when it cannot be had, the plan falls back to an algorithm
 * that needs none. */
static lp_status workspace(lp_cuda *c, conv_plan *p, void **ws) {
    *ws = NULL;
    if (!p->ws) return LP_OK;
    lp_status s = _lp_cuda_scratch(LP_SLOT_WORKSPACE, p->ws, ws);
    if (s != LP_ERR_OOM) return s;
    LP_TRY(plan_algo(c, p, 0));
    lp_clear_error();
    /* decided for the old algorithm */
    memset(p->fuse, FUSE_UNDECIDED, sizeof p->fuse);
    memset(p->fuse_zero, 0, sizeof p->fuse_zero);
    memset(p->fuse_ms, 0, sizeof p->fuse_ms);
    p->fuse_cap = 0.f;
    return LP_OK;
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

/* The plan for (prec, dir, d); a bf16 shape cuDNN has no NHWC kernel for (some cuDNN
 * builds: 3 input channels, grouped layers) runs in tf32 instead of failing the pass.
 * Non-zero (status set) on failure. */
static int bf16_fallback(lp_cuda *c, lp_precision *prec, int dir, const lp_conv_desc *d, conv_plan **p) {
    lp_status s = plan_get(c, *prec, dir, d, p);
    if (s == LP_ERR_UNSUPPORTED && *prec == LP_PREC_BF16) {
        lp_clear_error();
        *prec = LP_PREC_TF32;
        s = plan_get(c, *prec, dir, d, p);
    }
    return s != LP_OK;
}

static const float one = 1.f, zero = 0.f;

/* ---- cuDNN's fused convolution + bias + activation ------------------------------
 * cudnnConvolutionBiasActivationForward computes y = act(conv(x) + bias) in one call
 * where ours is cuDNN's convolution, then our bias + activation kernel over y. cuDNN
 * offers it for no activation (only with the implicit precomputed GEMM algorithm), for
 * ReLU and for a capped ReLU (ReLU6: CUDNN_ACTIVATION_CLIPPED_RELU; whether a given
 * cuDNN runs that one fused is for the call to tell, as for every kind). Whether it is
 * used is decided per plan and activation on the first call outside a graph capture
 * (a capped ReLU for the cap it was first called with; other caps stay ours): the fused
 * call must run, must match ours on a sample of y (its head and tail, written over
 * NaN, so a fused call that reads z although alpha2 is 0 shows), and must be the
 * faster of the two (cudaEvents, best of three calls each, each queued behind work so
 * that neither is timed with its launch on an idle GPU). A sample of zeros proves
 * nothing (a ReLU turns the NaN to 0): the shape stays undecided for a later call, three
 * times at most. Any failure while deciding that leaves the device usable only means
 * ours. Deciding stops once 5 s in all are spent per process (LOUPE_CUDNN_FUSE_BUDGET_S;
 * 0 still decides the first): a cuDNN that compiled a kernel at each first call would
 * otherwise slow every new shape's first pass without end. LOUPE_CUDNN_FUSE=0 never
 * fuses (Loupe's own path only, so outputs repeat exactly from process to process);
 * =1 fuses wherever the call runs and matches, untimed (tests). */

static cudnnActivationDescriptor_t act_desc[FUSE_KINDS]; /* none, ReLU, capped ReLU */
static double act_cap;                                   /* act_desc[FUSE_CAPPED]'s cap */
static double fuse_spent_s;                              /* on deciding, so far */

/* One forward call's operands as cuDNN takes them: x and w in the plan's data type
 * (fp32, or bf16 copies and packed values), y too (fp32 NCHW, or packed bf16 NHWC); the
 * bias in fp32 for ours and in the plan's data type for the fused call (fb). */
typedef struct fwd_call {
    const lp_conv_desc *d;
    const void *x, *w;
    const float *b;
    const void *fb;
    void *y, *ws;
} fwd_call;

/* The activation kind (FUSE_NONE, _RELU, _CAPPED) when the call may run fused, else
 * -1. bf16 calls come here only with a packed output (an fp32 output is converted from
 * cuDNN's bf16 in the pass that adds the bias: nothing to save). */
static int fuse_kind(const conv_plan *p, const lp_conv_desc *d, const float *b) {
    if (d->accumulate || !b) return -1;
    if (d->act == INFINITY) return FUSE_RELU;
    if (d->act > 0.f) return p->fuse_cap == 0.f || p->fuse_cap == d->act ? FUSE_CAPPED : -1;
    return p->algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ? FUSE_NONE : -1;
}

static lp_status fwd_ours(lp_cuda *c, const conv_plan *p, const fwd_call *f) {
    const lp_conv_desc *d = f->d;
    const int64_t ohw = (int64_t)d->oh * d->ow;
    LP_DNN(cudnnConvolutionForward(c->dnn, &one, p->x, f->x, p->w, f->w, p->conv, (cudnnConvolutionFwdAlgo_t)p->algo,
                                   f->ws, p->ws, d->accumulate ? &one : &zero, p->y, f->y));
    if (p->prec == LP_PREC_BF16)
        LP_KERNEL(lp_k_bias_act_nhwc_bf16((lp_stream)c->stream, (int64_t)d->n * d->k * ohw, d->k, f->b, d->act, f->y));
    else LP_KERNEL(lp_k_bias_act((lp_stream)c->stream, d->n, d->k, ohw, f->b, d->act, f->y));
    return LP_OK;
}

static cudnnStatus_t fwd_fused(lp_cuda *c, const conv_plan *p, int kind, const fwd_call *f) {
    if (kind == FUSE_CAPPED && act_cap != f->d->act) { /* the descriptor holds the last call's cap */
        const cudnnStatus_t s = cudnnSetActivationDescriptor(act_desc[kind], CUDNN_ACTIVATION_CLIPPED_RELU,
                                                             CUDNN_NOT_PROPAGATE_NAN, f->d->act);
        if (s != CUDNN_STATUS_SUCCESS) return s;
        act_cap = f->d->act;
    }
    return cudnnConvolutionBiasActivationForward(c->dnn, &one, p->x, f->x, p->w, f->w, p->conv,
                                                 (cudnnConvolutionFwdAlgo_t)p->algo, f->ws, p->ws, &zero, p->y, f->y,
                                                 p->bias, f->fb, act_desc[kind], p->y, f->y);
}

/* n of y's ny values, its first and last n/2 (the leading channels of the first and
 * last images, or the first and last pixels' channels in NHWC), widened to floats on
 * the host. */
#define FUSE_SAMPLE ((size_t)1 << 20)
static lp_status sample_y(lp_cuda *c, const conv_plan *p, const void *y, size_t ny, size_t n, float *host) {
    const int bf16 = p->prec == LP_PREC_BF16;
    const size_t es = bf16 ? 2 : 4, head = n / 2;
    LP_CUDA(cudaMemcpyAsync(host, y, es * head, cudaMemcpyDeviceToHost, c->stream));
    LP_CUDA(cudaMemcpyAsync((char *)host + es * head, (const char *)y + es * (ny - (n - head)), es * (n - head),
                            cudaMemcpyDeviceToHost, c->stream));
    LP_CUDA(cudaStreamSynchronize(c->stream));
    for (size_t i = n; bf16 && i-- > 0;) { /* from the end: each float lies at or past its bf16 */
        const uint32_t u = (uint32_t)((const uint16_t *)host)[i] << 16;
        memcpy(&host[i], &u, sizeof u);
    }
    return LP_OK;
}

/* Relative L2 distance of a from the reference r (NaN anywhere: infinite; both all
 * zeros: NaN, undecidable). */
static double rel_l2(const float *a, const float *r, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = (double)a[i] - r[i];
        num += e * e, den += (double)r[i] * r[i];
    }
    if (num != num || den != den) return INFINITY;
    return den > 0 ? sqrt(num / den) : num > 0 ? INFINITY : NAN;
}

/* Milliseconds of one call each, best of three. Each timed pair is queued behind an
 * untimed call of ours, so the first timed call's launch overlaps work on the GPU as
 * the second's does (and as in a busy pass or a graph); ours runs last, so y ends as
 * ours wrote it. */
static lp_status fuse_time(lp_cuda *c, const conv_plan *p, int kind, const fwd_call *f, float ms[2]) {
    static cudaEvent_t ev[3]; /* made once, kept */
    for (int i = 0; i < 3; i++)
        if (!ev[i]) LP_CUDA(cudaEventCreate(&ev[i]));
    ms[0] = ms[1] = INFINITY;
    for (int r = 0; r < 3; r++) {
        float t[2];
        LP_TRY(fwd_ours(c, p, f));
        LP_CUDA(cudaEventRecord(ev[0], c->stream));
        LP_DNN(fwd_fused(c, p, kind, f));
        LP_CUDA(cudaEventRecord(ev[1], c->stream));
        LP_TRY(fwd_ours(c, p, f));
        LP_CUDA(cudaEventRecord(ev[2], c->stream));
        LP_CUDA(cudaEventSynchronize(ev[2]));
        LP_CUDA(cudaEventElapsedTime(&t[0], ev[0], ev[1]));
        LP_CUDA(cudaEventElapsedTime(&t[1], ev[1], ev[2]));
        for (int k = 0; k < 2; k++) ms[k] = t[k] < ms[k] ? t[k] : ms[k];
    }
    return LP_OK;
}

static int fuse_setting(void) { /* 0 never, 1 whenever it matches, 2 (default) when also faster */
    const char *e = getenv("LOUPE_CUDNN_FUSE");
    return e && !strcmp(e, "0") ? 0 : e && !strcmp(e, "1") ? 1 : 2;
}
static double fuse_budget_s(void) {
    const char *e = getenv("LOUPE_CUDNN_FUSE_BUDGET_S");
    char *end;
    const double v = e && *e ? strtod(e, &end) : -1;
    return v >= 0 && !*end ? v : 5.0;
}

/* fuse_decide's work, with two host buffers of ns floats: sets p->fuse[kind] and
 * leaves y computed, or fails (y undefined). */
static lp_status fuse_try(lp_cuda *c, conv_plan *p, int kind, int setting, const fwd_call *f, size_t ns, float *ref,
                          float *got) {
    const lp_conv_desc *d = f->d;
    const size_t es = p->prec == LP_PREC_BF16 ? 2 : 4, ny = (size_t)d->n * d->k * d->oh * d->ow;
    LP_TRY(fwd_ours(c, p, f));
    LP_TRY(sample_y(c, p, f->y, ny, ns, ref));
    LP_CUDA(cudaMemsetAsync(f->y, 0xff, es * ny, c->stream));
    if (fwd_fused(c, p, kind, f) != CUDNN_STATUS_SUCCESS) {
        cudaGetLastError();
        p->fuse[kind] = FUSE_REFUSED;
        return fwd_ours(c, p, f);
    }
    LP_TRY(sample_y(c, p, f->y, ny, ns, got));
    /* the two differ in summation order (tf32: in their tensor-core kernels); in bf16
     * also in rounding (ours rounds cuDNN's sum, then the sum with the bias; the fused
     * call rounds once, with the bias in bf16) */
    const double tol = p->prec == LP_PREC_FP32 ? 1e-4 : p->prec == LP_PREC_TF32 ? 5e-3 : 1e-2;
    const double e = rel_l2(got, ref, ns);
    if (e != e) { /* ours all zeros: nothing to compare; a later call may tell */
        p->fuse[kind] = ++p->fuse_zero[kind] < 3 ? FUSE_UNDECIDED : FUSE_OFF;
        return fwd_ours(c, p, f);
    }
    if (!(e <= tol)) {
        p->fuse[kind] = FUSE_MISMATCH;
        return fwd_ours(c, p, f);
    }
    if (setting == 1) {
        p->fuse[kind] = FUSE_YES; /* y: the fused result */
        return LP_OK;
    }
    LP_TRY(fuse_time(c, p, kind, f, p->fuse_ms[kind]));
    p->fuse[kind] = p->fuse_ms[kind][0] < p->fuse_ms[kind][1] ? FUSE_YES : FUSE_SLOWER;
    return LP_OK;
}

/* The bias and activation descriptors the fused call takes (the bias in y's type). */
static lp_status fuse_descs(conv_plan *p, int kind) {
    if (!p->bias) {
        const int bf16 = p->prec == LP_PREC_BF16;
        LP_DNN(cudnnCreateTensorDescriptor(&p->bias));
        if (cudnnSetTensor4dDescriptor(p->bias, bf16 ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW,
                                       bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT, 1, p->d.k, 1, 1)) {
            cudnnDestroyTensorDescriptor(p->bias);
            p->bias = NULL;
            return lp_fail(LP_ERR_UNSUPPORTED, "cuDNN takes no bias descriptor for this convolution");
        }
    }
    if (!act_desc[kind]) {
        static const cudnnActivationMode_t mode[FUSE_KINDS] = {CUDNN_ACTIVATION_IDENTITY, CUDNN_ACTIVATION_RELU,
                                                               CUDNN_ACTIVATION_CLIPPED_RELU};
        const double coef = kind == FUSE_CAPPED ? p->fuse_cap : 0.0;
        cudnnActivationDescriptor_t a;
        LP_DNN(cudnnCreateActivationDescriptor(&a));
        if (cudnnSetActivationDescriptor(a, mode[kind], CUDNN_NOT_PROPAGATE_NAN, coef)) {
            cudnnDestroyActivationDescriptor(a);
            return lp_fail(LP_ERR_UNSUPPORTED, "cuDNN takes no activation descriptor for a fused convolution");
        }
        act_desc[kind] = a;
        if (kind == FUSE_CAPPED) act_cap = coef;
    }
    return LP_OK;
}

/* Decides p->fuse[kind] on this call, which it computes. */
static lp_status fuse_decide(lp_cuda *c, conv_plan *p, int kind, const fwd_call *f) {
    const lp_conv_desc *d = f->d;
    const int setting = fuse_setting();
    if (!setting) {
        p->fuse[kind] = FUSE_OFF;
        return fwd_ours(c, p, f);
    }
    if (fuse_spent_s > fuse_budget_s()) {
        p->fuse[kind] = FUSE_UNTRIED;
        return fwd_ours(c, p, f);
    }
    if (kind == FUSE_CAPPED) p->fuse_cap = d->act; /* decided for this cap */
    /* the time spent is deciding's alone: earlier work queued on the stream first */
    LP_CUDA(cudaStreamSynchronize(c->stream));
    const double t0 = lp_now_s();
    const size_t ny = (size_t)d->n * d->k * d->oh * d->ow, ns = ny < FUSE_SAMPLE ? ny : FUSE_SAMPLE;
    float *ref = malloc(2 * sizeof(float) * ns);
    lp_status s = !ref ? lp_fail(LP_ERR_OOM, "out of host memory for a fused convolution's check") : fuse_descs(p, kind);
    if (s == LP_OK) s = fuse_try(c, p, kind, setting, f, ns, ref, ref + ns);
    free(ref);
    fuse_spent_s += lp_now_s() - t0;
    if (s == LP_OK) return LP_OK;
    /* Deciding failed (a cuDNN or CUDA call, host memory): ours from here on, unless the
     * device itself is lost (a sticky error), which the pass must report. */
    cudaGetLastError();
    if (cudaStreamSynchronize(c->stream) != cudaSuccess) return s;
    lp_clear_error();
    p->fuse[kind] = FUSE_OFF;
    return fwd_ours(c, p, f);
}

/* Will this call try or use the fused path (so a bf16 call needs its bias in bf16)? */
static int fuse_wanted(const conv_plan *p, const fwd_call *f) {
    const int kind = fuse_kind(p, f->d, f->b);
    return kind >= 0 && (p->fuse[kind] == FUSE_YES || (p->fuse[kind] == FUSE_UNDECIDED && !_lp_cuda_capturing()));
}

/* y = act(conv(x) + b), fused or ours as decided for the plan and activation (deciding
 * now, on the first call outside a graph capture). */
static lp_status fwd_run(lp_cuda *c, conv_plan *p, const fwd_call *f) {
    const int kind = fuse_kind(p, f->d, f->b);
    if (kind >= 0 && p->fuse[kind] == FUSE_UNDECIDED && !_lp_cuda_capturing()) return fuse_decide(c, p, kind, f);
    if (kind >= 0 && p->fuse[kind] == FUSE_YES) {
        if (fwd_fused(c, p, kind, f) == CUDNN_STATUS_SUCCESS) return LP_OK;
        cudaGetLastError();
        /* refused now where it ran before: ours from here on. Also while capturing (cuDNN
         * may build a kernel anew, which a capture does not take): ours goes into the
         * graph, where keeping the fused call would cost every later pass its graph. */
        p->fuse[kind] = FUSE_REFUSED;
    }
    return fwd_ours(c, p, f);
}

lp_status lp_cuda_fusion_stats(lp_fusion_stats *out) {
    memset(out, 0, sizeof *out);
    out->s_deciding = fuse_spent_s;
    for (int i = 0; i < n_plans; i++)
        for (int k = 0; k < FUSE_KINDS; k++) {
            const conv_plan *p = plans[i];
            switch (p->fuse[k]) {
            case FUSE_YES: out->fused++; break;
            case FUSE_SLOWER: out->slower++; break;
            case FUSE_REFUSED: out->refused++; break;
            case FUSE_MISMATCH: out->mismatched++; break;
            case FUSE_OFF: out->off++; break;
            case FUSE_UNTRIED: out->untried++; break;
            default: continue;
            }
            if (p->fuse_ms[k][0] > 0.f && p->fuse_ms[k][1] > 0.f)
                out->ms_fused += p->fuse_ms[k][0], out->ms_ours += p->fuse_ms[k][1];
        }
    return LP_OK;
}

lp_status _lp_cuda_conv_fwd(lp_precision prec, const lp_conv_desc *d, const float *x, const float *w, const float *b,
                            float *y) {
    lp_cuda *c = _lp_cuda();
    if (!c) return LP_ERR_DEVICE;
    conv_plan *p;
    void *ws;
    lp_conv_desc key = *d;
    key.act = 0.f;
    key.accumulate = key.x_packed = key.y_packed = key.overwrite = 0; /* our epilogue's and layouts: one
                                                                                  * plan serves all */
    const lp_precision asked = prec;
    if (bf16_fallback(c, &prec, DIR_FWD, &key, &p)) return LP_ERR_UNSUPPORTED;
    const lp_stream s = (lp_stream)c->stream;
    const int64_t ohw = (int64_t)d->oh * d->ow;
    if (d->accumulate && d->y_packed) return lp_fail(LP_ERR_ARG, "cuda conv: a packed output cannot accumulate");
    if ((d->x_packed || d->y_packed) && (prec != LP_PREC_BF16 || p->asym)) {
        /* tf32 fallback or explicit padding: through fp32 NCHW copies of the packed ends */
        lp_conv_desc e = *d;
        void *xf = (void *)x, *yf = y;
        e.x_packed = e.y_packed = 0;
        if (d->x_packed) {
            LP_TRY(_lp_cuda_scratch(LP_SLOT_UNPACK_X, sizeof(float) * (size_t)d->n * d->c * d->h * d->w, &xf));
            LP_KERNEL(lp_k_nhwc_bf16_to_nchw(s, d->n, d->c, (int64_t)d->h * d->w, (const uint16_t *)x, NULL, xf, 0, 0));
        }
        if (d->y_packed) LP_TRY(_lp_cuda_scratch(LP_SLOT_UNPACK_Y, sizeof(float) * (size_t)d->n * d->k * ohw, &yf));
        LP_TRY(_lp_cuda_conv_fwd(asked, &e, xf, w, b, yf));
        if (d->y_packed) LP_KERNEL(lp_k_nchw_to_nhwc_bf16(s, d->n, d->k, ohw, yf, (uint16_t *)y));
        return LP_OK;
    }
    LP_TRY(workspace(c, p, &ws));
    if (p->asym) LP_TRY(pad_input(c, d, x, prec == LP_PREC_BF16 ? LP_SLOT_GRAD : LP_SLOT_X, (float **)&x));
    if (prec != LP_PREC_BF16) {
        const fwd_call f = {d, x, w, b, b, y, ws};
        return fwd_run(c, p, &f);
    }
    /* bf16: packed ends are cuDNN's NHWC bf16 tensors as they are; fp32 ends are
     * converted (the output in the same pass as bias and ReLU) */
    void *x16 = (void *)x, *w16, *y16 = y;
    const int64_t xhw = (int64_t)p->xh * p->xw;
    const size_t nw = (size_t)d->k * (d->c / d->groups) * d->kh * d->kw, b_at = (nw + 127) / 128 * 128;
    if (!d->x_packed) LP_TRY(_lp_cuda_scratch(LP_SLOT_X, sizeof(uint16_t) * (size_t)d->n * d->c * xhw, &x16));
    /* the weights, then (256-byte aligned) the bias where a fused call takes it in bf16 */
    LP_TRY(_lp_cuda_scratch(LP_SLOT_W, sizeof(uint16_t) * (b_at + (size_t)d->k), &w16));
    if (!d->y_packed) LP_TRY(_lp_cuda_scratch(LP_SLOT_Y, sizeof(uint16_t) * (size_t)d->n * d->k * ohw, &y16));
    if (!d->x_packed) LP_KERNEL(lp_k_nchw_to_nhwc_bf16(s, d->n, d->c, xhw, x, x16));
    LP_KERNEL(lp_k_nchw_to_nhwc_bf16(s, d->k, d->c / d->groups, (int64_t)d->kh * d->kw, w, w16));
    if (d->y_packed) { /* cuDNN's output is the packed value: the bias and activation over it, or fused */
        fwd_call f = {d, x16, w16, b, NULL, y16, ws};
        if (fuse_wanted(p, &f)) {
            uint16_t *b16 = (uint16_t *)w16 + b_at;
            LP_KERNEL(lp_k_f32_to_bf16(s, d->k, b, b16));
            f.fb = b16;
        }
        return fwd_run(c, p, &f);
    }
    LP_DNN(cudnnConvolutionForward(c->dnn, &one, p->x, x16, p->w, w16, p->conv, (cudnnConvolutionFwdAlgo_t)p->algo, ws,
                                   p->ws, &zero, p->y, y16));
    LP_KERNEL(lp_k_nhwc_bf16_to_nchw(s, d->n, d->k, ohw, y16, b, y, d->accumulate, d->act));
    return LP_OK;
}

lp_status _lp_cuda_conv_bwd_data(lp_precision prec, const lp_conv_desc *d, const float *dy, const float *w, float *dx) {
    lp_cuda *c = _lp_cuda();
    if (!c) return LP_ERR_DEVICE;
    conv_plan *p;
    void *ws;
    lp_conv_desc key = *d;
    key.x_packed = key.y_packed = key.overwrite = 0; /* layouts of our ends, and beta: one plan serves all */
    const lp_precision asked = prec;
    if (bf16_fallback(c, &prec, DIR_BWD_DATA, &key, &p)) return LP_ERR_UNSUPPORTED;
    const lp_stream s = (lp_stream)c->stream;
    const int64_t xhw = (int64_t)p->xh * p->xw, ohw = (int64_t)d->oh * d->ow;
    const size_t padded = (size_t)d->n * d->c * xhw;
    if ((d->x_packed || d->y_packed) && (prec != LP_PREC_BF16 || p->asym)) {
        /* tf32 fallback or explicit padding: through fp32 NCHW copies of the packed ends
         * (a packed dx unpacked, accumulated into in fp32 and packed again: one rounding;
         * or, overwritten, written in fp32 and packed) */
        lp_conv_desc e = *d;
        void *dyf = (void *)dy, *dxf = dx;
        const size_t nx = (size_t)d->n * d->c * d->h * d->w;
        e.x_packed = e.y_packed = 0;
        if (d->y_packed) {
            LP_TRY(_lp_cuda_scratch(LP_SLOT_UNPACK_Y, sizeof(float) * (size_t)d->n * d->k * ohw, &dyf));
            LP_KERNEL(lp_k_nhwc_bf16_to_nchw(s, d->n, d->k, ohw, (const uint16_t *)dy, NULL, dyf, 0, 0));
        }
        const int64_t hw = (int64_t)d->h * d->w;
        if (d->x_packed) {
            LP_TRY(_lp_cuda_scratch(LP_SLOT_UNPACK_X, sizeof(float) * nx, &dxf));
            if (!d->overwrite)
                LP_KERNEL(lp_k_nhwc_bf16_to_nchw(s, d->n, d->c, hw, (const uint16_t *)dx, NULL, dxf, 0, 0));
        }
        LP_TRY(_lp_cuda_conv_bwd_data(asked, &e, dyf, w, dxf));
        if (d->x_packed) LP_KERNEL(lp_k_nchw_to_nhwc_bf16(s, d->n, d->c, hw, dxf, (uint16_t *)dx));
        return LP_OK;
    }
    LP_TRY(workspace(c, p, &ws));
    const size_t nx = (size_t)d->n * d->c * d->h * d->w;
    /* overwrite: where the result is added to dx below, dx is cleared first */
    if (d->overwrite && p->asym && !d->x_packed) LP_CUDA(cudaMemsetAsync(dx, 0, sizeof(float) * nx, c->stream));
    if (prec != LP_PREC_BF16) {
        if (!p->asym) { /* beta = 1: cuDNN accumulates into dx itself */
            LP_DNN(cudnnConvolutionBackwardData(c->dnn, &one, p->w, w, p->y, dy, p->conv,
                                                (cudnnConvolutionBwdDataAlgo_t)p->algo, ws, p->ws,
                                                d->overwrite ? &zero : &one, p->x, dx));
            return LP_OK;
        }
        void *dxp;
        LP_TRY(_lp_cuda_scratch(LP_SLOT_X, sizeof(float) * padded, &dxp));
        LP_DNN(cudnnConvolutionBackwardData(c->dnn, &one, p->w, w, p->y, dy, p->conv,
                                            (cudnnConvolutionBwdDataAlgo_t)p->algo, ws, p->ws, &zero, p->x, dxp));
        return unpad_grad(c, d, dxp, dx);
    }
    /* bf16: a packed dy is cuDNN's as it is; dx comes in a scratch slot (cuDNN's beta
     * on bf16 output would round the sum anyway) and is added to dx, packed or not; a
     * packed dx to overwrite is cuDNN's output itself */
    void *dy16 = (void *)dy, *w16, *dx16;
    if (!d->y_packed) LP_TRY(_lp_cuda_scratch(LP_SLOT_Y, sizeof(uint16_t) * (size_t)d->n * d->k * ohw, &dy16));
    LP_TRY(_lp_cuda_scratch(LP_SLOT_W, sizeof(uint16_t) * (size_t)d->k * (d->c / d->groups) * d->kh * d->kw, &w16));
    if (d->x_packed && d->overwrite) dx16 = dx; /* not asym: those went through fp32 above */
    else LP_TRY(_lp_cuda_scratch(LP_SLOT_X, sizeof(uint16_t) * padded, &dx16));
    if (!d->y_packed) LP_KERNEL(lp_k_nchw_to_nhwc_bf16(s, d->n, d->k, ohw, dy, dy16));
    LP_KERNEL(lp_k_nchw_to_nhwc_bf16(s, d->k, d->c / d->groups, (int64_t)d->kh * d->kw, w, w16));
    LP_DNN(cudnnConvolutionBackwardData(c->dnn, &one, p->w, w16, p->y, dy16, p->conv,
                                        (cudnnConvolutionBwdDataAlgo_t)p->algo, ws, p->ws, &zero, p->x, dx16));
    if (d->x_packed) {
        if (!d->overwrite) LP_KERNEL(lp_k_add_bf16(s, (int64_t)padded, (const uint16_t *)dx, dx16, (uint16_t *)dx, 0));
        return LP_OK;
    }
    if (!p->asym) {
        LP_KERNEL(lp_k_nhwc_bf16_to_nchw(s, d->n, d->c, xhw, dx16, NULL, dx, !d->overwrite, 0));
        return LP_OK;
    }
    void *dxp;
    LP_TRY(_lp_cuda_scratch(LP_SLOT_GRAD, sizeof(float) * padded, &dxp));
    LP_KERNEL(lp_k_nhwc_bf16_to_nchw(s, d->n, d->c, xhw, dx16, NULL, dxp, 0, 0));
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
    LP_TRY(workspace(c, p, &ws));
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
