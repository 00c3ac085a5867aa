"""Cell leases in the tracking store: at most one live run per (config hash, seed), none left RUNNING forever.

A cell's run *is* its lease: a RUNNING cell run carrying the tags ``bench.lease.owner`` (host:pid:random),
``bench.lease.state`` (``claiming`` then ``held``) and ``bench.lease.heartbeat`` (unix seconds, refreshed
every :func:`heartbeat_interval` seconds by a daemon thread), beside ``bench.host`` / ``bench.pid``.

A lease is *stale* when its heartbeat is older than :func:`lease_timeout` seconds, or at once when it
names this host and its process is gone (``kill -9``). Whoever finds a stale lease ends that run FAILED
with the reason in ``bench.error`` (what it logged stays) and may claim the cell.

The claim works on any MLflow store (sqlite, PostgreSQL, an HTTP server), none of which offers a
compare-and-swap, by a *create, then look* rule: a claimer creates its claim run, then lists the
cell's runs, and wins only if it sees no other live claim and no FINISHED run. Two claimers cannot
both win: each lists after its own create is committed, so the one that lists last sees the other's
claim. When both see each other both lose, end their claim FAILED (tag ``bench.lease.lost``) and
retry after a random back-off, so one of them wins a later round. A claimer that finds a live
``held`` lease, or a FINISHED run (unless forced), skips the cell.

Caveat: a holder whose heartbeat stalls past the timeout while its process lives (a frozen machine)
is taken over; its heartbeat thread then sees its run ended and the runner never marks it FINISHED.
"""
from __future__ import annotations

import os
import random
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from mlflow.entities import Run

from bench.locks import hostname, pid_alive
from bench.tracking import TAG, Tracker

LEASE = f"{TAG}lease."
OWNER, STATE, HEARTBEAT, LOST = f"{LEASE}owner", f"{LEASE}state", f"{LEASE}heartbeat", f"{LEASE}lost"
CLAIMING, HELD, RELEASED = "claiming", "held", "released"
DEFAULT_TIMEOUT_S = 300.0


def lease_timeout() -> float:
    """Seconds without a heartbeat after which a lease is stale: ``$BENCH_LEASE_TIMEOUT`` or 300."""
    return float(os.environ.get("BENCH_LEASE_TIMEOUT", DEFAULT_TIMEOUT_S))


def heartbeat_interval() -> float:
    """Seconds between heartbeats: ``$BENCH_LEASE_HEARTBEAT`` or a quarter of the timeout (at most 30 s)."""
    env = os.environ.get("BENCH_LEASE_HEARTBEAT")
    return float(env) if env else max(0.2, min(30.0, lease_timeout() / 4))


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def stale_reason(run: Run, now: float | None = None, timeout: float | None = None) -> str | None:
    """Why the RUNNING ``run`` holds no live lease (None: it is live).

    Stale: its ``bench.host`` is this machine and its ``bench.pid`` is gone (or a later process reusing
    the pid), or its heartbeat (the run's start time when it has none) is older than ``timeout`` s.
    """
    now = time.time() if now is None else now
    timeout = lease_timeout() if timeout is None else timeout
    tags = run.data.tags
    host, pid = tags.get(f"{TAG}host"), tags.get(f"{TAG}pid")
    if host == hostname() and pid and pid.isdigit() and not pid_alive(int(pid), run.info.start_time):
        return f"its worker (pid {pid} on {host}) is gone"
    try:
        beat = float(tags[HEARTBEAT])
    except (KeyError, ValueError):
        beat = run.info.start_time / 1000.0
    if now - beat > timeout:
        return f"no heartbeat for {now - beat:.0f}s (lease timeout {timeout:g}s; worker pid {pid} on {host})"
    return None


def cell_runs(tracker: Tracker, experiment_id: str, config_hash: str, seed: int) -> list[Run]:
    """Every active cell run of (config hash, seed), any status, oldest first."""
    flt = (f"tags.`{TAG}kind` = 'cell' and tags.`{TAG}config_hash` = '{config_hash}' "
           f"and tags.`{TAG}seed` = '{seed}'")
    runs = tracker.client.search_runs([experiment_id], flt, order_by=["attributes.start_time ASC"], max_results=5000)
    return list(runs)


def end_stale(tracker: Tracker, run: Run, reason: str, by: str) -> None:
    """End a stale lease's run FAILED, its reason in ``bench.error`` (what it logged is kept)."""
    tracker.client.set_tag(run.info.run_id, f"{TAG}error", f"lease taken over by {by}: {reason}"[:5000])
    tracker.end(run.info.run_id, "FAILED")
    _say(f"[bench] run {run.info.run_id[:8]} ({run.info.run_name}): {reason} -> marked FAILED")


@dataclass
class Lease:
    """A held lease: the cell's RUNNING run ``run_id``, kept alive by :meth:`start_heartbeat`."""

    tracker: Tracker
    run_id: str
    owner: str
    interval: float = field(default_factory=heartbeat_interval)
    lost: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def beat(self) -> None:
        """One heartbeat: if the run is no longer RUNNING (taken over), mark the lease lost."""
        if self.tracker.client.get_run(self.run_id).info.status != "RUNNING":
            self.lost.set()
            return
        self.tracker.client.set_tag(self.run_id, HEARTBEAT, f"{time.time():.3f}")

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception as e:  # noqa: BLE001 - a store hiccup must not kill the cell; next beat retries
                _say(f"[bench] heartbeat of run {self.run_id[:8]} failed ({type(e).__name__}: {e}); retrying")
            if self.lost.is_set():
                _say(f"[bench] run {self.run_id[:8]}: lease lost (taken over); its result will not count")
                return

    def start_heartbeat(self) -> "Lease":
        self._thread = threading.Thread(target=self._loop, name=f"lease-{self.run_id[:8]}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def release(self) -> None:
        """After the run ended: its state tag says ``released`` (a finished run holds no lease)."""
        try:
            self.tracker.client.set_tag(self.run_id, STATE, RELEASED)
        except Exception as e:  # noqa: BLE001 - the result is logged already; the tag is cosmetic
            _say(f"[bench] run {self.run_id[:8]}: could not mark its lease released ({type(e).__name__}: {e})")

    def held(self) -> bool:
        """Whether the lease is still ours (the run is RUNNING and was not taken over)."""
        if self.lost.is_set():
            return False
        try:
            return self.tracker.client.get_run(self.run_id).info.status == "RUNNING"
        except Exception:  # noqa: BLE001 - cannot tell: keep the result (it is logged anyway)
            return True


@dataclass
class Claim:
    """The result of :func:`claim`: a ``lease`` (run it), a ``finished`` run (skip) or a live ``holder``."""

    lease: Lease | None = None
    finished: Run | None = None
    holder: Run | None = None
    message: str = ""


def _owner() -> str:
    return f"{hostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def claim(tracker: Tracker, experiment_id: str, config_hash: str, seed: int, run_name: str, tags: dict[str, Any],
          parent_id: str | None = None, skip_finished: bool = True, attempts: int = 30) -> Claim:
    """Claim the cell (config hash, seed): create its RUNNING run as a lease, unless someone else has it.

    Returns a :class:`Claim` with ``lease`` (heartbeat started; the caller runs the cell in
    ``lease.run_id`` and calls ``lease.stop()``), or ``finished`` (a FINISHED run exists and
    ``skip_finished``), or ``holder`` (a live lease of another worker). Stale leases found on the way
    are ended FAILED with their reason. ``tags`` are the cell run's tags (the lease tags are added).
    """
    owner = _owner()
    for attempt in range(attempts):
        runs = cell_runs(tracker, experiment_id, config_hash, seed)
        if skip_finished:
            fin = [r for r in runs if r.info.status == "FINISHED"]
            if fin:
                return Claim(finished=fin[-1])
        now = time.time()
        live, stale = [], []
        for r in runs:
            if r.info.status == "RUNNING":
                why = stale_reason(r, now)
                (stale if why else live).append((r, why))
        held = [r for r, _ in live if r.data.tags.get(STATE, HELD) == HELD]
        if held:
            return Claim(holder=held[0], message=_describe(held[0]))
        if not live:  # only stale leases (or none): take over, then claim
            for r, why in stale:
                end_stale(tracker, r, why, owner)
            mine = tracker.start(experiment_id, run_name,
                                 {**tags, OWNER: owner, STATE: CLAIMING, HEARTBEAT: f"{time.time():.3f}"},
                                 parent_id=parent_id)
            others = [r for r in cell_runs(tracker, experiment_id, config_hash, seed) if r.info.run_id != mine
                      and ((skip_finished and r.info.status == "FINISHED")
                           or (r.info.status == "RUNNING" and stale_reason(r) is None))]
            if not others:
                tracker.client.set_tag(mine, STATE, HELD)
                return Claim(lease=Lease(tracker, mine, owner).start_heartbeat())
            rival = others[0]
            tracker.client.set_tag(mine, LOST, "true")
            tracker.client.set_tag(mine, f"{TAG}error", f"lost the lease race to run {rival.info.run_id}")
            tracker.end(mine, "FAILED")
            if rival.info.status == "FINISHED":
                return Claim(finished=rival)
            if rival.data.tags.get(STATE) == HELD:
                return Claim(holder=rival, message=_describe(rival))
        time.sleep(random.uniform(0.05, 0.3) * min(attempt + 1, 5))  # concurrent claimers: back off, retry
    return Claim(message=f"no claim after {attempts} rounds of concurrent claimers")


def _describe(run: Run) -> str:
    t = run.data.tags
    return f"leased by run {run.info.run_id[:8]} (worker pid {t.get(f'{TAG}pid')} on {t.get(f'{TAG}host')})"
