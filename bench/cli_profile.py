"""``bench profile``: one cell of a suite under pyinstrument, with its time breakdown (registered by :mod:`bench.cli`).

The cell runs as ``bench run`` would run it (same plan, same :func:`bench.runner.run_cell`) into a
scratch MLflow store that is deleted afterwards, so the profile never adds a run to the suite's
board. It uses the results directory's cache (cached weights are loaded, as in a rerun) unless
``--fresh-cache`` (a scratch cache: the method trains). The importing of the cell's code is inside
the profile, so the start-up a ``bench run-cell`` process pays is part of it.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import click

PARTS = ("train", "method", "instrument", "metric", "harness")


@click.command("profile")
@click.argument("suite")
@click.option("--method", required=True, help="The method whose cell is profiled.")
@click.option("--seed", type=int, default=None, help="Its seed [default: the suite's first].")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Profile the cell of `bench run --limit N` (every count capped at N).")
@click.option("--fresh-cache", is_flag=True, help="Train from scratch in a scratch cache (default: the results "
                                                   "directory's cache, so cached weights are loaded).")
@click.option("--interval", type=click.FloatRange(min=1e-4, max=1.0), default=0.01, show_default=True,
              help="pyinstrument's sampling interval (s).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The HTML profile [default: results/<suite>/profile/<method>-s<seed>.html].")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE", help="Import this module first (repeatable).")
def profile_cmd(suite, method, seed, limit, fresh_cache, interval, output, plugins):
    """Profile one cell of SUITE (pyinstrument) and print where its time went."""
    from bench.data.base import check_available
    from bench.errors import BenchError
    from bench.plan import load, resolve

    plan = resolve(load(suite, plugins), [method], None if seed is None else [seed], limit=limit)
    check_available(plan.suite.dataset)
    spec = plan.cells[0]
    try:
        from pyinstrument import Profiler
    except ImportError:
        raise BenchError("bench profile needs pyinstrument: `make install` (or `pip install pyinstrument`)") from None
    from bench.context import Cache, results_dir

    out = output or results_dir() / plan.suite.name / "profile" / f"{spec.method}-s{spec.seed}.html"
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        cache = Cache(Path(tmp) / "cache") if fresh_cache else Cache()
        prof = Profiler(interval=interval)
        t0 = time.perf_counter()
        prof.start()
        try:
            from bench.runner import run_cell  # inside the profile: the imports a cell process pays

            outcome = run_cell(spec, uri, None, cache, progress=False)
        finally:
            prof.stop()
        wall = time.perf_counter() - t0
        metrics = {}
        if outcome.run_id:
            from bench.tracking import Tracker

            metrics = Tracker(uri).client.get_run(outcome.run_id).data.metrics
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(prof.output_html())
    click.echo(prof.output_text(unicode=True, color=False, show_all=False, timeline=False)[:20000])
    click.echo(f"cell {spec.method}-s{spec.seed} ({outcome.status}): {wall:.1f} s in the profile, of which the cell "
               f"{metrics.get('cell_seconds', float('nan')):.1f} s (the rest: imports, store creation, lease)")
    for p in PARTS:
        s, share = metrics.get(f"time_{p}_s"), metrics.get(f"time_{p}_share")
        if s is not None:
            click.echo(f"  {p:<11} {s:8.2f} s  {100 * share:5.1f} %")
    click.echo(f"written: {out}")
    if outcome.status == "failed":
        click.echo(f"FAILED: {outcome.error}", err=True)
        sys.exit(1)


COMMANDS = (profile_cmd,)
