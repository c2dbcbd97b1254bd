#!/usr/bin/env python3
"""make_embed_model.py OUTDIR — inputs for the `loupe embed` tests: a small CNN for
1 x 28 x 28 images (fixed random weights; the embedding pipeline, not accuracy, is
under test) exported to ONNX, the first 600 Fashion-MNIST images as a .npy batch
with their labels, and bad inputs (a NaN row, too few rows, wrong label count)."""
import gzip
import os
import sys

import numpy as np
import torch

FMNIST = "/usr/share/datasets/fashion-mnist"


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16 * 7 * 7, 10)).eval()
    torch.onnx.export(net, torch.zeros(1, 1, 28, 28), os.path.join(out, "cnn.onnx"), opset_version=13,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
    with gzip.open(f"{FMNIST}/train-images-idx3-ubyte.gz", "rb") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:600] / 255.0
    with gzip.open(f"{FMNIST}/train-labels-idx1-ubyte.gz", "rb") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:600].astype(np.int64)
    x = x.astype(np.float32)
    np.save(os.path.join(out, "images.npy"), x)
    np.save(os.path.join(out, "labels.npy"), labels)
    np.save(os.path.join(out, "labels_short.npy"), labels[:599])
    rows = x.reshape(600, -1).copy()
    np.save(os.path.join(out, "rows.npy"), rows)
    bad = rows.copy()
    bad[17, 5] = np.nan
    np.save(os.path.join(out, "nan_rows.npy"), bad)
    np.save(os.path.join(out, "three_rows.npy"), rows[:3])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
