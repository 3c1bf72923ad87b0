"""RunContext.action_request: the one rule for what a run's ActionRequest carries (the zygote's and the run
container's warm-up requests, and each attempt of a step)."""
from __future__ import annotations

from pathlib import Path

from polycrate.config.workspace import load_workspace
from polycrate.run.context import RunContext
from polycrate.run.request import Reporter, RunOptions
from polycrate.runtime.ansible_options import AnsibleOptions
from tests.helpers import write


def _context(tmp_path: Path) -> RunContext:
    write(tmp_path / "workspace.poly", """
        name: requests
        blocks:
          - name: b
        workflows:
          - name: w
            steps:
              - {name: one, block: b, action: play}
        """)
    write(tmp_path / "blocks/b/block.poly", """
        name: b
        actions:
          - {name: play, playbook: play.yml}
        """)
    write(tmp_path / "blocks/b/play.yml", "- hosts: localhost\n  tasks: []\n")
    options = RunOptions(check=True, diff=True, display_env=(("COLUMNS", "120"),), env=(("A", "1"),),
                         force=True, ssh_key=tmp_path / "id_rsa", ansible=AnsibleOptions(limit="web"))
    run = RunContext(load_workspace(tmp_path), Reporter(), options, runtime=None)
    run.ssh_sharing = object()  # type: ignore[assignment]  # what the run's SSH masters are, as the request sees them
    run.zygote = object()  # type: ignore[assignment]
    return run


def test_every_request_of_a_run_carries_the_run_s_settings(tmp_path):
    run = _context(tmp_path)
    warm = run.action_request("b", "play", "w", "one")
    in_container = run.action_request("b", "play", "w", "one", ssh_sharing=False)
    attempt = run.action_request("b", "play", "w", "one", attempt=True, timeout=5.0, events_file=tmp_path / "e")
    for request in (warm, in_container, attempt):
        assert (request.ws, request.block.name, request.action.name, request.workflow, request.step) == (
            run.ws, "b", "play", "w", "one")
        assert (request.env, request.force, request.ssh_key, request.extra_env) == (
            (("A", "1"),), True, tmp_path / "id_rsa", {"COLUMNS": "120"})
    assert warm.ssh_sharing is run.ssh_sharing and attempt.ssh_sharing is run.ssh_sharing
    assert in_container.ssh_sharing is None
    # the warm-up requests stop there; an attempt has the run's check mode, zygote, options and its own bounds
    assert (warm.check, warm.diff, warm.zygote, warm.ansible_options, warm.timeout) == (False, False, None, None, None)
    assert (attempt.check, attempt.diff, attempt.zygote, attempt.timeout, attempt.events_file) == (
        True, True, run.zygote, 5.0, tmp_path / "e")
    assert attempt.ansible_options == AnsibleOptions(limit="web")


def test_a_single_action_has_no_step_name(tmp_path):
    run = _context(tmp_path)
    request = run.action_request("b", "play", None, "play", attempt=True)
    assert (request.workflow, request.step) == (None, None)


def test_an_attempt_s_limit_replaces_the_run_s(tmp_path):
    run = _context(tmp_path)
    request = run.action_request("b", "play", "w", "one", attempt=True, limit="db")
    assert request.ansible_options == AnsibleOptions(limit="db") and run.options.ansible == AnsibleOptions(limit="web")
