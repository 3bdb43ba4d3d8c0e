"""Each command imports what it needs: --help no engine or models; screen no HTTP, JWT, service or Flag model.

Runs the CLI in a fresh interpreter and reads ``sys.modules`` afterwards (no timing: the figures are in
``benchmarks/startup_bench.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import FIXTURES

PROBE = """
import json, sys
from b12screen.cli import cli
try:
    cli(sys.argv[1:], prog_name="b12screen")
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def modules_after(*argv: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120,
                          check=True)
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def loaded(modules: set[str], *prefixes: str) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


HTTP_AND_SERVICE = ("jwt", "requests", "starlette", "uvicorn", "b12screen.cdshooks", "b12screen.sources.fhirclient",
                    "pyspark", "fhir.resources.R4B.flag")


def test_help_imports_no_engine_models_or_http() -> None:
    modules = modules_after("--help")
    assert loaded(modules, *HTTP_AND_SERVICE, "b12screen.core.engine", "fhir", "pydantic", "b12screen.batch") == []


def test_screen_imports_no_http_jwt_service_or_flag_model() -> None:
    modules = modules_after("screen", "--as-of", "2026-11-24", str(FIXTURES / "examples" / "demo-bundle.json"))
    assert "b12screen.core.engine" in modules  # the probe really screened
    assert loaded(modules, *HTTP_AND_SERVICE) == []
