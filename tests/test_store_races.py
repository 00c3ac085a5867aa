"""Several processes on one sqlite store and one cache; corrupt cache entries; ``bench doctor``.

The race tests start real processes (``subprocess``) that wait on a common start signal, so they
hit the store's creation and the cache's writes at the same moment.
"""
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from bench.context import Cache, checksum_path

K = 4
REPO = Path(__file__).resolve().parents[1]


def _spawn(tmp_path: Path, code: str, k: int = K, imports: str = "import bench.tracking", timeout: float = 120) -> list[dict]:
    """Run ``code`` in ``k`` processes released together once all have imported ``imports``;
    each prints one JSON line (its result)."""
    go = tmp_path / "go"
    prelude = textwrap.dedent(f"""
        import json, os, pathlib, sys, time
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
        {imports}
        WORKER = int(sys.argv[1])
        pathlib.Path({str(tmp_path)!r}, f"ready-{{WORKER}}").touch()
        while not os.path.exists({str(go)!r}):
            time.sleep(0.005)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", prelude + textwrap.dedent(code), str(i)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(k)]
    deadline = time.monotonic() + timeout
    while len(list(tmp_path.glob("ready-*"))) < k and time.monotonic() < deadline and all(p.poll() is None for p in procs):
        time.sleep(0.05)
    go.touch()  # all at once
    results = []
    for p in procs:
        out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        results.append({"rc": p.returncode, "stderr": err, **(json.loads(out.strip().splitlines()[-1]) if out.strip() else {})})
    return results


def test_k_processes_on_a_fresh_store(tmp_path):
    """K processes open a fresh sqlite store, get-or-create one experiment and log a run: all succeed."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    t0 = time.monotonic()
    results = _spawn(tmp_path, f"""
        from bench.tracking import TAG, Tracker
        t = Tracker({uri!r})
        exp = t.experiment_id("race")
        run = t.start(exp, f"w{{WORKER}}", {{TAG + "kind": "cell", TAG + "seed": WORKER}})
        t.log_metrics(run, {{"x": float(WORKER)}})
        t.end(run)
        print(json.dumps({{"exp": exp, "run": run}}))
    """)
    elapsed = time.monotonic() - t0
    assert [r["rc"] for r in results] == [0] * K, "\n".join(r["stderr"][-2000:] for r in results)
    assert len({r["exp"] for r in results}) == 1  # one experiment, whoever created it
    from bench.tracking import Tracker

    t = Tracker(uri)  # the store is usable afterwards
    exp = t.experiment_id("race", create=False)
    runs = t.cell_runs(exp)
    assert sorted(r.data.tags["bench.seed"] for r in runs) == [str(i) for i in range(K)]
    assert all(r.data.metrics["x"] == float(r.data.tags["bench.seed"]) for r in runs)
    assert len({r.data.tags["bench.pid"] for r in runs}) == K and str(os.getpid()) not in {r.data.tags["bench.pid"] for r in runs}
    assert elapsed < 120


def test_experiment_created_by_another_process(tracking_uri, monkeypatch):
    """create_experiment saying "already exists" means another process won: use its experiment."""
    from bench.tracking import Tracker

    t = Tracker(tracking_uri)
    first = t.experiment_id("s")
    monkeypatch.setattr(t.client, "get_experiment_by_name",
                        lambda name, _real=t.client.get_experiment_by_name, _n=[0]: (
                            None if (_n.__setitem__(0, _n[0] + 1) or _n[0] == 1) else _real(name)))
    assert t.experiment_id("s") == first


def test_k_processes_save_and_load_one_key(tmp_path):
    """K processes save and load the same key at once: no corrupt load, no exception, no torn entry."""
    root = tmp_path / "cache"
    N = 15
    results = _spawn(tmp_path, imports="import torch; torch.set_num_threads(1); import bench.context", code=f"""
        import torch
        from bench.context import Cache
        c = Cache(__import__("pathlib").Path({str(root)!r}))
        bad = loaded = 0
        for i in range({N}):
            c.save_torch("race", "k", {{"writer": WORKER, "x": torch.full((50_000,), float(WORKER))}})
            obj = c.load_torch("race", "k")
            if obj is None:
                bad += 1
                continue
            loaded += 1
            if not bool((obj["x"] == float(obj["writer"])).all()):
                bad += 1
        print(json.dumps({{"bad": bad, "loaded": loaded}}))
    """)
    assert [r["rc"] for r in results] == [0] * K, "\n".join(r["stderr"][-2000:] for r in results)
    assert sum(r["bad"] for r in results) == 0
    assert sum(r["loaded"] for r in results) == N * K
    assert not any("corrupt" in r["stderr"] for r in results), [r["stderr"] for r in results]
    assert not list(root.rglob("*.tmp"))  # no temporaries left behind
    obj = Cache(root).load_torch("race", "k")
    assert bool((obj["x"] == float(obj["writer"])).all())


def _get(cache: Cache, computed: list) -> dict:
    """The adapters' pattern: load, else compute and save."""
    hit = cache.load_torch("tokenizer", "abc")
    if hit is not None:
        return hit
    computed.append(1)
    obj = {"state": torch.arange(10_000, dtype=torch.float32)}
    cache.save_torch("tokenizer", "abc", obj)
    return obj


def test_truncated_entry_is_named_and_recomputed(cache, capfd):
    computed = []
    _get(cache, computed)
    p = cache.path("tokenizer", "abc")
    assert checksum_path(p).read_text().split() == [__import__("hashlib").sha256(p.read_bytes()).hexdigest(), p.name]
    assert len(computed) == 1 and torch.equal(_get(cache, computed)["state"], torch.arange(10_000.0))
    assert len(computed) == 1  # a hit
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])  # truncated
    capfd.readouterr()
    again = _get(cache, computed)
    err = capfd.readouterr().err
    assert str(p) in err and "corrupt" in err and "recomputed" in err
    assert len(computed) == 2 and torch.equal(again["state"], torch.arange(10_000.0))
    assert len(computed) == 2 and torch.equal(_get(cache, computed)["state"], torch.arange(10_000.0))  # fixed for good
    assert "corrupt" not in capfd.readouterr().err


def test_flipped_byte_is_detected(cache, capfd):
    cache.save_torch("k", "x", {"a": torch.ones(1000)})
    p = cache.path("k", "x")
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF
    p.write_bytes(bytes(b))
    assert cache.load_torch("k", "x") is None
    assert str(p) in capfd.readouterr().err
    assert cache.problem(p) is not None


def test_entry_without_checksum(cache, capfd):
    """Entries written before checksums: loaded if they load (and their checksum recorded), else recomputed."""
    good = cache.path("k", "old")
    torch.save({"a": torch.ones(3)}, good)
    assert torch.equal(cache.load_torch("k", "old")["a"], torch.ones(3))
    assert checksum_path(good).exists() and cache.problem(good) is None
    bad = cache.path("k", "old-truncated")
    torch.save({"a": torch.ones(3000)}, bad)
    bad.write_bytes(bad.read_bytes()[:500])
    capfd.readouterr()
    assert cache.load_torch("k", "old-truncated") is None
    assert str(bad) in capfd.readouterr().err
    assert not checksum_path(bad).exists()
    assert "does not load" in cache.problem(bad)


class NotAllowed:
    """Not a weights_only type."""


def test_weights_only_is_kept(cache):
    cache.save_torch("k", "obj", {"f": NotAllowed()})
    with pytest.raises(RuntimeError, match="cache entry .*obj.pt"):
        cache.load_torch("k", "obj")


def test_doctor_marks_dead_runs_failed_and_deletes_corrupt_entries(tmp_path, tracking_uri, cache):
    from bench.cli import main
    from bench.tracking import TAG, Tracker

    # a real process that starts a run, then dies without ending it
    code = textwrap.dedent(f"""
        import os
        from bench.tracking import TAG, Tracker
        t = Tracker({tracking_uri!r})
        run = t.start(t.experiment_id("s"), "dies", {{TAG + "kind": "cell"}})
        print(run, flush=True)
        os._exit(9)
    """)
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true"})
    dead = p.stdout.strip().splitlines()[-1]
    t = Tracker(tracking_uri)
    alive = t.start(t.experiment_id("s"), "alive", {f"{TAG}kind": "cell"})  # this process: alive
    other = t.start(t.experiment_id("s"), "elsewhere", {f"{TAG}kind": "suite", f"{TAG}host": "another-host"})
    assert t.client.get_run(dead).data.tags[f"{TAG}pid"] != str(os.getpid())

    cache.save_torch("k", "good", {"a": torch.ones(3)})
    cache.save_torch("k", "bad", {"a": torch.ones(3000)})
    bad = cache.path("k", "bad")
    bad.write_bytes(bad.read_bytes()[:100])
    tmp = bad.with_name(bad.name + ".12345-0123abcd.tmp")
    tmp.write_bytes(b"x")
    os.utime(tmp, (time.time() - 3600, time.time() - 3600))

    args = ["doctor", "--tracking-uri", tracking_uri, "--cache-dir", str(cache.root)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1, r.output
    assert f"STALE cell  {dead}" in r.output and "1 stale RUNNING run" in r.output
    assert alive not in r.output
    assert other in r.output and "cannot tell" in r.output
    assert f"CORRUPT {bad}" in r.output and "2 entries checked, 1 corrupt, 1 stale temporaries" in r.output

    r = CliRunner().invoke(main, args + ["--fix"])
    assert r.exit_code == 0, r.output
    run = t.client.get_run(dead)
    assert run.info.status == "FAILED" and "is gone" in run.data.tags[f"{TAG}error"]
    assert t.client.get_run(alive).info.status == "RUNNING"
    assert t.client.get_run(other).info.status == "RUNNING"
    assert not bad.exists() and not checksum_path(bad).exists() and not tmp.exists()
    assert cache.load_torch("k", "good") is not None

    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and "0 stale RUNNING run" in r.output and "0 corrupt" in r.output
