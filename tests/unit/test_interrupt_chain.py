"""A stop signal that Python wraps is still a stop (errors.interrupt_in): found by the signal stress test,
where a SIGTERM during a lazy import ended as "internal error: RuntimeError" (exit 70) instead of 130."""
from __future__ import annotations

import sqlite3

import pytest

from polycrate import cli
from polycrate.errors import Interrupted, PolycrateError, interrupt_in, interrupt_name


class _Interrupts:
    def __set_name__(self, owner: type, name: str) -> None:
        raise Interrupted("SIGTERM")


def _class_body_interrupted() -> None:
    type("Wrapped", (), {"field": _Interrupts()})  # Python 3.11 wraps it: RuntimeError from __set_name__


def test_a_signal_inside_set_name_is_found_behind_the_runtime_error():
    with pytest.raises(Exception) as caught:
        _class_body_interrupted()
    stop = interrupt_in(caught.value)
    assert stop is not None and interrupt_name(stop) == "SIGTERM"


def test_an_error_of_a_clean_up_during_a_stop_is_the_stop():
    try:
        try:
            raise Interrupted("SIGHUP")
        except KeyboardInterrupt:
            raise sqlite3.OperationalError("disk I/O error")  # noqa: B904 (the implicit context is the point)
    except sqlite3.OperationalError as exc:
        stop = interrupt_in(exc)
    assert stop is not None and interrupt_name(stop) == "SIGHUP"


def test_an_error_without_a_stop_behind_it_is_not_one():
    try:
        try:
            raise ValueError("first")
        except ValueError:
            raise OSError(5, "second")  # noqa: B904 (the implicit context is the point)
    except OSError as exc:
        assert interrupt_in(exc) is None
    assert interrupt_in(None) is None


def test_a_chain_that_loops_ends():
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__context__, b.__context__ = b, a
    assert interrupt_in(a) is None


@pytest.mark.parametrize("wrapped", [RuntimeError, OSError, PolycrateError, sqlite3.OperationalError])
def test_the_command_line_exits_130_for_a_wrapped_stop(monkeypatch, capsys, wrapped):
    from polycrate.cli import flags

    def command_checked(args: object) -> None:  # the first thing main does with a parsed command
        try:
            raise Interrupted("SIGTERM")
        except KeyboardInterrupt as stop:
            raise wrapped("in the way") from stop

    monkeypatch.setattr(flags, "check_command_takes_them", command_checked)
    assert cli.main(["version"]) == 130
    assert capsys.readouterr().err.strip() == "polycrate: interrupted"
