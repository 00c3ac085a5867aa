"""``bench seed-noise`` and ``bench aa``: measuring what a verdict can trust (registered by :mod:`bench.cli`).

The logic is in :mod:`bench.seed_noise` (the between-seed SD model) and :mod:`bench.aa` (the A/A
calibration of every claim's test).
"""
from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import click

from bench.cli_cluster import executor_options
from bench.errors import BenchError


def _csv_ints(text: str | None, what: str) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated integers, got {text!r}") from None


@click.command("seed-noise")
@click.argument("suite")
@click.option("--seeds", default="0,1,2,3,4,5", show_default=True, help="Seeds to measure (at least 3).")
@click.option("--method", "method", multiple=True, help="Measure this method (repeatable) [default: the baseline].")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Model file [default: the suite's seed_noise: file, else results/baselines/<suite>.seed_noise.json].")
@click.option("--no-run", is_flag=True, help="Do not run cells: build the model from the finished runs in the store.")
@click.option("--force", is_flag=True, help="Recompute cells that already have a finished run.")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite store under results/).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE", help="Import this module first (repeatable).")
@executor_options
def seed_noise_cmd(suite, seeds, method, output, no_run, force, tracking_uri, no_progress, plugins, executor,
                   lease_timeout, **opts):
    """Run SUITE's baseline (or --method rows) over several seeds and write its seed-noise model.

    Per metric: the between-seed SD (ddof 1, pooled over the measured methods), the SD relative to
    the mean, the seed count and degrees of freedom, and the per-seed values (for `bench aa`). Commit
    the file: one-seed intervals and claims of the suite then include this spread.
    """
    from bench import leaderboard, seed_noise
    from bench.plan import load, resolve
    from bench.tracking import Tracker

    s = load(suite, plugins)
    names = list(method) or ([s.baseline_method().name] if s.baseline_method() else [])
    if not names:
        raise BenchError(f"{s.source}: the suite has no baseline: name the method(s) to measure with --method")
    chosen = _csv_ints(seeds, "--seeds") or []
    if len(chosen) < seed_noise.MIN_SEEDS:
        raise BenchError(f"--seeds: {chosen} gives fewer than {seed_noise.MIN_SEEDS} seeds; e.g. --seeds 0,1,2,3,4,5")
    plan = resolve(s, names, chosen)  # checks the method names and seeds before any work
    if not no_run:
        from bench.executors import ExecutorOptions
        from bench.executors.driver import run_plan

        from bench.cli import _raise_interrupt

        signal.signal(signal.SIGTERM, _raise_interrupt)  # a scheduler's SIGTERM ends cells KILLED, as in `run`
        outcomes, _ = run_plan(plan, executor, ExecutorOptions(**opts), tracking_uri, force, not no_progress,
                               lease_timeout)
        failed = [o for o in outcomes if o.status == "failed"]
        if failed:
            for o in failed:
                click.echo(f"FAILED: {o.method} seed={o.seed}: {o.error}", err=True)
            sys.exit(1)
    rows = [r for r in leaderboard.collect(s, Tracker(tracking_uri)) if r.method in names]
    for r in rows:  # only the requested seeds
        keep = [i for i, x in enumerate(r.seeds) if x in chosen]
        r.per_seed = {k: [v[i] for i in keep] for k, v in r.per_seed.items() if len(v) == len(r.seeds)}
        r.seeds = [r.seeds[i] for i in keep]
        r.run_ids = [r.run_ids[i] for i in keep]
    path = output or seed_noise.default_path(s)
    model = seed_noise.build(s.name, rows, str(path))
    seed_noise.write(model, path)
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"seed-noise model of {s.name} ({', '.join(names)}; seeds {chosen})", title_justify="left")
    for c in ("metric", "mean", "sd (seeds)", "sd / |mean|", "mean se (sampling)", "sd / se", "n"):
        t.add_column(c, justify="right" if c != "metric" else "left")
    values = model.values()
    for k, mn in sorted(model.metrics.items()):
        xs = values.get(k) or []
        se = values.get(f"{k}_stderr")
        mse = (sum(x * x for x in se) / len(se)) ** 0.5 if se else None
        mean = sum(xs) / len(xs) if xs else float("nan")
        t.add_row(k, f"{mean:.4g}", f"{mn.sd:.3g}", "—" if mn.sd_rel is None else f"{mn.sd_rel:.3g}",
                  "—" if mse is None else f"{mse:.3g}", "—" if not mse else f"{mn.sd / mse:.2f}", str(mn.n))
    Console(width=120).print(t)
    click.echo(f"written: {path} (commit it with the suite)")


@click.command("aa")
@click.argument("suite")
@click.option("--per-arm", "per_arm", multiple=True, type=click.IntRange(1, 1000),
              help="Also test at this many seeds per arm (repeatable) [default: the suite's seed count].")
@click.option("--source", type=click.Choice(["model", "store"]), default="model", show_default=True,
              help="model: the per-seed values in the suite's seed-noise model; store: the baseline's "
                   "(or --method's) finished runs in the MLflow store.")
@click.option("--method", default=None, help="With --source store: the method whose seeds are split [default: baseline].")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--tracking-uri", default=None)
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE", help="Import this module first (repeatable).")
def aa_cmd(suite, per_arm, source, method, fmt, tracking_uri, plugins):
    """A/A calibration: every claim's test on one method against itself with other seeds.

    Prints, per claim, the fraction of splits it decides (a false decision: the interval excludes what
    the clause is under the null) at one seed per arm with the old sampling-only test, with the
    seed-noise model, and at the suite's (or --per-arm) seed count. Above 10 %, a decided verdict is
    reported inconclusive on the board.
    """
    from bench import aa, claims, leaderboard
    from bench.claim_stats import AA_MAX
    from bench.plan import load
    from bench.tracking import Tracker

    s = load(suite, plugins)
    if not s.claims:
        click.echo(f"{s.source}: no claims")
        return
    ctx = claims.context_for(s)
    if source == "model":
        if ctx.noise is None:
            raise BenchError(f"{s.source}: {ctx.noise_note}; or use --source store")
        values, what = ctx.noise, f"seed-noise model {Path(ctx.noise.path).name} ({ctx.noise.label})"
    else:
        name = method or (s.baseline_method().name if s.baseline_method() else None)
        if name is None:
            raise BenchError(f"{s.source}: the suite has no baseline: give --method")
        s.method(name)
        row = next(r for r in leaderboard.collect(s, Tracker(tracking_uri)) if r.method == name)
        if len(row.seeds) < 2:
            raise BenchError(f"{s.source}: {name} has {len(row.seeds)} finished seed(s) in the store; an A/A "
                             f"comparison needs >= 2 (bench seed-noise {s.name} --seeds 0,1,2,3,4,5)")
        values = {k: v for k, v in row.per_seed.items() if len(v) == len(row.seeds)}
        what = f"{name}'s {len(row.seeds)} finished seeds {row.seeds} in the store"
    ks = sorted(set(per_arm) or ({len(s.seeds)} - {1}))
    rows = aa.table(s, values, ctx, ks)
    if fmt == "json":
        click.echo(json.dumps({"suite": s.name, "source": what, "aa_max": AA_MAX, "claims": [
            {"claim": r["claim"], "assert": r["assert"],
             "results": {k: (v.to_dict() if v else None) for k, v in r["results"].items()}} for r in rows]}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    cols = list(dict.fromkeys(k for r in rows for k in r["results"]))
    t = Table(title=f"A/A false-decision rate of {s.name}'s claims (source: {what})", title_justify="left")
    t.add_column("claim", no_wrap=True)
    t.add_column("arms", justify="right")
    for c in cols:
        t.add_column(c, justify="right")
    for r in rows:
        res = r["results"]
        arms = next((v.arms for v in res.values() if v), "—")
        cells = []
        for c in cols:
            v = res.get(c)
            if v is None or v.rate is None:
                cells.append("n/a" if v is None else f"n/a: {v.why}")
            else:
                flag = " !" if v.rate > AA_MAX else ""
                cells.append(f"{100 * v.rate:.0f}% ({v.decided}/{v.splits}){flag}")
        t.add_row(r["claim"], str(arms), *cells)
    con = Console(width=160)
    con.print(t)
    click.echo(f"! = above {100 * AA_MAX:.0f} %: the board does not decide such a verdict. "
               "A 95 % test should decide about 5 % of A/A splits.")


COMMANDS = (seed_noise_cmd, aa_cmd)
