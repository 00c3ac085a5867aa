"""``bench`` commands for clusters: the executor flags of ``bench run`` and ``bench server``."""
from __future__ import annotations

import sys
from pathlib import Path

import click


def executor_options(f):
    """``bench run``'s executor flags (bench.executors); each overrides the suite's ``executor:`` block."""
    opts = [
        click.option("--executor", type=click.Choice(["local", "ray", "slurm"]), default=None,
                     help="Where cells run [default: suite executor.name, $BENCH_EXECUTOR, else local]."),
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="local: worker processes [default: one per GPU, else one per core, at most 8]; 1 = in-process."),
        click.option("--allow-oversubscribe", is_flag=True, default=False,
                     help="local: allow --workers above the number of cores (or GPUs) [default: refused]."),
        click.option("--address", default=None, help="ray: cluster address (e.g. ray://head:10001) [default: a local Ray]."),
        click.option("--cpus-per-cell", type=float, default=None, help="ray/slurm: CPUs per cell [default: 1]."),
        click.option("--gpus-per-cell", type=float, default=None, help="ray/slurm: GPUs per cell [default: 0]."),
        click.option("--partition", default=None, help="slurm: partition."),
        click.option("--time-min", type=click.IntRange(min=1), default=None, help="slurm: time limit per cell, minutes."),
        click.option("--slurm-cluster", type=click.Choice(["slurm", "local", "debug"]), default=None,
                     help="slurm: submitit cluster (local/debug run jobs on this machine, for tests)."),
        click.option("--lease-timeout", type=float, default=None, envvar="BENCH_LEASE_TIMEOUT",
                     help="Seconds without a heartbeat before a cell's lease is taken over [default: 300]."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@click.command("server")
@click.option("--port", default=5001, show_default=True, help="MLflow server port (127.0.0.1).")
@click.option("--pg-port", default=5433, show_default=True, help="PostgreSQL port (127.0.0.1).")
@click.option("--pg-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="PostgreSQL data directory [default: results/postgres].")
@click.option("--artifacts", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Artifact root the server serves [default: results/server-artifacts].")
@click.option("--workers", default=2, show_default=True, help="MLflow server worker processes.")
def server_cmd(port, pg_port, pg_dir, artifacts, workers):
    """Serve an MLflow tracking server for many writers: PostgreSQL backend, file artifact root, 127.0.0.1.

    Workers then run with `--tracking-uri http://127.0.0.1:PORT`. PostgreSQL is initialised on first
    use and stopped when the server stops (Ctrl-C / SIGTERM).
    """
    import signal

    from bench.context import results_dir
    from bench.server import PostgresCluster, mlflow_server_cmd, pg_bin, server_env
    from bench.ui_server import serve

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    # A SIGTERM while PostgreSQL starts or stops unwinds through the `finally` below (which stops it),
    # instead of ending this process with the cluster left running; `serve` forwards it to the server.
    signal.signal(signal.SIGTERM, interrupt)
    pg_bin("initdb"), pg_bin("pg_ctl")  # missing binaries: one message, before anything starts
    root = results_dir()
    pg = PostgresCluster((pg_dir or root / "postgres").absolute(), pg_port)
    art = (artifacts or root / "server-artifacts").absolute()
    art.mkdir(parents=True, exist_ok=True)
    try:
        pg.start()
        click.echo(f"PostgreSQL {pg.uri} (data {pg.datadir}); MLflow server at http://127.0.0.1:{port} "
                   f"(artifacts {art}); workers: --tracking-uri http://127.0.0.1:{port}; Ctrl-C to stop")
        rc = serve(mlflow_server_cmd(pg.uri, art, port, workers), server_env())
    finally:
        pg.stop()
    sys.exit(rc)


COMMANDS = (server_cmd,)
