"""CPU per CDS Hooks patient-view call under each validation policy (``evidence``, ``all``).

Calls the service in process (Starlette's test client, no network, no JWT) with the synthetic full
prefetch of ``cds_load.py`` and prints the process CPU per call for each policy and their ratio, from one
run. The test client's own CPU is included in both figures alike. Usage::

    python benchmarks/cds_cpu.py [--calls 400] [--patients 50]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cds_load import patient_prefetch


def cpu_per_call(policy: str, calls: int, patients: int) -> float:
    from starlette.testclient import TestClient

    from b12screen import Screener
    from b12screen.cdshooks.app import create_app
    from b12screen.cdshooks.config import ServiceConfig
    from b12screen.plugins import get_plugin_manager

    rng = random.Random(7)
    prefetches = [patient_prefetch(n, rng) for n in range(patients)]
    screener = Screener(plugin_manager=get_plugin_manager(load_entry_points=False))
    app = create_app(ServiceConfig(insecure_no_auth=True, validate=policy).checked(), screener=screener,
                     today=lambda: date(2026, 11, 24))
    with TestClient(app) as client:
        def call(i: int) -> None:
            prefetch = prefetches[i % patients]
            body = {"hook": "patient-view", "hookInstance": str(uuid.UUID(int=i)),
                    "context": {"userId": "Practitioner/u", "patientId": prefetch["patient"]["id"]},
                    "prefetch": prefetch}
            response = client.post("/cds-services/b12screen-patient-view", json=body)
            assert response.status_code == 200, response.text

        for i in range(patients):  # warm-up: model classes, caches
            call(i)
        start = time.process_time()
        for i in range(calls):
            call(i)
        return (time.process_time() - start) / calls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--patients", type=int, default=50)
    args = parser.parse_args(argv)
    figures = {policy: cpu_per_call(policy, args.calls, args.patients) for policy in ("all", "evidence")}
    for policy, seconds in figures.items():
        print(f"validate = {policy:8s}: {seconds * 1000:.2f} ms CPU per patient-view call")
    print(f"evidence / all: {figures['evidence'] / figures['all']:.2f}")


if __name__ == "__main__":
    main()
