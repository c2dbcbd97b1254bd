#!/usr/bin/env bash
# Install everything Loupe needs to build and test, from Debian packages only.
# Run as root (or it uses sudo). CUDA (nvcc, cuDNN, cuBLAS) is optional and not
# installed here: the build turns LOUPE_CUDA on when it finds nvcc.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
PKGS=(
  build-essential cmake pkg-config clang libclang-rt-14-dev
  libprotobuf-c-dev protobuf-c-compiler libonnx-dev
  libopenblas-dev libpng-dev libjpeg62-turbo-dev zlib1g-dev libcmocka-dev
  python3 python3-venv python3-pip python3-numpy python3-pil python3-torch python3-torchvision python3-onnx python3-sklearn
  python3-matplotlib python3-tqdm python3-opencv python3-packaging
  dataset-fashion-mnist
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "all Debian packages already installed"
fi
