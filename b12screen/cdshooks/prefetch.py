"""The prefetch contract and the fallback fetch from the CDS client's FHIR server.

Per declared key (CDS Hooks 2.0, "Prefetch Template"):

- present: used as is (the legacy ``{"response": ..., "resource": ...}`` wrapper is unwrapped); a
  searchset with a ``next`` link is continued from ``fhirServer``;
- ``null``: the client has no data: known-empty, **not** fetched;
- absent: fetched from ``fhirServer``;
- an OperationOutcome (or a Bundle of only OperationOutcomes): per ``prefetch_failure_mode`` fetched
  (``fetch``, the default), a 412 (``fail``), or left out (``omit``).

Fetches go only to an allow-listed ``fhirServer`` over https (http on loopback in test mode), with the
``fhirAuthorization`` token until its ``expires_in`` runs out, and never to another host: a redirect
is followed only to a URL that passes the same https and allow-list rules, else the key's fetch fails. Required keys
that cannot be had raise :class:`MissingData` (HTTP 412); optional ones are listed as unavailable.
``medicationReference`` targets that are neither contained nor in the data are read from the server.

Every request the fallback fetch makes is cut at its deadline (``fetch_timeout_seconds``, and the call's
time budget), headers included; and each FHIR server (origin) may hold at most half the fetch threads
(``fetch_workers // 2``, at least one) at once, so one slow server cannot starve the fetches of the others
(:class:`ServerSlots`).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..core.terminology import Terminology
from ..sources.fhirclient import BearerToken, FhirClient, FhirError, SearchResult, check_url, next_link, within
from ..sources.fhirqueries import PrefetchDecl
from ..sources.fhirread import fetch_declared, medication_ids_to_read
from ..sources.urls import origin
from .config import ServiceConfig
from .declarations import ServiceDecl

log = logging.getLogger(__name__)


class NeedsIo(Exception):
    """The request needs network I/O: process it again in a worker thread."""


class MissingData(Exception):
    """Required data could not be obtained: the service answers 412 naming ``key``."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass
class Gathered:
    """The data found for one request, and what was missing or incomplete (for the card's detail)."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)


@dataclass
class FhirAccess:
    """Whether and how this request may read from its ``fhirServer``."""

    client: FhirClient | None
    reason: str | None = None  # why not, when ``client`` is None


def fhir_access(body: Mapping[str, Any], config: ServiceConfig, issuer_servers: tuple[str, ...],
                deadline: float, clock: Callable[[], float] = time.monotonic) -> FhirAccess:
    server = body.get("fhirServer")
    if not isinstance(server, str) or not server:
        return FhirAccess(None, "no fhirServer in the request")
    server = server.rstrip("/")
    try:
        check_url(server, allow_http_loopback=config.test_mode)
    except FhirError:
        return FhirAccess(None, "fhirServer is not https")
    allowed = tuple(config.fhir_servers) + tuple(issuer_servers)
    if not within(server, allowed):
        log.info("fhirServer host %s is not allow-listed; no fallback fetch", urlsplit(server).hostname)
        return FhirAccess(None, "fhirServer is not allow-listed")
    auth = None
    authorization = body.get("fhirAuthorization")
    if isinstance(authorization, Mapping):
        expires_in = authorization.get("expires_in")
        auth = BearerToken(authorization["access_token"],
                           float(expires_in) if isinstance(expires_in, int | float) else None, clock=clock)
    client = FhirClient(server, auth=auth, timeout=(min(2.0, config.fetch_timeout_seconds),
                                                   config.fetch_timeout_seconds),
                        retries=1, backoff=0.2, max_retry_after=1.0, max_pages=config.max_pages,
                        max_resources=config.max_resources_per_key, deadline=deadline,
                        allow_http_loopback=config.test_mode, clock=clock, allowed_bases=allowed)
    return FhirAccess(client)


def unwrap(value: Any) -> Any:
    """The legacy pre-1.0 ``{"response": {...}, "resource": {...}}`` prefetch wrapper, unwrapped."""
    if isinstance(value, Mapping) and "resourceType" not in value and "resource" in value:
        return value["resource"]
    return value


def _is_outcome(value: Mapping[str, Any]) -> bool:
    if value.get("resourceType") == "OperationOutcome":
        return True
    if value.get("resourceType") == "Bundle":
        entries = [e.get("resource") for e in value.get("entry") or [] if isinstance(e, Mapping)]
        return bool(entries) and all(isinstance(r, Mapping) and r.get("resourceType") == "OperationOutcome"
                                     for r in entries)
    return False


def _resources_of(value: Mapping[str, Any]) -> list[dict[str, Any]]:
    if value.get("resourceType") != "Bundle":
        return [dict(value)]
    out = []
    for entry in value.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if isinstance(resource, dict) and resource.get("resourceType") != "OperationOutcome":
            out.append(resource)
    return out


class ServerSlots:
    """At most ``limit`` fetches in flight per FHIR server (origin) on one shared executor. A fetch waits
    for a slot in the caller's thread, not in a fetch thread, and no longer than its client's deadline;
    the slot is freed when the fetch ends (and every fetch ends by its deadline)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._lock = threading.Lock()
        self._slots: dict[tuple[str, str, int | None], threading.BoundedSemaphore] = {}

    def submit(self, executor: Executor, client: FhirClient, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        with self._lock:  # only allow-listed servers get a client: the keys are bounded by the configuration
            slot = self._slots.setdefault(origin(client.base_url), threading.BoundedSemaphore(self.limit))
        left = client.time_left()
        if not slot.acquire(timeout=None if left is None else max(0.0, left)):
            failed: Future[Any] = Future()
            failed.set_exception(FhirError("the FHIR server was busy with other fetches until the deadline"))
            return failed
        try:
            future = executor.submit(fn, *args)
        except BaseException:
            slot.release()
            raise
        future.add_done_callback(lambda _done: slot.release())
        return future


_SLOTS: weakref.WeakKeyDictionary[Executor, ServerSlots] = weakref.WeakKeyDictionary()
_SLOTS_LOCK = threading.Lock()


def server_slots(executor: Executor, workers: int) -> ServerSlots:
    """The per-server bound of ``executor`` (a service's fetch pool of ``workers`` threads): half of them."""
    with _SLOTS_LOCK:
        slots = _SLOTS.get(executor)
        if slots is None:
            slots = _SLOTS[executor] = ServerSlots(workers // 2)
        return slots


@dataclass
class GatherPlan:
    """The prefetch of one request, read: what it holds, the keys and pages still to fetch, and whether
    Medications it references must be read."""

    gathered: Gathered
    to_fetch: list[PrefetchDecl]
    to_continue: list[tuple[PrefetchDecl, str]]
    medications: bool

    @property
    def needs_io(self) -> bool:
        return bool(self.to_fetch or self.to_continue or self.medications)


class Gatherer:
    """Collects the data of one request for a service's declared keys."""

    def __init__(self, service: ServiceDecl, terminology: Terminology, config: ServiceConfig, executor: Executor):
        self.service = service
        self.terminology = terminology
        self.config = config
        self.executor = executor
        self.slots = server_slots(executor, config.fetch_workers)

    def gather(self, prefetch: Mapping[str, Any], context: Mapping[str, Any], access: Callable[[], FhirAccess],
               server: str | None = None) -> Gathered:
        """The request's data: :meth:`plan`, then :meth:`complete`."""
        return self.complete(self.plan(prefetch, server), context, access)

    def plan(self, prefetch: Mapping[str, Any], server: str | None = None) -> GatherPlan:
        """What the prefetch holds and what must still be fetched (no I/O: the service plans on the event
        loop, and only a plan that :attr:`~GatherPlan.needs_io` completes in a worker thread)."""
        out = Gathered()
        to_fetch: list[PrefetchDecl] = []
        to_continue: list[tuple[PrefetchDecl, str]] = []
        for decl in self.service.prefetch:
            state, value = self._classify(prefetch, decl.key)
            if state == "present":
                out.resources.extend(_resources_of(value))
                link = next_link(value) if value.get("resourceType") == "Bundle" else None
                if link is not None:
                    to_continue.append((decl, link))
                continue
            if state == "null":
                continue
            if state == "outcome":
                mode = self.config.prefetch_failure_mode
                if mode == "fail":
                    raise MissingData(decl.key, "the CDS client reported an error prefetching it")
                if mode == "omit":
                    self._unavailable(decl, out, "the CDS client reported an error prefetching it")
                    continue
            to_fetch.append(decl)
        return GatherPlan(out, to_fetch, to_continue, bool(medication_ids_to_read(out.resources, server)))

    def complete(self, plan: GatherPlan, context: Mapping[str, Any], access: Callable[[], FhirAccess]) -> Gathered:
        """The plan's data, fetched where the prefetch lacks it. ``access`` is called only when something must
        be fetched."""
        out, to_fetch, to_continue, medications = plan.gathered, plan.to_fetch, plan.to_continue, plan.medications
        if not plan.needs_io:
            return out
        fhir = access()
        if fhir.client is None:
            for decl in to_fetch:
                self._unavailable(decl, out, f"not prefetched and {fhir.reason}")
            out.incomplete.extend(decl.label for decl, _ in to_continue)
            if medications:
                out.unavailable.append("referenced Medication resources")
            return out
        self._fetch_all(fhir.client, to_fetch, to_continue, context, out)
        out.resources.extend(self._medications(out.resources, fhir, out))
        return out

    def _fetch_all(self, client: FhirClient, to_fetch: list[PrefetchDecl], to_continue: list[tuple[PrefetchDecl, str]],
                   context: Mapping[str, Any], out: Gathered) -> None:
        """Fetch absent keys and further pages in parallel (under the client's deadline)."""
        submit = self.slots.submit
        continued = [(decl, submit(self.executor, client, client.search_url, link, 1)) for decl, link in to_continue]
        pending = [(decl, submit(self.executor, client, self._fetch, client, decl, context)) for decl in to_fetch]
        for decl, future in continued:
            try:
                result = future.result()
            except FhirError as exc:
                log.warning("prefetch %s: next page failed (%s)", decl.key, exc)
                out.incomplete.append(decl.label)
                continue
            out.resources.extend(result.resources)
            if not result.complete:
                out.incomplete.append(decl.label)
        for decl, fetch in pending:
            try:
                fetched = fetch.result()
            except FhirError as exc:
                log.warning("prefetch %s: fetch failed (%s)", decl.key, exc)
                self._unavailable(decl, out, "the FHIR server did not provide it")
                continue
            out.fetched.append(decl.key)
            if isinstance(fetched, SearchResult):
                out.resources.extend(fetched.resources)
                if not fetched.complete:
                    out.incomplete.append(decl.label)
            elif fetched is not None:
                out.resources.append(fetched)

    @staticmethod
    def _classify(prefetch: Mapping[str, Any], key: str) -> tuple[str, Any]:
        if key not in prefetch:
            return "absent", None
        value = unwrap(prefetch[key])
        if value is None:
            return "null", None
        if not isinstance(value, Mapping) or not isinstance(value.get("resourceType"), str):
            return "outcome", None  # unusable: treated like a failed prefetch
        if _is_outcome(value):
            return "outcome", None
        return "present", value

    @staticmethod
    def _unavailable(decl: PrefetchDecl, out: Gathered, reason: str) -> None:
        if decl.required:
            raise MissingData(decl.key, reason)
        out.unavailable.append(decl.label)

    def _fetch(self, client: FhirClient, decl: PrefetchDecl, context: Mapping[str, Any]
               ) -> SearchResult | dict[str, Any] | None:
        return fetch_declared(client, decl, context, self.terminology)

    def _medications(self, resources: list[dict[str, Any]], access: FhirAccess, out: Gathered
                     ) -> list[dict[str, Any]]:
        """Read ``Medication/{id}`` targets of medicationReference that the data does not hold."""
        wanted = medication_ids_to_read(resources, access.client.base_url if access.client else None)
        if not wanted:
            return []
        if access.client is None:
            out.unavailable.append("referenced Medication resources")
            return []
        limit = self.config.max_medication_reads
        if len(wanted) > limit:
            out.incomplete.append("referenced Medication resources")
            wanted = wanted[:limit]
        client = access.client
        futures = [self.slots.submit(self.executor, client, client.read, "Medication", mid) for mid in wanted]
        found: list[dict[str, Any]] = []
        for future in futures:
            try:
                medication = future.result()
            except FhirError as exc:
                log.warning("Medication read failed (%s)", exc)
                medication = None
            if medication is None:
                if "referenced Medication resources" not in out.incomplete:
                    out.incomplete.append("referenced Medication resources")
                continue
            found.append(medication)
        return found
