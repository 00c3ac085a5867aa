"""Small shared training utilities: minibatch streams, NaN guards, progress bars."""
from __future__ import annotations

import math
from typing import Iterator

import torch
from tqdm.auto import tqdm

from bench.errors import BenchError


class TrainingDiverged(BenchError):
    """A loss became NaN/inf; the message names what was being trained and the step."""


def minibatches(n: int, batch_size: int, steps: int, seed: int) -> Iterator[torch.Tensor]:
    """Yield ``steps`` index tensors (int64 [batch_size]) covering [0, n) in reshuffled epochs."""
    g = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(n, generator=g), 0
    for _ in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=g), 0
        yield perm[pos : pos + batch_size]
        pos += batch_size


def check_loss(loss: torch.Tensor, what: str, step: int) -> float:
    """Return ``loss`` as float; raise :class:`TrainingDiverged` if it is NaN/inf."""
    v = float(loss.detach())
    if not math.isfinite(v):
        raise TrainingDiverged(
            f"{what}: loss is {v} at step {step}; lower the learning rate in the suite's budget or check the inputs"
        )
    return v


def progress(iterable, total: int, desc: str, enabled: bool = True):
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=False, mininterval=2.0)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, C, H, W] in [0, 255] -> float32 in [-1, 1]."""
    return images.float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] (clamped) -> uint8 [0, 255]."""
    return x.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
