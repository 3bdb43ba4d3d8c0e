"""``summary.html``: one self-contained page built from ``summary.json``, the flagged rows and the input
errors: inline CSS, SVG bar charts, and a little inline script to sort and filter the table (also from a
link ending ``#filter=TEXT``); nothing is fetched from the network. The charts are plain SVG bars: a chart
library would add a dependency (or inline hundreds of kilobytes of script) for a few rectangles."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from html import escape
from itertools import islice
from typing import Any

from . import summary_sections as sections
from .summary_sections import html_table

MAX_ERRORS = 200  # the page lists this many input errors; errors.ndjson has all of them
MAX_ROWS = 5000  # flagged patients listed; report.csv has all of them
AGE_ALONE = "AGE-75"  # a flag whose only reason is this rule: age 75 or over and nothing else

_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3;cursor:pointer}.n{text-align:right}svg text{font:12px system-ui,sans-serif}
.note{color:#666}input{padding:4px;width:20em}
.warn{border-left:4px solid #c0392b;background:#fdf0ee;padding:.4em 1em;margin:1em 0}"""

_SCRIPT = """function sortBy(th){var t=th.closest('table'),i=[].indexOf.call(th.parentNode.children,th),
b=t.tBodies[0],r=[].slice.call(b.rows),d=th.dataset.dir==='a'?-1:1;th.dataset.dir=d===1?'a':'d';
r.sort(function(x,y){var a=x.cells[i].textContent,c=y.cells[i].textContent,n=parseFloat(a)-parseFloat(c);
return d*(isNaN(n)?a.localeCompare(c):n)});r.forEach(function(x){b.appendChild(x)})}
function filterRows(box){var q=box.value.toLowerCase();[].forEach.call(document.querySelectorAll('#flagged tbody tr'),
function(r){r.hidden=r.textContent.toLowerCase().indexOf(q)<0})}
window.addEventListener('DOMContentLoaded',function(){var h=decodeURIComponent(location.hash.slice(1)),
box=document.getElementById('filter');if(h.indexOf('filter=')===0){box.value=h.slice(7);filterRows(box)}})"""


def age_alone_share(alone: int, flagged: int) -> dict[str, Any]:
    """``summary.json``'s ``age_75_alone``: how many flags, and what share of all flags, come from AGE-75
    alone (docs/reference/clinical-rules.md section 7 point 11: a site weighs this before showing LOW cards)."""
    return {"flags": alone, "share": round(alone / flagged, 4) if flagged else 0.0}


def _age_alone(summary: Mapping[str, Any]) -> str:
    part = summary.get("age_75_alone")
    if not part:
        return ""
    return (f"<p id='age-alone'>{part['flags']:,} of {summary['flagged']:,} flags "
            f"({100 * part['share']:.1f} %) come from {AGE_ALONE} alone (age 75 or over, no other reason). "
            "<span class='note'>A CDS Hooks service can keep such LOW suggestions to work lists with "
            "<code>min_card_priority</code>.</span></p>")


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], table_id: str = "") -> str:
    """A table whose headings sort it on a click."""
    return html_table(headers, rows, table_id, sortable=True)


def bar_chart(title: str, counts: Mapping[str, int]) -> str:
    """A horizontal SVG bar chart, one labelled bar per key."""
    items = list(counts.items())
    top = max([v for _k, v in items] or [0]) or 1
    height = 24 * len(items) + 8
    bars = []
    for i, (label, value) in enumerate(items):
        y = 4 + 24 * i
        width = round(400 * value / top)
        bars.append(f'<text x="0" y="{y + 15}">{escape(label)}</text>'
                    f'<rect x="230" y="{y}" width="{width}" height="18" fill="#3b6ea8"><title>{escape(label)}: '
                    f'{value}</title></rect><text x="{236 + width}" y="{y + 15}">{value:,}</text>')
    return (f'<svg role="img" aria-label="{escape(title)}" width="700" height="{height}" '
            f'xmlns="http://www.w3.org/2000/svg">{"".join(bars)}</svg>')




def render(summary: Mapping[str, Any], flagged: Iterable[Mapping[str, Any]],
           errors: Sequence[Mapping[str, Any]]) -> bytes:
    """The page for one batch run (``flagged``: the flagged rows, read once, the first ``MAX_ROWS`` shown)."""
    run = summary.get("run", {})
    coverage = summary.get("coverage", {})
    patients = summary["patients"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'\">",
        f"<title>b12screen batch summary</title><style>{_CSS}</style><script>{_SCRIPT}</script></head><body>",
        "<h1>b12screen batch summary</h1>",
        f"<p id='headline'>{patients:,} patients screened as of {escape(str(run.get('as_of', '')))}: "
        f"<strong>{summary['flagged']:,} flagged</strong> for a B12 check; {summary['errors']:,} "
        f"error{'' if summary['errors'] == 1 else 's'}. "
        "Decision support, not a diagnosis.</p>", sections.warnings(summary),
        "<h2>Outcomes</h2>", bar_chart("Patients by outcome", summary["by_outcome"]),
        "<h2>Priorities of the flagged patients</h2>", bar_chart("Flagged patients by priority",
                                                                 summary["by_priority"]),
        "<h2>Reasons</h2><p class='note'>Flagged patients per rule, or per modifier when a modifier decided "
        "(e.g. MOD-LOW: a low B12 result without action).</p>",
        bar_chart("Flagged patients by reason", summary["by_reason"]), _age_alone(summary),
        sections.meanings(summary), sections.who(summary),
        f"<h2>Flagged patients ({summary['flagged']:,})</h2>",
        "<p><input id='filter' type='search' placeholder='Filter the table' oninput='filterRows(this)'> "
        "<span class='note'>Click a column heading to sort.</span></p>",
        _table(["patient", "age", "sex", "priority", "outcome", "reasons", "latest B12", "suggested test", "flag text"],
               ([r["patient"], r.get("age"), r.get("sex"), r["priority"], r["outcome"], "; ".join(r["reasons"]),
                 sections.latest_b12(r), r["recommended_test_code"], r["flag_text"]]
                for r in islice(flagged, MAX_ROWS)), "flagged"),
        f"<p class='note'>The first {MAX_ROWS:,} are listed; report.csv has all of them.</p>"
        if summary["flagged"] > MAX_ROWS else "",
        "<h2>Data coverage</h2><p class='note'>Patients with screened data of each kind (resources whose codes "
        "are in a b12screen value set).</p>",
        _table(["data", "patients", "share"],
               [[k, v, f"{100 * v / patients:.0f} %" if patients else "-"] for k, v in coverage.items()],
               "coverage"),
        f"<h2>Errors ({summary['errors']:,})</h2>",
        f"<p class='note'>The first {MAX_ERRORS:,} input errors; errors.ndjson has every one.</p>"
        if summary["errors"] > MAX_ERRORS else "",
        _table(["file", "line", "reason"], [[e.get("file", e.get("patient")), e.get("line"), e.get("reason")]
                                           for e in errors[:MAX_ERRORS]], "errors")
        if errors else "<p>None.</p>",
        sections.configuration(summary), "<h2>Run</h2>",
        _table(["setting", "value"], [[k, ", ".join(v) if isinstance(v, list) else v] for k, v in run.items()
                                      if not isinstance(v, dict)],
               "run"),
        f"<p class='note'>{summary['resources_read']:,} resources from {summary.get('files_read', 0):,} files "
        f"({summary.get('files_ignored', 0):,} ignored).</p></body></html>\n",
    ]
    return "".join(parts).encode("utf-8")
