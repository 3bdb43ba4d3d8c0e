"""b12screen: screen FHIR R4 patient data for risk of vitamin B12 deficiency.

Not a diagnostic device: it suggests checks for a clinician to consider.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import Config
from .engine import Screener, ScreeningResults, screen
from .errors import B12ScreenError, ConfigError, DuplicateRuleError, InputError, PluginError
from .hookspecs import hookimpl
from .model import Finding, Priority, Rule, RuleContext
from .outcome import ScreeningResult
from .record import PatientRecord

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
    "__version__",
    "hookimpl",
    "screen",
]
