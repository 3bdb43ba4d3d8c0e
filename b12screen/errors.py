"""The library's own errors, and the exit codes the CLI turns a run's problems into."""

from __future__ import annotations

#: Exit codes (docs/reference/interfaces.md, "Exit codes"): 0 all screened; 1 some input unreadable or a rule failed;
#: 2 usage error, bad configuration or nothing readable; 3 the outputs could not be written (full disk,
#: read-only or vanished output folder); 128 + the signal's number when interrupted (130 SIGINT, 143 SIGTERM).
EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_OUTPUT = 0, 1, 2, 3


def run_exit_code(input_errors: int, resources_read: int, rule_errors: int = 0) -> int:
    """The exit code of a run that screened what it could: 2 when input errors left nothing readable, 1 when
    some input was unreadable or a rule failed, else 0. The one rule of every command that screens."""
    if input_errors and resources_read == 0:
        return EXIT_USAGE
    return EXIT_PARTIAL if input_errors or rule_errors else EXIT_OK


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
