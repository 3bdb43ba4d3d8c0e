"""``GET /openapi.json``: an OpenAPI 3.1 description of every endpoint of the service.

Built from the service declarations, so a new service appears in it; ``tests/test_cdshooks_openapi.py``
validates it with ``openapi-spec-validator`` and checks that every route of the app is described.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._version import __version__
from .declarations import ServiceDecl
from .handler import FEEDBACK_OUTCOMES

JSON = "application/json"
FHIR_JSON = "application/fhir+json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], media: str = JSON) -> dict[str, Any]:
    return {"content": {media: {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {400: "Malformed request", 401: "No valid JWT (see WWW-Authenticate)", 404: "No such service",
               413: "Request body too large", 415: "Not JSON",
               503: "Out of time, or the replay guard or a key set is unavailable (fail closed)"}
    return {str(s): {"description": reasons[s], **_json(_ref("OperationOutcome"), FHIR_JSON)} for s in statuses}


SCHEMAS: dict[str, Any] = {
    "OperationOutcome": {
        "type": "object", "required": ["resourceType", "issue"],
        "properties": {"resourceType": {"const": "OperationOutcome"},
                       "issue": {"type": "array", "items": {
                           "type": "object", "required": ["severity", "code"],
                           "properties": {"severity": {"type": "string"}, "code": {"type": "string"},
                                          "diagnostics": {"type": "string"}}}}}},
    "Status": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
    "Discovery": {
        "type": "object", "required": ["services"],
        "properties": {"services": {"type": "array", "items": {
            "type": "object", "required": ["hook", "id", "description"],
            "properties": {"hook": {"type": "string"}, "id": {"type": "string"}, "title": {"type": "string"},
                           "description": {"type": "string"},
                           "prefetch": {"type": "object", "additionalProperties": {"type": "string"}}}}}}},
    "HookRequest": {
        "type": "object", "required": ["hook", "hookInstance", "context"],
        "properties": {"hook": {"type": "string"}, "hookInstance": {"type": "string"},
                       "fhirServer": {"type": "string", "format": "uri"},
                       "fhirAuthorization": {"type": "object"},
                       "context": {"type": "object"},
                       "prefetch": {"type": "object", "additionalProperties": {"type": ["object", "null"]}}}},
    "HookResponse": {
        "type": "object", "required": ["cards"],
        "properties": {"cards": {"type": "array", "items": {
            "type": "object", "required": ["summary", "indicator", "source"],
            "properties": {"uuid": {"type": "string"}, "summary": {"type": "string", "maxLength": 140},
                           "detail": {"type": "string"},
                           "indicator": {"enum": ["info", "warning", "critical"]},
                           "source": {"type": "object"}, "suggestions": {"type": "array"},
                           "links": {"type": "array"}, "overrideReasons": {"type": "array"}}}},
                       "systemActions": {"type": "array", "items": {"type": "object"}}}},
    "FeedbackRequest": {
        "type": "object", "required": ["feedback"],
        "properties": {"feedback": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["card", "outcome", "outcomeTimestamp"],
            "properties": {"card": {"type": "string"}, "outcome": {"enum": sorted(FEEDBACK_OUTCOMES)},
                           "outcomeTimestamp": {"type": "string", "format": "date-time"},
                           "acceptedSuggestions": {"type": "array", "items": {
                               "type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}},
                           "overrideReason": {"type": "object"}}}}}},
    "FeedbackResponse": {"type": "object", "required": ["received"],
                         "properties": {"received": {"type": "integer", "minimum": 1}}},
}


def openapi_document(services: Iterable[ServiceDecl]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the service (``services``: the CDS services it declares)."""
    ids = sorted(s.id for s in services)
    service_id = {"name": "service_id", "in": "path", "required": True, "schema": {"enum": ids}}
    bearer: list[dict[str, list[str]]] = [{"cdsJwt": []}]
    plain = {"200": {"description": "OK", **_json(_ref("Status"))}}
    paths = {
        "/cds-services": {"get": {
            "summary": "CDS Hooks discovery", "operationId": "discovery", "security": [*bearer, {}],
            "responses": {"200": {"description": "The services", **_json(_ref("Discovery"))}, **_errors(401)}}},
        "/cds-services/{service_id}": {"post": {
            "summary": "Call a CDS service (a hook)", "operationId": "callService", "security": bearer,
            "parameters": [service_id], "requestBody": {"required": True, **_json(_ref("HookRequest"))},
            "responses": {"200": {"description": "Cards", **_json(_ref("HookResponse"))},
                          **_errors(400, 401, 404, 413, 415, 503)}}},
        "/cds-services/{service_id}/feedback": {"post": {
            "summary": "Feedback on cards", "operationId": "feedback", "security": bearer,
            "parameters": [service_id], "requestBody": {"required": True, **_json(_ref("FeedbackRequest"))},
            "responses": {"200": {"description": "Recorded", **_json(_ref("FeedbackResponse"))},
                          **_errors(400, 401, 404, 413, 415, 503)}}},
        "/health": {"get": {"summary": "Liveness (no data, no auth)", "operationId": "health",
                            "responses": plain}},
        "/ready": {"get": {"summary": "Readiness: replay store and issuers' keys reachable", "operationId": "ready",
                           "responses": {**plain, **_errors(503)}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (all workers' totals)", "operationId": "metrics",
                             "responses": {"200": {"description": "Text exposition format",
                                                   **_json({"type": "string"}, "text/plain")}}}},
        "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi",
                                  "responses": {"200": {"description": "OpenAPI 3.1", **_json({"type": "object"})}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "b12screen CDS Hooks service", "version": __version__,
                 "description": "CDS Hooks 2.0 service suggesting a vitamin B12 check (FHIR R4 Flags as cards)."},
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": {"cdsJwt": {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "A JWT signed by a trusted CDS client (CDS Hooks 2.0, asymmetric algorithms only)"}}},
    }
