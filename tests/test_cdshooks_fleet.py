"""A fleet of workers: one replay guard in a real ``redis-server`` on loopback, one set of metrics.

``serve --workers 2`` runs for real (each worker on its own SO_REUSEPORT socket); every request goes on a
new connection, which the kernel hashes onto a worker by its source port.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from pathlib import Path

import pytest
import requests
from cdshooks_helpers import ISS, MockEhr, free_port, metformin_patient, request_body, running_server
from redis_helpers import needs_redis, redis_server
from test_cdshooks_workers import two_workers

from b12screen.cdshooks.app import create_app
from b12screen.cdshooks.config import ServiceConfig
from b12screen.cdshooks.replay import KEY_PREFIX, RedisReplayStore, StoreUnavailable
from b12screen.cdshooks.workers import shared_metrics_dir

PV = "/cds-services/b12screen-patient-view"


def _config_file(tmp_path: Path, ehr: MockEhr, port: int, redis_port: int) -> Path:
    path = tmp_path / "serve.json"
    path.write_text(json.dumps({"public_base_url": f"http://127.0.0.1:{port}",
                                "issuers": [{"iss": ISS, "jwks": ehr.jwks()}],
                                "replay_store": f"redis://127.0.0.1:{redis_port}/0"}))
    return path


def _call(base: str, token: str) -> requests.Response:
    """One patient-view call on a connection of its own."""
    return requests.post(base + PV, json=request_body(prefetch=metformin_patient()), timeout=30,
                         headers={"Authorization": f"Bearer {token}", "Connection": "close"})


@needs_redis
def test_the_redis_store_records_a_jti_once_for_the_tokens_remaining_lifetime() -> None:
    with redis_server() as port:
        store = RedisReplayStore(f"redis://127.0.0.1:{port}/0", clock=lambda: 1_000.0)
        assert store.reachable()
        assert store.check_and_store(ISS, "jti-1", 1_300.0) is True
        assert store.check_and_store(ISS, "jti-1", 1_300.0) is False  # a replay
        assert store.check_and_store("https://other.example.org", "jti-1", 1_300.0) is True  # another issuer's
        [key] = [k for k in store._client.keys(KEY_PREFIX + "*") if k == store.key(ISS, "jti-1").encode()]
        assert b"jti-1" not in key and b"ehr" not in key
        assert 299_000 < store._client.pttl(key) <= 300_000  # expires with the token, not before or long after


@needs_redis
@pytest.mark.slow
def test_two_workers_sharing_redis_answer_one_token_sent_20_times_exactly_once(tmp_path: Path) -> None:
    """With the memory store each worker accepted the token once; with Redis the fleet accepts it once."""
    ehr = MockEhr()
    port = free_port()
    with redis_server() as redis_port, two_workers("--config", str(_config_file(tmp_path, ehr, port, redis_port)),
                                                   port=port):
        base = f"http://127.0.0.1:{port}"
        assert requests.get(base + "/ready", timeout=30).status_code == 200
        token = ehr.token(base + PV)
        statuses = [_call(base, token).status_code for _ in range(20)]
        assert sorted(statuses) == [200] + [401] * 19, statuses


@needs_redis
@pytest.mark.slow
def test_redis_stopped_mid_run_refuses_calls_with_503_and_unready_then_recovers(
        caplog: pytest.LogCaptureFixture) -> None:
    ehr = MockEhr()
    redis_port = free_port()
    config = ServiceConfig(issuers=(ehr.issuer(),), public_base_url="http://127.0.0.1:1",
                           replay_store=f"redis://127.0.0.1:{redis_port}/0")
    aud = "http://127.0.0.1:1" + PV
    with running_server(create_app(config)) as base:
        with redis_server(redis_port):
            assert _call(base, ehr.token(aud)).status_code == 200
            _stop(redis_port)
            with caplog.at_level(logging.ERROR, logger="b12screen.cdshooks"):
                refused = _call(base, ehr.token(aud))
            assert refused.status_code == 503, refused.text
            issue = refused.json()["issue"][0]
            assert issue["code"] == "transient" and "replay guard is unavailable" in issue["diagnostics"]
            assert any("503 on b12screen-patient-view: the replay store is unreachable (ConnectionError)"
                       in r.getMessage() for r in caplog.records)
            ready = requests.get(base + "/ready", timeout=30)
            assert ready.status_code == 503 and "replay store is unreachable" in ready.text
        with redis_server(redis_port):  # back on the same port: calls are answered again within a second
            deadline = time.monotonic() + 10
            while (status := _call(base, ehr.token(aud)).status_code) != 200:
                assert status == 503 and time.monotonic() < deadline, status
                time.sleep(0.2)
            assert requests.get(base + "/ready", timeout=30).status_code == 200


def _stop(port: int) -> None:
    """Stop the redis-server on ``port`` at once (SHUTDOWN NOSAVE; it closes the connection as it exits)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"SHUTDOWN NOSAVE\r\n")
        sock.recv(64)


def test_an_unreachable_store_fails_closed_at_once_after_the_first_timeout() -> None:
    store = RedisReplayStore(f"redis://127.0.0.1:{free_port()}/0", clock=lambda: 5.0)
    with pytest.raises(StoreUnavailable, match=r"unreachable \(ConnectionError\)"):
        store.check_and_store(ISS, "j", 100.0)
    with pytest.raises(StoreUnavailable, match="moments ago"):  # no second wait while it is known down
        store.check_and_store(ISS, "j", 100.0)
    assert not store.reachable()


_TOTAL = re.compile(r'^b12screen_cds_requests_total\{service="discovery",status="200"\} (\S+)$', re.M)
_MEMORY = re.compile(r'^b12screen_process_resident_memory_bytes\{pid="(\d+)"\} (\S+)$', re.M)


@pytest.mark.slow
def test_every_worker_answers_a_scrape_with_the_same_totals() -> None:
    with two_workers() as (port, _process):
        base = f"http://127.0.0.1:{port}"
        for _ in range(6):
            assert requests.get(base + "/cds-services", headers={"Connection": "close"}, timeout=30).ok
        scrapes = [requests.get(base + "/metrics", headers={"Connection": "close"}, timeout=30).text
                   for _ in range(12)]
        assert {tuple(_TOTAL.findall(s)) for s in scrapes} == {("6.0",)}
        deadline = time.monotonic() + 20  # each worker samples its memory at start, then every 5 s
        while len(set(_MEMORY.findall(scrapes[-1]))) < 2:
            assert time.monotonic() < deadline, scrapes[-1]
            time.sleep(0.5)
            scrapes.append(requests.get(base + "/metrics", headers={"Connection": "close"}, timeout=30).text)
        assert all(float(v) > 1e6 for _, v in _MEMORY.findall(scrapes[-1]))  # per worker: one series a pid


def test_the_shared_metrics_directory_is_emptied_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = tmp_path / "counter_4242.db"
    stale.write_bytes(b"counts of an earlier run")
    keep = tmp_path / "notes.txt"
    keep.write_text("not a metrics file")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with shared_metrics_dir() as path:
        assert path == tmp_path and not stale.exists() and keep.exists()
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    with shared_metrics_dir() as fresh:
        assert fresh.is_dir() and fresh != tmp_path
    assert not fresh.exists()  # a directory of its own is removed at exit
