#!/usr/bin/env python3
"""e2e_opentsne.py LOUPE WORKDIR [N] — Loupe's t-SNE against openTSNE on the first N
(default 5000) Fashion-MNIST training images, same data and parameters (perplexity
30, theta 0.5, 1000 iterations of which 250 exaggerated by 12, momentum 0.5 then
0.8, learning rate max(200, N/12), PCA start, exact neighbours). Passes when
Loupe's trustworthiness (k = 10, scikit-learn's) is within 0.01 of openTSNE's and
10-NN classification in Loupe's embedding reaches 0.7. Needs openTSNE (run under
the venv the tsne.venv test makes): without it this fails, it never skips."""
import gzip
import json
import os
import subprocess
import sys
import time

import numpy as np
from sklearn.manifold import trustworthiness
from sklearn.neighbors import KNeighborsClassifier
from sklearn.model_selection import cross_val_score

FMNIST = "/usr/share/datasets/fashion-mnist"


def load_idx(path, n):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)
    return arr[:n]


def knn_accuracy(y, labels):
    clf = KNeighborsClassifier(n_neighbors=10)
    return float(cross_val_score(clf, y, labels, cv=5).mean())


def main():
    loupe, work = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
    try:
        from openTSNE import TSNE
    except ImportError as e:
        sys.exit(f"FAIL: openTSNE is not importable ({e}); the tsne.venv setup test installs it from PyPI")
    os.makedirs(work, exist_ok=True)
    x = (load_idx(f"{FMNIST}/train-images-idx3-ubyte.gz", n).reshape(n, -1) / 255.0).astype(np.float32)
    labels = load_idx(f"{FMNIST}/train-labels-idx1-ubyte.gz", n).astype(np.int64)
    xp, lp, yp = (os.path.join(work, f) for f in ("x.npy", "labels.npy", "y_loupe.npy"))
    np.save(xp, x)
    np.save(lp, labels)
    lr = max(200.0, n / 12.0)

    t0 = time.time()
    r = subprocess.run([loupe, "tsne", xp, "-o", yp, "--labels", lp, "--plot", os.path.join(work, "loupe.png"),
                        "--metrics", "--seed", "42"], capture_output=True, text=True)
    t_loupe = time.time() - t0
    if r.returncode != 0:
        sys.exit(f"FAIL: loupe tsne exited {r.returncode}: {r.stderr.strip()}")
    m = json.loads(r.stdout)
    y_loupe = np.load(yp)

    t0 = time.time()
    y_open = np.asarray(TSNE(n_components=2, perplexity=30, learning_rate=lr, early_exaggeration_iter=250,
                             early_exaggeration=12, n_iter=750, theta=0.5, initialization="pca",
                             neighbors="exact", negative_gradient_method="bh", initial_momentum=0.5,
                             final_momentum=0.8, n_jobs=2, random_state=42).fit(x))
    t_open = time.time() - t0

    tw_loupe = trustworthiness(x, y_loupe, n_neighbors=10)
    tw_open = trustworthiness(x, y_open, n_neighbors=10)
    acc_loupe, acc_open = knn_accuracy(y_loupe, labels), knn_accuracy(y_open, labels)
    print(f"N = {n}: loupe {t_loupe:.1f}s trustworthiness {tw_loupe:.4f} (its own metric {m['trustworthiness']:.4f}), "
          f"KL {m['kl']:.4f}, 10-NN accuracy {acc_loupe:.3f}")
    print(f"        openTSNE {t_open:.1f}s trustworthiness {tw_open:.4f}, 10-NN accuracy {acc_open:.3f}")
    ok = True
    if abs(tw_loupe - tw_open) > 0.01:
        print(f"FAIL: trustworthiness differs by {abs(tw_loupe - tw_open):.4f} > 0.01")
        ok = False
    if abs(m["trustworthiness"] - tw_loupe) > 1e-4:
        print(f"FAIL: loupe's own trustworthiness {m['trustworthiness']:.6f} != scikit-learn's {tw_loupe:.6f}")
        ok = False
    if acc_loupe < 0.7:
        print(f"FAIL: 10-NN accuracy in the embedding {acc_loupe:.3f} < 0.7: labels not separated")
        ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
