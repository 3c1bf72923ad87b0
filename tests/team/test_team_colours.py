"""Team mode: a worker's run is recorded in colour (as a server's launch is), the log chunks in PostgreSQL keep
the colour codes, and the plain readers (`runs logs`, `runs show -o json`) carry none."""
from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from tests.team.harness import Team
from tests.team.test_workers import _workspace

pytestmark = pytest.mark.team

PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: say hello
      ansible.builtin.debug:
        msg: "hello from a worker, in colour"
"""


@pytest.fixture
def team(team_env, tmp_path) -> Iterator[Team]:
    marks = tmp_path / "marks"
    marks.mkdir()
    root = _workspace(tmp_path / "ws", marks)
    with open(root / "workspace.poly", "a", encoding="utf-8") as handle:
        handle.write("  - name: paint\n    steps:\n      - {name: play, block: b, action: play}\n")
    with open(root / "blocks/b/block.poly", "a", encoding="utf-8") as handle:
        handle.write("  - name: play\n    playbook: play.yml\n")
    (root / "blocks/b/play.yml").write_text(PLAY, encoding="utf-8")
    for argv in (["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m",
                                 "a playbook"]):
        subprocess.run(["git", *argv], cwd=root, check=True, capture_output=True)
    team = Team(root, marks, team_env, tmp_path)
    try:
        yield team
    finally:
        team.stop_all()


def test_a_workers_run_is_recorded_in_colour_and_read_plain(team):
    team.start_worker("w1")
    waited = team.cli("workflows", "run", "paint", "--wait")
    assert waited.returncode == 0, waited.output
    run_id = waited.stdout.splitlines()[0]
    chunks = b"".join(bytes(r["data"]) for r in team.sql(
        "SELECT data FROM log_chunks WHERE workspace = 'teamws' AND run_id = %s ORDER BY seq", run_id))
    assert b"hello from a worker, in colour" in chunks and b"\x1b[0;32m" in chunks, chunks
    logs = team.cli("runs", "logs", run_id)
    assert "hello from a worker, in colour" in logs.stdout and "\x1b" not in logs.stdout
    as_json = team.cli("runs", "logs", run_id, "-o", "json").stdout
    assert "ok: [localhost]" in "".join(s["log"] for s in json.loads(as_json)["steps"])
    assert "\\u001b" not in as_json and "\\u001b" not in json.dumps(team.show(run_id))
