"""`bench ui`'s server process: started in its own process group, signals forwarded, nothing left
on the port; the sqlite store's creation lock held until the server answers (it migrates the store
at start-up). Split out of :mod:`bench.cli`.
"""
from __future__ import annotations

import os
import signal
import subprocess


def _answers(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def serve(cmd: list[str], env: dict, grace_s: float = 10.0, store_lock=None, port: int | None = None) -> int:
    """Run ``cmd`` (the MLflow server and its workers) in its own process group until it exits.

    SIGTERM/SIGINT to ``bench ui`` are forwarded as SIGTERM to the whole group, which is then
    waited for (SIGKILL after ``grace_s``), so no server or worker is left holding the port.
    ``store_lock``: the sqlite store's creation lock (:func:`bench.tracking.store_lock_path`), held
    from before the server starts until it answers on ``port``: the server creates or migrates the
    store at start-up, so no `bench run` does it at the same time.
    Returns the server's exit status, or 0 after a forwarded stop.
    """
    import contextlib
    import time

    from bench.locks import file_lock

    held = contextlib.ExitStack()
    if store_lock is not None:
        held.enter_context(file_lock(store_lock))
    try:
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    except BaseException:
        held.close()
        raise
    stop_at: list[float] = []

    def forward(signum, frame):
        if not stop_at:
            stop_at.append(time.monotonic())
        _signal_group(proc.pid, signal.SIGTERM)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while (rc := proc.poll()) is None:
            if store_lock is not None and port is not None and _answers(port):
                held.close()  # migrated and serving: other processes may open the store now
                store_lock = None
            if stop_at and time.monotonic() - stop_at[0] > grace_s:
                _signal_group(proc.pid, signal.SIGKILL)
            time.sleep(0.1)
    finally:
        held.close()
        _reap_group(proc.pid, grace_s)
        for s, h in old.items():
            signal.signal(s, h)
    return 0 if stop_at else rc


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # only zombies left (macOS); nothing holds the port
        return False


def _reap_group(pgid: int, grace_s: float) -> None:
    """Stop what is left of group ``pgid`` (workers outliving the server): SIGTERM, then SIGKILL."""
    import time

    if not _signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace_s
    while _signal_group(pgid, 0):
        if time.monotonic() > deadline:
            _signal_group(pgid, signal.SIGKILL)
            return
        time.sleep(0.1)
