"""``explain`` of a patient who was not flagged: each rule that did not fire says what it compared and what
was missing, in the text and in ``--json``; a medicine running past the end of a patient's data says when it
was last recorded."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from conftest import bundle, metformin_request, patient

from b12screen import Screener
from b12screen.cli import cli
from b12screen.core.explain import explain
from b12screen.screening import group
from b12screen.sources import read_value
from b12screen.sources.validation import ALL

AS_OF = date(2026, 11, 24)


def _anaemia(cid: str, pid: str, onset: str) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": f"Patient/{pid}"},
            "clinicalStatus": {"coding": [{"code": "active"}]}, "onsetDateTime": onset,
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "271737000"}]}}


def _figures(data: dict[str, Any], screener: Screener | None = None) -> dict[str, list[str]]:
    screener = screener or Screener()
    record = next(iter(group(screener, read_value(data, "t"), ALL).patients.values())).record()
    found = explain(screener, record, AS_OF)
    assert found["outcome"] == "no-suggestion"
    return {r["id"]: r["figures"] for r in found["rules"] if r["status"] == "not fired"}


def test_age_sign_without_risk_factor_and_stopped_metformin_are_told() -> None:
    stopped = metformin_request("m", "p", "2019-03-01", status="stopped")
    figures = _figures(bundle(patient("p", "1966-01-01"), _anaemia("a", "p", "2026-10-01"), stopped))
    assert figures["AGE-75"] == ["age 60, needs 75"]
    assert figures["SYM-1"] == ["Anemia (first recorded 2026-10-01) is a sign, but no risk factor is on file"]
    assert figures["MET-1"] == ["metformin stopped on 2019-03-01"]
    assert figures["MET-3"] == ["metformin stopped on 2019-03-01"]
    assert figures["COMBO"] == ["0 additive risk factor(s) (none), needs 2"]
    assert figures["MS-1"] == ["no multiple sclerosis or demyelinating disease on file"]
    assert figures["MAL-CEL"] == ["not met: Coeliac disease"]  # a rule that notes nothing: its title
    assert all(figures.values())  # every rule that did not fire says something


def test_a_threshold_in_force_is_the_one_compared() -> None:
    from b12screen.core.config import Config

    screener = Screener(config=Config().with_changes(params={"AGE-75": {"age": 80}}))
    figures = _figures(bundle(patient("p", "1948-01-01")), screener)
    assert figures["AGE-75"] == ["age 78, needs 80"]


def test_json_carries_the_same_figures_as_the_text(tmp_path: Path) -> None:
    data = tmp_path / "p.json"
    data.write_text(json.dumps(bundle(patient("p", "1966-01-01"), _anaemia("a", "p", "2026-10-01"))))
    args = ["explain", str(data), "--patient", "p", "--as-of", AS_OF.isoformat()]
    text, as_json = CliRunner().invoke(cli, args), CliRunner().invoke(cli, [*args, "--json"])
    assert text.exit_code == 0 and as_json.exit_code == 0, text.stderr
    assert "AGE-75     not fired\n               age 60, needs 75" in text.stdout
    assert "Anemia (first recorded 2026-10-01) is a sign, but no risk factor is on file" in text.stdout
    sym = next(r for r in json.loads(as_json.stdout)["rules"] if r["id"] == "SYM-1")
    assert sym["figures"] == ["Anemia (first recorded 2026-10-01) is a sign, but no risk factor is on file"]


def test_flag_text_says_when_a_medicine_was_last_recorded_once_the_data_ends() -> None:
    old = bundle(patient("p", "1950-01-01"), metformin_request("m", "p", "2015-01-10"))
    [result] = Screener().screen(old, AS_OF)
    assert "metformin for 11.9 years (since 2015-01-10, last recorded on 2015-01-10)" in result.reasons["MET-2"]
    fresh = bundle(patient("p", "1950-01-01"), metformin_request("m", "p", "2015-01-10"),
                   _anaemia("a", "p", AS_OF.isoformat()))  # a record on the as-of date: the data reaches it
    [result] = Screener().screen(fresh, AS_OF)
    assert "last recorded" not in " ".join(result.reasons.values())
