"""The validation policy of every door: which resources get a fhir.resources R4B model.

``evidence`` (the default): facts come from the raw JSON; only the resources that become evidence of a
result are validated, and a patient whose evidence holds an invalid resource is reported and screened
again without it (the loop is :func:`b12screen.screening.screen_facts`). ``all``: every resource a rule can
use is validated when its fact is extracted (an invalid one is reported and left out), which costs a model
per relevant resource.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import B12ScreenError
from .extract import Extractor
from .models import ResourceProblem, validate_resource

if TYPE_CHECKING:
    from ..core.terminology import Terminology

EVIDENCE, ALL = "evidence", "all"


POLICIES = (EVIDENCE, ALL)


def check_policy(policy: str) -> str:
    """``policy`` when it is one of :data:`POLICIES`, else a :class:`B12ScreenError`."""
    if policy not in POLICIES:
        raise B12ScreenError(f"unknown validation policy {policy!r} (choose from {', '.join(POLICIES)})")
    return policy


def extractor_for(terminology: Terminology, policy: str) -> Extractor:
    """The extractor of a policy: ``all`` validates at extraction, ``evidence`` later."""
    return Extractor(terminology, validate=check_policy(policy) == ALL)


def validation_problem(raw: bytes | Mapping[str, Any]) -> str | None:
    """Why a resource (raw JSON or parsed) is not a valid R4B resource, or None."""
    try:
        validate_resource(orjson.loads(raw) if isinstance(raw, bytes) else raw)
    except ResourceProblem as exc:
        return str(exc)
    return None
