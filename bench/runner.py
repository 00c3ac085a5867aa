"""Run a suite: every (method, seed) cell, logged to MLflow, resuming finished cells.

Each cell is a :class:`bench.plan.CellSpec` executed by :func:`run_cell` (``bench run`` for every
cell of a suite, ``bench run-cell`` for one spec file). A cell's identity is its *config hash*
(:mod:`bench.plan`). A cell whose hash and seed already have a FINISHED run is skipped
unless ``force``. A failed or interrupted cell is marked FAILED/KILLED, so it never counts as a
finished row, and what it logged before failing stays in MLflow.
"""
from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench import HARNESS_VERSION, cell_timing, code_identity, leases, registry, torchrun
from bench.adapter import Adapter
from bench.context import Cache, CellContext
from bench.data import load_dataset
from bench.errors import BenchError
from bench.inputs import sample_batch
from bench.limit import limit_of
from bench.metrics.base import check_finite
from bench.plan import CellSpec, cell_config, config_hash, resolve  # noqa: F401 - re-exported
from bench.provenance import NUMERICS_ENV, PACKAGES, git_sha, numerics, package_versions  # noqa: F401 - re-exported
from bench.suite import MethodSpec, Suite
from bench.tracking import TAG, Tracker, flatten


@dataclass
class CellOutcome:
    method: str
    seed: int
    status: str  # "finished", "skipped", "failed", "leased" (another live worker holds the cell)
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
    accept_code_change: bool = False,
) -> tuple[list[CellOutcome], str]:
    """Run the suite's cells (each with :func:`run_cell`); return their outcomes and the parent run id.

    Raises :class:`BenchError` before anything is logged if the data set is missing.
    A failing cell does not stop the others; its error is in its run (tag ``bench.error``).
    """
    plan = resolve(suite, methods, seeds)
    dataset = preflight(plan.cells[0])  # fail fast, before any run is created
    for spec in {c.adapter: c for c in plan.cells[1:]}.values():
        preflight(spec, dataset)
    cache = cache or Cache()
    tracker = Tracker(tracking_uri)
    exp = tracker.experiment_id(suite.name)
    if not force:
        check_code(tracker, exp, plan.cells, accept_code_change)
    parent = tracker.start(exp, f"{suite.name}@{time.strftime('%Y%m%d-%H%M%S')}",
                           {f"{TAG}kind": "suite", f"{TAG}suite": suite.name, f"{TAG}git_sha": git_sha(),
                            f"{TAG}suite_file": suite.source})
    outcomes: list[CellOutcome] = []
    try:
        for spec in plan.cells:
            outcomes.append(run_cell(spec, tracker.uri, parent, cache, progress, skip_finished=not force,
                                     dataset=dataset))
        tracker.end(parent, "FINISHED" if all(o.status != "failed" for o in outcomes) else "FAILED")
    except KeyboardInterrupt:
        tracker.end(parent, "KILLED")
        raise
    return outcomes, parent


def check_code(tracker: Tracker, exp: str, cells, accept: bool = False) -> None:
    """Refuse (:class:`BenchError`, every cell at once) to reuse a FINISHED run whose code fingerprint
    differs from today's code (:mod:`bench.code_identity`); with ``accept``, record on each such run
    that today's code was accepted for it (tag ``bench.code.accepted``) and say so. A run without a
    fingerprint (logged before fingerprints were recorded) is reused as before."""
    done: dict[tuple[str, str], object] = {}
    for r in reversed(tracker.cell_runs(exp)):  # newest last: the newest finished run of a cell wins
        done[(r.data.tags.get(f"{TAG}config_hash"), r.data.tags.get(f"{TAG}seed"))] = r
    refused = []
    for spec in cells:
        run = done.get((spec.config_hash, str(spec.seed)))
        if run is None:
            continue
        cls = registry.get(registry.ADAPTERS, "adapter", spec.adapter)
        code = code_identity.identity(cls)
        if code_identity.run_matches(run.data.tags, code) is not False:
            continue
        msg = code_identity.refusal(spec.method, spec.seed, run.info.run_id, run.data.tags, code)
        if accept:
            old = run.data.tags.get(code_identity.ACCEPTED_TAG, "")
            tracker.client.set_tag(run.info.run_id, code_identity.ACCEPTED_TAG,
                                   ",".join(x for x in (old, code.fingerprint) if x))
            _say(f"[bench] {msg.split(': code changed')[0]}: code changed since run {run.info.run_id[:8]}; "
                 "its numbers are kept (--accept-code-change)")
        else:
            refused.append(msg)
    if refused:
        raise BenchError("\n".join(refused))


def preflight(spec: CellSpec, dataset=None):
    """Checks before a cell's run is created: harness version, plugins, data set, adapter pre-flight.

    Returns the data set (``dataset`` if given, else loaded). An adapter may define a classmethod
    ``preflight(suite)`` raising :class:`BenchError` (e.g. base-model weights present); it sees
    :meth:`CellSpec.suite_view`.
    """
    if spec.harness_version != HARNESS_VERSION:
        raise BenchError(f"cell {spec.method}-s{spec.seed} was planned by harness version {spec.harness_version}, "
                         f"this is {HARNESS_VERSION}: plan it again (`bench plan`)")
    problems = registry.import_plugins((f"cell {spec.filename}: plugins[{i}]", m) for i, m in enumerate(spec.plugins))
    if problems:
        raise BenchError("\n".join(problems))
    cls = registry.get(registry.ADAPTERS, "adapter", spec.adapter)
    dataset = dataset if dataset is not None else load_dataset(spec.dataset)
    if hasattr(cls, "preflight"):
        cls.preflight(spec.suite_view())
    return dataset


def _check_parent(tracker: Tracker, exp: str, run_id: str, suite: str) -> None:
    try:
        run = tracker.client.get_run(run_id)
    except Exception:  # noqa: BLE001 - mlflow raises its own exception types
        raise BenchError(f"parent run {run_id!r}: no such run in the MLflow store {tracker.uri}") from None
    if run.info.experiment_id != exp:
        raise BenchError(f"parent run {run_id!r} is not in the experiment of suite {suite!r}")



@contextlib.contextmanager
def default_dtype(precision: str):
    """torch's default float dtype set to ``precision`` ("float32" | "float64") for a cell, restored after."""
    prev = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, precision))
    try:
        yield
    finally:
        torch.set_default_dtype(prev)


def run_cell(spec: CellSpec, tracking_uri: str | None, parent_run_id: str | None = None, cache: Cache | None = None,
             progress: bool = True, skip_finished: bool = False, dataset=None,
             accept_code_change: bool = False) -> CellOutcome:
    """Execute one cell into a new MLflow run of the suite's experiment (child of ``parent_run_id``).

    With ``skip_finished``, a cell whose config hash and seed already have a FINISHED run is not
    run again (status "skipped"). Raises :class:`BenchError` before any run is created if the
    data set or a pre-flight check fails; an error while training or measuring marks the run FAILED.
    ``dataset``: the cell's data set if the caller has loaded it already (``bench run``, once per suite).
    A FINISHED run made by other code (its ``bench.code.fingerprint`` tag) is not reused silently:
    :class:`BenchError` (:func:`check_code`) unless ``accept_code_change``.

    Under torchrun (a process group of W > 1 ranks, :mod:`bench.torchrun`) every rank calls this: rank 0
    alone claims the lease and creates, logs and ends the run, then tells the others (broadcast)
    whether the cell runs; every rank computes the cell (:func:`_compute`; inputs sharded by
    :mod:`bench.inputs`); ranks > 0 log nothing (:func:`_follow`). Rank 0 marks the run FINISHED only
    after every rank has finished its metrics (a final all-gather of their values).
    """
    from bench.distributed import rank_world

    dataset = preflight(spec, dataset)
    rank, world = rank_world()
    if rank != 0:  # torchrun: ranks > 0 compute their shares and log nothing
        return _follow(spec, dataset, cache)
    tracker = Tracker(tracking_uri)
    exp = tracker.experiment_id(spec.suite)
    h, seed, name = spec.config_hash, spec.seed, spec.method
    if parent_run_id:
        _check_parent(tracker, exp, parent_run_id, spec.suite)
    cls = registry.get(registry.ADAPTERS, "adapter", spec.adapter)
    tags = {
        f"{TAG}kind": "cell", f"{TAG}suite": spec.suite, f"{TAG}method": name,
        f"{TAG}adapter": spec.adapter, f"{TAG}label": spec.label,
        f"{TAG}baseline": str(spec.baseline).lower(), f"{TAG}seed": seed, f"{TAG}config_hash": h,
        f"{TAG}git_sha": git_sha(), f"{TAG}dataset": spec.dataset.name,
        **{f"{TAG}version.{k}": v for k, v in package_versions().items()},
        **{f"{TAG}numerics.{k}": v for k, v in numerics().items()}, f"{TAG}numerics.precision": spec.precision,
        **code_identity.identity(cls).tags(),
    }
    if limit_of(spec.suite) is not None:  # `bench run --limit N`: a quick check, never a result
        tags[f"{TAG}limit"] = limit_of(spec.suite)
    if world > 1 or sample_batch() is not None:  # how this run's samples were drawn (bench.inputs)
        tags.update({f"{TAG}world_size": world, f"{TAG}sampling": f"batched:{sample_batch()}"})
    claim = leases.claim(tracker, exp, h, seed, f"{name}-s{seed}", tags, parent_run_id, skip_finished)
    torchrun.broadcast(None if claim.lease is None else claim.lease.run_id)  # ranks > 0: run or not
    if claim.lease is None:  # finished already, or another worker holds the cell (bench.leases)
        done = claim.finished
        if done is not None:
            check_code(tracker, exp, [spec], accept_code_change)
        _say(f"[bench] {name} seed={seed}: " + (f"finished run {done.info.run_id[:8]} (config {h}) -> skipped"
                                                if done else f"{claim.message} -> skipped"))
        return CellOutcome(name, seed, "skipped" if done else "leased", (done or claim.holder).info.run_id
                           if (done or claim.holder) else None, error=None if done else claim.message)
    lease, run_id = claim.lease, claim.lease.run_id
    try:
        _say(f"[bench] {name} seed={seed}: running (config {h}, run {run_id[:8]})")
        artifact_dir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        t0 = time.time()
        clock = cell_timing.CellClock()  # where the cell's time goes (bench.cell_timing), logged with cell_seconds

        def log_metric(key, value, step=None):
            if value is not None and torch.isfinite(torch.tensor(float(value))):
                tracker.log_metrics(run_id, {key: float(value)}, step)

        def log_param(key, value):
            tracker.log_params(run_id, {key: value})

        ctx = CellContext(suite=spec.suite_view(), method=spec.method_spec(), seed=seed, budget=dict(spec.budget),
                          dataset=dataset, cache=cache or Cache(), artifact_dir=artifact_dir, log_metric=log_metric,
                          log_param=log_param, progress=progress)
        status, err, values = "FINISHED", None, {}
        try:
            tracker.log_params(run_id, flatten(spec.config()))

            def logged(metric: str, out: dict[str, float], secs: float) -> None:
                tracker.log_metrics(run_id, out)
                _say(f"[bench]   {name} seed={seed} {metric}: " + ", ".join(f"{k}={v:.4g}" for k, v in out.items()) + f" ({secs:.0f}s)")

            with cell_timing.clocked(clock):
                _compute(spec, cls, ctx, values, logged)
            if world > 1:
                _check_ranks(values, torchrun.gather(values))
        except KeyboardInterrupt:
            lease.stop()
            tracker.client.set_tag(run_id, f"{TAG}error", "interrupted")
            tracker.end(run_id, "KILLED")
            lease.release()
            raise
        except Exception as e:  # noqa: BLE001 - a failed cell is recorded, then the suite goes on
            status, err = "FAILED", f"{type(e).__name__}: {e}"
            tracker.client.set_tag(run_id, f"{TAG}error", err[:5000])
            _say(f"[bench] {name} seed={seed}: FAILED: {err}")
            if not isinstance(e, BenchError):
                _say(traceback.format_exc())
        finally:
            for f in sorted(artifact_dir.rglob("*")):
                if f.is_file():
                    tracker.client.log_artifact(run_id, str(f), artifact_path=str(
                        f.parent.relative_to(artifact_dir)).strip(".") or None)
            shutil.rmtree(artifact_dir, ignore_errors=True)
        secs = time.time() - t0
        lease.stop()
        if not lease.held():  # taken over while it ran (heartbeat stalled past the lease timeout): not ours to end
            _say(f"[bench] {name} seed={seed}: lease lost while running -> not marked {status}")
            return CellOutcome(name, seed, "failed", run_id, secs, "lease lost: another worker took the cell over")
        if status == "FINISHED":
            tracker.log_metrics(run_id, {"cell_seconds": secs, **clock.breakdown(secs)})
        tracker.end(run_id, status)
        lease.release()
        _say(f"[bench] {name} seed={seed}: {status.lower()} in {secs:.0f}s")
        return CellOutcome(name, seed, "finished" if status == "FINISHED" else "failed", run_id, secs, err, values)
    except BaseException:  # e.g. a second interrupt (torchrun's SIGTERM) while ending: never leave it RUNNING
        _end_if_running(tracker, lease, run_id)
        raise


def _end_if_running(tracker: Tracker, lease, run_id: str) -> None:
    """End the cell's run KILLED if it is still RUNNING and ours (best effort: the store may be gone)."""
    with contextlib.suppress(Exception):
        lease.stop()
        if lease.held():
            tracker.client.set_tag(run_id, f"{TAG}error", "interrupted while ending the run")
            tracker.end(run_id, "KILLED")


def _compute(spec: CellSpec, cls: type, ctx: CellContext, values: dict[str, float], logged=None) -> None:
    """Build the adapter, ``prepare`` it and compute every metric of the cell into ``values``.

    Under torchrun (W > 1 ranks) training is not distributed: rank 0 prepares first while the others
    wait (on :func:`bench.torchrun.wait_group`, long timeout); then each other rank prepares, which
    loads what rank 0 trained from the shared cache (``ctx.cache``: the same results dir on one
    machine; across machines only if that directory is shared, else each machine trains again from
    the same seed). A failure of rank 0 while preparing is raised on every rank. Metrics run on every
    rank (the expensive inputs are sharded, :mod:`bench.inputs`). ``logged(metric, its values, seconds)``
    is called after each metric (``values`` keeps what was computed before an error).
    """
    from bench.distributed import rank_world

    rank, world = rank_world()
    name, seed = spec.method, spec.seed
    with default_dtype(spec.precision):
        torch.manual_seed(seed)
        adapter = cls(cls.Params.model_validate(spec.params), seed)
        with cell_timing.phase("train"):
            if world == 1:
                adapter.prepare(ctx)
            elif rank == 0:
                try:
                    adapter.prepare(ctx)
                except Exception as e:
                    torchrun.broadcast(f"{type(e).__name__}: {e}", torchrun.wait_group())
                    raise
                torchrun.broadcast(None, torchrun.wait_group())
            else:
                err = torchrun.broadcast(None, torchrun.wait_group())
                if err:
                    raise BenchError(f"rank 0 failed to prepare {name}-s{seed}: {err}")
                adapter.prepare(ctx)
        cell_timing.charge_members(adapter, Adapter)  # sampling, encoding, likelihoods: the method's time
        for m in spec.metrics:
            mcls = registry.get(registry.METRICS, "metric", m.name)
            t1 = time.time()
            with cell_timing.phase("metric"):
                out = check_finite(mcls().compute(adapter, ctx, mcls.Params.model_validate(m.params)),
                                   f"metric {m.name} ({name}, seed {seed})")
            values.update(out)
            if logged is not None:
                logged(m.name, out, time.time() - t1)


def _follow(spec: CellSpec, dataset, cache: Cache | None) -> CellOutcome:
    """Rank > 0 of a torchrun cell: compute the cell with rank 0 (same seed, sharded inputs), log nothing.

    Waits for rank 0's claim (:func:`bench.leases.claim`); when rank 0 skips the cell, so does this rank.
    Its files go to a scratch directory that is deleted; it returns status "finished" with its own values.
    """
    run_id = torchrun.broadcast(None)
    if run_id is None:
        return CellOutcome(spec.method, spec.seed, "skipped")
    cls = registry.get(registry.ADAPTERS, "adapter", spec.adapter)
    scratch = Path(tempfile.mkdtemp(prefix=f"bench-{spec.method}-rank-"))
    ctx = CellContext(suite=spec.suite_view(), method=spec.method_spec(), seed=spec.seed, budget=dict(spec.budget),
                      dataset=dataset, cache=cache or Cache(), artifact_dir=scratch, progress=False)
    t0 = time.time()
    try:
        values: dict[str, float] = {}
        _compute(spec, cls, ctx, values)
        torchrun.gather(values)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return CellOutcome(spec.method, spec.seed, "finished", run_id, time.time() - t0, metrics=values)


def _check_ranks(mine: dict[str, float], every: list[dict[str, float]]) -> None:
    """Warn when another rank computed different metric values (rank 0's are the ones logged)."""
    for r, other in enumerate(every[1:], 1):
        diff = sorted(k for k in mine if other.get(k) != mine[k])
        if diff:
            _say(f"[bench] warning: rank {r} computed other values of {', '.join(diff)} than rank 0 "
                 "(non-deterministic kernels?); rank 0's are logged")
