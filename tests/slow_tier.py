"""Keeps the fast tier honest: at the end of a run, the terminal summary lists (a warning, never a failure)
every test not marked ``slow`` whose setup and call took ``slow_threshold`` seconds or more.

Loaded by ``conftest.py``; under ``pytest-xdist`` the workers' reports reach the controller, which lists them.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

THRESHOLD = 1.0  # seconds: the line between the tiers (docs/development/testing.md)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("slow_threshold", "seconds of setup + call from which a test should be marked slow",
                  default=str(THRESHOLD))


def pytest_configure(config: pytest.Config) -> None:
    parallel = bool(getattr(config.option, "numprocesses", None))  # pytest-xdist's -n
    config.pluginmanager.register(SlowTier(float(config.getini("slow_threshold")), parallel), "slow-tier")


def unmarked_slow(reports: Iterable[pytest.TestReport], threshold: float) -> list[tuple[str, float]]:
    """(node id, seconds of setup + call) of each test not marked ``slow`` that took ``threshold`` or more,
    slowest first."""
    spent: dict[str, float] = {}
    for report in reports:
        if report.when in ("setup", "call") and "slow" not in report.keywords:
            spent[report.nodeid] = spent.get(report.nodeid, 0.0) + report.duration
    return sorted(((n, s) for n, s in spent.items() if s >= threshold), key=lambda item: (-item[1], item[0]))


class SlowTier:
    """Collects the reports of a run and lists the unmarked slow tests in the terminal summary."""

    def __init__(self, threshold: float, parallel: bool = False) -> None:
        self.threshold = threshold
        self.parallel = parallel
        self.reports: list[pytest.TestReport] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown":
            self.reports.append(report)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        found = unmarked_slow(self.reports, self.threshold)
        if not found:
            return
        terminalreporter.section(f"tests not marked slow that took {self.threshold:g} s or more", sep="-",
                                 yellow=True)
        terminalreporter.line("mark them @pytest.mark.slow or make them faster (docs/development/testing.md):",
                              yellow=True)
        if self.parallel:
            terminalreporter.line("(measured under -n: workers sharing the cores inflate durations; confirm serially)",
                                  yellow=True)
        for nodeid, seconds in found:
            terminalreporter.line(f"{seconds:6.2f}s {nodeid}", yellow=True)
