"""The CDS service's fallback fetch against a hostile FHIR server, on a real uvicorn on loopback: calls whose
allow-listed ``fhirServer`` drips its response headers end within the time budget, and while they run
they hold at most half the fetch threads, so a call whose server is healthy is answered in full."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import requests
from cdshooks_helpers import AS_OF, metformin_request, request_body, running_server
from hostileserver import HostileServer, searchset

from b12screen import Screener
from b12screen.cdshooks.app import create_app
from b12screen.cdshooks.config import ServiceConfig
from b12screen.cdshooks.prefetch import ServerSlots
from b12screen.plugins import get_plugin_manager
from b12screen.sources.fhirclient import FhirClient, FhirError

PV = "/cds-services/b12screen-patient-view"
PATIENT = {"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01"}
SLOW_CALLS = 6
#: A bounded wait: every call must be answered well within it (the slow server would hold a fetch a minute).
HANG = 15.0


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    with HostileServer({"Patient/p1": PATIENT, "MedicationRequest": searchset(metformin_request("m1", "p1"))}) as s:
        yield s


def call(service: str, fhir_server: str) -> requests.Response:
    return requests.post(service + PV, json=request_body(fhirServer=fhir_server), timeout=HANG)


@pytest.mark.slow
def test_a_slow_server_cannot_starve_the_fallback_fetch_of_a_healthy_one(hostile: HostileServer) -> None:
    slow, healthy = hostile.base("drip-headers"), f"{hostile.elsewhere}/ok"  # two origins: two servers
    config = ServiceConfig(insecure_no_auth=True, test_mode=True, fhir_servers=(slow, healthy), fetch_workers=4,
                           fetch_timeout_seconds=1.0, time_budget_seconds=3.0)
    screener = Screener(plugin_manager=get_plugin_manager(load_entry_points=False))
    with running_server(create_app(config, screener=screener, today=lambda: AS_OF)) as service, \
            ThreadPoolExecutor(SLOW_CALLS) as pool:
        started = time.monotonic()
        slow_calls: list[Future[requests.Response]] = [pool.submit(call, service, slow) for _ in range(SLOW_CALLS)]
        while hostile.in_flight < 2 and time.monotonic() - started < HANG:  # the slow fetches have begun
            time.sleep(0.02)
        answer = call(service, healthy)  # 6 calls x 8 fetches are waiting on the slow server meanwhile
        assert hostile.in_flight >= 1  # ... and still are: the healthy call did not wait for them to end
        slow_answers = [f.result() for f in slow_calls]
    assert answer.status_code == 200, answer.text
    [card] = answer.json()["cards"]
    assert "metformin" in card["detail"].lower()
    for response in slow_answers:  # each cut within the budget: required data that never came
        assert response.status_code == 412, response.text
        assert "prefetch key 'patient'" in response.text
    assert hostile.most_in_flight == 2  # half of the 4 fetch threads, never more
    assert time.monotonic() - started < HANG


def test_server_slots_bound_one_origin_and_give_up_at_the_deadline() -> None:
    release = threading.Event()
    slots = ServerSlots(1)
    with ThreadPoolExecutor(4) as pool:
        now = [0.0]
        one = FhirClient("http://127.0.0.1:1/a", deadline=0.0, clock=lambda: now[0])  # no time left at all
        other = FhirClient("http://127.0.0.1:2/b")
        held = slots.submit(pool, one, release.wait, HANG)
        refused = slots.submit(pool, one, lambda: "never run")
        with pytest.raises(FhirError, match="busy with other fetches until the deadline"):
            refused.result(timeout=HANG)
        assert slots.submit(pool, other, lambda: "another server").result(timeout=HANG) == "another server"
        release.set()
        held.result(timeout=HANG)
        now[0] = -5.0  # time again: the slot was freed when the first fetch ended
        assert slots.submit(pool, one, lambda: "ran").result(timeout=HANG) == "ran"
