"""config/record.py: a record behaves as the frozen dataclass it replaces (equality, hash, repr, frozen
fields, replace), and polycrate.__version__ is the package metadata's, read without importlib.metadata."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest

from polycrate.config.record import Frozen, MutableRecord, Record, record


@record(frozen=True, eq=False, repr=False)
class Point(Record):
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()
    note: str = field(default="", compare=False)
    secret: str = field(default="", repr=False)


@dataclass(frozen=True)
class PointDC:  # what Point was: the generated methods
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()
    note: str = field(default="", compare=False)
    secret: str = field(default="", repr=False)


@record(frozen=True, eq=False, repr=False)
class Ident(Frozen):
    name: str


@dataclass(eq=False, repr=False)
class Box(MutableRecord):
    items: list[Any] = field(default_factory=list)


@dataclass
class BoxDC:
    items: list[Any] = field(default_factory=list)


CASES = [{"x": 1}, {"x": 1, "y": 2}, {"x": 1, "tags": ("a",), "note": "n"}, {"x": 1, "secret": "s"}, {"x": 2, "note": "m"}]


@pytest.mark.parametrize("a", CASES, ids=str)
@pytest.mark.parametrize("b", CASES, ids=str)
def test_a_record_compares_and_hashes_as_the_frozen_dataclass(a, b):
    assert (Point(**a) == Point(**b)) == (PointDC(**a) == PointDC(**b))
    assert (Point(**a) != Point(**b)) == (PointDC(**a) != PointDC(**b))
    if Point(**a) == Point(**b):
        assert hash(Point(**a)) == hash(Point(**b))
    assert len({Point(**a), Point(**b)}) == len({PointDC(**a), PointDC(**b)})


def test_a_record_shows_itself_as_the_frozen_dataclass():
    a = {"x": 1, "tags": ("a",), "note": "n", "secret": "hidden"}
    assert repr(Point(**a)) == repr(PointDC(**a)).replace("PointDC", "Point")
    assert "hidden" not in repr(Point(**a))
    assert repr(Box([1])) == repr(BoxDC([1])).replace("BoxDC", "Box")


def test_a_record_is_frozen_and_replace_makes_a_new_one():
    p = Point(1, note="n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.note = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del p.y  # type: ignore[misc]
    q = dataclasses.replace(p, y=5)
    assert (p.x, p.y, q.x, q.y, q.note) == (1, 0, 1, 5, "n")
    assert dataclasses.is_dataclass(p) and [f.name for f in dataclasses.fields(p)] == ["x", "y", "tags", "note", "secret"]
    assert Point(1) != PointDC(1) and Point(1) != (1, 0, ())


def test_a_frozen_record_compares_by_identity_and_a_mutable_one_is_unhashable():
    one = Ident("a")
    assert one == one and one != Ident("a") and len({one, Ident("a")}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.name = "b"  # type: ignore[misc]
    assert Box([1]) == Box([1]) and Box([1]) != Box([2])
    with pytest.raises(TypeError):
        hash(Box())
    box = Box()
    box.items = [3]
    assert box.items == [3]


def test_record_refuses_what_it_cannot_keep():
    with pytest.raises(TypeError):
        record(frozen=False, eq=False, repr=False)
    with pytest.raises(TypeError):
        record(frozen=True, eq=True, repr=False)

    class Plain:  # not on Record or Frozen: nothing would keep it frozen
        x: int

    with pytest.raises(TypeError, match="Record or Frozen"):
        record(frozen=True, eq=False, repr=False)(Plain)


def test_the_version_is_the_metadata_s_without_importlib_metadata():
    probe = ("import json, sys, polycrate; v = polycrate.__version__; loaded = 'importlib.metadata' in sys.modules\n"
             "from importlib.metadata import version\n"
             "print(json.dumps([v, version('polycrate'), loaded]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    ours, metadata, loaded = json.loads(out)
    assert ours == metadata and not loaded


@record(frozen=True, eq=False, repr=False)
class Checked(Record):
    name: str
    items: dict[str, int] = field(default_factory=dict)
    count: int = 1

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a name")


def test_a_record_s_init_takes_what_the_dataclass_s_takes():
    assert Checked("a") == Checked(name="a", items={}, count=1)
    a, b = Checked("a"), Checked("a")
    assert a.items == {} and a.items is not b.items  # a new dict each, from the factory
    assert Checked("a", {"x": 1}, 2).items == {"x": 1} and Checked("a", count=3).count == 3
    with pytest.raises(ValueError):
        Checked("")  # __post_init__ runs
    with pytest.raises(TypeError):
        Checked()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Checked("a", nope=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Checked("a", {}, 1, 2)  # type: ignore[call-arg]
    assert Checked.__init__.__qualname__ == "Checked.__init__"
