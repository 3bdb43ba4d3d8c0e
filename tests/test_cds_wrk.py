"""``benchmarks/cds_wrk.py`` in a very short run: its Lua script, token hand-out and argument handling.

Skipped where ``wrk`` (Debian package ``wrk``) is not installed."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    import cds_wrk

    code = cds_wrk.main(["--workers", "1", "--connections", "4", "--duration", "1", "--warmup", "1", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_a_short_run_uses_every_token_once_over_two_wrk_threads(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "--threads", "2", "--tokens-per-second", "3000")
    phases = {(p["endpoint"], p["connections"]): p for p in out["phases"]}
    health, service = phases[("GET /health", 4)], phases[("patient-view", 4)]
    assert code == 0 and health["errors"] == 0 and service["errors"] == 0  # no jti was sent twice
    assert health["requests"] > 0 and service["requests"] > 0
    assert service["cpu_ms_per_call"] > health["cpu_ms_per_call"] > 0
    assert service["p50_ms"] <= service["p95_ms"] <= service["p99_ms"]
    assert sum(service["per_worker_connections"]) == 4 and len(service["per_worker_cpu"]) == 1
    assert out["ratios"]["cpu_pv_over_health_w1_c4"] == pytest.approx(
        service["cpu_ms_per_call"] / health["cpu_ms_per_call"])
    assert 0 < out["es384_verify_ms"] < service["cpu_ms_per_call"]  # the signature check is part of a call
    assert out["ratios"]["es384_verify_over_health"] == pytest.approx(
        out["es384_verify_ms"] / health["cpu_ms_per_call"])


@pytest.mark.slow
def test_requests_past_the_last_token_fail_instead_of_replaying_one(capsys: pytest.CaptureFixture[str]) -> None:
    # 20 tokens for a second of patient-view: run out whatever the machine's load (at 101 a loaded machine
    # running the suite in parallel sometimes served fewer requests than that)
    code, out = _run(capsys, "--tokens-per-second", "0", "--spare-tokens", "20")
    [service] = [p for p in out["phases"] if p["endpoint"] == "patient-view"]
    assert code == 1 and service["requests"] > 20
    succeeded = service["requests"] - service["errors"]
    assert 0 < succeeded <= 20  # never more successes than tokens: each was used once, the rest refused


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    import cds_wrk

    with pytest.raises(SystemExit) as exc:
        cds_wrk.main(["--connections", "0"])
    assert exc.value.code == 2 and "at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cds_wrk.main(["--connections", "5", "--threads", "2"])
    assert exc.value.code == 2 and "multiple of --threads" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
@pytest.mark.slow
def test_a_short_run_with_the_redis_store_reports_redis_cpu_beside_the_services(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Redis's CPU is counted in clock ticks (10 ms), too coarse to assert on in a one-second phase."""
    code, out = _run(capsys, "--replay-store", "redis")
    [service] = [p for p in out["phases"] if p["endpoint"] == "patient-view"]
    assert code == 0 and service["store"] == "redis" and service["errors"] == 0 and service["requests"] > 0
    assert service["store_cpu_ms_per_call"] >= 0 and service["cpu_ms_per_call"] > 0
    assert "cpu_pv_over_health_w1_c4_redis" in out["ratios"]
