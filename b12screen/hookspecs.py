"""The hooks b12screen plugins implement. Every hook is documented in ``docs/informaticist/plugins.md``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

from .core.model import Rule

if TYPE_CHECKING:  # the decision code loads with the engine, not with every command
    from .core.modifiers import Modifier

PROJECT_NAME = "b12screen"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def b12screen_rules() -> list[Rule]:
    """Return the screening rules this plugin provides (a list of :class:`b12screen.Rule`).

    Called once when a :class:`b12screen.Screener` is built. Rule ids must be unique across all
    plugins; rules are evaluated in (stage, id) order whatever the install order.
    """


@hookspec
def b12screen_value_sets() -> list[dict[str, Any]]:
    """Return FHIR R4 ValueSet resources (as dicts) to add to the terminology.

    A ValueSet whose ``id`` matches a built-in one adds its codes and text terms to it (a site's
    local codes); a new ``id`` creates a value set that the plugin's own rules can use.
    """


@hookspec
def b12screen_modifiers() -> list[Modifier]:
    """Return modifiers (:class:`b12screen.core.modifiers.Modifier`) to add to the outcome order.

    Each runs at its ``step`` (1-8 of docs/reference/clinical-rules.md section 4), after the built-in modifiers of
    that step and before the step's own check; plugin modifiers of one step run in id order. Ids must be
    unique across plugins and the built-in modifiers.
    """
