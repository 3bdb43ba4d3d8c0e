"""b12screen: screen FHIR R4 patient data for risk of vitamin B12 deficiency.

Not a diagnostic device: it suggests checks for a clinician to consider.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import B12ScreenError, ConfigError, DuplicateRuleError, InputError, PluginError

if TYPE_CHECKING:
    from .batch.api import StaleDataWarning, StreamingResults
    from .core.config import Config
    from .core.model import Finding, Priority, Rule, RuleContext
    from .core.outcome import ScreeningResult
    from .core.record import PatientRecord
    from .hookspecs import hookimpl
    from .library import screen_paths
    from .screening import Screener, ScreeningResults, screen
    from .sources.fhirread import read_patient

#: Public names and the module each one lives in; they load on first use (PEP 562), so that
#: ``import b12screen`` (and so ``b12screen --help``) does not pay for the engine and its models.
_LAZY = {
    "Config": "core.config",
    "Screener": "screening", "ScreeningResults": "screening", "screen": "screening",
    "Finding": "core.model", "Priority": "core.model", "Rule": "core.model", "RuleContext": "core.model",
    "ScreeningResult": "core.outcome",
    "PatientRecord": "core.record",
    "hookimpl": "hookspecs",
    "screen_paths": "library",
    "StreamingResults": "batch.api", "StaleDataWarning": "batch.api",
    "read_patient": "sources.fhirread",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "B12ScreenError",
    "Config",
    "ConfigError",
    "DuplicateRuleError",
    "Finding",
    "InputError",
    "PatientRecord",
    "PluginError",
    "Priority",
    "Rule",
    "RuleContext",
    "Screener",
    "ScreeningResult",
    "ScreeningResults",
    "StaleDataWarning",
    "StreamingResults",
    "__version__",
    "hookimpl",
    "read_patient",
    "screen",
    "screen_paths",
]
