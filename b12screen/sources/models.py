"""Validation of one resource with its fhir.resources R4B model (models load on first use: they are slow
to import), and the error every reader raises for a resource it cannot use."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from pydantic import ValidationError

from .limits import MAX_DEPTH, too_deep


class ResourceProblem(ValueError):
    """A resource that cannot be used, with a reason free of patient data."""


@cache
def _model_class(resource_type: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(resource_type)


def validate_resource(resource: Mapping[str, Any]) -> None:
    """Validate with the fhir.resources R4B model; raise :class:`ResourceProblem` naming the fields (or
    the nesting depth, for a resource nested beyond :data:`~b12screen.sources.limits.MAX_DEPTH`)."""
    if too_deep(resource):
        raise ResourceProblem(f"{resource['resourceType']} is nested more than {MAX_DEPTH} levels deep")
    try:
        _model_class(resource["resourceType"]).model_validate(resource)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_url=False)[:3]:
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
            problems.append(f"{loc or 'resource'}: {err.get('msg', 'invalid')}")
        more = f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
        raise ResourceProblem(f"invalid {resource['resourceType']}: " + "; ".join(problems) + more) from None
