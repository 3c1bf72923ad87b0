"""Ansible actions: ansible-playbook with `block` and `workspace` as extra variables."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from polycrate.config.action_view import playbook_path


def build_command(request, private: Path) -> tuple[list[str], dict[str, str]]:
    from polycrate.runtime.action import action_variables

    playbook = playbook_path(request.block, request.action)
    extra = private / "polycrate-vars.json"
    # the file may carry secrets from config: readable by us only
    fd = os.open(extra, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(action_variables(request), handle)
    argv = [sys.executable, "-m", "polycrate.runtime.ansible_playbook", str(playbook), "-e", f"@{extra}"]
    if request.check:
        argv.append("--check")
    if request.diff:
        argv.append("--diff")
    if request.ansible_options is not None:
        argv += request.ansible_options.playbook_args()  # after ours: the user's extra vars win
    from polycrate.runtime.script import write_snapshot

    env = ansible_environment(request)
    forks = fleet_forks(request.hosts, env, request.block.folder)
    if forks is not None:
        argv += ["--forks", str(forks)]
    env["POLYCRATE_WORKSPACE_SNAPSHOT_YAML"] = str(write_snapshot(request, private))  # as Polycrate gives it
    return argv, env


FORKS_PER_CORE = 10
FORKS_MAX = 50
ANSIBLE_FORKS = 5  # Ansible's default


def fleet_forks(hosts: int | None, env: dict[str, str], cwd: Path) -> int | None:
    """Forks for a play over `hosts` hosts, or None to leave Ansible's setting alone.

    Ansible's default (5) makes a task over 100 hosts twenty rounds of SSH round trips. Polycrate
    uses one fork per host, up to 10 per CPU core and at most 50 (each fork is a controller
    process of ~40 MB doing the task's work for one host), never fewer than Ansible's 5. The
    count is the preflight's (the most hosts one play of the action targets, --limit applied);
    without the preflight Ansible's default stays. Forks set by the user (ANSIBLE_FORKS, `-e
    ANSIBLE_FORKS=N`, `forks` in the ansible.cfg that applies) win."""
    if not hosts or hosts <= ANSIBLE_FORKS or "ANSIBLE_FORKS" in env:
        return None
    from polycrate.runtime.ssh_masters import ansible_config_file, config_keys

    if "forks" in config_keys(ansible_config_file(env, cwd), "defaults"):
        return None
    cap = min(FORKS_MAX, max(ANSIBLE_FORKS, FORKS_PER_CORE * (os.cpu_count() or 1)))
    return min(hosts, cap)


def ansible_environment(request) -> dict[str, str]:
    """The environment of an ansible action's process (without the event stream's variables)."""
    from polycrate.runtime.action import action_environment

    env = action_environment(request)
    env.setdefault("ANSIBLE_RETRY_FILES_ENABLED", "false")
    # One SSH round trip per task instead of four: measured 0.8 s against 4.2 s per task on the
    # Debian test host. Safe on Debian/Ubuntu sudo (no requiretty); ANSIBLE_PIPELINING=False turns it off.
    env.setdefault("ANSIBLE_PIPELINING", "True")
    # SSH masters shared by the run's steps, closed when it ends (runtime/sshshare.py: the rule for the
    # user's own ssh_args and control path); the engine gives none to a container run (it cannot see the folder)
    if request.ssh_sharing is not None:
        env = request.ssh_sharing.environment(env, request.block.folder)
    return env
