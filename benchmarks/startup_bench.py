"""Start-up time of the command line, against ``python -c pass`` on the same machine.

Runs each command N times (default 5) in a fresh interpreter and prints the median wall time, the median
minus the bare interpreter's, and the ratio to it, for ``b12screen --help`` and ``b12screen screen`` on
the demo bundle. Targets: ``--help`` ≤ 0.35 s and ``screen`` ≤ 0.8 s (median). Usage::

    python benchmarks/startup_bench.py
    python benchmarks/startup_bench.py --runs 9
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "fixtures" / "examples" / "demo-bundle.json"
CLI = [sys.executable, "-m", "b12screen"]
COMMANDS: dict[str, tuple[list[str], float | None]] = {
    "python -c pass": ([sys.executable, "-c", "pass"], None),
    "b12screen --help": ([*CLI, "--help"], 0.35),
    "b12screen screen demo": ([*CLI, "screen", "--as-of", "2026-11-24", str(DEMO)], 0.8),
}


def median_seconds(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, Python {platform.python_version()}, median of {args.runs} runs")
    baseline = median_seconds(COMMANDS["python -c pass"][0], args.runs)
    missed = 0
    for name, (argv, target) in COMMANDS.items():
        seconds = baseline if target is None else median_seconds(argv, args.runs)
        verdict = "" if target is None else ("  ok" if seconds <= target else "  OVER") + f" (target ≤ {target} s)"
        missed += target is not None and seconds > target
        print(f"{name:24} {seconds:6.3f} s  +{seconds - baseline:6.3f} s  x{seconds / baseline:5.1f}{verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
