"""What a CDS Hooks call does, without HTTP: validate, gather the data, screen, make cards.

Runs in a worker thread (it may block on fallback fetches). Problems are raised as :class:`Problem`
carrying the HTTP status and an OperationOutcome issue; the app turns them into responses.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson

from ..screening import Screener, screen_patient
from ..sinks import cards as cardlib
from ..sources import limits, read_value
from ..sources.extract import PATIENT_SCOPED_TYPES
from ..sources.fhirread import is_valid_id
from .config import CARD_PRIORITIES, ServiceConfig
from .declarations import ServiceDecl
from .order_select import concise, selected_drafts
from .orders import DraftOrders, analyse_drafts
from .prefetch import FhirAccess, Gatherer, GatherPlan, MissingData, fhir_access
from .security import Caller

log = logging.getLogger("b12screen.cdshooks")

JSON_TYPES = ("application/json", "application/fhir+json")
FEEDBACK_OUTCOMES = ("accepted", "overridden")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


class Problem(Exception):
    """An HTTP error with an OperationOutcome issue (``code`` from the FHIR issue-type value set)."""

    def __init__(self, status: int, code: str, diagnostics: str | None = None) -> None:
        super().__init__(diagnostics or code)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics


def operation_outcome(code: str, diagnostics: str | None = None, severity: str = "error") -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code}
    if diagnostics:
        issue["diagnostics"] = diagnostics
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def check_content_type(content_type: str | None) -> None:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in JSON_TYPES and not media.endswith("+json"):
        raise Problem(415, "not-supported", "the request body must be JSON (Content-Type: application/json)")


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        value = limits.loads_document(body)
    except limits.JSONProblem as exc:
        what = f"JSON nested more than {limits.HARD_DEPTH} levels deep" if "nested" in str(exc) else "not valid JSON"
        raise Problem(400, "structure", f"the request body is {what}") from None
    if not isinstance(value, dict):
        raise Problem(400, "structure", "the request body must be a JSON object")
    return value


@dataclass
class Outcome:
    """A successful call: the response body and what the access log may say about it."""

    body: dict[str, Any]
    cards: int = 0
    fetched: list[str] = field(default_factory=list)


def patient_id_of(value: str) -> str:
    """``123`` from ``123``, ``Patient/123`` or an absolute Patient URL (seen in real requests)."""
    pid = value.strip()
    if "/" in pid:
        head, _, tail = pid.rstrip("/").rpartition("/")
        if not head.endswith("Patient"):
            raise Problem(400, "value", "context.patientId is not a Patient id")
        pid = tail
    if not is_valid_id(pid):
        raise Problem(400, "value", "context.patientId is not a valid FHIR id")
    return pid


def validate(body: Mapping[str, Any], service: ServiceDecl) -> tuple[str, dict[str, Any]]:
    """(patient id, context) of a well-formed request for ``service``; :class:`Problem` 400 otherwise."""
    for name in ("hook", "hookInstance"):
        if not isinstance(body.get(name), str) or not body[name].strip():
            raise Problem(400, "required", f"{name} is required (a string)")
    if body["hook"] != service.hook:
        raise Problem(400, "value", f"this service answers the {service.hook} hook, not {body['hook'][:40]!r}")
    context = body.get("context")
    if not isinstance(context, dict):
        raise Problem(400, "required", "context is required (an object)")
    for name in service.required_context():
        value = context.get(name)
        if name == "draftOrders":
            if not isinstance(value, dict):
                raise Problem(400, "required", "context.draftOrders is required (a Bundle)")
        elif name == "selections":
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
                raise Problem(400, "required", "context.selections is required (a non-empty array of references)")
        elif not isinstance(value, str) or not value.strip():
            raise Problem(400, "required", f"context.{name} is required (a string)")
    server = body.get("fhirServer")
    if server is not None and not isinstance(server, str):
        raise Problem(400, "value", "fhirServer must be a URL string")
    authorization = body.get("fhirAuthorization")
    if authorization is not None:
        if not server:
            raise Problem(400, "required", "fhirServer is required when fhirAuthorization is given")
        if not isinstance(authorization, dict) or not isinstance(authorization.get("access_token"), str) \
                or not authorization["access_token"]:
            raise Problem(400, "value", "fhirAuthorization.access_token is required")
        token_type = authorization.get("token_type", "Bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise Problem(400, "value", "fhirAuthorization.token_type must be Bearer")
    prefetch = body.get("prefetch")
    if prefetch is not None and not isinstance(prefetch, dict):
        raise Problem(400, "value", "prefetch must be an object")
    pid = patient_id_of(context["patientId"])
    return pid, {**context, "patientId": pid}


def _normalise(resources: list[dict[str, Any]], pid: str) -> list[dict[str, Any]]:
    """Untyped or missing patient references made ``Patient/{pid}``; duplicates (type/id) dropped."""
    out: dict[Any, dict[str, Any]] = {}
    for n, resource in enumerate(resources):
        kind = resource.get("resourceType")
        if kind == "Patient" and not resource.get("id"):
            resource = {**resource, "id": pid}
        elif kind in PATIENT_SCOPED_TYPES:
            key = "patient" if "patient" in resource and "subject" not in resource else "subject"
            given = resource.get(key)
            ref: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
            target = ref.get("reference")
            if not isinstance(target, str) or not target:
                resource = {**resource, key: {**ref, "reference": f"Patient/{pid}"}}
            elif "/" not in target and not target.startswith(("urn:", "#")):
                resource = {**resource, key: {**ref, "reference": f"Patient/{target}"}}
        rid = resource.get("id")
        out[(kind, rid) if isinstance(rid, str) and rid else n] = resource
    return list(out.values())


class CardRegistry:
    """Recent card uuid → rule ids (bounded), so feedback records can name the rules without PHI."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._items: OrderedDict[str, list[str]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, card_uuid: str, rules: list[str]) -> None:
        with self._lock:
            self._items[card_uuid] = rules
            self._items.move_to_end(card_uuid)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def rules(self, card_uuid: str) -> list[str] | None:
        with self._lock:
            return self._items.get(card_uuid)


def _unavailable(exc: MissingData) -> Problem:
    return Problem(412, "processing", f"required data unavailable: prefetch key '{exc.key}' ({exc.reason})")


@dataclass
class Prepared:
    """A call validated and planned, waiting for its answer (see :meth:`HookHandler.prepare`)."""

    service: ServiceDecl
    pid: str
    context: dict[str, Any]
    as_of: date
    hook_instance: str
    drafts: DraftOrders | None
    triggers: list[str]
    gatherer: Gatherer
    plan: GatherPlan
    access: Callable[[], FhirAccess]

    @property
    def needs_io(self) -> bool:
        """Whether answering reads from the FHIR server (so runs in a worker thread, not on the event loop)."""
        return self.plan.needs_io


class HookHandler:
    """Answers service calls for the services it is given."""

    def __init__(self, config: ServiceConfig, screener: Screener, today: Callable[[], date], executor: Executor,
                 registry: CardRegistry) -> None:
        self.config = config
        self.screener = screener
        self.today = today
        self.executor = executor
        self.registry = registry

    def _carded(self, priority: str | None) -> bool:
        """True when a flagged result of ``priority`` produces a card (setting ``min_card_priority``; below
        it the result stays for batch work lists: docs/reference/clinical-rules.md section 7 point 11)."""
        order = CARD_PRIORITIES
        return priority in order and order.index(priority) >= order.index(self.config.min_card_priority)

    def call(self, service: ServiceDecl, body: Mapping[str, Any], caller: Caller, deadline: float) -> Outcome:
        """Answer one call (:meth:`prepare`, then :meth:`answer`)."""
        prepared = self.prepare(service, body, caller, deadline)
        return prepared if isinstance(prepared, Outcome) else self.answer(prepared)

    def prepare(self, service: ServiceDecl, body: Mapping[str, Any], caller: Caller,
                deadline: float) -> Prepared | Outcome:
        """Everything of a call that needs no network I/O, done once: the request validated, draft orders
        classified, the prefetch read. An answer already when the drafts decide it; else what
        :meth:`answer` completes (in a worker thread when :attr:`Prepared.needs_io`)."""
        pid, context = validate(body, service)
        as_of = self.today()
        drafts = None
        triggers: list[str] = []
        if service.hook == "order-select":
            drafts, triggers = selected_drafts(context, self.screener.terminology, pid, as_of)
            if drafts.suppress or not triggers:
                log.info("order-select: no card (%s)", drafts.suppress or "no metformin, PPI or H2RA selected")
                return Outcome({"cards": []})
        if service.hook == "order-sign":
            drafts = analyse_drafts(context["draftOrders"], self.screener.terminology, pid, as_of)
            if drafts.suppress:
                log.info("order-sign: no card (%s)", drafts.suppress)
                return Outcome({"cards": []})
        server = body.get("fhirServer")

        def access() -> FhirAccess:
            if not server:
                return FhirAccess(None, "no fhirServer in the request")
            return fhir_access(body, self.config, caller.fhir_servers, deadline)

        gatherer = Gatherer(service, self.screener.terminology, self.config, self.executor)
        try:
            plan = gatherer.plan(body.get("prefetch") or {}, server.rstrip("/") if isinstance(server, str) else None)
        except MissingData as exc:
            raise _unavailable(exc) from None
        return Prepared(service, pid, context, as_of, str(body["hookInstance"]), drafts, triggers, gatherer, plan,
                        access)

    def answer(self, call: Prepared) -> Outcome:
        """Fetch what the prefetch lacks, screen, and make the card."""
        service, pid, as_of, drafts, triggers = call.service, call.pid, call.as_of, call.drafts, call.triggers
        try:
            gathered = call.gatherer.complete(call.plan, call.context, call.access)
        except MissingData as exc:
            raise _unavailable(exc) from None
        resources = gathered.resources + (drafts.resources if drafts else [])
        screened = screen_patient(self.screener, read_value(_normalise(resources, pid), "request"),
                                  f"Patient/{pid}", as_of, self.config.validate)
        checked = screened.checked
        skipped = len(screened.errors)
        if skipped:
            log.info("%d resource(s) in the request could not be read and were skipped", skipped)
        if checked is None:
            return Outcome({"cards": []}, fetched=gathered.fetched)
        result, record = checked.result, checked.record
        if result.rule_errors:
            log.warning("%d rule error(s) while screening", len(result.rule_errors))
        if not result.flagged or not self._carded(result.priority):
            return Outcome({"cards": []}, fetched=gathered.fetched)
        card = cardlib.card(
            result, self.screener.rules_by_id, hook_instance=call.hook_instance, patient_id=pid, record=record,
            unavailable=gathered.unavailable, incomplete=gathered.incomplete,
            source_label=self.config.source_label, source_url=self.config.source_url,
        )
        if service.hook == "order-select":
            card = concise(card, result, self.screener.rules_by_id, record, triggers, as_of)
        self.registry.add(card["uuid"], list(result.rules))
        response: dict[str, Any] = {"cards": [card]}
        if self.config.auto_write_flag:
            response["systemActions"] = cardlib.system_actions([result], self.screener.rules_by_id)
        return Outcome(response, cards=1, fetched=gathered.fetched)


def validate_feedback(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The feedback items of a ``/feedback`` body; :class:`Problem` 400 when malformed."""
    items = body.get("feedback")
    if not isinstance(items, list) or not items:
        raise Problem(400, "required", "feedback must be a non-empty array")
    for n, item in enumerate(items):
        where = f"feedback[{n}]"
        if not isinstance(item, dict):
            raise Problem(400, "structure", f"{where} must be an object")
        if not isinstance(item.get("card"), str) or not item["card"]:
            raise Problem(400, "required", f"{where}.card is required (the card uuid)")
        if item.get("outcome") not in FEEDBACK_OUTCOMES:
            raise Problem(400, "value", f"{where}.outcome must be accepted or overridden")
        stamp = item.get("outcomeTimestamp")
        if not isinstance(stamp, str) or not _RFC3339.match(stamp):
            raise Problem(400, "value", f"{where}.outcomeTimestamp must be an RFC 3339 date-time")
        accepted = item.get("acceptedSuggestions")
        well_formed = isinstance(accepted, list) and bool(accepted) and all(
            isinstance(a, dict) and isinstance(a.get("id"), str) for a in accepted)
        if item["outcome"] == "accepted" and not well_formed:
            raise Problem(400, "required", f"{where}.acceptedSuggestions is required when accepted")
        override = item.get("overrideReason")
        if override is not None and not isinstance(override, dict):
            raise Problem(400, "value", f"{where}.overrideReason must be an object")
    return items


class FeedbackRecorder:
    """Appends feedback to an NDJSON file without PHI (card uuid, outcome, reason code, time, rules);
    repeated feedback for the same card, outcome and time is written once."""

    def __init__(self, path: str | None, registry: CardRegistry, size: int = 50_000) -> None:
        self.path = path
        self.registry = registry
        self._seen: OrderedDict[tuple[str, str, str, str], None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def record(self, service_id: str, items: list[dict[str, Any]]) -> int:
        if not self.path:
            return 0
        lines = []
        with self._lock:
            for item in items:
                key = (service_id, item["card"], item["outcome"], item["outcomeTimestamp"])
                if key in self._seen:
                    continue
                self._seen[key] = None
                if len(self._seen) > self._size:
                    self._seen.popitem(last=False)
                reason = (item.get("overrideReason") or {}).get("reason") or {}
                entry = {
                    "service": service_id, "card": item["card"][:64], "outcome": item["outcome"],
                    "outcomeTimestamp": item["outcomeTimestamp"],
                    "acceptedSuggestions": [a["id"][:64] for a in item.get("acceptedSuggestions") or []],
                    "overrideReason": {k: reason[k] for k in ("system", "code") if isinstance(reason.get(k), str)},
                    "rules": self.registry.rules(item["card"]),
                }
                lines.append(orjson.dumps(cardlib.prune(entry)) + b"\n")
            if lines:
                with open(self.path, "ab") as fh:
                    fh.writelines(lines)
        return len(lines)
