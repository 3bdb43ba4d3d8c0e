"""Validation of one resource with its fhir.resources R4B model (models load on first use: they are slow
to import), and the error every reader raises for a resource it cannot use."""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping
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


def preload_models(resource_types: Iterable[str]) -> int:
    """Load the R4B model classes of ``resource_types`` and of every element type they can hold (which
    fhir.resources would otherwise import on first use, while validating); the number of classes."""
    from fhir_core.types import FhirBase

    seen: set[type] = set()
    pending = [_model_class(name) for name in resource_types]
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.add(model)
        annotations = [f.annotation for f in model.model_fields.values()]
        while annotations:
            annotation = annotations.pop()
            if isinstance(annotation, type) and issubclass(annotation, FhirBase) \
                    and getattr(annotation, "_model_klass", None):
                pending.append(annotation.get_model_klass())
            annotations.extend(typing.get_args(annotation))
    return len(seen)


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
