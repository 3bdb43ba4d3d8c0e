"""docs/informaticist/plugins.md is the plugin author's reference: every hook has a section with its exact signature,
parameters, return value, when it is called and a runnable example; every hook has a test of its own. The site's
example runner (tests/test_site_examples.py) runs those examples and checks the excerpts of the example plugins
against their files, so the document cannot rot."""

from __future__ import annotations

import ast
import inspect
import re

import pytest
from conftest import ROOT
from doc_examples import EXECUTED, blocks, page_blocks

from b12screen import hookspecs
from b12screen.plugins import ENTRY_POINT_GROUP, ENV_DISABLE, ENV_LOAD, ENV_STRICT, HOOK_NAMES

PAGE = ROOT / "docs" / "informaticist" / "plugins.md"
TESTS = ROOT / "tests"
HOOKS = sorted(HOOK_NAMES)


def _text() -> str:
    return PAGE.read_text(encoding="utf-8")


def _sections() -> dict[str, str]:
    """``## heading`` → the text up to the next ``## `` heading."""
    parts = re.split(r"^## (.+)$", _text(), flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def signature(hook: str) -> str:
    """The hook's signature as written in hookspecs.py, e.g. ``b12screen_rules() -> list[Rule]``."""
    spec = getattr(hookspecs, hook)
    annotations = spec.__annotations__
    params = ", ".join(f"{p}: {annotations[p]}" if p in annotations else p for p in inspect.signature(spec).parameters)
    return f"{hook}({params}) -> {annotations['return']}"


def _test_names() -> set[str]:
    names: set[str] = set()
    for path in TESTS.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                names.add(node.name)
    return names


def test_the_hooks_are_the_ones_in_hookspecs() -> None:
    assert HOOKS and all(h.startswith("b12screen_") for h in HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_section_with_its_exact_signature(hook: str) -> None:
    sections = _sections()
    assert hook in sections, f"docs/informaticist/plugins.md has no '## {hook}' heading"
    assert f"`{signature(hook)}`" in sections[hook], f"the '## {hook}' section lacks `{signature(hook)}`"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_section_gives_parameters_return_when_called_and_a_runnable_example(hook: str) -> None:
    section = _sections().get(hook, "")
    for label in ("**Signature**", "**Parameters**", "**Returns**", "**Called**"):
        assert label in section, f"the '## {hook}' section has no {label}"
    assert _runnable(section), f"the '## {hook}' section has no ```python example the site runner runs"


def test_no_section_documents_a_hook_that_does_not_exist() -> None:
    stale = [h for h in _sections() if h.startswith("b12screen_") and h not in HOOK_NAMES]
    assert not stale, f"docs/informaticist/plugins.md documents unknown hooks: {stale}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test_of_its_own(hook: str) -> None:
    assert any(hook in name for name in _test_names()), f"no test function in tests/ has {hook!r} in its name"


def test_the_page_covers_packaging_testing_listing_and_controls() -> None:
    text = _text()
    for needle in (f"[project.entry-points.{ENTRY_POINT_GROUP}]", "b12screen.testing", "b12screen plugins",
                   "--json", "--strict-plugins", ENV_LOAD, ENV_DISABLE, ENV_STRICT):
        assert needle in text, f"docs/informaticist/plugins.md does not mention {needle}"
    for helper in ("record_from", "run_rule", "screen_resources", "fresh_plugin_manager"):
        assert f"`{helper}(" in text


def _runnable(text: str) -> list[str]:
    """The ``python`` blocks of the text that the site runner runs as they are (not excerpts checked by run-by)."""
    return [b.body for b in blocks(text, "docs/informaticist/plugins.md")
            if b.language == "python" and "run-by" not in b.options]


def test_the_page_has_runnable_examples_and_the_site_runner_runs_them() -> None:
    assert len(_runnable(_text())) >= len(HOOKS)
    assert any(b.language in EXECUTED for b in page_blocks(PAGE))
