"""The example plugin distributions in hooks/: packaging, value set format, behaviour, and their own tests
(run from the source tree here; hooks/ci-check.sh installs them for real)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tomllib

import pytest
from conftest import AS_OF, ROOT

from b12screen.core.terminology import SOURCE_EXTENSION
from b12screen.plugins import ENTRY_POINT_GROUP
from b12screen.testing import fresh_plugin_manager, screen_resources

HOOKS = ROOT / "hooks"
EXAMPLES = {  # folder: (module, import path)
    "b12screen-pancreas": ("b12screen_pancreas", HOOKS / "b12screen-pancreas" / "src"),
    "b12screen-site-codes": ("b12screen_site_codes", HOOKS / "b12screen-site-codes"),
    "b12screen-broken": ("b12screen_broken", HOOKS / "b12screen-broken"),
}
WORKING = ["b12screen-pancreas", "b12screen-site-codes"]


def _import(folder: str, monkeypatch: pytest.MonkeyPatch):
    module, path = EXAMPLES[folder]
    monkeypatch.syspath_prepend(str(path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    return importlib.import_module(module)


@pytest.mark.parametrize("folder", sorted(EXAMPLES))
def test_each_example_is_a_b12screen_distribution_with_an_entry_point(folder: str) -> None:
    project = tomllib.loads((HOOKS / folder / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["name"] == folder and folder.startswith("b12screen-")
    [(name, target)] = project["entry-points"][ENTRY_POINT_GROUP].items()
    assert target == EXAMPLES[folder][0] and name.isidentifier()
    assert (HOOKS / folder / "README.md").exists()


@pytest.mark.parametrize("folder", WORKING)
def test_each_working_example_has_its_own_tests_and_a_fixture_with_expected_outcomes(folder: str) -> None:
    assert list((HOOKS / folder / "tests").glob("test_*.py"))
    expected = json.loads((HOOKS / folder / "fixtures" / "expected.json").read_text(encoding="utf-8"))
    assert (HOOKS / folder / "fixtures" / expected["fixture"]).exists() and expected["patients"]


@pytest.mark.parametrize("folder", WORKING)
def test_example_value_sets_follow_the_format_with_a_source_for_every_code(folder: str, monkeypatch) -> None:
    plugin = _import(folder, monkeypatch)
    value_sets = plugin.b12screen_value_sets()
    assert value_sets
    for vs in value_sets:
        assert vs["resourceType"] == "ValueSet" and vs["id"]
        for include in vs["compose"]["include"]:
            assert include["system"] and include["concept"]
            for concept in include["concept"]:
                sources = [e["valueString"] for e in concept.get("extension", []) if e["url"] == SOURCE_EXTENSION]
                assert sources and sources[0].strip(), (vs["id"], concept["code"])


@pytest.mark.parametrize("folder", WORKING)
def test_example_fixture_outcomes_with_and_without_the_plugin(folder: str, monkeypatch) -> None:
    plugin = _import(folder, monkeypatch)
    expected = json.loads((HOOKS / folder / "fixtures" / "expected.json").read_text(encoding="utf-8"))
    data = json.loads((HOOKS / folder / "fixtures" / expected["fixture"]).read_text(encoding="utf-8"))
    results = screen_resources(data, as_of=AS_OF, plugins=[plugin])
    got = {r.patient: {k: r.report()[k] for k in ("outcome", "priority", "rules", "risk_factors", "modifiers")}
           for r in results}
    assert got == expected["patients"]
    without = {r.patient: (r.outcome, r.rules) for r in screen_resources(data, as_of=AS_OF)}
    changed = [r.patient for r in results if r.flagged and without[r.patient] != (r.outcome, r.rules)]
    assert changed, "the plugin changes no flagged outcome of its own fixture"


def test_the_pancreas_example_declares_both_hooks_and_the_site_codes_example_only_value_sets(monkeypatch) -> None:
    manager = fresh_plugin_manager(_import("b12screen-pancreas", monkeypatch),
                                   _import("b12screen-site-codes", monkeypatch))
    hooks = {name: sorted(c.name for c in manager.pm.get_hookcallers(manager.pm.get_plugin(name)))
             for name in ("b12screen_pancreas", "b12screen_site_codes")}
    assert hooks == {"b12screen_pancreas": ["b12screen_rules", "b12screen_value_sets"],
                     "b12screen_site_codes": ["b12screen_value_sets"]}


def test_the_broken_example_raises_on_import_with_a_clear_message(monkeypatch) -> None:
    with pytest.raises(RuntimeError, match="deliberately broken example plugin"):
        _import("b12screen-broken", monkeypatch)


@pytest.mark.parametrize("folder", WORKING)
@pytest.mark.slow
def test_the_example_plugins_own_tests_pass(folder: str) -> None:
    path = EXAMPLES[folder][1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(path), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HOOKS / folder)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
