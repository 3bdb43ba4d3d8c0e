"""The documentation site as a reader meets it: built with ``mkdocs build --strict``, served on 127.0.0.1 and
opened in headless Chromium. Every page renders, with its scripts run, the navigation by reader and the search
box; the search index lists every page; a search finds the pages that hold its word.

Chromium's ``--dump-dom`` does not wait for the search index, which a web worker builds, so the search is
driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``), waiting for the results (bounded).
Slow (under a minute on 2 cores for about 20 pages: a build, and a browser per page, three at once); skipped
without chromium or mkdocs.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import http.server
import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync"]
HAVE_MKDOCS = all(importlib.util.find_spec(m) for m in ("mkdocs", "material"))

needs_site = pytest.mark.skipif(not HAVE_MKDOCS, reason="mkdocs or mkdocs-material not installed")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.fixture(scope="module")
def base_url(site: Path) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def site_pages(site: Path) -> list[str]:
    """Every page of the built site, as its path under the site's root ("" for the home page)."""
    found = [p.parent.relative_to(site).as_posix() + "/" for p in site.rglob("index.html")]
    return sorted("" if p == "./" else p for p in found)


def nav_sections() -> list[str]:
    """The top-level sections of mkdocs.yml's nav (the guides, reference, benchmarks)."""
    nav = re.search(r"^nav:\n((?:  .*\n)+)", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), re.M)
    assert nav, "mkdocs.yml has no nav"
    return re.findall(r"^  - ([^:\n]+):\s*$", nav.group(1), re.M)


def chromium(args: list[str], profile: Path) -> str:
    done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def dom(url: str, profile: Path) -> str:
    """The page's DOM after its scripts ran."""
    return chromium(["--virtual-time-budget=5000", "--dump-dom", url], profile)


def rendering_problems(page: str, html: str, sections: list[str]) -> list[str]:
    problems = []
    classes = re.search(r'<html[^>]*class="([^"]*)"', html)
    if not classes or "js" not in classes.group(1).split():
        problems.append("its scripts did not run (no 'js' class on <html>)")
    start = html.find('class="md-nav md-nav--primary"')
    if start < 0:
        problems.append("no navigation")
    primary = html[start:] if start >= 0 else ""
    labels = re.sub(r"\s+<", "<", re.sub(r">\s+", ">", primary))
    problems += [f"no {s!r} in the navigation" for s in sections if f">{s}<" not in labels]
    if 'data-md-component="search-query"' not in html:
        problems.append("no search box")
    if not re.search(r"<h1[ >]", html):
        problems.append("no title")
    return [f"/{page}: {p}" for p in problems]


@pytest.mark.slow
@needs_site
@needs_chromium
def test_every_page_renders_with_the_navigation_and_search(site: Path, base_url: str, tmp_path: Path) -> None:
    pages = site_pages(site)
    assert len(pages) >= 20 and "" in pages and "reference/cli/" in pages and "benchmarks/" in pages
    sections = nav_sections()
    assert {"Analyst guide", "Integrator guide", "Informaticist guide", "Reference", "Benchmarks"} <= set(sections)
    with ThreadPoolExecutor(max_workers=3) as pool:  # a browser per page, three at once
        doms = list(pool.map(lambda i_page: dom(base_url + i_page[1], tmp_path / f"profile-{i_page[0]}"),
                             enumerate(pages)))
    problems = [p for page, html in zip(pages, doms, strict=True) for p in rendering_problems(page, html, sections)]
    assert problems == []


def test_a_page_without_its_navigation_is_named() -> None:
    bare = '<html class="js"><nav class="md-nav md-nav--primary"><a>Reference</a></nav><h1>x</h1></html>'
    assert rendering_problems("p/", bare, ["Reference", "Benchmarks"]) == [
        "/p/: no 'Benchmarks' in the navigation", "/p/: no search box"]
    assert rendering_problems("", "<html class=\"no-js\">", []) == [
        "/: its scripts did not run (no 'js' class on <html>)", "/: no navigation", "/: no search box", "/: no title"]


@pytest.mark.slow
@needs_site
def test_the_search_index_lists_every_page(site: Path) -> None:
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    locations = {doc["location"] for doc in index["docs"]}
    assert [p for p in site_pages(site) if p not in locations] == []


# -- search, driven over the DevTools protocol ---------------------------------------------------------------------


def _above_nine(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Browser:
    """Headless Chromium spoken to over ``--remote-debugging-pipe`` (JSON messages ended by NUL, fds 3 and 4)."""

    def __init__(self, profile: Path) -> None:
        to_chrome, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome = os.pipe()
        # above 9, so that the redirections to 3 and 4 (by bash: dash takes one digit) cannot overwrite one of them
        to_chrome, from_chrome = (_above_nine(fd) for fd in (to_chrome, from_chrome))
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_chrome} 4>&{from_chrome}', CHROMIUM, *FLAGS,
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(to_chrome, from_chrome), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome)
        os.close(from_chrome)
        self._buffer = b""
        self._id = 0

    def call(self, method: str, tab: str | None = None, **params: Any) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if tab:
            message["sessionId"] = tab
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._from_chrome, 1 << 16)
                if not chunk:
                    raise EOFError(f"chromium closed the pipe during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:  # events and other replies are not waited for
                assert "error" not in reply, f"{method}: {reply['error']}"
                return dict(reply["result"])

    def open(self, url: str) -> str:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        tab = str(self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"])
        self.call("Page.navigate", tab, url=url)
        return tab

    def evaluate(self, tab: str, expression: str) -> Any:
        return self.call("Runtime.evaluate", tab, expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, tab: str, expression: str, seconds: float = 20.0) -> Any:
        """The expression's value once truthy; fails the test when it is not within ``seconds`` (a hang)."""
        deadline = time.monotonic() + seconds
        while not (value := self.evaluate(tab, expression)):
            assert time.monotonic() < deadline, f"not within {seconds} s: {expression}"
            time.sleep(0.1)
        return value

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError, AssertionError):
            self.call("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    started = Browser(tmp_path / "profile")
    try:
        yield started
    finally:
        started.close()


RESULTS = "[...document.querySelectorAll('.md-search-result__item a')].map(a => new URL(a.href).pathname)"
META = "document.querySelector('.md-search-result__meta').textContent.trim()"


def pages_with(site: Path, word: str) -> set[str]:
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    return {"/" + d["location"].split("#")[0] for d in index["docs"] if word in (d["title"] + d["text"]).lower()}


@pytest.mark.slow
@needs_site
@needs_chromium
def test_a_search_in_the_address_shows_the_pages_that_hold_the_word(site: Path, base_url: str,
                                                                      browser: Browser) -> None:
    tab = browser.open(base_url + "?q=replay")
    found = set(browser.wait_for(tab, RESULTS))
    expected = pages_with(site, "replay")
    assert found and found <= expected, f"found {found}, expected some of {expected}"
    assert re.fullmatch(r"\d+ matching documents?", browser.evaluate(tab, META))


@pytest.mark.slow
@needs_site
@needs_chromium
def test_a_search_for_a_word_no_page_holds_finds_nothing(base_url: str, browser: Browser) -> None:
    tab = browser.open(base_url + "reference/cli/?q=zyxwvutsrq")
    assert browser.wait_for(tab, f"{META}.startsWith('No matching') && {META}") == "No matching documents"
    assert browser.evaluate(tab, RESULTS) == []


# -- the home page, as a picture -------------------------------------------------------------------------------------


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.slow
@needs_site
@needs_chromium
def test_the_home_page_renders_as_a_picture_with_the_site_name_and_navigation(base_url: str, tmp_path: Path) -> None:
    shot = tmp_path / "home.png"
    chromium([f"--screenshot={shot}", "--window-size=1280,900", "--virtual-time-budget=5000", base_url],
             tmp_path / "profile")
    assert png_size(shot) == (1280, 900)
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one (about 5 kB)
    home = dom(base_url, tmp_path / "profile")
    assert re.search(r'class="md-header__topic">\s*<span class="md-ellipsis">\s*b12screen\s*</span>', home)
    assert rendering_problems("", home, nav_sections()) == []
