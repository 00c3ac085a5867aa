"""The local executor: cells on this machine, in ``--workers N`` worker processes.

Each worker is a long-lived ``python -m bench.executors.worker --serve`` process that runs one cell
at a time; a worker that dies (``kill -9``, out of memory) takes only its own cell with it and is
replaced. Threads: every worker gets ``OMP_NUM_THREADS`` =
``MKL_NUM_THREADS`` = ``cores // N`` (at most the caller's ``OMP_NUM_THREADS``), set before torch
is imported, so N workers never oversubscribe the cores. On a machine with GPUs, the default N is
the number of visible GPUs and slot i sees only GPU i (``CUDA_VISIBLE_DEVICES``).

``--workers 1`` (:class:`InlineExecutor`) runs the cells one after another inside the driver
process, exactly as ``bench run`` did before executors existed (progress bars included).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Hashable

from bench.executors import CellTask, Done, ExecutorOptions

MAX_DEFAULT_WORKERS = 8
POOL_PREFIX = "bench-pool-"
"""Temp directories of a pool: ``bench-pool-<driver pid>-<random>`` (task and outcome files)."""


def remove_stale_pool_dirs(root: str | None = None) -> list[Path]:
    """Delete the pool directories of drivers that are gone (a ``kill -9`` skips their cleanup); return them.

    ``bench-pool-<pid>-*`` whose pid is not alive; older ones without a pid, after a day."""
    import re
    import shutil
    import time

    from bench.locks import pid_alive

    out = []
    base = Path(root or tempfile.gettempdir())
    for d in base.glob(f"{POOL_PREFIX}*"):
        m = re.match(re.escape(POOL_PREFIX) + r"(\d+)-", d.name)
        try:
            dead = (not pid_alive(int(m.group(1)), d.stat().st_mtime * 1000)) if m else \
                time.time() - d.stat().st_mtime > 86400
        except OSError:
            continue
        if dead and d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
            out.append(d)
    return out


def cores() -> int:
    """CPU cores this process may use (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def visible_gpus() -> list[str]:
    """Ids of the visible CUDA devices ([] without CUDA), as ``CUDA_VISIBLE_DEVICES`` entries."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d for d in env.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    except Exception:  # noqa: BLE001 - no usable CUDA: a CPU box
        return []


def default_workers() -> int:
    """One worker per visible GPU; without GPUs, one per core (at most 8)."""
    gpus = visible_gpus()
    return len(gpus) if gpus else min(cores(), MAX_DEFAULT_WORKERS)


def worker_threads(workers: int) -> int:
    """Threads per worker: ``cores // workers`` (>= 1), capped by the caller's ``OMP_NUM_THREADS``."""
    n = max(1, cores() // max(1, workers))
    cap = os.environ.get("OMP_NUM_THREADS", "")
    return min(n, int(cap)) if cap.isdigit() and int(cap) > 0 else n


def worker_env(threads: int, gpu: str | None) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "BENCH_WORKER_THREADS"):
        env[k] = str(threads)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    repo = str(Path(__file__).resolve().parents[2])  # the worker imports this checkout's bench
    # and finds what the driver finds (plugin modules on the driver's sys.path), not the interpreter's own dirs
    prefixes = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})
    extra = [p for p in sys.path if p and os.path.isdir(p) and not p.startswith(prefixes)]
    paths = [repo] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p] + extra
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


class InlineExecutor:
    """``--workers 1``: each cell runs in the driver process when polled (today's ``bench run``)."""

    name = "local"

    def __init__(self, progress: bool = True):
        self.pending: list[CellTask] = []
        self.progress = progress

    def submit(self, task: CellTask) -> Hashable:
        self.pending.append(task)
        return task.index

    def poll(self, timeout_s: float) -> list[Done]:
        if not self.pending:
            import time

            time.sleep(timeout_s)
            return []
        task = self.pending.pop(0)
        from bench.executors.worker import execute

        if task.lease_timeout_s is not None:
            os.environ["BENCH_LEASE_TIMEOUT"] = str(task.lease_timeout_s)
        return [Done(task.index, execute(task.to_dict()))]

    def shutdown(self, cancel: bool = False) -> None:
        self.pending.clear()


class PoolExecutor:
    """``--workers N`` (N > 1): N long-lived worker processes, each running one cell at a time.

    Not :class:`concurrent.futures.ProcessPoolExecutor`: when one of its workers dies it breaks the
    whole pool and terminates the other workers, losing their cells; here a dead worker loses only
    its own cell (reported as :class:`Done` without outcome) and is replaced by a fresh process.
    Workers import the harness once, at start, so a cell pays no start-up.
    """

    name = "local"

    def __init__(self, workers: int):
        self.workers = workers
        self.threads = worker_threads(workers)
        gpus = visible_gpus()
        self.gpu = [gpus[i % len(gpus)] if gpus else None for i in range(workers)]
        self.procs: list[subprocess.Popen | None] = [None] * workers
        self.busy: list[tuple[CellTask, Path] | None] = [None] * workers
        self.queue: list[CellTask] = []
        remove_stale_pool_dirs()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{POOL_PREFIX}{os.getpid()}-"))
        self.count = 0
        for i in range(workers):
            self._spawn(i)

    def _spawn(self, slot: int) -> None:
        self.procs[slot] = subprocess.Popen([sys.executable, "-m", "bench.executors.worker", "--serve"],
                                            stdin=subprocess.PIPE, text=True,
                                            env=worker_env(self.threads, self.gpu[slot]))

    def submit(self, task: CellTask) -> Hashable:
        self.queue.append(task)
        return task.index

    def _dispatch(self) -> None:
        alive = [i for i, p in enumerate(self.procs) if p is not None and p.poll() is None]
        for slot in alive + [i for i in range(self.workers) if i not in alive]:  # warm workers first
            if not self.queue:
                return
            if self.busy[slot] is not None:
                continue
            proc = self.procs[slot]
            if proc is None or proc.poll() is not None:
                self._spawn(slot)
                proc = self.procs[slot]
            task = self.queue.pop(0)
            self.count += 1
            tpath, opath = self.tmp / f"task{self.count}.json", self.tmp / f"out{self.count}.json"
            tpath.write_text(json.dumps(task.to_dict()))
            try:
                proc.stdin.write(f"{tpath}\t{opath}\n")
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self.queue.insert(0, task)  # died before taking it: the next round spawns a new one
                self.procs[slot] = None
                continue
            self.busy[slot] = (task, opath)

    def poll(self, timeout_s: float) -> list[Done]:
        import time

        deadline = time.monotonic() + timeout_s
        out: list[Done] = []
        while True:
            self._dispatch()
            for slot, job in enumerate(self.busy):
                if job is None:
                    continue
                task, opath = job
                proc = self.procs[slot]
                if opath.exists():
                    out.append(Done(task.index, json.loads(opath.read_text())))
                    self.busy[slot] = None
                elif proc is None or proc.poll() is not None:
                    rc = proc.returncode if proc is not None else None
                    how = f"killed by signal {-rc}" if rc is not None and rc < 0 else f"exited with status {rc}"
                    out.append(Done(task.index, None, f"worker process {proc.pid if proc else '?'} {how} mid-cell"))
                    self.busy[slot], self.procs[slot] = None, None
            if out or time.monotonic() >= deadline:
                self._dispatch()
                return out
            time.sleep(0.1)

    def worker_pids(self) -> dict[int, int]:
        """Cell index -> pid of the worker process running it (for tests and diagnostics)."""
        return {job[0].index: p.pid for job, p in zip(self.busy, self.procs) if job is not None and p is not None}

    def shutdown(self, cancel: bool = False) -> None:
        import shutil
        import time

        self.queue.clear()
        for p in self.procs:
            if p is None or p.poll() is not None:
                continue
            if cancel:
                p.send_signal(signal.SIGTERM)  # a running cell ends KILLED
            try:
                p.stdin.close()  # no more tasks: the worker exits
            except OSError:
                pass
        deadline = time.monotonic() + 30
        for p in self.procs:
            if p is not None:
                try:
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def max_workers() -> int:
    """The most local workers started without ``--allow-oversubscribe``: one per core (or per GPU)."""
    return max(cores(), len(visible_gpus()))


def check_workers(workers: int | None, allow_oversubscribe: bool = False) -> None:
    """Refuse more local workers than :func:`max_workers` unless asked for explicitly: each worker is a
    process importing torch (hundreds of MB); a thousand of them exhaust memory and threads."""
    if workers is None or allow_oversubscribe:
        return
    cap = max_workers()
    if workers > cap:
        from bench.errors import BenchError

        raise BenchError(f"--workers {workers}: more than this machine's {cap} cores"
                         f"{' / GPUs' if visible_gpus() else ''}; use at most {cap}, or add --allow-oversubscribe "
                         "to start that many processes anyway")


def make_local(opts: ExecutorOptions, progress: bool = True):
    check_workers(opts.workers, opts.allow_oversubscribe)
    workers = opts.workers or default_workers()
    return InlineExecutor(progress) if workers <= 1 else PoolExecutor(workers)
