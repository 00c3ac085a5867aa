"""Reliability: what `validate` accepts `run` can run, names that cannot leave the results directory,
bounded resources, a full disk and broken stores, edited cell specs (docs/reliability.md).

Each input must give exit 2 with one line naming the file and field, no traceback, nothing written.
"""
from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import main
from params_walk import all_models, unbounded
from reliability_cases import FEWSTEP, LLM, PEFT, SUITES
from test_bad_inputs import BASE, assert_clean_exit_2, fmnist_dir, invoke  # noqa: F401  (fixture)


@pytest.mark.parametrize("text, expected", [pytest.param(t, e, id=i) for i, t, e in SUITES])
def test_refused_by_validate(tmp_path, fmnist_dir, text, expected):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    r, out = invoke("validate", str(p))
    assert_clean_exit_2(r, out, expected)
    assert str(p) in out
    assert sorted(x.name for x in tmp_path.iterdir()) == ["fmnist", "s.yaml"]  # nothing written


@pytest.mark.parametrize("text", [BASE, FEWSTEP, LLM, PEFT], ids=["base", "fewstep", "llm", "peft"])
def test_the_bases_are_valid(tmp_path, fmnist_dir, text):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    r, out = invoke("validate", str(p))
    assert r.exit_code == 0, out


@pytest.mark.parametrize("name", ["t", "fmnist_full", "a.b-c+d_1", "x" * 100, "ci.limit2", "x" * 100 + ".limit5"])
def test_plain_names_pass(name):
    from bench.suite import check_name

    assert check_name(name) == name


# -- every file named after a suite or method stays in the results directory ------------------------
@pytest.mark.parametrize("name", ["..", ".", "../x", "a/../../b", "/etc", "x/" + "y" * 10])
def test_leaderboard_write_refuses_to_leave_results(results_dir, name):
    """Even a suite built in memory (no validation) cannot write outside: the path is resolved and checked."""
    from bench import leaderboard
    from bench.errors import BenchError
    from bench.suite import Suite

    s = Suite.model_construct(name=name)
    board = leaderboard.Leaderboard.__new__(leaderboard.Leaderboard)
    board.suite = s
    before = set(results_dir.parent.rglob("*"))
    if name.startswith("x/"):  # inside: allowed (a nested directory under results/)
        from bench.context import under_results

        assert results_dir.resolve() in under_results(results_dir / name).parents
        return
    with pytest.raises(BenchError, match="results directory"):
        leaderboard.write(board)
    assert set(results_dir.parent.rglob("*")) == before


def test_under_results_resolves_symlinks(results_dir, tmp_path):
    from bench.context import under_results
    from bench.errors import BenchError

    results_dir.mkdir(parents=True)
    (results_dir / "link").symlink_to(tmp_path)
    with pytest.raises(BenchError, match="outside the results directory"):
        under_results(results_dir / "link" / "leaderboard.md")


def test_export_refuses_a_name_path(tmp_path, monkeypatch, fmnist_dir):
    """`bench export` of a suite whose name is a path is refused at validation (the name rule)."""
    p = tmp_path / "s.yaml"
    p.write_text(BASE.replace("name: t\n", "name: '..'\n", 1))
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path / "results"))
    r, out = invoke("export", str(p))
    assert_clean_exit_2(r, out, "name")
    assert not (tmp_path / "results").exists()


# -- bounded resources ------------------------------------------------------------------------------
def test_many_seeds_are_checked_quickly(tmp_path, fmnist_dir):
    p = tmp_path / "s.yaml"
    seeds = list(range(90_000)) + [5]
    p.write_text(BASE.replace("seeds: [0, 1]", f"seeds: {seeds}"))
    t0 = time.perf_counter()
    r, out = invoke("validate", str(p))
    assert_clean_exit_2(r, out, "duplicate seed(s) [5]")
    assert time.perf_counter() - t0 < 30  # quadratic: minutes


def test_workers_capped_at_cores(tmp_path, fmnist_dir, monkeypatch):
    from bench.executors import local

    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path / "results"))
    p = tmp_path / "s.yaml"
    p.write_text(BASE)
    r, out = invoke("run", str(p), "--workers", "1000", "--no-progress")
    assert_clean_exit_2(r, out, "--allow-oversubscribe")
    assert not (tmp_path / "results").exists()
    local.check_workers(1000, allow_oversubscribe=True)  # explicit: allowed
    local.check_workers(local.max_workers())


@pytest.mark.parametrize("uri, expected", [
    ("bogus://x", "unknown scheme"),
    ("file:///tmp/x", "unknown scheme"),
    ("http://127.0.0.1:1", "unreachable"),
    ("http://127.0.0.1:99999", "port"),
])
def test_tracking_uri_refused_before_work(tmp_path, fmnist_dir, monkeypatch, uri, expected):
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path / "results"))
    p = tmp_path / "s.yaml"
    p.write_text(BASE)
    t0 = time.perf_counter()
    r, out = invoke("run", str(p), "--tracking-uri", uri, "--no-progress")
    assert_clean_exit_2(r, out, expected)
    assert time.perf_counter() - t0 < 15
    assert not (tmp_path / "results").exists()


def test_unresponsive_server_times_out(monkeypatch):
    """A server that never accepts (a black-holed address) is given up after CONNECT_TIMEOUT_S."""
    import socket

    from bench import tracking
    from bench.errors import BenchError

    def hang(addr, timeout=None):
        assert timeout is not None and timeout <= 10  # a bounded wait, never the OS default
        raise socket.timeout("timed out")

    monkeypatch.setattr(socket, "create_connection", hang)
    with pytest.raises(BenchError, match="unreachable"):
        tracking.check_uri("http://10.255.255.1:5000")


@pytest.mark.parametrize("kind", ["fifo", "devnull", "devzero"])
def test_non_regular_suite_files(tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "s.yaml"
        os.mkfifo(path)
    else:
        path = Path("/dev/null" if kind == "devnull" else "/dev/zero")
    t0 = time.perf_counter()
    r, out = invoke("validate", str(path))
    assert_clean_exit_2(r, out, "not a regular file")
    assert time.perf_counter() - t0 < 5


def test_empty_results_dir_variable(tmp_path, fmnist_dir, monkeypatch):
    monkeypatch.setenv("BENCH_RESULTS_DIR", "")
    p = tmp_path / "s.yaml"
    p.write_text(BASE)
    r, out = invoke("leaderboard", str(p))
    assert_clean_exit_2(r, out, "BENCH_RESULTS_DIR is set but empty")


def test_leaderboard_of_a_suite_never_run(tmp_path, fmnist_dir, monkeypatch):
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    p = tmp_path / "s.yaml"
    p.write_text(BASE)
    r, out = invoke("leaderboard", str(p))
    assert_clean_exit_2(r, out, "has no runs")
    assert not (tmp_path / "results" / "mlflow.db").exists()
    r, out = invoke("export", str(p))
    assert_clean_exit_2(r, out, "has no runs")


def test_leaderboard_output_into_a_missing_directory(tmp_path, fmnist_dir, monkeypatch):
    from bench.tracking import Tracker

    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path / "results"))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    Tracker(uri).experiment_id("t")  # the suite's experiment exists (its runs may all have failed)
    p = tmp_path / "s.yaml"
    p.write_text(BASE)
    out_file = tmp_path / "new" / "dir" / "board.md"
    r, out = invoke("leaderboard", str(p), "--format", "md", "--output", str(out_file), "--tracking-uri", uri)
    assert r.exit_code == 0, out
    assert out_file.is_file()


# -- full disk and broken stores --------------------------------------------------------------------
def _fail_creation(exc):
    def client(*a, **k):
        uri = k.get("tracking_uri") or a[0]
        Path(uri.removeprefix("sqlite:///")).write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)  # half-made
        raise exc
    return client


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"),
                                 __import__("sqlite3").OperationalError("database or disk is full")],
                         ids=["enospc", "sqlite-full"])
def test_full_disk_at_store_creation(tmp_path, monkeypatch, exc):
    """One clear error naming the directory; no half-made store left; the next command creates it."""
    from bench import tracking
    from bench.errors import BenchError

    d = tmp_path / "results"
    real = tracking.MlflowClient
    monkeypatch.setattr(tracking, "MlflowClient", _fail_creation(exc))
    with pytest.raises(BenchError, match=f"no space left on the device of {d}"):
        tracking.Tracker(f"sqlite:///{d / 'mlflow.db'}")
    assert sorted(p.name for p in d.iterdir() if not p.name.endswith(".lock")) == []  # nothing half-made
    monkeypatch.setattr(tracking, "MlflowClient", real)
    t = tracking.Tracker(f"sqlite:///{d / 'mlflow.db'}")  # space freed: the store is created, usable
    assert t.experiment_id("x")


def test_full_disk_on_the_cli_is_one_line(tmp_path, fmnist_dir, monkeypatch):
    from bench import tracking

    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(tracking, "MlflowClient", _fail_creation(OSError(errno.ENOSPC, "No space left on device")))
    p = tmp_path / "s.yaml"
    p.write_text(BASE)
    r, out = invoke("run", str(p), "--workers", "1", "--no-progress")
    assert_clean_exit_2(r, out, "no space left on the device of")
    assert str(tmp_path / "results") in out
    assert not (tmp_path / "results" / "mlflow.db").exists()


@pytest.mark.parametrize("content, expected", [
    (b"", "empty file (0 bytes)"),
    (b"SQLite format 3\x00" + b"\x07" * 4000, "damaged"),
    (b"hello, not a database\n" * 10, "not an sqlite database"),
], ids=["zero-byte", "corrupt", "not-sqlite"])
def test_doctor_reports_a_broken_store_without_touching_it(tmp_path, monkeypatch, content, expected):
    db = tmp_path / "mlflow.db"
    db.write_bytes(content)
    before = sorted(p.name for p in tmp_path.iterdir())
    for args in (["doctor"], ["doctor", "--fix"]):
        r, out = invoke(*args, "--tracking-uri", f"sqlite:///{db}", "--cache-dir", str(tmp_path / "cache"))
        assert r.exit_code == 1, out
        assert "BROKEN" in out and expected in out and "Traceback" not in out, out
        assert db.read_bytes() == content  # not modified
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    r, out = invoke("leaderboard", "ci", "--tracking-uri", f"sqlite:///{db}")  # other commands: one line, exit 2
    assert_clean_exit_2(r, out, expected)
    assert db.read_bytes() == content


# -- cell specs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("edit", [{"seed": 1}, {"seed": 7}, {"label": "x"}, {"suite": "other"}, {"baseline": True}])
def test_edited_cell_spec_refused(tmp_path, fmnist_dir, edit):
    import json

    from bench.plan import resolve

    p = tmp_path / "s.yaml"
    p.write_text(BASE)
    spec = resolve(str(p), methods=["vcq"], seeds=[0]).cells[0]
    d = json.loads(spec.to_json())
    d.update(edit)
    f = tmp_path / "cell.json"
    f.write_text(json.dumps(d))
    r, out = invoke("run-cell", str(f), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
    assert_clean_exit_2(r, out, "spec_hash")
    assert not (tmp_path / "m.db").exists()


@pytest.mark.parametrize("seed", [-1, 2**64])
def test_cell_spec_seed_out_of_range(tmp_path, fmnist_dir, seed):
    import json

    from bench.plan import resolve

    p = tmp_path / "s.yaml"
    p.write_text(BASE)
    d = json.loads(resolve(str(p), methods=["vcq"], seeds=[0]).cells[0].to_json())
    d["seed"] = seed
    d.pop("spec_hash")  # even a spec without the full hash (written before it existed)
    f = tmp_path / "cell.json"
    f.write_text(json.dumps(d))
    r, out = invoke("run-cell", str(f), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
    assert_clean_exit_2(r, out, "seed")
    assert not (tmp_path / "m.db").exists()


# -- every numeric field has a bound or a stated reason -----------------------------------------------
REASONS = {
    "seed": "a generator seed: any integer names a stream",
    "seeds": "the suite's seeds: bounded to [0, 2^63-1] and distinct by Suite._seeds",
    "steps": "a list of NFEs: each 1..MAX_NFE, distinct, by the field's validator",
    "method_steps": "per-method NFE lists: each 1..MAX_NFE, distinct, by the field's validator",
    "ks": "probe lengths: each >= 1 (Annotated) or 'all', distinct; <= L checked by plan_checks",
    "temperatures": "each in (0, MAX_TEMPERATURE], distinct, by the field's validator",
    "init": "the initial gain of head-wise RMSNorm: any real (0 and negative values are ablations)",
}


def _reason(path: str) -> str | None:
    leaf = path.rsplit(".", 1)[-1]
    return REASONS.get(leaf) or (REASONS["seed"] if leaf.endswith("_seed") else None)


def test_every_numeric_field_is_bounded_or_explained():
    flagged = [p for where, m in all_models() for p in unbounded(m, where) if _reason(p) is None]
    assert not flagged, "numeric fields with neither a bound nor a reason:\n" + "\n".join(flagged)


def test_the_walk_flags_an_unbounded_field():
    from pydantic import BaseModel, Field

    class Inner(BaseModel):
        width: int = 3
        ok: int = Field(3, ge=1)
        why: float = Field(0.0, json_schema_extra={"unbounded": "any offset"})

    class P(BaseModel):
        inner: Inner = Inner()
        lr: float | None = None
        sizes: list[int] = []

    assert unbounded(P, "P") == ["P.inner.width", "P.lr", "P.sizes"]


# --- a full disk anywhere in a command: one line, exit 2, no traceback -----------------------------

@pytest.mark.parametrize("fault", ["enospc", "sqlite"])
def test_a_full_disk_anywhere_is_one_clear_error(monkeypatch, tmp_path, fault):
    import errno
    import sqlite3

    from click.testing import CliRunner

    import bench.plan
    from bench.cli import main

    target = tmp_path / "results" / "fmnist" / "leaderboard.md"

    def full(*a, **kw):
        if fault == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as e:
            raise RuntimeError("(sqlite3.OperationalError) while logging a metric") from e  # wrapped, as MLflow does

    monkeypatch.setattr(bench.plan, "resolve", full)
    r = CliRunner().invoke(main, ["validate", "fmnist"])
    assert r.exit_code == 2 and "no space left on the device" in r.output and "Traceback" not in r.output, r.output
    if fault == "enospc":
        assert str(target) in r.output and "MB free" in r.output


def test_other_errors_are_not_taken_for_a_full_disk(monkeypatch):
    from click.testing import CliRunner

    import bench.plan
    from bench.cli import main

    monkeypatch.setattr(bench.plan, "resolve", lambda *a, **kw: (_ for _ in ()).throw(RuntimeError("boom")))
    r = CliRunner().invoke(main, ["validate", "fmnist"])
    assert r.exit_code == 1 and isinstance(r.exception, RuntimeError)
