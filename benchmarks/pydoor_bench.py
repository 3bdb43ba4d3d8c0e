"""Peak memory and time of ``screen_paths`` and ``b12screen explain FOLDER --patient ID`` on a large folder
of per-patient Bundles (``benchmarks/bundle_corpus.py``: the shared Synthea patients copied under new ids).

Each run is a process of its own. Printed per run: seconds, the peak RSS of the calling process and of its
largest worker (``ru_maxrss``, exact), and the peak PSS of the whole process tree (sampled every 0.05 s).
``--reader`` adds the in-memory reader ``screen_paths`` used before (``read_inputs`` and grouping in one
process), for comparison: it needs about twice the corpus in memory. Usage::

    python benchmarks/pydoor_bench.py                 # about 700 MB, 2 workers
    python benchmarks/pydoor_bench.py --mb 100 --workers 1 --reader
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from batch_bench import _pss_kb, _tree
from bundle_corpus import copy_id, patient_bundles, source, write_corpus

AS_OF = "2026-11-24"
#: Runs a command and prints its exit code, its peak RSS and its children's largest (KiB).
MEASURE = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""
DOOR = """
import resource, sys, time
from datetime import date
from b12screen import screen_paths
started = time.perf_counter()
results = screen_paths(sys.argv[1], date.fromisoformat(sys.argv[2]), workers=int(sys.argv[3]), progress=False)
flagged = sum(r.flagged for r in results)
rows = results.to_rows()
print(time.perf_counter() - started, len(results), flagged, len(results.errors),
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""
READER = """
import resource, sys, time
from datetime import date
from b12screen import Screener
from b12screen.screening import group, screen_grouped
from b12screen.sources import read_inputs
started = time.perf_counter()
screener = Screener()
inputs = read_inputs([sys.argv[1]])
grouped = group(screener, inputs.items, "evidence", inputs.deleted)
results = screen_grouped(screener, grouped, date.fromisoformat(sys.argv[2]))
print(time.perf_counter() - started, len(results), sum(r.flagged for r in results), len(results.errors),
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, 0)
"""


def sampled(command: list[str]) -> tuple[subprocess.CompletedProcess[str], int, float]:
    """Run ``command``; its result, the peak PSS of its process tree (KiB) and its seconds."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], sum(_pss_kb(p) for p in _tree(proc.pid)))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    sampler.join()
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr), peak[0], time.perf_counter() - started


def door(folder: Path, workers: int, code: str) -> str:
    done, pss, _ = sampled([sys.executable, "-c", code, str(folder), AS_OF, str(workers)])
    if done.returncode:
        raise SystemExit(f"screening failed: {done.stderr[-2000:]}")
    seconds, patients, flagged, errors, main_rss, worker_rss = done.stdout.split()
    return (f"{float(seconds):6.1f} s  {patients} patients ({flagged} flagged, {errors} input errors)  "
            f"peak RSS {int(main_rss) >> 10} MB, largest worker {int(worker_rss) >> 10} MB, "
            f"tree PSS {pss >> 10} MB")


def explain(folder: Path, patient: str) -> str:
    command = [sys.executable, "-m", "b12screen", "explain", str(folder), "--patient", patient, "--as-of", AS_OF,
               "--json"]
    done, pss, seconds = sampled(command)
    if done.returncode not in (0, 1):
        raise SystemExit(f"explain failed ({done.returncode}): {done.stderr[-2000:]}")
    rss = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True,
                         check=True).stdout.split()[1]
    errors = done.stderr.count("error:")
    return (f"{seconds:6.1f} s  exit {done.returncode}, {errors} error line(s)  peak RSS {int(rss) >> 10} MB, "
            f"tree PSS {pss >> 10} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=700, help="size of the Bundle folder (MB)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reader", action="store_true", help="also run the in-memory reader (needs ~2x the RAM)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="b12screen-pydoor-"))
    try:
        started = time.perf_counter()
        corpus = write_corpus(work / "bundles", args.mb << 20)
        print(f"corpus: {corpus['bytes'] / (1 << 20):.0f} MB, {corpus['files']} files, {corpus['patients']} "
              f"patients from {source()} ({time.perf_counter() - started:.1f} s to write)")
        copies = corpus["patients"] // sum(len(ids) for ids, _ in patient_bundles())
        patient = copy_id(patient_bundles()[0][0][0], copies // 2)
        print(f"screen_paths, {args.workers} worker(s): {door(work / 'bundles', args.workers, DOOR)}")
        print(f"explain --patient {patient}: {explain(work / 'bundles', patient)}")
        if args.reader:
            print(f"in-memory reader (before):  {door(work / 'bundles', 1, READER)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
