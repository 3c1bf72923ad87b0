"""The viewer's side of a run (issue 27): a closed stream, the toolchain's noise, the runtime header."""
from __future__ import annotations

import errno

from polycrate.run.preflight import local_connection_hosts
from polycrate.run.viewer import GuardedReporter, NoiseFilter
from polycrate.run.where import header
from polycrate.states import signal_of


class _Closed:
    def __init__(self, exc: BaseException):
        self.exc, self.calls = exc, 0

    def output(self, line: str) -> None:
        self.calls += 1
        raise self.exc

    notice = output


def test_a_closed_stream_is_said_once_and_then_left_alone():
    for exc, said in ((BrokenPipeError(errno.EPIPE, "Broken pipe"), "the output pipe was closed"),
                      (OSError(errno.EIO, "Input/output error"), "the terminal hung up"),
                      (ValueError("I/O operation on closed file."), "the output stream was closed")):
        inner, gone = _Closed(exc), []
        guarded = GuardedReporter(inner, gone.append)
        guarded.output("one")
        guarded.output("two")
        guarded.notice("three")
        assert gone == [said] and inner.calls == 1


def test_the_toolchains_deprecation_warning_is_hidden_with_its_source_line():
    noise = NoiseFilter()
    lines = [
        "TASK [ping] ***",
        "/opt/toolchain/lib/python3.11/site-packages/paramiko/pkey.py:100: CryptographyDeprecationWarning: DSA is "
        "deprecated and will be removed in a future release",
        '  "cipher": algorithms.TripleDES,',
        "ok: [db01]",
        "  indented output of the play itself",
    ]
    assert [line for line in lines if noise.shown(line)] == ["TASK [ping] ***", "ok: [db01]",
                                                              "  indented output of the play itself"]
    assert noise.hidden == 2


def test_the_runtime_header():
    assert header({"runtime": "local"}) == "runtime: local (this machine)"
    line = header({"runtime": "container", "image": "localhost/polycrate-base:1", "image_digest": "sha256:" + "ab" * 32},
                  "podman")
    assert line.startswith("runtime: container (podman), image localhost/polycrate-base:1 (sha256:abababababab)")


def test_hosts_with_a_local_connection_own_or_from_their_group():
    inventory = {"all": {"hosts": {"localhost": {"ansible_connection": "local"}, "db01": {"ansible_host": "x"}},
                         "children": {"here": {"vars": {"ansible_connection": "local"},
                                               "hosts": {"box": None, "far": {"ansible_connection": "ssh"}}}}}}
    assert local_connection_hosts(inventory) == ["box", "localhost"]
    assert local_connection_hosts({"all": {"hosts": {"db01": {}}}}) == []


def test_signal_names():
    assert signal_of(-9) == "SIGKILL" and signal_of(-15) == "SIGTERM"
    assert signal_of(0) is None and signal_of(1) is None and signal_of(None) is None


def test_a_stop_signal_waits_for_the_record_then_stops():
    import os
    import signal

    import pytest

    from polycrate.run.stopping import signals_deferred

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    written = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with signals_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):  # the handler would run at any of these bytecodes
                    written.append(1)
        assert len(written) == 1000  # the block ran to its end; the interrupt came after it
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
