"""The Ray executor: one Ray task per cell, with a CPU/GPU request, on a Ray cluster.

``--address`` (or the suite's ``executor.address``) joins a running cluster (``ray start --head`` on
one machine, ``ray start --address HEAD:6379`` on the others); without it a local Ray is started for
the run (``ray.init(num_cpus=<cores>, include_dashboard=False)``) and stopped afterwards. Each task
asks for ``--cpus-per-cell`` CPUs (default 1) and ``--gpus-per-cell`` GPUs (default 0); Ray sets the
task's ``OMP_NUM_THREADS`` to its CPUs and ``CUDA_VISIBLE_DEVICES`` to its GPUs. A task whose worker
process or node dies is retried by Ray (``max_retries``); the retry claims the cell's lease again,
which ends the dead attempt's run FAILED (at once on the same host, after the lease timeout elsewhere).
The tracking URI must be reachable from every node (an MLflow server, ``bench server``), unless the
cluster is this one machine.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Hashable

from bench.errors import BenchError
from bench.executors import CellTask, Done, ExecutorOptions

MAX_RETRIES = 2


def _run_task(task: dict) -> dict:
    from bench.executors.worker import execute

    return execute(task)


class RayExecutor:
    name = "ray"

    def __init__(self, opts: ExecutorOptions):
        try:
            import ray
        except ImportError:
            raise BenchError("--executor ray needs Ray: pip install ray==2.60.0 (pinned in requirements.txt)") from None
        self.ray = ray
        self.started_here = False
        repo = str(Path(__file__).resolve().parents[2])
        env = {"PYTHONPATH": os.pathsep.join(p for p in [repo, os.environ.get("PYTHONPATH", "")] if p),
               "MLFLOW_DISABLE_TELEMETRY": "true"}
        for k in ("BENCH_RESULTS_DIR", "BENCH_LEASE_TIMEOUT", "BENCH_LEASE_HEARTBEAT", "HF_HUB_OFFLINE",
                  "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            if k in os.environ:
                env[k] = os.environ[k]
        if not ray.is_initialized():
            if opts.address:
                ray.init(address=opts.address, runtime_env={"env_vars": env}, log_to_driver=True)
            else:
                from bench.executors.local import cores

                ray.init(num_cpus=cores(), include_dashboard=False, runtime_env={"env_vars": env},
                         log_to_driver=True)
                self.started_here = True
        cpus = opts.cpus_per_cell if opts.cpus_per_cell is not None else 1
        gpus = opts.gpus_per_cell if opts.gpus_per_cell is not None else 0
        self.workers = int(ray.cluster_resources().get("CPU", 1) // max(cpus, 1e-9))
        self.remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=MAX_RETRIES)(_run_task)
        self.refs: dict = {}

    def submit(self, task: CellTask) -> Hashable:
        self.refs[self.remote.remote(task.to_dict())] = task.index
        return task.index

    def poll(self, timeout_s: float) -> list[Done]:
        if not self.refs:
            import time

            time.sleep(timeout_s)
            return []
        ready, _ = self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=timeout_s)
        out = []
        for ref in ready:
            index = self.refs.pop(ref)
            try:
                out.append(Done(index, self.ray.get(ref)))
            except Exception as e:  # noqa: BLE001 - worker lost beyond retries, or the task raised
                out.append(Done(index, None, f"Ray task failed: {type(e).__name__}: {str(e)[:500]}"))
        return out

    def shutdown(self, cancel: bool = False) -> None:
        if cancel:
            for ref in list(self.refs):
                self.ray.cancel(ref, force=False)  # KeyboardInterrupt in the task: its run ends KILLED
        self.refs.clear()
        if self.started_here:
            self.ray.shutdown()
