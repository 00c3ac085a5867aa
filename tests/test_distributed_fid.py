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


def _ranks(tmp_path, script_args, extra_env=None):
    port = _free_port()
    out = tmp_path / "res"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(PLUGINS)]), "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           **(extra_env or {})}
    procs = [subprocess.Popen([sys.executable, str(PLUGINS / "genbench_dist_cell.py"), str(out), *script_args],
                              cwd=REPO, env={**env, "RANK": str(r)}, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    errs = [p.communicate(timeout=240)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(e[-3000:] for e in errs)
    return [json.loads(Path(f"{out}.{r}").read_text()) for r in range(2)]


def test_sharded_sampling_on_two_gloo_ranks_equals_one_process(tmp_path, monkeypatch):
    """gFD under a 2-rank gloo group: each rank calls adapter.sample only for its global batches (16 + 8
    and 16 of 40 images, seeds batch_seed(7, b)), the gathered pool is exactly the 40 images of one
    process drawing the same batches ($BENCH_SAMPLE_BATCH), gFD equals within 1e-9, the NFE is summed.
    Without $BENCH_SAMPLE_BATCH one process keeps the one-call path (n=40, seed 7)."""
    import genbench_dist_cell as cell

    from bench.distributed import batch_seed

    monkeypatch.delenv("BENCH_SAMPLE_BATCH", raising=False)
    legacy = cell.compute_gen(str(tmp_path / "legacy"))
    assert legacy["calls"] == [[cell.N, 7]] and legacy["nfe"] == 1.0  # unchanged one-process path
    monkeypatch.setenv("BENCH_SAMPLE_BATCH", "16")
    single = cell.compute_gen(str(tmp_path / "single"))
    seeds = [batch_seed(7, b) for b in range(3)]
    assert single["calls"] == [[16, seeds[0]], [16, seeds[1]], [8, seeds[2]]] and single["n"] == cell.N
    assert single["sha"] != legacy["sha"]  # the batched images are other draws than the one call's
    res = _ranks(tmp_path, ["gen"], {"BENCH_SAMPLE_BATCH": "16"})
    assert [r["calls"] for r in res] == [[[16, seeds[0]], [8, seeds[2]]], [[16, seeds[1]]]]  # each its batches
    assert single["out"]["gfd_fmnist"] > 0.1  # a non-trivial distance
    for r in res:
        assert r["n"] == cell.N and r["sha"] == single["sha"]  # exactly n images, the one-process images
        assert r["nfe"] == 1.0  # 40 evaluations over the two ranks / 40 images
        assert set(r["out"]) == set(single["out"])
        for k, v in single["out"].items():
            assert abs(r["out"][k] - v) <= 1e-9 * max(1.0, abs(v)), (k, r["out"][k], v)


DIST_SUITE = Path(__file__).parent / "suites" / "dist_toy.yaml"


def _torchrun(tmp_path, spec, uri, **extra):
    """`bench run-cell SPEC` as 2 torchrun processes (gloo); returns (exit code, output, seconds)."""
    import time

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(PLUGINS)]), "OMP_NUM_THREADS": "1",
           "GLOO_SOCKET_IFNAME": "lo", "MLFLOW_DISABLE_TELEMETRY": "true", "BENCH_SAMPLE_BATCH": "16",
           "BENCH_DIST_TIMEOUT": "120", **extra}
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                        "127.0.0.1", "--master_port", str(_free_port()), "-m", "bench.cli", "--results-dir",
                        str(tmp_path / "results-torchrun"), "run-cell", str(spec), "--tracking-uri", uri,
                        "--no-progress"], cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    return p.returncode, p.stdout + p.stderr, time.monotonic() - t0


def _dist_spec(tmp_path):
    from bench.plan import resolve

    return resolve(str(DIST_SUITE)).write(tmp_path / "plan")[0]


def _runs(uri):
    from bench.tracking import Tracker

    t = Tracker(uri)
    return t.client.search_runs([t.experiment_id("dist_toy", create=False)], max_results=100)


def test_run_cell_under_torchrun_logs_one_run_equal_to_one_process(tmp_path, monkeypatch):
    """`torchrun --nproc_per_node 2 -m bench.cli run-cell SPEC`: one FINISHED run (rank 0's), whose metrics
    equal a one-process `bench run-cell` of the same spec ($BENCH_SAMPLE_BATCH=16 for both); rank 0 trained,
    rank 1 loaded from the cache; the sample batches were split between the two processes."""
    from click.testing import CliRunner

    from bench.cli import main

    spec = _dist_spec(tmp_path)
    monkeypatch.setenv("BENCH_SAMPLE_BATCH", "16")
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path / "results-one"))
    one_uri = f"sqlite:///{tmp_path / 'one.db'}"
    r = CliRunner().invoke(main, ["run-cell", str(spec), "--tracking-uri", one_uri, "--no-progress"])
    assert r.exit_code == 0, r.output
    markers = tmp_path / "markers"
    markers.mkdir()
    uri = f"sqlite:///{tmp_path / 'dist.db'}"
    rc, out, _ = _torchrun(tmp_path, spec, uri, GENBENCH_DIST_MARKERS=str(markers))
    assert rc == 0, out[-5000:]
    [one], runs = _runs(one_uri), _runs(uri)
    assert [x.info.status for x in runs] == ["FINISHED"], out[-3000:]  # exactly one run: rank 1 logged nothing
    run = runs[0]
    assert run.data.tags["bench.world_size"] == "2" and run.data.tags["bench.sampling"] == "batched:16"
    assert run.data.tags["bench.config_hash"] == one.data.tags["bench.config_hash"]
    got = {k: v for k, v in run.data.metrics.items() if k != "cell_seconds" and not k.startswith("time_")}
    want = {k: v for k, v in one.data.metrics.items() if k != "cell_seconds" and not k.startswith("time_")}
    assert {"rfd_fmnist", "gfd_fmnist", "nfe"} <= set(want) and want["gfd_fmnist"] > 1.0
    assert set(got) == set(want)
    for k, v in want.items():
        assert abs(got[k] - v) <= 1e-9 * max(1.0, abs(v)), (k, got[k], v)
    did = {f.name.rsplit(".", 1)[0] for f in markers.iterdir()}
    assert {"prepare.0.trained", "prepare.1.loaded"} <= did and not {"prepare.1.trained", "prepare.0.loaded"} & did
    # 40 samples in global batches of 16: batches 0 and 2 on rank 0, batch 1 on rank 1
    assert sorted(d.split(".")[1:3] for d in did if d.startswith("sample.")) == [["0", "16"], ["0", "8"], ["1", "16"]]


def test_run_cell_under_torchrun_fails_fast_when_a_rank_fails(tmp_path):
    """rank 1's sample raises: torchrun exits non-zero well within the collective timeout, and the cell
    has no FINISHED run and none left RUNNING by a live process."""
    uri = f"sqlite:///{tmp_path / 'dist.db'}"
    rc, out, secs = _torchrun(tmp_path, _dist_spec(tmp_path), uri, GENBENCH_DIST_FAIL_RANK="1")
    assert rc != 0 and "sample fails on rank 1" in out, out[-5000:]
    assert secs < 110, secs  # did not wait for BENCH_DIST_TIMEOUT (120 s)
    runs = _runs(uri)
    assert len(runs) == 1 and runs[0].info.status in ("FAILED", "KILLED"), (
        [(x.info.status, x.data.tags.get("bench.error")) for x in runs], out[-3000:])


def test_sample_batch_env_is_checked(monkeypatch):
    from bench.errors import MetricError
    from bench.inputs import sample_batch

    monkeypatch.delenv("BENCH_SAMPLE_BATCH", raising=False)
    assert sample_batch() is None  # one process: the one-call path
    monkeypatch.setenv("BENCH_SAMPLE_BATCH", "32")
    assert sample_batch() == 32
    for bad in ("0", "-3", "many"):
        monkeypatch.setenv("BENCH_SAMPLE_BATCH", bad)
        with pytest.raises(MetricError, match="BENCH_SAMPLE_BATCH"):
            sample_batch()
