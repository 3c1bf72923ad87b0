"""Records: our frozen dataclasses, without the methods Python 3.11 compiles for each of them at import.

Why: on Python 3.11 ``@dataclass`` compiles every method it generates with its own ``exec`` when the
class is defined (3.13 batches them). A frozen dataclass gets six (``__init__``, ``__repr__``,
``__eq__``, ``__hash__``, ``__setattr__``, ``__delattr__``); the workspace model alone has twenty such
classes, and ``workflows list`` spent about half of its own import time compiling them.

So a frozen record is written ``@record(frozen=True, eq=False, repr=False)`` on ``Record`` (compared by
its fields) or ``Frozen`` (compared by identity). mypy reads ``record`` as ``dataclasses.dataclass``
with those arguments: frozen and typed. At run time only ``__init__`` is generated; the base classes
below hold the other methods once, behaving as the generated ones do: equality and hash over the
fields with ``compare``/``hash``, the same repr, and a field can be neither assigned nor deleted after
``__init__`` (``FrozenInstanceError``). A mutable dataclass is ``@dataclass(eq=False, repr=False)`` on
``MutableRecord`` (equal by its fields, unhashable, as the generated ones).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import FrozenInstanceError, dataclass, fields
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar

__all__ = ["Frozen", "MutableRecord", "Record", "Shown", "record"]

_T = TypeVar("_T", bound=type)

if TYPE_CHECKING:
    from dataclasses import dataclass as record
else:

    def record(*, frozen: bool, eq: bool, repr: bool) -> Callable[[_T], _T]:
        """The dataclass of a ``Frozen`` class: frozen by its base, ``__init__`` generated."""
        if not frozen or eq or repr:
            raise TypeError("record() takes frozen=True, eq=False, repr=False (equality and repr come from the base)")

        def wrap(cls: _T) -> _T:
            if not issubclass(cls, Frozen):
                raise TypeError(f"{cls.__qualname__}: a record derives from Record or Frozen (they keep it frozen)")
            return dataclass(eq=False, repr=False)(cls)

        return wrap


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


class Frozen(Shown):
    """Base of a record compared by identity. ``__init__`` sets each field once (it is not yet in the
    instance's ``__dict__``); after that no field can be assigned or deleted."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dict__:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")


class Record(Frozen):
    """Base of a record compared by its fields: ``==`` and ``hash`` as a frozen dataclass's."""

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
