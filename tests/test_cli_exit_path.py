"""Every command ends through one exit path and builds its screener through one function, so a plugin that
fails to load is reported by every command that loads plugins, exactly as ``screen`` reports it.

The broken example plugin of ``hooks/`` is installed for these runs as pip would leave it: a ``.dist-info``
folder with its entry point, on the path of a fresh interpreter (``hooks/ci-check.sh`` also pip-installs it
for real).
"""

from __future__ import annotations

import ast
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT

from b12screen.errors import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, run_exit_code

AS_OF = "2026-11-24"
BROKEN = ROOT / "hooks" / "b12screen-broken"
WARNING = "b12screen: warning: plugin 'broken' failed to load and was skipped (RuntimeError: "
DEMO = FIXTURES / "examples" / "demo-bundle.json"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the broken plugin's distribution metadata, as an install leaves it."""
    folder = tmp_path_factory.mktemp("site")
    info = folder / "b12screen_broken-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: b12screen-broken\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[b12screen]\nbroken = b12screen_broken\n")
    return folder


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


def _run(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(BROKEN), str(ROOT)])}
    env.pop("B12SCREEN_LOAD_PLUGINS", None)
    return subprocess.run([sys.executable, "-m", "b12screen", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


def _commands(tmp: Path) -> dict[str, list[str]]:
    server = f"http://127.0.0.1:{_closed_port()}/fhir"
    return {
        "screen": ["screen", "--as-of", AS_OF, str(DEMO)],
        "batch": ["batch", "--as-of", AS_OF, "--workers", "1", "-o", str(tmp / "batch"), str(DEMO)],
        "explain": ["explain", "--as-of", AS_OF, "--patient", "demo-metformin", str(DEMO)],
        "fetch": ["fetch", "--as-of", AS_OF, "--patient", "p1", "--retries", "0", "--fhir-server", server],
        "export": ["export", "-o", str(tmp / "export"), "--fhir-server", server],
        "rules": ["rules"],
        "audit": ["audit", "--as-of", AS_OF, "--follow-up-months", "6", "--workers", "1", "-o", str(tmp / "audit"),
                  str(DEMO)],
        "serve --check-config": ["serve", "--check-config", "--insecure-no-auth"],
    }


@pytest.mark.parametrize("command", ["screen", "batch", "explain", "fetch", "export", "rules", "audit",
                                     "serve --check-config"])
@pytest.mark.slow
def test_every_command_that_loads_plugins_reports_the_broken_one_as_screen_does(site: Path, tmp_path: Path,
                                                                                command: str) -> None:
    args = _commands(tmp_path)[command]
    done = _run(site, *args, cwd=tmp_path)
    lines = done.stderr.splitlines()
    assert [line for line in lines if line.startswith(WARNING)] != [], done.stderr
    assert sum("plugin 'broken'" in line for line in lines) == 1, done.stderr  # once, not per worker or call
    assert "Traceback" not in done.stderr
    strict = _run(site, *args[:1], "--strict-plugins", *args[1:], cwd=tmp_path) if command != "serve --check-config" \
        else None
    if strict is not None:
        assert strict.returncode == EXIT_USAGE and "broken" in strict.stderr and "Traceback" not in strict.stderr


def test_no_module_but_main_calls_sys_exit() -> None:
    offenders = []
    for path in sorted((ROOT / "b12screen").rglob("*.py")):
        if path.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "exit" and getattr(node.value, "id", "") == "sys":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, ast.Name) and node.id == "SystemExit" and path.name != "common.py":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} (SystemExit)")
    assert offenders == []


@pytest.mark.parametrize(("input_errors", "resources", "rule_errors", "code"), [
    (0, 5, 0, EXIT_OK), (1, 5, 0, EXIT_PARTIAL), (0, 5, 1, EXIT_PARTIAL), (2, 0, 0, EXIT_USAGE),
    (0, 0, 0, EXIT_OK),
])
def test_the_exit_code_rule(input_errors: int, resources: int, rule_errors: int, code: int) -> None:
    assert run_exit_code(input_errors, resources, rule_errors) == code
