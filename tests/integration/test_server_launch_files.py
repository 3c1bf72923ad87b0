"""A launch's values do not outlive their use: a real `polycrate serve` on loopback launches a workflow that takes a
secret launch value, as an operator does from the API and the web view. Its plaintext exists only while a run
uses it (sealed to the server's key at rest), a relaunch and a resume within `--keep-launch-secrets` still get it,
after it they ask for it again in one line, and a run pruned by the history's retention takes its launch files
along; a launch that never got a record leaves none; an older version's plaintext files are sealed on start."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from polycrate.runtime.ansible_options import SECRET_FILE_HEAD
from tests.conftest import write
from tests.helpers import wait_for
from tests.integration.test_server_api import _session, api, wait_finished
from tests.server_fixtures import make_workspace, start_server

PASSWORD = "pw-Sealed-At-Rest-9137"

ROLLOUT = """
  - name: rollout
    description: keeps its values (outside the workspace), then waits to be fixed
    launch:
      variables:
        - {name: note, type: string, required: true}
        - {name: password, type: secret, required: true}
    steps:
      - {name: before, block: sh, action: keep}
      - {name: gate, block: sh, action: fixable}
  - name: held
    description: waits to be released, then keeps its values
    launch:
      variables:
        - {name: password, type: secret, required: true}
    steps:
      - {name: wait, block: sh, action: waits}
      - {name: after, block: sh, action: keep}
"""

ACTIONS = """
  - name: keep
    script:
      - 'printf "%s\\n" "$POLYCRATE_EXTRA_VARS" >> "$POLYCRATE_WORKSPACE/../witness-$(basename "$POLYCRATE_WORKSPACE").jsonl"'
  - name: waits
    script:
      - 'while [ ! -e "$POLYCRATE_WORKSPACE/release" ]; do sleep 0.1; done'
  - name: fixable
    script:
      - 'test ! -e "$POLYCRATE_WORKSPACE/broken"'
"""


def workspace(root: Path, name: str, history: str = "") -> Path:
    ws = make_workspace(root, name)
    write(ws / "workspace.poly", (ws / "workspace.poly").read_text() + ROLLOUT + history)
    write(ws / "blocks/sh/block.poly", (ws / "blocks/sh/block.poly").read_text().rstrip("\n") + "\n" + ACTIONS)
    return ws


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("launchfiles")
    server = start_server(tmp, [workspace(tmp / "ops", "ops"), workspace(tmp / "kept", "kept", HISTORY)])
    yield server
    server.stop()


HISTORY = "history:\n  keep_runs: 1\n"


def witnessed(ws: Path) -> list[dict]:
    path = ws.parent / f"witness-{ws.name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def holding(text: str, *folders: Path) -> list[str]:
    """Every file under ``folders`` whose bytes hold ``text``."""
    found = []
    for folder in folders:
        for path in folder.rglob("*") if folder.is_dir() else ():
            if path.is_file() and not path.is_symlink() and text.encode() in path.read_bytes():
                found.append(str(path))
    return found


def opened_folder(served) -> Path:
    """The server's private folder of opened values (/dev/shm/polycrate-launch-UID-...; none before this)."""
    from polycrate.server.launch_files import LaunchFiles

    return LaunchFiles(served.state).opened_folder()


def launch(client, ws: str, values: dict, **more) -> dict:
    r = client.post(f"/api/v1/workspaces/{ws}/workflows/rollout/runs", json={"vars": values} | more)
    assert r.status_code == 202, r.text
    return wait_finished(client, r.json()["run_id"])


def run_files(state: Path, run_id: str) -> list[str]:
    return sorted(p.name for p in (state / "launches").glob(f"{run_id}.*"))


def no_plaintext_left(served, secret: str) -> list[str]:
    """Once the run's process has ended (its record says so a moment before): no file holds the secret."""
    folders = [served.state, *served.workspaces, opened_folder(served)]
    wait_for(lambda: not holding(secret, *folders), "the secret's plaintext to go")
    return holding(secret, *folders)


def test_after_a_run_no_file_holds_a_secret_launch_value_and_a_relaunch_still_gets_it(served):
    """Was: the secret value sat in launches/RUN.secret.yml (plaintext) for ever."""
    ws = served.workspaces[0]
    client = api(served, "operator")
    (ws / "broken").unlink(missing_ok=True)
    first = launch(client, "ops", {"note": "one", "password": PASSWORD})
    assert first["status"] == "succeeded", first
    assert witnessed(ws)[-1] == {"note": "one", "password": PASSWORD}  # the run saw it
    assert no_plaintext_left(served, PASSWORD) == []
    wait_for(lambda: not opened_folder(served).exists(), "the server's private folder to go once empty")
    assert (served.state / "launches" / f"{first['run_id']}.secret.age").is_file()  # sealed, for a relaunch
    assert oct((served.state / "launch-key.txt").stat().st_mode & 0o777) == "0o600"
    # a relaunch within the bound gets the value (the run sees it; nobody is shown it)
    again = client.post(f"/api/v1/runs/{first['run_id']}/relaunch", json={})
    assert again.status_code == 202, again.text
    relaunched = wait_finished(client, again.json()["run_id"])
    assert relaunched["status"] == "succeeded", relaunched
    assert witnessed(ws)[-1] == {"note": "one", "password": PASSWORD}
    assert PASSWORD not in client.get(f"/api/v1/runs/{relaunched['run_id']}").text
    assert no_plaintext_left(served, PASSWORD) == []


def test_a_resume_opens_the_failed_runs_secret_again_and_it_goes_when_the_run_ends(served):
    ws = served.workspaces[0]
    client = api(served, "operator")
    secret = PASSWORD + "-resume"
    (ws / "broken").write_text("")
    failed = launch(client, "ops", {"note": "two", "password": secret})
    assert failed["status"] == "failed", failed
    assert no_plaintext_left(served, secret) == []
    (ws / "broken").unlink()
    r = client.post("/api/v1/workspaces/ops/workflows/rollout/runs", json={"resume": True})
    assert r.status_code == 202, r.text
    resumed = wait_finished(client, r.json()["run_id"])
    assert resumed["status"] == "succeeded" and resumed["resumed_from"] == failed["run_id"], resumed
    assert no_plaintext_left(served, secret) == []


def test_a_launch_that_did_not_start_leaves_no_file(served):
    """Was: its .out and .vars.yml stayed in launches/ for ever (a refused launch has no run to prune)."""
    client = api(served, "operator")
    before = set(os.listdir(served.state / "launches"))
    r = client.post("/api/v1/workspaces/kept/workflows/rollout/runs",
                    json={"resume": True, "vars": {"note": "nothing to resume", "password": PASSWORD}})
    assert r.status_code == 409 and "nothing to resume" in r.json()["error"], r.text
    assert set(os.listdir(served.state / "launches")) - before == set()


def test_a_run_pruned_by_the_retention_takes_its_launch_files_along(served):
    """Was: a pruned run's .out, .vars.yml and .secret.yml stayed in launches/ for ever."""
    ws = served.workspaces[1]  # history: keep_runs: 1
    client = api(served, "operator")
    first = launch(client, "kept", {"note": "first", "password": PASSWORD})
    assert first["status"] == "succeeded", first
    assert run_files(served.state, first["run_id"])  # its output and values, for a relaunch
    second = launch(client, "kept", {"note": "second", "password": PASSWORD})
    assert second["status"] == "succeeded", second
    assert client.get(f"/api/v1/runs/{first['run_id']}").status_code == 404  # pruned by the second's retention
    wait_for(lambda: not run_files(served.state, first["run_id"]), "the pruned run's launch files to go")
    assert run_files(served.state, second["run_id"]) == [f"{second['run_id']}.{s}" for s in ("out", "secret.age",
                                                                                             "vars.yml")]
    assert witnessed(ws)[-1]["note"] == "second"


def test_past_the_bound_a_relaunch_and_a_resume_ask_for_the_secret_again(tmp_path):
    """`--keep-launch-secrets 2s`: after it, the sealed values are gone; the API and the run page say so in one
    line (409, not a 500), and a new launch with the value given again runs."""
    ws = workspace(tmp_path / "ops", "ops")
    server = start_server(tmp_path, [ws], extra_args=("--keep-launch-secrets", "2s"))
    try:
        client = api(server, "operator")
        (ws / "broken").write_text("")
        failed = launch(client, "ops", {"note": "three", "password": PASSWORD})
        assert failed["status"] == "failed", failed
        sealed = server.state / "launches" / f"{failed['run_id']}.secret.age"
        time.sleep(max(0.0, sealed.stat().st_mtime + 2.2 - time.time()))  # the bound passes; nothing is timed
        (ws / "broken").unlink()
        relaunch = client.post(f"/api/v1/runs/{failed['run_id']}/relaunch", json={})
        assert relaunch.status_code == 409, relaunch.text
        said = (f"the secret launch values of run {failed['run_id']} are no longer kept (this server keeps them 2 "
                "seconds after the launch: serve --keep-launch-secrets)")
        assert relaunch.json()["error"] == f"{said}: launch the workflow from its page, giving them again"
        session, csrf = _session(server, "operator")
        page = session.post(f"/runs/{failed['run_id']}/relaunch", data={"csrf": csrf})
        assert page.status_code == 409 and "no longer kept" in page.text and "Traceback" not in page.text
        resume = client.post("/api/v1/workspaces/ops/workflows/rollout/runs", json={"resume": True})
        assert resume.status_code == 409, resume.text
        assert resume.json()["error"] == f"the run did not start: {said}; launch without resume, giving them again"
        assert not sealed.exists()
        anew = launch(client, "ops", {"note": "three", "password": PASSWORD})
        assert anew["status"] == "succeeded", anew
        assert witnessed(ws)[-1] == {"note": "three", "password": PASSWORD}
    finally:
        server.stop()


def test_a_run_that_outlives_a_restart_of_the_server_keeps_its_values_to_its_end_and_no_longer(tmp_path):
    """The run's process is not the server's child any more: the restarted server removes the plaintext once the
    run has ended (it watches the runs it found running), and the run's later step still got the value."""
    ws = workspace(tmp_path / "ops", "ops")
    server = start_server(tmp_path, [ws])
    try:
        client = api(server, "operator")
        r = client.post("/api/v1/workspaces/ops/workflows/held/runs", json={"vars": {"password": PASSWORD}})
        assert r.status_code == 202, r.text
        server.restart()
        (ws / "release").write_text("")
        ended = wait_finished(api(server, "operator"), r.json()["run_id"])
        assert ended["status"] == "succeeded", ended
        assert witnessed(ws) == [{"password": PASSWORD}]
        assert no_plaintext_left(server, PASSWORD) == []
    finally:
        server.stop()


def test_plaintext_files_of_an_older_version_are_sealed_on_start(tmp_path):
    """Was: nothing ever removed them. Now one line says how many, never what they hold."""
    ws = workspace(tmp_path / "ops", "ops")
    launches = tmp_path / "server-state" / "launches"
    launches.mkdir(parents=True, mode=0o700)
    old = launches / "20251130-101010-abcdef.secret.yml"
    old.write_text(f"{SECRET_FILE_HEAD}password: !unsafe '{PASSWORD}'\n")
    server = start_server(tmp_path, [ws])
    try:
        assert not old.exists()
        assert (launches / "20251130-101010-abcdef.secret.age").is_file()
        assert holding(PASSWORD, tmp_path / "server-state") == []
        server.stop()
        log = server.proc.stderr.read()
        assert "sealed 1 plaintext secret launch values file(s)" in log and PASSWORD not in log
    finally:
        server.stop()
