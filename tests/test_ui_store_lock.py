"""`bench ui`'s server creates/migrates the sqlite store under the store's creation lock.

A stand-in server (no MLflow: fast) records whether the lock is held while it starts, then listens;
the lock must be held until it answers on its port and free afterwards, and SIGTERM stops it.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from bench.locks import file_lock, store_lock_path
from loopback import answers, free_port

REPO = Path(__file__).resolve().parents[1]

FAKE_SERVER = textwrap.dedent("""
    import fcntl, os, socket, sys, time
    lock, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        state = "free"
    except BlockingIOError:
        state = "held"
    open(out, "w").write(state)
    time.sleep(0.5)  # "migrating"
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port)); s.listen()
    while True:
        c, _ = s.accept(); c.close()
""")


def _port() -> int:
    return free_port()


def _answers(port: int) -> bool:
    return answers(port, 0.2)


def test_ui_holds_the_store_lock_until_its_server_answers(tmp_path):
    lock = store_lock_path(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert lock == tmp_path / "mlflow.db.lock"
    port, state = _port(), tmp_path / "state"
    server = [sys.executable, "-c", FAKE_SERVER, str(lock), str(port), str(state)]
    driver = (f"from bench.ui_server import serve; import sys, pathlib; "
              f"sys.exit(serve({server!r}, dict(__import__('os').environ), store_lock=pathlib.Path({str(lock)!r}), "
              f"port={port}))")
    proc = subprocess.Popen([sys.executable, "-c", driver], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 60
        while not _answers(port):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        assert state.read_text() == "held"  # the server started while bench ui held the store's lock
        with file_lock(lock, timeout=10):  # and it is released once the server answers
            pass
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while _answers(port):
            assert time.monotonic() < deadline, "server left on the port"
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
