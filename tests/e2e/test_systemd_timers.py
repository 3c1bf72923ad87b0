"""Schedules on a real systemd: `polycrate schedules apply` on a host that boots systemd as PID 1
(tests/fleet/systemdhost.py), its timer enabled, fired by systemd, and the runs it started recorded.

This checkout's polycrate runs inside the host: the checkout (with its .venv) and the Python the venv was made
from are bind-mounted at the same paths, read-only; the workspace is a folder of this machine mounted writable.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import REPO, wait_for, write

pytestmark = pytest.mark.e2e

POLYCRATE = Path(sys.executable).parent / "polycrate"


@pytest.fixture(scope="module")
def timer_host():
    if shutil.which("podman") is None:
        pytest.skip("needs podman")
    if not POLYCRATE.is_file():
        pytest.skip("needs the polycrate command of a virtualenv (scripts/setup.sh)")
    from tests.fleet.systemdhost import SystemdHost, SystemdNetwork

    share = Path(tempfile.mkdtemp(prefix="polycrate-timers-"))
    volumes = [(REPO, False), (share, True)]
    if not Path(sys.base_prefix).is_relative_to("/usr"):  # a Python of its own (pyenv): the venv's links point there
        volumes.append((Path(sys.base_prefix), False))
    network = SystemdNetwork()
    host = SystemdHost("timers", network=network, services=("ssh",), volumes=volumes)
    try:
        host.start()
        yield host, share
    finally:
        host.stop()
        network.stop()
        shutil.rmtree(share, ignore_errors=True)


def polycrate(host, root: Path, *args: str):
    return host.exec([str(POLYCRATE), "-w", str(root), *args], timeout=600)


def test_a_timer_fires_when_its_schedule_says_and_each_run_is_recorded(timer_host):
    """systemd's default AccuracySec=1min let a timer fire anywhere in the minute after its time: every timer of
    the host at the same second of the minute (:39 here), and an every-2-seconds schedule, shown by `schedules
    plan` as 2 s apart, ran once a minute. Our timers say AccuracySec=1s: they fire when the plan says."""
    host, share = timer_host
    root = share / "ws"
    write(root / "blocks" / "maint" / "block.poly", """
        name: maint
        actions:
          - name: hello
            script: ['echo "hello from $(hostname)"']
        """)
    write(root / "workspace.poly", """
        name: timers
        config: {runtime: local}
        blocks:
          - name: maint
        workflows:
          - name: tick
            steps:
              - {name: hello, block: maint, action: hello}
            schedule: "*-*-* *:*:0/2"
        """)
    applied = polycrate(host, root, "schedules", "apply")
    assert applied.returncode == 0, applied.stderr
    unit = "polycrate-timers-tick"
    assert f"systemctl daemon-reload && systemctl enable --now {unit}.timer" in applied.stdout
    host.exec(f"systemctl daemon-reload && systemctl enable --now {unit}.timer", check=True)
    try:
        shown = host.exec(["systemctl", "show", "-p", "AccuracyUSec,OnCalendar", f"{unit}.timer"], check=True)
        assert "AccuracyUSec=1s\n" in shown.stdout, shown.stdout

        def runs() -> list[dict]:
            listed = polycrate(host, root, "-o", "json", "runs", "list")
            assert listed.returncode == 0, listed.stderr
            found = [r for r in json.loads(listed.stdout)["runs"] if r["status"] != "running"]
            return found if len(found) >= 2 else []

        done = wait_for(runs, "two runs started by the timer", deadline=600)
        assert {(r["name"], r["status"]) for r in done} == {("tick", "succeeded")}, done
        # who started them, as `runs list` shows it (BY): the unit, not a person logged in as root
        assert all((r["user"], r["host"]) == (f"systemd:{unit}.service", "timers") for r in done), done
        journal = host.exec(["journalctl", "-u", f"{unit}.service", "--no-pager"], check=True).stdout
        assert "hello from timers" in journal and "workflow tick succeeded" in journal, journal[-3000:]
        listed = polycrate(host, root, "-o", "json", "schedules", "list")
        assert {(i["kind"], i["state"]) for i in json.loads(listed.stdout)["installed"]} == {
            ("service", "applied"), ("timer", "applied")}, listed.stdout
    finally:
        host.exec(f"systemctl disable --now {unit}.timer")


def test_a_timer_run_uses_the_runtime_of_the_shell_that_applied_it(timer_host):
    """`POLYCRATE_RUNTIME=local` (this machine's default runtime) in the admin's shell: `workflows run` ran the
    workflow here, but its timer's run got no such variable, ran in a container (the default), and on this host,
    which has neither podman nor docker, failed before it was recorded, every time. apply now writes the variable
    into the unit, as it writes the identity file: the timer's run is the run the admin tried."""
    host, share = timer_host
    root = share / "machine-default"
    write(root / "blocks" / "maint" / "block.poly", """
        name: maint
        actions:
          - name: where
            script: ['echo "ran on $(hostname)"']
        """)
    write(root / "workspace.poly", """
        name: machine
        blocks:
          - name: maint
        workflows:
          - name: where
            steps:
              - {name: where, block: maint, action: where}
            schedule: "*-*-* 04:00:00"
        """)
    assert host.exec("command -v podman || command -v docker").returncode != 0, "the host has no container engine"
    by_hand = host.exec([str(POLYCRATE), "-w", str(root), "workflows", "run", "where"],
                        env={"POLYCRATE_RUNTIME": "local"}, timeout=600)
    assert by_hand.returncode == 0 and "ran on timers" in by_hand.stdout, by_hand.stdout + by_hand.stderr
    applied = host.exec([str(POLYCRATE), "-w", str(root), "schedules", "apply"], env={"POLYCRATE_RUNTIME": "local"},
                        timeout=600)
    assert applied.returncode == 0, applied.stderr
    unit = "polycrate-machine-where"
    service = host.exec(["cat", f"/etc/systemd/system/{unit}.service"], check=True).stdout
    assert "Environment=POLYCRATE_RUNTIME=local\n" in service, service
    # what the timer does at 04:00, now: start the service (it ends when the run does: Type=oneshot)
    started = host.exec(f"systemctl daemon-reload && systemctl start {unit}.service")
    journal = host.exec(["journalctl", "-u", f"{unit}.service", "--no-pager"], check=True).stdout
    assert started.returncode == 0, journal[-3000:]
    assert "ran on timers" in journal and "runtime: local (this machine)" in journal, journal[-3000:]
    listed = json.loads(polycrate(host, root, "-o", "json", "runs", "list").stdout)["runs"]
    assert [(r["name"], r["status"], r["user"]) for r in listed] == [
        ("where", "succeeded", f"systemd:{unit}.service"), ("where", "succeeded", "root")], listed


def test_schedules_list_by_a_user_who_cannot_read_a_workspace(timer_host):
    """`schedules list` reads each installed schedule's workspace again: one the lister may not read (root's
    0700 folder, listed by another user) is one row saying so, not an error that hides every other row."""
    host, share = timer_host
    root = share / "private"
    write(root / "blocks" / "maint" / "block.poly", """
        name: maint
        actions:
          - {name: hello, script: ['echo hello']}
        """)
    write(root / "workspace.poly", """
        name: private
        config: {runtime: local}
        blocks:
          - name: maint
        workflows:
          - name: nightly
            steps:
              - {name: hello, block: maint, action: hello}
            schedule: "*-*-* 02:00:00"
        """)
    dest = "/srv/units"
    host.exec(f"mkdir -p {dest} && chmod 755 {dest} /root", check=True)  # the container's own /root: the venv's Python
    applied = polycrate(host, root, "schedules", "apply", "--dest", dest)
    assert applied.returncode == 0, applied.stderr
    host.exec(["chmod", "700", str(root)], check=True)
    try:
        listed = host.exec([str(POLYCRATE), "-o", "json", "schedules", "list", "--dest", dest], user="ubuntu")
        assert listed.returncode == 0, listed.stderr
        states = {(i["kind"], i["state"], i["reason"]) for i in json.loads(listed.stdout)["installed"]}
        reason = (f"{root / 'workspace.poly'} cannot be read here (Permission denied): list as the schedule's user "
                  "(or root) to see its state")
        assert states == {("service", "unknown", reason), ("timer", "unknown", reason)}, listed.stdout
        as_root = json.loads(host.exec([str(POLYCRATE), "-o", "json", "schedules", "list", "--dest", dest],
                                       check=True).stdout)
        assert {i["state"] for i in as_root["installed"]} == {"applied"}
    finally:
        host.exec(["chmod", "755", str(root)])


def test_a_timer_run_stopped_at_its_timeout_says_so_and_a_systemctl_stop_does_not(timer_host):
    """A schedule's `timeout` is its unit's TimeoutStartSec: systemd stops the run with SIGTERM when it runs out.
    The record said only "interrupted (SIGTERM)", as for anyone's `systemctl stop`. Now systemd is asked (the
    unit's Result is `timeout`, set before its SIGTERM) and the run and its step say that the timeout stopped it;
    a `systemctl stop` still reads "interrupted (SIGTERM)"."""
    host, share = timer_host
    root = share / "hanging"
    write(root / "blocks" / "maint" / "block.poly", """
        name: maint
        actions:
          - name: hang
            script: ['echo "hanging"', 'sleep 600']
        """)
    write(root / "workspace.poly", """
        name: hanging
        config: {runtime: local}
        blocks:
          - name: maint
        workflows:
          - name: capped
            steps:
              - {name: hang, block: maint, action: hang}
            schedule: {on_calendar: "*-*-* 04:00:00", timeout: 20}
          - name: stopped
            steps:
              - {name: hang, block: maint, action: hang}
            schedule: "*-*-* 04:00:00"
        """)
    assert polycrate(host, root, "schedules", "apply").returncode == 0
    host.exec("systemctl daemon-reload", check=True)

    def runs() -> list[dict]:
        return json.loads(polycrate(host, root, "-o", "json", "runs", "list").stdout)["runs"]

    # what the timer does at 04:00, now: start the service, which systemd stops after TimeoutStartSec=20
    started = host.exec("systemctl start polycrate-hanging-capped.service", timeout=600)
    assert started.returncode != 0, started.stdout + started.stderr
    capped = wait_for(lambda: [r for r in runs() if r["name"] == "capped" and r["status"] != "running"],
                      "the capped run's record")[0]
    said = "stopped by systemd after TimeoutStartSec=20s (the schedule's timeout) ran out: SIGTERM to " \
           "polycrate-hanging-capped.service"
    assert capped["status"] == "interrupted" and capped["message"] == said, capped
    shown = json.loads(polycrate(host, root, "-o", "json", "runs", "show", capped["run_id"]).stdout)
    assert shown["steps"][0]["message"] == said, shown["steps"]
    # someone's `systemctl stop` of a running unit: not its timeout
    host.exec("systemctl start --no-block polycrate-hanging-stopped.service", check=True)
    wait_for(lambda: [r for r in runs() if r["name"] == "stopped" and r["current_step"] == "hang"], "the run's step")
    host.exec("systemctl stop polycrate-hanging-stopped.service", check=True, timeout=600)
    stopped = wait_for(lambda: [r for r in runs() if r["name"] == "stopped" and r["status"] != "running"],
                       "the stopped run's record")[0]
    assert (stopped["status"], stopped["message"]) == ("interrupted", "interrupted (SIGTERM)"), stopped


def test_schedules_list_without_flags_finds_a_schedule_applied_with_cron(timer_host):
    """`schedules apply --cron` writes /etc/cron.d; a plain `schedules list` read only /etc/systemd/system and said
    "no polycrate schedules in /etc/systemd/system", while the web view's Schedules page (which reads both) showed
    the entry. Both now look where apply writes without --dest (schedule.listed_dests), and the CLI says where."""
    host, share = timer_host
    root = share / "by-cron"
    write(root / "blocks" / "maint" / "block.poly", """
        name: maint
        actions:
          - {name: hello, script: ['echo hello']}
        """)
    write(root / "workspace.poly", """
        name: bycron
        config: {runtime: local}
        blocks:
          - name: maint
        workflows:
          - name: yearly
            steps:
              - {name: hello, block: maint, action: hello}
            schedule: "0 4 1 1 *"
        """)
    host.exec("mkdir -p /etc/cron.d", check=True)
    applied = polycrate(host, root, "schedules", "apply", "--cron")
    assert applied.returncode == 0, applied.stderr
    entry = "/etc/cron.d/polycrate-bycron-yearly"
    try:
        listed = polycrate(host, root, "-o", "json", "schedules", "list")
        assert listed.returncode == 0, listed.stderr
        document = json.loads(listed.stdout)
        mine = [(i["path"], i["kind"], i["state"]) for i in document["installed"] if i["workspace_root"] == str(root)]
        assert mine == [(entry, "cron", "applied")], listed.stdout
        assert document["dests"] == ["/etc/systemd/system", "/etc/cron.d"], document
        text = polycrate(host, root, "schedules", "list")
        assert text.returncode == 0, text.stderr
        row = next(line for line in text.stdout.splitlines() if line.endswith("polycrate-bycron-yearly"))
        assert row.split()[:3] == ["yearly", "cron", "0"] and " applied " in row, text.stdout
        assert "looked in /etc/systemd/system and /etc/cron.d (--dest DIR to look elsewhere)" in text.stdout
        only_cron = json.loads(polycrate(host, root, "-o", "json", "schedules", "list", "--cron").stdout)
        assert only_cron["dests"] == ["/etc/cron.d"] and entry in {i["path"] for i in only_cron["installed"]}
    finally:
        host.exec(["rm", "-f", entry])
    nothing = polycrate(host, root, "schedules", "list", "--cron")
    assert nothing.stdout.strip() == "no polycrate schedules in /etc/cron.d (--dest DIR to look elsewhere)", nothing.stdout
