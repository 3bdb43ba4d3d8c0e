"""``b12screen explain``: why one patient got their outcome (rules, figures, modifiers, step, evidence)."""

from __future__ import annotations

import click

from ..errors import run_exit_code
from .common import (
    as_of_or_data_end,
    dumps,
    echo_err,
    fatal,
    finish,
    load_screener,
    rule_config_options,
    settle_as_of,
)


@click.command()
@click.argument("paths", nargs=-1, required=True, metavar="FILE...")
@click.option("--patient", "patient_id", required=True, metavar="ID", help="Patient id (or Patient/ID) to explain.")
@rule_config_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def explain(paths: tuple[str, ...], patient_id: str, as_of: str | None, profile: str, config_path: str | None,
            disable: tuple[str, ...], enable: tuple[str, ...], settings: tuple[str, ...], strict_plugins: bool,
            as_json: bool) -> None:
    """Explain one patient's outcome: every rule as fired, not fired or disabled with the figures it
    compared, every modifier considered, the step that decided, and the evidence."""
    from ..core.dataend import record_newest
    from ..core.explain import explain as explain_patient
    from ..core.explain import render
    from ..screening import group
    from ..sources.locate import locate
    from ..sources.validation import ALL

    when = as_of_or_data_end(as_of)
    screener = load_screener(profile, config_path, disable, enable, settings, strict_plugins)
    key = patient_id if patient_id.startswith("Patient/") else f"Patient/{patient_id}"
    located = locate(paths, key.removeprefix("Patient/"))  # reads only what holds this patient
    if located.missing:
        fatal("; ".join(str(e) for e in located.missing))
    grouped = group(screener, located.items, ALL, located.deleted)
    found = grouped.patients.get(key)
    if found is None:
        for error in grouped.errors:
            echo_err(f"error: {error}")
        fatal(f"patient {patient_id!r} is not in the input ({located.searched} file(s) searched)")
    record = found.record()
    explanation = explain_patient(screener, record, settle_as_of(when, record_newest(record), warn=False))
    click.echo(dumps(explanation) if as_json else render(explanation))
    for error in grouped.errors:  # after the answer: the problems of what was read for this patient
        echo_err(f"error: {error}")
    failed = sum(r["status"] == "failed" for r in explanation["rules"])
    finish(run_exit_code(len(grouped.errors), found.resource_count, failed))
