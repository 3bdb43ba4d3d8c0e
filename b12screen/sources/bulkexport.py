"""A FHIR Bulk Data Access (STU2) export client: kick-off, status polling, manifest, downloads, resume.

Files land in ``out/`` by type (``Patient.000.ndjson``), ``deleted`` files under ``out/deleted/``, the
manifest as ``manifest.json``; partial downloads are hidden ``.part`` files; the resume state and the
server's error files live beside ``out`` (``.export-state/``), so the batch reader never sees them. The
bearer token goes only to the FHIR server's own origin, and to file URLs only when the manifest says
``requiresAccessToken``.
Log records carry no URLs (they may name patients or groups) and no tokens.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin

import orjson
import requests
import urllib3

from .bulkdata import chunks, count_lines, error_rows, keep_request, outcome_text
from .deadline import Guard, deadline, guarded_session
from .fhirclient import REDIRECT_STATUSES, RETRY_STATUSES, FhirClient
from .fhirhttp import FhirError, check_url, retry_after_seconds
from .limits import bomb_reason

log = logging.getLogger(__name__)

NDJSON = "application/fhir+ndjson"
MAX_GET_URL = 2000
STATE = "state.json"
ERRORS = "errors/"
#: The names files are saved under (``Patient.000.ndjson``, ``deleted/…``, ``errors/…``).
LOCAL_NAME = re.compile(r"(deleted/|errors/)?[A-Za-z_]\w*\.\d{3,}\.ndjson")
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ExportRequest:
    """What to export: level (``system``, ``patient`` or ``group``), types, optional since and type filters."""

    types: tuple[str, ...]
    level: str = "system"
    group: str | None = None
    since: str | None = None
    type_filters: tuple[str, ...] = ()

    def path(self) -> str:
        if self.level == "group":
            return f"Group/{self.group}/$export"
        return "Patient/$export" if self.level == "patient" else "$export"

    def params(self) -> list[tuple[str, str]]:
        pairs = [("_outputFormat", NDJSON), ("_type", ",".join(self.types))]
        if self.since:
            pairs.append(("_since", self.since))
        pairs += [("_typeFilter", f) for f in self.type_filters]
        return pairs

    def key(self, base_url: str) -> str:
        return hashlib.sha256(orjson.dumps([base_url, self.path(), self.params()])).hexdigest()


def gone_reason(status: int) -> str:
    """The error of a file answered 404 or 410 in the first export and again in a new one."""
    why = " (the file expired on the server before it was downloaded)" if status == 410 else ""
    return f"download: HTTP {status} {HTTPStatus(status).phrase}{why}, also after a new export"


@dataclass
class ExportLimits:
    """Bounds: parallel downloads, bytes and seconds per file, the longest and shortest wait between
    polls (a ``Retry-After`` of 0 does not make the client hammer the server), the longest whole export,
    transient-error retries while polling."""

    parallel: int = 4
    max_file_bytes: int = 10 << 30
    file_seconds: float = 3600.0
    max_poll_wait: float = 120.0
    min_poll_wait: float = 1.0
    max_export_seconds: float = 24 * 3600.0
    transient_retries: int = 5


@dataclass
class ExportResult:
    """Downloaded files, error rows (``{file, line, location, reason}``) and figures of the run."""

    files: list[Path] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    failed: int = 0
    bytes: int = 0
    seconds_waiting: float = 0.0
    seconds_downloading: float = 0.0
    reexported: bool = False


class ExportError(FhirError):
    """The export cannot go on (a fatal OperationOutcome, a missing status URL, time used up)."""


class BulkExporter:
    """Runs one export into ``out`` through ``client`` (its auth, retries and origin rule)."""

    def __init__(self, client: FhirClient, out: Path, limits: ExportLimits | None = None, meta: Path | None = None,
                 on_progress: Callable[[str], None] = lambda text: None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.out = Path(out)
        #: The resume state and the server's error files, beside ``out`` so that readers of ``out`` never see them.
        self.meta = Path(meta) if meta is not None else self.out.parent / f".{self.out.name}-state"
        self.limits = limits or ExportLimits()
        self.on_progress = on_progress
        self._sleep = sleep
        self._clock = clock
        self.status_url: str | None = None
        self.state: dict[str, Any] = {}
        self._local = threading.local()  # one requests.Session per download thread
        self._stop = threading.Event()  # set on Ctrl-C: running downloads stop at their next chunk

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = guarded_session()
        return session

    def path(self, name: str) -> Path:
        """Where a downloaded file of that local name is kept."""
        return self.meta / name if name.startswith(ERRORS) else self.out / name

    # -- state -------------------------------------------------------------------------------

    def _load_state(self, key: str) -> dict[str, Any]:
        try:
            state = orjson.loads((self.meta / STATE).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return {"key": key, "files": {}}
        # Another request, or a finished job (deleted on the server): start a new export.
        if not isinstance(state, dict) or state.get("key") != key or state.get("deleted_job"):
            self._remove_files(state.get("files", {}) if isinstance(state, dict) else {})
            return {"key": key, "files": {}}
        return state

    def _save_state(self) -> None:
        self.meta.mkdir(parents=True, exist_ok=True)
        tmp = self.meta / (STATE + ".part")
        tmp.write_bytes(orjson.dumps(self.state))
        os.replace(tmp, self.meta / STATE)

    def _remove_files(self, files: Mapping[str, Any]) -> None:
        for entry in files.values():
            name = entry.get("path") if isinstance(entry, dict) else None
            if isinstance(name, str) and LOCAL_NAME.fullmatch(name):  # never a path a state file made up
                self.path(name).unlink(missing_ok=True)

    # -- kick-off and polling ----------------------------------------------------------------

    def kick_off(self, request: ExportRequest) -> str:
        """Start the export; returns the status URL."""
        url = f"{self.client.base_url}/{request.path()}"
        query = urlencode(request.params(), safe=",|:/")
        headers = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
        if len(url) + 1 + len(query) <= MAX_GET_URL:
            response = self.client.send("GET", f"{url}?{query}", headers=headers)
        else:
            body = {"resourceType": "Parameters",
                    "parameter": [{"name": n, "valueString": v} for n, v in request.params()]}
            response = self.client.send("POST", url, json_body=body, headers=headers, idempotent=False)
        if response.status_code != 202:
            text, _ = outcome_text(response.content)
            raise ExportError(f"export kick-off: HTTP {response.status_code}" + (f": {text}" if text else ""),
                              response.status_code)
        location = response.headers.get("Content-Location")
        if not location:
            raise ExportError("export kick-off: the server sent no Content-Location (status URL)")
        return self.client.resolve(location)

    def poll(self, status_url: str, started: float) -> dict[str, Any]:
        """Poll until the manifest is ready; returns it."""
        transient = 0
        while True:
            if self._clock() - started > self.limits.max_export_seconds:
                raise ExportError("the export did not finish within the time allowed")
            response = self.client.send("GET", status_url)
            status = response.status_code
            if status == 200:
                manifest = self.client.parse_json(response, "export manifest")
                if not isinstance(manifest, dict) or not isinstance(manifest.get("output"), list):
                    raise ExportError("export manifest: no output list")
                return manifest
            if status == 202:
                self.on_progress(response.headers.get("X-Progress", "in progress")[:100])
                wait = retry_after_seconds(response.headers.get("Retry-After"))
                wait = wait if wait is not None else 2.0
                self._sleep(min(max(wait, self.limits.min_poll_wait), self.limits.max_poll_wait))
                continue
            text, is_transient = outcome_text(response.content)
            if (status >= 500 or status == 429 or is_transient) and (is_transient or not text) \
                    and transient < self.limits.transient_retries:
                transient += 1
                delay = min(self.client.backoff * (2 ** transient), self.limits.max_poll_wait)
                log.info("export status: HTTP %d (transient); retrying in %.1f s", status, delay)
                self._sleep(delay)
                continue
            raise ExportError(f"export failed: HTTP {status}" + (f": {text}" if text else ""), status)

    def cancel(self) -> bool:
        """DELETE the status URL (Ctrl-C, or once the files are downloaded). True when the server agreed."""
        if not self.status_url or self.state.get("deleted_job"):
            return False
        try:
            response = self.client.send("DELETE", self.status_url, idempotent=True)
        except FhirError:
            return False
        if self.state.get("manifest") is None and self.state.get("status_url"):
            self.state.pop("status_url")  # a cancelled job cannot be resumed
            self._save_state()
        return response.status_code in (200, 202, 204, 404)

    # -- the whole job -------------------------------------------------------------------------

    def run(self, request: ExportRequest) -> ExportResult:
        """Kick off (or resume), poll, download; deletes the job once every file is in."""
        self.out.mkdir(parents=True, exist_ok=True)
        started = self._clock()
        result = ExportResult()
        self.state = self._load_state(request.key(self.client.base_url))
        for attempt in range(2):
            manifest = self.state.get("manifest")
            if manifest is None:
                self.status_url = self.state.get("status_url") or self.kick_off(request)
                self.state["status_url"] = self.status_url
                self._save_state()
                manifest = self.poll(self.status_url, started)
                self.state["manifest"] = manifest
                (self.out / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
                self._save_state()
            else:
                self.status_url = self.state.get("status_url")
            result.seconds_waiting = self._clock() - started
            gone = self.download_all(manifest, result)
            if not gone:
                break
            if attempt == 0:
                log.warning("export: %d file(s) not found (HTTP 404/410: expired?); requesting a new export",
                            len(gone))
                self.cancel()
                self._remove_files(self.state["files"])
                self.state = {"key": self.state["key"], "files": {}}
                result = ExportResult(reexported=True)
                continue
            result.errors += [{"file": name, "line": None, "location": None, "reason": gone_reason(status)}
                              for name, status in gone]
        result.seconds_downloading = self._clock() - started - result.seconds_waiting
        if not result.failed and self.cancel():  # every file is in: the server may free the job
            self.state["deleted_job"] = True
        self._save_state()
        return result

    # -- downloads -----------------------------------------------------------------------------

    def download_all(self, manifest: Mapping[str, Any], result: ExportResult) -> list[tuple[str, int]]:
        """Download every output, deleted and error file not already whole; returns (name, HTTP status) of
        the files answered 404 or 410 (perhaps expired: worth one new export)."""
        token = bool(manifest.get("requiresAccessToken"))
        jobs: list[tuple[str, str, Any, str]] = []  # (url, local name, expected count, kind)
        seen: dict[str, int] = {}
        for kind in ("output", "deleted", "error"):
            for item in manifest.get(kind) or []:
                if not isinstance(item, dict) or not isinstance(item.get("url"), str):
                    result.errors.append({"file": MANIFEST, "line": None, "location": kind,
                                          "reason": "a manifest entry has no url"})
                    continue
                rtype = str(item.get("type") or "Resource")
                rtype = rtype if rtype.isidentifier() else "Resource"
                number = seen.get(f"{kind}/{rtype}", 0)
                seen[f"{kind}/{rtype}"] = number + 1
                prefix = {"output": "", "deleted": "deleted/", "error": ERRORS}[kind]
                jobs.append((item["url"], f"{prefix}{rtype}.{number:03d}.ndjson", item.get("count"), kind))
        todo = []
        for job in jobs:
            done = self.state["files"].get(job[0])
            if done and self._whole(job[1], job[2], done):
                result.skipped += 1
                result.files.append(self.path(job[1]))
                continue
            todo.append(job)
        gone: list[tuple[str, int]] = []
        pool = ThreadPoolExecutor(max_workers=max(1, self.limits.parallel))
        try:
            futures = [pool.submit(self._download_one, url, name, token) for url, name, _, _ in todo]
            for done, _ in enumerate(as_completed(futures), start=1):
                self.on_progress(f"downloaded {done}/{len(futures)} file(s)")
            outcomes = [f.result() for f in futures]
        except BaseException:  # Ctrl-C: do not wait for whole files
            self._stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        for (url, name, count, _kind), (status, lines, size, problem) in zip(todo, outcomes, strict=True):
            if status in (404, 410):
                gone.append((name, status))
                continue
            if problem is None and isinstance(count, int) and count != lines:
                problem = f"the manifest says {count} resource(s), the file has {lines} line(s)"
            if problem is not None:
                result.failed += 1
                result.errors.append({"file": name, "line": None, "location": None, "reason": problem})
                self.path(name).unlink(missing_ok=True)
                continue
            self.state["files"][url] = {"path": name, "lines": lines, "bytes": size}
            result.bytes += size
            result.files.append(self.path(name))
        self._save_state()
        for path in [f for f in result.files if f.parent == self.meta / ERRORS.rstrip("/")]:
            result.errors += error_rows(path, f"{self.meta.name}/{ERRORS}{path.name}")
        return gone

    def _whole(self, name: str, count: Any, done: Mapping[str, Any]) -> bool:
        path = self.path(name)
        try:
            if path.stat().st_size != done.get("bytes"):
                return False
            return count_lines(path) == (count if isinstance(count, int) else done.get("lines"))
        except OSError:
            return False

    def _download_one(self, url: str, name: str, token: bool) -> tuple[int, int, int, str | None]:
        """(HTTP status, lines, bytes, problem) of one download, retried with backoff on 429/5xx and
        connection failures."""
        for attempt in range(self.client.retries + 1):
            status, lines, size, problem = self._download_once(url, name, token)
            if problem is None or not (status in RETRY_STATUSES or status == 0) or attempt == self.client.retries:
                break
            self._sleep(min(self.client.backoff * (2 ** attempt), self.limits.max_poll_wait))
        return status, lines, size, problem

    def _download_once(self, url: str, name: str, token: bool) -> tuple[int, int, int, str | None]:
        """(HTTP status, lines, bytes, problem) of one streamed download into ``out/name``, cut at the
        per-file deadline whatever the server does (headers, redirects and body included)."""
        target = self.path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.part")
        too_slow = f"took longer than {self.limits.file_seconds:.0f} s"
        size = 0
        try:
            with deadline(self.limits.file_seconds) as guard:
                try:
                    status, size, problem = self._stream_to(part, self.client.resolve(url), token, guard)
                except (requests.RequestException, urllib3.exceptions.HTTPError):
                    if not guard.expired:
                        raise
            if guard.expired:
                return 200, 0, size, too_slow
            if problem is not None:
                return status, 0, size, problem
            os.replace(part, target)
        except FhirError as exc:
            return -1, 0, size, f"download refused: {exc}"
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:  # urllib3's: while reading the body
            timeout = (requests.Timeout, urllib3.exceptions.TimeoutError)
            return 0, 0, size, f"download {'timed out' if isinstance(exc, timeout) else 'connection failed'}"
        except OSError as exc:
            return 0, 0, size, f"cannot write the file ({exc.strerror or exc})"
        finally:
            part.unlink(missing_ok=True)
        return 200, count_lines(target), size, None

    def _stream_to(self, part: Path, url: str, token: bool, guard: Guard) -> tuple[int, int, str | None]:
        """(HTTP status, bytes, problem) of writing the body into ``part``: within the size limit, and, for a
        gzip-encoded body, within the decompression-bomb rules of :mod:`.limits` (ratio and total)."""
        response = self._get_following(url, token, guard)
        size = 0
        with response:
            if response.status_code != 200:
                return response.status_code, 0, f"download: HTTP {response.status_code}"
            encoded = response.headers.get("Content-Encoding", "identity").strip().lower() != "identity"
            with open(part, "wb") as f:
                for chunk in chunks(response):
                    size += len(chunk)
                    if size > self.limits.max_file_bytes:
                        return 200, size, f"larger than the limit of {self.limits.max_file_bytes:,} bytes"
                    bomb = bomb_reason(size, response.raw.tell(), "file not kept") if encoded else None
                    if bomb is not None:
                        return 200, size, bomb
                    if self._stop.is_set():
                        return 0, size, "cancelled"
                    f.write(chunk)
        return 200, size, None

    def _get_following(self, url: str, token: bool, guard: Guard) -> requests.Response:
        """GET with redirects followed by hand: Authorization only to the FHIR server's origin."""
        for _hop in range(self.client.max_redirects + 1):
            check_url(url, self.client.allow_http_loopback)
            headers = {"Accept": NDJSON}
            if token and self.client.auth is not None and self.client.same_origin(url):
                authorization = self.client.auth.header(self.client)
                if authorization:
                    headers["Authorization"] = authorization
            remaining = max(0.1, guard.seconds_left())
            # auth=keep_request: no ~/.netrc credentials behind our back; Authorization is set above, per origin.
            response = self._session().get(url, headers=headers, stream=True, allow_redirects=False, auth=keep_request,
                                           timeout=(min(10.0, remaining), min(60.0, remaining)))
            location = response.headers.get("Location")
            if response.status_code not in REDIRECT_STATUSES or not location:
                return response
            response.close()
            url = urljoin(url, location)
        raise requests.TooManyRedirects("too many redirects")
