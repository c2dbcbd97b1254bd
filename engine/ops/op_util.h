/* op_util.h — helpers the op files share: error messages that name the node,
 * axis normalisation, reading constant inputs, and the registry's op tables.
 * Private to engine/ops/. */
#ifndef LOUPE_OP_UTIL_H
#define LOUPE_OP_UTIL_H

#include "internal.h"

/* lp_fail with the node's context ("model.onnx: node 'x' (Conv): ..."). */
lp_status _lp_op_fail(const lp_model *m, const lp_node *n, lp_status s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Fresh zeroed params struct of `size` bytes for n (replacing any old one); NULL on OOM. */
void *_lp_op_params(lp_node *n, size_t size);

/* axis in [-ndim, ndim) -> [0, ndim); -1 when out of range. */
int _lp_axis(int64_t axis, int ndim);

/* The host constant behind input i (initializer or folded), or NULL. */
const lp_tensor *_lp_const_in(const lp_model *m, const lp_node *n, int i);

/* A constant int64 (or float, converted) tensor's values: up to max into dst.
 * Returns the count, or -1 when t is not a host constant of a usable dtype. */
int _lp_tensor_ints(const lp_tensor *t, int64_t *dst, int max);

/* float -> int64, saturating (NaN -> 0). */

/* One float from a tensor on any device (Clip bounds, Pad value, Pow exponent). */
lp_status _lp_tensor_scalar(const lp_backend *be, const lp_tensor *t, float *v);
/* Input k of node n, read from the model's host copy when it is a constant (the
 * run's device copy mirrors it): no device round trip, so the pass can run as a CUDA
 * graph (whose key includes the weights' generation for this reason). Else in[k]
 * (NULL when in is NULL). */
const lp_tensor *_lp_input_host(const lp_ctx *c, const lp_node *n, lp_tensor *const *in, int k);
/* Input k of node n as a scalar, through _lp_input_host. */
lp_status _lp_input_scalar(const lp_ctx *c, const lp_node *n, lp_tensor *const *in, int k, float *v);

/* Product of shape[a..b). */
int64_t _lp_prod(const int64_t *shape, int a, int b);

/* dst += src (n floats) on the backend. */
lp_status _lp_acc(const lp_backend *be, int64_t n, const float *src, float *dst);

/* Plain copy of a tensor's bytes (float on the device, int64 on the host). */
lp_status _lp_copy_tensor(const lp_backend *be, const lp_tensor *src, lp_tensor *dst);

/* Is output k of n consumed by another node or a graph output? */
int _lp_output_used(const lp_model *m, const lp_node *n, int k);

/* auto_pad handling for Conv and pools: "NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER". */
enum { LP_PAD_NOTSET = 0, LP_PAD_VALID, LP_PAD_SAME_UPPER, LP_PAD_SAME_LOWER };
int _lp_auto_pad(const char *s); /* -1 if unknown */
/* Pads (begin, end) for one spatial dim under auto_pad (for NOTSET, the given ones). */
void _lp_same_pads(int mode, int64_t in, int64_t k, int64_t s, int64_t d, int64_t *p0, int64_t *p1);

/* Spatial attributes of Conv, ConvTranspose and the pools, as written in the node
 * (1-D or 2-D; counts say how many entries each list had, 0 = absent). */
typedef struct _lp_spatial {
    int nk, ns, nd, np;
    int64_t kernel[2], strides[2], dil[2], pads[4];
    int auto_pad;
} _lp_spatial;
lp_status _lp_spatial_parse(const lp_model *m, const lp_node *n, _lp_spatial *sp);
/* Per-dim (H, W) kernel, stride, dilation and pads for an input with nsp (1 or 2)
 * spatial sizes in_sp; 1-D uses H = 1. kernel_w (may be NULL) is the kernel from the
 * weight's shape. LP_ERR_SHAPE when the attribute lists do not fit the rank. */
lp_status _lp_spatial_resolve(const _lp_spatial *sp, int nsp, const int64_t *in_sp, const int64_t *kernel_w,
                              int64_t k[2], int64_t s[2], int64_t d[2], int64_t p0[2], int64_t p1[2]);

/* The op tables, one per op (defined in the op_*.c files, listed in registry.c). */
extern const lp_op _lp_op_Conv, _lp_op_ConvTranspose;
lp_status _lp_bn_derive(lp_ctx *c, const lp_node *n, lp_tensor **aux); /* op_norm.c */
extern const lp_op _lp_op_MaxPool, _lp_op_AveragePool, _lp_op_GlobalAveragePool, _lp_op_GlobalMaxPool;
extern const lp_op _lp_op_Relu, _lp_op_LeakyRelu, _lp_op_Clip, _lp_op_Sigmoid, _lp_op_HardSigmoid,
    _lp_op_HardSwish, _lp_op_Gelu, _lp_op_Erf, _lp_op_Tanh, _lp_op_Exp, _lp_op_Log, _lp_op_Neg, _lp_op_Abs, _lp_op_Sqrt;
extern const lp_op _lp_op_Add, _lp_op_Sub, _lp_op_Mul, _lp_op_Div, _lp_op_Pow;
extern const lp_op _lp_op_Reshape, _lp_op_Flatten, _lp_op_Transpose, _lp_op_Squeeze, _lp_op_Unsqueeze,
    _lp_op_Concat, _lp_op_Split, _lp_op_Slice, _lp_op_Pad, _lp_op_Shape, _lp_op_Gather, _lp_op_Cast,
    _lp_op_Identity, _lp_op_Dropout, _lp_op_Constant;
extern const lp_op _lp_op_Gemm, _lp_op_MatMul;
extern const lp_op _lp_op_BatchNormalization, _lp_op_LRN, _lp_op_LayerNormalization;
extern const lp_op _lp_op_Softmax, _lp_op_LogSoftmax;
extern const lp_op _lp_op_Equal, _lp_op_Where, _lp_op_Mod, _lp_op_Range, _lp_op_ScatterND, _lp_op_Not;
extern const lp_op _lp_op_ReduceMean, _lp_op_ReduceSum, _lp_op_Expand, _lp_op_ConstantOfShape;

#endif
