"""Discovery comes from the same declarations the handlers read; templates keep to the 2.0 subset."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from typing import Any
from urllib.parse import parse_qsl

from cdshooks_helpers import AS_OF, full_prefetch, metformin_patient, request_body

from b12screen import Screener, hookimpl
from b12screen.cdshooks.config import ServiceConfig
from b12screen.cdshooks.declarations import (
    HOOK_CONTEXT,
    SERVICES,
    discovery,
    services_by_id,
)
from b12screen.cdshooks.handler import CardRegistry, HookHandler
from b12screen.cdshooks.security import ANONYMOUS
from b12screen.plugins import get_plugin_manager
from b12screen.sources.fhirqueries import PrefetchDecl

ALLOWED_PARAMS = {"patient", "code", "category"}
#: User tokens CDS Hooks 2.0 allows in templates besides context fields.
USER_TOKENS = ("userPractitionerId", "userPractitionerRoleId", "userPatientId", "userRelatedPersonId")
#: What CDS Hooks allows in a service id (it becomes a URL path segment).
SERVICE_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")


@cache
def screener() -> Screener:
    return Screener(plugin_manager=get_plugin_manager(load_entry_points=False))


def prefetch_decl(key: str) -> PrefetchDecl:
    """The patient-view service's prefetch declaration of ``key``."""
    [decl] = [d for d in services_by_id()["b12screen-patient-view"].prefetch if d.key == key]
    return decl


def test_services_and_ids() -> None:
    assert {(s.id, s.hook) for s in SERVICES} == {("b12screen-patient-view", "patient-view"),
                                                  ("b12screen-order-sign", "order-sign"),
                                                  ("b12screen-order-select", "order-select")}
    for service in SERVICES:
        assert SERVICE_ID_RE.match(service.id)


def test_discovery_is_generated_from_the_declarations() -> None:
    doc = discovery(screener().terminology)
    for entry, service in zip(doc["services"], SERVICES, strict=True):
        assert entry["id"] == service.id
        assert list(entry["prefetch"]) == [p.key for p in service.prefetch]
        assert entry["version"] == "2.0" and entry["hookVersion"] == "1.0"


def test_every_token_is_a_root_level_context_field_of_its_hook() -> None:
    for service in SERVICES:
        allowed = {f"context.{f}" for f in HOOK_CONTEXT[service.hook]["tokens"]} | set(USER_TOKENS)
        for decl in service.prefetch:
            tokens = decl.tokens(screener().terminology)
            assert tokens, decl.key
            assert set(tokens) <= allowed, (service.id, decl.key, tokens)


def test_templates_keep_to_the_cds_hooks_2_query_subset() -> None:
    for service in SERVICES:
        for key, template in service.discovery_entry(screener().terminology)["prefetch"].items():
            path, _, query = template.partition("?")
            assert re.fullmatch(r"[A-Z][A-Za-z]+(/\{\{context\.\w+\}\})?", path), key
            assert "_include" not in template and "today()" not in template and "." not in path.split("/")[0]
            for name, value in parse_qsl(query):
                assert name in ALLOWED_PARAMS, (key, name)  # no modifiers, no chaining
                if name == "code":
                    assert all(re.fullmatch(r"http://loinc\.org\|[\w-]+", v) for v in value.split(","))


def test_b12_lab_codes_come_from_the_value_sets() -> None:
    b12 = prefetch_decl("b12Labs").template(screener().terminology)
    for code in ("2132-9", "14685-2", "72160-5", "13964-2"):
        assert f"http://loinc.org|{code}" in b12


def test_a_plugin_value_set_code_is_prefetched_too() -> None:
    class ExtraLoinc:
        @hookimpl
        def b12screen_value_sets(self) -> list[dict[str, Any]]:
            return [{"resourceType": "ValueSet", "id": "b12-total", "url": "https://example.org/vs",
                     "compose": {"include": [{"system": "http://loinc.org", "concept": [{"code": "99999-9"}]}]}}]

    manager = get_plugin_manager(load_entry_points=False)
    manager.register(ExtraLoinc(), "extra-loinc")
    decl = prefetch_decl("b12Labs")
    assert "http://loinc.org|99999-9" in decl.template(Screener(plugin_manager=manager).terminology)


class RecordingDict(dict[str, Any]):
    """A prefetch object that records which keys the handler looks at."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.seen: set[str] = set()

    def __contains__(self, key: object) -> bool:
        self.seen.add(str(key))
        return super().__contains__(key)

    def __getitem__(self, key: str) -> Any:
        self.seen.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.seen.add(key)
        return super().get(key, default)

    def keys(self) -> Any:  # iterating keys would hide undeclared look-ups: forbid it
        raise AssertionError("the handler must look keys up by their declared names")

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("the handler must look keys up by their declared names")


def test_handlers_only_read_declared_prefetch_keys() -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        handler = HookHandler(ServiceConfig(insecure_no_auth=True), screener(), lambda: AS_OF, pool, CardRegistry())
        for service in SERVICES:
            for prefetch in (metformin_patient(), full_prefetch()):
                recorded = RecordingDict(prefetch)
                body = request_body(service.hook)
                body["prefetch"] = recorded
                handler.call(service, body, ANONYMOUS, deadline=float("inf"))
                assert recorded.seen <= {p.key for p in service.prefetch}
                assert recorded.seen == {p.key for p in service.prefetch}
