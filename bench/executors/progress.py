"""The driver's progress table: cells queued / running / finished / failed, with an ETA.

A live :mod:`rich` table on a terminal; elsewhere (logs, CI, ``--no-progress``) one line per change.
ETA = elapsed / cells done x cells left (the driver's throughput so far, all workers together).
"""
from __future__ import annotations

import sys
import time
from collections import Counter

COLUMNS = ("queued", "running", "waiting", "finished", "skipped", "failed")


class ProgressView:
    def __init__(self, cells, executor: str, workers: int, live: bool = True):
        self.cells, self.executor, self.workers = cells, executor, workers
        self.t0 = time.monotonic()
        self.last: tuple | None = None
        self.live = None
        if live and sys.stderr.isatty():
            from rich.console import Console
            from rich.live import Live

            self.live = Live(self._table({}), console=Console(stderr=True), refresh_per_second=2, transient=False)
            self.live.start()

    def eta(self, counts: Counter) -> str:
        done = counts["finished"] + counts["skipped"] + counts["failed"]
        left = len(self.cells) - done
        if not left:
            return "0s"
        if not counts["finished"]:
            return "?"
        s = (time.monotonic() - self.t0) / counts["finished"] * left
        return f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f}s"

    def _table(self, state: dict):
        from rich.table import Table

        counts = Counter(state.values())
        t = Table(title=f"{len(self.cells)} cells on {self.executor} ({self.workers} workers), "
                        f"{time.monotonic() - self.t0:.0f}s, ETA {self.eta(counts)}")
        for c in COLUMNS:
            t.add_column(c, justify="right")
        t.add_row(*(str(counts[c]) for c in COLUMNS))
        for i, s in sorted(state.items()):
            if s in ("running", "waiting", "failed"):
                t.add_row(*[f"{self.cells[i].method} s{self.cells[i].seed}" if c == s else "" for c in COLUMNS])
        return t

    def update(self, state: dict) -> None:
        if self.live is not None:
            self.live.update(self._table(state))
            return
        counts = Counter(state.values())
        key = tuple(counts[c] for c in COLUMNS)
        if key != self.last:
            self.last = key
            print("[bench] cells: " + ", ".join(f"{c} {counts[c]}" for c in COLUMNS)
                  + f" | {time.monotonic() - self.t0:.0f}s, ETA {self.eta(counts)}", file=sys.stderr, flush=True)

    def note(self, msg: str) -> None:
        (self.live.console.print if self.live is not None else lambda m: print(m, file=sys.stderr, flush=True))(
            f"[bench] {msg}")

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
