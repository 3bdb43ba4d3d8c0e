"""Typed declarations of rule parameters and settings, checked when a configuration is loaded.

A :class:`Param` carries a default, a unit, a range and a description; :func:`check_value` turns a
configured value into the declared type or raises :class:`ConfigError` naming the value and what
was expected. Checking uses msgspec, so a wrong type never reaches a rule as a per-patient error.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from ..errors import ConfigError


@dataclass(frozen=True)
class Param:
    """One tunable value: ``default`` (its type is the declared type unless ``kind`` is given), ``unit``,
    inclusive ``minimum``/``maximum`` and a one-line ``description``."""

    default: Any
    unit: str = ""
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    kind: type | None = None

    @property
    def type(self) -> type | None:
        """The declared type: ``kind``, else ``bool``/``str`` for such defaults, ``float`` for numbers."""
        if self.kind is not None:
            return self.kind
        if isinstance(self.default, bool):
            return bool
        if isinstance(self.default, int | float):
            return float
        if isinstance(self.default, str):
            return str
        return None

    def expected(self) -> str:
        """What a valid value looks like, for messages ("a number >= 0 (months)")."""
        kind = self.type
        text = {bool: "true or false", str: "a text", int: "a whole number", float: "a number"}.get(
            kind, "any value") if kind is not None else "any value"
        if self.minimum is not None and self.maximum is not None:
            text += f" from {self.minimum:g} to {self.maximum:g}"
        elif self.minimum is not None:
            text += f" >= {self.minimum:g}"
        elif self.maximum is not None:
            text += f" <= {self.maximum:g}"
        return text + (f" ({self.unit})" if self.unit else "")

    def describe(self, value: Any = None) -> dict[str, Any]:
        """A JSON-ready description with the effective ``value``."""
        return {"default": self.default, "value": self.default if value is None else value, "unit": self.unit,
                "description": self.description, "minimum": self.minimum, "maximum": self.maximum,
                "type": self.type.__name__ if self.type else "any"}


def as_param(value: Any) -> Param:
    """A declaration as a plugin gave it: a :class:`Param`, or a plain default value."""
    return value if isinstance(value, Param) else Param(value)


def check_value(spec: Param, value: Any, where: str) -> Any:
    """``value`` converted to the declared type, or :class:`ConfigError` naming ``where``, the value and what
    was expected."""
    kind = spec.type
    if kind is None:
        return value
    target: Any = kind
    if kind in (int, float) and (spec.minimum is not None or spec.maximum is not None):
        target = Annotated[kind, msgspec.Meta(ge=spec.minimum, le=spec.maximum)]
    try:
        return msgspec.convert(value, target)
    except msgspec.ValidationError:
        raise ConfigError(f"{where}={value!r} is not valid: expected {spec.expected()}") from None


def unknown_name(kind: str, name: str, known: Iterable[str], where: str = "") -> ConfigError:
    """An error for an unknown name, with a did-you-mean for near misses."""
    names = sorted(known)
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(names)})"
    return ConfigError(f"{where}unknown {kind} {name!r}{hint}")


def check_values(specs: Mapping[str, Param], values: Mapping[str, Any], kind: str, where: str) -> dict[str, Any]:
    """Every value of ``values`` checked against ``specs`` (unknown names refused)."""
    checked: dict[str, Any] = {}
    for name, value in values.items():
        if name not in specs:
            raise unknown_name(kind, name, specs, f"{where}: " if where else "")
        checked[name] = check_value(specs[name], value, f"{where}.{name}" if where else name)
    return checked
