/* registry.c — the table of supported ONNX ops. Rule tables (guided backprop, LRP)
 * index ops by their position here, so entries are only ever appended. */
#include "op_util.h"

#include <string.h>

static const lp_op *const g_ops[] = {
    &_lp_op_Conv, &_lp_op_ConvTranspose, &_lp_op_BatchNormalization, &_lp_op_Relu, &_lp_op_LeakyRelu,
    &_lp_op_Clip, &_lp_op_Sigmoid, &_lp_op_HardSigmoid, &_lp_op_HardSwish, &_lp_op_Gelu, &_lp_op_Erf, &_lp_op_Tanh,
    &_lp_op_Exp, &_lp_op_Log, &_lp_op_Neg, &_lp_op_Abs, &_lp_op_Sqrt, &_lp_op_Add, &_lp_op_Sub, &_lp_op_Mul,
    &_lp_op_Div, &_lp_op_Pow, &_lp_op_MaxPool, &_lp_op_AveragePool, &_lp_op_GlobalAveragePool,
    &_lp_op_GlobalMaxPool, &_lp_op_ReduceMean, &_lp_op_ReduceSum, &_lp_op_LRN, &_lp_op_Gemm, &_lp_op_MatMul,
    &_lp_op_Softmax, &_lp_op_LogSoftmax, &_lp_op_Concat, &_lp_op_Split, &_lp_op_Flatten, &_lp_op_Reshape,
    &_lp_op_Transpose, &_lp_op_Squeeze, &_lp_op_Unsqueeze, &_lp_op_Pad, &_lp_op_Dropout, &_lp_op_Identity,
    &_lp_op_Constant, &_lp_op_Shape, &_lp_op_Gather, &_lp_op_Slice, &_lp_op_Cast,
    &_lp_op_Expand, &_lp_op_ConstantOfShape, &_lp_op_LayerNormalization, &_lp_op_Equal, &_lp_op_Where,
    &_lp_op_Mod, &_lp_op_Range, &_lp_op_ScatterND, &_lp_op_Not,
};

#define N_OPS ((int)(sizeof g_ops / sizeof g_ops[0]))

const lp_op *lp_op_find(const char *type) {
    if (!type) return NULL;
    for (int i = 0; i < N_OPS; i++)
        if (!strcmp(g_ops[i]->type, type)) return g_ops[i];
    return NULL;
}

int lp_op_index(const lp_op *op) {
    for (int i = 0; i < N_OPS; i++)
        if (g_ops[i] == op) return i;
    return -1;
}

int lp_op_count(void) { return N_OPS; }

const char *lp_op_list(void) {
    /* Built once from the table; the table is constant so there is no race beyond
     * two threads writing the same bytes. */
    static char buf[1024];
    if (buf[0]) return buf;
    char tmp[sizeof buf];
    size_t o = 0;
    for (int i = 0; i < N_OPS && o < sizeof tmp; i++)
        o += (size_t)snprintf(tmp + o, sizeof tmp - o, i ? ", %s" : "%s", g_ops[i]->type);
    memcpy(buf, tmp, sizeof buf);
    return buf;
}

lp_derive_fn lp_op_derive(const lp_op *op) { return op == &_lp_op_BatchNormalization ? _lp_bn_derive : NULL; }
