"""What every executor runs for one cell: :func:`execute` (in a Ray task, a Slurm job, a pool process).

``python -m bench.executors.worker TASK.json OUT.json`` is the local pool's worker process: it reads a
:class:`bench.executors.CellTask`, runs the cell and writes the outcome JSON atomically (no file: it died).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any


def execute(task: dict[str, Any]) -> dict[str, Any]:
    """Run one cell (a :class:`CellTask` as a dict) with its lease; return its :class:`CellOutcome` as a dict.

    A :class:`bench.errors.BenchError` before the run starts (missing data, bad plugin) is returned
    as a failed outcome; a KeyboardInterrupt propagates (the run is ended KILLED).
    """
    if task.get("lease_timeout_s") is not None:
        os.environ["BENCH_LEASE_TIMEOUT"] = str(task["lease_timeout_s"])
    from bench.errors import BenchError
    from bench.plan import CellSpec
    from bench.runner import CellOutcome, run_cell

    spec = CellSpec.from_json(task["spec_json"], f"cell {task['index']}")
    try:
        o = run_cell(spec, task["tracking_uri"], task["parent_run_id"], progress=False,
                     skip_finished=not task["force"])
    except BenchError as e:
        o = CellOutcome(spec.method, spec.seed, "failed", error=str(e))
    out = dataclasses.asdict(o)
    out.update(host=os.uname().nodename, pid=os.getpid())
    return out


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _die_with_driver(poll_s: float = 1.0) -> None:
    """A pool worker whose driver is gone (``kill -9`` included) SIGTERMs itself: its cell ends KILLED
    and its lease is released, instead of an orphan computing (and heartbeating) for no one."""
    import threading
    import time

    parent = os.getppid()

    def watch():
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="bench-driver-watch", daemon=True).start()


def main(argv: list[str]) -> int:
    """``--serve``: read ``TASK.json<TAB>OUT.json`` lines from stdin until EOF; else run ``TASK.json OUT.json``."""
    signal.signal(signal.SIGTERM, _raise_interrupt)  # the driver's cancel: the run ends KILLED
    _die_with_driver()
    threads = os.environ.get("BENCH_WORKER_THREADS")
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    from bench import registry
    from bench.locks import write_atomic

    registry.load_light()  # a cell imports its own adapter and metric modules (registry.get), once per worker
    jobs = (line.rstrip("\n").split("\t") for line in sys.stdin) if argv[:1] == ["--serve"] else [argv[:2]]
    for task_path, out_path in jobs:
        out = execute(json.loads(Path(task_path).read_text()))
        write_atomic(Path(out_path), json.dumps(out).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
