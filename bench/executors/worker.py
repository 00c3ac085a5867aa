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


GRACE_S = 5.0
"""Seconds a worker whose driver died has to end its cell KILLED before it exits regardless."""


def _die_with_driver(poll_s: float = 0.5, grace_s: float = GRACE_S) -> None:
    """A pool worker whose driver is gone (``kill -9`` included) SIGTERMs itself: its cell ends KILLED
    and its lease is released, instead of an orphan computing (and heartbeating) for no one.

    On Linux the kernel sends the SIGTERM when the driver dies (``PR_SET_PDEATHSIG``); a thread also
    polls the parent pid (any platform, and a driver that died before the call). A main thread stuck
    in native code (a long torch op) may not run the handler: after ``grace_s`` the process exits
    anyway (its lease then goes stale and the next claimer ends its run)."""
    import threading
    import time

    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass  # the polling thread below still notices

    def watch():
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(143)  # the cell did not end in time: leave now (128 + SIGTERM)

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
