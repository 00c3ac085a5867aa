"""Cell leases (bench.leases): one winner among concurrent claimers, stale leases taken over, heartbeats."""
import subprocess
import threading
import time

import pytest

from bench import leases
from bench.locks import hostname
from bench.tracking import TAG, Tracker

SEED = 0
H = "cafe0123cafe0123"  # each test uses its own hash (H + test name) in one store, migrated once


def _tags(**extra):
    return {f"{TAG}kind": "cell", f"{TAG}config_hash": H, f"{TAG}seed": SEED, **extra}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('leases') / 'mlflow.db'}"


@pytest.fixture
def tracker(store, request, monkeypatch):
    monkeypatch.setattr(__import__(__name__), "H", f"{request.node.name[:40]}")
    return Tracker(store)


def test_concurrent_claimers_one_winner(tracker, store):
    exp = tracker.experiment_id("lease")
    k, barrier, results = 6, threading.Barrier(6), []

    def claimer():
        t = Tracker(store)
        barrier.wait()
        results.append(leases.claim(t, exp, H, SEED, "c", _tags()))

    threads = [threading.Thread(target=claimer) for _ in range(k)]
    [th.start() for th in threads]
    [th.join(60) for th in threads]
    won = [c for c in results if c.lease is not None]
    assert len(results) == k and len(won) == 1
    assert all(c.holder is not None and c.holder.info.run_id == won[0].lease.run_id for c in results if c.lease is None)
    running = [r for r in leases.cell_runs(tracker, exp, H, SEED) if r.info.status == "RUNNING"]
    assert [r.info.run_id for r in running] == [won[0].lease.run_id]
    lost = [r for r in leases.cell_runs(tracker, exp, H, SEED) if r.info.status == "FAILED"]
    assert all(r.data.tags.get(leases.LOST) == "true" and "lost the lease race" in r.data.tags[f"{TAG}error"]
               for r in lost)
    won[0].lease.stop()
    tracker.end(won[0].lease.run_id)
    again = leases.claim(tracker, exp, H, SEED, "c", _tags())
    assert again.lease is None and again.finished.info.run_id == won[0].lease.run_id  # finished: skipped


def test_dead_worker_on_this_host_is_taken_over_at_once(tracker):
    exp = tracker.experiment_id("lease")
    p = subprocess.Popen(["true"])
    p.wait()  # a pid that is gone
    dead = tracker.start(exp, "c", _tags(**{f"{TAG}pid": p.pid, leases.HEARTBEAT: f"{time.time():.3f}",
                                            leases.STATE: leases.HELD}))
    tracker.log_metrics(dead, {"toy_step_loss": 1.5}, step=3)
    c = leases.claim(tracker, exp, H, SEED, "c", _tags())
    assert c.lease is not None
    old = tracker.client.get_run(dead)
    assert old.info.status == "FAILED" and "is gone" in old.data.tags[f"{TAG}error"]
    assert old.data.metrics["toy_step_loss"] == 1.5  # what it logged is kept
    c.lease.stop()


def test_other_host_lease_live_until_heartbeat_timeout(tracker, monkeypatch):
    exp = tracker.experiment_id("lease")
    monkeypatch.setenv("BENCH_LEASE_TIMEOUT", "5")
    beat = {leases.STATE: leases.HELD, f"{TAG}host": "elsewhere", f"{TAG}pid": 1}
    live = tracker.start(exp, "c", _tags(**beat, **{leases.HEARTBEAT: f"{time.time() - 1:.3f}"}))
    c = leases.claim(tracker, exp, H, SEED, "c", _tags())
    assert c.lease is None and c.holder.info.run_id == live and "elsewhere" in c.message
    tracker.client.set_tag(live, leases.HEARTBEAT, f"{time.time() - 10:.3f}")  # 10 s > the 5 s timeout
    c = leases.claim(tracker, exp, H, SEED, "c", _tags())
    assert c.lease is not None
    old = tracker.client.get_run(live)
    assert old.info.status == "FAILED" and "no heartbeat for 10s" in old.data.tags[f"{TAG}error"]
    c.lease.stop()


def test_heartbeat_refreshes_and_notices_takeover(tracker, monkeypatch):
    monkeypatch.setenv("BENCH_LEASE_HEARTBEAT", "0.2")
    exp = tracker.experiment_id("lease")
    c = leases.claim(tracker, exp, H, SEED, "c", _tags())
    first = float(tracker.client.get_run(c.lease.run_id).data.tags[leases.HEARTBEAT])
    deadline = time.time() + 20
    while float(tracker.client.get_run(c.lease.run_id).data.tags[leases.HEARTBEAT]) == first and time.time() < deadline:
        time.sleep(0.1)
    assert float(tracker.client.get_run(c.lease.run_id).data.tags[leases.HEARTBEAT]) > first
    assert c.lease.held()
    tracker.end(c.lease.run_id, "FAILED")  # someone took it over
    assert c.lease.lost.wait(20) and not c.lease.held()
    c.lease.stop()


def test_stale_reason_of_old_run_without_tags(tracker, monkeypatch):
    exp = tracker.experiment_id("lease")
    monkeypatch.setenv("BENCH_LEASE_TIMEOUT", "100")
    r = tracker.start(exp, "old", {f"{TAG}kind": "cell", f"{TAG}host": hostname()})  # this process: alive
    run = tracker.client.get_run(r)
    assert leases.stale_reason(run) is None
    assert "no heartbeat" in leases.stale_reason(run, now=time.time() + 1000)


@pytest.mark.slow
def test_k_processes_claim_one_cell_at_once(tmp_path):
    """K processes released together claim one cell on one sqlite store: exactly one wins."""
    import json

    from test_store_races import K, _spawn

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    t = Tracker(uri)
    exp = t.experiment_id("lease")  # the store exists before the workers (as the driver does it)
    results = _spawn(tmp_path, imports="import bench.leases", code=f"""
        from bench import leases
        from bench.tracking import TAG, Tracker
        t = Tracker({uri!r})
        tags = {{TAG + "kind": "cell", TAG + "config_hash": {H!r}, TAG + "seed": 0}}
        c = leases.claim(t, {exp!r}, {H!r}, 0, f"w{{WORKER}}", tags)
        if c.lease:
            time.sleep(1.0)
            c.lease.stop()
            t.end(c.lease.run_id)
        print(json.dumps({{"won": c.lease is not None, "held_by": c.holder.info.run_id if c.holder else None}}))
    """)
    assert [r["rc"] for r in results] == [0] * K, "\n".join(r["stderr"][-2000:] for r in results)
    assert sum(r["won"] for r in results) == 1
    assert not any("database is locked" in r["stderr"] for r in results)
    runs = leases.cell_runs(t, exp, H, 0)
    assert [r.info.status for r in runs].count("FINISHED") == 1
    print(f"\n[figures] claim-race: {json.dumps({'processes': K, 'winners': 1, 'runs': len(runs)})}")
