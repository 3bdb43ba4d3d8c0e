"""The generated reference pages (docs/reference/cli.md, configuration.md) are what their declarations make.

``cog --check`` fails when a page and the code differ; regenerate with
``cog -r docs/reference/cli.md docs/reference/configuration.md`` (docs/gen/reference.py writes the Markdown).
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from conftest import ROOT

pytest.importorskip("cogapp")
from cogapp import Cog

sys.path.insert(0, str(ROOT / "docs" / "gen"))
import reference

from b12screen.cdshooks.config import IssuerConfig, ServiceConfig, env_name
from b12screen.cli import cli
from b12screen.cli.screen import screen
from b12screen.core.config import PROFILE_SETTINGS, SETTINGS, WINDOW_PARAM, Config
from b12screen.core.params import Param

CLI_PAGE = ROOT / "docs" / "reference" / "cli.md"
CONFIG_PAGE = ROOT / "docs" / "reference" / "configuration.md"
PAGES = [str(p.relative_to(ROOT)) for p in (CLI_PAGE, CONFIG_PAGE)]


def cog_check(capsys: pytest.CaptureFixture[str], *pages: str) -> tuple[int, str]:
    """``cog --check`` run in this process (so that a test's changes to the declarations count)."""
    status = Cog().main(["cog", "--check", *(str(ROOT / p) for p in pages)])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def test_the_pages_are_what_cog_generates() -> None:
    done = subprocess.run([sys.executable, "-m", "cogapp", "--check", *PAGES], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, (f"{done.stdout}{done.stderr}\nregenerate: "
                                  "cog -r docs/reference/cli.md docs/reference/configuration.md")


# -- a change of a declaration makes the check fail ---------------------------------------------------------------


def test_a_new_option_makes_the_cli_page_stale(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert cog_check(capsys, PAGES[0])[0] == 0
    monkeypatch.setattr(screen, "params", [*screen.params, click.Option(["--brand-new"], help="New.")])
    status, said = cog_check(capsys, PAGES[0])
    assert status == 5 and "Check failed" in said and "cli.md" in said


def test_a_changed_option_default_makes_the_cli_page_stale(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    [profile] = [p for p in screen.params if p.name == "profile"]
    monkeypatch.setattr(profile, "default", "nice")
    assert cog_check(capsys, PAGES[0])[0] == 5


def test_a_changed_setting_default_makes_the_configuration_page_stale(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert cog_check(capsys, PAGES[1])[0] == 0
    monkeypatch.setitem(SETTINGS, "renal_egfr", dataclasses.replace(SETTINGS["renal_egfr"], default=45))
    status, said = cog_check(capsys, PAGES[1])
    assert status == 5 and "configuration.md" in said


def test_a_changed_profile_default_makes_the_configuration_page_stale(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(PROFILE_SETTINGS, "nice", {"min_age": 17})
    assert cog_check(capsys, PAGES[1])[0] == 5


def test_a_changed_rule_parameter_makes_the_configuration_page_stale(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    rules = reference._builtin_rules()
    met2 = next(r for r in rules if r.id == "MET-2")
    changed = dataclasses.replace(met2, params={**met2.params, "dose_mg_per_day": Param(2000, "mg/day", "", 0)})
    monkeypatch.setattr(reference, "_builtin_rules", lambda: [changed if r is met2 else r for r in rules])
    assert cog_check(capsys, PAGES[1])[0] == 5


def test_a_changed_service_default_makes_the_configuration_page_stale(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(ServiceConfig.__dataclass_fields__["max_connections"], "default", 100)
    assert cog_check(capsys, PAGES[1])[0] == 5


# -- everything declared is on its page ---------------------------------------------------------------------------


def _sections(text: str) -> dict[str, str]:
    """Each command's section of the CLI page, by its command path."""
    parts = re.split(r"^#{2,4} `(b12screen[^`]*)`\n", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _commands(command: click.Command, path: str) -> list[tuple[str, click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            found += _commands(sub, f"{path} {name}")
    return found


def test_every_command_and_option_is_in_its_section_of_the_cli_page() -> None:
    sections = _sections(CLI_PAGE.read_text(encoding="utf-8"))
    commands = _commands(cli, "b12screen")
    assert sorted(sections) == sorted(path for path, _ in commands)
    for path, command in commands:
        section = sections[path]
        for param in command.params:
            if isinstance(param, click.Argument):
                shown = reference.code(param.make_metavar(click.Context(command)))
                assert f"| {shown} |" in section, f"{path}: argument {param.name} is not on the page"
            elif not param.hidden:
                for name in [*param.opts, *param.secondary_opts]:
                    assert f"`{name}`" in section, f"{path}: {name} is not on the page"
        first_line = (command.help or "").strip().splitlines()[0]
        assert reference.text(first_line)[:40] in section, f"{path}: its help is not on the page"


def test_every_setting_parameter_and_key_is_on_the_configuration_page() -> None:
    page = CONFIG_PAGE.read_text(encoding="utf-8")
    for name, spec in SETTINGS.items():
        assert f"| `{name}` |" in page and reference.text(spec.description) in page, name
    for rule in reference._builtin_rules():
        assert f"| `{rule.id}` | {reference.text(rule.title)} |" in page, f"{rule.id}: no window row"
        for name in rule.params:
            assert f"| `{rule.id}` | `{name}` |" in page, f"{rule.id}.{name}"
    assert reference.text(WINDOW_PARAM.description) in page
    for f in dataclasses.fields(ServiceConfig):
        assert f"| `{f.name}` | `{env_name(f.name)}` |" in page, f.name
    for f in dataclasses.fields(IssuerConfig):
        assert f"| `{f.name}` |" in page, f"issuer key {f.name}"


def test_every_config_file_key_is_described() -> None:
    fields = {f.name for f in dataclasses.fields(Config)}
    assert fields == set(reference.CONFIG_FILE_KEYS) | set(reference.COMMAND_LINE_ONLY)
    for key in reference.CONFIG_FILE_KEYS:  # each is a key a file may hold
        Config.from_dict({key: [] if key == "disabled_rules" else {}}, "test.toml")


def test_every_service_setting_says_what_it_means() -> None:
    for cls in (ServiceConfig, IssuerConfig):
        missing = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("doc", "").strip()]
        assert missing == [], f"{cls.__name__}: no metadata['doc'] for {missing}"


def test_a_service_setting_of_an_undeclared_type_is_refused() -> None:
    with pytest.raises(KeyError):
        reference._service_type("dict[str, int]")


@pytest.mark.parametrize(("raw", "shown"), [
    ("a | b", r"a \| b"),
    ("local[*] and min_age", r"local\[\*\] and min\_age"),
    ("`a|b` and `x_y`", "`a|b` and `x_y`"),
    ("two\n   lines", "two lines"),
])
def test_prose_is_escaped_for_markdown_outside_code(raw: str, shown: str) -> None:
    assert reference.text(raw) == shown


def test_the_generator_is_not_a_page_of_the_site() -> None:
    assert re.search(r"exclude_docs:\s*\|\s*\n\s+gen/", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert Path(reference.__file__).resolve() == ROOT / "docs" / "gen" / "reference.py"
