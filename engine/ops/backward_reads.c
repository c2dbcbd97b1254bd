/* backward_reads.c — which activations each op's plain backward reads. A run that
 * only takes input gradients keeps just these after its forward (lp_run_set_lean);
 * every other activation's memory is reused. Ops not listed read everything. A
 * backward always sees its inputs' and outputs' shapes; what it does not read here
 * it gets with no data (NULL), so a wrong entry fails loudly in the tests. */
#include "op_util.h"

#include <string.h>

static int is(const lp_node *n, const char *t) { return !strcmp(n->op->type, t); }

void lp_op_backward_reads(const lp_model *m, const lp_node *n, const char *din_req, char *in_read, int *out_read) {
    const int ni = n->n_in;
    for (int k = 0; k < ni; k++) in_read[k] = 1;
    *out_read = 1;
    /* ops whose backward reads no operand: the gradient only moves or sums */
    static const char *const none[] = {"Add", "Sub", "AveragePool", "GlobalAveragePool", "Concat", "Split",
                                       "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout",
                                       "Transpose", "Pad", "Slice", "ReduceMean", "ReduceSum", "Expand", "Cast",
                                       "Neg"};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++)
        if (is(n, none[i])) {
            /* int64 inputs (shapes, axes, indices) live on the host: always kept */
            for (int k = 0; k < ni; k++) in_read[k] = n->in[k] >= 0 && m->values[n->in[k]].dtype != LP_F32;
            *out_read = 0;
            return;
        }
    /* unary ops whose gradient is a function of the output; later inputs (Clip's
     * bounds) stay read */
    if (is(n, "Relu") || (is(n, "Clip") && _lp_act_of(m, n) > 0.f) || is(n, "Sigmoid") || is(n, "Tanh") ||
        is(n, "Exp") || is(n, "Sqrt") || is(n, "Softmax") || is(n, "LogSoftmax")) { /* Clip: a ReLU6's (hardtanh) */
        in_read[0] = 0;
        return;
    }
    if (is(n, "LeakyRelu") || is(n, "Clip") || is(n, "HardSigmoid") || is(n, "HardSwish") || is(n, "Gelu") ||
        is(n, "Erf") || is(n, "Log") || is(n, "Abs") || is(n, "MaxPool") || is(n, "GlobalMaxPool")) {
        *out_read = 0; /* from the input alone (max pools recompute the argmax) */
        return;
    }
    if (is(n, "Conv") || is(n, "ConvTranspose")) { /* dx reads the weight, dW the input; the bias, dy alone */
        in_read[0] = ni > 1 && din_req[1];
        if (ni > 1) in_read[1] = din_req[0];
        if (ni > 2) in_read[2] = 0;
        *out_read = 0;
        return;
    }
    if (is(n, "Gemm") || is(n, "MatMul")) { /* each operand's gradient reads the other (Mul's kernels read both) */
        if (ni >= 2) {
            in_read[0] = din_req[1];
            in_read[1] = din_req[0];
        }
        if (ni > 2) in_read[2] = 0;
        *out_read = 0;
        return;
    }
    if (is(n, "BatchNormalization")) {
        /* With constant statistics the input gradient is a per-channel scale (the folded
         * one); otherwise, or for the statistics' gradients, x is read too. */
        int folded = 1, stats = 0;
        for (int k = 1; k < ni; k++) {
            folded &= n->in[k] >= 0 && m->values[n->in[k]].init != NULL;
            stats |= din_req[k];
        }
        if (folded && !stats && ni == 5) in_read[0] = 0;
        *out_read = 0;
        return;
    }
}
