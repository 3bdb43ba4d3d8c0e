"""The batch engine from Python: :func:`screen_files` screens files and folders with the engine of
``b12screen batch`` and returns :class:`StreamingResults`, read back one patient at a time.

Memory stays bounded by the largest patient, not by the input: the engine's workers stream the input into
spill files, and the screened patients are kept on disk (a temporary folder, removed by
:meth:`StreamingResults.close`, by leaving a ``with`` block, or when the results are garbage collected).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import sys
import tempfile
import warnings
import weakref
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from ..core.dataend import stale_warning
from ..core.outcome import ScreeningResult
from ..errors import InputError
from ..screening import Screener
from ..sinks.rows import to_pandas, typed
from ..sources.files import NO_SUCH_PATH, discover
from .outputs import error_key, merged_errors
from .progress import Progress
from .runner import BatchOptions, screening

PATIENTS = "patients.pickle"


class StaleDataWarning(UserWarning):
    """The as-of date is more than a year after the newest record in the input."""


def interactive() -> bool:
    """A Python prompt, IPython or a notebook: where a progress bar is watched (a script's is not)."""
    if hasattr(sys, "ps1") or sys.flags.interactive or "ipykernel" in sys.modules:
        return True
    ipython = sys.modules.get("IPython")
    return ipython is not None and getattr(ipython, "get_ipython", lambda: None)() is not None


class _Bars(Progress):
    """The batch's progress bars, drawn by ``tqdm.auto``: a widget in a notebook, text in a terminal."""

    def _bar(self, leave: bool, **kwargs: Any) -> Any:
        if not self.enabled:
            return None
        from tqdm.auto import tqdm

        tqdm.monitor_interval = 0  # no monitor thread: workers are forked
        return tqdm(dynamic_ncols=True, leave=leave, **kwargs)


def input_error(row: dict[str, Any]) -> InputError:
    """An ``errors.ndjson`` row as the :class:`InputError` ``b12screen screen`` reports."""
    where = " ".join(p for p in (f"line {row['line']}" if row["line"] is not None else "", row["location"] or "") if p)
    return InputError(row["file"], where or None, row["reason"])


class StreamingResults:
    """The results of :func:`screen_files`: iterating yields one :class:`ScreeningResult` per patient,
    sorted by patient, read from disk as it goes (iterate as often as needed); ``errors`` holds every
    input problem (file, line or entry, reason), ``len()`` the number of patients."""

    def __init__(self, work: Path | None, count: int, errors: list[InputError], resources_read: int,
                 newest_record_date: date | None = None) -> None:
        self.errors = errors
        self.resources_read = resources_read
        #: The newest clinical date in the input (:mod:`b12screen.core.dataend`), None when none is dated.
        self.newest_record_date = newest_record_date
        self._count = count
        self._work = work
        self._cleanup = weakref.finalize(self, shutil.rmtree, work, True) if work is not None else None

    def _pickled(self) -> Iterator[tuple[ScreeningResult, bytes]]:
        if self._work is None:
            return
        if not (self._work / PATIENTS).exists():
            raise ValueError("these results are closed")
        with open(self._work / PATIENTS, "rb") as f:
            for _ in range(self._count):
                yield pickle.load(f)

    def __iter__(self) -> Iterator[ScreeningResult]:
        for result, _row in self._pickled():
            yield result

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"<StreamingResults: {self._count} patient(s), {len(self.errors)} input error(s)>"

    def to_rows(self) -> list[dict[str, Any]]:
        """The rows of ``report.csv`` as dicts (lists stay lists), as ``b12screen batch`` writes them."""
        return [typed(orjson.loads(row)) for _result, row in self._pickled()]

    def to_pandas(self) -> Any:
        """The rows as a pandas DataFrame (needs pandas: ``pip install 'b12screen[pandas]'``)."""
        return to_pandas(self.to_rows())

    def close(self) -> None:
        """Remove the results from disk (iterating afterwards raises ValueError)."""
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> StreamingResults:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def screen_files(paths: Sequence[str], options: BatchOptions, screener: Screener,
                 errors: Sequence[InputError] = ()) -> StreamingResults:
    """Screen the files and folders at ``paths`` with the batch engine (``options.workers`` processes;
    ``options.progress`` None: bars when Python runs interactively). ``errors`` are put before the
    input errors found (a path missing is one, not an exception)."""
    found = list(errors)
    present = []
    for name in paths:
        if os.path.exists(name) or os.path.islink(name):  # a broken link is reported by the reader
            present.append(name)
        else:
            found.append(InputError(name, None, NO_SUCH_PATH))
    if not present:
        return StreamingResults(None, 0, found, 0)
    progress = _Bars(interactive() if options.progress is None else options.progress)
    work = Path(tempfile.mkdtemp(prefix="b12screen-"))
    count = resources = 0
    newest: date | None = None
    try:
        keep = dataclasses.replace(options, keep_results=True)
        with screening(discover(present), screener, keep, work, progress) as done:
            late: list[dict[str, Any]] = []
            resources = done.resources
            with open(work / PATIENTS, "wb") as f:
                for patient in done.patients:
                    late.extend(patient.input_errors)
                    resources -= patient.rejected
                    if not patient.reported:  # known only from lines that could not be read, as in screen
                        continue
                    count += 1
                    if patient.newest is not None and (newest is None or patient.newest > newest):
                        newest = patient.newest
                    pickle.dump((patient.result, patient.row), f, protocol=pickle.HIGHEST_PROTOCOL)
            late.sort(key=error_key)
            found.extend(map(input_error, merged_errors([done.side_errors, done.unit_errors, late])))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        progress.close()
    for leftover in work.iterdir():  # the engine's spill and partition files: only the patients stay
        if leftover.is_dir():
            shutil.rmtree(leftover)
        elif leftover.name != PATIENTS:
            leftover.unlink()
    if warning := stale_warning(options.as_of, newest, "as_of=results.newest_record_date"):
        warnings.warn(warning, StaleDataWarning, stacklevel=3)
    return StreamingResults(work, count, found, resources, newest)  # made once the workers are gone


def newest_record_date(paths: Sequence[str], options: BatchOptions, screener: Screener) -> date | None:
    """The newest clinical date in the files and folders at ``paths``, found by screening them once with the
    batch engine (``--as-of data-end`` reads the input twice: this pass, then the screening)."""
    work = Path(tempfile.mkdtemp(prefix="b12screen-"))
    progress = _Bars(False)
    try:
        with screening(discover(list(paths)), screener, options, work, progress) as done:
            return max((p.newest for p in done.patients if p.newest is not None), default=None)
    finally:
        progress.close()
        shutil.rmtree(work, ignore_errors=True)
