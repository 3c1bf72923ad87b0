"""What a stopped step's record says a stop left: the last word of each host (runtime/events.py if_stopped)."""
from polycrate.runtime.events import EventKind, event_line, if_stopped


def test_the_last_word_of_each_host_in_the_order_they_first_spoke(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text(
        event_line(EventKind.IF_STOPPED, host="app01", message="app stopped on app01")
        + event_line(EventKind.OK, host="db01", changed=False)
        + event_line(EventKind.IF_STOPPED, host="db01", message="db01 half-replaced")
        + event_line(EventKind.IF_STOPPED, host="web02", message="web02 stopped")
        + event_line(EventKind.IF_STOPPED, host="web02", message="")  # started again: nothing left to say
        + event_line(EventKind.IF_STOPPED, host="app01", message="app still stopped on app01 ")
        + '{"event": "if_stopped", "host": "db01", "mess'  # a last line cut short by the stop
    )
    assert if_stopped(events) == ["app still stopped on app01", "db01 half-replaced"]
    assert if_stopped(tmp_path / "none.jsonl") == []
