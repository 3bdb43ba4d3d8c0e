"""The library's own errors. The CLI turns them into messages and exit codes."""

from __future__ import annotations


class B12ScreenError(Exception):
    """Base class of every error b12screen raises on purpose."""


class InputError(B12ScreenError):
    """A piece of input (file, line, bundle entry) that could not be read.

    ``source`` names the file (or ``<stdin>``), ``location`` the line or entry, ``reason`` what is wrong.
    The message never contains patient data.
    """

    def __init__(self, source: str, location: str | None, reason: str) -> None:
        self.source = source
        self.location = location
        self.reason = reason
        where = f"{source}: {location}" if location else source
        super().__init__(f"{where}: {reason}")


class PluginError(B12ScreenError):
    """A plugin could not be loaded or registered something invalid."""


class DuplicateRuleError(PluginError):
    """Two plugins define the same rule id."""


class ConfigError(B12ScreenError):
    """A configuration value, profile name or option is invalid."""
