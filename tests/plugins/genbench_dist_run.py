"""A tiny fmnist method for `bench run-cell` under torchrun (tests/test_distributed_fid.py, suite
tests/suites/dist_toy.yaml).

``dist_noise``: ``prepare`` "trains" a brightness offset (one draw of torch's seeded RNG) and keeps it in
the cell cache, so a second rank loads it; ``sample`` draws images from a generator seeded by ``seed``;
``encode``/``decode`` are the identity on pixels plus the offset (rFD > 0). With ``$GENBENCH_DIST_MARKERS``
set, each process records there what it did: ``prepare.<rank>.<trained|loaded>`` and
``sample.<rank>.<n>.<seed>`` files. ``$GENBENCH_DIST_FAIL_RANK=r``: ``sample`` raises on rank r.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from pydantic import Field

from bench.adapter import Adapter, AdapterParams, count_nfe
from bench.context import stable_hash
from bench.registry import register_adapter


def _mark(name: str) -> None:
    d = os.environ.get("GENBENCH_DIST_MARKERS")
    if d:
        Path(d, f"{name}.{os.getpid()}").touch()


class NoiseParams(AdapterParams):
    spread: float = Field(150.0, gt=0, le=255, description="grey-level range of the sampled noise")


@register_adapter("dist_noise")
class DistNoise(Adapter):
    """Noise images (see the module docstring); generate + tokenize."""

    capabilities = frozenset({"generate", "tokenize"})
    Params = NoiseParams

    def __init__(self, params, seed):
        self.params, self.seed = params, seed

    def prepare(self, ctx):
        rank = os.environ.get("RANK", "0")
        key = stable_hash({"dist_noise": self.params.model_dump(), "seed": self.seed})
        blob = ctx.cache.load_bytes("dist_noise", key, "txt")
        if blob is None:
            time.sleep(1.0)  # "training": long enough that a rank which did not wait would train too
            self.offset = int(torch.randint(5, 40, ()).item())
            ctx.cache.save_bytes("dist_noise", key, str(self.offset).encode(), "txt")
            _mark(f"prepare.{rank}.trained")
        else:
            self.offset = int(blob.decode())
            _mark(f"prepare.{rank}.loaded")

    @property
    def codebook_sizes(self):
        return [256] * 28 * 28

    def encode(self, images):
        """uint8 [B, 1, 28, 28] -> int64 [B, 784] (the pixels)."""
        return images.flatten(1).long()

    def decode(self, tokens):
        """int64 [B, 784] -> uint8 [B, 1, 28, 28], brightened by the trained offset."""
        return (tokens + self.offset).clamp(0, 255).to(torch.uint8).view(-1, 1, 28, 28)

    def sample(self, n, cond, steps, seed):
        _mark(f"sample.{os.environ.get('RANK', '0')}.{n}.{seed}")
        if os.environ.get("GENBENCH_DIST_FAIL_RANK") == os.environ.get("RANK", "0"):
            raise RuntimeError(f"sample fails on rank {os.environ['GENBENCH_DIST_FAIL_RANK']} (test)")
        count_nfe(n)
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(n, 1, 28, 28, generator=g) * self.params.spread + (cond.labels.view(-1, 1, 1, 1) * 10)
        return x.clamp(0, 255).to(torch.uint8)
