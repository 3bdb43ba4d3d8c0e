"""The ``b12screen`` command line: a thin layer over the library, one module per command.

Each command imports the engine, models and HTTP code it needs when it runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import click

from .._version import __version__
from .audit import audit
from .batch import batch
from .catalog import plugins, rules
from .common import configure_logging
from .explain import explain
from .export import export
from .fetch import fetch
from .screen import screen
from .serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="b12screen")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (no patient data).")
def cli(verbose: int) -> None:
    """Screen FHIR R4 patient data for risk of vitamin B12 deficiency.

    b12screen suggests checks for a clinician to consider; it does not diagnose.
    The rules are in docs/reference/clinical-rules.md; inputs and outputs in docs/reference/interfaces.md.
    """
    configure_logging(verbose)


for _command in (screen, batch, audit, export, explain, rules, plugins, serve, fetch):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="b12screen")


__all__ = ["cli", "main"]
