"""Colours of real runs: Ansible colours its output for the run's log (also off a terminal, as a server's
launch is), the stored log keeps the colour codes (SGR) and no other escape sequence, the web page renders
them, and every plain reader (`runs logs`, its JSON, the API's log document, the raw download, the failure's
text) carries none. A secret split by a colour code is masked all the same."""
from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_cli, write
from tests.server_fixtures import start_server, wait_for

SECRET = "Col0ur-Split-Secret-91"
SGR = re.compile(r"\x1b\[[0-9;]*m")

WORKSPACE = """
name: paint
blocks:
  - name: c
workflows:
  - name: colours
    steps:
      - {name: play, block: c, action: play}
  - name: broken
    steps:
      - {name: fail, block: c, action: fail}
  - name: leak
    steps:
      - {name: split, block: c, action: split}
"""

BLOCK = """
name: c
actions:
  - name: play
    playbook: play.yml
  - name: fail
    playbook: fail.yml
  - name: split
    script:
      - printf 'the value is Col0ur-\\033[1;31mSplit\\033[0m-Secret-91 and \\033[2Kno cursor codes\\n'
"""

PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: say hello
      ansible.builtin.debug:
        msg: "hello in colour"
    - name: change something
      ansible.builtin.debug:
        msg: "changed on purpose"
      changed_when: true
"""

FAIL = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: break on purpose
      ansible.builtin.fail:
        msg: "broken in colour"
"""


def make(root: Path) -> Path:
    write(root / "workspace.poly", WORKSPACE)
    write(root / "inventory.yml", "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
    write(root / "blocks" / "c" / "block.poly", BLOCK)
    write(root / "blocks" / "c" / "play.yml", PLAY)
    write(root / "blocks" / "c" / "fail.yml", FAIL)
    write(root / "secrets.poly", f"blocks:\n  - name: c\n    config:\n      token: \"{SECRET}\"\n")
    return root


def run_id_of(result) -> str:
    found = re.search(r"\b(\d{8}-\d{6}-[0-9a-f]+)\b", result.stdout + result.stderr)
    assert found, result.output
    return found.group(1)


def stored_log(root: Path, run_id: str) -> str:
    files = [p for p in (root / ".polycrate").rglob("*.log") if run_id in str(p)]
    assert len(files) == 1, files
    return files[0].read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    root = make(tmp_path_factory.mktemp("colours") / "paint")
    return root


@pytest.fixture(scope="module")
def runs(ws) -> dict[str, str]:
    """One run of each workflow, by a real `polycrate workflows run` off a terminal (stdout is a pipe)."""
    out = {}
    for workflow, code in (("colours", 0), ("broken", 1), ("leak", 0)):
        result = run_cli("-w", str(ws), "workflows", "run", workflow)
        assert result.returncode == code, result.output
        assert "\x1b" not in result.stdout + result.stderr  # off a terminal: the story is plain
        out[workflow] = run_id_of(result)
    return out


def test_the_stored_log_of_a_real_run_keeps_ansibles_colours_only(ws, runs):
    log = stored_log(ws, runs["colours"])
    assert "\x1b[0;32m" in log and "\x1b[0;33m" in log, repr(log)  # ok: green, changed: yellow
    assert "hello in colour" in SGR.sub("", log)
    assert "\x1b" not in SGR.sub("", log)  # no escape sequence but colours
    split = stored_log(ws, runs["leak"])
    assert "\x1b[2K" not in split and "no cursor codes" in split


def test_runs_logs_text_and_json_carry_no_colour_code(ws, runs):
    text = run_cli("-w", str(ws), "runs", "logs", runs["colours"])
    assert text.returncode == 0 and "hello in colour" in text.stdout and "\x1b" not in text.stdout
    doc = run_cli("-w", str(ws), "runs", "logs", runs["colours"], "-o", "json")
    assert doc.returncode == 0 and "\\u001b" not in doc.stdout and "\x1b" not in doc.stdout
    logs = "".join(s["log"] for s in json.loads(doc.stdout)["steps"])
    assert "ok: [localhost]" in logs and "\x1b" not in logs
    follow = run_cli("-w", str(ws), "runs", "logs", runs["colours"], "--follow")
    assert "hello in colour" in follow.stdout and "\x1b" not in follow.stdout


def test_the_failure_text_is_plain(ws, runs):
    shown = json.loads(run_cli("-w", str(ws), "runs", "show", runs["broken"], "-o", "json").stdout)
    assert "broken in colour" in json.dumps(shown)
    assert "\\u001b" not in json.dumps(shown)
    assert "\x1b" in stored_log(ws, runs["broken"])  # the log itself is coloured


def test_a_secret_split_by_a_colour_code_is_masked(ws, runs):
    log = stored_log(ws, runs["leak"])
    plain = SGR.sub("", log)
    assert SECRET not in plain and "the value is ********" in plain, repr(log)
    output = [line for line in log.splitlines() if line.startswith("the value is")]
    assert output == ["the value is ********\x1b[1;31m\x1b[0m and no cursor codes"]  # the codes stay, no piece
    text = run_cli("-w", str(ws), "runs", "logs", runs["leak"]).stdout
    assert "the value is ******** and no cursor codes" in text and "\x1b" not in text


def test_the_runs_event_carries_plain_output(ws):
    """The event a notification or a webhook sends (here: the workspace handler's file) holds plain text."""
    result = run_cli("-w", str(ws), "--event-handler", "workspace", "workflows", "run", "broken")
    assert result.returncode == 1, result.output
    run_id = run_id_of(result)
    assert "\x1b" in stored_log(ws, run_id)
    events = list((ws / ".logs").rglob(f"{run_id}.yml"))
    assert len(events) == 1
    text = events[0].read_text(encoding="utf-8")
    assert "broken in colour" in text and "\x1b" not in text and "\\e[" not in text and "\\x1B" not in text


@pytest.mark.parametrize("how", ["--no-color", "NO_COLOR", "ANSIBLE_NOCOLOR"])
def test_a_user_who_turned_colour_off_gets_a_plain_log(ws, how):
    args = ["--no-color"] if how == "--no-color" else []
    result = run_cli("-w", str(ws), "workflows", "run", "colours", *args, env={how: "1"} if how != "--no-color" else None)
    assert result.returncode == 0, result.output
    log = stored_log(ws, run_id_of(result))
    assert "ok: [localhost]" in log and "\x1b" not in log


@pytest.fixture(scope="module")
def served(tmp_path_factory, ws, runs):
    server = start_server(tmp_path_factory.mktemp("colours-server"), [ws])
    yield server
    server.stop()


def api(server, role: str = "viewer") -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.tokens[role]}"}, timeout=60)


def test_the_api_log_and_the_raw_download_are_plain_the_page_coloured(served, runs):
    run_id = runs["colours"]
    doc = api(served).get(f"/api/v1/runs/{run_id}/log")
    assert doc.status_code == 200 and "\\u001b" not in doc.text
    assert "ok: [localhost]" in "".join(s["log"] for s in doc.json()["steps"])
    raw = api(served).get(f"/runs/{run_id}/log/raw")
    assert raw.status_code == 200 and "hello in colour" in raw.text and "\x1b" not in raw.text
    coloured = api(served).get(f"/runs/{run_id}/log/raw", params={"ansi": "1"})
    assert "\x1b[0;32m" in coloured.text
    assert api(served).get(f"/runs/{run_id}/log/raw", params={"ansi": "yes"}).status_code == 400
    page = api(served).get(f"/runs/{run_id}")
    assert page.status_code == 200 and "\x1b" not in page.text
    assert re.search(r'<span class="ansi-fg2">ok: \[localhost\]', page.text), page.text[-3000:]
    assert re.search(r'<span class="ansi-fg3">changed: \[localhost\]', page.text)
    found = api(served).get(f"/api/v1/runs/{run_id}/log", params={"search": "ok: [localhost]"}).json()
    assert found["matches"] and all("\x1b" not in m["text"] for m in found["matches"])


def test_a_server_launch_is_recorded_in_colour(served, ws):
    r = api(served, "operator").post("/api/v1/workspaces/paint/workflows/colours/runs", json={})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    wait_for(lambda: api(served).get(f"/api/v1/runs/{run_id}").json()["status"] != "running", what=run_id)
    assert "\x1b[0;32m" in stored_log(ws, run_id)
    assert "\\u001b" not in api(served).get(f"/api/v1/runs/{run_id}/log").text
