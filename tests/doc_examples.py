"""Run the shell and Python examples of the documentation site and the README, the way a reader would.

Every fenced block is labelled. ``bash`` and ``python`` blocks are run; the others are shown only (``text`` for
output, ``toml``/``yaml``/``json``... for files). A page is one session: its blocks run in order in one fresh
folder holding links to the repository's ``fixtures/``, ``hooks/``, ``benchmarks/``, ``docs/`` and ``mkdocs.yml``,
with the project's ``b12screen`` first on PATH, so a later block can read what an earlier one wrote.

An HTML comment on the line before a fence tells the runner more (docs/development/documentation.md lists them)::

    <!-- example: exit=1 -->             the block must exit with status 1 (default 0)
    <!-- example: port=8080 background -->  8080 becomes a free loopback port in this and later blocks; the block
                                          runs in the background until the page ends, and the next block waits
                                          until the port answers
    <!-- example: output -->             (on a ``text`` block after a run block) each of its lines, blanks and
                                          spacing aside, is a line that block printed, in order
    <!-- example: run-by=.ci/run -->     CI runs the block as part of that file (a script, or the example plugin's
                                          code): each of its lines, comments aside, is in the file
    <!-- example: timeout=600 -->        seconds before the block is stopped and fails (default 300)
    <!-- example: fhir-server=https://fhir.example.org/r4 -->
                                          the runner starts a FHIR REST server on loopback (tests/fhirserver.py:
                                          reads, searches by patient, conditional create, versioned update)
                                          holding the batch fixture export (fixtures/batch/export: patients
                                          bx-met, bx-only, ...); the URL becomes its base in this and later blocks
    <!-- example: bulk-server=https://ehr.example.org/fhir -->
                                          likewise a Bulk Data server (tests/bulkserver.py) exporting that
                                          fixture; status polls and downloads need the bearer token
                                          ``test-access-token`` (B12SCREEN_FHIR_TOKEN)
    <!-- example: bulk-server=https://ehr.example.org/fhir smart-key=key.pub.pem -->
                                          that server also issues SMART Backend Services tokens to the client
                                          ``b12-client`` whose RS384 assertion this public key (a PEM file an
                                          earlier block wrote in the page's folder) verifies

Substitutions (ports, server URLs) apply to a block's shown output too, so a page can show the URL it names.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: Run by the tests.
EXECUTED = frozenset({"bash", "python"})
#: Shown only: output, and files a reader writes.
SHOWN = frozenset({"text", "toml", "yaml", "json", "ini", "http", "dockerfile", "csv", "ndjson", "xml"})
#: What a directive may say; a value-less key is ``True``.
OPTIONS = frozenset({"exit", "port", "background", "output", "run-by", "timeout", "fhir-server", "bulk-server",
                     "smart-key"})
#: What of the repository a page's session can read (linked, not copied: examples must not write into them).
LINKED = ("fixtures", "hooks", "benchmarks", "docs", "mkdocs.yml")
#: The export the runner's FHIR servers hold.
SERVED_EXPORT = ROOT / "fixtures" / "batch" / "export"

FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
DIRECTIVE = re.compile(r"<!--\s*example:(?P<options>[^>]*?)-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block of a page: where it is, its language, its text and what its directive says."""

    page: str
    line: int
    language: str
    body: str
    options: dict[str, str | bool] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    """The README and every page of the site."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def parse_options(text: str, where: str) -> dict[str, str | bool]:
    options: dict[str, str | bool] = {}
    for word in shlex.split(text):
        key, _, value = word.partition("=")
        if key not in OPTIONS:
            raise ValueError(f"{where}: unknown example option {key!r} (known: {', '.join(sorted(OPTIONS))})")
        options[key] = value or True
    return options


def blocks(text: str, page: str) -> list[Block]:
    """The fenced blocks of a page's text, in order, with the directive on the line before each."""
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        directive = DIRECTIVE.search(before)
        options = parse_options(directive.group("options"), f"{page}:{line}") if directive else {}
        indent = match.group("indent")
        body = "".join(part[len(indent):] if part.startswith(indent) else part
                       for part in match.group("body").splitlines(keepends=True))
        found.append(Block(page, line, match.group("info").strip(), body, options))
    return found


def page_blocks(path: Path) -> list[Block]:
    return blocks(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))


def label_problems(all_blocks: list[Block]) -> list[str]:
    """Fences without a known language, and directives that cannot apply to their block."""
    problems = []
    for i, block in enumerate(all_blocks):
        if block.language not in EXECUTED | SHOWN:
            problems.append(f"{block.where}: fence language {block.language!r} is neither run "
                            f"({', '.join(sorted(EXECUTED))}) nor shown ({', '.join(sorted(SHOWN))})")
        if "output" in block.options and (block.language != "text" or i == 0
                                          or all_blocks[i - 1].language not in EXECUTED
                                          or all_blocks[i - 1].page != block.page):
            problems.append(f"{block.where}: 'output' belongs on a text block right after a run block")
        if set(block.options) - {"output"} and block.language not in EXECUTED:
            problems.append(f"{block.where}: run options on a block that is not run")
    return problems


def _normal(line: str) -> str:
    return " ".join(line.split())


def shown_output_problem(shown: str, printed: str) -> str | None:
    """None when every non-blank line shown is a line printed, in the same order; else what is missing."""
    lines = iter(_normal(line) for line in printed.splitlines())
    for want in (_normal(line) for line in shown.splitlines()):
        if want and not any(got == want for got in lines):
            return f"shown line {want!r} is not in what the example printed (in order)"
    return None


def run_by_problem(block: Block) -> str | None:
    script = ROOT / str(block.options["run-by"])
    if not script.is_file():
        return f"{block.where}: run-by names {script.relative_to(ROOT)}, which does not exist"
    text = _normal(script.read_text(encoding="utf-8"))
    for line in block.body.splitlines():
        command = _normal(line.split(" #", 1)[0])
        if command and not command.startswith("#") and command not in text:
            return f"{block.where}: {command!r} is not in {block.options['run-by']}"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Session:
    """One page's examples, run in order in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.substitutions: dict[str, str] = {}
        self.background: list[tuple[Block, subprocess.Popen[bytes], Path]] = []
        self.servers = contextlib.ExitStack()
        self.printed = ""
        (folder / "home").mkdir(parents=True)
        for name in LINKED:
            (folder / name).symlink_to(ROOT / name, target_is_directory=(ROOT / name).is_dir())
        env = {k: v for k, v in os.environ.items() if not k.startswith("B12SCREEN_")}
        env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", HOME=str(folder / "home"),
                   TZ="UTC", NO_COLOR="1", PYTHONHASHSEED="0", NO_MKDOCS_2_WARNING="1")
        self.env = env

    def text_of(self, block: Block) -> str:
        body = block.body
        for old, new in self.substitutions.items():
            body = body.replace(old, new)
        return body

    def command(self, block: Block) -> list[str]:
        body = self.text_of(block)
        if block.language == "python":
            return [sys.executable, "-c", body]
        return ["bash", "-euo", "pipefail", "-c", body]

    def run(self, block: Block) -> str | None:
        """Run one block; None when it did what the page says, else why not."""
        if "run-by" in block.options:
            return run_by_problem(block)
        for option in ("fhir-server", "bulk-server"):
            if option in block.options:
                key = self.folder / str(block.options["smart-key"]) if "smart-key" in block.options else None
                server = self.servers.enter_context(start_server(option, key))
                self.substitutions[str(block.options[option])] = server.base
        if "port" in block.options:
            self.substitutions[str(block.options["port"])] = str(free_port())
        if "background" in block.options:
            return self._start(block)
        timeout = float(block.options.get("timeout", 300))
        try:
            done = subprocess.run(self.command(block), cwd=self.folder, env=self.env, capture_output=True,
                                  timeout=timeout, start_new_session=True)
        except subprocess.TimeoutExpired:
            return f"{block.where}: still running after {timeout:g} s"
        self.printed = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
        want = int(block.options.get("exit", 0))
        if done.returncode != want:
            shown = f"{self.text_of(block)}\n---\n{self.printed[-3000:]}"
            return f"{block.where}: exited {done.returncode}, not {want}\n{shown}"
        return None

    def _start(self, block: Block) -> str | None:
        log = self.folder / f"background-{block.line}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(self.command(block), cwd=self.folder, env=self.env, stdout=sink,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.background.append((block, process, log))
        if "port" not in block.options:
            return None
        port = int(self.substitutions[str(block.options["port"])])
        deadline = time.monotonic() + float(block.options.get("timeout", 60))
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                state = f"exited {process.returncode}" if process.returncode is not None else "never answered"
                return f"{block.where}: {state} on port {port}\n{log.read_text(errors='replace')[-3000:]}"
            time.sleep(0.1)
        return None

    def close(self) -> None:
        self.servers.close()
        for _block, process, _log in self.background:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for _block, process, _log in self.background:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def start_server(kind: str, smart_key: Path | None = None) -> Any:
    """A loopback FHIR REST (``fhir-server``) or Bulk Data (``bulk-server``) server holding the fixture export,
    not yet started: a context manager with a ``base`` URL. ``smart_key``: the PEM public key that verifies
    SMART Backend Services client assertions (Bulk Data server only)."""
    from bulkserver import BulkServer, Scenario, fixture_files
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from fhirserver import FhirServer, Store

    if kind == "bulk-server":
        public_key = load_pem_public_key(smart_key.read_bytes()) if smart_key else None
        return BulkServer(Scenario(inject_429=False, inject_500=False, error_file=False, redirect=None,
                                   smart_public_key=public_key), SERVED_EXPORT)
    store = Store()
    for data in fixture_files(SERVED_EXPORT).values():
        for line in data.splitlines():
            if line.strip():
                store.add(json.loads(line))
    return FhirServer(store)


def run_page(page_blocks: list[Block], folder: Path) -> Iterator[str]:
    """Run a page's examples in order; yield what went wrong, stopping at the first failed block."""
    session = Session(folder)
    try:
        previous: Block | None = None
        for block in page_blocks:
            if block.language in EXECUTED:
                problem = session.run(block)
                if problem:
                    yield problem
                    return
            elif "output" in block.options and previous is not None:
                mismatch = shown_output_problem(session.text_of(block), session.printed)
                if mismatch:
                    yield f"{block.where}: {mismatch}\n--- printed by {previous.where}:\n{session.printed[-3000:]}"
            previous = block
    finally:
        session.close()
