"""gFID against the ADM reference batch's own statistics (Dhariwal & Nichol 2021, arXiv 2105.05233).

The ADM evaluator (``guided-diffusion/evaluations/evaluator.py``) reads ``mu`` / ``sigma`` from the
reference batch ``.npz`` when present, the pool3 statistics of the *whole training set*, and
compares the samples' statistics with them; the 10,000 images ``arr_0`` of the same file serve only
the neighbourhood metrics (precision/recall). Computing the reference Gaussian from those 10,000
images instead is a different (noisier, upward-biased) FID. :func:`reference_statistics` reads the
file's ``mu`` (float [D]) and ``sigma`` (float [D, D]); :func:`frechet_distance_to_statistics` is
torch-fidelity's ``fid_features_to_statistics`` + ``fid_statistics_to_metric`` against them. The
``mu_s`` / ``sigma_s`` arrays (spatial features, sFID) are not used.

The statistics were made with TF-Inception and its own (TF1 bilinear) resize, so they pair only with
the ``inception-tf`` instrument, never with the clean-resize one (:mod:`bench.metrics.fid`).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from bench.errors import MetricError

MU, SIGMA = "mu", "sigma"


@dataclass(frozen=True)
class ReferenceStatistics:
    mu: np.ndarray  # float64 [D]
    sigma: np.ndarray  # float64 [D, D]
    sha256: str  # of the .npz file
    path: str


def reference_statistics(path: str | Path) -> ReferenceStatistics:
    """``mu`` / ``sigma`` of an ADM reference batch (memoised per file path, size and mtime).

    Raises :class:`MetricError` naming the file if it has no ``mu``/``sigma``, if their shapes
    disagree (mu [D], sigma [D, D]) or if they are not finite.
    """
    p = Path(path)
    st = p.stat()
    return _read(str(p), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=4)
def _read(path: str, size: int, mtime_ns: int) -> ReferenceStatistics:
    from bench.context import sha256_file

    with np.load(path, allow_pickle=False) as z:  # lazy: arr_0 (the images) is not read here
        missing = [k for k in (MU, SIGMA) if k not in z.files]
        if missing:
            raise MetricError(f"{path}: no {'/'.join(missing)} array (it has {z.files}); gFID vs the ADM batch uses "
                              "the batch's precomputed training-set statistics: use the original "
                              "VIRTUAL_imagenet256_labeled.npz (arrays arr_0, mu, sigma, mu_s, sigma_s)")
        mu, sigma = np.asarray(z[MU], dtype=np.float64), np.asarray(z[SIGMA], dtype=np.float64)
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise MetricError(f"{path}: mu has shape {mu.shape} and sigma {sigma.shape}; expected [D] and [D, D]")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise MetricError(f"{path}: mu/sigma contain NaN or inf: the file is corrupt")
    return ReferenceStatistics(mu, sigma, sha256_file(path), path)


def frechet_distance_to_statistics(feats: np.ndarray, ref: ReferenceStatistics) -> float:
    """Fréchet distance between the Gaussian fit of ``feats`` (float [N, D], N >= 2) and ``ref``.

    Same formula as :func:`bench.metrics.frechet.frechet_distance` (torch-fidelity's), with the
    reference side given as statistics. Units: squared feature units.
    """
    import torch
    from threadpoolctl import threadpool_limits
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    if feats.ndim != 2 or feats.shape[1] != len(ref.mu):
        raise MetricError(f"features of shape {tuple(feats.shape)} do not match the {len(ref.mu)}-d statistics "
                          f"of {ref.path}")
    mine = fid_features_to_statistics(torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float64)))
    with threadpool_limits(1, user_api="blas"):  # see frechet_distance: geev is faster single-threaded here
        out = fid_statistics_to_metric(mine, {"mu": ref.mu, "sigma": ref.sigma}, verbose=False)
    return float(out[KEY_METRIC_FID])
