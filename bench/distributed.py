"""Sampling and feature statistics of one cell sharded over processes (``torchrun``), merged exactly.

Generation is split into *global batches* of a fixed size: batch ``b`` holds images
``[b*B, min((b+1)*B, n))`` and is made from its own seed (:func:`batch_seed`), so the images are
the same whatever the number of processes, and their total is exactly ``n`` (the last batch is
short; nothing is padded or duplicated). Rank r of W takes batches ``r, r+W, r+2W, ...``
(:func:`my_batches`).

Each rank reduces its features to float64 Gaussian statistics (:class:`GaussStats`: count n,
mean, and the centred scatter matrix M2 = sum (x - mean)(x - mean)^T). The ranks' statistics are
all-gathered and merged in rank order with Chan et al.'s pairwise update (1979, "Updating formulae
and a pairwise algorithm for computing sample variances"), which equals the single-pass statistics
up to float64 round-off; every rank then holds the same merged statistics. The Fréchet distance of
merged statistics is torch-fidelity's ``fid_statistics_to_metric`` (the formula
:func:`bench.metrics.frechet.frechet_distance` uses on features), covariance ``M2 / (n - 1)`` as
``np.cov``.

Wired into the metrics: :func:`sharded_features` is what the cell's input provider
(:meth:`bench.inputs.InputProvider._get_features`) uses for generated and reconstructed image sets
when a process group is initialised with more than one rank: each rank runs the instrument on its
global batches only, the feature rows are all-gathered and put back in image order, so every
Fréchet/KID member (rFID, gFID, rFD/gFD ...) gets exactly the single-process features. The provider
also draws the samples (and decodes the reconstructions) of a cell with :func:`gather_rows`: each rank
makes its global batches (samples from ``batch_seed(seed, b)``), the rows are all-gathered in order.
Without a process group (every ordinary run) the provider's path is unchanged. ``bench run-cell`` under
torchrun (rank 0 logging) is :mod:`bench.torchrun` and :func:`bench.runner.run_cell`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch


def batch_seed(seed: int, batch: int) -> int:
    """The generator seed of global batch ``batch`` of a cell with seed ``seed`` (int in [0, 2^63))."""
    return (seed * 1_000_003 + batch * 7_919 + 1) % (2**63 - 1)


def my_batches(n: int, batch_size: int, rank: int, world: int) -> Iterator[tuple[int, int, int]]:
    """(batch index, first image index, image count) of rank ``rank``'s global batches; all ranks
    together cover ``range(n)`` exactly once."""
    if n < 0 or batch_size <= 0 or not 0 <= rank < world:
        raise ValueError(f"bad shard: n={n}, batch_size={batch_size}, rank={rank}, world={world}")
    n_batches = -(-n // batch_size)
    for b in range(rank, n_batches, world):
        start = b * batch_size
        yield b, start, min(batch_size, n - start)


@dataclass
class GaussStats:
    """float64 statistics of a feature set: ``n`` rows, ``mean`` [D], centred scatter ``m2`` [D, D]."""

    n: int
    mean: torch.Tensor
    m2: torch.Tensor

    @classmethod
    def empty(cls, dim: int) -> "GaussStats":
        return cls(0, torch.zeros(dim, dtype=torch.float64), torch.zeros(dim, dim, dtype=torch.float64))

    @classmethod
    def of(cls, feats: torch.Tensor) -> "GaussStats":
        """Statistics of features [N, D] (any float dtype; computed in float64)."""
        x = feats.detach().to(torch.float64)
        if len(x) == 0:
            return cls.empty(x.shape[1])
        mean = x.mean(0)
        c = x - mean
        return cls(len(x), mean, c.T @ c)

    def merge(self, other: "GaussStats") -> "GaussStats":
        """Statistics of the union of both sets (Chan et al. pairwise update)."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + torch.outer(delta, delta) * (self.n * other.n / n)
        return GaussStats(n, mean, m2)

    def cov(self) -> torch.Tensor:
        """Unbiased covariance (``np.cov``: divides by n - 1); needs n >= 2."""
        if self.n < 2:
            raise ValueError(f"covariance needs at least 2 feature rows, got {self.n}")
        return self.m2 / (self.n - 1)


def all_merge(stats: GaussStats, group=None) -> GaussStats:
    """All-gather every rank's statistics and merge them in rank order (same result on every rank).

    Uses ``torch.distributed.all_gather_object`` (works with gloo and nccl; the tensors travel as
    float64). Without an initialised process group, returns ``stats``.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return stats
    parts: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(parts, (stats.n, stats.mean.cpu(), stats.m2.cpu()), group=group)
    merged = GaussStats.empty(stats.mean.shape[0])
    for n, mean, m2 in parts:
        merged = merged.merge(GaussStats(int(n), mean.to(torch.float64), m2.to(torch.float64)))
    return merged


def sharded_stats(n: int, batch_size: int, seed: int, make_batch: Callable[[int, int, int], torch.Tensor],
                  features: Callable[[torch.Tensor], torch.Tensor], rank: int = 0, world: int = 1,
                  group=None) -> GaussStats:
    """Generate this rank's share of ``n`` images and return the merged statistics of all ranks' features.

    ``make_batch(batch_seed, first_index, count)`` -> images of that global batch (``count`` rows);
    ``features(images)`` -> float features [count, D]. The merged ``n`` equals ``n`` exactly.
    """
    local: GaussStats | None = None
    for b, start, count in my_batches(n, batch_size, rank, world):
        f = features(make_batch(batch_seed(seed, b), start, count))
        if len(f) != count:
            raise ValueError(f"make_batch/features returned {len(f)} rows for global batch {b}, expected {count}")
        s = GaussStats.of(f)
        local = s if local is None else local.merge(s)
    if local is None:  # more ranks than batches: this one has none
        dim = features(make_batch(batch_seed(seed, 0), 0, 1)).shape[1]
        local = GaussStats.empty(dim)
    merged = all_merge(local, group)
    if merged.n != n and world > 1:
        raise RuntimeError(f"merged {merged.n} feature rows, expected exactly {n}")
    return merged


def frechet_from_stats(a: GaussStats, b: GaussStats) -> float:
    """Fréchet distance of two Gaussian fits (torch-fidelity's formula; squared feature units)."""
    from threadpoolctl import threadpool_limits
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    sa = {"mu": a.mean.numpy(), "sigma": a.cov().numpy()}
    sb = {"mu": b.mean.numpy(), "sigma": b.cov().numpy()}
    with threadpool_limits(1, user_api="blas"):
        return float(fid_statistics_to_metric(sa, sb, verbose=False)[KEY_METRIC_FID])


def rank_world(group=None) -> tuple[int, int]:
    """(rank, world size) of the initialised process group; (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


def sharded_features(n: int, batch_size: int, extract: Callable[[int, int], np.ndarray], group=None) -> np.ndarray:
    """Features [n, D] of n images, each rank extracting only its global batches, all-gathered in image order.

    ``extract(start, count)`` -> float features [count, D] of images ``start .. start + count - 1``
    (batch ``b`` = images ``[b * batch_size, (b + 1) * batch_size)``, as one extractor batch: the same
    batch composition as a single-process pass, so the same values). Every rank returns the full
    matrix (``all_gather_object``; gloo, or nccl with the rank's CUDA device set). One process: ``extract(0, n)``.
    """
    import torch.distributed as dist

    rank, world = rank_world(group)
    if world == 1:
        return extract(0, n)
    mine = []
    for b, start, count in my_batches(n, batch_size, rank, world):
        f = np.asarray(extract(start, count))
        if len(f) != count:
            raise ValueError(f"extractor returned {len(f)} feature rows for global batch {b}, expected {count}")
        mine.append((start, f))
    parts: list = [None] * world
    dist.all_gather_object(parts, mine, group=group)
    pieces = sorted((p for part in parts for p in part), key=lambda p: p[0])
    starts = [s for s, _ in pieces]
    if starts != [b * batch_size for b in range(len(pieces))] or sum(len(f) for _, f in pieces) != n:
        raise RuntimeError(f"gathered feature batches {starts} do not cover the {n} images exactly once")
    return np.concatenate([f for _, f in pieces]) if pieces else np.zeros((0, 0))


def gather_rows(n: int, batch_size: int, make: Callable[[int, int, int], torch.Tensor], group=None) -> torch.Tensor:
    """Rows [n, ...] made in global batches, each rank making only its batches, all-gathered in row order.

    ``make(batch, start, count)`` -> a CPU tensor of ``count`` rows (images ``start .. start + count - 1``;
    ``batch`` is the global batch index, e.g. for :func:`batch_seed`). Every rank returns the full,
    identical tensor (``all_gather_object``: each rank's rows travel pickled, so every rank holds all
    n rows at the end: n x C x H x W bytes for uint8 images). One process: all batches in order, then
    ``torch.cat`` (no process group needed). ``n`` must be >= 1.
    """
    import torch.distributed as dist

    rank, world = rank_world(group)
    mine = []
    for b, start, count in my_batches(n, batch_size, rank, world):
        rows = make(b, start, count).cpu()
        if len(rows) != count:
            raise ValueError(f"global batch {b} gave {len(rows)} rows, expected {count}")
        mine.append((start, rows))
    if world == 1:
        return torch.cat([r for _, r in mine])
    parts: list = [None] * world
    dist.all_gather_object(parts, mine, group=group)
    pieces = sorted((p for part in parts for p in part), key=lambda p: p[0])
    if [s for s, _ in pieces] != [b * batch_size for b in range(len(pieces))] or sum(len(r) for _, r in pieces) != n:
        raise RuntimeError(f"gathered batches {[s for s, _ in pieces]} do not cover the {n} rows exactly once")
    return torch.cat([r for _, r in pieces])


def all_sum(value: float, group=None) -> float:
    """Sum of ``value`` over the ranks (``value`` itself without a process group)."""
    import torch.distributed as dist

    if rank_world(group)[1] == 1:
        return value
    parts: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(parts, value, group=group)
    return sum(parts)


def as_numpy(stats: GaussStats) -> dict[str, np.ndarray]:
    return {"n": np.array(stats.n), "mu": stats.mean.numpy(), "sigma": stats.cov().numpy()}
