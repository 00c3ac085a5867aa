"""The bad-input corpus: malformed suite files, CLI arguments and run-time faults, each classified.

    .venv/bin/python scripts/bad_inputs_corpus.py [--verbose]

Outcomes: ``clean`` (exit 2 with an ``error:`` line, or click's usage error, before any work; for
`bench doctor` on a broken store: reported, exit 1, the file untouched), ``traceback``, ``silent``
(accepted: exit 0, or work started where it should have been refused), ``late`` (refused only after
work began: a store or a run created, a cell started), ``hang`` (no answer within the case's time).

Suite files: tests/test_bad_inputs.py's corpus and tests/reliability_cases.py, through `bench validate`.
Nothing trains: where a case would start real work, the work's entry points are replaced by a probe
that records it (``run_cell``, the pool's worker start). Runs in-process (CliRunner), about a minute.
Run it against another checkout with ``PYTHONPATH=<checkout>`` (the cases come from this one's tests/).
"""
from __future__ import annotations

import argparse
import collections
import errno
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(1, str(HERE / "tests"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from click.testing import CliRunner  # noqa: E402

import bench.cli  # noqa: E402
from test_bad_inputs import BASE, SUITES as OLD, write_split  # noqa: E402
from reliability_cases import SUITES as NEW  # noqa: E402


LAST_EXC = [""]
threading.stack_size(256 << 20)  # deeply nested YAML recurses as deep as in the main thread

import signal  # noqa: E402

_signal = signal.signal
signal.signal = lambda sig, handler: (_signal(sig, handler) if threading.current_thread() is threading.main_thread()
                                      else None)  # cases run in threads (to time out hangs): no handlers there


class Work(Exception):
    """Raised by a probe where real work would start."""


def invoke(args, env=None, timeout=30.0):
    """(exit code or None on hang, output, exception) of `bench ARGS` in this process."""
    box = {}

    def go():
        os.environ.pop("MLFLOW_TRACKING_URI", None)  # mlflow.set_tracking_uri of an earlier case sets it
        old = {k: os.environ.get(k) for k in (env or {})}
        os.environ.update(env or {})
        try:
            r = CliRunner().invoke(bench.cli.main, args)
            box["r"] = r
        finally:
            for k, v in old.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return None, "", None
    r = box["r"]
    out = r.output + (r.stderr if r.stderr_bytes is not None else "")
    return r.exit_code, out, r.exception


def classify(code, out, exc, worked=False) -> str:
    if code is None:
        return "hang"
    if isinstance(exc, Work) or worked:
        return "late" if code not in (0, None) and not isinstance(exc, Work) else "silent"
    if "Traceback" in out or (exc is not None and not isinstance(exc, SystemExit)):
        LAST_EXC[0] = repr(exc)
        return "traceback"
    if code == 2 and (out.startswith("error: ") or "Usage:" in out):
        return "clean"
    if code == 0:
        return "silent"
    return "late"


def suite_cases(tmp: Path):
    for name, text, _ in OLD + NEW:
        p = tmp / "s.yaml"
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        code, out, exc = invoke(["validate", str(p)])
        yield f"suite:{name}", classify(code, out, exc), out


def _probe_work(monkeypatch_box: list):
    """Replace run_cell and the pool's worker start: reaching them is work."""
    import bench.executors.local as local
    import bench.runner as runner

    def boom(*a, **k):
        raise Work("work started")

    for mod, attr in ((runner, "run_cell"), (local.PoolExecutor, "_spawn")):
        monkeypatch_box.append((mod, attr, getattr(mod, attr)))
        setattr(mod, attr, boom)
    import bench.cli  # noqa: F401  (run-cell imports run_cell from bench.runner at call time)


def _restore(box):
    for mod, attr, old in box:
        setattr(mod, attr, old)
    box.clear()


def runtime_cases(tmp: Path):
    suite = tmp / "base.yaml"
    suite.write_text(BASE)
    res = tmp / "results"
    env = {"BENCH_RESULTS_DIR": str(res)}
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    box: list = []
    _probe_work(box)

    def case(name, args, env_=None, timeout=30.0, check=None):
        for db in (res / "mlflow.db", tmp / "cells.db"):  # "made by this case" needs a clean slate
            db.unlink(missing_ok=True)
        code, out, exc = invoke(args, {**env, **(env_ or {})}, timeout)
        kind = classify(code, out, exc)
        if check is not None and kind == "clean":
            kind = check(code, out) or kind
        return f"cli:{name}", kind, out

    def store_made(*_):
        return "late" if (res / "mlflow.db").exists() else None

    # CLI arguments
    yield case("workers-1000", ["run", str(suite), "--workers", "1000", "--no-progress"])
    yield case("workers-0", ["run", str(suite), "--workers", "0", "--no-progress"])
    yield case("workers-text", ["run", str(suite), "--workers", "many", "--no-progress"])
    yield case("seeds-text", ["run", str(suite), "--seeds", "a,b", "--no-progress"])
    yield case("seeds-negative", ["run", str(suite), "--seeds", "-1", "--no-progress"], check=store_made)
    yield case("seed-dup", ["run", str(suite), "--seeds", "1,1", "--no-progress"], check=store_made)
    yield case("limit-0", ["run", str(suite), "--limit", "0", "--no-progress"])
    yield case("method-unknown", ["run", str(suite), "--method", "nope", "--no-progress"], check=store_made)
    yield case("executor-unknown", ["run", str(suite), "--executor", "nope"])
    yield case("executor-env-unknown", ["run", str(suite), "--no-progress"], {"BENCH_EXECUTOR": "nope"}, check=store_made)
    yield case("tracking-bogus", ["run", str(suite), "--tracking-uri", "bogus://x", "--no-progress", "--workers", "1"],
               check=store_made)
    yield case("tracking-file", ["run", str(suite), "--tracking-uri", "file:///tmp/x", "--no-progress", "--workers", "1"])
    yield case("tracking-bad-port", ["run", str(suite), "--tracking-uri", "http://127.0.0.1:99999", "--no-progress",
                                     "--workers", "1"])
    yield case("tracking-dir", ["run", str(suite), "--tracking-uri", f"sqlite:///{tmp}", "--no-progress", "--workers", "1"])
    yield case("results-dir-empty", ["leaderboard", str(suite)], {"BENCH_RESULTS_DIR": ""})
    yield case("leaderboard-never-run", ["leaderboard", str(suite)], check=store_made)
    yield case("export-never-run", ["export", str(suite)], check=store_made)
    yield case("leaderboard-format", ["leaderboard", str(suite), "--format", "pdf"])
    yield case("leaderboard-width-text", ["leaderboard", str(suite), "--width", "wide"])
    yield case("suite-missing", ["validate", str(tmp / "nope.yaml")])
    yield case("suite-unknown-name", ["validate", "no_such_suite_xyz"])
    yield case("suite-dir", ["validate", str(tmp)])
    yield case("suite-devnull", ["validate", "/dev/null"])
    yield case("suite-devzero", ["validate", "/dev/zero"], timeout=20)
    yield case("plugin-missing", ["validate", str(suite), "--plugin", "no_such_plugin_xyz"])
    yield case("run-cell-missing", ["run-cell", str(tmp / "nope.json")])
    yield case("run-cell-dir", ["run-cell", str(tmp)])
    garbage = tmp / "garbage.json"
    garbage.write_text("{not json")
    yield case("run-cell-garbage", ["run-cell", str(garbage)])
    empty = tmp / "empty.json"
    empty.write_text("")
    yield case("run-cell-empty", ["run-cell", str(empty)])
    from bench.plan import resolve

    spec = json.loads(resolve(str(suite), methods=["vcq"], seeds=[0]).cells[0].to_json())
    for label, edit in (("seed-minus-1", {"seed": -1}), ("seed-2^64", {"seed": 2**64}), ("seed-edited", {"seed": 5}),
                        ("label-edited", {"label": "x"}), ("params-edited", {"params": {**spec["params"], "k_max": 8}}),
                        ("unknown-field", {"colour": "red"}), ("version", {"spec_version": "bench.cell/9"})):
        f = tmp / f"cell-{label}.json"
        f.write_text(json.dumps({**spec, **edit}))
        yield case(f"run-cell-{label}", ["run-cell", str(f), "--tracking-uri", f"sqlite:///{tmp / 'cells.db'}"],
                   check=lambda *_: "late" if (tmp / "cells.db").exists() else None)

    # run-time faults: broken stores, a full disk, a read-only results directory
    for label, content in (("zero-byte", b""), ("corrupt", b"SQLite format 3\x00" + b"\x07" * 4000),
                           ("not-sqlite", b"hello\n" * 50)):
        db = tmp / f"{label}.db"
        db.write_bytes(content)
        code, out, exc = invoke(["doctor", "--tracking-uri", f"sqlite:///{db}", "--cache-dir", str(tmp / "c")], env)
        kind = classify(code, out, exc)
        if kind != "traceback":
            kind = "clean" if code == 1 and db.read_bytes() == content else "silent"
        yield f"fault:doctor-{label}", kind, out
        code, out, exc = invoke(["leaderboard", str(suite), "--tracking-uri", f"sqlite:///{db}"], env)
        kind = classify(code, out, exc)
        yield f"fault:leaderboard-on-{label}", kind if db.read_bytes() == content else "silent", out

    import bench.tracking as tracking

    real_client = tracking.MlflowClient

    def full(*a, **k):
        uri = k.get("tracking_uri") or a[0]
        Path(uri.removeprefix("sqlite:///")).write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    disk = tmp / "disk"
    tracking.MlflowClient = full
    try:
        code, out, exc = invoke(["run", str(suite), "--workers", "1", "--no-progress"], {"BENCH_RESULTS_DIR": str(disk)})
    finally:
        tracking.MlflowClient = real_client
    kind = classify(code, out, exc)
    yield "fault:enospc-store-creation", kind if "no space left" in out.lower() else \
        ("traceback" if kind == "traceback" else "late"), out
    code, out, exc = invoke(["leaderboard", str(suite)], {"BENCH_RESULTS_DIR": str(disk)})
    yield "fault:after-enospc-store-usable", ("clean" if code == 2 and "has no runs" in out else classify(code, out, exc)), out

    import pathlib

    real_mkdir = pathlib.Path.mkdir

    def ro_mkdir(self, *a, **k):
        if str(self).startswith(str(tmp / "ro")):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *a, **k)

    pathlib.Path.mkdir = ro_mkdir
    try:
        code, out, exc = invoke(["run", str(suite), "--workers", "1", "--no-progress"],
                                {"BENCH_RESULTS_DIR": str(tmp / "ro" / "results")})
    finally:
        pathlib.Path.mkdir = real_mkdir
    yield "fault:read-only-results-dir", classify(code, out, exc), out

    # last: cases that may hang (their threads are left behind)
    fifo = tmp / "fifo.yaml"
    os.mkfifo(fifo)
    yield case("suite-fifo", ["validate", str(fifo)], timeout=10)
    yield case("tracking-unreachable", ["run", str(suite), "--tracking-uri", "http://127.0.0.1:1", "--no-progress",
                                        "--workers", "1"], timeout=40)
    _restore(box)


def print(*a, **k):  # noqa: A001 - a timed-out case's CliRunner may still hold sys.stdout
    import builtins

    builtins.print(*a, **{"file": sys.__stdout__, "flush": True, **k})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verbose", action="store_true", help="print every case that is not clean, with its output")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-corpus-"))
    fm = tmp / "fmnist"
    fm.mkdir()
    write_split(fm, "train", 20)
    write_split(fm, "t10k", 10)
    os.environ["BENCH_FMNIST_DIR"] = str(fm)
    t0 = time.time()
    rows = []
    work = tmp / "work"
    work.mkdir()
    for gen in (suite_cases(work), runtime_cases(work)):
        for name, kind, out in gen:
            rows.append((name, kind))
            if args.verbose and kind != "clean":
                print(f"{kind:9s} {name}: {out.strip()[-300:]!r} {LAST_EXC[0] if kind == 'traceback' else ''}")
    counts = collections.Counter(k for _, k in rows)
    groups = collections.defaultdict(collections.Counter)
    for name, kind in rows:
        groups[name.split(":")[0]][kind] += 1
    cols = ["clean", "traceback", "silent", "late", "hang"]
    print(f"{'inputs':12s} " + " ".join(f"{c:>9s}" for c in cols) + f" {'total':>6s}")
    for g, c in sorted(groups.items()) + [("all", counts)]:
        print(f"{g:12s} " + " ".join(f"{c[k]:9d}" for k in cols) + f" {sum(c.values()):6d}")
    print(f"({time.time() - t0:.0f} s; bench from {Path(bench.cli.__file__).parents[1]})")
    sys.stdout.flush()
    os._exit(0 if counts["clean"] == len(rows) else 1)  # a hung case's thread may still run


if __name__ == "__main__":
    main()
