"""Shared test fixtures: paths, a fresh plugin manager without entry points, a screener factory."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from slow_tier import pytest_addoption, pytest_configure  # noqa: F401 (the tier's hooks, found here by name)

from b12screen import Config, Screener
from b12screen.plugins import PluginManager, get_plugin_manager

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
SHARED_DATA = ROOT.parent / "shared" / "data"
#: Tests that need the shared Synthea export's real-shaped patients (memory bounds: the fixtures' tiny Bundles
#: would measure file-count overheads, not patients) skip cleanly without it.
NEEDS_SYNTHEA = pytest.mark.skipif(not (SHARED_DATA / "synthea-bulk-10").is_dir(),
                                   reason="needs the shared Synthea export (../shared/data) for real-shaped Bundles")
AS_OF = date(2026, 11, 24)


@pytest.fixture(autouse=True)
def _isolate_from_installed_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands run by tests see the built-in plugins only, whatever is installed in the environment or
    set in the shell (tests that fake entry points use the ``fake_entry_points`` fixture)."""
    monkeypatch.setenv("B12SCREEN_LOAD_PLUGINS", "")
    monkeypatch.delenv("B12SCREEN_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("B12SCREEN_STRICT_PLUGINS", raising=False)


@pytest.fixture
def fake_entry_points(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``install(name=module_or_error_message, ...)`` makes those the only installed ``b12screen`` entry
    points: a module object is importable under ``b12screen_test_<name>``; a string makes the import raise
    ``RuntimeError(string)``. ``dists={"name": ("dist", "1.0")}`` gives entry points a distribution."""

    def install(dists: dict[str, tuple[str, str]] | None = None, **plugins: Any) -> None:
        monkeypatch.delenv("B12SCREEN_LOAD_PLUGINS", raising=False)
        eps = []
        for name, plugin in plugins.items():
            module_name = f"b12screen_test_{name}"
            if isinstance(plugin, str):
                module = types.ModuleType(module_name)
                module.__getattr__ = _raiser(plugin)  # type: ignore[attr-defined]
                value = f"{module_name}:plugin"
            else:
                module = plugin
                value = module_name
            monkeypatch.setitem(sys.modules, module_name, module)
            ep = metadata.EntryPoint(name, value, "b12screen")
            if dists and name in dists:
                dist_name, version = dists[name]
                ep = ep._for(types.SimpleNamespace(name=dist_name, version=version))
            eps.append(ep)
        real = metadata.entry_points

        def fake(**kwargs: Any) -> Any:
            if kwargs.get("group") == "b12screen":
                return metadata.EntryPoints(eps)
            return real(**kwargs)

        monkeypatch.setattr(metadata, "entry_points", fake)

    return install


def _raiser(message: str) -> Callable[[str], Any]:
    def __getattr__(name: str) -> Any:
        raise RuntimeError(message)

    return __getattr__


@pytest.fixture
def plugin_manager() -> PluginManager:
    """Built-in plugins only: installed third-party plugins never leak into unit tests."""
    return get_plugin_manager(load_entry_points=False)


@pytest.fixture
def make_screener(plugin_manager: PluginManager) -> Callable[..., Screener]:
    def factory(profile: str = "default", config: Config | None = None) -> Screener:
        return Screener(profile=profile, config=config, plugin_manager=plugin_manager)

    return factory


@pytest.fixture
def screener(make_screener: Callable[..., Screener]) -> Screener:
    return make_screener()


def patient(pid: str, birth: str = "1960-01-01", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "birthDate": birth, **extra}


def metformin_request(rid: str, pid: str, authored: str, status: str = "active", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest", "id": rid, "status": status, "intent": "order",
        "medicationCodeableConcept": {"coding": [{
            "system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "861007",
            "display": "metformin hydrochloride 500 MG Oral Tablet"}]},
        "subject": {"reference": f"Patient/{pid}"}, "authoredOn": authored, **extra,
    }


def bundle(*resources: dict[str, Any], kind: str = "collection") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": [{"resource": r} for r in resources]}
