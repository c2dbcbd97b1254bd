#!/usr/bin/env bash
# info_resnet50.sh LOUPE PYTHON DIR: export torchvision's resnet50 as torch.onnx.export
# writes it (eval mode: BatchNormalization folded into Conv, equal tensors stored once)
# and check that `loupe info` reports the weights the file holds and ~4.1 G MACs.
set -euo pipefail
loupe=$1; py=$2; dir=$3
mkdir -p "$dir"
"$py" - "$dir/resnet50_default.onnx" <<'PY'
import sys, warnings
warnings.filterwarnings("ignore")
import numpy as np, onnx, torch, torchvision
torch.manual_seed(0)
m = torchvision.models.resnet50(weights=None).eval()
torch.onnx.export(m, torch.randn(1, 3, 224, 224), sys.argv[1], opset_version=17)
g = onnx.load(sys.argv[1]).graph
print("file holds", sum(int(np.prod(t.dims)) for t in g.initializer if t.data_type == 1), "float weights")
PY
out=$("$loupe" info "$dir/resnet50_default.onnx" | tail -1)
echo "$out"
echo "$out" | grep -q "parameters 25507944 " || { echo "FAIL: expected 25507944 parameters"; exit 1; }
echo "$out" | grep -q "(4.09 GMAC)" || { echo "FAIL: expected about 4.1 G multiply-adds"; exit 1; }
