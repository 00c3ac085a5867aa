"""Executors: where a plan's cells run. One interface, three engines (no scheduler or queue of our own).

* ``local`` (:mod:`bench.executors.local`): a pool of worker processes on this machine
  (``--workers N``; each worker gets ``cores // N`` threads, one GPU each on a GPU box);
  ``--workers 1`` runs the cells one after another in the driver process, as ``bench run`` always did.
* ``ray`` (:mod:`bench.executors.ray_exec`): one Ray task per cell with a CPU/GPU request, on
  ``--address`` or on a local Ray started for the run; Ray retries a task whose worker died.
* ``slurm`` (:mod:`bench.executors.slurm`): one Slurm job per cell through submitit, polled until done.

The driver (:mod:`bench.executors.driver`) resolves the plan, submits one :class:`CellTask` per cell,
polls the executor and shows the progress table. A worker runs a task with :func:`bench.executors.worker.execute`
(which claims the cell's lease, :mod:`bench.leases`) and returns the cell's outcome as a dict.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Hashable, Protocol

from bench.errors import BenchError

EXECUTORS = ("local", "ray", "slurm")


@dataclass(frozen=True)
class CellTask:
    """What a worker needs to run one cell: the spec as JSON, the store, the parent run, the lease settings."""

    index: int  # the cell's position in the plan
    spec_json: str  # bench.plan.CellSpec.to_json()
    tracking_uri: str
    parent_run_id: str | None
    force: bool = False
    lease_timeout_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Done:
    """A finished task: ``outcome`` (a :class:`bench.runner.CellOutcome` as a dict) or, if the worker
    died before returning one, ``error`` saying how."""

    handle: Hashable
    outcome: dict[str, Any] | None
    error: str | None = None


class Executor(Protocol):
    """The interface of every executor (local, ray, slurm)."""

    name: str

    def submit(self, task: CellTask) -> Hashable:
        """Start ``task`` (asynchronously where the engine allows); return a handle for :meth:`poll`."""

    def poll(self, timeout_s: float) -> list[Done]:
        """Wait up to ``timeout_s`` seconds for submitted tasks to end; return those that did."""

    def shutdown(self, cancel: bool = False) -> None:
        """Release the engine; with ``cancel``, stop tasks still running (they end KILLED)."""


@dataclass(frozen=True)
class ExecutorOptions:
    """Flags of ``bench run`` for the executors (None: the suite's ``executor:`` block, then the default)."""

    workers: int | None = None
    address: str | None = None
    cpus_per_cell: float | None = None
    gpus_per_cell: float | None = None
    partition: str | None = None
    time_min: int | None = None
    slurm_cluster: str | None = None  # submitit cluster: None (auto: slurm), "local" or "debug" (tests)
    folder: str | None = None
    allow_oversubscribe: bool = False  # local: more workers than cores (or GPUs), on purpose


def choose(name: str | None, suite_executor: Any = None) -> str:
    """The executor name: ``--executor``, else the suite's ``executor.name``, else ``$BENCH_EXECUTOR``, else local."""
    chosen = name or getattr(suite_executor, "name", None) or os.environ.get("BENCH_EXECUTOR") or "local"
    if chosen not in EXECUTORS:
        raise BenchError(f"executor {chosen!r} (--executor / suite executor.name / BENCH_EXECUTOR): "
                         f"unknown; choose one of {', '.join(EXECUTORS)}")
    return chosen


def merged(opts: ExecutorOptions, suite_executor: Any) -> ExecutorOptions:
    """Flags win over the suite's ``executor:`` block."""
    if suite_executor is None:
        return opts
    fields = {k: v if v is not None else getattr(suite_executor, k, None) for k, v in asdict(opts).items()}
    return ExecutorOptions(**fields)


def make(name: str, opts: ExecutorOptions, suite_name: str) -> Executor:
    """Build the executor ``name`` (raises :class:`BenchError` when its engine is missing)."""
    if name == "local":
        from bench.executors.local import make_local

        return make_local(opts)
    if name == "ray":
        from bench.executors.ray_exec import RayExecutor

        return RayExecutor(opts)
    from bench.executors.slurm import SlurmExecutor

    return SlurmExecutor(opts, suite_name)
