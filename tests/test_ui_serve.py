"""`bench ui` and `bench server` share one server supervisor (bench.ui_server.serve): SIGTERM and SIGINT
are forwarded to the server's whole process group, which is waited for, so nothing is left running.

A stand-in server (a sleeping Python process with a child of its own) makes this fast; the real
MLflow servers are started once each in tests/test_safety.py and tests/test_server.py.
"""
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

SUPERVISOR = """
import os, sys
from bench.ui_server import serve
server = [sys.executable, "-c", "import subprocess, sys, time; "
          "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)"]
sys.exit(serve(server, dict(os.environ), grace_s=5.0))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_forwards_the_signal_and_leaves_no_process(sig):
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        while len(kids := psutil.Process(proc.pid).children(recursive=True)) < 2:  # the server and its child
            assert proc.poll() is None and time.monotonic() < deadline, "the stand-in server did not start"
            time.sleep(0.1)
        pids = [k.pid for k in kids]
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0  # a forwarded stop is a clean exit
        deadline = time.monotonic() + 10
        while alive := [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]:
            assert time.monotonic() < deadline, f"left running after {sig.name}: {alive}"
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
        for k in psutil.Process().children(recursive=True):
            k.kill()
