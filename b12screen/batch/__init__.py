"""Batch screening of FHIR Bulk Data exports and folders of per-patient Bundles (``b12screen batch``).

``scan`` plans the work, ``stream`` turns each unit into compact per-patient facts, ``evaluate`` merges
and screens them, ``outputs`` writes the files atomically; ``local`` and ``spark`` are the two engines.
"""

from .outputs import OUTPUT_NAMES
from .runner import (
    ENGINES,
    BatchOptions,
    BatchResult,
    MissingInputError,
    OutputError,
    OutputsExistError,
    default_workers,
    run_batch,
)

__all__ = ["ENGINES", "OUTPUT_NAMES", "BatchOptions", "BatchResult", "MissingInputError", "OutputError",
           "OutputsExistError",
           "default_workers", "run_batch"]
