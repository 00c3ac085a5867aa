"""One cell's rFD (fmnist-cnn-v1 features) computed by the real metric, in one process or as one rank of
a gloo group (tests/test_distributed_fid.py): the input provider shards the reconstructions' features."""
from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import torch

N, BATCH = 40, 16


class Lossy:
    """decode(encode(x)) = x brightened by 20 grey levels (so rFD > 0)."""

    capabilities = frozenset({"tokenize"})
    registry_name = "test-lossy"

    def encode(self, x):
        return x

    def decode(self, z):
        return (z.int() + 20).clamp(0, 255).to(torch.uint8)


def compute(root: str) -> dict:
    """rFD of the first N fmnist test images, and the (rows, real) of each extractor call of this process."""
    from pathlib import Path

    from bench.context import Cache, CellContext
    from bench.data.base import ImageDataset
    from bench.data.fmnist import fmnist_dir, load_split
    from bench.instruments.features import FMNISTCNN
    from bench.metrics.fd_fmnist import ReconstructionFD
    from bench.suite import MetricSpec

    rows = []
    real_features = FMNISTCNN.features

    def spy(self, images, batch_size, ctx, real=False):
        rows.append([len(images), bool(real)])
        return real_features(self, images, batch_size, ctx, real)

    FMNISTCNN.features = spy
    d = fmnist_dir()
    ds = ImageDataset("fmnist", load_split(d, "train").head(100), load_split(d, "test").head(N), 10, 1, 28, str(d))
    params = {"n": N, "batch_size": BATCH}
    ctx = CellContext(suite=SimpleNamespace(metrics=[MetricSpec(name="rfd_fmnist", params=params)]), method=None,
                      seed=0, budget={}, dataset=ds, cache=Cache(Path(root) / "cache"), artifact_dir=Path(root),
                      progress=False)
    m = ReconstructionFD()
    out = m.compute(Lossy(), ctx, m.Params.model_validate(params))
    FMNISTCNN.features = real_features
    return {"out": out, "rows": rows}


def main() -> None:
    """One rank (env RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT); writes its result to argv[1].<rank>."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    res = compute(f"{sys.argv[1]}.dir{rank}")
    with open(f"{sys.argv[1]}.{rank}", "w") as f:
        json.dump({"rank": rank, **res}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
