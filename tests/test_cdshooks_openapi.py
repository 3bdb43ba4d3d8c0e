"""``GET /openapi.json``: a valid OpenAPI 3.1 document (checked by ``openapi-spec-validator``) naming every
route of the app, with the schemas the real answers fit."""

from __future__ import annotations

import jsonschema
import pytest
import requests
from cdshooks_helpers import metformin_patient, request_body, running_server
from starlette.routing import Route

from b12screen.cdshooks.app import create_app
from b12screen.cdshooks.config import ServiceConfig
from b12screen.cdshooks.declarations import SERVICES

openapi_spec_validator = pytest.importorskip("openapi_spec_validator")


@pytest.fixture(scope="module")
def served() -> tuple[str, object]:
    app = create_app(ServiceConfig(insecure_no_auth=True))
    with running_server(app) as base:
        yield base, app


def _schema(document: dict, name: str) -> dict:
    return {**document["components"]["schemas"][name], "components": document["components"]}


def test_the_document_is_valid_openapi_3_1_and_describes_every_route(served: tuple[str, object]) -> None:
    base, app = served
    answer = requests.get(base + "/openapi.json", timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    document = answer.json()
    openapi_spec_validator.validate(document)  # raises with the reason when invalid
    assert document["openapi"] == "3.1.0"
    routes = {(r.path, m.lower())
              for r in app.routes if isinstance(r, Route) for m in r.methods if m != "HEAD"}
    described = {(path, method) for path, item in document["paths"].items() for method in item}
    assert routes == described, routes ^ described
    assert routes >= {("/cds-services", "get"), ("/cds-services/{service_id}", "post"), ("/health", "get"),
                      ("/cds-services/{service_id}/feedback", "post"), ("/ready", "get"), ("/metrics", "get"),
                      ("/openapi.json", "get")}
    [parameter] = document["paths"]["/cds-services/{service_id}"]["post"]["parameters"]
    assert parameter["schema"]["enum"] == sorted(s.id for s in SERVICES)


def test_real_answers_fit_the_described_schemas(served: tuple[str, object]) -> None:
    base, _ = served
    document = requests.get(base + "/openapi.json", timeout=30).json()
    body = request_body(prefetch=metformin_patient())
    jsonschema.validate(body, _schema(document, "HookRequest"))
    cards = requests.post(base + "/cds-services/b12screen-patient-view", json=body, timeout=30).json()
    assert cards["cards"], cards
    jsonschema.validate(cards, _schema(document, "HookResponse"))
    jsonschema.validate(requests.get(base + "/cds-services", timeout=30).json(), _schema(document, "Discovery"))
    problem = requests.post(base + "/cds-services/b12screen-patient-view", data=b"{", timeout=30,
                            headers={"Content-Type": "application/json"})
    assert problem.status_code == 400
    jsonschema.validate(problem.json(), _schema(document, "OperationOutcome"))
    with pytest.raises(jsonschema.ValidationError, match="'cards' is a required property"):
        jsonschema.validate({}, _schema(document, "HookResponse"))
