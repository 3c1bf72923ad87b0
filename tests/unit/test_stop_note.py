"""Who stopped a local run: the note `runs stop` (and the server's stop) leaves beside the run's lock before its
SIGTERM, read by the run for its record (history/locking.py), and the record's words for it (errors.py)."""
from __future__ import annotations

import os

from polycrate.errors import Interrupted, interrupt_reason, stopped_by
from polycrate.history.locking import RunLock, read_stop_request, request_stop, stop_note_path


def test_the_note_names_who_stops_only_for_its_run_and_process(tmp_path):
    lock = RunLock(tmp_path, "workflow-nightly", "workflow 'nightly'")
    lock.acquire()
    try:
        assert lock.stop_request("run-1") is None
        request_stop(lock.path, "run-1", os.getpid(), "alice@ops1")
        assert lock.stop_request("run-1") == "alice@ops1"
        assert lock.stop_request("run-2") is None  # a note for another run of the workflow
        assert read_stop_request(lock.path, "run-1", os.getpid() + 1) is None  # or another process
    finally:
        lock.release()
    assert not stop_note_path(lock.path).exists()  # the run is over: its note went with it


def test_a_damaged_note_is_no_one(tmp_path):
    lock = RunLock(tmp_path, "workflow-w", "workflow 'w'")
    lock.path.parent.mkdir(parents=True)
    stop_note_path(lock.path).write_text("{not json")
    assert read_stop_request(lock.path, "run-1", os.getpid()) is None
    stop_note_path(lock.path).write_text('["a list"]')
    assert read_stop_request(lock.path, "run-1", os.getpid()) is None


def test_the_record_s_words_say_who_and_how():
    assert stopped_by("alice@ops1") == "interrupted by alice@ops1 (polycrate runs stop)"
    assert stopped_by("web:bob") == "interrupted by web:bob (the server's stop)"
    assert interrupt_reason(Interrupted("SIGTERM", "interrupted by alice@ops1 (polycrate runs stop)")) == \
        "interrupted by alice@ops1 (polycrate runs stop)"
    assert interrupt_reason(Interrupted("SIGTERM")) is None and interrupt_reason(KeyboardInterrupt()) is None
