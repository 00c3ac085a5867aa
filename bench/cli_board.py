"""`bench leaderboard`, `bench export`, `bench claims`: reading a suite's finished runs (registered by :mod:`bench.cli`)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from bench.cli_options import plugin_option


def _write_output(output: Path, text: str) -> None:
    """``--output``: the file, with its missing parent directories (as `bench export` does)."""
    from bench.errors import BenchError

    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
    except OSError as e:
        raise BenchError(f"--output {output}: cannot write it ({e.strerror or e})") from None


@click.command("leaderboard")
@click.argument("suite")
@click.option("--format", "fmt", type=click.Choice(["table", "md", "csv", "html", "json"]), default="table",
              show_default=True, help="table: the rich terminal table; the others print that file.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the chosen format here (results/<suite>/leaderboard.* are always written).")
@click.option("--wide", is_flag=True, help="table: print every column (wider than the terminal if need be).")
@click.option("--columns", default=None, help="table: comma-separated column ids or keys to show, e.g. NLL,P@1,rfd_fmnist.")
@click.option("--width", type=int, default=120, show_default=True, help="table: terminal width to fit.")
@click.option("--tracking-uri", default=None)
@plugin_option
def leaderboard_cmd(suite, fmt, output, wide, columns, width, tracking_uri, plugins):
    """Build SUITE's leaderboard from MLflow, write results/<suite>/leaderboard.{md,csv,html,json}, print it."""
    from bench import leaderboard
    from bench.errors import SuiteError
    from bench.suite_file import load_suite
    from bench.tracking import open_existing

    s = load_suite(suite, plugins=plugins)
    board = leaderboard.build(s, open_existing(tracking_uri, s.name))
    paths = leaderboard.write(board)
    if fmt == "table":
        from bench.board_terminal import render, to_text

        cols = [c for c in (columns or "").replace(" ", "").split(",") if c] or None
        try:
            text = to_text(board, width, wide, cols) if output else None
            render(board, width if not wide else max(width, 400), wide, cols)
        except ValueError as e:
            raise SuiteError(str(e)) from None
        if output:
            _write_output(output, text)
        return
    text = paths[fmt].read_text()
    if output:
        _write_output(output, text)
    click.echo(text)


@click.command("export")
@click.argument("suite")
@click.option("--format", "fmt", type=click.Choice(["json", "lm-eval", "csv"]), default="json", show_default=True,
              help="json: the native schema (genbench.results/1); lm-eval: lm-evaluation-harness's results "
                   "layout, which its make_table prints; csv: the leaderboard.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write here [default: results/<suite>/results.<format>.json or results.csv].")
@click.option("--tracking-uri", default=None)
@plugin_option
def export_cmd(suite, fmt, output, tracking_uri, plugins):
    """Export SUITE's results: the native JSON (value, stderr, n, instrument per metric; config, versions,
    git hash, seeds per run), lm-eval's own results layout (`--format lm-eval`), or the leaderboard CSV."""
    from bench import board_tables, leaderboard
    from bench.board_export import to_json, to_lm_eval_json
    from bench.context import results_dir
    from bench.suite_file import load_suite
    from bench.tracking import open_existing

    s = load_suite(suite, plugins=plugins)
    board = leaderboard.build(s, open_existing(tracking_uri, s.name))
    text = {"json": to_json, "lm-eval": to_lm_eval_json, "csv": board_tables.to_csv}[fmt](board)
    from bench.context import under_results

    name = {"json": "results.json", "lm-eval": "results.lm-eval.json", "csv": "results.csv"}[fmt]
    out = output or under_results(results_dir() / s.name / name, f"suite {s.name!r}: export")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    click.echo(f"written: {out}")


@click.command("claims")
@click.argument("suite")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--tracking-uri", default=None)
@plugin_option
def claims_cmd(suite, fmt, tracking_uri, plugins):
    """Evaluate SUITE's paper claims on its finished runs; exit 1 if any claim is contradicted.

    Verdicts: supported / contradicted / inconclusive (missing values or sampling errors, or an
    interval containing the null), from each claim's test (welch | permutation | bootstrap) at its
    level; with one seed from the metrics' sampling errors ("1 seed: sampling uncertainty only").
    """
    from bench import claims, leaderboard
    from bench.suite_file import load_suite
    from bench.tracking import Tracker

    s = load_suite(suite, plugins=plugins)
    if not s.claims:
        click.echo(f"{s.source}: no claims")
        return
    rows = leaderboard.collect(s, Tracker(tracking_uri))
    ctx = claims.context_for(s)
    for r in rows:
        r.noise = ctx.noise
    premises = claims.evaluate_premises(s, rows, ctx)
    verdicts = claims.evaluate_claims(s, rows, ctx, premises)
    if fmt == "json":
        import json

        click.echo(json.dumps({"seed_noise": ctx.noise_note, "premises": [p.to_dict() for p in premises],
                               "claims": [v.to_dict() for v in verdicts]}, indent=2, default=float))
    else:
        click.echo(f"one-seed basis: {ctx.noise_note}")
        click.echo(claims.to_text(verdicts, premises))
    if any(v.verdict == claims.CONTRADICTED for v in verdicts):
        sys.exit(1)


@click.command("history")
@click.argument("suite")
@click.option("--metric", "metrics", multiple=True, metavar="KEY",
              help="A metric key to track (repeatable) [default: every column with a direction].")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also draw the history as a PNG here (one panel per metric).")
@click.option("--tracking-uri", default=None)
@plugin_option
def history_cmd(suite, metrics, plot_path, tracking_uri, plugins):
    """Each headline metric of each method over the git commits of SUITE's finished runs (tag bench.git_sha)."""
    from bench import history
    from bench.suite_file import load_suite
    from bench.tracking import Tracker

    s = load_suite(suite, plugins=plugins)
    h = history.collect(s, Tracker(tracking_uri), list(metrics) or None)
    click.echo(history.to_text(h), nl=False)
    if plot_path:
        click.echo(f"written: {history.plot(h, plot_path)}")


COMMANDS = (leaderboard_cmd, export_cmd, claims_cmd, history_cmd)
