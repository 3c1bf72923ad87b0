"""Resuming from the web a workflow that takes launch values (`launch: variables:`), as an operator does it: a real
`polycrate serve` on loopback launches with values, a step fails, the operator fixes it and resumes (the API's
`{"resume": true}`, the workflow page's form). The resumed run runs the remaining steps with the values the failed
run was launched with (secret ones too, never shown); a resume that gives other values is refused in one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import write
from tests.integration.test_server_api import _session, api, wait_finished
from tests.server_fixtures import make_workspace, start_server

PASSWORD = "pw-Resume-Secret-4711"

ROLLOUT = """
  - name: rollout
    description: keeps its values, then waits to be fixed, then keeps them again
    launch:
      variables:
        - {name: note, type: string, required: true}
        - {name: password, type: secret, required: true}
        - {name: count, type: integer, min: 1, max: 5, default: 1}
    steps:
      - {name: before, block: sh, action: keep}
      - {name: gate, block: sh, action: fixable}
      - {name: after, block: sh, action: keep}
"""

ACTIONS = """
  - name: keep
    script:
      - 'printf "%s\\n" "$POLYCRATE_EXTRA_VARS" >> "$POLYCRATE_WORKSPACE/kept.jsonl"'
      - echo "kept the values at $POLYCRATE_STEP"
  - name: fixable
    script:
      - test -e "$POLYCRATE_WORKSPACE/fixed"
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    ops = make_workspace(tmp / "ops", "ops")
    write(ops / "workspace.poly", (ops / "workspace.poly").read_text() + ROLLOUT)
    write(ops / "blocks/sh/block.poly", (ops / "blocks/sh/block.poly").read_text().rstrip("\n") + "\n" + ACTIONS)
    server = start_server(tmp, [ops])
    yield server
    server.stop()


def kept(ws: Path) -> list[dict]:
    path = ws / "kept.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def fail_once(served, client) -> dict:
    """A launch with values whose gate step fails (nothing fixed yet)."""
    ws = served.workspaces[0]
    (ws / "fixed").unlink(missing_ok=True)
    (ws / "kept.jsonl").unlink(missing_ok=True)
    r = client.post("/api/v1/workspaces/ops/workflows/rollout/runs",
                    json={"vars": {"note": "first", "password": PASSWORD, "count": 3}})
    assert r.status_code == 202, r.text
    failed = wait_finished(client, r.json()["run_id"])
    assert failed["status"] == "failed", failed
    assert kept(ws) == [{"note": "first", "password": PASSWORD, "count": 3}]
    return failed


def test_a_resume_without_values_runs_the_rest_with_the_values_of_the_failed_run(served):
    """Was: the server filled the declared defaults and asked for the required values again (400 `vars.note:
    required`); given again, they went to a new file, and the run refused an @FILE other than its previous run's."""
    client = api(served, "operator")
    ws = served.workspaces[0]
    failed = fail_once(served, client)
    (ws / "fixed").write_text("")
    r = client.post("/api/v1/workspaces/ops/workflows/rollout/runs", json={"resume": True})
    assert r.status_code == 202, r.text
    resumed = wait_finished(client, r.json()["run_id"])
    assert resumed["status"] == "succeeded", resumed
    assert resumed["resumed_from"] == failed["run_id"]
    assert [s["name"] for s in resumed["steps"] if s["status"] not in ("skipped",)][-1] == "after"
    assert kept(ws)[-1] == {"note": "first", "password": PASSWORD, "count": 3}  # the secret reached the step
    for answer in (client.get(f"/api/v1/runs/{resumed['run_id']}").text,
                   client.get(f"/api/v1/runs/{resumed['run_id']}/log").text):
        assert PASSWORD not in answer


def test_a_resume_that_gives_the_same_values_runs_and_one_with_other_values_is_refused_in_one_line(served):
    client = api(served, "operator")
    ws = served.workspaces[0]
    failed = fail_once(served, client)
    (ws / "fixed").write_text("")
    other = client.post("/api/v1/workspaces/ops/workflows/rollout/runs",
                        json={"resume": True, "vars": {"note": "second", "password": PASSWORD, "count": 3}})
    assert other.status_code == 400, other.text
    assert other.json()["error"] == (
        f"the run did not start: a resumed run reuses the launch values of run {failed['run_id']}, and note differs;"
        " leave the host pattern, tags and values empty, or launch without resume")
    secret = client.post("/api/v1/workspaces/ops/workflows/rollout/runs",
                         json={"resume": True, "vars": {"password": "another-one-1"}})
    assert secret.status_code == 400 and "password differs" in secret.json()["error"]
    assert "another-one-1" not in secret.text and PASSWORD not in secret.text
    assert kept(ws) == [{"note": "first", "password": PASSWORD, "count": 3}]  # nothing ran
    # the workflow page's form, as a browser sends it: the values it was launched with, typed again
    session, csrf = _session(served, "operator")
    page = session.post("/workspaces/ops/workflows/rollout/launch",
                        data={"csrf": csrf, "resume": "yes", "var-note": "first", "var-password": PASSWORD,
                              "var-count": "3"})
    assert page.status_code == 303, page.text
    resumed = wait_finished(client, page.headers["location"].rsplit("/", 1)[-1])
    assert resumed["status"] == "succeeded" and resumed["resumed_from"] == failed["run_id"], resumed
    assert kept(ws)[-1] == {"note": "first", "password": PASSWORD, "count": 3}
    # its page's log names the steps it took over in the words of its Steps table, not the stored state
    shown = session.get(page.headers["location"]).text
    assert "(skipped (resumed))</span>" in shown and "(succeeded_before)" not in shown, shown
