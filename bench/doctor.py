"""``bench doctor``: what interrupted processes left behind in a store and a cache, and the repair.

* a *stale run*: a RUNNING suite or cell run whose process is gone: its tags ``bench.host`` name
  this machine and the process ``bench.pid`` is not alive (or is a later process that reused the
  pid), or it is a cell lease (:mod:`bench.leases`) whose heartbeat is older than the lease timeout.
  Other runs started on other machines, or before these tags existed, are reported, never changed.
  The fix marks a stale run FAILED with tag ``bench.error`` = the reason.
* a *corrupt cache entry*: a cached file whose bytes do not match the sha256 recorded when it was
  written (or, for an entry from before checksums, a ``.pt`` that does not load). The fix deletes it
  (and its checksum) so the next run recomputes it. A directory entry (:mod:`bench.cache_tree`: a
  pre-trained model, generated task data) is corrupt if a file differs from its ``SHA256SUMS``.
* a *stale temporary*: ``<entry>.<pid>-<hex>.tmp`` older than :data:`TMP_STALE_S` (a writer that
  died before its rename). The fix deletes it.
"""
from __future__ import annotations

import contextlib
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import cache_tree
from bench.context import CHECKSUM_SUFFIX, LOCK_SUFFIX, Cache, checksum_path
from bench.locks import TMP_SUFFIX, hostname, pid_alive
from bench.tracking import TAG, Tracker

TMP_STALE_S = 600.0
_TMP = re.compile(r"\.\d+-[0-9a-f]{8}" + re.escape(TMP_SUFFIX) + "$")


@dataclass
class RunFinding:
    run_id: str
    experiment: str
    name: str
    kind: str
    reason: str
    stale: bool  # True: its process is gone (fixable); False: cannot tell


@dataclass
class Report:
    runs: list[RunFinding] = field(default_factory=list)
    corrupt: list[tuple[Path, str]] = field(default_factory=list)
    temporaries: list[Path] = field(default_factory=list)
    checked_entries: int = 0

    @property
    def problems(self) -> int:
        return sum(r.stale for r in self.runs) + len(self.corrupt) + len(self.temporaries)


def running_runs(tracker: Tracker) -> list[RunFinding]:
    """Every RUNNING harness run (tag ``bench.kind``) in the store, judged stale or not."""
    out: list[RunFinding] = []
    here = hostname()
    exps = {e.experiment_id: e.name for e in tracker.client.search_experiments()}
    if not exps:
        return out
    runs = tracker.client.search_runs(list(exps), "attributes.status = 'RUNNING'", max_results=50000)
    for r in runs:
        tags = r.data.tags
        kind = tags.get(f"{TAG}kind")
        if kind is None:
            continue
        pid, host = tags.get(f"{TAG}pid"), tags.get(f"{TAG}host")
        finding = RunFinding(r.info.run_id, exps.get(r.info.experiment_id, r.info.experiment_id),
                             r.info.run_name or "", kind, "", False)
        if pid is None or host is None:
            finding.reason = "no bench.pid/bench.host tags (started by an older harness): cannot tell"
        elif host != here:
            from bench.leases import HEARTBEAT, stale_reason

            why = stale_reason(r) if HEARTBEAT in tags else None  # a lease's heartbeat tells, from anywhere
            if why is None and HEARTBEAT in tags:
                continue  # its heartbeat is fresh: running
            finding.reason = (f"stale: {why} (found by bench doctor)" if why
                              else f"started on host {host} (pid {pid}): cannot tell from here")
            finding.stale = why is not None
        elif pid_alive(int(pid), r.info.start_time):
            continue  # still running
        else:
            finding.reason = f"stale: its process {pid} on {host} is gone (found by bench doctor)"
            finding.stale = True
        out.append(finding)
    return out


def scan_cache(cache: Cache, report: Report) -> None:
    root = Path(cache.root)
    if not root.is_dir():
        return
    now = time.time()
    trees = sorted(m.parent for m in root.rglob(cache_tree.MANIFEST))  # directory entries (bench.cache_tree)
    for d in trees:
        report.checked_entries += 1
        why = cache_tree.problem(d)
        if why:
            report.corrupt.append((d, why))
    for d in sorted(root.rglob(f"*{cache_tree.TMP_MARK}*")):  # build directories of dead writers
        with contextlib.suppress(FileNotFoundError):
            if d.is_dir() and now - d.stat().st_mtime > TMP_STALE_S:
                report.temporaries.append(d)
    for f in sorted(root.rglob("*")):
        if not f.is_file() or f.name.endswith((CHECKSUM_SUFFIX, LOCK_SUFFIX)):
            continue
        if any(d in f.parents for d in trees) or any(cache_tree.TMP_MARK in p.name for p in f.parents):
            continue  # checked with its directory
        if _TMP.search(f.name):
            with contextlib.suppress(FileNotFoundError):
                if now - f.stat().st_mtime > TMP_STALE_S:
                    report.temporaries.append(f)
            continue
        report.checked_entries += 1
        why = cache.problem(f)
        if why:
            report.corrupt.append((f, why))


def examine(tracker: Tracker | None, cache: Cache | None) -> Report:
    report = Report()
    if tracker is not None:
        report.runs = running_runs(tracker)
    if cache is not None:
        scan_cache(cache, report)
    return report


def fix(report: Report, tracker: Tracker | None) -> list[str]:
    """Repair what :func:`examine` found; returns one line per action."""
    done: list[str] = []
    for r in report.runs:
        if r.stale and tracker is not None:
            tracker.client.set_tag(r.run_id, f"{TAG}error", r.reason)
            tracker.end(r.run_id, "FAILED")
            done.append(f"run {r.run_id} ({r.experiment}/{r.name}) marked FAILED")
    for path, _ in report.corrupt:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            done.append(f"deleted corrupt cache directory {path}")
            continue
        for p in (path, checksum_path(path)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        done.append(f"deleted corrupt cache entry {path}")
    for path in report.temporaries:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        done.append(f"deleted stale temporary {path}")
    return done


def render(report: Report, tracker: Tracker | None, cache: Cache | None) -> str:
    lines = []
    if tracker is not None:
        stale = [r for r in report.runs if r.stale]
        lines.append(f"store {tracker.uri}: {len(stale)} stale RUNNING run(s)")
        for r in report.runs:
            mark = "STALE" if r.stale else "?    "
            lines.append(f"  {mark} {r.kind:5s} {r.run_id}  {r.experiment}/{r.name}: {r.reason}")
    if cache is not None:
        lines.append(f"cache {cache.root}: {report.checked_entries} entries checked, "
                     f"{len(report.corrupt)} corrupt, {len(report.temporaries)} stale temporaries")
        for path, why in report.corrupt:
            lines.append(f"  CORRUPT {path}: {why}")
        for path in report.temporaries:
            lines.append(f"  TEMP    {path}")
    return "\n".join(lines)
