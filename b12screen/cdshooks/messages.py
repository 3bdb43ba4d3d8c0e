"""What the service's routes answer with and read: JSON and OperationOutcome responses, bounded request
bodies, client-supplied ids made safe for a log line."""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .handler import Problem, operation_outcome

NO_STORE = {"Cache-Control": "no-store"}
_SAFE_LOG = re.compile(r"[^A-Za-z0-9._:\-]")


def safe_id(value: str | None, limit: int = 64) -> str:
    """A client-supplied id made safe for a log line (no PHI-shaped free text, no injection)."""
    return _SAFE_LOG.sub("", value or "-")[:limit] or "-"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """JSON (FHIR JSON for a resource), never cached."""
    media = "application/fhir+json" if isinstance(body, dict) and body.get("resourceType") else "application/json"
    return Response(orjson.dumps(body), status_code=status, media_type=media, headers={**NO_STORE, **(headers or {})})


def problem_response(problem: Problem) -> Response:
    """A :class:`Problem` as an OperationOutcome (401 with ``WWW-Authenticate: Bearer``)."""
    headers = {"WWW-Authenticate": "Bearer"} if problem.status == 401 else None
    return json_response(operation_outcome(problem.code, problem.diagnostics), problem.status, headers)


class TooLarge(Exception):
    """A request body over the service's limit."""


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, refused (:class:`TooLarge`) past ``limit`` bytes declared or received."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)
