"""Every `bench` command and every `make` target, run.

`bench`: each command and subcommand of :data:`bench.cli.main` (found by walking the group) answers
``--help``, and each has a row in :data:`COMMANDS`: real invocations that run here in seconds (a
tiny store, a suite never run, a refusal path), or the test elsewhere that runs it for real. A
command added to the group without a row fails :func:`test_every_command_has_a_row`, which names it;
a new row is one line, e.g.::

    "aa": [Run("aa tests/suites/smoke.yaml --tracking-uri {store}", code=2, out="no experiment 'smoke'")],

`make`: each target of the Makefile has a row in :data:`MAKE_TARGETS`; each is dry-run (``make -n``)
and the ones that take seconds are run.

In-process (click's CliRunner), so the heavy imports (torch, mlflow) are paid once per session; one
sqlite store, created once (MLflow's migrations take ~10 s), serves every invocation that reads one.
"""
from __future__ import annotations

import ast
import os
import re
import shlex
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from bench.cli import main

REPO = Path(__file__).resolve().parent.parent
SMOKE = "tests/suites/smoke.yaml"  # two tiny methods, no claims; never run into the session store


@dataclass(frozen=True)
class Run:
    """``bench ARGS`` (shell words; placeholders: {store} the session's sqlite URI, {storedir} its
    directory (a gate workdir), {out} an empty directory of this invocation's own, {spec} a cifar10
    cell spec from `bench plan`) exits ``code`` with ``out`` in its output (stdout and stderr).
    ``env``: variables to set (None: unset)."""

    args: str
    code: int = 0
    out: str = ""
    env: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Elsewhere:
    """Run for real by ``test`` ("tests/FILE.py::NAME", checked to exist), because ``why``."""

    test: str
    why: str


# command path -> its real invocations here, or the test that runs it elsewhere.
COMMANDS: dict[str, list[Run] | Elsewhere] = {
    "run": [Run(f"run {SMOKE} --limit 2 --methods vq --workers 1 --no-progress --tracking-uri {{store}}", 0,
                "smoke.limit2/leaderboard.md"),  # one cell, counts capped at 2 (bench.limit): seconds
            Run("run cifar10 --methods vq --workers 1 --no-progress --tracking-uri {store}", 2,
                "set CIFAR10_DIR", env={"CIFAR10_DIR": None}),
            Run(f"run {SMOKE} --methods nosuch", 2, "has no method 'nosuch'")],
    "validate": [Run("validate fmnist", 0, "suites/fmnist.yaml: ok (")],
    "plan": [Run("plan ci --output {out}", 0, "vq-s0.json"), Run("plan ci --method vq --seed 0", 0, '"config_hash"')],
    "run-cell": [Run("run-cell {spec} --no-progress --tracking-uri {store}", 2,
                     "missing data_batch_1", env={"CIFAR10_DIR": "/nonexistent/cifar"}),
                 Run("run-cell {out}/nosuch.json", 2, "does not exist")],
    "list": [Run("list suites", 0, "fmnist\n"), Run("list adapters", 0, "vq [generate, prior, tokenize]"),
             Run("list metrics", 0, "ar_loss"), Run("list datasets", 0, "fmnist: ")],
    "ui": Elsewhere("tests/test_safety.py::test_ui_stops_its_server_on_signal",
                    "a real MLflow server: 15-45 s to start on 2 cores; that test starts and stops it"),
    "instrument list": [Run("instrument list", 0, "inception-tf [fid-inception] sha256 7ff4a85c3a63")],
    "instrument train": [Run("instrument train fmnist-cnn --id fmnist-cnn-v1", 2, "exists"),
                         Run("instrument train nosuch --id x", 2, "'nosuch' is not one of")],
    "doctor": [Run("doctor --tracking-uri {store} --cache-dir {out}/cache", 0, "0 corrupt")],
    "server": Elsewhere("tests/test_server.py::test_bench_server_serves_an_mlflow_client_and_stops_cleanly",
                        "initdb + PostgreSQL + an MLflow server: ~30 s; that test logs a run to it and stops it"),
    # a suite never run: one clear error, exit 2 (no empty table, no empty store)
    "leaderboard": [Run(f"leaderboard {SMOKE} --tracking-uri {{store}} --wide", 2, "has no runs"),
                    Run(f"leaderboard {SMOKE} --tracking-uri {{store}} --format json", 2, "has no runs")],
    "export": [Run(f"export {SMOKE} --tracking-uri {{store}} --output {{out}}/r.json", 2, "has no runs"),
               Run(f"export {SMOKE} --format lm-eval --tracking-uri {{store}} --output {{out}}/l.json", 2, "has no runs")],
    "history": [Run(f"history {SMOKE} --tracking-uri {{store}}", 0, "no finished cell runs")],
    "claims": [Run(f"claims {SMOKE} --tracking-uri {{store}}", 0, "no claims"),
               Run("claims fmnist --tracking-uri {store}", 0, "0 contradicted")],
    "compare": [Run(f"compare {SMOKE} --baseline {{out}}/none.json --tracking-uri {{store}}", 2,
                    "no such baseline file")],
    "baseline": [Run(f"baseline {SMOKE} --output {{out}}/b.json --tracking-uri {{store}}", 2,
                     "no experiment 'smoke'")],
    "gate": [Run(f"gate {SMOKE} --baseline {{out}}/none.json --workdir {{out}}/g", 2, "no such baseline file"),
             Run(f"gate {SMOKE}", 2, "--baseline FILE is required"),
             Run(f"gate {SMOKE} --baseline {{out}}/none.json --history-uri bogus://x", 2, "--history-uri 'bogus://x': unknown scheme")],
    "seed-noise": [Run(f"seed-noise {SMOKE} --no-run --tracking-uri {{store}} --output {{out}}/m.json", 2,
                       "has 0 finished seed(s)"),
                   Run(f"seed-noise {SMOKE} --seeds 0,1 --no-run", 2, "fewer than 3 seeds")],
    "aa": [Run("aa fmnist", 0, "A/A false-decision rate of fmnist's claims"), Run(f"aa {SMOKE}", 0, "no claims")],
    "profile": [Run(f"profile {SMOKE} --limit 2 --method vq --fresh-cache --output {{out}}/p.html", 0, "  harness "),
                Run(f"profile {SMOKE} --method nosuch", 2, "has no method 'nosuch'")],
    "gate-noise": [Run(f"gate-noise {SMOKE} --reference {{storedir}} --variant {{storedir}} --output {{out}}/n.json", 2,
                       "no experiment 'smoke'")],
}


def _commands(group: click.Group = main, prefix: tuple[str, ...] = ()):
    """(path, command) for every command and group under ``group``, depth first."""
    for name, cmd in sorted(group.commands.items()):
        path = prefix + (name,)
        yield " ".join(path), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, path)


ALL = dict(_commands())
LEAVES = sorted(p for p, c in ALL.items() if not isinstance(c, click.Group))  # groups: --help only


def test_every_command_has_a_row():
    missing = [p for p in LEAVES if p not in COMMANDS]
    stale = [p for p in COMMANDS if p not in LEAVES]
    assert not missing, f"bench command(s) without a row in tests/test_cli_smoke.py COMMANDS: {missing}"
    assert not stale, f"rows in COMMANDS for commands the group no longer has: {stale}"


def test_the_walk_reaches_subcommands():
    assert {"run", "instrument", "instrument list", "instrument train", "server"} <= set(ALL)


def _invoke(args: list[str], env: dict | None = None):
    """``bench ARGS`` in this process; the signal handlers some commands install are put back."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return CliRunner(env=env).invoke(main, args, prog_name="bench")
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)


@pytest.mark.parametrize("path", ["", *ALL])
def test_help(path):
    r = _invoke([*path.split(), "--help"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"Usage: bench {path}".rstrip() + " "), r.output[:200]


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    """A results dir, a migrated sqlite store with nothing in it, and a cifar10 cell spec."""
    from bench.plan import resolve
    from bench.tracking import Tracker

    d = tmp_path_factory.mktemp("cli-smoke")
    store = f"sqlite:///{d / 'mlflow.db'}"
    Tracker(store)  # creates the store (MLflow's migrations) once
    (spec,) = resolve("cifar10", ["vq"], [0]).write(d / "plan")
    return {"results": d / "results", "store": store, "storedir": str(d), "spec": str(spec)}


RUNS = [pytest.param(p, run, id=f"{p}-{i}") for p, row in COMMANDS.items() if isinstance(row, list)
        for i, run in enumerate(row)]


@pytest.mark.parametrize("path,run", RUNS)
def test_real_invocation(path, run, workspace, tmp_path):
    args = [a.format(store=workspace["store"], storedir=workspace["storedir"], out=tmp_path, spec=workspace["spec"])
            for a in shlex.split(run.args)]
    assert " ".join(args[: len(path.split())]) == path, f"row {path!r} runs another command: {run.args}"
    env = {"BENCH_RESULTS_DIR": str(workspace["results"]), "MLFLOW_TRACKING_URI": None,  # never the repository's
           **run.env}  # results/
    r = _invoke(args, env)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    assert r.exit_code == run.code, f"bench {' '.join(args)}: exit {r.exit_code}\n{r.output[-2000:]}"
    assert run.out in r.output, f"bench {' '.join(args)}: {run.out!r} not in\n{r.output[-2000:]}"
    if run.code == 2:  # a refusal: one clear message, no traceback
        assert "Traceback" not in r.output
        assert re.search(r"^(error|Error): ", r.output, re.M), r.output[-2000:]


@pytest.mark.parametrize("path", [p for p, row in COMMANDS.items() if isinstance(row, Elsewhere)])
def test_elsewhere_rows_name_a_test_that_runs_the_command(path):
    row = COMMANDS[path]
    file, name = row.test.split("::")
    tree = ast.parse((REPO / file).read_text())
    (fn,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name] or [None]
    assert fn is not None, f"{path}: {row.test} does not exist"
    assert f'"{path.split()[-1]}"' in ast.get_source_segment((REPO / file).read_text(), fn), \
        f"{row.test} does not invoke `bench {path}`"


# -- make targets -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Make:
    """``make -n TARGET VARS`` prints ``dry``; with ``real`` the target is also run for real (seconds)."""

    dry: str
    real: bool = False
    vars: str = ""
    why: str = ""  # why it is only dry-run


MAKE_TARGETS: dict[str, Make] = {
    "install": Make("", real=True),  # up to date after `make install`: nothing to do
    "bench": Make("-m bench.cli run fmnist", why="trains the default suite: minutes"),
    "test": Make("-m pytest", why="the whole suite: minutes"),
    "leaderboard": Make(f"-m bench.cli leaderboard {SMOKE}", vars=f"SUITE={SMOKE}",
                        why="`bench leaderboard` runs above, in-process; a fresh process costs ~30 s of imports here"),
    "ui": Make("-m bench.cli ui", why="a server until stopped (`bench ui` runs in tests/test_safety.py)"),
    "mlflow-server": Make("-m bench.cli server --port 5191 --pg-port 5492", vars="PORT=5191 PG_PORT=5492",
                          why="a server until stopped (`bench server` runs in tests/test_server.py)"),
    "ci-gate": Make("-m bench.cli gate ci --baseline results/baselines/ci.json", why="runs the ci suite: minutes"),
    "ci-baseline": Make("-m bench.cli gate ci --baseline results/baselines/ci.json --write-baseline",
                        why="runs the ci suite and rewrites the committed baseline"),
    "ci-noise": Make("bash scripts/gate_noise.sh ci", why="three gate runs: tens of minutes"),
}


def _makefile_targets() -> tuple[set[str], set[str]]:
    """(targets with a rule, names declared .PHONY) of the Makefile; file targets (with / or .) left out."""
    text = (REPO / "Makefile").read_text()
    rules = {m.group(1) for m in re.finditer(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.M)}
    phony = {n for m in re.finditer(r"^\.PHONY\s*:(.*)$", text, re.M) for n in m.group(1).split()}
    return rules, phony


def test_every_make_target_has_a_row_and_every_phony_name_a_rule():
    rules, phony = _makefile_targets()
    assert sorted(rules - set(MAKE_TARGETS)) == [], "Makefile targets without a row in MAKE_TARGETS"
    assert sorted(set(MAKE_TARGETS) - rules) == [], "rows in MAKE_TARGETS for targets the Makefile no longer has"
    assert sorted(phony - rules) == [], ".PHONY names without a rule (`make NAME` would silently do nothing)"


def _make(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.mark.parametrize("target", MAKE_TARGETS)
def test_make_dry_run(target):
    row = MAKE_TARGETS[target]
    r = _make("-n", target, *row.vars.split())
    assert r.returncode == 0, r.stderr
    assert row.dry in r.stdout, f"make -n {target}: {row.dry!r} not in\n{r.stdout}"
    assert row.real or row.why, f"make {target}: neither run for real nor a reason why not"


@pytest.mark.parametrize("target", [t for t, row in MAKE_TARGETS.items() if row.real])
def test_make_real_run(target, tmp_path):
    r = _make(target, *MAKE_TARGETS[target].vars.split(), env={"BENCH_RESULTS_DIR": str(tmp_path / "results")})
    assert r.returncode == 0, f"make {target}: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
