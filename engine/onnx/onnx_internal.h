/* onnx_internal.h — helpers shared by the ONNX importer and exporter (tensor
 * conversion from the generated protobuf-c types). Private to engine/onnx. */
#ifndef LOUPE_ONNX_INTERNAL_H
#define LOUPE_ONNX_INTERNAL_H

#include "internal.h"
#include "onnx.pb-c.h"

/* "FLOAT", "INT64", ... for messages. */
const char *lp_onnx_dtype_name(int32_t dt);
/* Can lp_onnx_tensor convert this ONNX data type? */
int lp_onnx_dtype_supported(int32_t dt);
/* Convert a TensorProto to a host tensor: floating types -> LP_F32, integer/bool
 * types -> LP_I64. External data is read relative to `dir` (NULL: refused).
 * `file` and `what` ("initializer 'w'") name it in messages. */
lp_status lp_onnx_tensor(const Onnx__TensorProto *tp, const char *dir, const char *file, const char *what,
                         lp_tensor **out);

#endif
