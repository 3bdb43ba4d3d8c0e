"""The plugin manager: built-in rule plugins, tolerant entry-point loading and listing."""

from __future__ import annotations

import difflib
import importlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .core.model import Rule
from .errors import DuplicateRuleError, PluginError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "b12screen"
ENV_LOAD = "B12SCREEN_LOAD_PLUGINS"
ENV_DISABLE = "B12SCREEN_DISABLE_PLUGINS"
ENV_STRICT = "B12SCREEN_STRICT_PLUGINS"
#: Set on log records the command line reports in its own words (it hides them unless ``-v``).
REPORTED_BY_CLI = "b12screen_reported_by_cli"

#: Built-in rule plugins, registered before any third-party plugin.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "b12screen.rules.bariatric",
    "b12screen.rules.combined",
    "b12screen.rules.diet",
    "b12screen.rules.malabsorption",
    "b12screen.rules.medication",
    "b12screen.rules.symptomatic",
)

#: The names of every hook in :mod:`b12screen.hookspecs`.
HOOK_NAMES: frozenset[str] = frozenset(
    name for name, value in vars(hookspecs).items()
    if callable(value) and getattr(value, f"{hookspecs.PROJECT_NAME}_spec", None) is not None
)


@dataclass
class PluginFailure:
    """A plugin that could not be loaded: its entry-point name, the error, and its distribution if known."""

    name: str
    error: str
    distribution: str | None = None
    version: str | None = None


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
        """Register an extra plugin (a module or object with ``@hookimpl`` functions).

        Raises :class:`PluginError` when the plugin implements an unknown hook, forgot ``@hookimpl`` on a
        hook function, or its hook signatures do not match the specifications.
        """
        label = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        problems = hook_problems(plugin)
        if problems:
            raise PluginError(f"plugin {label!r}: {'; '.join(problems)}")
        try:
            return self.pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise PluginError(f"plugin {label!r}: {exc}") from exc

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)

    def plugin_names(self) -> list[str]:
        """Names of the registered plugins (the service's start-up line counts them)."""
        return sorted(n for n, p in self.pm.list_name_plugin() if p is not None and n != "b12screen.hookspecs")


def hook_problems(plugin: object) -> list[str]:
    """What is wrong with a plugin's hook functions: unknown hook names marked ``@hookimpl`` (typos) and
    hook functions without the ``@hookimpl`` marker (pluggy would silently ignore both)."""
    problems: list[str] = []
    marker = f"{hookspecs.PROJECT_NAME}_impl"
    for attr in sorted(dir(plugin)):
        if not attr.startswith("b12screen_"):
            continue
        value = getattr(plugin, attr, None)
        if not callable(value) or isinstance(value, type):
            continue
        marked = getattr(value, marker, None) is not None
        if attr not in HOOK_NAMES:
            if marked:
                close = difflib.get_close_matches(attr, sorted(HOOK_NAMES), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                problems.append(f"{attr}() is marked @hookimpl but is not a b12screen hook{hint}; "
                                f"hooks: {', '.join(sorted(HOOK_NAMES))}")
        elif not marked:
            problems.append(f"{attr}() is not marked with @hookimpl (from b12screen import hookimpl)")
    return problems


def _split_env(name: str) -> set[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def _strict_from_env() -> bool:
    return os.environ.get(ENV_STRICT, "").strip().lower() in {"1", "true", "yes", "on"}


def builtin_plugin_manager(skip: Iterable[str] = ()) -> PluginManager:
    """A fresh manager with the hook specifications and the built-in plugins (less ``skip``), and nothing
    else: no entry points, no environment variables read."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    skipped = set(skip)
    for name in DEFAULT_PLUGINS:
        if name not in skipped:
            pm.register(importlib.import_module(name), name=name)
    return PluginManager(pm)


def get_plugin_manager(load_entry_points: bool = True, strict: bool | None = None) -> PluginManager:
    """A fresh plugin manager with the built-in plugins and (optionally) installed ones.

    ``B12SCREEN_LOAD_PLUGINS`` (comma-separated entry-point or distribution names) loads only those
    installed plugins (empty: none); ``B12SCREEN_DISABLE_PLUGINS`` blocks named plugins, built-in ones
    (``b12screen.rules.diet``) too. A plugin that fails to load is reported in ``failures`` and skipped,
    unless ``strict`` (or ``B12SCREEN_STRICT_PLUGINS=1``), which raises :class:`PluginError`.
    """
    strict = _strict_from_env() if strict is None else strict
    disabled = _split_env(ENV_DISABLE) or set()
    manager = builtin_plugin_manager(skip=disabled)
    if load_entry_points:
        _load_entry_points(manager, _split_env(ENV_LOAD), disabled, strict)
    return manager


def _dist_of(ep: metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    try:
        return dist.name, dist.version
    except Exception:  # broken metadata must not stop loading
        return None, None


def _load_entry_points(manager: PluginManager, only: set[str] | None, disabled: set[str], strict: bool) -> None:
    # Sorted by (name, distribution): the outcome never depends on install order or sys.path order.
    entries = sorted(((ep, *_dist_of(ep)) for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)),
                     key=lambda e: (e[0].name, e[1] or ""))
    owners: dict[str, str] = {}
    mentioned: set[str] = set()
    for ep, dist_name, version in entries:
        names = {ep.name} | ({dist_name} if dist_name else set())
        if names & disabled:
            continue
        if only is not None:
            if not names & only:
                continue
            mentioned |= names & only
        if ep.name in owners or manager.pm.has_plugin(ep.name):
            other = owners.get(ep.name, "a built-in plugin")
            _fail(manager, PluginFailure(ep.name, f"entry point name {ep.name!r} is already used by {other}",
                                         dist_name, version), strict)
            continue
        owners[ep.name] = dist_name or ep.value
        try:
            manager.register(ep.load(), name=ep.name)
        except Exception as exc:
            _fail(manager, PluginFailure(ep.name, f"{type(exc).__name__}: {exc}", dist_name, version), strict)
            continue
        if dist_name is not None and version is not None:
            manager.distributions[ep.name] = (dist_name, version)
    for name in sorted((only or set()) - mentioned):
        log.warning("%s names %r, but no installed plugin has that name", ENV_LOAD, name)


def _fail(manager: PluginManager, failure: PluginFailure, strict: bool) -> None:
    if strict:
        raise PluginError(f"plugin {failure.name!r} failed to load: {failure.error}")
    manager.failures.append(failure)
    log.warning("plugin %s failed to load and was skipped: %s", failure.name, failure.error,
                extra={REPORTED_BY_CLI: True})


def _impls(manager: PluginManager, hook: str) -> list[Any]:
    """The implementations of one hook, in plugin-name order (never registration order)."""
    return sorted(getattr(manager.pm.hook, hook).get_hookimpls(), key=lambda impl: impl.plugin_name)


def _call(impl: Any, hook: str) -> list[Any]:
    try:
        result = impl.function()
    except Exception as exc:
        raise PluginError(f"plugin {impl.plugin_name!r}: {hook}() raised {type(exc).__name__}: {exc}") from exc
    if result is None:
        return []
    if isinstance(result, (list, tuple)):
        return list(result)
    raise PluginError(f"plugin {impl.plugin_name!r}: {hook}() must return a list, got {type(result).__name__}")


def collect_rules(manager: PluginManager) -> list[tuple[str, Rule]]:
    """(plugin name, rule) for every registered rule, sorted by (stage, id); duplicate ids refused."""
    owners: dict[str, str] = {}
    rules: list[tuple[str, Rule]] = []
    for impl in _impls(manager, "b12screen_rules"):
        for rule in _call(impl, "b12screen_rules"):
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
    return [(impl.plugin_name, vs) for impl in _impls(manager, "b12screen_value_sets")
            for vs in _call(impl, "b12screen_value_sets")]


def describe_plugins(manager: PluginManager) -> list[dict[str, Any]]:
    """Name, distribution, version, hooks and rule ids of every loaded plugin, plus failures (for
    ``b12screen plugins``). A plugin whose ``b12screen_rules()`` raises is listed with status ``error``."""
    rules_by_plugin: dict[str, list[str]] = {}
    errors: dict[str, str] = {}
    for impl in _impls(manager, "b12screen_rules"):
        try:
            rules = _call(impl, "b12screen_rules")
        except PluginError as exc:
            errors[impl.plugin_name] = str(exc)
            continue
        rules_by_plugin[impl.plugin_name] = sorted(r.id for r in rules if isinstance(r, Rule))
    from ._version import __version__

    out: list[dict[str, Any]] = []
    for name, plugin in sorted(manager.pm.list_name_plugin(), key=lambda np: np[0]):
        if plugin is None:
            continue
        hooks = sorted(c.name for c in manager.pm.get_hookcallers(plugin) or [])
        dist = manager.distributions.get(name)
        builtin = name in DEFAULT_PLUGINS
        row: dict[str, Any] = {
            "name": name,
            "distribution": dist[0] if dist else ("b12screen" if builtin else None),
            "version": dist[1] if dist else (__version__ if builtin else None),
            "builtin": builtin,
            "hooks": hooks,
            "rules": rules_by_plugin.get(name, []),
            "status": "error" if name in errors else "loaded",
        }
        if name in errors:
            row["error"] = errors[name]
        out.append(row)
    for failure in manager.failures:
        out.append({"name": failure.name, "distribution": failure.distribution, "version": failure.version,
                    "builtin": False, "hooks": [], "rules": [], "status": "failed", "error": failure.error})
    return out
