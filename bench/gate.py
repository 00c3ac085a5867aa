"""``bench gate``: run a suite from fresh weights in its own store, then compare with a baseline.

The comparison itself is :mod:`bench.compare`; this module only executes the suite for it, with
its own cache of trained weights (emptied each time, so a code regression cannot hide behind a
cached checkpoint) and the shared cache for data-derived entries. See docs/ci-gate.md.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from bench.baseline import GateError, load_baseline
from bench.compare import Comparison, check_config, compare_cmd
from bench.context import Cache, results_dir
from bench.suite import Suite

SHARED_CACHE_KINDS = frozenset({"inception", "inception_ref", "hf_home", "peft_tasks"})
"""Cache kinds :class:`GateCache` keeps in the shared cache: data-derived entries (reference
statistics, converted extractor weights, task files) whose identity the baseline pins; every other
kind (trained weights) is fresh. Instruments are shipped files, not cache entries."""


class GateCache(Cache):
    """Trained weights in ``root`` (fresh per gate run); instruments and data in ``shared``."""

    def __init__(self, root: Path, shared: Cache | None = None):
        super().__init__(Path(root))
        self.shared = shared or Cache()

    def path(self, kind: str, key: str, ext: str = "pt") -> Path:
        if kind in SHARED_CACHE_KINDS:
            return self.shared.path(kind, key, ext)
        return super().path(kind, key, ext)


def gate_workdir(suite: Suite) -> Path:
    return results_dir() / "gate" / suite.name


@dataclass
class GateRun:
    workdir: Path
    tracking_uri: str
    parent: str  # the suite parent run
    current: str  # what to compare: the parent run, or "latest" when cells were reused
    seconds: float


def gate_run(suite: Suite, workdir: Path | None = None, reuse: bool = False, progress: bool = True,
             shared: Cache | None = None) -> GateRun:
    """Run the suite for the gate: every cell recomputed from fresh weights unless ``reuse``.

    ``workdir`` (default ``results/gate/<suite>``) holds the gate's MLflow store (``mlflow.db``,
    kept across gate runs as a history), its weight cache (``cache/``, emptied unless ``reuse``)
    and the reports; ``shared`` is the cache of instruments and data (default ``results/cache``).
    Raises :class:`GateError` if a cell failed.
    """
    from bench.runner import run_suite

    workdir = Path(workdir or gate_workdir(suite)).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    cache_dir = workdir / "cache"
    if not reuse and cache_dir.exists():
        shutil.rmtree(cache_dir)
    t0 = time.time()
    outcomes, parent = run_suite(suite, force=not reuse, tracking_uri=uri, cache=GateCache(cache_dir, shared),
                                 progress=progress)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise GateError("gate: cell(s) failed, nothing to compare:\n  "
                        + "\n  ".join(f"{o.method} seed={o.seed}: {o.error}" for o in failed))
    return GateRun(workdir, uri, parent, "latest" if reuse else parent, time.time() - t0)


def run_gate(suite: Suite, baseline_path: str | Path, workdir: Path | None = None, reuse: bool = False,
             report: str | Path | None = None, strict: bool = False, progress: bool = True,
             shared: Cache | None = None, history_uri: str | None = None) -> tuple[Comparison, str, GateRun]:
    """:func:`gate_run`, then :func:`compare_cmd` on its runs (reports in the workdir by default).

    ``history_uri``: also record the compared cell runs, with the verdict, in that lasting store
    (:func:`bench.history.record`), whatever the verdict, so ``bench history`` shows when a number moved."""
    doc = load_baseline(baseline_path)
    check_config(suite, doc)  # fail fast, before minutes of training
    extra = sorted(set(int(x) for x in doc.get("seeds") or []) - set(suite.seeds))
    if extra:
        raise GateError(f"the baseline has seed(s) {extra} that {suite.source} does not run")
    g = gate_run(suite, workdir, reuse, progress, shared)
    cmp, text = compare_cmd(suite, baseline_path, g.tracking_uri, g.current, report or g.workdir, strict)
    if history_uri:
        from bench.history import record
        from bench.tracking import Tracker

        ids = [rid for rids in cmp.current_runs.values() for rid in rids]
        n, had = record(ids, Tracker(g.tracking_uri), history_uri, suite.name, cmp.verdict)
        text += (f"\nhistory: {n} cell run(s) recorded in {history_uri}" + (f" ({had} already there)" if had else "")
                 + f"; `bench history {suite.source} --tracking-uri {history_uri}`")
    return cmp, text, g
