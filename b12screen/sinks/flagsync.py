"""Keep a patient's b12screen Flag on a FHIR server current (``fetch --write-back``): at most one active.

The Flags b12screen wrote are those with an identifier in :data:`~b12screen.sinks.flag.IDENTIFIER_SYSTEM`;
they are found with ``GET [base]/Flag?subject=Patient/<id>&identifier=<system>|`` and checked again on
the client (that system, that subject), so a Flag written by anything else is never touched. A new Flag is
created with a conditional create (``If-None-Exist: identifier=<system>|<value>``); then every other active
b12screen Flag of the patient is set ``inactive`` with ``period.end`` = the as-of date, by ``PUT
[base]/Flag/<id>`` with ``If-Match: W/"<versionId read>"``. A 412 (someone changed it since) means read it
again and try once more with its new version, unless it is no longer an active b12screen Flag.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from ..sources.fhirclient import FhirClient
from ..sources.fhirhttp import FhirError
from .flag import IDENTIFIER_SYSTEM


@dataclass(frozen=True)
class FlagAction:
    """``create`` the new Flag, ``keep`` the active one that already says it, or ``retire`` one (set it
    inactive) ``because`` it is superseded or no longer warranted."""

    kind: str
    flag_id: str | None = None
    because: str = ""

    def describe(self) -> str:
        if self.kind == "create":
            return "create the new Flag"
        if self.kind == "keep":
            return f"keep Flag/{self.flag_id}: it already says this"
        return f"set Flag/{self.flag_id} inactive ({self.because})"


def our_identifier(flag: Mapping[str, Any]) -> str | None:
    """The value of a Flag's b12screen identifier, or None when b12screen did not write it."""
    for ident in flag.get("identifier") or []:
        if isinstance(ident, Mapping) and ident.get("system") == IDENTIFIER_SYSTEM and isinstance(
                ident.get("value"), str):
            return ident["value"]
    return None


def is_current_ours(flag: Any, patient_id: str) -> bool:
    """An active b12screen Flag about this patient, with an id the server gave it."""
    if not isinstance(flag, Mapping) or flag.get("resourceType") != "Flag" or flag.get("status") != "active":
        return False
    subject = flag.get("subject")
    reference = subject.get("reference") if isinstance(subject, Mapping) else None
    return our_identifier(flag) is not None and isinstance(flag.get("id"), str) and isinstance(reference, str) \
        and reference.split("/_history", 1)[0].endswith(f"Patient/{patient_id}")


def plan_flags(existing: Sequence[Mapping[str, Any]], new_flag: Mapping[str, Any] | None, patient_id: str
               ) -> list[FlagAction]:
    """What to do so that the patient has ``new_flag`` (None: no Flag) as their only active b12screen Flag."""
    ours = [f for f in existing if is_current_ours(f, patient_id)]
    wanted = our_identifier(new_flag) if new_flag is not None else None
    same = next((f for f in ours if our_identifier(f) == wanted), None)
    actions = []
    if new_flag is not None:
        actions.append(FlagAction("keep", same["id"]) if same is not None else FlagAction("create"))
    why = "superseded by the new Flag" if new_flag is not None else "no longer warranted"
    actions += [FlagAction("retire", f["id"], why) for f in ours if f is not same]
    return actions


def retired(flag: Mapping[str, Any], as_of: date) -> dict[str, Any]:
    """The Flag set inactive, its period ending on ``as_of`` (not before it starts)."""
    period = dict(flag["period"]) if isinstance(flag.get("period"), Mapping) else {}
    start = period.get("start")
    period["end"] = start if isinstance(start, str) and start[:10] > as_of.isoformat() else as_of.isoformat()
    return {**flag, "status": "inactive", "period": period}


def version_of(flag: Mapping[str, Any]) -> str | None:
    meta = flag.get("meta")
    version = meta.get("versionId") if isinstance(meta, Mapping) else None
    return version if isinstance(version, str) else None


def keep_current(client: FhirClient, patient_id: str, new_flag: Mapping[str, Any] | None, as_of: date,
                 dry_run: bool = False, say: Callable[[str], None] = lambda text: None) -> list[FlagAction]:
    """Find the patient's b12screen Flags, then create / keep / retire as :func:`plan_flags` says (only
    ``say`` what would be done when ``dry_run``). Raises :class:`FhirError` when the search or a write fails."""
    found = client.search("Flag", [("subject", f"Patient/{patient_id}"), ("identifier", f"{IDENTIFIER_SYSTEM}|")])
    if not found.complete:
        raise FhirError(f"the search for earlier b12screen Flags was incomplete ({found.reason})")
    by_id = {f.get("id"): f for f in found.resources}
    actions = plan_flags(found.resources, new_flag, patient_id)
    for action in actions:
        if dry_run:
            say(f"would {action.describe()}")
        elif action.kind == "create" and new_flag is not None:
            ident = our_identifier(new_flag)
            created = client.create(new_flag, if_none_exist=f"identifier={IDENTIFIER_SYSTEM}|{ident}")
            say(f"Flag created (HTTP {created.status})" + (f" at {created.location}" if created.location else "")
                if created.created else f"the Flag already exists (HTTP {created.status}); not created again")
        elif action.kind == "keep":
            say(f"Flag/{action.flag_id} already says this; not written again")
        elif action.kind == "retire":
            say(_retire(client, by_id[action.flag_id], patient_id, as_of, action))
    return actions


def update(client: FhirClient, resource: Mapping[str, Any], version: str | None) -> int:
    """PUT ``[base]/[type]/[id]``; with ``version`` (the ``meta.versionId`` read) an ``If-Match`` version
    check, so that a change made since is never overwritten (409/412 raise with status 412)."""
    resource_type, rid = resource["resourceType"], resource["id"]
    headers = {"Prefer": "return=minimal"}
    if version is not None:
        headers["If-Match"] = f'W/"{version}"'
    response = client.send("PUT", f"{client.base_url}/{resource_type}/{rid}", json_body=dict(resource),
                           headers=headers, idempotent=version is not None)
    if response.status_code in (200, 201):
        return response.status_code
    if response.status_code in (409, 412):
        raise FhirError(f"PUT {resource_type}: changed on the server since it was read (HTTP "
                        f"{response.status_code})", 412)
    raise FhirError(f"PUT {resource_type}: HTTP {response.status_code}", response.status_code)


def _retire(client: FhirClient, flag: Mapping[str, Any], patient_id: str, as_of: date, action: FlagAction) -> str:
    """Set one Flag inactive; on a version conflict read it again and try once more (a second conflict raises)."""
    try:
        update(client, retired(flag, as_of), version_of(flag))
    except FhirError as exc:
        if exc.status != 412:
            raise
        fresh = client.read("Flag", str(action.flag_id))
        if fresh is None or not is_current_ours(fresh, patient_id):
            return f"Flag/{action.flag_id} changed on the server meanwhile and is no longer active; left as it is"
        update(client, retired(fresh, as_of), version_of(fresh))
    return f"Flag/{action.flag_id} set inactive ({action.because})"
