"""Records: our frozen dataclasses, without the methods Python 3.11 compiles for each of them at import.

Why: on Python 3.11 ``@dataclass`` compiles every method it generates with its own ``exec`` when the
class is defined (3.13 batches them). A frozen dataclass gets six (``__init__``, ``__repr__``,
``__eq__``, ``__hash__``, ``__setattr__``, ``__delattr__``); the workspace model alone has twenty such
classes, and ``workflows list`` spent about half of its own import time compiling them.

So a frozen record is written ``@record(frozen=True, eq=False, repr=False)`` on ``Record`` (compared by
its fields) or ``Frozen`` (compared by identity). mypy reads ``record`` as ``dataclasses.dataclass``
with those arguments: frozen and typed. At run time only ``__init__`` is generated, when the first instance is made;
the base classes below hold the other methods once, behaving as the generated ones do: equality and hash over the
fields with ``compare``/``hash``, the same repr, and a field can be neither assigned nor deleted after
``__init__`` (``FrozenInstanceError``). A mutable dataclass is ``@dataclass(eq=False, repr=False)`` on
``MutableRecord`` (equal by its fields, unhashable, as the generated ones).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, FrozenInstanceError, dataclass, fields
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar

__all__ = ["Frozen", "MutableRecord", "Record", "Shown", "record"]

_T = TypeVar("_T", bound=type)

if TYPE_CHECKING:
    from dataclasses import dataclass as record
else:

    def record(*, frozen: bool, eq: bool, repr: bool) -> Callable[[_T], _T]:
        """The dataclass of a ``Frozen`` class: its fields, and an ``__init__`` built at its first use."""
        if not frozen or eq or repr:
            raise TypeError("record() takes frozen=True, eq=False, repr=False (equality and repr come from the base)")

        def wrap(cls: _T) -> _T:
            if not issubclass(cls, Frozen):
                raise TypeError(f"{cls.__qualname__}: a record derives from Record or Frozen (they keep it frozen)")
            dataclass(init=False, eq=False, repr=False)(cls)
            for f in fields(cls):
                if not f.init or f.kw_only:
                    raise TypeError(f"{cls.__qualname__}.{f.name}: a record's fields are all plain __init__ arguments")
            setattr(cls, "__init__", _first_init(cls))  # noqa: B010
            return cls

        return wrap


class _Factory:
    """The default of an argument whose field has a default_factory (as dataclasses' own sentinel)."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


def _first_init(cls: type) -> Callable[..., None]:
    """An ``__init__`` that builds the class's real one at the first instance: a class never instantiated by
    a command costs no compilation."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init = cls.__dict__["__init__"]
        if init is __init__:
            init = _build_init(cls)
            setattr(cls, "__init__", init)  # noqa: B010 - replacing a method of the class, as dataclasses does
        init(self, *args, **kwargs)

    return __init__


def _build_init(cls: type) -> Callable[..., None]:
    """The ``__init__`` dataclasses would generate for the fields (defaults, default factories,
    ``__post_init__``), writing the instance's ``__dict__`` as a frozen dataclass's does through
    ``object.__setattr__``."""
    names: dict[str, Any] = {"_FACTORY": _FACTORY}
    params: list[str] = []
    body: list[str] = []
    for f in fields(cls):
        if f.default is not MISSING:
            names[f"_dflt_{f.name}"] = f.default
            params.append(f"{f.name}=_dflt_{f.name}")
            body.append(f"__dict[{f.name!r}] = {f.name}")
        elif f.default_factory is not MISSING:
            names[f"_fct_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_FACTORY")
            body.append(f"__dict[{f.name!r}] = _fct_{f.name}() if {f.name} is _FACTORY else {f.name}")
        else:
            params.append(f.name)
            body.append(f"__dict[{f.name!r}] = {f.name}")
    if hasattr(cls, "__post_init__"):
        body.append("__self.__post_init__()")
    source = (f"def __init__(__self, {', '.join(params)}):\n    __dict = __self.__dict__\n"
              + "".join(f"    {line}\n" for line in body) + "    return None\n")
    exec(source, names)  # what dataclasses does, from the field names only
    init: Callable[..., None] = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


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
    """Base of a record compared by identity: no field can be assigned or deleted (its ``__init__``
    writes the instance's ``__dict__``)."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

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
