#!/usr/bin/env bash
# Build Loupe and run the main job on the bundled model and images: predictions for
# every sample image, the first layers' activation maps as PNG grids, and attribution
# maps by several methods with an HTML page comparing them, all in demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh >/dev/null
mkdir -p demo-out
echo "== loupe info (bundled Fashion-MNIST CNN)"
build/loupe info
echo "== loupe predict assets/images/*.png"
build/loupe predict assets/images/*.png --top 3 --logits-out demo-out/logits.npy
first=$(ls assets/images/*.png | head -1)
echo "== loupe activations $first"
build/loupe activations "$first" --layer conv1 -o demo-out/conv1.png --npy-out demo-out/conv1.npy
build/loupe activations "$first" --layer conv2 -o demo-out/conv2.png
echo "== loupe explain assets/images/*.png"
build/loupe explain assets/images/*.png -o demo-out/explain \
  --method saliency,input_x_gradient,smoothgrad,integrated_gradients,guided_backprop,lrp,gradcam,occlusion \
  --patch 6 --stride 3
echo "results in demo-out/: logits.npy, conv1.png, conv1.npy, conv2.png, explain/index.html"
