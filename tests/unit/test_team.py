"""Team mode's pure rules: a workflow's queue as workspace.poly declares it, and the keys that hold a workflow
(procrastinate's lock name, the fence's advisory-lock key)."""
from __future__ import annotations

import pytest

from polycrate.config.workspace import load_workspace
from polycrate.errors import ConfigError
from tests.conftest import write

WORKSPACE = """
name: w
blocks:
  - name: b
workflows:
  - name: anywhere
    steps: [{name: s, block: b, action: a}]
  - name: inside
    queue: dmz-1
    steps: [{name: s, block: b, action: a}]
"""


def _workspace(tmp_path, text: str):
    write(tmp_path / "workspace.poly", text)
    write(tmp_path / "blocks/b/block.poly", "name: b\nactions:\n  - {name: a, script: ['true']}\n")
    return load_workspace(tmp_path)


def test_a_workflow_runs_on_the_default_queue_unless_it_names_one(tmp_path):
    ws = _workspace(tmp_path, WORKSPACE)
    assert (ws.workflows["anywhere"].queue, ws.workflows["inside"].queue) == ("default", "dmz-1")


@pytest.mark.parametrize("queue", ["'two words'", "'-x'", "[a]", "7"])
def test_a_queue_that_is_not_a_name_is_refused_at_its_line(tmp_path, queue):
    with pytest.raises(ConfigError) as caught:
        _workspace(tmp_path, WORKSPACE.replace("queue: dmz-1", f"queue: {queue}"))
    assert "queue" in str(caught.value) and caught.value.line == 8


def test_the_keys_that_hold_a_workflow_differ_by_workspace_and_workflow_and_never_change():
    from polycrate.team.launch import fence_key, lock_name

    keys = {fence_key(ws, wf) for ws in ("a", "b") for wf in ("nightly", "backup")}
    assert len(keys) == 4 and all(-(2**63) <= k < 2**63 for k in keys)
    assert fence_key("a", "nightly") == fence_key("a", "nightly") == -8078119037402974096  # a new key would let old and new polycrates run one workflow twice
    assert fence_key("a:b", "c") != fence_key("a", "b:c")  # no two names run together into one key
    assert lock_name("acme", "nightly") == "polycrate:acme:workflow:nightly"


def test_a_line_that_repeats_is_said_once_then_once_a_minute_with_its_count():
    """While the backend is away psycopg's pool says "error connecting" every second or so: an hour's outage
    was 3,600 lines per worker in its journal."""
    from polycrate.team.worker import Repeats

    now = [0.0]
    out: list[str] = []
    said = Repeats(out.append, every=60.0, clock=lambda: now[0])
    for second in range(150):  # 150 s of the same line, one a second
        now[0] = float(second)
        said("pool: error connecting")
    now[0] = 151.0
    said("the backend is back")
    said("the backend is back")  # once more at once: held
    now[0] = 152.0
    said("run 1 started")
    assert out == ["pool: error connecting",
                   "pool: error connecting (and 59 more times in 60s)",
                   "pool: error connecting (and 59 more times in 60s)",
                   "pool: error connecting (and 29 more times in 31s)",
                   "the backend is back",
                   "the backend is back (and 1 more time in 1s)",
                   "run 1 started"]
