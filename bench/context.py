"""What a cell (one method x one seed of a suite) sees while it runs."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from bench.suite import REPO_ROOT

RESULTS_DIR = REPO_ROOT / "results"
"""The default results location; assigning another path here (tests) overrides the variable below."""


def results_dir() -> Path:
    """Where the MLflow store, the cache and leaderboards go, resolved at call time.

    :data:`RESULTS_DIR` if reassigned, else ``$BENCH_RESULTS_DIR`` (what ``bench --results-dir``
    sets), else ``<repo>/results``.
    """
    if RESULTS_DIR != REPO_ROOT / "results":
        return Path(RESULTS_DIR)
    env = os.environ.get("BENCH_RESULTS_DIR")
    return Path(env).expanduser().absolute() if env else RESULTS_DIR


def stable_hash(obj: Any, n: int = 16) -> str:
    """sha256 (hex, ``n`` chars) of the canonical JSON of ``obj``: keys configs and caches."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Cache:
    """A directory of cached artefacts (trained weights, reference statistics) keyed by hash.

    ``results/cache/<kind>/<key>.<ext>``; writes are atomic (temp file + rename), so an
    interrupted run never leaves a half-written entry that a rerun would trust.
    """

    root: Path = field(default_factory=lambda: results_dir() / "cache")

    def path(self, kind: str, key: str, ext: str = "pt") -> Path:
        p = self.root / kind / f"{key}.{ext}"
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def load_torch(self, kind: str, key: str) -> Any | None:
        p = self.path(kind, key)
        if not p.exists():
            return None
        return torch.load(p, map_location="cpu", weights_only=True)

    def save_torch(self, kind: str, key: str, obj: Any) -> Path:
        p = self.path(kind, key)
        tmp = p.with_suffix(p.suffix + ".tmp")
        torch.save(obj, tmp)
        tmp.replace(p)
        return p


def default_device() -> torch.device:
    """``$BENCH_DEVICE`` if set, else CUDA when available, else the CPU."""
    import os

    name = os.environ.get("BENCH_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class CellContext:
    """Everything an adapter's ``prepare`` and a metric's ``compute`` may use.

    ``budget`` is the resolved budget (suite budget merged with the method's overrides),
    ``log_artifact(path)`` / ``log_metric(key, value, step)`` write to this cell's MLflow run,
    ``artifact_dir`` is a scratch directory whose files are logged when the cell ends;
    ``inputs`` is the cell's :class:`bench.inputs.InputProvider` (made by ``bench.inputs.provider(ctx)``).
    """

    suite: Any
    method: Any
    seed: int
    budget: dict
    dataset: Any
    cache: Cache
    artifact_dir: Path
    log_metric: Callable[[str, float, int | None], None] = lambda k, v, s=None: None
    log_param: Callable[[str, Any], None] = lambda k, v: None
    device: torch.device = field(default_factory=lambda: default_device())
    progress: bool = True
    inputs: Any = None
