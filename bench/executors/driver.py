"""The driver of ``bench run``: resolve the plan, hand every cell to an executor, watch it to the end.

The driver checks the cells before any run exists (data set, adapters' pre-flight), initialises the
store once (a new sqlite file is created and migrated here, under the store lock, before any worker
opens it), starts the suite's parent run and submits one :class:`CellTask` per cell. Nothing else is
created up front: a cell's run is created by the worker that claims its lease (:mod:`bench.leases`).

While it waits it shows a progress table (queued / running / finished / failed, ETA); "running" is
read from the store's live leases, so it counts workers of any executor and of other drivers.
A cell whose worker died without an outcome is submitted again (at most ``retries`` times); its
stale run is ended FAILED by the next claimer. A cell another live worker holds (``leased``) is
waited for: it ends when that run finishes, or is submitted again once its lease goes stale.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time

from bench import leases
from bench.executors import CellTask, ExecutorOptions, choose, make, merged
from bench.executors.local import InlineExecutor
from bench.executors.progress import ProgressView
from bench.limit import limit_of
from bench.plan import Plan
from bench.runner import CellOutcome, check_code, preflight
from bench.provenance import git_sha
from bench.tracking import TAG, Tracker

TERMINAL = ("finished", "skipped", "failed")


def _outcome(d: dict) -> CellOutcome:
    names = {f.name for f in dataclasses.fields(CellOutcome)}
    return CellOutcome(**{k: v for k, v in d.items() if k in names})


def run_plan(plan: Plan, executor: str | None = None, opts: ExecutorOptions = ExecutorOptions(),
             tracking_uri: str | None = None, force: bool = False, progress: bool = True,
             lease_timeout_s: float | None = None, retries: int = 2, poll_s: float = 1.0,
             check_s: float = 2.0, accept_code_change: bool = False) -> tuple[list[CellOutcome], str]:
    """Run ``plan``'s cells on ``executor`` (``local``/``ray``/``slurm``); return outcomes (plan order), parent run id.

    Raises :class:`bench.errors.BenchError` before any run exists if a cell's pre-flight fails or the
    engine is missing. ``lease_timeout_s``: seconds without heartbeat after which a lease is stale
    (default ``$BENCH_LEASE_TIMEOUT`` or 300). Without ``force``, a FINISHED run made by other code
    is refused, every such cell at once, before any run exists, unless ``accept_code_change``
    (:func:`bench.runner.check_code`).
    """
    suite = plan.suite
    if lease_timeout_s is not None:  # the driver judges leases too (waiting cells, the progress table)
        os.environ["BENCH_LEASE_TIMEOUT"] = str(lease_timeout_s)
    dataset = preflight(plan.cells[0])
    for spec in {c.adapter: c for c in plan.cells[1:]}.values():
        preflight(spec, dataset)
    sx = getattr(suite, "executor", None)
    name = choose(executor, sx)
    opts = merged(opts, sx)
    tracker = Tracker(tracking_uri)  # creates and migrates a new sqlite store once, before any worker
    exp = tracker.experiment_id(suite.name)
    if not force:
        check_code(tracker, exp, plan.cells, accept_code_change)
    ex = make(name, opts, suite.name)
    inline = isinstance(ex, InlineExecutor)
    if inline:
        ex.progress = progress
    for line in close_dead_suite_runs(tracker, exp):
        say(f"[bench] {line}")
    parent = tracker.start(exp, f"{suite.name}@{time.strftime('%Y%m%d-%H%M%S')}",
                           {f"{TAG}kind": "suite", f"{TAG}suite": suite.name, f"{TAG}git_sha": git_sha(),
                            f"{TAG}suite_file": suite.source, f"{TAG}executor": name,
                            **({f"{TAG}limit": limit_of(suite.name)} if limit_of(suite.name) else {})})
    tasks = [CellTask(i, c.to_json(), tracker.uri, parent, force, lease_timeout_s) for i, c in enumerate(plan.cells)]
    state = {t.index: "queued" for t in tasks}
    outcomes: dict[int, CellOutcome] = {}
    died = {t.index: 0 for t in tasks}
    waiting: set[int] = set()
    view = ProgressView(plan.cells, name, getattr(ex, "workers", 1), live=progress and not inline)
    try:
        for t in tasks:
            ex.submit(t)
        last_check = 0.0
        while any(s not in TERMINAL for s in state.values()):
            for d in ex.poll(poll_s):
                i = d.handle
                if d.outcome is None:
                    died[i] += 1
                    if died[i] <= retries:
                        view.note(f"cell {plan.cells[i].filename}: {d.error}; submitted again ({died[i]}/{retries})")
                        state[i] = "queued"
                        ex.submit(tasks[i])
                    else:
                        spec = plan.cells[i]
                        outcomes[i] = CellOutcome(spec.method, spec.seed, "failed", error=d.error)
                        state[i] = "failed"
                    continue
                o = _outcome(d.outcome)
                if o.status == "leased":
                    waiting.add(i)
                    state[i] = "waiting"
                    view.note(f"cell {plan.cells[i].filename}: {o.error}; waiting for it")
                else:
                    outcomes[i], state[i] = o, o.status
            if time.monotonic() - last_check >= check_s:
                last_check = time.monotonic()
                live = _live_cells(tracker, exp)
                for i, s in state.items():
                    if s == "queued" and (plan.cells[i].config_hash, plan.cells[i].seed) in live:
                        state[i] = "running"
                for i in sorted(waiting):
                    spec = plan.cells[i]
                    runs = leases.cell_runs(tracker, exp, spec.config_hash, spec.seed)
                    fin = [r for r in runs if r.info.status == "FINISHED"]
                    if fin:
                        outcomes[i] = CellOutcome(spec.method, spec.seed, "skipped", fin[-1].info.run_id)
                        state[i] = "skipped"
                        waiting.discard(i)
                    elif not any(r.info.status == "RUNNING" and leases.stale_reason(r) is None for r in runs):
                        waiting.discard(i)  # the holder is gone: claim it (the claim ends its stale run)
                        state[i] = "queued"
                        ex.submit(tasks[i])
            view.update(state)
        ex.shutdown()
        tracker.end(parent, "FINISHED" if all(o.status != "failed" for o in outcomes.values()) else "FAILED")
    except KeyboardInterrupt:
        ex.shutdown(cancel=True)
        tracker.end(parent, "KILLED")
        raise
    finally:
        view.close()
    return [outcomes[i] for i in range(len(tasks))], parent


def close_dead_suite_runs(tracker: Tracker, exp: str) -> list[str]:
    """End FAILED, with the reason in ``bench.error``, every RUNNING suite run of ``exp`` whose driver
    is gone (this host, its pid not alive or reused): a ``kill -9`` of a driver leaves its suite run
    RUNNING; the next driver closes it, as a cell's claimer closes a dead cell's run. Returns one line each."""
    from bench.locks import hostname, pid_alive

    here = hostname()
    runs = tracker.client.search_runs([exp], f"tags.`{TAG}kind` = 'suite' and attributes.status = 'RUNNING'",
                                      max_results=1000)
    done = []
    for r in runs:
        t = r.data.tags
        pid, host = t.get(f"{TAG}pid", ""), t.get(f"{TAG}host")
        if host != here or not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid), r.info.start_time):
            continue
        why = f"stale: its driver process {pid} on {host} is gone (closed by the next bench run)"
        tracker.client.set_tag(r.info.run_id, f"{TAG}error", why)
        tracker.end(r.info.run_id, "FAILED")
        done.append(f"suite run {r.info.run_id} ({r.info.run_name}) marked FAILED: {why}")
    return done


def _live_cells(tracker: Tracker, exp: str) -> set[tuple[str, int]]:
    """(config hash, seed) of the experiment's cells with a live lease now."""
    runs = tracker.client.search_runs([exp], f"tags.`{TAG}kind` = 'cell' and attributes.status = 'RUNNING'",
                                      max_results=50000)
    out = set()
    for r in runs:
        t = r.data.tags
        if leases.stale_reason(r) is None and t.get(f"{TAG}seed", "").lstrip("-").isdigit():
            out.add((t.get(f"{TAG}config_hash"), int(t[f"{TAG}seed"])))
    return out


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
