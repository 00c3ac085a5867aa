"""Distributed sampling + feature statistics (bench.distributed): 2 gloo processes vs one process."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.distributed import GaussStats, frechet_from_stats, my_batches
from bench.metrics.frechet import frechet_distance

REPO = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).parent / "plugins"
sys.path.insert(0, str(PLUGINS))
import genbench_dist_toy as toy  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("n,batch,world", [(37, 8, 2), (37, 8, 3), (5, 8, 2), (16, 8, 2), (0, 4, 2)])
def test_shards_cover_exactly_n(n, batch, world):
    idx = [i for r in range(world) for _, s, c in my_batches(n, batch, r, world) for i in range(s, s + c)]
    assert sorted(idx) == list(range(n))  # each image once, none padded


def test_merge_equals_one_pass():
    x = torch.randn(101, 6, dtype=torch.float64) * 3 + 5
    merged = GaussStats.of(x[:40]).merge(GaussStats.of(x[40:41])).merge(GaussStats.of(x[41:]))
    assert merged.n == 101
    np.testing.assert_allclose(merged.mean.numpy(), x.mean(0).numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(merged.cov().numpy(), np.cov(x.numpy(), rowvar=False), rtol=1e-12, atol=1e-12)


def test_two_gloo_processes_equal_single_process(tmp_path):
    """2 ranks generate disjoint global batches; merged FID equals the one-process FID on the same images."""
    port = _free_port()
    out = tmp_path / "res"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(PLUGINS)]), "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    procs = [subprocess.Popen([sys.executable, str(PLUGINS / "genbench_dist_toy.py"), str(out)], cwd=REPO,
                              env={**env, "RANK": str(r)}, stderr=subprocess.PIPE, text=True) for r in range(2)]
    errs = [p.communicate(timeout=240)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(e[-3000:] for e in errs)
    res = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(2)]

    # the single-process reference: the same global batches, one feature matrix, np.cov-based FID
    imgs = torch.cat([toy.make_batch(__import__("bench.distributed", fromlist=["x"]).batch_seed(toy.SEED, b), s, c)
                      for b, s, c in my_batches(toy.N_FAKE, toy.BATCH, 0, 1)])
    assert len(imgs) == toy.N_FAKE
    feats = toy.features(imgs).double().numpy()
    ref = frechet_distance(toy.features(toy.real_images()).double().numpy(), feats)
    assert all(r["n"] == toy.N_FAKE for r in res)  # exactly n images after the merge
    assert sum(r["mine"] for r in res) == toy.N_FAKE and all(r["mine"] > 0 for r in res)
    assert res[0]["fid"] == res[1]["fid"]  # every rank holds the same merged statistics
    assert ref > 1e-3  # a non-trivial distance (the test could fail)
    assert abs(res[0]["fid"] - ref) <= 1e-9 * max(1.0, abs(ref)), (res[0]["fid"], ref)
    np.testing.assert_allclose(res[0]["mean"], feats.mean(0), rtol=0, atol=1e-12)
    # and a different image set gives a different value (equality is not vacuous)
    other = frechet_distance(toy.features(toy.real_images()).double().numpy(), feats[:-1])
    assert abs(other - ref) > 1e-6


def test_fd_metric_on_two_gloo_ranks_extracts_shards_and_equals_one_process(tmp_path):
    """The registered rFD metric under a 2-rank gloo group: each rank runs the instrument on its global
    batches of the reconstructions only (16 + 8 and 16 of 40 rows), the gathered features give the
    one-process values (rFD and its bootstrap stderr), and one process extracts all 40 in one call."""
    import genbench_dist_cell as cell

    single = cell.compute(str(tmp_path / "single"))
    assert [r for r in single["rows"] if not r[1]] == [[cell.N, False]]  # unchanged path: one call, all rows
    port = _free_port()
    out = tmp_path / "res"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(PLUGINS)]), "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    procs = [subprocess.Popen([sys.executable, str(PLUGINS / "genbench_dist_cell.py"), str(out)], cwd=REPO,
                              env={**env, "RANK": str(r)}, stderr=subprocess.PIPE, text=True) for r in range(2)]
    errs = [p.communicate(timeout=240)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(e[-3000:] for e in errs)
    res = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(2)]
    fake = [[n for n, real in r["rows"] if not real] for r in res]
    assert fake == [[16, 8], [16]]  # global batches 0, 2 on rank 0; batch 1 on rank 1: 40 rows exactly once
    assert single["out"]["rfd_fmnist"] > 0.1  # a non-trivial distance
    for r in res:
        assert set(r["out"]) == set(single["out"])
        for k, v in single["out"].items():
            assert r["out"][k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
