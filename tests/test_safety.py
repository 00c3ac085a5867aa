"""Safety: nothing loaded from disk runs code; escaped outputs; `bench ui` shuts down cleanly;
a results location of the user's choosing (``--results-dir`` / ``BENCH_RESULTS_DIR``)."""
from __future__ import annotations

import hashlib
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from loopback import answers, free_port

REPO = Path(__file__).resolve().parents[1]


class _Planted:
    """Unpickling this touches ``marker``: the proof that a loader ran code from a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# --- CIFAR-10: md5 before unpickling, and an unpickler that only builds data -------------------

def _fake_batch(n: int = 4, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"fake", b"labels": [int(x) for x in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}


def _fake_cifar(root: Path, monkeypatch, md5s: bool = True) -> Path:
    from bench.data import folders

    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        (d / name).write_bytes(pickle.dumps(_fake_batch(seed=i), protocol=2))
    if md5s:
        table = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in d.iterdir()}
        monkeypatch.setattr(folders, "CIFAR10_MD5", table)
    return d


def test_cifar_loads_verified_fake_batches(tmp_path, monkeypatch):
    from bench.data.folders import CIFAR10

    _fake_cifar(tmp_path, monkeypatch)
    ds = CIFAR10.load(SimpleNamespace(root=str(tmp_path)))
    assert tuple(ds.train.images.shape) == (20, 3, 32, 32) and tuple(ds.test.images.shape) == (4, 3, 32, 32)
    assert ds.test.labels.tolist() == _fake_batch(seed=5)[b"labels"]


def test_cifar_checksum_mismatch_names_the_file_and_unpickles_nothing(tmp_path, monkeypatch):
    from bench.data.folders import CIFAR10, DatasetCorrupt

    d = _fake_cifar(tmp_path, monkeypatch, md5s=False)  # the published md5s: fake files never match
    marker = tmp_path / "ran"
    (d / "data_batch_1").write_bytes(pickle.dumps({b"data": _Planted(marker)}))
    with pytest.raises(DatasetCorrupt, match=r"data_batch_1 has md5 [0-9a-f]{32}, expected c99cafc1"):
        CIFAR10.load(SimpleNamespace(root=str(tmp_path)))
    assert not marker.exists()


def test_cifar_stand_in_declares_its_own_checksums_and_they_are_still_checked(tmp_path, monkeypatch):
    from bench.data.folders import CIFAR10, DatasetCorrupt

    d = _fake_cifar(tmp_path, monkeypatch, md5s=False)  # the published table stays in force
    sums = tmp_path / "checksums.md5"
    sums.write_text("".join(f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.name}\n" for p in sorted(d.iterdir())))
    monkeypatch.setenv("CIFAR10_CHECKSUMS", str(sums))
    assert tuple(CIFAR10.load(SimpleNamespace(root=str(tmp_path))).train.images.shape) == (20, 3, 32, 32)
    (d / "test_batch").write_bytes(pickle.dumps(_fake_batch(seed=9), protocol=2))  # not the listed file
    with pytest.raises(DatasetCorrupt, match=r"test_batch has md5 .* listed in .*checksums\.md5 \(CIFAR10_CHECKSUMS\)"):
        CIFAR10.load(SimpleNamespace(root=str(tmp_path)))
    monkeypatch.setenv("CIFAR10_CHECKSUMS", str(tmp_path / "absent.md5"))
    with pytest.raises(Exception, match=r"CIFAR10_CHECKSUMS=.*absent\.md5: no such file"):
        CIFAR10.load(SimpleNamespace(root=str(tmp_path)))


def test_restricted_unpickler_refuses_code_even_with_a_matching_md5(tmp_path, monkeypatch):
    from bench.data.folders import CIFAR10, DatasetCorrupt, load_data_pickle

    d = _fake_cifar(tmp_path, monkeypatch)
    marker = tmp_path / "ran"
    evil = pickle.dumps({b"data": _Planted(marker), b"labels": []})
    with pytest.raises(DatasetCorrupt, match=r"global posix\.system is not allowed"):
        load_data_pickle(evil, "evil")
    (d / "test_batch").write_bytes(evil)
    from bench.data import folders

    monkeypatch.setitem(folders.CIFAR10_MD5, "test_batch", hashlib.md5(evil).hexdigest())
    with pytest.raises(DatasetCorrupt, match="test_batch: not a plain-data pickle"):
        CIFAR10.load(SimpleNamespace(root=str(tmp_path)))
    assert not marker.exists()
    for proto in (2, 4, 5):  # what numpy arrays pickle to, under every protocol
        out = load_data_pickle(pickle.dumps(_fake_batch(), protocol=proto), "ok")
        assert np.array_equal(out[b"data"], _fake_batch()[b"data"])


def test_cifar_md5_table_is_torchvisions():
    from torchvision.datasets import CIFAR10 as TV

    from bench.data.folders import CIFAR10_MD5

    published = dict(TV.train_list + TV.test_list) | {TV.meta["filename"]: TV.meta["md5"]}
    assert CIFAR10_MD5 == published


# --- escaped leaderboards ------------------------------------------------------------------------

EVIL = "<img src=x onerror=alert(1)> [click](http://e.x) **b** | x"


def _board():
    from bench.leaderboard import Leaderboard, Row
    from bench.metrics.base import Column

    suite = SimpleNamespace(name="s<b>", description="<script>alert(1)</script>\n- not a list\n# not a heading")
    rows = [Row("=HYPERLINK(\"http://e.x\",\"hi\")", "@SUM(A1)", True, "h", [0], ["r"], {"m": [-1.5]}),
            Row(EVIL, "+1+cmd|' /C calc'!A0", False, "h2", [0], ["r2"], {"m": [2.0]})]
    claims = [SimpleNamespace(name="<b>n</b>", paper="-2+3 [p](http://e.x)", assertion="|m(a) - m(b)| < 1",
                              verdict="supported", detail="<i>d</i> | e")]
    return Leaderboard(suite, {"m": Column("metric", False)}, rows, claims)


def test_markdown_escapes_user_strings():
    from bench.board_tables import md_escape, to_markdown

    md = to_markdown(_board())
    for raw in ("<script>", "<img", "<b>", "<i>", "[click](", "**b**", "[p]("):
        assert raw not in md, raw
    assert "&lt;script&gt;" in md and "\\- not a list" in md and "\\# not a heading" in md
    assert "`\\|m(a) - m(b)\\| < 1`" in md  # the assertion stays a code span; |x| does not end the cell
    row = next(ln for ln in md.splitlines() if "onerror" in ln)
    assert row.replace("\\|", "").count("|") == 4  # method, seeds, m: no extra cell from the name
    assert md_escape("a_b*c") == "a\\_b\\*c" and md_escape("plain text 1.5") == "plain text 1.5"


def test_html_escapes_user_strings():
    from bench.board_html import render as to_html

    page = to_html(_board(), ["fig'.png"])
    for raw in ("<img src=x", "<b>n</b>", "<i>d</i>", "s<b>", "fig'.png"):
        assert raw not in page, raw


def test_csv_neutralises_formulas_but_not_numbers():
    import csv
    import io

    from bench.board_tables import csv_safe, to_csv

    cells = [c for row in csv.reader(io.StringIO(to_csv(_board()))) for c in row]
    assert "'=HYPERLINK(\"http://e.x\",\"hi\")" in cells and "'@SUM(A1)" in cells
    assert "'+1+cmd|' /C calc'!A0" in cells and "'-2+3 [p](http://e.x)" in cells
    assert "-1.5" in cells  # a real negative number is left alone
    assert not any(c and c[0] in "=+-@" and not _is_number(c) for c in cells)
    assert csv_safe(-2.0) == -2.0 and csv_safe("-3e-2") == "-3e-2" and csv_safe("-x") == "'-x"


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


# --- converted Inception weights: never unpickled from the cache ---------------------------------

@pytest.fixture(scope="module")
def weights():
    from bench.metrics.inception import InceptionWeightsMissing, weights_path

    try:
        return weights_path()
    except InceptionWeightsMissing as e:
        pytest.skip(f"TF-Inception FID weights absent: {e}")


def test_planted_inception_pickle_is_never_loaded(weights, tmp_path):
    import torch

    from bench.context import Cache
    from bench.metrics import inception

    cache = Cache(tmp_path / "cache")
    marker = tmp_path / "ran"
    pt = cache.path("inception", inception._cache_stem())
    torch.save({"x": _Planted(marker)}, pt)  # what someone with write access to the cache could leave
    inception._extractor.cache_clear()
    model = inception.load_extractor("cpu", cache)
    assert not marker.exists()
    st = pt.with_suffix(".safetensors")
    assert st.is_file()
    from safetensors.torch import load_file

    ref = load_file(str(st))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ref.items())

    path = inception.converted_weights_path(cache)  # the path API replaces the planted file first
    assert path == pt and not marker.exists()
    got = torch.load(path, map_location="cpu", weights_only=True)
    assert set(got) == set(ref) and all(torch.equal(got[k], ref[k]) for k in ref)
    inception._extractor.cache_clear()


def test_stale_safetensors_is_converted_again(weights, tmp_path):
    import torch
    from safetensors.torch import save_file

    from bench.context import Cache
    from bench.metrics import inception

    cache = Cache(tmp_path / "cache")
    st = cache.path("inception", inception._cache_stem(), ext="safetensors")
    save_file({"x": torch.zeros(1)}, str(st), metadata={"converter": "0"})
    assert "fc.weight" in inception.converted_state_dict(cache)


# --- results location ----------------------------------------------------------------------------

def test_results_dir_is_resolved_at_call_time(tmp_path, monkeypatch):
    import bench.context
    from bench import leaderboard, tracking
    from bench.context import Cache, results_dir

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(bench.context, "RESULTS_DIR", bench.context.REPO_ROOT / "results")
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path / "r"))
    assert results_dir() == tmp_path / "r"
    assert Cache().root == tmp_path / "r" / "cache"
    assert tracking.default_tracking_uri() == f"sqlite:///{(tmp_path / 'r' / 'mlflow.db').resolve()}"
    assert tracking.artifact_root("http://x").startswith((tmp_path / "r").resolve().as_uri())
    board = _board()
    board.suite.name = "s"
    monkeypatch.setattr(leaderboard, "make_figures", lambda b, d: [])
    assert leaderboard.write(board)["md"] == tmp_path / "r" / "s" / "leaderboard.md"
    monkeypatch.delenv("BENCH_RESULTS_DIR")
    assert results_dir() == bench.context.REPO_ROOT / "results"


def test_results_dir_option_sets_the_variable(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import bench.context
    from bench.cli import main
    from bench.context import results_dir

    monkeypatch.setenv("BENCH_RESULTS_DIR", "unused")  # the option writes os.environ: undone at teardown
    monkeypatch.setattr(bench.context, "RESULTS_DIR", bench.context.REPO_ROOT / "results")
    r = CliRunner().invoke(main, ["--results-dir", str(tmp_path / "x"), "list", "datasets"])
    assert r.exit_code == 0, r.output
    assert results_dir() == tmp_path / "x"


def _env() -> dict:
    """The environment of a `bench` subprocess run outside the repository: this checkout's package."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "BENCH_RESULTS_DIR")}
    return env | {"PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])}


def _tree(d: Path, skip: str | None = None) -> set:
    files = d.rglob("*") if d.exists() else []
    return {(str(p), p.stat().st_mtime_ns) for p in files if skip is None or skip not in p.relative_to(d).parts}


@pytest.mark.slow
def test_bench_run_writes_only_under_results_dir(tmp_path):
    """`bench run` of the smoke suite with BENCH_RESULTS_DIR: store, cache and leaderboards all go there."""
    before = _tree(REPO / "results", skip="test-artifacts")  # the browser test's screenshot may land meanwhile
    out = tmp_path / "res"
    env = _env() | {"BENCH_RESULTS_DIR": str(out)}
    r = subprocess.run([sys.executable, "-m", "bench.cli", "run", str(REPO / "tests/suites/smoke.yaml"), "--no-progress",
                        "--workers", "1"],  # inline: this test is about paths; the pool has its own tests
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "mlflow.db").is_file() and (out / "smoke" / "leaderboard.md").is_file()
    assert (out / "cache").is_dir() and (out / "mlartifacts").is_dir()
    assert _tree(REPO / "results", skip="test-artifacts") == before
    assert {p.name for p in tmp_path.iterdir()} == {"res"}


# --- bench ui: signals reach the server, nothing is left on the port -----------------------------

_free_port, _answers = free_port, answers  # tests/loopback.py


def _descendants(pid: int) -> set[int]:
    import psutil

    try:
        return {c.pid for c in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# SIGTERM here, SIGINT on `bench server` (tests/test_server.py): one handler (bench.ui_server.serve), tested
# with both signals in tests/test_ui_serve.py; each MLflow server start costs 35-45 s on 2 busy cores.
@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_ui_stops_its_server_on_signal(tmp_path, sig):
    port = _free_port()
    env = _env()
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "--results-dir", str(tmp_path / "res"), "ui",
                             "--port", str(port)], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kids: set[int] = set()
    try:
        deadline = time.monotonic() + 120  # MLflow's server takes 35-45 s to start on 2 busy cores
        while not _answers(port):
            assert proc.poll() is None, f"bench ui exited with {proc.returncode}"
            assert time.monotonic() < deadline, "the MLflow server did not answer within 120 s"
            time.sleep(0.3)
        kids = _descendants(proc.pid)
        assert kids, "bench ui runs the server as a child"
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while _answers(port) or any(_alive(k) for k in kids):
            assert time.monotonic() < deadline, f"left behind: port {port} open={_answers(port)}, " \
                                                f"children={[k for k in kids if _alive(k)]}"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for k in kids:  # never leave a server behind, even when the test fails
            try:
                os.kill(k, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    assert (tmp_path / "res" / "mlflow.db").exists()
