"""Run a suite: every (method, seed) cell, logged to MLflow, resuming finished cells.

A cell's identity is its *config hash*: a hash of everything that determines its numbers
(harness version, data set, adapter and resolved params, resolved budget, metric specs; not the
seed, which is its own tag). A cell whose hash and seed already have a FINISHED run is skipped
unless ``force``. A failed or interrupted cell is marked FAILED/KILLED, so it never counts as a
finished row, and what it logged before failing stays in MLflow.
"""
from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench import HARNESS_VERSION, registry
from bench.context import Cache, CellContext, stable_hash
from bench.data import load_dataset
from bench.errors import BenchError
from bench.metrics.base import check_finite
from bench.suite import REPO_ROOT, MethodSpec, Suite
from bench.tracking import TAG, Tracker, flatten

PACKAGES = ("torch", "torchvision", "transformers", "peft", "torch-fidelity", "clean-fid", "torchmetrics",
            "scikit-learn", "mlflow", "lm_eval", "numpy")


def cell_config(suite: Suite, method: MethodSpec) -> dict:
    """The resolved configuration of a method's cells (defaults filled in); hashed for identity."""
    cls = registry.get(registry.ADAPTERS, "adapter", method.adapter)
    params = cls.Params.model_validate(method.params).model_dump(mode="json")
    budget = {**suite.budget, **method.budget}
    budget_model = getattr(cls, "Budget", None)
    if budget_model is not None:
        budget = budget_model.model_validate(budget).model_dump(mode="json")
    metrics = []
    for spec in suite.metrics:
        mcls = registry.get(registry.METRICS, "metric", spec.name)
        metrics.append({"name": spec.name, "params": mcls.Params.model_validate(spec.params).model_dump(mode="json")})
    dataset = suite.dataset.model_dump(mode="json", exclude={"root"})  # where the data lies is not what it is
    return {
        "harness_version": HARNESS_VERSION,
        "dataset": dataset,
        "base_model": suite.base_model,
        "adapter": method.adapter,
        "params": params,
        "budget": budget,
        "metrics": metrics,
    }


def config_hash(suite: Suite, method: MethodSpec) -> str:
    return stable_hash(cell_config(suite, method))


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        sha = out.stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


NUMERICS_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")
"""Environment variables that change float results on a CPU (logged with every gate run)."""


def numerics() -> dict[str, str]:
    """This process's floating-point setting: torch's CPU kernel level, threads, pinned env vars, CPU model."""
    import os
    import platform

    import torch

    cpu = platform.processor() or ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": str(torch.get_num_threads()),
            **{k: os.environ[k] for k in NUMERICS_ENV if k in os.environ}}


@dataclass
class CellOutcome:
    method: str
    seed: int
    status: str  # "finished", "skipped", "failed"
    run_id: str | None = None
    seconds: float = 0.0
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def select_methods(suite: Suite, names: list[str] | None) -> list[MethodSpec]:
    if not names:
        return list(suite.methods)
    return [suite.method(n) for n in names]


def run_suite(
    suite: Suite,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
    force: bool = False,
    tracking_uri: str | None = None,
    cache: Cache | None = None,
    progress: bool = True,
) -> tuple[list[CellOutcome], str]:
    """Run the suite's cells; return their outcomes and the parent run id.

    Raises :class:`BenchError` before anything is logged if the data set is missing.
    A failing cell does not stop the others; its error is in its run (tag ``bench.error``).
    """
    registry.load_all()
    chosen = select_methods(suite, methods)
    seeds = list(seeds) if seeds else list(suite.seeds)
    dataset = load_dataset(suite.dataset)  # fail fast, before any run is created
    # Optional adapter pre-flight (e.g. base-model weights present), also before any run is created:
    # a classmethod ``preflight(suite)`` raising BenchError; called once per adapter class.
    for cls in dict.fromkeys(registry.get(registry.ADAPTERS, "adapter", m.adapter) for m in chosen):
        if hasattr(cls, "preflight"):
            cls.preflight(suite)
    cache = cache or Cache()
    tracker = Tracker(tracking_uri)
    exp = tracker.experiment_id(suite.name)
    versions = package_versions()
    sha = git_sha()
    parent = tracker.start(exp, f"{suite.name}@{time.strftime('%Y%m%d-%H%M%S')}",
                           {f"{TAG}kind": "suite", f"{TAG}suite": suite.name, f"{TAG}git_sha": sha,
                            f"{TAG}suite_file": suite.source})
    outcomes: list[CellOutcome] = []
    try:
        for method in chosen:
            cfg = cell_config(suite, method)
            h = stable_hash(cfg)
            for seed in seeds:
                done = None if force else tracker.finished_cell(exp, h, seed)
                if done is not None:
                    _say(f"[bench] {method.name} seed={seed}: finished run {done.info.run_id[:8]} (config {h}) -> skipped")
                    outcomes.append(CellOutcome(method.name, seed, "skipped", done.info.run_id))
                    continue
                outcomes.append(_run_cell(tracker, exp, parent, suite, method, seed, cfg, h, dataset, cache,
                                          versions, sha, progress))
        tracker.end(parent, "FINISHED" if all(o.status != "failed" for o in outcomes) else "FAILED")
    except KeyboardInterrupt:
        tracker.end(parent, "KILLED")
        raise
    return outcomes, parent


def _run_cell(tracker, exp, parent, suite, method, seed, cfg, h, dataset, cache, versions, sha, progress) -> CellOutcome:
    cls = registry.get(registry.ADAPTERS, "adapter", method.adapter)
    tags = {
        f"{TAG}kind": "cell", f"{TAG}suite": suite.name, f"{TAG}method": method.name,
        f"{TAG}adapter": method.adapter, f"{TAG}label": method.label or method.name,
        f"{TAG}baseline": str(method.baseline).lower(), f"{TAG}seed": seed, f"{TAG}config_hash": h,
        f"{TAG}git_sha": sha, f"{TAG}dataset": suite.dataset.name,
        **{f"{TAG}version.{k}": v for k, v in versions.items()},
        **{f"{TAG}numerics.{k}": v for k, v in numerics().items()},
    }
    run_id = tracker.start(exp, f"{method.name}-s{seed}", tags, parent_id=parent)
    _say(f"[bench] {method.name} seed={seed}: running (config {h}, run {run_id[:8]})")
    artifact_dir = Path(tempfile.mkdtemp(prefix=f"bench-{method.name}-"))
    t0 = time.time()

    def log_metric(key, value, step=None):
        if value is not None and torch.isfinite(torch.tensor(float(value))):
            tracker.log_metrics(run_id, {key: float(value)}, step)

    def log_param(key, value):
        tracker.log_params(run_id, {key: value})

    ctx = CellContext(suite=suite, method=method, seed=seed, budget=cfg["budget"], dataset=dataset, cache=cache,
                      artifact_dir=artifact_dir, log_metric=log_metric, log_param=log_param, progress=progress)
    status, err, values = "FINISHED", None, {}
    try:
        tracker.log_params(run_id, flatten(cfg))
        torch.manual_seed(seed)
        adapter = cls(cls.Params.model_validate(method.params), seed)
        adapter.prepare(ctx)
        for spec in suite.metrics:
            mcls = registry.get(registry.METRICS, "metric", spec.name)
            t1 = time.time()
            out = check_finite(mcls().compute(adapter, ctx, mcls.Params.model_validate(spec.params)),
                               f"metric {spec.name} ({method.name}, seed {seed})")
            tracker.log_metrics(run_id, out)
            values.update(out)
            _say(f"[bench]   {spec.name}: " + ", ".join(f"{k}={v:.4g}" for k, v in out.items())
                 + f" ({time.time() - t1:.0f}s)")
    except KeyboardInterrupt:
        tracker.client.set_tag(run_id, f"{TAG}error", "interrupted")
        tracker.end(run_id, "KILLED")
        raise
    except Exception as e:  # noqa: BLE001 - a failed cell is recorded, then the suite goes on
        status, err = "FAILED", f"{type(e).__name__}: {e}"
        tracker.client.set_tag(run_id, f"{TAG}error", err[:5000])
        _say(f"[bench] {method.name} seed={seed}: FAILED: {err}")
        if not isinstance(e, BenchError):
            _say(traceback.format_exc())
    finally:
        for f in sorted(artifact_dir.rglob("*")):
            if f.is_file():
                tracker.client.log_artifact(run_id, str(f), artifact_path=str(f.parent.relative_to(artifact_dir)).strip(".") or None)
        shutil.rmtree(artifact_dir, ignore_errors=True)
    secs = time.time() - t0
    if status == "FINISHED":
        tracker.log_metrics(run_id, {"cell_seconds": secs})
    tracker.end(run_id, status)
    _say(f"[bench] {method.name} seed={seed}: {status.lower()} in {secs:.0f}s")
    return CellOutcome(method.name, seed, "finished" if status == "FINISHED" else "failed", run_id, secs, err, values)
