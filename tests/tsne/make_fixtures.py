#!/usr/bin/env python3
"""make_fixtures.py OUTDIR — scikit-learn references for the t-SNE unit test
(tests/unit/test_tsne.c): the joint P of a fixed kNN graph (sklearn's
_joint_probabilities_nn) and trustworthiness of a fixed embedding."""
import os
import sys

import numpy as np
from scipy.sparse import csr_matrix
from sklearn.manifold import _t_sne, trustworthiness


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(7)
    n, d, perplexity = 400, 16, 20.0
    k = int(3 * perplexity)
    # Clusters of different spreads, so the bandwidths differ point to point.
    centers = rng.normal(0, 4, size=(5, d))
    x = (centers[rng.integers(0, 5, n)] + rng.normal(0, 1, size=(n, d)) * rng.uniform(0.3, 2, size=(n, 1)))
    x = x.astype(np.float32)
    # A fixed kNN graph (exact, self excluded), sorted by distance.
    d2 = ((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    idx = np.argsort(d2, axis=1, kind="stable")[:, :k]
    dist2 = np.take_along_axis(d2, idx, axis=1).astype(np.float32)
    # sklearn squares the neighbour distances before this call; pass squared ones.
    # Copies: the call sorts the matrix's arrays in place.
    dm = csr_matrix((dist2.ravel().copy(), idx.ravel().copy(), np.arange(0, n * k + 1, k)), shape=(n, n))
    p = _t_sne._joint_probabilities_nn(dm, perplexity, 0).toarray().astype(np.float32)
    np.save(os.path.join(out, "knn_idx.npy"), idx.astype(np.float32))
    np.save(os.path.join(out, "knn_d2.npy"), dist2)
    np.save(os.path.join(out, "p.npy"), p)
    np.save(os.path.join(out, "perplexity.npy"), np.array([perplexity], np.float32))
    # Trustworthiness of a deliberately imperfect embedding.
    y = (x[:, :2] + rng.normal(0, 1.5, size=(n, 2))).astype(np.float32)
    t = trustworthiness(x, y, n_neighbors=10)
    np.save(os.path.join(out, "x.npy"), x)
    np.save(os.path.join(out, "y.npy"), y)
    np.save(os.path.join(out, "trust.npy"), np.array([t], np.float32))
    print(f"wrote {out}: P {p.shape} nnz {np.count_nonzero(p)}, trustworthiness {t:.6f}")


if __name__ == "__main__":
    main()
