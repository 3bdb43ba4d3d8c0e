"""The project's docs/ agree with the code: every rule and modifier id, the informaticist guide's table of the
rules, and every doc the code cites."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import ROOT

from b12screen import Rule, Screener
from b12screen.core.model import SINCE_ONSET

DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"
PACKAGE = ROOT / "b12screen"
MODIFIER_ID = re.compile(r"MOD-[A-Z0-9]+(?:-[A-Z0-9]+)*")
TABLE_ID = re.compile(r"^\| ([A-Z0-9]+(?:-[A-Z0-9]+)+|COMBO) \|", re.MULTILINE)


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def modifier_ids_in_code() -> set[str]:
    """Every string constant in the package that is a modifier id (wherever the engine keeps them)."""
    found: set[str] = set()
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and MODIFIER_ID.fullmatch(node.value):
                found.add(node.value)
    return found


def rule_ids_in_code() -> set[str]:
    return {rule.id for rule in Screener().rules}


def ids_in_docs(text: str) -> set[str]:
    return set(TABLE_ID.findall(text))


def test_table_parser_reads_rule_and_modifier_rows() -> None:
    text = "| id | when |\n|---|---|\n| MET-2 | x |\n| COMBO | y |\n| MOD-TX-ORAL-HI | z |\n| band | t |\n"
    assert ids_in_docs(text) == {"MET-2", "COMBO", "MOD-TX-ORAL-HI"}


def test_modifier_scan_finds_the_engine_modifiers() -> None:
    found = modifier_ids_in_code()
    assert {"MOD-DX", "MOD-LOW", "MOD-INDET", "MOD-RECENT", "MOD-STOPPED", "MOD-TX-ORAL-HI"} <= found


def test_every_rule_and_modifier_id_is_documented_and_nothing_else() -> None:
    documented = ids_in_docs((REFERENCE / "clinical-rules.md").read_text(encoding="utf-8"))
    in_code = rule_ids_in_code() | modifier_ids_in_code()
    assert sorted(in_code - documented) == [], "ids in the code missing from docs/reference/clinical-rules.md"
    assert sorted(documented - in_code) == [], "ids in docs/reference/clinical-rules.md that the code does not have"


def test_clinical_rules_cover_every_section_including_refinements() -> None:
    text = (REFERENCE / "clinical-rules.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (\d+)\. ", text, re.MULTILINE)
    assert headings == ["1", "2", "3", "4", "5", "6", "7", "8"]
    assert "Stale injection orders" in text and "Diabetic neuropathy" in text
    assert "An abnormal result is never" in text and "DEM-1" in text
    for point in ("Medicines known only by a code", "What the clinician reads.", "min_card_priority",
                  "ACID-2 and age.", "COMBO and AGE-75.", "frequencyMax", "dated after the as-of date are ignored"):
        assert point in text


def test_docs_cited_by_the_code_are_in_the_repository() -> None:
    """Code, docstrings and --help cite docs/<folder>/<name>.md by its path, and each of those files exists."""
    problems: list[str] = []
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"[\w./-]*\b[\w-]+\.md\b", text):
            cited = match.group(0)
            if cited.endswith("README.md"):
                continue
            if not cited.startswith("docs/"):
                problems.append(f"{path.relative_to(ROOT)}: cites {cited!r}, not its path under docs/")
            elif not (ROOT / cited).is_file():
                problems.append(f"{path.relative_to(ROOT)}: {cited} does not exist")
    assert problems == []


def test_architecture_names_every_package_folder() -> None:
    text = (REFERENCE / "architecture.md").read_text(encoding="utf-8")
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    assert [f for f in folders if f"{f}/" not in text] == []


def rule_rows(text: str) -> dict[str, list[str]]:
    """The cells of each row of the rules table (section 2), by rule id."""
    section = text.split("## 2. Rules", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if TABLE_ID.match(line):
            rows[cells[0]] = cells
    return rows


def test_documented_window_and_priority_match_each_rule() -> None:
    rows = rule_rows((REFERENCE / "clinical-rules.md").read_text(encoding="utf-8"))
    problems = []
    for rule in Screener().rules:
        _, _, window, priority, *_ = rows[rule.id]
        want_priority = rule.priority.name if rule.priority else "risk factor only"
        if not priority.startswith(want_priority):
            problems.append(f"{rule.id}: priority {priority!r}, code {want_priority}")
        if rule.window_months is None:
            want_window = "—"
        elif rule.window_months == float("inf"):
            want_window = "since onset"
        else:
            want_window = f"{rule.window_months:g} mo"
        if not window.startswith(want_window):
            problems.append(f"{rule.id}: window {window!r}, code {want_window}")
    assert problems == []


def _plain_words_rows(text: str) -> dict[str, tuple[str, str]]:
    """``| id | looks for | priority | window |`` rows of the informaticist guide → (priority, window)."""
    rows = (line.split("|") for line in text.splitlines() if TABLE_ID.match(line))
    return {cells[1].strip(): (cells[3].strip(), cells[4].strip()) for cells in rows}


def _stated(rule: Rule) -> tuple[str, str]:
    """How the guide states a rule's priority and window: ``LOW``, ``risk factor only``; ``36 months``, ``—``."""
    priority = rule.priority.name if rule.priority else "risk factor only"
    if rule.window_months is None:
        return priority, "—"
    return priority, "since onset" if rule.window_months == SINCE_ONSET else f"{rule.window_months:g} months"


def test_the_guide_states_each_rules_priority_and_window_as_the_code_has_them() -> None:
    rows = _plain_words_rows((DOCS / "informaticist" / "rules.md").read_text(encoding="utf-8"))
    assert sorted(rows) == sorted(rule_ids_in_code()), "docs/informaticist/rules.md lists other rules than the code"
    wrong = [f"{rule.id}: page {rows[rule.id]}, code {_stated(rule)}" for rule in Screener().rules
             if not (rows[rule.id][0].startswith(_stated(rule)[0]) and rows[rule.id][1].startswith(_stated(rule)[1]))]
    assert wrong == []
