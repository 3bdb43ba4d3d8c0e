"""Fast pickling for slotted dataclasses.

A ``slots=True`` dataclass pickles through ``dataclasses``' generic ``__getstate__``/``__setstate__``,
which look up the fields and set them one at a time (``object.__setattr__`` when frozen) for every
object: unpickling a unit's spilled facts spent more time there than in reading them. A class decorated
with :func:`positional_pickle` pickles as its constructor and the field values in order instead, about
twice as fast both ways. Every field must be an ``__init__`` argument.
"""

from __future__ import annotations

import dataclasses
from operator import attrgetter
from typing import Any, TypeVar

T = TypeVar("T")


def positional_pickle(cls: type[T]) -> type[T]:
    """Make ``cls`` (a dataclass) pickle as ``cls(*values)``."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if not all(f.init for f in fields):
        raise TypeError(f"{cls.__name__}: every field must be an __init__ argument to pickle positionally")
    names = [f.name for f in fields]
    values = attrgetter(*names) if len(names) > 1 else (lambda obj: (getattr(obj, names[0]),))

    def __reduce__(self: Any) -> tuple[type[T], tuple[Any, ...]]:
        return cls, values(self)

    cls.__reduce__ = __reduce__  # type: ignore[method-assign]
    return cls
