"""The plugin manager: built-in rule plugins, tolerant entry-point loading and listing."""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import DuplicateRuleError, PluginError
from .model import Rule

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "b12screen"
ENV_LOAD = "B12SCREEN_LOAD_PLUGINS"
ENV_DISABLE = "B12SCREEN_DISABLE_PLUGINS"
ENV_STRICT = "B12SCREEN_STRICT_PLUGINS"

#: Built-in rule plugins, registered before any third-party plugin.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "b12screen.rules.bariatric",
    "b12screen.rules.combined",
    "b12screen.rules.diet",
    "b12screen.rules.malabsorption",
    "b12screen.rules.medication",
    "b12screen.rules.symptomatic",
)


@dataclass
class PluginFailure:
    """A plugin that could not be loaded."""

    name: str
    error: str


@dataclass
class PluginManager:
    """pluggy's manager plus what loading found (failures, distributions)."""

    pm: pluggy.PluginManager
    failures: list[PluginFailure] = field(default_factory=list)
    distributions: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def register(self, plugin: object, name: str | None = None) -> str | None:
        """Register an extra plugin (a module or object with ``@hookimpl`` functions)."""
        return self.pm.register(plugin, name=name)

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)

    def plugin_names(self) -> list[str]:
        return sorted(n for n, p in self.pm.list_name_plugin() if p is not None and n != "b12screen.hookspecs")


def _split_env(name: str) -> set[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def _strict_from_env() -> bool:
    return os.environ.get(ENV_STRICT, "").strip().lower() in {"1", "true", "yes", "on"}


def get_plugin_manager(load_entry_points: bool = True, strict: bool | None = None) -> PluginManager:
    """A fresh plugin manager with the built-in plugins and (optionally) installed ones.

    ``B12SCREEN_LOAD_PLUGINS`` (comma-separated entry-point names) loads only those plugins;
    ``B12SCREEN_DISABLE_PLUGINS`` blocks named plugins (built-in ones too). A plugin that fails to
    import is reported in ``failures`` and skipped, unless ``strict`` (or ``B12SCREEN_STRICT_PLUGINS=1``).
    """
    strict = _strict_from_env() if strict is None else strict
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    manager = PluginManager(pm)
    disabled = _split_env(ENV_DISABLE) or set()
    for name in DEFAULT_PLUGINS:
        if name in disabled:
            continue
        pm.register(importlib.import_module(name), name=name)
    if load_entry_points:
        _load_entry_points(manager, _split_env(ENV_LOAD), disabled, strict)
    return manager


def _load_entry_points(manager: PluginManager, only: set[str] | None, disabled: set[str], strict: bool) -> None:
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in disabled or (only is not None and ep.name not in only):
            continue
        if manager.pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
            manager.pm.register(plugin, name=ep.name)
        except Exception as exc:
            if strict:
                raise PluginError(f"plugin {ep.name!r} failed to load: {type(exc).__name__}: {exc}") from exc
            manager.failures.append(PluginFailure(ep.name, f"{type(exc).__name__}: {exc}"))
            log.warning("plugin %s failed to load and was skipped: %s: %s", ep.name, type(exc).__name__, exc)
            continue
        if ep.dist is not None:
            manager.distributions[ep.name] = (ep.dist.name, ep.dist.version)


def collect_rules(manager: PluginManager) -> list[tuple[str, Rule]]:
    """(plugin name, rule) for every registered rule, sorted by (stage, id); duplicate ids refused."""
    owners: dict[str, str] = {}
    rules: list[tuple[str, Rule]] = []
    for impl in manager.pm.hook.b12screen_rules.get_hookimpls():
        result = impl.function()
        for rule in _as_list(result, impl.plugin_name, "b12screen_rules"):
            if not isinstance(rule, Rule):
                raise PluginError(f"plugin {impl.plugin_name!r} returned {type(rule).__name__}, not a Rule")
            if rule.id in owners:
                raise DuplicateRuleError(
                    f"rule id {rule.id!r} is defined by both {owners[rule.id]!r} and {impl.plugin_name!r}"
                )
            owners[rule.id] = impl.plugin_name
            rules.append((impl.plugin_name, rule))
    rules.sort(key=lambda pr: (pr[1].stage, pr[1].id))
    return rules


def collect_value_sets(manager: PluginManager) -> list[tuple[str, dict[str, Any]]]:
    """(plugin name, ValueSet) for every value set plugins contribute, in plugin-name order."""
    out: list[tuple[str, dict[str, Any]]] = []
    impls = sorted(manager.pm.hook.b12screen_value_sets.get_hookimpls(), key=lambda i: i.plugin_name)
    for impl in impls:
        for vs in _as_list(impl.function(), impl.plugin_name, "b12screen_value_sets"):
            out.append((impl.plugin_name, vs))
    return out


def _as_list(result: Any, plugin: str, hook: str) -> list[Any]:
    if result is None:
        return []
    if isinstance(result, (list, tuple)):
        return list(result)
    raise PluginError(f"plugin {plugin!r}: {hook}() must return a list, got {type(result).__name__}")


def describe_plugins(manager: PluginManager) -> list[dict[str, Any]]:
    """Name, version, hooks and rule ids of every loaded plugin, plus failures (for ``b12screen plugins``)."""
    rules_by_plugin: dict[str, list[str]] = {}
    for impl in manager.pm.hook.b12screen_rules.get_hookimpls():
        ids = [r.id for r in _as_list(impl.function(), impl.plugin_name, "b12screen_rules") if isinstance(r, Rule)]
        rules_by_plugin[impl.plugin_name] = sorted(ids)
    from . import __version__

    out: list[dict[str, Any]] = []
    for name, plugin in sorted(manager.pm.list_name_plugin(), key=lambda np: np[0]):
        if plugin is None:
            continue
        hooks = sorted(c.name for c in manager.pm.get_hookcallers(plugin) or [])
        dist = manager.distributions.get(name)
        out.append({
            "name": name,
            "distribution": dist[0] if dist else ("b12screen" if name in DEFAULT_PLUGINS else None),
            "version": dist[1] if dist else (__version__ if name in DEFAULT_PLUGINS else None),
            "builtin": name in DEFAULT_PLUGINS,
            "hooks": hooks,
            "rules": rules_by_plugin.get(name, []),
            "status": "loaded",
        })
    for failure in manager.failures:
        out.append({"name": failure.name, "distribution": None, "version": None, "builtin": False,
                    "hooks": [], "rules": [], "status": "failed", "error": failure.error})
    return out

