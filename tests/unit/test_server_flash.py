"""server/flash.py: the note a form's redirect carries is read back only under the session that made it."""
from __future__ import annotations

from polycrate.server import flash


def test_a_note_reads_back_under_its_key_only():
    value = flash.encode("session-a", {"message": "user carol added", "token": None})
    assert flash.decode("session-a", value) == {"message": "user carol added", "token": None}
    assert flash.decode("session-b", value) is None
    payload, _, signature = value.rpartition(".")
    assert flash.decode("session-a", payload + "x." + signature) is None  # changed: the signature fails
    for junk in (None, "", "no-dot", "." * 9000, "eyJ4IjogMX0.00"):
        assert flash.decode("session-a", junk) is None


def test_a_note_is_bounded():
    value = flash.encode("k", {"message": "x" * 50_000})
    assert len(flash.decode("k", value)["message"]) == flash.TEXT_MAX
