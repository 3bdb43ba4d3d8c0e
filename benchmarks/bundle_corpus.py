"""A folder of per-patient Bundles of any size, made by copying real patients under new ids.

The patients come from ``../shared/data/synthea-bulk-10`` (a Bulk Data export, grouped here into one
collection Bundle per patient) or, when that is absent, from ``fixtures/batch/bundles``. Copy ``n`` of a
patient has the id with its last 12 characters replaced by ``n`` in hex, everywhere it occurs (the Patient's
id, every reference to it), so each copy is a patient of its own. A few empty files sit beside the Bundles,
as in real downloads. Used by ``benchmarks/pydoor_bench.py`` and the tests of the Python door and
``explain``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT.parent / "shared" / "data" / "synthea-bulk-10", ROOT / "fixtures" / "batch" / "bundles"]


def source() -> Path:
    """The first source folder present."""
    return next(s for s in SOURCES if s.is_dir())


def _patient_of(resource: dict[str, Any]) -> str | None:
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            return ref["reference"].rsplit("/", 1)[-1].removeprefix("urn:uuid:")
    return None


def _from_export(folder: Path) -> list[tuple[list[str], bytes]]:
    by_patient: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(folder.glob("*.ndjson")):
        if path.name == "log.ndjson":
            continue
        for line in path.read_bytes().splitlines():
            if line.strip():
                resource = orjson.loads(line)
                pid = resource["id"] if resource.get("resourceType") == "Patient" else _patient_of(resource)
                if pid:
                    by_patient.setdefault(pid, []).append(resource)
    return [([pid], orjson.dumps({"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": r} for r in resources]}))
            for pid, resources in sorted(by_patient.items())]


def _from_bundles(folder: Path) -> list[tuple[list[str], bytes]]:
    found = []
    for path in sorted(folder.glob("*.json")):
        data = path.read_bytes()
        ids = [e["resource"]["id"] for e in orjson.loads(data).get("entry", [])
               if e.get("resource", {}).get("resourceType") == "Patient"]
        found.append((ids, data))
    return found


def patient_bundles(folder: Path | None = None) -> list[tuple[list[str], bytes]]:
    """(patient ids, Bundle bytes) of every patient of a source folder."""
    folder = folder or source()
    return _from_export(folder) if any(folder.glob("*.ndjson")) else _from_bundles(folder)


def copy_id(pid: str, copy: int) -> str:
    """The id of copy ``copy`` of patient ``pid``."""
    return f"{pid[:-12] if len(pid) > 12 else pid}{copy:012x}"


def write_corpus(out: Path, target_bytes: int, empty: int = 3, folder: Path | None = None) -> dict[str, int]:
    """Bundles of copied patients in ``out`` until ``target_bytes`` are written, and ``empty`` empty files;
    returns counts of files, patients and bytes."""
    out.mkdir(parents=True, exist_ok=True)
    bundles = patient_bundles(folder)
    files = patients = written = copy = 0
    while written < target_bytes:
        for n, (ids, data) in enumerate(bundles):
            for pid in ids:
                data = data.replace(pid.encode(), copy_id(pid, copy).encode())
            (out / f"c{copy:05d}-{n:03d}.json").write_bytes(data)
            files, patients, written = files + 1, patients + len(ids), written + len(data)
            if written >= target_bytes:
                break
        copy += 1
    for i in range(empty):
        (out / f"empty-{i}.json").write_bytes(b"")
    return {"files": files + empty, "patients": patients, "bytes": written}
