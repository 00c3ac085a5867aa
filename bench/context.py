"""What a cell (one method x one seed of a suite) sees while it runs."""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch

from bench.locks import file_lock, write_atomic
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
    if env is None:
        return RESULTS_DIR
    if not env.strip():
        from bench.errors import BenchError

        raise BenchError("BENCH_RESULTS_DIR is set but empty: give a directory (or unset it for the "
                         f"default {RESULTS_DIR})")
    return Path(env).expanduser().absolute()


def under_results(path: str | os.PathLike, what: str = "output") -> Path:
    """``path`` resolved, if it lies inside :func:`results_dir`; :class:`BenchError` otherwise.

    Every file the harness names after a suite or a method (leaderboards, exports, figures) goes
    through this: a name can never write outside the results directory, whatever it holds."""
    from bench.errors import BenchError

    root = results_dir().resolve()
    p = Path(path)
    resolved = (p if p.is_absolute() else root / p).resolve()
    if resolved != root and root not in resolved.parents:
        raise BenchError(f"{what}: {path} resolves to {resolved}, outside the results directory {root}; refused")
    if resolved == root:
        raise BenchError(f"{what}: {path} is the results directory itself, not a place inside it; refused")
    return resolved


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


CHECKSUM_SUFFIX = ".sha256"
LOCK_SUFFIX = ".lock"


def checksum_path(path: Path) -> Path:
    """The sidecar ``<file>.sha256`` (``sha256sum`` format) recorded when a cache entry is written."""
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Cache:
    """A directory of cached artefacts (trained weights, reference statistics) keyed by hash.

    ``results/cache/<kind>/<key>.<ext>`` beside ``<key>.<ext>.sha256``, the sha256 recorded at write
    time. Writes go to a unique temp file (pid + random) renamed into place, under a per-entry lock
    (``<key>.<ext>.lock``), so any number of processes may save and load one key at once. A load
    verifies the checksum: a corrupt or truncated entry is named in a warning on stderr and treated
    as missing, so the caller recomputes it (and its save replaces the entry).
    """

    root: Path = field(default_factory=lambda: results_dir() / "cache")

    def path(self, kind: str, key: str, ext: str = "pt") -> Path:
        """``root/<kind>/<key>.<ext>``; under a non-default torch dtype (a ``precision: float64`` cell)
        the kind is suffixed (``tokenizer.float64``), so weights trained at another precision never
        share an entry whatever the caller's key holds."""
        t = sys.modules.get("torch")  # not imported yet: the default dtype is float32
        if t is not None and t.get_default_dtype() is not t.float32:
            kind = f"{kind}.{str(t.get_default_dtype()).removeprefix('torch.')}"
        p = self.root / kind / f"{key}.{ext}"
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    # -- bytes: every writer and reader goes through these ----------------------------------------
    def save_bytes(self, kind: str, key: str, data: bytes, ext: str = "pt") -> Path:
        """Write an entry and its checksum atomically (checksum first: a reader that sees the new
        file sees its checksum, or the old file with the new checksum, which :meth:`load_bytes`
        settles under the lock)."""
        p = self.path(kind, key, ext)
        digest = hashlib.sha256(data).hexdigest()
        with file_lock(_lock_path(p)):
            write_atomic(checksum_path(p), f"{digest}  {p.name}\n".encode())
            write_atomic(p, data)
        return p

    def load_bytes(self, kind: str, key: str, ext: str = "pt") -> bytes | None:
        """An entry's bytes if present and matching its recorded sha256; else ``None`` (a corrupt
        entry is reported on stderr). An entry without a checksum (written before checksums) is
        returned as is; :meth:`load_torch` checks it loads, then records its checksum."""
        return self._load(self.path(kind, key, ext), None)

    def problem(self, path: Path) -> str | None:
        """Why the entry at ``path`` must not be trusted (checksum mismatch, unreadable), or ``None``.

        An entry without a checksum is checked by loading it if it is a ``.pt`` file; other files
        without a checksum were not written by the cache and are not judged."""
        entry = _read_entry(path)
        if entry is None:
            return None
        data, expected = entry
        if expected is not None and _mismatch(data, expected):
            with file_lock(_lock_path(path)):  # not a writer between its two renames?
                entry = _read_entry(path)
            if entry is None:
                return None
            data, expected = entry
        if expected is not None:
            return _mismatch(data, expected)
        if path.suffix == ".pt":
            try:
                _torch_load(data)
            except pickle.UnpicklingError:
                return None  # loads structurally; refused by weights_only: not corruption
            except Exception as e:  # noqa: BLE001 - any failure to parse is corruption
                return f"does not load ({type(e).__name__}: {e}) and has no checksum"
        return None

    def _load(self, p: Path, parse: Callable[[bytes], Any] | None) -> Any | None:
        entry = _read_entry(p)
        if entry is None:
            return None
        data, expected = entry
        if expected is None or _mismatch(data, expected):
            # a writer may be between its two renames: settle under the entry's lock
            with file_lock(_lock_path(p)):
                entry = _read_entry(p)
                if entry is None:
                    return None
                data, expected = entry
                if expected is None:  # legacy entry: trust it only if it parses, then record it
                    if parse is None:
                        return data
                    obj = self._parse(p, data, parse, "has no checksum and")
                    if obj is not None:
                        write_atomic(checksum_path(p), f"{hashlib.sha256(data).hexdigest()}  {p.name}\n".encode())
                    return obj
                bad = _mismatch(data, expected)
                if bad:
                    _say(f"[bench] warning: cache entry {p} is corrupt ({bad}): ignoring it; it will be recomputed")
                    return None
        return self._parse(p, data, parse) if parse else data

    @staticmethod
    def _parse(p: Path, data: bytes, parse, what: str = "matches its checksum but") -> Any | None:
        if parse is None:
            return data
        try:
            return parse(data)
        except pickle.UnpicklingError as e:
            if what.startswith("matches"):  # intact bytes that weights_only refuses: a bug in what was saved
                raise RuntimeError(f"cache entry {p}: {e}") from e
            _say(f"[bench] warning: cache entry {p} {what} does not load ({type(e).__name__}): "
                 "ignoring it; it will be recomputed")
            return None
        except Exception as e:  # noqa: BLE001 - anything else is a damaged file
            _say(f"[bench] warning: cache entry {p} {what} does not load ({type(e).__name__}: {e}): "
                 "ignoring it; it will be recomputed")
            return None

    def load_parsed(self, kind: str, key: str, parse: Callable[[bytes], Any], ext: str) -> Any | None:
        """``parse(bytes)`` of a verified entry; ``None`` if absent, corrupt or unparsable (reported on
        stderr): the caller recomputes and saves it again. Any format (JSON, safetensors ...)."""
        return self._load(self.path(kind, key, ext), parse)

    def load_json(self, kind: str, key: str) -> Any | None:
        """The JSON value saved by :meth:`save_json` (``<key>.json``), or ``None`` (see :meth:`load_parsed`)."""
        return self.load_parsed(kind, key, lambda b: json.loads(b.decode("utf-8")), "json")

    def save_json(self, kind: str, key: str, text: str) -> Path:
        """Save JSON text (e.g. ``json.dumps(...)``) as ``<key>.json`` with its checksum, atomically."""
        return self.save_bytes(kind, key, text.encode("utf-8"), ext="json")

    # -- torch ------------------------------------------------------------------------------------
    def load_torch(self, kind: str, key: str) -> Any | None:
        """The object saved under ``key``, or ``None`` if absent or corrupt (``weights_only=True``)."""
        return self._load(self.path(kind, key), _torch_load)

    def save_torch(self, kind: str, key: str, obj: Any) -> Path:
        import torch  # here, not at import: `bench.tracking` (and `bench doctor`) start without it

        buf = io.BytesIO()
        torch.save(obj, buf)
        return self.save_bytes(kind, key, buf.getvalue())


def _torch_load(data: bytes) -> Any:
    import torch

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _lock_path(p: Path) -> Path:
    return p.with_name(p.name + LOCK_SUFFIX)


def _read_entry(p: Path) -> tuple[bytes, str | None] | None:
    """(bytes, recorded sha256 or None), or None if the entry does not exist."""
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return None
    try:
        expected = checksum_path(p).read_text().split()[0]
    except (FileNotFoundError, IndexError):
        expected = None
    return data, expected


def _mismatch(data: bytes, expected: str) -> str | None:
    actual = hashlib.sha256(data).hexdigest()
    if actual == expected:
        return None
    return f"sha256 {actual[:12]}... of {len(data)} bytes, recorded {expected[:12]}...: truncated or damaged"


def default_device() -> torch.device:
    """``$BENCH_DEVICE`` if set, else CUDA when available, else the CPU."""
    import os

    import torch

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
