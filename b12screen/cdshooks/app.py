"""The Starlette app: routes, JWT checks, size and time bounds, OperationOutcome errors, CORS, access log.

Routes: ``GET /cds-services`` (discovery), ``POST /cds-services/{id}`` (a service call),
``POST /cds-services/{id}/feedback``, ``GET /health`` (no data, no auth: for probes and as the
benchmark's baseline), ``GET /ready``, ``GET /metrics``, ``GET /openapi.json``.
Every non-2xx answer is an OperationOutcome without a stack trace.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import date
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core.config import Config
from ..screening import Screener
from ..sources.extract import UNDERSTOOD_TYPES
from ..sources.models import preload_models
from .config import ServiceConfig
from .declarations import SERVICES, ServiceDecl, discovery, services_by_id
from .handler import (
    CardRegistry,
    FeedbackRecorder,
    HookHandler,
    Outcome,
    Prepared,
    Problem,
    check_content_type,
    operation_outcome,
    parse_json,
    validate_feedback,
)
from .messages import NO_STORE, TooLarge, json_response, problem_response, read_limited, safe_id
from .observe import FIELDS, Metrics, rejection_reason, sample_memory, use_log_format
from .openapi import openapi_document
from .prefetch import NeedsIo
from .protocol import RECEIVED
from .replay import StoreUnavailable, describe_store
from .security import ANONYMOUS, AuthError, Caller, JwtVerifier

log = logging.getLogger("b12screen.cdshooks")

#: a call with a body up to this size runs its CPU work on the event loop (``CdsApp.run_within_budget``):
#: screening costs about 0.13 ms of CPU per KiB of request, so this holds up other requests ~8 ms at most
INLINE_MAX_BYTES = 64 * 1024
_STATUS_CODES = {404: "not-found", 405: "not-supported", 413: "too-costly", 415: "not-supported"}


class CorsMiddleware:
    """CORS on every route and on errors; preflight answers with the methods and headers CDS Hooks needs."""

    def __init__(self, app: ASGIApp, origins: tuple[str, ...]) -> None:
        self.app = app
        self.origins = frozenset(origins)
        self.any = "*" in self.origins

    def _allowed(self, origin: str | None) -> str | None:
        if not origin:
            return None
        if self.any:
            return "*"
        return origin if origin in self.origins else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin, preflight = None, False
        for name, value in scope["headers"]:  # ASGI header names are lower-case bytes
            if name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"access-control-request-method":
                preflight = True
        allow = self._allowed(origin)
        if scope["method"] == "OPTIONS" and preflight:
            if allow is None:
                response = json_response(operation_outcome("forbidden", "origin not allowed"), 403)
            else:
                response = Response(status_code=204, headers={
                    "Access-Control-Allow-Origin": allow,
                    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                    "Access-Control-Allow-Headers": "Authorization, Content-Type",
                    "Access-Control-Max-Age": "600",
                    "Vary": "Origin",
                })
            await response(scope, receive, send)
            return
        if allow is None:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"access-control-allow-origin", allow.encode("latin-1")), (b"vary", b"Origin")]
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        await self.app(scope, receive, send_with_cors)


class CdsApp:
    """Holds the service state; its methods are the Starlette endpoints."""

    def __init__(self, config: ServiceConfig, screener: Screener, today: Callable[[], date],
                 verifier: JwtVerifier | None = None, services: tuple[ServiceDecl, ...] = SERVICES) -> None:
        self.config = config
        self.screener = screener
        self.services = services_by_id(services)
        self.metrics = Metrics()
        config.check_audience()  # JWT verification on: the aud comes from public_base_url only
        self.verifier = None if config.insecure_no_auth else (verifier or JwtVerifier(config))
        self.executor = ThreadPoolExecutor(max_workers=config.fetch_workers, thread_name_prefix="b12-fetch")
        self.registry = CardRegistry()
        self.handler = HookHandler(config, screener, today, self.executor, self.registry)
        self.feedback_recorder = FeedbackRecorder(config.feedback_log, self.registry)
        self.discovery_body = orjson.dumps(discovery(screener.terminology, services))
        self.openapi_body = orjson.dumps(openapi_document(services))
        self.cpu_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="b12-cpu")
        self.io_pool = ThreadPoolExecutor(max_workers=max(4, config.fetch_workers * 4), thread_name_prefix="b12-io")

    # -- helpers -----------------------------------------------------------------------------

    def endpoint_url(self, path: str) -> str:
        """The URL a token for ``path`` must name as ``aud``: from the configuration, never from the request."""
        return str(self.config.public_base_url).rstrip("/") + path

    def authenticate(self, request: Request, path: str, allow_io: bool = True) -> Caller:
        if self.verifier is None:
            return ANONYMOUS
        try:
            return self.verifier.verify(request.headers.get("authorization"), self.endpoint_url(path),
                                        allow_io)
        except AuthError as exc:
            self.metrics.jwt_rejections.labels(rejection_reason(exc.reason)).inc()
            log.info("401 on %s: %s", path.rsplit("/", 1)[-1] or "discovery", exc.reason)
            raise Problem(401, "login") from None
        except StoreUnavailable as exc:  # fail closed: no call is answered that could be a replay
            log.error("503 on %s: %s", path.rsplit("/", 1)[-1] or "discovery", exc)
            raise Problem(503, "transient", "the replay guard is unavailable; try again later") from None

    async def run_within_budget(self, work: Callable[[bool], Any], inline: bool = False,
                                received: float | None = None) -> Any:
        """``work`` under the hard time budget, counted from ``received`` (``time.monotonic()`` when the
        request was fully received; now if None): waiting counts too, so an overloaded service sheds
        load with 503 instead of queueing without end, and a late result is dropped.

        First ``work(allow_io=False)``: on the event loop itself when ``inline`` (a small request: its CPU
        work takes milliseconds and the GIL would serialise it anyway, so a thread hand-off only adds
        cost), else in the CPU pool (a few threads, so that a large request does not hold up the loop).
        If it needs network I/O (a JWK Set or FHIR fetch) it raises ``NeedsIo`` before any, and
        ``work(allow_io=True)`` runs in the I/O pool, so slow FHIR servers never hold up requests that
        came with their prefetch."""
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        deadline = (now if received is None else min(received, now)) + self.config.time_budget_seconds
        try:
            if now >= deadline:
                raise TimeoutError  # waited past the budget before it could start
            async with asyncio.timeout_at(loop.time() + deadline - now):
                try:
                    if not inline:
                        return await loop.run_in_executor(self.cpu_pool, work, False)
                    result = work(False)
                    if time.monotonic() >= deadline:
                        raise TimeoutError  # finished late: dropped, as a late thread's result is
                    return result
                except NeedsIo:
                    return await loop.run_in_executor(self.io_pool, work, True)
        except TimeoutError:
            raise Problem(503, "timeout", "the service ran out of time") from None

    def _label(self, what: str) -> str:
        """A bounded metric label for ``what``: a known service id (``/feedback``), discovery or unknown."""
        kind, _, service_id = what.partition(" ")
        if kind == "discovery":
            return "discovery"
        if service_id not in self.services:
            return "unknown"
        return service_id + ("/feedback" if kind == "feedback" else "")

    def _access_log(self, what: str, status: int, started: float, caller: Caller | None = None,
                    hook_instance: str | None = None, outcome: Outcome | None = None) -> None:
        seconds = time.perf_counter() - started
        label = self._label(what)
        self.metrics.observe(label, status, seconds, outcome.cards if outcome and label in self.services else None,
                             len(outcome.fetched) if outcome else 0)
        if not log.isEnabledFor(logging.INFO):
            return
        caller = caller or ANONYMOUS
        fields = {"event": "request", "request_id": safe_id(hook_instance) if hook_instance else uuid.uuid4().hex,
                  "service": label, "status": status, "duration_ms": round(seconds * 1000, 1),
                  "iss": caller.iss, "cards": outcome.cards if outcome else None,
                  "fetched": len(outcome.fetched) if outcome else 0}
        log.info("%s status=%d ms=%.1f hookInstance=%s iss=%s tenant=%s jti=%s cards=%s fetched=%s",
                 what, status, seconds * 1000, safe_id(hook_instance), safe_id(caller.iss, 120),
                 safe_id(caller.tenant), safe_id(caller.jti), outcome.cards if outcome else "-",
                 ",".join(outcome.fetched) if outcome and outcome.fetched else "-", extra={FIELDS: fields})

    async def metrics_endpoint(self, request: Request) -> Response:
        body, content_type = self.metrics.exposition()
        return Response(body, headers={"Content-Type": content_type, **NO_STORE})

    # -- endpoints ---------------------------------------------------------------------------

    async def openapi(self, request: Request) -> Response:
        return Response(self.openapi_body, media_type="application/json", headers=NO_STORE)

    async def health(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json", headers=NO_STORE)

    async def ready(self, request: Request) -> Response:
        """Readiness: the configuration is loaded, the replay store answers and every issuer's keys are
        inline, cached or reachable."""
        verifier = self.verifier
        loop = asyncio.get_running_loop()
        if verifier is not None and not await loop.run_in_executor(self.io_pool, verifier.replay.reachable):
            log.warning("not ready: the replay store is unreachable")
            return json_response(operation_outcome("transient", "the replay store is unreachable"), 503)
        unready = [] if verifier is None else await loop.run_in_executor(self.io_pool, verifier.unready_issuers)
        if unready:
            log.warning("not ready: no keys for %d issuer(s)", len(unready))
            return json_response(operation_outcome("transient", "the key sets of some issuers are unreachable"),
                                 503)
        return Response(b'{"status":"ready"}', media_type="application/json", headers=NO_STORE)

    def startup_line(self) -> str:
        """One line for the log at start-up: issuers (iss only), profile, plugin and rule counts."""
        screener = self.handler.screener
        issuers = ", ".join(self.verifier.issuers) if self.verifier is not None else "none (JWT verification off)"
        store = describe_store(self.config.replay_store)
        return (f"b12screen CDS service: issuers {issuers}; replay store {store}; profile {screener.profile}; "
                f"{len(screener.plugin_manager.plugin_names())} plugin(s), {len(screener.rules)} rule(s)")

    async def discovery(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            if not self.config.public_discovery:
                await self.run_within_budget(lambda allow_io: self.authenticate(request, "/cds-services", allow_io),
                                             True, request.scope.get(RECEIVED))
        except Problem as problem:
            self._access_log("discovery", problem.status, started)
            return problem_response(problem)
        self._access_log("discovery", 200, started)
        return Response(self.discovery_body, media_type="application/json", headers=NO_STORE)

    async def service(self, request: Request) -> Response:
        started = time.perf_counter()
        service_id = request.path_params["service_id"]
        service = self.services.get(service_id)
        what = f"service {safe_id(service_id)}"
        if service is None:
            self._access_log(what, 404, started)
            return problem_response(Problem(404, "not-found", "no such CDS service"))
        caller: Caller | None = None
        hook_instance: str | None = None
        prepared: Prepared | Outcome | None = None
        try:
            body = await read_limited(request, self.config.max_request_bytes)
            received = min(request.scope.get(RECEIVED) or math.inf, time.monotonic())
            deadline = received + self.config.time_budget_seconds - 0.5  # fetches end within the budget
            content_type = request.headers.get("content-type")

            def work(allow_io: bool) -> Outcome:
                # Each step runs once: a call that needs I/O comes back here in a worker thread and carries
                # on where it stopped (the jti is not recorded twice, the body not parsed or validated twice).
                nonlocal caller, hook_instance, prepared
                if caller is None:
                    caller = self.authenticate(request, f"/cds-services/{service_id}", allow_io)
                if prepared is None:
                    check_content_type(content_type)
                    payload = parse_json(body)
                    given = payload.get("hookInstance")
                    hook_instance = given if isinstance(given, str) else None
                    prepared = self.handler.prepare(service, payload, caller, deadline)
                if isinstance(prepared, Outcome):
                    return prepared
                if prepared.needs_io and not allow_io:
                    raise NeedsIo  # nothing fetched yet: answered in the I/O pool
                return self.handler.answer(prepared)

            outcome = await self.run_within_budget(work, len(body) <= INLINE_MAX_BYTES, received)
        except ClientDisconnect:
            return self._disconnected(what, started)
        except TooLarge:
            problem = Problem(413, "too-costly", f"the request body exceeds {self.config.max_request_bytes} bytes")
            self._access_log(what, 413, started)
            return problem_response(problem)
        except Problem as problem:
            self._access_log(what, problem.status, started, caller, hook_instance)
            return problem_response(problem)
        except Exception as exc:  # never a stack trace or patient data in the answer or the log
            log.error("internal error in %s (%s)", what, type(exc).__name__)
            self._access_log(what, 500, started, caller, hook_instance)
            return problem_response(Problem(500, "exception", "internal error"))
        assert isinstance(outcome, Outcome)
        self._access_log(what, 200, started, caller, hook_instance, outcome)
        return json_response(outcome.body)

    async def feedback(self, request: Request) -> Response:
        started = time.perf_counter()
        service_id = request.path_params["service_id"]
        what = f"feedback {safe_id(service_id)}"
        if service_id not in self.services:
            self._access_log(what, 404, started)
            return problem_response(Problem(404, "not-found", "no such CDS service"))
        caller: Caller | None = None
        try:
            body = await read_limited(request, min(self.config.max_request_bytes, 1_000_000))
            content_type = request.headers.get("content-type")

            def work(allow_io: bool) -> Outcome:
                nonlocal caller
                if caller is None:
                    caller = self.authenticate(request, f"/cds-services/{service_id}/feedback", allow_io)
                check_content_type(content_type)
                items = validate_feedback(parse_json(body))
                if self.feedback_recorder.path and not allow_io:
                    raise NeedsIo  # file writes happen in a worker thread
                self.feedback_recorder.record(service_id, items)
                return Outcome({"received": len(items)})

            outcome = await self.run_within_budget(work, len(body) <= INLINE_MAX_BYTES, request.scope.get(RECEIVED))
        except ClientDisconnect:
            return self._disconnected(what, started)
        except TooLarge:
            self._access_log(what, 413, started)
            return problem_response(Problem(413, "too-costly", "the feedback body is too large"))
        except Problem as problem:
            self._access_log(what, problem.status, started, caller)
            return problem_response(problem)
        except Exception as exc:
            log.error("internal error in %s (%s)", what, type(exc).__name__)
            self._access_log(what, 500, started, caller)
            return problem_response(Problem(500, "exception", "internal error"))
        assert isinstance(outcome, Outcome)
        self._access_log(what, 200, started, caller)
        return json_response(outcome.body)

    def _disconnected(self, what: str, started: float) -> Response:
        """The client hung up before its request was read: not an error of ours (logged at info, 499)."""
        log.info("client disconnected during %s", what)
        self._access_log(what, 499, started)
        return problem_response(Problem(400, "incomplete", "the client disconnected"))

    def close(self) -> None:
        for pool in (self.executor, self.cpu_pool, self.io_pool):
            pool.shutdown(wait=False, cancel_futures=True)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    diagnostics = {404: "not found", 405: "method not allowed"}.get(status, "request failed")
    return json_response(operation_outcome(_STATUS_CODES.get(status, "processing"), diagnostics), status, headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("internal error (%s)", type(exc).__name__)
    return json_response(operation_outcome("exception", "internal error"), 500)


def create_app(config: ServiceConfig, screener: Screener | None = None,
               today: Callable[[], date] = date.today, verifier: JwtVerifier | None = None) -> Starlette:
    """The ASGI app. ``today`` is the as-of clock (the engine itself never reads the clock)."""
    if screener is None:
        rules = Config.from_file(config.rules_config) if config.rules_config else None
        screener = Screener(profile=config.profile, config=rules)
    state = CdsApp(config, screener, today, verifier)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        preload_models(UNDERSTOOD_TYPES)  # before serving: else the first calls would import them (~0.15 s)
        sampler = asyncio.create_task(sample_memory(state.metrics)) if state.metrics.shared_dir else None
        yield
        if sampler is not None:
            sampler.cancel()
        state.close()

    routes = [
        Route("/health", state.health, methods=["GET"]),
        Route("/ready", state.ready, methods=["GET"]),
        Route("/metrics", state.metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", state.openapi, methods=["GET"]),
        Route("/cds-services", state.discovery, methods=["GET"]),
        Route("/cds-services/{service_id}", state.service, methods=["POST"]),
        Route("/cds-services/{service_id}/feedback", state.feedback, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error, Exception: _server_error},
                    middleware=[Middleware(CorsMiddleware, origins=config.allowed_origins())], lifespan=lifespan)
    app.state.cds = state
    return app


def app_from_environment() -> Starlette:
    """uvicorn factory for ``--workers`` > 1: the settings travel as JSON in ``B12SCREEN__SERVE_CONFIG``."""
    raw = os.environ.get("B12SCREEN__SERVE_CONFIG")
    config = ServiceConfig.from_mapping(orjson.loads(raw), "B12SCREEN__SERVE_CONFIG") if raw else ServiceConfig.load()
    from .protocol import BoundedHttpToolsProtocol

    use_log_format(config.log_format)
    logging.getLogger("b12screen").setLevel(config.log_level.upper())
    BoundedHttpToolsProtocol.configure(config.read_timeout_seconds, config.max_connections)
    return create_app(config)
