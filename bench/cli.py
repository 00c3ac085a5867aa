"""The ``bench`` command line (click): run, validate, plan, run-cell, list, leaderboard, export, claims, history, ui, compare, baseline, gate, seed-noise, aa, profile."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click

from bench.cli_cluster import executor_options
from bench.errors import BenchError


def _seeds(seed: tuple[int, ...], seeds: str | None) -> list[int] | None:
    out = list(seed)
    if seeds:
        try:
            out += [int(s) for s in seeds.replace(" ", "").split(",") if s]
        except ValueError:
            raise click.BadParameter(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    return out or None


def _methods(method: tuple[str, ...], methods: str | None) -> list[str] | None:
    out = list(method) + [m for m in (methods or "").replace(" ", "").split(",") if m]
    return out or None


from bench.cli_options import accept_code_option as _accept_code, plugin_option as _plugin  # noqa: E402


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


class _Group(click.Group):
    """Print harness errors as one line and exit 2, without a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BenchError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except EOFError as e:  # click would print a bare "Aborted!": say what ended early
            click.echo(f"error: unexpected end of input ({e or 'a file or stream ended early'})", err=True)
            sys.exit(2)
        except Exception as e:  # noqa: BLE001 - a full disk anywhere is one line; anything else is re-raised
            msg = _disk_full(e)
            if msg is None:
                raise
            click.echo(f"error: {msg}", err=True)
            sys.exit(2)


def _disk_full(e: BaseException) -> str | None:
    """A full disk anywhere in ``e``'s cause chain (:func:`bench.errors.disk_full`) as one message, else None."""
    from bench.errors import disk_full, free_space

    hit = disk_full(e)
    if hit is None:
        return None
    where = Path(getattr(hit, "filename", None) or os.environ.get("BENCH_RESULTS_DIR") or "results")
    return (f"no space left on the device writing {where} ({free_space(where)}): free some space and run again; "
            "what was already logged is kept and a rerun resumes from the finished cells")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              envvar="BENCH_RESULTS_DIR", show_envvar=True,
              help="Where the MLflow store (mlflow.db, mlartifacts/), the cache and the leaderboards go "
                   "[default: results/ in the repository].")
def main(results_dir):
    """Benchmark and leaderboard harness for generative-model research.

    SUITE is a name under suites/ (e.g. fmnist) or a path to a suite YAML file.
    """
    if results_dir is not None:  # read at call time by bench.context.results_dir()
        os.environ["BENCH_RESULTS_DIR"] = str(results_dir.expanduser().absolute())


@main.command()
@click.argument("suite")
@click.option("--method", "method", multiple=True, help="Run only this method (repeatable).")
@click.option("--methods", default=None, help="Comma-separated methods (same as repeated --method).")
@click.option("--seed", "seed", multiple=True, type=int, help="Run this seed (repeatable); default: the suite's seeds.")
@click.option("--seeds", default=None, help="Comma-separated seeds, e.g. 0,1,2.")
@click.option("--force", is_flag=True, help="Recompute cells that already have a finished run.")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite store under results/).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="A quick check, not a result: every image, sample and training-step count capped at N "
                   "(suite <name>.limit<N>, its own config hashes; bench.limit).")
@_plugin
@_accept_code
@executor_options
def run(suite, method, methods, seed, seeds, force, tracking_uri, no_progress, limit, plugins, accept_code_change,
        executor, lease_timeout, **opts):
    """Run SUITE's (method, seed) cells on an executor, then write and print its leaderboard."""
    from bench.data.base import check_available
    from bench.plan import load, resolve
    from bench.executors.local import check_workers

    check_workers(opts.get("workers"), opts.get("allow_oversubscribe", False))  # before any work
    p = resolve(load(suite, plugins), _methods(method, methods), _seeds(seed, seeds), limit=limit)
    s = p.suite
    check_available(s.dataset)  # paths only: a missing data set is said before torch or the store is imported
    from bench.tracking import Tracker, check_uri  # imports MLflow

    if tracking_uri:
        check_uri(tracking_uri)
    from bench import leaderboard
    from bench.executors import ExecutorOptions
    from bench.executors.driver import run_plan
    # A SIGTERM (e.g. a cluster scheduler) ends the cell as KILLED, like Ctrl-C, instead of leaving it RUNNING.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    outcomes, parent = run_plan(p, executor, ExecutorOptions(**opts), tracking_uri, force, not no_progress,
                                lease_timeout, accept_code_change=accept_code_change)
    tracker = Tracker(tracking_uri)
    board = leaderboard.build(s, tracker)
    paths = leaderboard.write(board)
    for p in list(paths.values()) + board.figures:
        tracker.client.log_artifact(parent, str(p), artifact_path="leaderboard")
    if board.claims:  # claim verdicts: claims.json + one tag per claim on the suite's parent run
        from bench.claims import log_verdicts

        log_verdicts(tracker, parent, board.claims, paths["md"].parent, board.premises)
    from bench.board_terminal import render

    render(board)  # the rich table (120 columns; `bench leaderboard SUITE --wide` for every column)
    click.echo(f"written: {', '.join(str(p) for p in paths.values())}")
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        for o in failed:
            click.echo(f"FAILED: {o.method} seed={o.seed}: {o.error}", err=True)
        sys.exit(1)


@main.command()
@click.argument("suite")
@_plugin
def validate(suite, plugins):
    """Check SUITE against the schema, the registries and the adapters' capabilities (every error at once)."""
    from bench.plan import resolve

    s = resolve(suite, plugins=plugins).suite
    _check_environment(s)
    click.echo(f"{s.source}: ok ({len(s.methods)} methods, {len(s.metrics)} metrics, seeds {s.seeds})")


def _check_environment(s) -> None:
    """Opt-in adapter hook ``validate_environment(suite, method)``: user-provided weights/data present
    (raises :class:`BenchError` naming the path or variable). Not part of planning, which needs no data.
    Read from the light declaration where there is one (no torch: :func:`bench.registry.meta`)."""
    from bench import registry

    for i, m in enumerate(s.methods):
        check = getattr(registry.meta("adapter", m.adapter), "validate_environment", None)
        if check is not None:
            try:
                check(s, m)
            except BenchError as e:
                raise BenchError(f"{s.source}: methods[{i}] ({m.name}): {e}") from None


@main.command("plan")
@click.argument("suite")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write one <method>-s<seed>.json per cell here and print the paths [default: print the JSON].")
@click.option("--method", "method", multiple=True, help="Only this method (repeatable).")
@click.option("--seed", "seed", multiple=True, type=int, help="Only this seed (repeatable); default: the suite's seeds.")
@_plugin
def plan_cmd(suite, output, method, seed, plugins):
    """Resolve SUITE into one self-contained cell spec per (method, seed), for `bench run-cell`."""
    from bench.plan import resolve

    p = resolve(suite, list(method) or None, list(seed) or None, plugins)
    if output is None:
        for c in p.cells:
            click.echo(c.model_dump_json())
        return
    for path in p.write(output):
        click.echo(str(path))


@main.command("run-cell")
@click.argument("spec_file", metavar="SPEC.json", type=click.Path(dir_okay=False, exists=True))
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite store under results/).")
@click.option("--parent", default=None, help="Log the cell as a child of this run (e.g. a suite run).")
@click.option("--force", is_flag=True, help="Run even if a finished run of this config hash and seed exists.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@_accept_code
def run_cell_cmd(spec_file, tracking_uri, parent, force, no_progress, accept_code_change):
    """Execute exactly one cell spec (written by `bench plan`) into a new MLflow run of its suite's experiment.

    Under torchrun (`python -m torch.distributed.run --nproc_per_node W -m bench.cli run-cell SPEC`)
    the W processes compute the one cell together and rank 0 alone claims and logs its run (bench.torchrun).
    """
    from bench import torchrun
    from bench.plan import CellSpec
    from bench.runner import run_cell

    from bench.tracking import check_uri

    spec = CellSpec.read(spec_file)
    if tracking_uri:
        check_uri(tracking_uri)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    with torchrun.process_group() as (rank, _):
        o = run_cell(spec, tracking_uri, parent, progress=not no_progress and rank == 0, skip_finished=not force,
                     accept_code_change=accept_code_change)
    if rank != 0:
        return
    click.echo(f"{o.method} seed={o.seed}: {o.status} (run {o.run_id}, config {spec.config_hash})")
    if o.status == "failed":
        click.echo(f"FAILED: {o.method} seed={o.seed}: {o.error}", err=True)
        sys.exit(1)


@main.command("list")
@click.argument("what", type=click.Choice(["suites", "adapters", "metrics", "datasets"]))
@_plugin
def list_(what, plugins):
    """List the available suites, adapters, metrics or data sets (with entry points and --plugin modules)."""
    from bench import registry
    from bench.suite import SUITES_DIR

    if what == "suites":
        for p in sorted(SUITES_DIR.glob("*.yaml")):
            click.echo(p.stem)
        return
    problems = registry.import_plugins((f"--plugin {m}", m) for m in plugins)
    if problems:
        raise BenchError("\n".join(problems))
    registry.load_all()
    table = {"adapters": registry.ADAPTERS, "metrics": registry.METRICS, "datasets": registry.DATASETS}[what]
    for name, cls in sorted(table.items()):
        doc = (cls.__doc__ or "").strip().splitlines()
        extra = ""
        if what == "adapters":
            extra = f" [{', '.join(sorted(cls.capabilities))}]"
        elif what == "metrics":
            extra = f" [needs: {', '.join(cls.requires) or '-'}]"
        click.echo(f"{name}{extra}: {doc[0] if doc else ''}")


@main.command()
@click.option("--port", default=5000, show_default=True)
@click.option("--tracking-uri", default=None)
def ui(port, tracking_uri):
    """Serve the MLflow UI for the harness's store, bound to 127.0.0.1."""
    from bench.tracking import artifact_root, default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--default-artifact-root",
           artifact_root(uri), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    click.echo(f"MLflow UI at http://127.0.0.1:{port} (store {uri}); Ctrl-C to stop")
    from bench.locks import store_lock_path
    from bench.ui_server import serve

    sys.exit(serve(cmd, env, store_lock=store_lock_path(uri), port=port))


# -- measuring instruments (bench.instruments) ----------------------------------------------------
@main.group("instrument")
def instrument_grp():
    """Registered measuring instruments (feature extractors, judges): fixed files with a sha256."""


@instrument_grp.command("list")
def instrument_list():
    """List the registered instruments with their kind, sha256 and whether the file verifies."""
    from bench import instruments

    for iid, c in instruments.cards().items():
        try:
            instruments.path(iid)
            state = "ok"
        except instruments.InstrumentError as e:
            state = f"BAD: {e}"
        acc = c.provenance.get("test_acc")
        click.echo(f"{iid} [{c.kind}] sha256 {c.sha256[:12]}…" + (f" test_acc {acc}" if acc is not None else "")
                   + f" {state}: {c.description}")


@instrument_grp.command("train")
@click.argument("family", type=click.Choice(["fmnist-cnn", "fmnist-judge", "fmnist-reward-judge"]))
@click.option("--id", "instrument_id", required=True, help="The NEW instrument id, e.g. fmnist-cnn-v2 (ids are immutable).")
@click.option("--epochs", type=int, default=None, help="Override the recipe's epochs.")
@click.option("--seed", type=int, default=None, help="Override the recipe's seed.")
@click.option("--levels", type=click.Choice(["2", "16"]), default="2",
              help="fmnist-judge: grey levels V of the quantised images it judges.")
@click.option("--arch", type=click.Choice(["cnn", "mlp"]), default="cnn",
              help="fmnist-reward-judge: the network (bench.rewards.judges; cnn = in-domain, mlp = out-of-domain).")
def instrument_train(family, instrument_id, epochs, seed, levels, arch):
    """Train a new version of an instrument and register it under a new id (bench/instruments/ID.*).

    Suites keep using the old id until they name the new one (e.g. a metric param
    `classifier: fmnist-cnn-v2`), which changes their config hash and column titles.
    """
    import dataclasses

    import torch

    from bench.data.fmnist import fmnist_dir, load_split
    from bench.metrics import fmnist_classifier as fc

    root = fmnist_dir(None)
    if family == "fmnist-reward-judge":  # bench.rewards.judges: fmnist-rjudge-cnn-v1 = --arch cnn --seed 1,
        from bench.rewards.judges import JudgeRecipe, train_instrument  # fmnist-rjudge-mlp-v1 = --arch mlp --seed 2

        jr = dataclasses.replace(JudgeRecipe(), **{k: v for k, v in {"epochs": epochs, "seed": seed}.items() if v is not None})
        card = train_instrument(instrument_id, arch, load_split(root, "train"), load_split(root, "test"), jr)
        click.echo(f"{card}: registered {instrument_id}; commit it and its .safetensors file")
        return
    recipe = fc.DEFAULT_RECIPE
    recipe = dataclasses.replace(recipe, **{k: v for k, v in {"epochs": epochs, "seed": seed}.items() if v is not None})
    torch.set_num_threads(fc.TRAIN_THREADS)
    if family == "fmnist-judge":
        from bench.metrics.fmnist_judge import train_judge

        card = train_judge(instrument_id, load_split(root, "train"), load_split(root, "test"), int(levels), recipe)
    else:
        card = fc.train_instrument(instrument_id, load_split(root, "train"), load_split(root, "test"), recipe)
    click.echo(f"{card}: registered {instrument_id}; commit it and its .safetensors file")


@main.command("doctor")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite store under results/).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Cache directory to check (default: results/cache).")
@click.option("--fix", is_flag=True, help="Mark stale runs FAILED, delete corrupt cache entries and stale temp files.")
def doctor_cmd(tracking_uri, cache_dir, fix):
    """Find RUNNING runs whose process is gone and corrupt cache entries; exit 1 if any remain.

    A run is stale if its tags bench.host / bench.pid name this machine and a process that is no
    longer alive; a cache entry is corrupt if its bytes do not match the sha256 recorded at write time.
    """
    from bench import doctor
    from bench.context import Cache
    from bench.tracking import Tracker, default_tracking_uri

    from bench.tracking import sqlite_problem

    uri = tracking_uri or default_tracking_uri()
    tracker = None
    broken = None
    db = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    if db is not None and not db.exists():
        click.echo(f"store {uri}: does not exist")
    elif db is not None and (broken := sqlite_problem(db)):  # reported, never opened (nor repaired) here
        click.echo(f"store {uri}: BROKEN: {broken}")
    else:
        tracker = Tracker(uri)
    cache = Cache(cache_dir) if cache_dir else Cache()
    report = doctor.examine(tracker, cache)
    click.echo(doctor.render(report, tracker, cache))
    if broken:
        click.echo(f"the store {db} is left as it is: move it away (or restore a backup); `bench doctor --fix` "
                   "does not touch it", err=True)
        sys.exit(1)
    if fix:
        for line in doctor.fix(report, tracker):
            click.echo(f"fixed: {line}")
    elif report.problems:
        click.echo("run `bench doctor --fix` to repair", err=True)
        sys.exit(1)


from bench.cli_cluster import COMMANDS as _CLUSTER_COMMANDS  # noqa: E402  (server)
from bench.cli_board import COMMANDS as _BOARD_COMMANDS  # noqa: E402  (leaderboard, export, claims)
from bench.cli_gate import COMMANDS as _GATE_COMMANDS  # noqa: E402  (compare, baseline, gate, gate-noise)
from bench.cli_verdicts import COMMANDS as _VERDICT_COMMANDS  # noqa: E402  (seed-noise, aa)
from bench.cli_profile import COMMANDS as _PROFILE_COMMANDS  # noqa: E402  (profile)

for _cmd in _BOARD_COMMANDS + _GATE_COMMANDS + _CLUSTER_COMMANDS + _VERDICT_COMMANDS + _PROFILE_COMMANDS:
    main.add_command(_cmd)

if __name__ == "__main__":
    main()
