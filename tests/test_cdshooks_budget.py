"""The time budget of a service call: small requests run inline on the event loop, large ones in the CPU
pool; either way a call that waited or ran past the budget is answered 503 and its result dropped, and
work that needs network I/O moves to the I/O pool."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
import warnings
from typing import Any

import orjson
import pytest
from cdshooks_helpers import AS_OF, metformin_patient, request_body, running_server

from b12screen import Screener
from b12screen.cdshooks.app import INLINE_MAX_BYTES, create_app
from b12screen.cdshooks.config import ServiceConfig
from b12screen.cdshooks.handler import Problem
from b12screen.cdshooks.prefetch import NeedsIo
from b12screen.cdshooks.protocol import BoundedHttpToolsProtocol
from b12screen.plugins import get_plugin_manager

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

PV = "/cds-services/b12screen-patient-view"


def service(budget: float = 0.3) -> Any:
    screener = Screener(plugin_manager=get_plugin_manager(load_entry_points=False))
    app = create_app(ServiceConfig(insecure_no_auth=True, time_budget_seconds=budget).checked(), screener=screener,
                     today=lambda: AS_OF)
    return app, app.state.cds


def run(state: Any, work: Any, inline: bool, received: float | None = None) -> Any:
    async def main() -> Any:
        return await state.run_within_budget(work, inline, received)

    return asyncio.run(main())


@pytest.mark.parametrize("inline", [True, False])
def test_work_runs_inline_only_when_asked_and_its_result_is_returned(inline: bool) -> None:
    _, state = service()
    threads: list[str] = []

    def work(allow_io: bool) -> str:
        threads.append(threading.current_thread().name)
        return f"done, io={allow_io}"

    assert run(state, work, inline) == "done, io=False"
    assert threads[0].startswith("b12-cpu") is not inline
    assert (threads[0] == threading.current_thread().name) is inline


@pytest.mark.parametrize("inline", [True, False])
def test_a_call_that_waited_past_the_budget_is_shed_without_running(inline: bool) -> None:
    _, state = service(budget=0.3)
    calls: list[bool] = []
    with pytest.raises(Problem) as caught:
        run(state, calls.append, inline, received=time.monotonic() - 0.31)
    assert (caught.value.status, caught.value.code) == (503, "timeout")
    assert calls == []
    assert run(state, lambda io: "ran", inline, received=time.monotonic() - 0.1) == "ran"  # within the budget


def test_inline_work_that_finishes_late_is_dropped() -> None:
    _, state = service(budget=0.2)
    with pytest.raises(Problem) as caught:
        run(state, lambda io: time.sleep(0.25) or "late", True)
    assert caught.value.status == 503
    assert run(state, lambda io: time.sleep(0.05) or "in time", True) == "in time"


@pytest.mark.parametrize("inline", [True, False])
def test_work_that_needs_io_moves_to_the_io_pool(inline: bool) -> None:
    _, state = service()
    seen: list[tuple[bool, str]] = []

    def work(allow_io: bool) -> str:
        seen.append((allow_io, threading.current_thread().name))
        if not allow_io:
            raise NeedsIo
        return "fetched"

    assert run(state, work, inline) == "fetched"
    assert [io for io, _ in seen] == [False, True]
    assert seen[1][1].startswith("b12-io")


def _http(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _answers(sock: socket.socket, count: int) -> list[bytes]:
    data, out = b"", []
    while len(out) < count:
        chunk = sock.recv(65536)
        assert chunk, "closed early"
        data += chunk
        while b"\r\n\r\n" in data:
            head, rest = data.split(b"\r\n\r\n", 1)
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            if len(rest) < length:
                break
            out.append(head.split(b" ")[1] + b" " + rest[:length])
            data = rest[length:]
    return out


def test_on_a_real_server_the_budget_counts_the_wait_behind_an_inline_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two pipelined calls: the first holds the event loop past the budget (its result is dropped); the
    second, received meanwhile, has waited past the budget and is shed before it is screened."""
    app, state = service(budget=0.3)
    slow = state.handler.screener.evaluate
    calls: list[float] = []

    def evaluate(record: Any, as_of: Any) -> Any:
        calls.append(time.monotonic())
        time.sleep(0.4)
        return slow(record, as_of)

    monkeypatch.setattr(state.handler.screener, "evaluate", evaluate)
    body = orjson.dumps(request_body(prefetch=metformin_patient()))
    assert len(body) <= INLINE_MAX_BYTES
    with running_server(app, http=BoundedHttpToolsProtocol) as url, \
            socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(_http(PV, body) + _http(PV, body))
        answers = _answers(sock, 2)
    for answer in answers:
        status, payload = answer.split(b" ", 1)
        assert status == b"503"
        assert orjson.loads(payload)["issue"][0]["code"] == "timeout"
    assert len(calls) == 1  # the second call was never screened


PRELOAD_PROBE = """
import json, sys
from starlette.testclient import TestClient
from b12screen.cdshooks.app import create_app
from b12screen.cdshooks.config import ServiceConfig
from b12screen.sources.models import validate_resource
with TestClient(create_app(ServiceConfig(insecure_no_auth=True))):
    before = set(sys.modules)
    validate_resource(json.loads(sys.argv[1]))
    print(json.dumps(sorted(m for m in set(sys.modules) - before if m.startswith("fhir"))))
"""


@pytest.mark.slow
def test_the_service_loads_the_models_of_what_it_reads_before_it_serves() -> None:
    """fhir.resources imports a model's element types on first use; the service does so at start-up, so
    that no call pays for it (a fresh interpreter: other tests have loaded models already)."""
    request = metformin_patient()["medicationRequests"]["entry"][0]["resource"]
    request = {**request, "dosageInstruction": [{"timing": {"repeat": {"frequency": 2, "period": 1,
                                                                        "periodUnit": "d"}},
                                                  "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}]}]}
    done = subprocess.run([sys.executable, "-c", PRELOAD_PROBE, orjson.dumps(request).decode()],
                          capture_output=True, text=True, timeout=120, check=True)
    assert orjson.loads(done.stdout.strip().splitlines()[-1]) == []


def test_small_calls_are_screened_on_the_event_loop_and_large_ones_in_the_cpu_pool_with_one_answer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    app, state = service(budget=5)
    evaluate = state.handler.screener.evaluate
    threads: list[str] = []

    def spy(record: Any, as_of: Any) -> Any:
        threads.append(threading.current_thread().name)
        return evaluate(record, as_of)

    monkeypatch.setattr(state.handler.screener, "evaluate", spy)
    small = request_body(prefetch=metformin_patient())
    large = {**small, "padding": "x" * INLINE_MAX_BYTES}
    with TestClient(app) as client:
        answers = [client.post(PV, content=orjson.dumps(body), headers={"Content-Type": "application/json"})
                   for body in (small, large)]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json() == answers[1].json() and answers[0].json()["cards"]
    assert not threads[0].startswith("b12-cpu") and threads[1].startswith("b12-cpu")


def test_fetches_get_what_is_left_of_the_budget_counted_from_receipt(monkeypatch: pytest.MonkeyPatch) -> None:
    from b12screen.cdshooks.protocol import RECEIVED

    app, state = service(budget=5)
    received = time.monotonic() - 1.0
    deadlines: list[float] = []
    prepare = state.handler.prepare

    def spy(service: Any, body: Any, caller: Any, deadline: float) -> Any:
        deadlines.append(deadline)
        return prepare(service, body, caller, deadline)

    monkeypatch.setattr(state.handler, "prepare", spy)

    async def stamped(scope: Any, receive: Any, send: Any) -> None:  # as BoundedHttpToolsProtocol stamps it
        await app({**scope, RECEIVED: received}, receive, send)

    with TestClient(stamped) as client:
        answer = client.post(PV, content=orjson.dumps(request_body(prefetch=metformin_patient())),
                             headers={"Content-Type": "application/json"})
    assert answer.status_code == 200
    assert deadlines == [pytest.approx(received + 5 - 0.5, abs=1e-6)]
