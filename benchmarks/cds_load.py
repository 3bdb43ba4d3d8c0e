"""Load test for the CDS Hooks service: N concurrent keep-alive clients post ``patient-view`` requests with
full prefetch for a bounded time, then the same for ``GET /health`` (the baseline: a trivial endpoint of
the same server). Prints p50/p95/p99 latency, requests per second and errors for both, and the ratio.

    .venv/bin/python benchmarks/cds_load.py                       # starts `b12screen serve` on loopback
    .venv/bin/python benchmarks/cds_load.py --clients 50 --duration 10 --workers 2
    .venv/bin/python benchmarks/cds_load.py --url http://127.0.0.1:8080 --no-auth   # a running server

By default the service runs with JWT verification on: the script generates an ES384 key, trusts it in a
temporary config file, and signs a fresh JWT (unique ``jti``, ``aud`` = the endpoint) for every request,
so the figures include verification. The client is a minimal asyncio HTTP/1.1 client, so that the load
generator costs little CPU next to the server (both share the machine). ``cds_wrk.py`` is the load test
of record (wrk, server CPU per call); this one serves where wrk is not installed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

ISS = "https://bench-ehr.example.org"
KID = "bench-1"
PATH = "/cds-services/b12screen-patient-view"
RX = "http://www.nlm.nih.gov/research/umls/rxnorm"
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"


# -- synthetic patients with full prefetch ----------------------------------------------------------


def _bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": len(resources)}
    if resources:
        bundle["entry"] = [{"fullUrl": f"https://ehr.example.org/fhir/{r['resourceType']}/{r['id']}",
                            "resource": r, "search": {"mode": "match"}} for r in resources]
    return bundle


def patient_prefetch(n: int, rng: random.Random) -> dict[str, Any]:
    """A plausible record: ~25-40 resources over every prefetch key, about half of them at risk."""
    pid = f"bench-{n}"
    subject = {"reference": f"Patient/{pid}"}
    year = rng.randint(1940, 1990)
    drugs = [("861007", "metformin hydrochloride 500 MG Oral Tablet"), ("7646", "omeprazole"),
             ("29046", "lisinopril"), ("83367", "atorvastatin"), ("17767", "amlodipine"), ("4278", "famotidine")]
    requests_ = []
    for i in range(rng.randint(4, 10)):
        code, display = rng.choice(drugs)
        requests_.append({
            "resourceType": "MedicationRequest", "id": f"{pid}-mr{i}", "status": rng.choice(["active", "completed"]),
            "intent": "order", "subject": subject, "authoredOn": f"{rng.randint(2015, 2026)}-0{rng.randint(1, 9)}-15",
            "medicationCodeableConcept": {"coding": [{"system": RX, "code": code, "display": display}]},
            "dosageInstruction": [{"timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
                                   "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}]}],
        })
    statin = {"coding": [{"system": RX, "code": "83367", "display": "atorvastatin"}]}
    statements = [{"resourceType": "MedicationStatement", "id": f"{pid}-ms0", "status": "active", "subject": subject,
                   "medicationCodeableConcept": statin, "effectivePeriod": {"start": "2020-01-01"}}]
    conditions = [{"resourceType": "Condition", "id": f"{pid}-c{i}", "subject": subject,
                   "clinicalStatus": {"coding": [{"code": "active"}]}, "onsetDateTime": "2018-05-01",
                   "code": {"coding": [{"system": SCT, "code": code, "display": display}]}}
                  for i, (code, display) in enumerate(rng.sample(
                      [("44054006", "Diabetes mellitus type 2"), ("38341003", "Hypertension"),
                       ("396331005", "Coeliac disease"), ("34000006", "Crohn's disease"),
                       ("235595009", "Gastroesophageal reflux disease")], k=rng.randint(1, 4)))]
    labs = [{"resourceType": "Observation", "id": f"{pid}-o{i}", "status": "final", "subject": subject,
             "code": {"coding": [{"system": LOINC, "code": "718-7", "display": "Hemoglobin"}]},
             "effectiveDateTime": f"202{i % 7}-03-01", "valueQuantity": {"value": 13.5, "unit": "g/dL"}}
            for i in range(rng.randint(3, 10))]
    b12 = [] if rng.random() < 0.7 else [{
        "resourceType": "Observation", "id": f"{pid}-b12", "status": "final", "subject": subject,
        "code": {"coding": [{"system": LOINC, "code": "2132-9"}]}, "effectiveDateTime": "2022-06-01",
        "valueQuantity": {"value": rng.choice([150, 250, 420]), "unit": "ng/L", "code": "ng/L"}}]
    return {
        "patient": {"resourceType": "Patient", "id": pid, "birthDate": f"{year}-04-0{rng.randint(1, 9)}",
                    "gender": rng.choice(["male", "female"])},
        "medicationRequests": _bundle(requests_),
        "medicationStatements": _bundle(statements),
        "medicationDispenses": _bundle([]),
        "medicationAdministrations": _bundle([]),
        "conditions": _bundle(conditions),
        "procedures": _bundle([]),
        "b12Labs": _bundle(b12),
        "otherLabs": _bundle(labs),
        "otherObservations": _bundle([]),
    }


def request_bodies(count: int, seed: int = 7) -> list[tuple[bytes, bytes]]:
    """(prefix, suffix) around a per-request hookInstance, one pair per synthetic patient."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        prefetch = patient_prefetch(n, rng)
        body = {"hook": "patient-view", "hookInstance": "@@HOOK@@", "fhirServer": "https://ehr.example.org/fhir",
                "context": {"userId": "Practitioner/bench", "patientId": prefetch["patient"]["id"]},
                "prefetch": prefetch}
        prefix, suffix = json.dumps(body, separators=(",", ":")).encode().split(b"@@HOOK@@")
        out.append((prefix, suffix))
    return out


# -- a minimal keep-alive HTTP/1.1 client ---------------------------------------------------------------


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return status, body


async def _client(host: str, port: int, make_request: Any, stop_at: float, stats: Stats) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at:
            request = make_request()
            started = time.perf_counter()
            try:
                writer.write(request)
                status, _ = await asyncio.wait_for(_read_response(reader), timeout=30)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                stats.errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            stats.latencies.append(time.perf_counter() - started)
            stats.statuses[status] = stats.statuses.get(status, 0) + 1
            if status != 200:
                stats.errors += 1
    finally:
        writer.close()


async def run_phase(base: str, clients: int, duration: float, make_request: Any) -> tuple[Stats, float]:
    parts = urlsplit(base)
    stats = Stats()
    started = time.perf_counter()
    stop_at = started + duration
    await asyncio.gather(*(_client(parts.hostname or "127.0.0.1", parts.port or 80, make_request, stop_at, stats)
                           for _ in range(clients)))
    return stats, time.perf_counter() - started


def summarize(name: str, stats: Stats, elapsed: float) -> dict[str, Any]:
    lat = sorted(stats.latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    return {"phase": name, "requests": len(lat), "rps": len(lat) / elapsed if elapsed else 0.0,
            "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99),
            "mean_ms": statistics.fmean(lat) * 1000 if lat else float("nan"), "errors": stats.errors,
            "statuses": stats.statuses}


# -- the server under test --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_server(process: subprocess.Popen[Any], timeout: float = 20) -> None:
    """Stop ``b12screen serve`` as Ctrl-C does (its workers with it); kill it if it does not stop in time."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()


def start_server(port: int, auth: bool, workers: int, key: ec.EllipticCurvePrivateKey, folder: Path,
                 validate: str = "evidence", log_level: str = "info",
                 replay_store: str = "memory") -> subprocess.Popen[bytes]:
    """``b12screen serve`` on loopback, as deployed by default (access log at info, to a file in
    ``folder``), once it accepts connections."""
    config: dict[str, Any] = {"host": "127.0.0.1", "port": port, "workers": workers, "log_level": log_level,
                              "public_base_url": f"http://127.0.0.1:{port}", "validate": validate,
                              "replay_store": replay_store}
    if auth:
        jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
        jwk.update(kid=KID, use="sig", alg="ES384")
        config["issuers"] = [{"iss": ISS, "jwks": {"keys": [jwk]}}]
    else:
        config["insecure_no_auth"] = True
    path = folder / "service.json"
    path.write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("B12SCREEN_CDS_")}
    log = folder / f"server-{port}.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "b12screen", "serve", "--config", str(path)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(log.read_text(errors="replace")[-2000:] or "server exited") from None
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the server did not start within 60 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="Base URL of a running service (default: start one on loopback).")
    parser.add_argument("--clients", type=int, default=50, help="Concurrent clients (default 50).")
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds per phase (default 10).")
    parser.add_argument("--warmup", type=float, default=2.0, help="Warm-up seconds before measuring (default 2).")
    parser.add_argument("--patients", type=int, default=50, help="Distinct synthetic patients (default 50).")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers when starting the server.")
    parser.add_argument("--no-auth", action="store_true", help="Run the service without JWT verification.")
    parser.add_argument("--validate", choices=("evidence", "all"), default="evidence",
                        help="The service's validation policy (default evidence).")
    parser.add_argument("--json", action="store_true", help="Print the figures as one JSON object.")
    args = parser.parse_args(argv)

    key = ec.generate_private_key(ec.SECP384R1())
    auth = not args.no_auth
    if args.url and auth:
        parser.error("--url needs --no-auth (the running server does not trust this script's key)")
    bodies = request_bodies(args.patients)
    with tempfile.TemporaryDirectory() as folder:
        process = None
        base = args.url
        if base is None:
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            process = start_server(port, auth, args.workers, key, Path(folder), args.validate)
        host = urlsplit(base).netloc
        counter = iter(range(10**12))

        def service_request() -> bytes:
            n = next(counter)
            prefix, suffix = bodies[n % len(bodies)]
            body = prefix + uuid.uuid4().hex.encode() + suffix
            headers = [f"POST {PATH} HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
                       f"Content-Length: {len(body)}"]
            if auth:
                now = int(time.time())
                token = jwt.encode({"iss": ISS, "aud": base + PATH, "iat": now, "exp": now + 300,
                                    "jti": uuid.uuid4().hex}, key, algorithm="ES384",
                                   headers={"kid": KID, "typ": "JWT"})
                headers.append(f"Authorization: Bearer {token}")
            return ("\r\n".join(headers) + "\r\n\r\n").encode() + body

        health = f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        try:
            asyncio.run(run_phase(base, args.clients, args.warmup, service_request))
            results = []
            stats, elapsed = asyncio.run(run_phase(base, args.clients, args.duration, lambda: health))
            results.append(summarize("baseline GET /health", stats, elapsed))
            stats, elapsed = asyncio.run(run_phase(base, args.clients, args.duration, service_request))
            results.append(summarize("patient-view (full prefetch)", stats, elapsed))
        finally:
            if process is not None:
                stop_server(process)
    baseline, service = results
    ratio = service["rps"] / baseline["rps"] if baseline["rps"] else 0.0
    verdict = {"p95_under_50ms": service["p95_ms"] < 50, "rps_ratio": round(ratio, 3),
               "rps_ratio_at_least_0.5": ratio >= 0.5,
               "zero_errors": service["errors"] == 0 and baseline["errors"] == 0}
    if args.json:
        print(json.dumps({"clients": args.clients, "duration_s": args.duration, "auth": auth, "workers": args.workers,
                          "cpus": os.cpu_count(), "phases": results, "verdict": verdict}))
    else:
        print(f"{args.clients} clients, {args.duration:g} s per phase, JWT verification {'on' if auth else 'off'}, "
              f"validation policy {args.validate}, {args.workers} worker(s), "
              f"{os.cpu_count()} CPU(s)")
        print(f"{'phase':<30} {'requests':>9} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for row in results:
            print(f"{row['phase']:<30} {row['requests']:>9} {row['rps']:>9.1f} {row['p50_ms']:>8.1f} "
                  f"{row['p95_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['errors']:>7}")
        print(f"patient-view / baseline requests per second: {ratio:.2f}; p95 < 50 ms: {verdict['p95_under_50ms']}; "
              f"errors: {service['errors'] + baseline['errors']}")
    return 0 if service["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
