"""Progress on stderr: a tqdm bar when stderr is a terminal, nothing otherwise."""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    """Two phases: reading (bytes, resources) and screening (patients, flagged)."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.bar: Any = None
        self.resources = self.patients = self.flagged = 0

    def _bar(self, **kwargs: Any) -> Any:
        if not self.enabled:
            return None
        import tqdm

        tqdm.tqdm.monitor_interval = 0  # no monitor thread: workers are forked
        return tqdm.tqdm(file=sys.stderr, dynamic_ncols=True, leave=False, **kwargs)

    def reading(self, total_bytes: int) -> None:
        self.close()
        self.bar = self._bar(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="reading")

    def read(self, nbytes: int, resources: int) -> None:
        self.resources += resources
        if self.bar is not None:
            self.bar.update(nbytes)
            self.bar.set_postfix(resources=f"{self.resources:,}", refresh=False)

    def screening(self, parts: int) -> None:
        self.close()
        self.bar = self._bar(total=parts, unit="part", desc="screening")

    def screened(self, patients: int, flagged: int) -> None:
        self.patients += patients
        self.flagged += flagged
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(patients=f"{self.patients:,}", flagged=f"{self.flagged:,}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
