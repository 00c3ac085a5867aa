"""Registered measuring instruments: the fixed artefacts that *define* a metric.

A feature extractor, a judge or a set of reference statistics decides what a metric's number
means, so it is never retrained per machine (a different CPU trains different weights, and the
"same" metric would silently change). Each instrument is a file with a sha256, described by a
card ``<id>.json`` beside it in this folder (or, for a file another package ships, by a card
whose ``locate`` names that package):

```json
{"id": "fmnist-cnn-v1", "kind": "fmnist-classifier", "file": "fmnist-cnn-v1.safetensors",
 "sha256": "…", "description": "…", "provenance": {"recipe": {…}, "test_acc": 0.90, …}}
```

:func:`path` verifies the sha256 before anything is loaded (once per process and file state).
A new version of an instrument is a new id (``fmnist-cnn-v2``): metric parameters name the id,
the id enters the config hash and the column title, so values measured with different
instruments never share a leaderboard column or a gate baseline. Training a new version is an
explicit command (``bench instrument train fmnist-cnn --id fmnist-cnn-v2``), never a side effect
of running a suite.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from bench.context import sha256_file
from bench.errors import BenchError

INSTRUMENTS_DIR = Path(__file__).resolve().parent
"""Where shipped instrument files and their cards live (inside the package)."""


class InstrumentError(BenchError):
    """An unknown instrument id, a missing file, or a file whose sha256 is not the card's."""


@dataclass(frozen=True)
class Card:
    """What an instrument is. ``file`` is relative to the card's folder unless ``locate`` is set:
    ``"package:<import name>/<file>"`` finds a file another installed package ships."""

    id: str
    kind: str
    file: str
    sha256: str
    description: str = ""
    locate: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    folder: Path = INSTRUMENTS_DIR

    def file_path(self) -> Path:
        if self.locate:
            scheme, _, rest = self.locate.partition(":")
            if scheme != "package":
                raise InstrumentError(f"instrument {self.id}: unknown locate scheme {scheme!r}")
            pkg, _, name = rest.partition("/")
            spec = importlib.util.find_spec(pkg)  # finds the package without importing it
            if spec is None or not spec.submodule_search_locations:
                raise InstrumentError(f"instrument {self.id}: package {pkg} is not installed: run `make install`")
            return Path(list(spec.submodule_search_locations)[0]) / name
        return self.folder / self.file

    def record(self) -> dict[str, Any]:
        """Provenance for logging: id, kind, file sha256 and the card's provenance fields."""
        return {"id": self.id, "kind": self.kind, "sha256": self.sha256, **self.provenance}


def _read_card(p: Path) -> Card:
    try:
        d = json.loads(p.read_text())
        return Card(id=d["id"], kind=d["kind"], file=d["file"], sha256=d["sha256"],
                    description=d.get("description", ""), locate=d.get("locate"),
                    provenance=d.get("provenance", {}), folder=p.parent)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InstrumentError(f"{p}: not a readable instrument card ({type(e).__name__}: {e})") from None


def cards(folder: Path = INSTRUMENTS_DIR) -> dict[str, Card]:
    """Every registered instrument card, by id."""
    out: dict[str, Card] = {}
    for p in sorted(folder.glob("*.json")):
        c = _read_card(p)
        if c.id != p.stem:
            raise InstrumentError(f"{p}: card id {c.id!r} must equal the file name {p.stem!r}")
        out[c.id] = c
    return out


def card(instrument_id: str, kind: str | None = None) -> Card:
    """The card of ``instrument_id`` (raise :class:`InstrumentError` listing the known ids)."""
    known = cards()
    if instrument_id not in known or (kind and known[instrument_id].kind != kind):
        ids = sorted(i for i, c in known.items() if kind is None or c.kind == kind)
        raise InstrumentError(f"unknown instrument {instrument_id!r}" + (f" of kind {kind}" if kind else "")
                              + f"; registered: {ids} (bench/instruments/*.json)")
    return known[instrument_id]


def path(instrument_id: str, kind: str | None = None) -> Path:
    """The verified file of an instrument: exists and has the card's sha256, else :class:`InstrumentError`."""
    c = card(instrument_id, kind)
    p = c.file_path()
    if not p.is_file():
        raise InstrumentError(f"instrument {c.id}: file {p} is missing (reinstall, or `git checkout -- {p}`)")
    st = p.stat()
    got = _sha256(str(p), st.st_size, st.st_mtime_ns)
    if got != c.sha256:
        raise InstrumentError(f"instrument {c.id}: {p} has sha256 {got}, its card says {c.sha256}: the file is "
                              "corrupt or was replaced; restore it (`git checkout`) or register a new id")
    return p


@lru_cache(maxsize=16)
def _sha256(p: str, size: int, mtime_ns: int) -> str:
    return sha256_file(p)


def write_card(c: Card) -> Path:
    """Write ``<folder>/<id>.json`` (refuses to overwrite an existing id: a new version is a new id)."""
    out = c.folder / f"{c.id}.json"
    if out.exists():
        raise InstrumentError(f"{out} exists: instrument ids are immutable, choose a new id")
    doc = {"id": c.id, "kind": c.kind, "file": c.file, "sha256": c.sha256, "description": c.description,
           **({"locate": c.locate} if c.locate else {}), "provenance": c.provenance}
    out.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return out
