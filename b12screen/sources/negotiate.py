"""What a Bulk Data export asks a server for: the resource types the rules read, narrowed to those the
server's CapabilityStatement lists and, with SMART Backend Services, those its ``scopes_supported`` allows;
the rules that lose data when a type is missing; the type a server names when it refuses a kick-off.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from ..core.facts import MEDICATION_TYPES
from ..core.fhirtypes import R4_RESOURCE_TYPES
from .bulkexport import STATE, BulkExporter, ExportError, ExportRequest, ExportResult
from .fhirhttp import FhirError

#: What the built-in rules read from each type, and the rules that read it ("*": every rule).
TYPE_USE: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "Patient": ("any patient", ("*",)),
    "Observation": ("laboratory results and observations", ("*",)),
    "Condition": ("conditions", ("*",)),
    "Procedure": ("procedures", ("BAR-1", "BAR-2", "BAR-3", "GAS-1", "MAL-CRO-R", "MAL-SBS")),
    "FamilyMemberHistory": ("family history", ("MET-2", "ACID-2", "SYM-1", "COMBO")),
    "Encounter": ("diet preferences recorded on encounters", ("DIET-V", "DIET-VG")),
    "Flag": ("conditions recorded as Flags", ("*",)),
    "Medication": ("medicines named by reference", ("*",)),
    **{t: ("medicines", ("*",)) for t in MEDICATION_TYPES},
}
_SCOPE = re.compile(r"system/(\*|[A-Z][A-Za-z]+)\.(read|rs|r|cruds|\*)")
_QUOTED = re.compile(r"[\"'`]([A-Z][A-Za-z]+)[\"'`]")


@dataclass
class TypePlan:
    """The types to export, the scopes to ask for and, per type the rules read but the export will not
    hold, why (``missing``: type -> reason)."""

    types: tuple[str, ...]
    scopes: tuple[str, ...] = ()
    missing: dict[str, str] = field(default_factory=dict)
    rule_ids: tuple[str, ...] = ()  # the rules in force, for the lines that name what they lose

    def drop(self, rtype: str, reason: str) -> None:
        self.types = tuple(t for t in self.types if t != rtype)
        self.scopes = tuple(s for s in self.scopes if not s.startswith(f"system/{rtype}."))
        self.missing[rtype] = reason

    def rows(self, rule_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """``{type, reason, rules, loses}`` per missing type (for ``summary.json``)."""
        ids = tuple(self.rule_ids if rule_ids is None else rule_ids)
        return [{"type": t, "reason": why, "rules": affected(t, ids), "loses": TYPE_USE.get(t, ("data",))[0]}
                for t, why in sorted(self.missing.items())]


def affected(rtype: str, rule_ids: Iterable[str]) -> list[str]:
    """The rules in force that read ``rtype`` (every rule when the type feeds all of them)."""
    ids = sorted(rule_ids)
    reads = TYPE_USE.get(rtype, ("", ()))[1]
    return ids if "*" in reads else [r for r in ids if r in reads]


def missing_line(row: Mapping[str, Any]) -> str:
    """One line naming a missing type, why, and what the rules lose ("COMBO and SYM-1 will not see family
    history")."""
    rules = list(row["rules"])
    if not rules:
        return f"{row['type']} {row['reason']} (no rule in force reads it)"
    every = "*" in TYPE_USE.get(row["type"], ("", ()))[1]
    who = "the rules" if every else " and ".join([", ".join(rules[:-1]), rules[-1]] if len(rules) > 1 else rules)
    return f"{row['type']} {row['reason']}: {who} will not see {row['loses']}"


def declared_types(capability: Any) -> frozenset[str] | None:
    """The resource types a CapabilityStatement's server ``rest`` lists; None when it lists none (or is
    not a CapabilityStatement), so that nothing is concluded from it."""
    if not isinstance(capability, Mapping) or capability.get("resourceType") != "CapabilityStatement":
        return None
    found = set()
    for rest in _list(capability.get("rest")):
        if isinstance(rest, Mapping) and rest.get("mode", "server") == "server":
            found |= {r["type"] for r in _list(rest.get("resource")) if isinstance(r, Mapping)
                      and isinstance(r.get("type"), str)}
    return frozenset(found) or None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def scopes_for(types: Sequence[str], supported: Any) -> tuple[tuple[str, ...], list[str]]:
    """(``system/<type>.read`` or ``.rs`` scopes, types without one) given a SMART configuration's
    ``scopes_supported`` (absent or not a list: ``.read`` for every type)."""
    if not isinstance(supported, list):
        return tuple(f"system/{t}.read" for t in types), []
    allowed: dict[str, set[str]] = {}
    for scope in supported:
        match = _SCOPE.fullmatch(scope) if isinstance(scope, str) else None
        if match:
            allowed.setdefault(match[1], set()).add(match[2])
    scopes, lacking = [], []
    for rtype in types:
        kinds = allowed.get(rtype, set()) | allowed.get("*", set())
        if "read" in kinds or "*" in kinds:
            scopes.append(f"system/{rtype}.read")
        elif kinds & {"rs", "r", "cruds"}:
            scopes.append(f"system/{rtype}.rs")
        else:
            lacking.append(rtype)
    return tuple(scopes), lacking


def plan_types(wanted: Sequence[str], capability: Any, smart_config: Any = None) -> TypePlan:
    """The types of ``wanted`` the server says it has (all of them when it says nothing), and their scopes.
    A CapabilityStatement that lists none of the types the rules read but Patient (as one describing only
    the export operations does: the SMART reference server lists Patient, Group and OperationDefinition)
    says nothing."""
    declared = declared_types(capability)
    if declared is not None and not (declared & set(TYPE_USE)) - {"Patient"}:
        declared = None
    plan = TypePlan(tuple(wanted))
    for rtype in wanted:
        if declared is not None and rtype not in declared:
            plan.drop(rtype, "not exported by this server (not in its CapabilityStatement)")
    supported = smart_config.get("scopes_supported") if isinstance(smart_config, Mapping) else None
    plan.scopes, lacking = scopes_for(plan.types, supported)
    for rtype in lacking:
        plan.drop(rtype, "not exported by this server (no system scope for it in scopes_supported)")
    return plan


def refused_type(message: str, types: Sequence[str]) -> str | None:
    """The one requested type a kick-off refusal names (quoted, or else as a word), or None."""
    quoted = [t for t in _QUOTED.findall(message) if t in types]
    named = quoted or [t for t in types if re.search(rf"\b{t}\b", message)]
    return named[0] if len(set(named)) == 1 else None


def parse_types(value: str) -> tuple[str, ...]:
    """``--type A,B``: FHIR R4 resource type names; raises ValueError naming an unknown one (with the
    closest known name)."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise ValueError("expected resource type names such as Patient,Observation")
    for name in names:
        if name not in R4_RESOURCE_TYPES:
            close = difflib.get_close_matches(name, sorted(R4_RESOURCE_TYPES), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(f"{name!r} is not a FHIR R4 resource type{hint}")
    return tuple(dict.fromkeys(names))


def run_dropping_refused(exporter: BulkExporter, request: ExportRequest, plan: TypePlan,
                         say: Callable[[str], None]) -> ExportResult:
    """``exporter.run(request)``; when the kick-off is refused naming one of the requested types, that type
    is dropped (recorded in ``plan``, told through ``say``) and the export asked for once more."""
    left_out = resumed_without(exporter, request)
    if left_out is not None:
        plan.drop(left_out, "refused by this server at kick-off")
        say(f"warning: resuming the export that left out {left_out} (refused by this server at kick-off)")
        request = without(request, left_out)
    try:
        return exporter.run(request)
    except FhirError as exc:
        refused = isinstance(exc, ExportError) and exporter.status_url is None and "_typeFilter" not in str(exc)
        rtype = refused_type(str(exc), request.types) if refused else None
        if rtype is None or exc.status not in (400, 404, 422) or len(request.types) < 2:
            raise
        plan.drop(rtype, "refused by this server at kick-off")
        say(f"warning: {exc}; asking again without {rtype}")
        say(f"warning: {missing_line(next(r for r in plan.rows() if r['type'] == rtype))}")
        return exporter.run(without(request, rtype))


def without(request: ExportRequest, rtype: str) -> ExportRequest:
    """``request`` without one type (and its ``_typeFilter``)."""
    return replace(request, types=tuple(t for t in request.types if t != rtype),
                   type_filters=tuple(f for f in request.type_filters if not f.startswith(f"{rtype}?")))


def resumed_without(exporter: BulkExporter, request: ExportRequest) -> str | None:
    """The type that a job still on the server (in the exporter's resume state) left out of ``request``
    after a refusal, so that a re-run resumes that job instead of asking again; None when there is none."""
    try:
        state = orjson.loads((exporter.meta / STATE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(state, dict) or state.get("deleted_job") or not state.get("status_url"):
        return None
    base = exporter.client.base_url
    return next((t for t in request.types if without(request, t).key(base) == state.get("key")), None)
