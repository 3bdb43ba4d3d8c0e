"""Figures of one ``batch --fhir-server`` run: a Bulk Data export served on loopback, then screened.

Serves ``../shared/data/synthea-bulk-10`` (or ``fixtures/batch/export``), optionally copied N times with
rewritten ids, through the loopback Bulk Data server of the tests, and prints patients, bytes and the
seconds of each phase (kick-off and polling, download, screening). Usage::

    python benchmarks/export_bench.py              # the export as it is
    python benchmarks/export_bench.py --copies 50  # 50 copies of each patient
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
SOURCES = [ROOT.parent / "shared" / "data" / "synthea-bulk-10", ROOT / "fixtures" / "batch" / "export"]


def _copy(data: bytes, k: int) -> bytes:
    """The resources of ``data`` with ids and patient references prefixed by copy ``k``."""
    for old in (b'"id":"', b"Patient/", b"urn:uuid:"):
        data = data.replace(old, old + f"c{k}-".encode())
    return data


def main() -> None:
    from bulkserver import TOKEN, BulkServer, Scenario

    from b12screen import Screener
    from b12screen.batch import BatchOptions, run_batch
    from b12screen.cli.export import export_types
    from b12screen.plugins import get_plugin_manager
    from b12screen.sources.bulkexport import BulkExporter, ExportRequest
    from b12screen.sources.fhirclient import BearerToken, FhirClient

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=1, help="copies of each patient (ids rewritten)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--source", type=Path, help="an export folder (default: the Synthea export, else fixtures)")
    args = parser.parse_args()
    source = args.source or next(s for s in SOURCES if s.is_dir())
    scenario = Scenario(requires_token=True, polls_before_ready=1, inject_429=False, inject_500=False,
                        error_file=False, redirect=None)
    with tempfile.TemporaryDirectory() as tmp, BulkServer(scenario, folder=source) as server:
        if args.copies > 1:
            server.files = {name: b"".join(_copy(data, k) for k in range(args.copies))
                            for name, data in server.files.items()}
        out = Path(tmp)
        client = FhirClient(server.base, auth=BearerToken(TOKEN))
        started = time.perf_counter()
        result = BulkExporter(client, out / "export").run(ExportRequest(export_types()))
        exported = time.perf_counter()
        screener = Screener(plugin_manager=get_plugin_manager(load_entry_points=False))
        batch = run_batch([str(out / "export")], out, screener,
                          BatchOptions(as_of=date(2026, 11, 24), workers=args.workers, progress=False))
        screened = time.perf_counter()
    print(f"machine: {platform.machine()}, Python {platform.python_version()}, source {source.name}, "
          f"copies {args.copies}")
    print(f"patients: {batch.summary['patients']:,}  resources: {batch.summary['resources_read']:,}  "
          f"files: {len(result.files)}  bytes: {result.bytes:,}")
    print(f"kick-off + polling: {result.seconds_waiting:.2f} s  download: {result.seconds_downloading:.2f} s  "
          f"screening: {screened - exported:.2f} s  total: {screened - started:.2f} s")
    print(f"download MiB/s: {result.bytes / (1 << 20) / max(result.seconds_downloading, 1e-9):.1f}")


if __name__ == "__main__":
    main()
