"""`-o json` after a run whose record the engine could not read back: one error line, not a traceback."""
from __future__ import annotations

import pytest

from polycrate.cli.run import summarize
from polycrate.run.request import RunKind, RunResult
from polycrate.states import RunState


def test_json_without_record_is_an_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    result = RunResult(RunKind.ACTION, "app deploy", run_id="r1", status=RunState.SUCCEEDED)  # record: None
    assert summarize(result, "json") == 0  # the run's own exit code stands
    out, err = capsys.readouterr()
    assert out == ""  # no half document on stdout
    assert "run r1: not readable from the run store, no JSON document" in err
    assert "Traceback" not in err
