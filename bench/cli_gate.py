"""``bench compare | baseline | gate | gate-noise``: the regression gate's commands (docs/ci-gate.md).

Registered on the ``bench`` group by :mod:`bench.cli`; the logic is in :mod:`bench.compare`,
:mod:`bench.baseline`, :mod:`bench.gate` and :mod:`bench.gate_noise`.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from bench.cli_options import plugin_option


# -- regression gate (bench.baseline, bench.compare; docs/ci-gate.md) ----------------------------
@click.command("compare")
@click.argument("suite")
@click.option("--baseline", "baseline_file", required=True, type=click.Path(dir_okay=False),
              help="Baseline JSON written by `bench baseline` (e.g. results/baselines/ci.json).")
@click.option("--current", default="latest", show_default=True,
              help="'latest' (newest finished run per method and seed) or the id of a suite parent run.")
@click.option("--report", default=None, type=click.Path(),
              help="Report path: a .md/.json file (the other format beside it) or a directory "
                   "[default: results/<suite>/compare.{md,json}].")
@click.option("--strict", is_flag=True, help="Also fail when a metric improved beyond its tolerance.")
@click.option("--tracking-uri", default=None)
@plugin_option
def compare_cli(suite, baseline_file, current, report, strict, tracking_uri, plugins):
    """Compare SUITE's finished runs with a baseline file; print the table, write and log reports.

    Exit 0: nothing regressed. Exit 1: a metric worsened beyond its tolerance. Exit 2: refused
    (missing runs or metrics, or a config hash or metric extractor that differs from the baseline's).
    """
    from bench.compare import compare_cmd
    from bench.suite_file import load_suite

    cmp, text = compare_cmd(load_suite(suite, plugins=plugins), baseline_file, tracking_uri, current, report, strict)
    click.echo(text)
    sys.exit(cmp.exit_code)


@click.command("baseline")
@click.argument("suite")
@click.option("--output", required=True, type=click.Path(dir_okay=False), help="Baseline JSON to write.")
@click.option("--current", default="latest", show_default=True,
              help="'latest' (newest finished run per method and seed) or the id of a suite parent run.")
@click.option("--tracking-uri", default=None)
@plugin_option
def baseline_cli(suite, output, current, tracking_uri, plugins):
    """Write a baseline file from SUITE's finished runs (values, spreads, tolerances, provenance)."""
    from bench.baseline import build_baseline, write_baseline
    from bench.suite_file import load_suite
    from bench.tracking import Tracker

    s = load_suite(suite, plugins=plugins)
    doc = build_baseline(s, Tracker(tracking_uri), current)
    path = write_baseline(doc, output)
    n = sum(len(m["metrics"]) for m in doc["methods"].values())
    click.echo(f"{path}: baseline of suite {s.name} ({len(doc['methods'])} methods, {n} gated metrics, "
               f"seeds {doc['seeds']}, git {doc['git_sha']})")


@click.command("gate")
@click.argument("suite")
@click.option("--baseline", "baseline_file", default=None, type=click.Path(dir_okay=False),
              help="The committed baseline JSON (required unless --run-only).")
@click.option("--workdir", default=None, type=click.Path(file_okay=False),
              help="The gate's MLflow store, weight cache and reports [default: results/gate/<suite>].")
@click.option("--reuse", is_flag=True, help="Reuse finished cells and cached weights (fast; cannot see code "
                                            "regressions in training).")
@click.option("--strict", is_flag=True, help="Also fail when a metric improved beyond its tolerance.")
@click.option("--write-baseline", is_flag=True, help="After running, write the baseline file instead of comparing.")
@click.option("--run-only", is_flag=True, help="Only run the suite into the workdir (for `bench gate-noise`).")
@click.option("--no-progress", is_flag=True)
@click.option("--history-uri", envvar="BENCH_GATE_HISTORY_URI", default=None,
              help="Also record the compared cell runs and the verdict in this lasting MLflow store (a sqlite URI "
                   "or a tracking server; env BENCH_GATE_HISTORY_URI), for `bench history SUITE --tracking-uri URI`.")
@plugin_option
def gate_cli(suite, baseline_file, workdir, reuse, strict, write_baseline, run_only, no_progress, history_uri, plugins):
    """Run SUITE from fresh weights in its own store, then compare with the baseline (exit 0/1/2)."""
    from bench.gate import gate_run, run_gate
    from bench.suite_file import load_suite
    from bench.tracking import Tracker, check_uri

    if history_uri:
        check_uri(history_uri, "--history-uri")  # before minutes of training
    s = load_suite(suite, plugins=plugins)
    if run_only:
        g = gate_run(s, workdir, reuse, progress=not no_progress)
        click.echo(f"gate: suite run {g.parent} in {g.workdir} ({g.seconds:.0f}s)")
        return
    if not baseline_file:
        raise click.UsageError("--baseline FILE is required (or --run-only)")
    if write_baseline:
        from bench.baseline import build_baseline, write_baseline as write

        g = gate_run(s, workdir, reuse, progress=not no_progress)
        path = write(build_baseline(s, Tracker(g.tracking_uri), g.current), baseline_file)
        click.echo(f"{path}: baseline written from suite run {g.parent} (suite run {g.seconds:.0f}s)")
        return
    cmp, text, g = run_gate(s, baseline_file, workdir, reuse=reuse, strict=strict, progress=not no_progress,
                            history_uri=history_uri)
    click.echo(text)
    click.echo(f"gate: {cmp.verdict} (suite run {g.seconds:.0f}s)")
    sys.exit(cmp.exit_code)


@click.command("gate-noise")
@click.argument("suite")
@click.option("--reference", required=True, type=click.Path(file_okay=False, exists=True),
              help="Gate workdir (holding mlflow.db) of the reference run, e.g. results/gate/noise/ref.")
@click.option("--variant", "variants", multiple=True, required=True, type=click.Path(file_okay=False, exists=True),
              help="Gate workdir of a run under other float settings (repeatable).")
@click.option("--output", required=True, type=click.Path(dir_okay=False), help="Noise JSON to write.")
@plugin_option
def gate_noise_cli(suite, reference, variants, output, plugins):
    """Measure SUITE's paired per-seed noise between float settings (scripts/gate_noise.sh runs them)."""
    import json

    from bench.gate_noise import Variant, measure_noise, to_text
    from bench.suite_file import load_suite

    def v(d):
        p = Path(d).resolve()
        return Variant(p.name, f"sqlite:///{p / 'mlflow.db'}")

    doc = measure_noise(load_suite(suite, plugins=plugins), v(reference), [v(d) for d in variants])
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps(doc, indent=1) + "\n")
    click.echo(to_text(doc) + f"written: {output}")


COMMANDS = (compare_cli, baseline_cli, gate_cli, gate_noise_cli)
