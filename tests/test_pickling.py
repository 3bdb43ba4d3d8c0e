"""Spilled facts and outputs pickle as their constructor and values, and come back equal."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import date

import pytest

from b12screen.batch.evaluate import PatientOutput
from b12screen.batch.stream import Partial
from b12screen.core.facts import (
    ConditionFact,
    Dose,
    MedicationUse,
    ObservationFact,
    PatientFact,
    ProcedureFact,
    Strength,
)
from b12screen.core.pickling import positional_pickle

CLASSES = [PatientFact, Dose, Strength, MedicationUse, ConditionFact, ProcedureFact, ObservationFact, Partial,
           PatientOutput]


def _sample(cls: type) -> object:
    """An instance whose every field holds a distinct value, so a swapped field cannot go unnoticed."""
    values = {f.name: f"{cls.__name__}.{f.name}" for f in dataclasses.fields(cls)}
    return cls(**values)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_round_trip_keeps_every_field(cls: type) -> None:
    obj = _sample(cls)
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    assert pickle.loads(data) == obj
    assert obj.__reduce__()[0] is cls  # the positional form, not dataclasses' generic state


def test_real_values_round_trip() -> None:
    condition = ConditionFact("Condition/c", "Condition", frozenset({"celiac"}), "active", "confirmed",
                              date(2020, 1, 1), None, "Coeliac disease")
    partial = Partial(2, [PatientFact("Patient/a", date(1950, 1, 2), False, None, "female")],
                      [(condition, b"{}", (0, 0, 3, None))], [(b'{"resourceType":"Observation"}', (1, 2, None, "x"))])
    assert pickle.loads(pickle.dumps({"Patient/a": partial})) == {"Patient/a": partial}


def test_a_field_outside_init_is_refused() -> None:
    @dataclasses.dataclass(slots=True)
    class Counted:
        value: int
        seen: int = dataclasses.field(default=0, init=False)

    with pytest.raises(TypeError, match="Counted: every field must be an __init__ argument"):
        positional_pickle(Counted)


def test_a_single_field_class_pickles_as_a_one_tuple() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class One:
        value: int

    positional_pickle(One)
    assert One(5).__reduce__() == (One, (5,))
