"""The run outlives its viewer (issue 27): `polycrate workflows run slow | head -3` runs on to its end
with its output in the step logs; its exit code, record, metrics, webhook body and `--resume` all
tell the true outcome, and the record has a notice saying the viewer went away."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import run_cli, write
from tests.helpers import cli_environment, validate_document
from tests.integration.test_runs_alerts import _metric, parse_prometheus_text

WORKSPACE = """
name: pipes
blocks:
  - name: s
workflows:
  - name: slow
    steps:
      - {{name: tick, block: s, action: tick}}
      - {{name: done, block: s, action: done}}
  - name: slow-fail
    steps:
      - {{name: tick, block: s, action: tick}}
      - {{name: broken, block: s, action: broken}}
      - {{name: after, block: s, action: done}}
webhooks:
  - url: http://127.0.0.1:{port}/hook
    on: [success, failure]
"""
BLOCK = """
name: s
version: 1.0.0
actions:
  - name: tick
    script:
      - "for i in 1 2 3 4 5 6; do echo line $i; sleep 0.5; done"
  - name: done
    script: ["echo done > \\"$POLYCRATE_WORKSPACE/$POLYCRATE_STEP.txt\\""]
  - name: broken
    script:
      - "if [ -e \\"$POLYCRATE_WORKSPACE/fixed\\" ]; then echo fixed now; exit 0; fi"
      - "echo broken on purpose; exit 3"
"""


@pytest.fixture
def ws(tmp_path, hook_server):
    root = tmp_path / "ws"
    write(root / "workspace.poly", WORKSPACE.format(port=hook_server.port))
    write(root / "blocks/s/block.poly", BLOCK)
    return root


def through_head(root, *args: str) -> tuple[int, str, str]:
    """`polycrate ARGS | head -3` in a real shell: polycrate's exit code, what head printed, polycrate's stderr."""
    command = f"{sys.executable} -m polycrate {' '.join(args)} 2>stderr.txt | head -3; echo \"rc=${{PIPESTATUS[0]}}\""
    done = subprocess.run(["bash", "-c", command], cwd=root, env=cli_environment(), capture_output=True, text=True,
                          timeout=300)
    *shown, rc = done.stdout.splitlines()
    return int(rc.removeprefix("rc=")), "\n".join(shown), (root / "stderr.txt").read_text()


def latest(root) -> dict:
    shown = run_cli("runs", "show", "latest", "-o", "json", cwd=root)
    return validate_document(json.loads(shown.stdout), "run")


def metrics(root, workflow: str) -> tuple[float, float]:
    samples = parse_prometheus_text((root / ".polycrate/metrics/polycrate.prom").read_text())
    return (_metric(samples, "polycrate_workflow_last_exit_code", workflow),
            _metric(samples, "polycrate_workflow_last_success_timestamp_seconds", workflow))


def assert_viewer_notice(record: dict) -> None:
    notices = [n["text"] for n in record["notices"]]
    assert any("the output pipe was closed during step tick" in n and "went on to its end" in n
               for n in notices), notices


def test_a_closed_pipe_does_not_stop_a_run_that_succeeds(ws, hook_server):
    rc, shown, stderr = through_head(ws, "workflows", "run", "slow")
    assert len(shown.splitlines()) == 3
    assert rc == 0, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    record = latest(ws)
    assert record["status"] == "succeeded" and record["exit_code"] == 0 and record["workflow_success"] is True
    assert [s["status"] for s in record["steps"]] == ["succeeded", "succeeded"]
    assert (ws / "done.txt").read_text().strip() == "done"  # step 2 ran after the viewer went
    assert_viewer_notice(record)
    log = run_cli("runs", "logs", record["run_id"], "--step", "tick", cwd=ws).stdout
    assert all(f"line {i}" in log for i in range(1, 7)), log  # the whole output, also what head never read
    exit_code, last_success = metrics(ws, "slow")
    assert exit_code == 0 and last_success > 0
    body = validate_document(hook_server.requests[-1]["body"], "webhook")
    assert body["status"] == "succeeded" and body["workflow_success"] is True and body["run_id"] == record["run_id"]


def test_a_closed_pipe_records_a_failed_run_as_failed_and_resume_agrees(ws, hook_server):
    rc, shown, stderr = through_head(ws, "workflows", "run", "slow-fail")
    assert rc == 1, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    record = latest(ws)
    assert record["status"] == "failed" and record["exit_code"] == 1 and record["workflow_success"] is False
    assert record["failed_step"] == "broken"
    assert [s["status"] for s in record["steps"]] == ["succeeded", "failed", "skipped"]
    assert_viewer_notice(record)
    exit_code, last_success = metrics(ws, "slow-fail")
    assert exit_code == 1 and last_success == 0  # the "last success too old" alert keeps its truth
    body = validate_document(hook_server.requests[-1]["body"], "webhook")
    assert body["status"] == "failed" and body["workflow_success"] is False and body["failed_step"] == "broken"

    (ws / "fixed").write_text("")
    resumed = run_cli("workflows", "run", "slow-fail", "--resume", cwd=ws)
    assert resumed.returncode == 0, resumed.output
    assert f"resuming run {record['run_id']} at step broken" in resumed.stdout


def test_a_closed_pipe_under_json_output_keeps_the_exit_code(ws):
    """-o json: the document is the last thing on stdout; a reader that left early changes nothing."""
    proc = subprocess.Popen([sys.executable, "-m", "polycrate", "workflows", "run", "slow-fail", "-o", "json"],
                            cwd=ws, env=cli_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the run prints anything on stdout
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 1, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    assert "broken on purpose" in stderr  # the story (stderr under -o json) was still shown
    assert latest(ws)["status"] == "failed"
