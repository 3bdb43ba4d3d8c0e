"""Bulk Data helpers: OperationOutcome text, NDJSON line counts, streamed chunks, the server's error files
as error rows, and ``_typeFilter`` values from value-set codes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import requests

#: OperationOutcome issue codes a client may retry on (Bulk Data IG, "Status request").
TRANSIENT_CODES = frozenset({"transient", "throttled", "timeout", "incomplete"})


def outcome_text(body: bytes) -> tuple[str, bool]:
    """(a short description, transient?) of an OperationOutcome body (``""``, False when not one)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "", False
    if not isinstance(value, dict) or value.get("resourceType") != "OperationOutcome":
        return "", False
    issues = [i for i in value.get("issue") or [] if isinstance(i, dict)]
    parts = [": ".join(str(x) for x in (i.get("code"), i.get("diagnostics")) if x)[:200] for i in issues[:3]]
    transient = bool(issues) and all(i.get("code") in TRANSIENT_CODES for i in issues)
    return "; ".join(p for p in parts if p), transient


def count_lines(path: Path) -> int:
    """Lines of a file, a last line without a newline included."""
    lines = 0
    last = b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n")


def chunks(response: requests.Response, size: int = 1 << 16) -> Iterable[bytes]:
    """The body as it arrives: each read returns after one socket read (bounded by the read timeout), so
    the per-file deadline and Ctrl-C are checked even while a server trickles bytes."""
    raw = response.raw
    while chunk := raw.read1(size, decode_content=True):
        yield chunk


def keep_request(request: Any) -> Any:
    return request


def error_rows(path: Path, label: str) -> list[dict[str, Any]]:
    rows = []
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                text, _ = outcome_text(line)
                rows.append({"file": label, "line": number, "location": "server",
                             "reason": text or "an entry of the server's error file"})
    return rows


def type_filters(types: Iterable[str], codes: Mapping[str, Sequence[str]],
                 capability: Mapping[str, Any] | None) -> tuple[tuple[str, ...], list[str]]:
    """``_typeFilter`` values (``Observation?code=sys|c,...``) for the types whose codes are given and whose
    search by ``code`` the CapabilityStatement declares; and the types left unfiltered."""
    declared: set[str] = set()
    for rest in (capability or {}).get("rest") or []:
        for res in (rest.get("resource") or []) if isinstance(rest, dict) else []:
            params = {p.get("name") for p in res.get("searchParam") or [] if isinstance(p, dict)}
            if isinstance(res, dict) and "code" in params:
                declared.add(str(res.get("type")))
    filters, unfiltered = [], []
    for rtype in types:
        if rtype not in codes or not codes[rtype]:
            continue
        if rtype in declared:
            filters.append(f"{rtype}?code=" + ",".join(codes[rtype]))
        else:
            unfiltered.append(rtype)
    return tuple(filters), unfiltered
