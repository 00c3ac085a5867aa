"""Options shared by the ``bench`` commands (the modules of :mod:`bench.cli` import them from here)."""
from __future__ import annotations

import click

plugin_option = click.option(
    "--plugin", "plugins", multiple=True, metavar="MODULE",
    help="Import this module first: it registers external adapters/metrics (repeatable; added to the "
         "suite's own plugins:).")

accept_code_option = click.option(
    "--accept-code-change", is_flag=True,
    help="Reuse FINISHED runs although the adapter's code changed since (recorded on each run as "
         "bench.code.accepted); without it such a run is refused, with --force it is run again.")
