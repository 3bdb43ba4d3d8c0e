"""``audit.html``: one self-contained page built from ``audit.json``: per group the test rate and the
yield drawn as points with their Wilson 95 % intervals (plain SVG, as on ``summary.html``), alerts per 1,000
screened patients, and the caveats in plain words. Nothing is fetched from the network."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from .summary_sections import html_table

_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}th{background:#f3f3f3}
svg text{font:12px system-ui,sans-serif}.note{color:#666}.warn{background:#fff4d6;padding:8px;border:1px solid #e0b000}
li{margin-bottom:.4em}"""

_LEFT, _WIDTH = 150, 400  # where the 0-100 % axis starts and how wide it is


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _interval(row: Mapping[str, Any], name: str) -> str:
    """``12.0 % (8.1-17.4 %)``, or ``-`` when not measured."""
    if row[name] is None:
        return "-"
    low, high = row[f"{name}_low"], row[f"{name}_high"]
    return f"{_pct(row[name])} ({100 * low:.1f}-{100 * high:.1f} %)"


def interval_chart(title: str, rows: Sequence[Mapping[str, Any]], name: str) -> str:
    """One line per group: the interval as a bar from its low to its high end, the estimate as a dot; a
    group without a measure shows ``not measured`` instead."""
    height = 24 * len(rows) + 26
    parts = [f'<line x1="{_LEFT + _WIDTH * t // 4}" y1="0" x2="{_LEFT + _WIDTH * t // 4}" y2="{height - 18}" '
             f'stroke="#ddd"/><text x="{_LEFT + _WIDTH * t // 4 - 10}" y="{height - 4}">{25 * t} %</text>'
             for t in range(5)]
    for i, row in enumerate(rows):
        y = 4 + 24 * i
        parts.append(f'<text x="0" y="{y + 14}">{escape(row["group"])}</text>')
        if row[name] is None:
            parts.append(f'<text x="{_LEFT + 4}" y="{y + 14}" fill="#666">not measured</text>')
            continue
        low, high = (round(_LEFT + _WIDTH * row[f"{name}_{end}"]) for end in ("low", "high"))
        point = round(_LEFT + _WIDTH * row[name])
        parts.append(f'<rect x="{low}" y="{y + 6}" width="{max(1, high - low)}" height="6" fill="#9db8d9">'
                     f'<title>{escape(row["group"])}: {_interval(row, name)}</title></rect>'
                     f'<circle cx="{point}" cy="{y + 9}" r="4" fill="#1d4e89"/>'
                     f'<text x="{_LEFT + _WIDTH + 12}" y="{y + 14}">{_interval(row, name)}</text>')
    return (f'<svg role="img" aria-label="{escape(title)}" width="{_LEFT + _WIDTH + 190}" height="{height}" '
            f'xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>')




def render(audit: Mapping[str, Any]) -> bytes:
    """The page of one audit (``audit``: what ``audit.json`` holds)."""
    run = audit["run"]
    rows = audit["groups"]
    window = f"{run['as_of']} to {run['window_end']} ({run['follow_up_months']:g} months)"
    message = audit["message"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>b12screen audit</title><style>{_CSS}</style></head><body><h1>b12screen audit</h1>",
        f"<p id='headline'>{audit['screened']:,} patients screened as of {escape(run['as_of'])} with what was "
        f"recorded by then; <strong>{audit['alerts']:,} alert{'' if audit['alerts'] == 1 else 's'}</strong> "
        f"({'-' if audit['alerts_per_1000_screened'] is None else audit['alerts_per_1000_screened']} per 1,000 "
        f"screened patients); follow-up window {escape(window)}. {audit['not_evaluated']:,} patients not "
        "evaluated are counted in no group.</p>",
        f"<p id='message' class='warn'>Note, <strong>{escape(message)}</strong>: test rate and yield "
        "cannot be measured on this export; they are not zero.</p>" if message else "",
        "<h2>Read this first</h2><ul id='caveats'>",
        *(f"<li>{escape(c)}</li>" for c in audit["caveats"]), "</ul>",
        "<h2>Yield: deficient among the tested</h2>", interval_chart("Yield per group", rows, "yield"),
        "<h2>Test rate: tested among the patients</h2>", interval_chart("Test rate per group", rows, "test_rate"),
        "<h2>Figures</h2>",
        html_table(["group", "patients", "per 1,000 screened", "flagged", "tested", "deficient", "indeterminate",
                "normal", "treated", "test rate (95 % CI)", "yield (95 % CI)"],
               [[r["group"], r["patients"], r["per_1000_screened"], r["flagged"], r["tested"], r["deficient"],
                 r["indeterminate"], r["normal"], r["treated"], _interval(r, "test_rate"), _interval(r, "yield")]
                for r in rows], "groups"),
        "<h2>Definitions</h2>",
        html_table(["column", "meaning"], [[k, v] for k, v in audit["definitions"].items()], "definitions"),
        "<h2>Run</h2>",
        html_table(["setting", "value"],
               [[k, ", ".join(map(str, v)) if isinstance(v, list) else v]
                for k, v in run.items() if k not in ("configuration", "files_read", "files_ignored")]
               + [["files read", len(run["files_read"])], ["files ignored", len(run["files_ignored"])]]
               + [["configuration fingerprint", run["configuration"]["fingerprint"]],
                  ["profile", run["configuration"]["profile"]]], "run"),
        f"<p class='note'>{audit['resources_read']:,} resources read; {audit['errors']:,} errors "
        "(audit_errors.ndjson). Decision support, not a diagnosis.</p></body></html>\n",
    ]
    return "".join(parts).encode("utf-8")
