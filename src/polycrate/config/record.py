"""``Record``: the base of our frozen dataclasses, with one shared ``__eq__``, ``__hash__`` and ``__repr__``.

Why: on Python 3.11 ``@dataclass`` compiles every method it generates with its own ``exec`` when the
class is defined (3.13 batches them). A frozen dataclass gets six (``__init__``, ``__repr__``,
``__eq__``, ``__hash__``, ``__setattr__``, ``__delattr__``); the workspace model alone has twenty such
classes, and ``workflows list`` spent about half of its own import time compiling them. A record is
declared ``@dataclass(frozen=True, eq=False, repr=False)`` on ``Record`` (a mutable one on
``MutableRecord``, a frozen one compared by identity on ``Shown`` with ``eq=False``): the three that stay generated
keep it frozen and typed (mypy reads the decorator), and the three below behave as the generated ones
do (equality and hash over the fields with ``compare``/``hash``, the same repr), reading the class's
fields once, at first use.
"""
from __future__ import annotations

from dataclasses import fields
from operator import attrgetter
from typing import Any
from collections.abc import Callable


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    if not names:
        return lambda _obj: ()
    if len(names) == 1:
        one = attrgetter(names[0])
        return lambda obj: (one(obj),)
    return attrgetter(*names)  # a tuple of the values, as the generated methods compare


# per class, filled at first use (a class's fields never change)
_COMPARED: dict[type, Callable[[Any], tuple[Any, ...]]] = {}
_HASHED: dict[type, Callable[[Any], tuple[Any, ...]]] = {}
_SHOWN: dict[type, tuple[str, ...]] = {}


def _compared(cls: type) -> Callable[[Any], tuple[Any, ...]]:
    found = _COMPARED.get(cls)
    if found is None:
        found = _COMPARED[cls] = _getter(tuple(f.name for f in fields(cls) if f.compare))
    return found


def _hashed(cls: type) -> Callable[[Any], tuple[Any, ...]]:
    found = _HASHED.get(cls)
    if found is None:
        found = _HASHED[cls] = _getter(tuple(f.name for f in fields(cls) if (f.compare if f.hash is None else f.hash)))
    return found


def _shown(cls: type) -> tuple[str, ...]:
    found = _SHOWN.get(cls)
    if found is None:
        found = _SHOWN[cls] = tuple(f.name for f in fields(cls) if f.repr)
    return found


class Shown:
    """Base of a dataclass declared with ``repr=False``: the generated repr, shared."""

    __slots__ = ()

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in _shown(self.__class__))
        return f"{self.__class__.__qualname__}({shown})"


class Record(Shown):
    """Base of a frozen dataclass declared with ``eq=False, repr=False`` (see the module's note)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        values = _compared(self.__class__)
        return values(self) == values(other)

    def __hash__(self) -> int:
        return hash(_hashed(self.__class__)(self))


class MutableRecord(Shown):
    """Base of a mutable dataclass declared with ``eq=False, repr=False``: equal by its fields and, as
    the generated one, unhashable."""

    __slots__ = ()
    __eq__ = Record.__eq__
    __hash__ = None  # type: ignore[assignment]
