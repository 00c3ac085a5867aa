"""Inter-process file locks and process liveness: what several ``bench`` processes on one store share.

:func:`file_lock` is an exclusive advisory lock on a lock file (``fcntl.flock`` on POSIX, the
``filelock`` package elsewhere); the lock file is never deleted, so every process locks the same
inode. :func:`write_atomic` writes a file under a unique temporary name (pid + random) and renames
it into place, so a reader never sees a half-written file and two writers never share a temp file.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

LOCK_TIMEOUT_S = 600.0


class LockTimeout(RuntimeError):
    pass


@contextlib.contextmanager
def file_lock(path: str | Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if absent) for the ``with`` block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        import filelock

        try:
            with filelock.FileLock(str(path), timeout=timeout):
                yield
        except filelock.Timeout:
            raise LockTimeout(f"could not lock {path} within {timeout:.0f}s (another bench process holds it)") from None
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeout(f"could not lock {path} within {timeout:.0f}s "
                                      "(another bench process holds it)") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


TMP_SUFFIX = ".tmp"


def temp_name(path: Path) -> Path:
    """``<name>.<pid>-<8 hex>.tmp`` beside ``path``: unique per process and per call."""
    return path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TMP_SUFFIX}")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a unique temp file, fsync and rename (atomic on one file system)."""
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def store_lock_path(uri: str) -> Path | None:
    """The lock file that serialises creating/migrating the sqlite MLflow store at ``uri`` (``<db>.lock``;
    None if ``uri`` is not sqlite). Held by :class:`bench.tracking.Tracker` and by ``bench ui``."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    return db.with_name(db.name + ".lock")


def hostname() -> str:
    return socket.gethostname()


def pid_alive(pid: int, started_ms: int | None = None) -> bool:
    """Whether process ``pid`` runs on this machine (and, if ``started_ms`` is given and psutil can
    tell, was already running at that time, i.e. is not a later process that reused the pid)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        import psutil
    except ImportError:
        return True
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if started_ms is not None and proc.create_time() * 1000 > started_ms + 2000:
            return False  # born after the run started: the pid was reused
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        pass  # access denied: it exists
    return True
