"""Tiny image "generator" and feature extractor for the distributed-FID test (tests/test_distributed_fid.py)."""
from __future__ import annotations

import json
import os
import sys

import torch

N_FAKE, N_REAL, BATCH, SEED = 37, 50, 8, 3


def make_batch(seed: int, start: int, count: int) -> torch.Tensor:
    """``count`` uint8 images [count, 3, 16, 16] of one global batch (from its seed only)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(count, 3, 16, 16, generator=g)
    return (255 * base**1.5).to(torch.uint8)


_NET = None


def features(images: torch.Tensor) -> torch.Tensor:
    """A fixed random conv net (seed 0): uint8 [N, 3, 16, 16] -> float32 [N, 12]."""
    global _NET
    if _NET is None:
        torch.manual_seed(0)
        _NET = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, stride=2), torch.nn.Tanh(),
                                   torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    with torch.no_grad():
        return _NET((images.float() - 128) / 128)


def real_images() -> torch.Tensor:
    return make_batch(99, 0, N_REAL)


def main() -> None:
    """One rank (env RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT): merged stats -> FID, written to argv[1]."""
    import torch.distributed as dist

    from bench.distributed import GaussStats, frechet_from_stats, sharded_stats

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    fake = sharded_stats(N_FAKE, BATCH, SEED, make_batch, features, rank, world)
    fid = frechet_from_stats(GaussStats.of(features(real_images())), fake)
    mine = sum(c for _, _, c in __import__("bench.distributed", fromlist=["my_batches"]).my_batches(N_FAKE, BATCH, rank, world))
    with open(f"{sys.argv[1]}.{rank}", "w") as f:
        json.dump({"rank": rank, "world": world, "n": fake.n, "mine": mine, "fid": fid,
                   "mean": fake.mean.tolist()}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
