"""Benchmark ``b12screen batch`` against raw orjson parsing on the same files.

Builds larger Bulk Data exports from ``../shared/data/synthea-bulk-10`` (or ``fixtures/batch/export``)
by copying its patients with rewritten ids, then prints, per size: orjson parse-only and msgspec
decode-only throughput, batch throughput with 1 and 2 workers, the ratios batch/parse, batch/decode and
2-workers/1-worker in wall-clock time and in CPU time (the batch's whole process tree: robust to other
jobs on the machine), the machine's own two-process scaling (two orjson parse-only passes at once
against one: the most 2 workers/1 can reach on it), and peak memory (PSS summed over the batch process
and its workers, report.parquet's writing included, sampled every 0.01 s in a run of its own, since
sampling costs CPU the timed runs need). Generated data lives in a temporary folder that is removed at
the end.

``--mode bundles`` writes the same patients as one Bundle per patient (``transaction`` Bundles with
``urn:uuid:`` fullUrls and references, as Synthea writes them) and the same resources again as NDJSON, and
prints, in CPU time of one run: batch(1) over the Bundles against an orjson parse-only pass over the same
files, against batch(1) over the NDJSON, and 2 workers/1 worker with the machine's own two-process scaling.
Usage::

    python benchmarks/batch_bench.py                 # 1,000 and 10,000 patients
    python benchmarks/batch_bench.py --sizes 100,1000 --budget 300
    python benchmarks/batch_bench.py --mode bundles --sizes 650
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT.parent / "shared" / "data" / "synthea-bulk-10", ROOT / "fixtures" / "batch" / "export"]
MARK = "~K~"
COPIES_PER_FILE = 100
RUNNER = """
import resource, sys
from datetime import date
from b12screen import Screener
from b12screen.batch import BatchOptions, run_batch
from b12screen.plugins import get_plugin_manager
def cpu():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime
screener = Screener(plugin_manager=get_plugin_manager(load_entry_points=False))
before = cpu()
result = run_batch([sys.argv[1]], sys.argv[2], screener,
                   BatchOptions(as_of=date(2026, 11, 24), workers=int(sys.argv[3]), overwrite=True, progress=False))
print(result.summary["seconds"], result.summary["patients"], result.summary["resources_read"], cpu() - before)
"""


# -- building the export ------------------------------------------------------------------------


def _mark(value: Any) -> Any:
    """Append the copy marker to every id and to the id part of every reference."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if isinstance(item, str) and (key == "id" or (key == "reference" and (
                    ("/" in item and "?" not in item) or item.startswith("urn:uuid:")))):
                out[key] = f"{item}-{MARK}"
            else:
                out[key] = _mark(item)
        return out
    if isinstance(value, list):
        return [_mark(v) for v in value]
    return value


def templates(source: Path) -> dict[str, list[bytes]]:
    """Per resource type, the source's lines with id markers, split at the markers."""
    out: dict[str, list[bytes]] = {}
    for file in sorted(source.glob("*.ndjson")):
        rtype = file.name.split(".")[0]
        if rtype == "log":
            continue
        lines = [orjson.dumps(_mark(orjson.loads(line))) for line in file.read_bytes().splitlines() if line.strip()]
        out.setdefault(rtype, []).append(b"\n".join(lines) + b"\n")
    return {t: b"".join(parts).split(MARK.encode()) for t, parts in out.items()}


def build(source: Path, target: Path, copies: int) -> int:
    """Write ``copies`` copies of the source export into ``target``; returns the bytes written."""
    target.mkdir(parents=True)
    total = 0
    for rtype, parts in templates(source).items():
        for first in range(0, copies, COPIES_PER_FILE):
            with open(target / f"{rtype}.{first // COPIES_PER_FILE:03d}.ndjson", "wb") as f:
                for k in range(first, min(copies, first + COPIES_PER_FILE)):
                    data = str(k).encode().join(parts)
                    f.write(data)
                    total += len(data)
    return total


def _urn(value: Any) -> Any:
    """References to ``Patient/x`` written ``urn:uuid:x``, as in Synthea's per-patient Bundles."""
    if isinstance(value, dict):
        return {k: f"urn:uuid:{v[8:]}" if k == "reference" and isinstance(v, str) and v.startswith("Patient/")
                else _urn(v) for k, v in value.items()}
    return [_urn(v) for v in value] if isinstance(value, list) else value


def bundle_templates(source: Path) -> list[list[bytes]]:
    """Per patient of the source, a transaction Bundle of all its resources, split at the id markers."""
    per_patient: dict[str, list[dict[str, Any]]] = {}
    for file in sorted(source.glob("*.ndjson")):
        if file.name.startswith("log."):
            continue
        for line in file.read_bytes().splitlines():
            if line.strip():
                resource = orjson.loads(line)
                holder = resource.get("subject") or resource.get("patient") or {}
                owner = resource["id"] if resource["resourceType"] == "Patient" else holder.get("reference", "")
                per_patient.setdefault(owner.rsplit("/", 1)[-1], []).append(resource)
    out = []
    for resources in per_patient.values():
        resources.sort(key=lambda r: r["resourceType"] != "Patient")
        entry = [{"fullUrl": f"urn:uuid:{r['id']}", "resource": _urn(r),
                  "request": {"method": "POST", "url": r["resourceType"]}} for r in resources]
        bundle = _mark({"resourceType": "Bundle", "type": "transaction", "entry": entry})
        out.append(orjson.dumps(bundle).split(MARK.encode()))
    return out


def build_bundles(templates: list[list[bytes]], bundles: Path, ndjson: Path, copies: int) -> tuple[int, int]:
    """``copies`` copies of every patient as one Bundle file each in ``bundles``, and the same resources as
    ``<Type>.NNN.ndjson`` in ``ndjson``; the bytes of each."""
    bundles.mkdir(parents=True)
    ndjson.mkdir(parents=True)
    sizes = [0, 0]
    for k in range(copies):
        lines: dict[str, list[bytes]] = {}
        for n, parts in enumerate(templates):
            data = str(k).encode().join(parts)
            (bundles / f"patient-{k:05d}-{n:02d}.json").write_bytes(data)
            sizes[0] += len(data)
            for entry in orjson.loads(data)["entry"]:
                lines.setdefault(entry["resource"]["resourceType"], []).append(orjson.dumps(entry["resource"]))
        for rtype, found in lines.items():
            with open(ndjson / f"{rtype}.{k // COPIES_PER_FILE:03d}.ndjson", "ab") as f:
                data = b"\n".join(found) + b"\n"
                f.write(data)
                sizes[1] += len(data)
    return sizes[0], sizes[1]


def bundle_mode(source: Path, sizes: list[int], rounds: int, work: Path) -> list[dict[str, float]]:
    """The Bundle door against orjson parse-only and against the NDJSON door, per size (CPU time)."""
    templates = bundle_templates(source)
    per_copy = len(templates)
    results = []
    for size in sizes:
        copies = max(1, round(size / per_copy))
        bundles, ndjson = work / f"bundles-{size}", work / f"ndjson-{size}"
        t0 = time.perf_counter()
        bundle_bytes, ndjson_bytes = build_bundles(templates, bundles, ndjson, copies)
        print(f"\n{copies * per_copy:,} patients: built {copies * per_copy:,} Bundles ({bundle_bytes / 1e6:,.0f} MB) "
              f"and the same resources as NDJSON ({ndjson_bytes / 1e6:,.0f} MB) in {time.perf_counter() - t0:.1f} s")
        measured = [(parse_only(bundles), run_batch(bundles, work / "out", 1), run_batch(bundles, work / "out", 2),
                     run_batch(ndjson, work / "out", 1), parallel_parse(bundles)) for _ in range(rounds)]
        parse = min((r[0] for r in measured), key=lambda r: r[1])
        one = min((r[1] for r in measured), key=lambda r: r["cpu"])
        two = min((r[2] for r in measured), key=lambda r: r["seconds"])
        nd = min((r[3] for r in measured), key=lambda r: r["cpu"])
        row = {"patients": one["patients"], "resources": parse[2], "bundle_mb": bundle_bytes / 1e6,
               "parse_cpu": parse[1], "batch1_cpu": one["cpu"], "batch2_cpu": two["cpu"], "ndjson1_cpu": nd["cpu"],
               "cpu_batch_over_parse": one["cpu"] / parse[1], "cpu_bundles_over_ndjson": one["cpu"] / nd["cpu"],
               "two_over_one": one["seconds"] / two["seconds"],
               "machine_two_over_one": max(2 * r[0][0] / r[4] for r in measured)}
        assert nd["patients"] == one["patients"], (nd, one)
        results.append(row)
        print(f"  orjson parse-only of the Bundle files: CPU {parse[1]:.2f} s ({parse[2]:,} resources)")
        print(f"  batch, 1 worker, Bundles:  CPU {one['cpu']:.2f} s ({one['seconds']:.2f} s wall); "
              f"2 workers: {two['seconds']:.2f} s wall")
        print(f"  batch, 1 worker, the same resources as NDJSON: CPU {nd['cpu']:.2f} s")
        print(f"  CPU ratios: batch(1) on Bundles / orjson parse-only = {row['cpu_batch_over_parse']:.2f} "
              f"(target <= 1.2); batch(1) Bundles / batch(1) NDJSON = {row['cpu_bundles_over_ndjson']:.2f} "
              f"(target <= 1.5)")
        print(f"  wall: 2 workers/1 worker on Bundles = {row['two_over_one']:.2f}; the machine: two orjson "
              f"parse-only processes at once do {row['machine_two_over_one']:.2f}x the work of one")
        shutil.rmtree(bundles)
        shutil.rmtree(ndjson)
    return results


def patients_in(source: Path) -> int:
    return sum(1 for line in (source / "Patient.000.ndjson").read_bytes().splitlines() if line.strip())


# -- measuring ----------------------------------------------------------------------------------


def parse_only(folder: Path) -> tuple[float, float, int, int]:
    """Wall seconds, CPU seconds, resources (lines, or Bundle entries) and bytes of parsing every NDJSON line
    and every ``.json`` document with orjson (one process)."""
    loads = orjson.loads
    count = nbytes = 0
    started, cpu = time.perf_counter(), time.process_time()
    for file in sorted(folder.glob("*.ndjson")):
        nbytes += file.stat().st_size
        with open(file, "rb") as f:
            for line in f:
                loads(line)
                count += 1
    for file in sorted(folder.glob("*.json")):
        nbytes += file.stat().st_size
        with open(file, "rb") as f:
            count += len(loads(f.read()).get("entry") or ())
    return time.perf_counter() - started, time.process_time() - cpu, count, nbytes


def decode_only(folder: Path) -> tuple[float, float]:
    """Wall and CPU seconds of decoding every line with msgspec into Python objects (one process)."""
    import msgspec

    decode = msgspec.json.Decoder().decode
    started, cpu = time.perf_counter(), time.process_time()
    for file in sorted(folder.glob("*.ndjson")):
        with open(file, "rb") as f:
            for line in f:
                decode(line)
    return time.perf_counter() - started, time.process_time() - cpu


def _parse_in_child(folder: str) -> float:
    return parse_only(Path(folder))[0]


def parallel_parse(folder: Path) -> float:
    """Wall seconds of two orjson parse-only passes at once, in two processes: with one pass's time, the
    machine's own two-process scaling (two cores may share caches, memory bandwidth or a physical core)."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(2) as pool:
        started = time.perf_counter()
        pool.map(_parse_in_child, [str(folder)] * 2, chunksize=1)
        return time.perf_counter() - started


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _tree(pid: int) -> list[int]:
    pids = [pid]
    for p in pids:
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        pids.extend(int(c) for c in children)
    return pids


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_batch(folder: Path, out: Path, workers: int, sample_memory: bool = False) -> dict[str, float]:
    """Run the batch in a subprocess; with ``sample_memory``, sample the memory (PSS) of it and its workers
    (reading ``smaps`` costs CPU that two workers on two cores need, so timed runs do not sample).
    ``process_cpu`` is the CPU time of the whole process tree (the interpreter's start-up included)."""
    cpu_before = _children_cpu()
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(folder), str(out), str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = [0]  # PSS of the whole tree: the batch process and its workers

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], sum(_pss_kb(p) for p in _tree(proc.pid)))
            time.sleep(0.01)  # often enough to see the short writing of report.parquet at the end

    sampler = threading.Thread(target=sample, daemon=True)
    if sample_memory:
        sampler.start()
    stdout, _ = proc.communicate()
    if sample_memory:
        sampler.join()
    cpu = _children_cpu() - cpu_before
    if proc.returncode not in (0, 1):
        raise SystemExit(f"batch failed with exit code {proc.returncode}")
    seconds, patients, resources, batch_cpu = stdout.split()
    return {"seconds": float(seconds), "patients": int(patients), "resources": int(resources),
            "cpu": float(batch_cpu), "process_cpu": cpu, "peak_mb": peak[0] / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000", help="patient counts (comma-separated)")
    parser.add_argument("--source", type=Path, default=None, help="a Bulk Data export folder to copy")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per size (best of each)")
    parser.add_argument("--budget", type=float, default=900, help="stop starting new sizes after this many seconds")
    parser.add_argument("--tmp", type=Path, default=None, help="where to build the exports (default: system temp)")
    parser.add_argument("--mode", choices=("ndjson", "bundles"), default="ndjson",
                        help="ndjson: a Bulk Data export; bundles: one Bundle per patient against the same as NDJSON")
    args = parser.parse_args()
    source = args.source or next((s for s in SOURCES if s.is_dir()), None)
    if source is None:
        raise SystemExit("no source export found")
    per_copy = patients_in(source)
    began = time.perf_counter()
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}; "
          f"source: {source.name} ({per_copy} patients per copy)")
    results = []
    work = Path(tempfile.mkdtemp(prefix="b12bench-", dir=args.tmp))
    if args.mode == "bundles":
        try:
            print("\n" + json.dumps(bundle_mode(source, [int(s) for s in args.sizes.split(",")], args.rounds, work),
                                    indent=1))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            if time.perf_counter() - began > args.budget:
                print(f"budget of {args.budget:.0f} s spent: skipping {size} patients")
                continue
            copies = max(1, round(size / per_copy))
            folder = work / f"export-{size}"
            t0 = time.perf_counter()
            nbytes = build(source, folder, copies)
            print(f"\n{copies * per_copy:,} patients: built {nbytes / 1e6:,.0f} MB in {time.perf_counter() - t0:.1f} s")
            # best of ``--rounds`` runs each, the four measurements interleaved round by round: other jobs
            # (and a virtual machine's varying speed) only ever slow a run down, and drift hits all alike
            rounds = [(parse_only(folder), decode_only(folder), run_batch(folder, work / "out", 1),
                       run_batch(folder, work / "out", 2), parallel_parse(folder)) for _ in range(args.rounds)]
            parse = min((r[0] for r in rounds), key=lambda r: r[1])
            parse_s, parse_cpu, count = parse[0], parse[1], parse[2]
            decode_s, decode_cpu = min((r[1] for r in rounds), key=lambda r: r[1])
            one = min((r[2] for r in rounds), key=lambda r: r["cpu"])
            two = min((r[3] for r in rounds), key=lambda r: r["seconds"])
            # the machine's ceiling for 2 workers/1: two parse-only passes at once against one, per round
            ceiling = max(2 * r[0][0] / r[4] for r in rounds)
            for timed, workers in ((one, 1), (two, 2)):  # memory from a run of its own
                sampled = run_batch(folder, work / "out", workers, sample_memory=True)
                timed.update(peak_mb=sampled["peak_mb"])
            mb = nbytes / 1e6
            row = {
                "patients": one["patients"], "resources": count, "mb": mb,
                "parse_mb_s": mb / parse_s, "batch1_mb_s": mb / one["seconds"], "batch2_mb_s": mb / two["seconds"],
                "parse_cpu_mb_s": mb / parse_cpu, "decode_cpu_mb_s": mb / decode_cpu,
                "batch1_cpu_mb_s": mb / one["cpu"], "batch1_cpu": one["cpu"], "batch2_cpu": two["cpu"],
                "batch1_process_cpu": one["process_cpu"], "peak1_mb": one["peak_mb"], "peak2_mb": two["peak_mb"],
            }
            row["batch_over_parse"] = row["batch1_mb_s"] / row["parse_mb_s"]
            row["batch_over_decode"] = one["seconds"] / decode_s
            row["cpu_batch_over_parse"] = parse_cpu / one["cpu"]
            row["cpu_batch_over_decode"] = one["cpu"] / decode_cpu
            row["two_over_one"] = row["batch2_mb_s"] / row["batch1_mb_s"]
            row["machine_two_over_one"] = ceiling
            results.append(row)
            print(f"  parse-only (orjson, 1 process): {row['parse_mb_s']:7.1f} MB/s  "
                  f"{count / parse_s:>10,.0f} resources/s  ({row['parse_cpu_mb_s']:.1f} MB per CPU second)")
            print(f"  decode-only (msgspec, 1 process): {mb / decode_s:5.1f} MB/s  "
                  f"({row['decode_cpu_mb_s']:.1f} MB per CPU second)")
            print(f"  batch, 1 worker:                {row['batch1_mb_s']:7.1f} MB/s  "
                  f"{count / one['seconds']:>10,.0f} resources/s  peak {one['peak_mb']:.0f} MB  "
                  f"CPU {one['cpu']:.2f} s ({one['process_cpu']:.2f} s with interpreter start-up)")
            print(f"  batch, 2 workers:               {row['batch2_mb_s']:7.1f} MB/s  "
                  f"{count / two['seconds']:>10,.0f} resources/s  peak {two['peak_mb']:.0f} MB  "
                  f"CPU {two['cpu']:.2f} s")
            print(f"  wall ratios: batch(1) throughput / orjson parse-only = {row['batch_over_parse']:.2f} "
                  f"(target >= 1.0), batch(1) time / msgspec decode-only = {row['batch_over_decode']:.2f} "
                  f"(target <= 1.8), 2 workers/1 worker = {row['two_over_one']:.2f} (target >= 1.9)")
            print(f"  the machine: two orjson parse-only processes at once do {ceiling:.2f}x the work of one "
                  f"(the most 2 workers/1 can reach here; best of the rounds)")
            print(f"  CPU ratios:  batch(1) / orjson parse-only = {row['cpu_batch_over_parse']:.2f} (target >= 1.0), "
                  f"batch(1) / msgspec decode-only = {row['cpu_batch_over_decode']:.2f} (target <= 1.8)")
            shutil.rmtree(folder)
        if len(results) > 1:
            a, b = results[0], results[-1]
            print(f"\npeak memory, 2 workers: {a['peak2_mb']:.0f} MB at {a['patients']:,} patients, "
                  f"{b['peak2_mb']:.0f} MB at {b['patients']:,} (target: flat, < 300 MB)")
        print("\n" + json.dumps(results, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
