"""Progress on stderr: tqdm bars when stderr is a terminal, nothing otherwise.

Reading counts bytes against the input size (resources as they are read); screening counts patients,
against a total estimated from the partitions done so far (exact once all are done), so both show an ETA.
The screening bar stays on screen at the end, above the command's summary line.
"""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    """Two phases: reading (bytes, resources) and screening (patients, flagged)."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.bar: Any = None
        self.resources = self.patients = self.flagged = 0
        self.parts = self.parts_done = 0

    def _bar(self, leave: bool, **kwargs: Any) -> Any:
        if not self.enabled:
            return None
        import tqdm

        tqdm.tqdm.monitor_interval = 0  # no monitor thread: workers are forked
        return tqdm.tqdm(file=sys.stderr, dynamic_ncols=True, leave=leave, **kwargs)

    def reading(self, total_bytes: int) -> None:
        self.close()
        self.bar = self._bar(False, total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                             desc="reading")

    def read(self, nbytes: int, resources: int) -> None:
        self.resources += resources
        if self.bar is not None:
            self.bar.update(nbytes)
            self.bar.set_postfix(resources=f"{self.resources:,}", refresh=False)

    def screening(self, parts: int) -> None:
        """Start counting patients; ``parts`` > 0: the engine reports each partition (``screened``),
        0: it reports each patient as it is written (``written``), total unknown."""
        self.close()
        self.parts, self.parts_done = parts, 0
        self.bar = self._bar(True, total=None, unit=" patients", desc="screening")
        self._postfix()

    def screened(self, patients: int, flagged: int) -> None:
        """A partition is done: ``patients`` screened, ``flagged`` of them flagged."""
        self.parts_done += 1
        self.patients += patients
        self.flagged += flagged
        if self.bar is not None:
            done = self.parts_done >= self.parts
            self.bar.total = self.patients if done else round(self.patients / self.parts_done * self.parts)
            self.bar.update(patients)
            self._postfix()

    def written(self, flagged: bool) -> None:
        """One patient written, for engines that report no partitions."""
        if self.parts:
            return
        self.patients += 1
        self.flagged += flagged
        if self.bar is not None:
            self.bar.update(1)
            if self.patients % 1000 == 0:
                self._postfix()

    def _postfix(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix(flagged=f"{self.flagged:,}", resources=f"{self.resources:,}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            if self.parts == 0 and self.bar.total is None:
                self.bar.total = self.patients
            self._postfix()
            self.bar.close()
            self.bar = None
