"""What b12screen reads about one patient from a FHIR REST server: the queries the CDS Hooks prefetch
declares (``b12screen.sources.fhirqueries.RECORD_PREFETCH``), run one by one, plus the Medications that
``medicationReference`` points to. ``b12screen fetch`` and the CDS service's fallback fetch both read
through :func:`fetch_declared`, so the two doors ask the server the same questions.

Imports nothing heavy at load (the HTTP client and the declarations are imported when used), so
``b12screen screen`` stays free of HTTP code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..core.terminology import Terminology
    from .fhirclient import FhirClient, SearchResult
    from .fhirqueries import PrefetchDecl

#: Resource types whose ``medicationReference`` names the drug.
MEDICATION_USERS = ("MedicationRequest", "MedicationStatement", "MedicationDispense", "MedicationAdministration")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,256}$")


def is_valid_id(value: str) -> bool:
    """Whether ``value`` may be put into a FHIR URL as a resource id."""
    return bool(_ID.match(value))


def fetch_declared(client: FhirClient, decl: PrefetchDecl, context: Mapping[str, Any], terminology: Terminology
                   ) -> SearchResult | dict[str, Any] | None:
    """Run one prefetch declaration against ``client``: an instance read (the resource, or None when the
    server has none) or a search (a :class:`~b12screen.sources.fhirclient.SearchResult`), its tokens
    (``{{context.patientId}}``) filled from ``context``. Raises ``FhirError`` when the server fails."""
    from .fhirqueries import fill_tokens

    path, params = decl.parts(terminology)
    if decl.is_read:
        resource_type, _, rid = fill_tokens(path, context).partition("/")
        return client.read(resource_type, rid)
    return client.search(path, [(name, fill_tokens(value, context)) for name, value in params])


#: Referenced Medications read for one patient at most (each is a request of its own).
MAX_MEDICATION_READS = 50


def read_patient(client: FhirClient, patient_id: str, terminology: Terminology,
                 declarations: Iterable[PrefetchDecl] | None = None,
                 max_medication_reads: int = MAX_MEDICATION_READS) -> tuple[list[dict[str, Any]], list[str]]:
    """Everything the rules read about one patient: each declaration (default: the CDS Hooks record
    prefetch) run as a FHIR read or search, then the Medications that medicationReference points to.
    Returns (resources, problems): a problem names optional data that could not be read or is incomplete
    ("medication statements: HTTP 404 ..."); required data that cannot be read (the Patient, medication
    orders, conditions) raises ``FhirError``. ``terminology`` supplies the Observation codes searched for.
    At most ``max_medication_reads`` referenced Medications are read; more is a problem (incomplete)."""
    from .fhirclient import FhirError, SearchResult
    from .fhirqueries import RECORD_PREFETCH

    context = {"patientId": patient_id}
    resources: list[dict[str, Any]] = []
    problems: list[str] = []
    for decl in RECORD_PREFETCH if declarations is None else declarations:
        try:
            found = fetch_declared(client, decl, context, terminology)
            if found is None:
                raise FhirError(f"{decl.resource_type} {patient_id} not found", 404)
        except FhirError as exc:
            if decl.required:
                raise
            problems.append(f"{decl.label}: {exc}")
            continue
        if isinstance(found, SearchResult):
            resources.extend(found.resources)
            if not found.complete:
                problems.append(f"{decl.label}: incomplete ({found.reason})")
        else:
            resources.append(found)
    wanted = medication_ids_to_read(resources, client.base_url)
    if len(wanted) > max_medication_reads:
        problems.append(f"referenced Medication resources: incomplete ({len(wanted)} to read, "
                        f"the first {max_medication_reads} read)")
        wanted = wanted[:max_medication_reads]
    for mid in wanted:
        try:
            medication = client.read("Medication", mid)
        except FhirError as exc:
            problems.append(f"Medication: {exc}")
            continue
        if medication is None:
            problems.append("a referenced Medication was not found")
        else:
            resources.append(medication)
    return resources, problems


def medication_ids_to_read(resources: list[dict[str, Any]], base_url: str | None) -> list[str]:
    """Ids of Medications that medicationReference points to (relatively, or absolutely on ``base_url``)
    and that ``resources`` do not hold; contained (``#x``) references need nothing."""
    have = {f"Medication/{r.get('id')}" for r in resources if r.get("resourceType") == "Medication"}
    wanted: list[str] = []
    for resource in resources:
        if resource.get("resourceType") not in MEDICATION_USERS:
            continue
        reference = resource.get("medicationReference")
        target = reference.get("reference") if isinstance(reference, Mapping) else None
        if not isinstance(target, str) or target.startswith("#"):
            continue
        local = _local_medication_id(target, base_url)
        if local is not None and f"Medication/{local}" not in have and local not in wanted:
            wanted.append(local)
    return wanted


def _local_medication_id(target: str, base_url: str | None) -> str | None:
    """The Medication id of a relative reference, or of an absolute one on ``base_url``."""
    for prefix in ("Medication/", f"{base_url}/Medication/" if base_url else None):
        if prefix and target.startswith(prefix):
            rid = target[len(prefix):].split("/_history", 1)[0]
            return rid if _ID.match(rid) else None
    return None
