"""The local engine: a pool of forked worker processes, kept for both phases.

Phase 1 streams units into spill files (one per unit, cut into partitions); phase 2 screens one
partition per task and writes its patients sorted by key; the main process merges the sorted partitions.
Workers get their context by fork, so they share the parent's Screener (and its plugins) as they are; what
phase 2 needs besides (the Medication pool, line numbers, spill indexes) is known only after phase 1, so it
reaches them through a file in the work folder.

With one worker the work still runs in one forked process, so the main process stays as small as it
started for writing the outputs, report.parquet's writer among them (measured in
``docs/benchmarks/history.md``). Only an input of a single unit, with one worker, is screened in the main
process (a fork would cost more than it saves).
"""

from __future__ import annotations

import gc
import heapq
import multiprocessing
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import B12ScreenError
from ..screening import Screener
from .evaluate import EvalContext, PatientOutput, evaluate_partials
from .progress import Progress
from .scan import Unit, dearest_first
from .spill import SpillIndex, read_outputs, read_partition, write_objects, write_spill
from .stream import Pos, StreamContext, UnitSummary, stream_unit
from .workdir import die_with_parent, hold_point

WORKER_LOST = "a worker process ended before its work was done (killed, perhaps for lack of memory)"


class WorkerLost(B12ScreenError):
    """A worker process died (a signal, the kernel's out-of-memory killer) before finishing its task."""


@dataclass
class PartitionSummary:
    partition: int
    patients: int
    flagged: int


@dataclass
class _Job:
    stream: StreamContext | None = None
    screener: Screener | None = None
    evaluation: EvalContext | None = None
    work: Path | None = None
    partitions: int = 1
    spills: list[tuple[Path, SpillIndex]] = field(default_factory=list)

    def load_evaluation(self) -> EvalContext:
        """In a worker forked before phase 2: its context, from the file the main process wrote."""
        assert self.screener is not None and self.work is not None
        with open(self.work / EVAL_CONTEXT, "rb") as f:
            portable, self.spills = pickle.load(f)
        self.evaluation = EvalContext(self.screener, **portable)
        return self.evaluation


_JOB = _Job()
EVAL_CONTEXT = "evaluation.pickle"


def _stream_task(unit: Unit) -> UnitSummary:
    job = _JOB
    assert job.stream is not None and job.work is not None
    out = stream_unit(job.stream, unit)
    spill = write_spill(job.work / f"u{unit.id}.spill", out.partials, job.partitions)
    if out.errors:
        with open(job.work / f"u{unit.id}.err", "wb") as f:
            pickle.dump(out.errors, f, protocol=pickle.HIGHEST_PROTOCOL)
    hold_point("stream")
    return out.summary(carry_errors=False, spill=spill)


def _eval_task(partition: int) -> PartitionSummary:
    job = _JOB
    assert job.work is not None
    evaluation = job.evaluation or job.load_evaluation()
    hold_point("screen")
    outputs = evaluate_partials(evaluation, read_partition(job.spills, partition))
    write_objects(job.work / f"p{partition}.out", outputs)
    reported = sum(1 for o in outputs if o.reported)
    return PartitionSummary(partition, reported, sum(1 for o in outputs if o.flag is not None))


def _worker_start(parent: int) -> None:
    """Pool initializer: die with the parent, and leave the objects inherited from it out of this worker's
    garbage collections (``gc.freeze``), which would otherwise touch, and so copy, every page of them."""
    die_with_parent(parent)
    gc.freeze()


def _context() -> Any:
    methods = multiprocessing.get_all_start_methods()
    if "fork" not in methods:  # pragma: no cover - Windows; macOS has fork
        raise RuntimeError("the local engine needs the 'fork' start method")
    return multiprocessing.get_context("fork")


class LocalEngine:
    """Runs the two phases on ``workers`` processes, spilling to ``work``."""

    def __init__(self, workers: int, work: Path, partitions: int, progress: Progress, screener: Screener) -> None:
        self.workers = max(1, workers)
        self.work = work
        self.partitions = partitions
        self.progress = progress
        self.screener = screener
        self.summaries: dict[int, UnitSummary] = {}
        self._pool: ProcessPoolExecutor | None = None
        self._workers: list[Any] = []  # the pool's processes, to end them at once on an interruption

    def _map(self, func: Callable[[Any], Any], items: Sequence[Any], inline: bool) -> Iterator[Any]:
        """``func`` over ``items``, in the main process when ``inline``, else on the pool (made at the first
        call and kept for the next: its workers are forked once and stay warm), in the order tasks end."""
        if inline:
            yield from map(func, items)
            return
        # concurrent.futures, not multiprocessing.Pool: Pool's worker handler wakes for every result the
        # result thread has not read yet, taking CPU the workers need, and waits forever for the task of a
        # worker that was killed; the executor reports that worker (BrokenProcessPool)
        done = False
        try:
            for future in as_completed(self._submit(func, items)):
                yield future.result()
            done = True
        except BrokenProcessPool:
            raise WorkerLost(WORKER_LOST) from None
        finally:
            if not done:
                self.abort()

    def _submit(self, func: Callable[[Any], Any], items: Sequence[Any]) -> list[Future[Any]]:
        if self._pool is not None:
            return [self._pool.submit(func, item) for item in items]
        before = set(multiprocessing.active_children())
        self._pool = ProcessPoolExecutor(self.workers, _context(), _worker_start, (os.getpid(),))
        futures = [self._pool.submit(func, item) for item in items]  # with fork, the first submit forks them all
        self._workers = [p for p in multiprocessing.active_children() if p not in before]
        return futures

    def close(self) -> None:
        """End the workers once their tasks are done (the runner calls this when the batch ends)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._workers = []

    def abort(self) -> None:
        """End the workers now, their tasks unfinished (a failure, an interruption), so that nothing writes
        in the work folder once the runner removes it."""
        for worker in self._workers:
            worker.kill()
        for worker in self._workers:
            worker.join(timeout=10)
        self.close()

    def stream(self, ctx: StreamContext, units: Sequence[Unit]) -> list[UnitSummary]:
        """Phase 1 (units dearest first, for balance: the last tasks are the cheap ones)."""
        _JOB.stream, _JOB.screener, _JOB.work, _JOB.partitions = ctx, self.screener, self.work, self.partitions
        done = []
        inline = len(units) <= 1 and self.workers == 1
        try:
            for summary in self._map(_stream_task, dearest_first(units), inline):
                self.summaries[summary.unit] = summary
                done.append(summary)
                self.progress.read(summary.bytes, summary.resources)
        finally:
            _JOB.stream = None
        return sorted(done, key=lambda s: s.unit)

    def unit_errors(self, unit: int) -> list[tuple[Pos, str]]:
        summary = self.summaries.get(unit)
        if summary is None or not summary.error_count:
            return []
        with open(self.work / f"u{unit}.err", "rb") as f:
            errors: list[tuple[Pos, str]] = pickle.load(f)
        return errors

    def _largest_first(self) -> list[int]:
        """The partitions, the largest spilled first (the last tasks are the small ones: balance)."""
        sizes = [sum(s.spill[p][1] for s in self.summaries.values() if s.spill) for p in range(self.partitions)]
        return sorted(range(self.partitions), key=lambda p: (-sizes[p], p))

    def evaluate(self, ctx: EvalContext) -> Iterator[PatientOutput]:
        """Phase 2, then the patients of every partition merged in key order."""
        spills = [(self.work / f"u{s.unit}.spill", s.spill) for s in sorted(self.summaries.values(),
                                                                             key=lambda s: s.unit)]
        inline = self._pool is None and self.workers == 1
        if inline:
            _JOB.evaluation, _JOB.spills = ctx, spills
        else:  # workers forked in phase 1 (or now) read it from the work folder
            with open(self.work / EVAL_CONTEXT, "wb") as f:
                pickle.dump((ctx.portable(), spills), f, protocol=pickle.HIGHEST_PROTOCOL)
        self.progress.screening(self.partitions)
        try:
            for part in self._map(_eval_task, self._largest_first(), inline):
                self.progress.screened(part.patients, part.flagged)
        finally:
            _JOB.evaluation = None
            _JOB.spills = []
        self.close()
        for spill in self.work.glob("u*.spill"):
            spill.unlink()
        streams = [read_outputs(self.work / f"p{p}.out") for p in range(self.partitions)]
        return heapq.merge(*streams, key=lambda o: o.key)
