#!/usr/bin/env python3
"""peer_tsne.py N OUTDIR METHOD... — the peers of bench/tsne.c: t-SNE of the first N
Fashion-MNIST training images (pixels / 255, 784 features) with openTSNE (Barnes-Hut
and FFT) and scikit-learn (Barnes-Hut), at Loupe's parameters: perplexity 30, theta
0.5, 1000 iterations of which 250 exaggerated by 12, momentum 0.5 then 0.8, learning
rate max(200, N/12) (divided by 4 for scikit-learn, whose gradient carries the
factor 4), PCA start, exact neighbours. Each embedding goes to OUTDIR/y_METHOD.npy and
one JSON line {"method", "seconds"} to stdout; bench/tsne.c scores them all alike.
METHOD: opentsne-bh, opentsne-fft, sklearn-bh. Run it with a Python that has openTSNE
(the tsne.venv test makes build/tsne-venv)."""
import gzip
import json
import os
import sys
import time

import numpy as np

FMNIST = "/usr/share/datasets/fashion-mnist"


def load_images(n):
    """The first n of the 70,000 images: the training set, then the test set (as bench/tsne.c)."""
    parts = []
    for name in ("train", "t10k"):
        with gzip.open(f"{FMNIST}/{name}-images-idx3-ubyte.gz", "rb") as f:
            parts.append(np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784))
    arr = np.concatenate(parts)[:n]
    return (arr / 255.0).astype(np.float32)


def run(method, x, threads):
    n = x.shape[0]
    lr = max(200.0, n / 12.0)
    if method.startswith("opentsne"):
        from openTSNE import TSNE
        return np.asarray(TSNE(n_components=2, perplexity=30, learning_rate=lr, early_exaggeration_iter=250,
                               early_exaggeration=12, n_iter=750, theta=0.5, initialization="pca",
                               neighbors="exact", negative_gradient_method=method.split("-")[1],
                               initial_momentum=0.5, final_momentum=0.8, n_jobs=threads,
                               random_state=42).fit(x))
    if method == "sklearn-bh":
        from sklearn.manifold import TSNE
        return TSNE(n_components=2, perplexity=30, early_exaggeration=12, learning_rate=lr / 4, n_iter=1000,
                    init="pca", method="barnes_hut", angle=0.5, random_state=42, n_jobs=threads).fit_transform(x)
    sys.exit(f"unknown method '{method}' (opentsne-bh, opentsne-fft, sklearn-bh)")


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    n, out = int(sys.argv[1]), sys.argv[2]
    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
    os.makedirs(out, exist_ok=True)
    x = load_images(n)
    for method in sys.argv[3:]:
        t0 = time.time()
        y = run(method, x, threads)
        sec = time.time() - t0
        np.save(os.path.join(out, f"y_{method}.npy"), np.ascontiguousarray(y, dtype=np.float32))
        print(json.dumps({"method": method, "seconds": round(sec, 3)}), flush=True)


if __name__ == "__main__":
    main()
