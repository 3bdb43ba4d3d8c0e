"""Shared test fixtures: paths, a fresh plugin manager without entry points, a screener factory."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from b12screen import Config, Screener
from b12screen.plugins import PluginManager, get_plugin_manager

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
SHARED_DATA = ROOT.parent / "shared" / "data"
AS_OF = date(2026, 11, 24)


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
