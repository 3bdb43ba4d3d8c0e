"""The sections of ``summary.html`` that explain the run: warnings (the as-of trap, weak coverage), what
every code shown means, who was screened and flagged (age band, sex, why not evaluated), and the
configuration in force. Each takes ``summary.json`` and returns HTML (every value escaped)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

WEAK_SHARE = 0.10  # coverage below this share of the patients is pointed out
#: What a kind of data missing does to the screening, for the coverage warnings.
MISSING_MEANS = {
    "B12 result": "every patient shows as untested",
    "laboratory result": "anaemia and other laboratory signs cannot be seen",
    "medication": "no medicine rule (metformin, PPI or H2RA) can fire",
    "condition or procedure": "no condition or surgery rule can fire",
}


def html_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], table_id: str = "",
               sortable: bool = False) -> str:
    """An HTML table of escaped cells (None as empty); ``sortable``: a click on a heading sorts (the page's
    ``sortBy``). The one table writer of the summary and audit pages."""
    click = ' onclick="sortBy(this)"' if sortable else ""
    head = "".join(f"<th{click}>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape('' if c is None else str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def latest_b12(row: Mapping[str, Any]) -> str:
    """A row's latest B12 result in a few words ("120 ng/L, deficient, 2026-09-01"), or "never tested"."""
    if row.get("latest_b12_value") is None:
        return "never tested"
    return f"{row['latest_b12_value']:g} {row['latest_b12_unit']}, {row['latest_b12_band']}, {row['latest_b12_date']}"


def warnings(summary: Mapping[str, Any]) -> str:
    """The as-of trap and weak coverage, where the reader looks first."""
    notes = []
    if summary.get("as_of_warning"):
        text = summary["as_of_warning"]
        notes.append(f"{text[:1].upper()}{text[1:]}.")
    patients = summary["patients"]
    for kind, count in summary.get("coverage", {}).items():
        if not patients:
            break
        if count == 0:
            notes.append(f"No {kind}s in this data: {MISSING_MEANS.get(kind, 'rules using them cannot fire')}.")
        elif count < WEAK_SHARE * patients:
            notes.append(f"Only {count:,} of {patients:,} patients ({100 * count / patients:.0f} %) have a {kind}: "
                         f"for the others, {MISSING_MEANS.get(kind, 'rules using them cannot fire')}.")
    if not notes:
        return ""
    items = "".join(f"<li>{escape(n)}</li>" for n in notes)
    return f"<div id='warnings' class='warn' role='alert'><strong>Read this first</strong><ul>{items}</ul></div>"


def meanings(summary: Mapping[str, Any]) -> str:
    """Every outcome, priority and reason (rule or modifier id) the page shows, with what it means."""
    found = summary.get("definitions")
    if not found:
        return ""
    outcomes = [[c, d["meaning"], "yes" if d["flagged"] else "no"] for c, d in found["outcomes"].items()
                if c in summary["by_outcome"]]
    priorities = [[p, found["priorities"].get(p, "")] for p in summary["by_priority"]]
    shown = sorted({*summary["by_reason"], *summary["by_rule"]})
    known = {**found["modifiers"], **found["rules"]}
    reasons = [[r, known.get(r, {}).get("title", "(a plugin's code)"), known.get(r, {}).get("basis", "")]
               for r in shown]
    return ("<h2>What the codes mean</h2>"
            + html_table(["outcome", "meaning", "Flag made"], outcomes, "outcome-codes")
            + html_table(["priority", "meaning"], priorities, "priority-codes")
            + (html_table(["reason", "title", "basis"], reasons, "reason-codes") if reasons else ""))


def who(summary: Mapping[str, Any]) -> str:
    """Screened and flagged patients by age band and by sex, and what "not evaluated" holds."""
    if "by_age_band" not in summary:
        return ""
    bands = [[b, c["screened"], c["flagged"]] for b, c in summary["by_age_band"].items()
             if c["screened"] or b != "unknown"]
    sexes = [[s, c["screened"], c["flagged"]] for s, c in summary["by_sex"].items()]
    held = summary.get("not_evaluated", {})
    parts = ", ".join(f"{n:,} {why}" for why, n in held.items()) or "none"
    not_evaluated = summary["by_outcome"].get("not-evaluated", 0)
    minimum = summary.get("run", {}).get("configuration", {}).get("settings", {}).get("min_age")
    return ("<h2>Who was screened and flagged</h2><p class='note'>Age in whole years at the as-of date.</p>"
            + html_table(["age band", "patients", "flagged"], bands, "by-age")
            + html_table(["sex", "patients", "flagged"], sexes, "by-sex")
            + f"<p id='not-evaluated'>{not_evaluated:,} not evaluated: {escape(parts)}"
            + (f" (minimum age {escape(str(minimum))})" if minimum is not None else "")
            + f". Patients with no birth date: {summary.get('no_birth_date', 0):,} (age band unknown; screened "
              "without an age).</p>")


def configuration(summary: Mapping[str, Any]) -> str:
    """The options given and every setting and rule parameter in force."""
    run = summary.get("run", {})
    config = run.get("configuration")
    if not config:
        return ""
    given = run.get("options", {})
    asked = [[k, ", ".join(map(str, v)) if isinstance(v, list) else v] for k, v in given.items() if v]
    values = [[name, value] for name, value in config["settings"].items()]
    values += [[f"{rid}.{name}", value] for rid, params in config["rule_parameters"].items()
               for name, value in params.items()]
    return ("<h2>Configuration</h2><p class='note'>As given on the command line (or by the caller), then every "
            "value in force. Disabled rules: " + escape(", ".join(config["disabled_rules"]) or "none") + ".</p>"
            + (html_table(["option", "value"], asked, "options") if asked else "<p>Defaults: no option given.</p>")
            + html_table(["setting or parameter", "value"], values, "values"))
