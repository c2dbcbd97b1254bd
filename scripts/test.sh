#!/usr/bin/env bash
# The whole test suite: a Release build (CUDA compiled when nvcc is present) with
# every CTest (unit, oracle against PyTorch, CLI bad input, training); then an
# AddressSanitizer build with clang that reruns the unit and bad-input tests and
# runs each libFuzzer target for a bounded time; then the GPU-labelled tests on the
# CUDA emulator (tests/emu: the CUDA backend's host code and kernels run on the CPU),
# with the emulator's own tests and the kernel-level ones again in shuffled run order.
# On a real GPU they run through tests/gpu/check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
ctest --test-dir build --output-on-failure -LE gpu -j2 --timeout 1800
CC=clang cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLOUPE_CUDA=OFF \
  -DLOUPE_SANITIZE=ON -DLOUPE_FUZZ=ON
cmake --build build-asan -j"$(nproc)"
ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan --output-on-failure -L "unit|badinput|fuzz" -LE "slow|gpu" -j2
cmake -S . -B build-emu -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLOUPE_CUDA_EMU=ON -DLOUPE_VIEWER=OFF
cmake --build build-emu -j"$(nproc)"
ctest --test-dir build-emu --output-on-failure -L "gpu|emu" -j2
