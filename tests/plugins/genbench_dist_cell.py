"""One cell's rFD and gFD (fmnist-cnn-v1 features) computed by the real metrics, in one process or as one
rank of a gloo group (tests/test_distributed_fid.py): the input provider shards the reconstructions, the
samples (global batches of $BENCH_SAMPLE_BATCH images) and their features."""
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


class Noise:
    """sample(n, cond, steps, seed): images from a generator seeded by ``seed`` (plus 25 grey levels per
    class label), one counted network evaluation per image; every call is recorded as (n, seed)."""

    capabilities = frozenset({"generate"})
    registry_name = "test-noise"

    def __init__(self):
        self.calls = []

    def sample(self, n, cond, steps, seed):
        from bench.adapter import count_nfe

        self.calls.append([n, seed])
        count_nfe(n)
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(n, 1, 28, 28, generator=g) * 150 + 25 * cond.labels.view(-1, 1, 1, 1).float() % 100
        return x.clamp(0, 255).to(torch.uint8)


def compute_gen(root: str) -> dict:
    """gFD of N samples of :class:`Noise` (n=N, batch BATCH), the sample calls of this process, the NFE,
    and the sha256 of the cell's sample pool (uint8 [N, 1, 28, 28])."""
    import hashlib
    from pathlib import Path

    from bench.context import Cache, CellContext
    from bench.data.base import ImageDataset
    from bench.data.fmnist import fmnist_dir, load_split
    from bench.inputs import SAMPLES, provider
    from bench.metrics.fd_fmnist import GenerationFD
    from bench.suite import MetricSpec

    d = fmnist_dir()
    ds = ImageDataset("fmnist", load_split(d, "train").head(200), load_split(d, "test").head(N), 10, 1, 28, str(d))
    params = {"n": N, "batch_size": BATCH}
    ctx = CellContext(suite=SimpleNamespace(metrics=[MetricSpec(name="gfd_fmnist", params=params)]), method=None,
                      seed=7, budget={}, dataset=ds, cache=Cache(Path(root) / "cache"), artifact_dir=Path(root),
                      progress=False)
    m, adapter = GenerationFD(), Noise()
    out = m.compute(adapter, ctx, m.Params.model_validate(params))
    pool = provider(ctx).pooled(SAMPLES)
    return {"out": out, "calls": adapter.calls, "nfe": provider(ctx).nfe(None), "n": len(pool),
            "sha": hashlib.sha256(pool.images.contiguous().numpy().tobytes()).hexdigest()}


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
    res = (compute_gen if len(sys.argv) > 2 and sys.argv[2] == "gen" else compute)(f"{sys.argv[1]}.dir{rank}")
    with open(f"{sys.argv[1]}.{rank}", "w") as f:
        json.dump({"rank": rank, **res}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
