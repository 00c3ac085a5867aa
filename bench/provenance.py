"""Provenance of a run: the code's git SHA, the package versions and the float settings.

Logged as tags on every cell run (``bench.git_sha``, ``bench.version.*``, ``bench.numerics.*``)
and written into regression-gate baselines.
"""
from __future__ import annotations

import importlib.metadata
import subprocess

from bench.suite import REPO_ROOT

PACKAGES = ("torch", "torchvision", "transformers", "peft", "torch-fidelity", "clean-fid", "torchmetrics",
            "scikit-learn", "mlflow", "lm_eval", "numpy")


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        sha = out.stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


NUMERICS_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")
"""Environment variables that change float results on a CPU (logged with every gate run)."""


def numerics() -> dict[str, str]:
    """This process's floating-point setting: torch's CPU kernel level, threads, pinned env vars, CPU model."""
    import os
    import platform

    import torch

    cpu = platform.processor() or ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": str(torch.get_num_threads()),
            **{k: os.environ[k] for k in NUMERICS_ENV if k in os.environ}}
