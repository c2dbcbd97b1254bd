"""Make the bad inputs the CLI tests feed to `loupe` (written into the folder given):
a truncated and a byte-flipped ONNX model, .npy files of the wrong dtype, rank and
shape, and a file that is no image."""
import os
import sys

import numpy as np

out, model = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
data = open(model, "rb").read()
open(os.path.join(out, "truncated.onnx"), "wb").write(data[: len(data) // 3])
# Flip bytes in the protobuf framing at the start (tags and lengths), not in weights,
# so the damage is structural.
flipped = bytearray(data)
for i in (0, 1, 2, 3, 5, 8, 13):
    flipped[i] ^= 0xFF
open(os.path.join(out, "flipped.onnx"), "wb").write(bytes(flipped))
np.save(os.path.join(out, "f64.npy"), np.zeros((1, 1, 28, 28), dtype=np.float64))
np.save(os.path.join(out, "rank2.npy"), np.zeros((28, 28), dtype=np.float32))
np.save(os.path.join(out, "rgb.npy"), np.zeros((1, 3, 28, 28), dtype=np.float32))
np.save(os.path.join(out, "good.npy"), np.zeros((2, 1, 28, 28), dtype=np.float32))
open(os.path.join(out, "notanimage.png"), "wb").write(b"this is plain text, not a picture\n" * 4)
