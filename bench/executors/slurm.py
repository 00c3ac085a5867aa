"""The Slurm executor: one Slurm job per cell through submitit, polled until done.

Parameters (flags win over the suite's ``executor:`` block): ``--partition``, ``--time-min`` (per cell,
default 60), ``--gpus-per-cell`` (``gpus_per_node``, default 0) and ``--cpus-per-cell``
(``cpus_per_task``, default 1). Job folders (scripts, logs, pickled results) go under
``results/slurm/<suite>/``. The tracking URI must be reachable from the compute nodes (an MLflow
server, ``bench server``; a sqlite file only on a shared file system with working locks).
``--slurm-cluster local`` / ``debug`` uses submitit's local executor (subprocesses) or its in-process
debug executor instead of Slurm: how the tests drive this code without a Slurm controller.
A job that fails without an outcome (node failure, time limit, ``scancel``) is reported to the
driver, which submits the cell again; the new job's lease claim ends the dead job's run FAILED.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Hashable

from bench.errors import BenchError
from bench.executors import CellTask, Done, ExecutorOptions


def _run_task(task: dict) -> dict:
    from bench.executors.worker import execute

    return execute(task)


class SlurmExecutor:
    name = "slurm"

    def __init__(self, opts: ExecutorOptions, suite_name: str):
        try:
            import submitit
        except ImportError:
            raise BenchError("--executor slurm needs submitit: pip install submitit==1.5.4 "
                             "(pinned in requirements.txt)") from None
        from bench.context import results_dir

        folder = Path(opts.folder) if opts.folder else results_dir() / "slurm" / suite_name
        cluster = None if opts.slurm_cluster in (None, "slurm") else opts.slurm_cluster
        self.ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        params = {"timeout_min": opts.time_min or 60, "name": f"bench-{suite_name}",
                  "cpus_per_task": int(opts.cpus_per_cell or 1), "gpus_per_node": int(opts.gpus_per_cell or 0)}
        if opts.partition:
            params["slurm_partition"] = opts.partition
        if cluster is not None:  # local/debug executors take only the generic parameters
            params.pop("cpus_per_task"), params.pop("gpus_per_node")
        self.ex.update_parameters(**params)
        self.jobs: dict = {}
        self.workers = 0  # as many as Slurm grants

    def submit(self, task: CellTask) -> Hashable:
        job = self.ex.submit(_run_task, task.to_dict())
        self.jobs[job] = task.index
        return task.index

    def poll(self, timeout_s: float) -> list[Done]:
        deadline = time.monotonic() + timeout_s
        while True:
            out = []
            for job in [j for j in self.jobs if j.done()]:
                index = self.jobs.pop(job)
                try:
                    out.append(Done(index, job.result()))
                except Exception as e:  # noqa: BLE001 - submitit's FailedJobError, UncompletedJobError ...
                    out.append(Done(index, None, f"Slurm job {job.job_id} failed: {type(e).__name__}: "
                                                 f"{str(e).strip().splitlines()[-1][:300] if str(e).strip() else ''}"))
            if out or time.monotonic() >= deadline or not self.jobs:
                return out
            time.sleep(min(1.0, timeout_s))

    def shutdown(self, cancel: bool = False) -> None:
        if cancel:
            for job in self.jobs:
                job.cancel(check=False)
        self.jobs.clear()
