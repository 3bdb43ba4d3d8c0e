"""ScreeningResults: the results of screening some input, with its input errors and analyst rows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import InputError
from ..sinks.flag import flag_json
from ..sinks.rows import row, to_pandas
from .outcome import ScreeningResult


class ScreeningResults(list[ScreeningResult]):
    """A list of results (one per patient, sorted by patient) that also carries the input errors."""

    def __init__(self, results: Iterable[ScreeningResult] = (), errors: Iterable[InputError] = (),
                 resources_read: int = 0) -> None:
        super().__init__(results)
        self.errors: list[InputError] = list(errors)
        self.resources_read = resources_read

    def to_rows(self) -> list[dict[str, Any]]:
        """The rows of ``report.csv`` as dicts (lists stay lists): ``pandas.DataFrame(results.to_rows())``."""
        return [row(result.report(), flag_json(result)) for result in self]

    def to_pandas(self) -> Any:
        """The rows as a pandas DataFrame (needs pandas: ``pip install 'b12screen[pandas]'``)."""
        return to_pandas(self.to_rows())
