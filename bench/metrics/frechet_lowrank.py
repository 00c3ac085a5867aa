"""The Fréchet distance through the feature matrices' QR factors: exact, and cheap when n < D.

FD = |mu_a - mu_b|^2 + tr S_a + tr S_b - 2 tr sqrt(S_a S_b) (Heusel et al. 2017, arXiv 1706.08500,
eq. 2, with the unbiased covariances S = C^T C / (n - 1) of the centred features C, as ``np.cov``).
The eigenvalues of S_a S_b = A^T A B^T B / ((n_a - 1)(n_b - 1)) (A, B the centred features) are the
squared singular values of A B^T / sqrt((n_a - 1)(n_b - 1)), and with QR factors A = Q_a R_a,
B = Q_b R_b those are the singular values of R_a R_b^T. So

    tr sqrt(S_a S_b) = ||R_a R_b^T||_* / sqrt((n_a - 1)(n_b - 1))   (nuclear norm = sum of singular values)

with R of size min(n, D) x D: for 200 Inception features (D = 2048) an SVD of a 200 x 200 matrix
instead of the 2048 x 2048 non-symmetric eigenvalue problem (seconds) of torch-fidelity's formula,
which makes a bootstrap over images affordable. It equals
:func:`bench.metrics.frechet.frechet_distance` up to float64 round-off (tests/test_frechet_uncertainty.py);
unlike the eigenvalue route it never meets the complex or negative eigenvalues that round-off gives
the product of two rank-deficient covariances.
"""
from __future__ import annotations

import numpy as np


def _r_factor(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(mean [D], R [min(n, D), D] of the centred features, n) in float64."""
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need features [N >= 2, D], got shape {x.shape}")
    mu = x.mean(0)
    return mu, np.linalg.qr(x - mu, mode="r"), len(x)


def frechet_distance_qr(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance of the Gaussian fits of two feature sets (float [N, D] each, N >= 2), in
    squared feature units; the same quantity as :func:`bench.metrics.frechet.frechet_distance`."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):  # as frechet_distance: OpenBLAS threads thrash a loaded machine
        mu_a, r_a, n_a = _r_factor(feats_a)
        mu_b, r_b, n_b = _r_factor(feats_b)
        tr_a = float(np.sum(r_a * r_a)) / (n_a - 1)  # ||A||_F^2 = ||R_a||_F^2
        tr_b = float(np.sum(r_b * r_b)) / (n_b - 1)
        nuclear = float(np.linalg.svd(r_a @ r_b.T, compute_uv=False).sum())
    diff = mu_a - mu_b
    return float(diff @ diff + tr_a + tr_b - 2.0 * nuclear / np.sqrt((n_a - 1) * (n_b - 1)))
