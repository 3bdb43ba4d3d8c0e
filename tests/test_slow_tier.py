"""The tier's warning: tests not marked ``slow`` that took ``slow_threshold`` seconds or more are listed at the
end of the run, as a warning that never fails it; tests marked ``slow`` never are."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from slow_tier import unmarked_slow

pytest_plugins = ["pytester"]

INNER = """
import pytest

def test_quick():
    pass

@pytest.mark.slow
def test_marked():
    pass
"""


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """An inner run with this plugin only (no installed plugins: quicker)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    return pytester


def test_an_unmarked_test_over_the_threshold_is_listed_and_the_run_still_passes(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmarkers = slow: slow\nslow_threshold = 0\n")  # every test is "slow" at 0 s
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest("-p", "slow_tier", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*tests not marked slow that took 0 s or more*", "*s test_inner.py::test_quick"])
    assert "test_marked" not in result.stdout.str()


def test_nothing_is_listed_under_the_threshold(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmarkers = slow: slow\nslow_threshold = 1000\n")
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest("-p", "slow_tier", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert "not marked slow" not in result.stdout.str()


def _report(nodeid: str, when: str, duration: float, *marks: str) -> pytest.TestReport:
    return SimpleNamespace(nodeid=nodeid, when=when, duration=duration,  # type: ignore[return-value]
                           keywords={nodeid: 1, **dict.fromkeys(marks, 1)})


def test_setup_and_call_add_up_and_the_threshold_itself_counts() -> None:
    reports = [_report("a", "setup", 0.6), _report("a", "call", 0.4),  # 1.0 s together: listed
               _report("b", "call", 0.99), _report("c", "call", 5.0, "slow"), _report("d", "call", 2.5)]
    assert unmarked_slow(reports, 1.0) == [("d", 2.5), ("a", 1.0)]
    assert unmarked_slow(reports, 1.01) == [("d", 2.5)]


def test_the_default_threshold_is_one_second(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("def pytest_report_header(config):\n"
                          "    return f\"threshold={config.getini('slow_threshold')}\"\n")
    pytester.makepyfile(test_inner="def test_quick():\n    pass\n")
    result = pytester.runpytest("-p", "slow_tier", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["threshold=1.0"])
    assert result.ret == 0
