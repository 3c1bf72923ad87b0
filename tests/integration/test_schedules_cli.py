"""`polycrate schedules plan|apply|list` and `workflows schedule`, run as the real CLI on a temp workspace."""
from __future__ import annotations

import configparser
import os
import re
import tempfile
import json
import shutil
import signal
import subprocess
from datetime import datetime
import time
import sys
from pathlib import Path

import pytest

from tests.helpers import Result, assert_one_line_error, run_cli_inprocess, tree

VENV_BIN = Path(sys.executable).parent / "polycrate"
CLI = [str(VENV_BIN)] if VENV_BIN.exists() else [sys.executable, "-m", "polycrate"]
ANALYZE = shutil.which("systemd-analyze")

WORKFLOW = """\
  - name: {name}
    steps:
      - name: hello
        block: maint
        action: hello
{schedule}"""


def write_workspace(root: Path, schedules: dict[str, str]) -> None:
    """workspace.poly with one workflow per entry; the value is the YAML under `schedule:` ('' for none)."""
    (root / "blocks" / "maint").mkdir(parents=True, exist_ok=True)
    (root / "blocks" / "maint" / "block.poly").write_text(
        "name: maint\nactions:\n  - name: hello\n    script: ['echo hello']\n"
    )
    workflows = "".join(
        WORKFLOW.format(name=name, schedule=f"    schedule: {spec}\n" if spec else "")
        for name, spec in schedules.items()
    )
    (root / "workspace.poly").write_text(f"name: acme\nblocks:\n  - name: maint\nworkflows:\n{workflows}")


def polycrate(root: Path, *args: str) -> Result:
    """In-process: planning and writing schedules needs no process of its own."""
    env = {"POLYCRATE_EXECUTABLE": CLI[0] if len(CLI) == 1 else "/usr/bin/true"}
    return run_cli_inprocess("-w", str(root), *args, env=env)


@pytest.fixture
def ws(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    write_workspace(
        root,
        {
            "nightly": "'*-*-* 02:00:00'",
            "weekdays": "{on_calendar: 'Mon..Fri 06:30', randomized_delay: 10m, timeout: 1h, persistent: false}",
            "unscheduled": "",
        },
    )
    return root, dest


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def strict_ini_check(path: Path) -> None:
    """Where systemd-analyze cannot run: a strict INI parse with the sections and keys a unit may have."""
    parser = configparser.ConfigParser(strict=True, interpolation=None, comment_prefixes=("#", ";"))
    parser.optionxform = str
    # Environment= may repeat (one variable each, as systemd reads it); any other key only once
    lines, seen = [], 0
    for line in path.read_text().splitlines():
        if line.startswith("Environment="):
            seen += 1
            line = f"Environment{seen}=" + line.split("=", 1)[1]
        lines.append(line)
    parser.read_string("\n".join(lines) + "\n")
    allowed = {
        "Unit": {"Description", "Wants", "After"},
        "Service": {"Type", "WorkingDirectory", *(f"Environment{n}" for n in range(1, 9)), "ExecStart", "User", "Group", "TimeoutStartSec",
                    "StandardOutput", "StandardError"},
        "Timer": {"OnCalendar", "AccuracySec", "Persistent", "RandomizedDelaySec"},
        "Install": {"WantedBy"},
    }
    for section in parser.sections():
        assert section in allowed, section
        assert set(parser[section]) <= allowed[section], (section, set(parser[section]))


def test_apply_writes_units_systemd_accepts(ws):
    root, dest = ws
    result = polycrate(root, "schedules", "apply", "--dest", str(dest))
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in dest.iterdir())
    assert names == [
        "polycrate-acme-nightly.service",
        "polycrate-acme-nightly.timer",
        "polycrate-acme-weekdays.service",
        "polycrate-acme-weekdays.timer",
    ]
    assert "systemctl daemon-reload && systemctl enable --now polycrate-acme-nightly.timer polycrate-acme-weekdays.timer" in result.stdout
    service = (dest / "polycrate-acme-weekdays.service").read_text()
    assert f"WorkingDirectory={root}\n" in service
    assert f"--workspace {root} workflows run --launched-by systemd:polycrate-acme-weekdays.service weekdays\n" \
        in service and "TimeoutStartSec=3600\n" in service
    timer = (dest / "polycrate-acme-weekdays.timer").read_text()
    assert "OnCalendar=Mon..Fri 06:30\nAccuracySec=1s\nPersistent=false\nRandomizedDelaySec=600\n" in timer
    units = sorted(str(p) for p in dest.iterdir())
    if ANALYZE:
        check = subprocess.run([ANALYZE, "verify", "--man=no", *units], capture_output=True, text=True)
        assert check.returncode == 0 and check.stderr == "", check.stderr
    else:  # pragma: no cover - only where systemd is not installed
        for unit in units:
            strict_ini_check(Path(unit))
    for unit in units:
        strict_ini_check(Path(unit))


def test_apply_twice_changes_nothing(ws):
    root, dest = ws
    assert polycrate(root, "schedules", "apply", "--dest", str(dest)).returncode == 0
    before = mtimes(dest)
    again = polycrate(root, "schedules", "apply", "--dest", str(dest))
    assert again.returncode == 0, again.stderr
    assert mtimes(dest) == before
    assert [line.split()[0] for line in again.stdout.splitlines() if str(dest) in line] == ["unchanged"] * 4


def test_plan_shows_a_new_file_whole_a_changed_one_as_a_diff_and_an_unchanged_one_not(ws):
    """plan printed every file whole, the unchanged ones too: a changed time was one line among a hundred."""
    root, dest = ws
    assert polycrate(root, "schedules", "apply", "--dest", str(dest)).returncode == 0
    poly = root / "workspace.poly"
    poly.write_text(poly.read_text().replace("Mon..Fri 06:30", "Mon..Fri 07:45"))
    plan = polycrate(root, "schedules", "plan", "--dest", str(dest))
    assert plan.returncode == 0, plan.stderr
    shown: dict[str, list[str]] = {}
    for line in plan.stdout.splitlines():
        if str(dest) in line:
            shown[line.split()[-1]] = current = []
        elif line.startswith("    | ") and shown:
            current.append(line[6:])
    timer = str(dest / "polycrate-acme-weekdays.timer")
    assert "-OnCalendar=Mon..Fri 06:30" in shown[timer] and "+OnCalendar=Mon..Fri 07:45" in shown[timer], plan.stdout
    assert not any(line.startswith(("+[Unit]", " [Install]", "+WantedBy")) for line in shown[timer]), shown[timer]
    assert len(shown[timer]) < len((dest / "polycrate-acme-weekdays.timer").read_text().splitlines())
    assert shown[str(dest / "polycrate-acme-nightly.timer")] == []  # unchanged: its name and verb only
    assert "unchanged" in plan.stdout and "would update" in plan.stdout
    (dest / "polycrate-acme-nightly.timer").unlink()  # a file to create again: whole
    again = polycrate(root, "schedules", "plan", "--dest", str(dest)).stdout
    created = again.split(str(dest / "polycrate-acme-nightly.timer"), 1)[1]
    assert "    | [Timer]" in created and "    | [Install]" in created, again


def test_removing_a_schedule_removes_only_our_files(ws, tmp_path):
    root, dest = ws
    assert polycrate(root, "schedules", "apply", "--dest", str(dest)).returncode == 0
    foreign = dest / "polycrate-acme-handmade.timer"  # our naming, no header: not ours
    foreign.write_text("[Timer]\nOnCalendar=daily\n")
    other_ws = (dest / "polycrate-acme-nightly.timer").read_text().replace(str(root), "/srv/other")
    (dest / "polycrate-other-nightly.timer").write_text(other_ws)  # ours, but another workspace's
    (dest / "backup.timer").write_text("[Timer]\nOnCalendar=daily\n")
    wants = dest / "timers.target.wants"
    wants.mkdir()
    (wants / "polycrate-acme-nightly.timer").symlink_to(dest / "polycrate-acme-nightly.timer")

    write_workspace(root, {"nightly": "", "weekdays": "{on_calendar: 'Mon..Fri 06:30'}"})
    result = polycrate(root, "schedules", "apply", "--dest", str(dest))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in dest.iterdir() if p.is_file()) == [
        "backup.timer",
        "polycrate-acme-handmade.timer",
        "polycrate-acme-weekdays.service",
        "polycrate-acme-weekdays.timer",
        "polycrate-other-nightly.timer",
    ]
    assert not (wants / "polycrate-acme-nightly.timer").is_symlink()  # the dangling enable link went too
    assert "removed" in result.stdout and "systemctl stop polycrate-acme-nightly.timer" in result.stdout


def test_invalid_expression_writes_nothing(ws):
    root, dest = ws
    write_workspace(root, {"nightly": "'*-*-* 02:00:00'", "broken": "{on_calendar: '*-*-* 25:00'}"})
    result = polycrate(root, "schedules", "apply", "--dest", str(dest))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"polycrate: error: {root / 'workspace.poly'}:")
    assert "workflow 'broken'" in lines[0] and "OnCalendar" in lines[0]
    assert list(dest.iterdir()) == []
    assert polycrate(root, "schedules", "plan", "--dest", str(dest)).returncode == 2


def test_a_cron_expression_with_seconds_is_one_line_saying_cron_takes_five_fields(ws):
    """A schedule copied from Quartz or Spring ("0 0 2 * * ?", seconds first) was refused as an OnCalendar
    expression ("systemd-analyze refuses it"), which told the admin nothing. Now every command that reads the
    workspace says, in one line naming workspace.poly and the line, that cron takes 5 fields and how to write
    that time, in cron's form and in systemd's."""
    root, dest = ws
    write_workspace(root, {"nightly": "'0 0 2 * * ?'"})
    for args in (("workspace", "validate"), ("schedules", "apply", "--dest", str(dest))):
        assert_one_line_error(
            polycrate(root, *args), f"{root / 'workspace.poly'}:10: workflow 'nightly': schedule: invalid cron "
            "expression '0 0 2 * * ?': cron takes 5 fields (minute hour day-of-month month day-of-week), not 6 "
            "(Quartz and Spring put seconds first): write '0 2 * * *', or on_calendar: '*-*-* 02:00:00' (systemd)")
    assert list(dest.iterdir()) == []


def test_an_on_calendar_with_seconds_gets_the_cron_advice_in_workspace_poly_and_workflows_schedule(ws):
    """`on_calendar: "0 0 2 * * ?"` and `workflows schedule --on-calendar "0 0 2 * * ?"` said only "systemd-analyze
    refuses it"; now both give the advice the short form and cron: give (one rule: cron.seconds_advice)."""
    root, dest = ws
    advice = ("invalid OnCalendar expression '0 0 2 * * ?': it reads as cron with seconds first; cron takes 5 fields "
              "(minute hour day-of-month month day-of-week), not 6 (Quartz and Spring put seconds first): write "
              "cron: '0 2 * * *', or on_calendar: '*-*-* 02:00:00' (systemd)")
    one_off = polycrate(root, "workflows", "schedule", "unscheduled", "--on-calendar", "0 0 2 * * ?", "--dest",
                        str(dest))
    assert_one_line_error(one_off, f"workflow 'unscheduled': schedule: {advice}")
    write_workspace(root, {"nightly": "{on_calendar: '0 0 2 * * ?'}"})
    assert_one_line_error(polycrate(root, "workspace", "validate"),
                          f"{root / 'workspace.poly'}:10: workflow 'nightly': schedule: {advice}")
    assert list(dest.iterdir()) == []


def test_plan_json_shows_files_and_three_next_runs(ws):
    root, dest = ws
    result = polycrate(root, "--output", "json", "schedules", "plan", "--dest", str(dest))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["mode"] == "systemd" and data["root"] == str(root)
    by_name = {s["workflow"]: s for s in data["schedules"]}
    assert set(by_name) == {"nightly", "weekdays"}
    assert len(by_name["nightly"]["next_runs"]) == 3
    # ISO 8601 UTC, as every time in the JSON; 02:00 in the machine's local time
    assert all(t.endswith("Z") for t in by_name["nightly"]["next_runs"])
    assert all(datetime.fromisoformat(t).astimezone().strftime("%H:%M:%S") == "02:00:00"
               for t in by_name["nightly"]["next_runs"])
    assert [f["status"] for f in by_name["nightly"]["files"]] == ["create", "create"]
    assert list(dest.iterdir()) == []  # plan writes nothing
    text = polycrate(root, "schedules", "plan", "--dest", str(dest))
    assert "next runs:" in text.stdout and "OnCalendar=*-*-* 02:00:00" in text.stdout


def test_cron_apply_and_list(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    dest = tmp_path / "cron.d"
    dest.mkdir()
    write_workspace(root, {"nightly": "'0 2 * * *'", "hourly": "{cron: '@hourly', user: automation, log_file: /tmp/h.log}"})
    result = polycrate(root, "schedules", "apply", "--cron", "--dest", str(dest))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["polycrate-acme-hourly", "polycrate-acme-nightly"]
    entry = (dest / "polycrate-acme-nightly").read_text().splitlines()[-1]
    assert entry.startswith(f"0 2 * * * root mkdir -p /var/log/polycrate && cd {root} && ")
    assert entry.endswith(f"--workspace {root} workflows run --launched-by cron:polycrate-acme-nightly nightly "
                          ">> /var/log/polycrate/acme-nightly.log 2>&1")
    assert (dest / "polycrate-acme-nightly").stat().st_mode & 0o777 == 0o644
    listing = json.loads(polycrate(root, "-o", "json", "schedules", "list", "--cron", "--dest", str(dest)).stdout)
    assert {(i["workflow"], i["expression"]) for i in listing["installed"]} == {("nightly", "0 2 * * *"), ("hourly", "@hourly")}
    before = mtimes(dest)
    assert polycrate(root, "schedules", "apply", "--cron", "--dest", str(dest)).returncode == 0
    assert mtimes(dest) == before


def test_one_off_workflow_schedule_survives_apply(ws):
    root, dest = ws
    result = polycrate(root, "workflows", "schedule", "unscheduled", "--on-calendar", "Sat 04:00", "--dest", str(dest))
    assert result.returncode == 0, result.stderr
    assert (dest / "polycrate-acme-unscheduled.timer").read_text().count("OnCalendar=Sat 04:00\n") == 1
    applied = polycrate(root, "schedules", "apply", "--dest", str(dest))
    assert applied.returncode == 0
    assert (dest / "polycrate-acme-unscheduled.timer").exists()  # written by hand on purpose: apply keeps it
    assert "kept" in applied.stdout
    removed = polycrate(root, "workflows", "schedule", "unscheduled", "--remove", "--dest", str(dest))
    assert removed.returncode == 0 and not (dest / "polycrate-acme-unscheduled.timer").exists()
    bad = polycrate(root, "workflows", "schedule", "nope", "--on-calendar", "daily", "--dest", str(dest))
    assert bad.returncode == 2 and "unknown workflow 'nope'" in bad.stderr
    bad = polycrate(root, "workflows", "schedule", "unscheduled", "--on-calendar", "Blursday", "--dest", str(dest))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_workflow_schedule_remove_says_what_it_removed_and_what_is_left_to_do(ws, tmp_path):
    """`workflows schedule NAME --remove` listed the files it removed and then only "systemctl daemon-reload",
    which leaves a started timer running; it did not say that workspace.poly still schedules the workflow (the
    next apply writes it again); and with nothing to remove it did not say that nothing was removed. Now it
    says each, exactly."""
    root, dest = ws
    assert polycrate(root, "schedules", "apply", "--dest", str(dest)).returncode == 0
    removed = polycrate(root, "workflows", "schedule", "nightly", "--remove", "--dest", str(dest))
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.splitlines() == [
        f"removed    {dest / 'polycrate-acme-nightly.service'}",
        f"removed    {dest / 'polycrate-acme-nightly.timer'}",
        "stop the removed timer: systemctl stop polycrate-acme-nightly.timer && systemctl daemon-reload",
        "note: workspace.poly still schedules 'nightly' (*-*-* 02:00:00): the next `polycrate schedules apply` "
        "writes it again; remove its schedule: there to stop it for good",
    ]
    assert sorted(p.name for p in dest.iterdir()) == ["polycrate-acme-weekdays.service", "polycrate-acme-weekdays.timer"]
    again = polycrate(root, "workflows", "schedule", "nightly", "--remove", "--dest", str(dest))
    assert again.returncode == 0 and again.stdout.splitlines() == [
        f"nothing removed: no timer, unit or cron file of workflow 'nightly' of the workspace at {root.resolve()} "
        f"in {dest}"]
    cron = tmp_path / "cron.d"
    cron.mkdir()
    assert polycrate(root, "workflows", "schedule", "unscheduled", "--cron", "5 4 * * *", "--dest",
                     str(cron)).returncode == 0
    gone = polycrate(root, "workflows", "schedule", "unscheduled", "--remove", "--dest", str(cron))
    assert gone.returncode == 0 and gone.stdout.splitlines() == [
        f"removed    {cron / 'polycrate-acme-unscheduled'}",
        "cron reads /etc/cron.d by itself: the removed entry no longer runs"]
    assert list(cron.iterdir()) == []


REQUIRED_VALUE = """\
name: acme
blocks:
  - name: maint
workflows:
  - name: nightly
    steps:
      - {name: hello, block: maint, action: hello}
    schedule: "*-*-* 02:00:00"
  - name: deploy
    launch:
      variables:
        - {name: replicas, type: integer, default: 2}
        - {name: version, type: string, required: true}
    steps:
      - {name: hello, block: maint, action: hello}
    schedule: "*-*-* 03:00:00"
"""


@pytest.mark.parametrize("command", [
    ("workspace", "validate"),
    ("schedules", "plan", "--dest", "{dest}"),
    ("schedules", "apply", "--dest", "{dest}"),
    ("schedules", "apply", "--cron", "--dest", "{dest}"),
    ("workflows", "schedule", "deploy", "--on-calendar", "daily", "--dest", "{dest}"),
])
def test_a_scheduled_workflow_with_a_required_launch_value_without_default_is_refused(ws, command):
    """Nobody types a launch value at 03:00: validate, plan, apply and the one-off form refuse the workflow in one
    line naming workspace.poly, the variable's line and the variable; nothing is written."""
    root, dest = ws
    text = REQUIRED_VALUE
    if "--cron" in command:
        text = text.replace('"*-*-* 02:00:00"', '"0 2 * * *"').replace('"*-*-* 03:00:00"', '"0 3 * * *"')
    (root / "workspace.poly").write_text(text)
    line = REQUIRED_VALUE.splitlines().index("        - {name: version, type: string, required: true}") + 1
    before = tree(root)
    result = polycrate(root, *(word.format(dest=dest) for word in command))
    assert_one_line_error(result, f"{root / 'workspace.poly'}:{line}: ", "launch variable 'version'",
                          "workflow 'deploy'", "required and has no default")
    assert list(dest.iterdir()) == [] and tree(root) == before, "nothing written"


def test_a_scheduled_workflow_whose_required_value_has_a_default_or_that_is_not_scheduled_passes(ws):
    root, dest = ws
    (root / "workspace.poly").write_text(REQUIRED_VALUE.replace("required: true", "required: true, default: '1.0'"))
    assert polycrate(root, "workspace", "validate").returncode == 0
    assert polycrate(root, "schedules", "apply", "--dest", str(dest)).returncode == 0
    (root / "workspace.poly").write_text(REQUIRED_VALUE.replace('    schedule: "*-*-* 03:00:00"\n', ""))
    assert polycrate(root, "workspace", "validate").returncode == 0
    applied = polycrate(root, "schedules", "apply", "--dest", str(dest))
    assert applied.returncode == 0, applied.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["polycrate-acme-nightly.service", "polycrate-acme-nightly.timer"]


def test_validate_and_plan_warn_about_a_scheduled_workflow_that_prompts(ws):
    """A prompt fails a timer's run at the prompt (and team mode's apply refuses it): validate says so, as a
    warning naming the step's line, and the workspace stays valid; plan's note names the step too (it named only a
    workflow's or an action's prompt, never a step's)."""
    root, dest = ws
    text = REQUIRED_VALUE.replace("required: true", "required: true, default: '1.0'").replace(
        "      - {name: hello, block: maint, action: hello}\n    schedule: \"*-*-* 03:00:00\"",
        "      - {name: hello, block: maint, action: hello, prompt: {message: 'really?'}}\n"
        "    schedule: \"*-*-* 03:00:00\"")
    (root / "workspace.poly").write_text(text)
    line = text.splitlines().index("      - {name: hello, block: maint, action: hello, prompt: {message: 'really?'}}") + 1
    result = polycrate(root, "workspace", "validate")
    assert result.returncode == 0, result.output
    assert result.stderr.splitlines() == [
        f"polycrate: warning: {root / 'workspace.poly'}:{line}: step 'hello' prompts ('really?'): workflow 'deploy' is "
        "scheduled, and a scheduled run never answers prompts; remove its schedule or make it run unattended (no "
        "prompt); its scheduled runs fail at the prompt (team mode's apply refuses it)"]
    plan = polycrate(root, "-o", "json", "schedules", "plan", "--dest", str(dest))
    assert plan.returncode == 0, plan.output
    notes = {s["workflow"]: s["notes"] for s in json.loads(plan.stdout)["schedules"]}
    assert notes == {"nightly": [], "deploy": [
        "a scheduled run never answers prompts, so it will fail: step 'hello' prompts ('really?')"]}


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None, reason="runs the entry as another user")
def test_a_cron_entry_with_a_user_starts_its_run_and_keeps_its_log(tmp_path):
    """`user: nobody` under cron: the entry's line, run by /bin/sh as that user (what cron does at the minute),
    starts the run and appends its output to a log the user can write. Before, the line began with
    `mkdir -p /var/log/polycrate`, which only root may do: the run never started, every time, and nobody was told
    (cron mails the error to a mailbox no one reads)."""
    base = Path(tempfile.mkdtemp(prefix="polycrate-cron-user-"))  # outside pytest's folder: `nobody` enters it
    try:
        base.chmod(0o755)
        root = base / "ws"
        root.mkdir()
        write_workspace(root, {"hourly": "{cron: '0 * * * *', user: nobody}"})
        (root / ".polycrate").mkdir()  # the run writes its record here: the user owns it, as an admin would set up
        shutil.chown(root / ".polycrate", "nobody")
        stand_in = base / "polycrate"  # this polycrate lives under /root, where `nobody` cannot execute it
        stand_in.write_text('#!/bin/sh\necho "run by $(id -un) in $(pwd): $*"\n')
        stand_in.chmod(0o755)
        dest = tmp_path / "cron.d"
        dest.mkdir()
        result = run_cli_inprocess("-w", str(root), "schedules", "apply", "--cron", "--dest", str(dest),
                                   env={"POLYCRATE_EXECUTABLE": str(stand_in)})
        assert result.returncode == 0, result.output
        lines = (dest / "polycrate-acme-hourly").read_text().splitlines()
        env = dict(line.split("=", 1) for line in lines if re.match(r"^[A-Z]+=", line))
        fields = lines[-1].split(" ", 6)
        assert fields[5] == "nobody", lines[-1]
        run = subprocess.run(["runuser", "-u", "nobody", "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                              "HOME=/nonexistent", "LOGNAME=nobody", env["SHELL"], "-c", fields[6]],
                             cwd="/", capture_output=True, text=True, timeout=120)
        assert run.returncode == 0 and run.stderr == "", run.stderr
        log = root / ".polycrate" / "logs" / "cron-hourly.log"
        assert log.read_text() == (f"run by nobody in {root}: --workspace {root} workflows run --launched-by "
                                   "cron:polycrate-acme-hourly hourly\n")
        assert fields[6].endswith(f">> {log} 2>&1"), fields[6]
    finally:
        shutil.rmtree(base)


def test_list_says_which_installed_schedules_are_stale(ws, tmp_path):
    """After a workflow is renamed, or its schedule changed or removed, in workspace.poly, its timer still fires
    until apply runs again (a renamed workflow's run fails: unknown workflow). `schedules list` showed those files
    like any other; now it says of each whether workspace.poly still declares it, and what to run."""
    root, dest = ws
    write_workspace(root, {"nightly": "'*-*-* 02:00:00'", "weekdays": "'Mon..Fri 06:30'", "hourly": "'hourly'",
                           "unscheduled": ""})
    assert polycrate(root, "schedules", "apply", "--dest", str(dest)).returncode == 0
    gone = tmp_path / "gone"
    gone.mkdir()
    write_workspace(gone, {"nightly": "'*-*-* 04:00:00'"})
    (gone / "workspace.poly").write_text((gone / "workspace.poly").read_text().replace("name: acme", "name: old"))
    assert polycrate(gone, "schedules", "apply", "--dest", str(dest)).returncode == 0
    shutil.rmtree(gone)
    # weekdays renamed, hourly no longer scheduled, nightly's time changed
    write_workspace(root, {"nightly": "'*-*-* 03:00:00'", "weekly": "'Mon..Fri 06:30'", "hourly": "",
                           "unscheduled": ""})

    listing = polycrate(root, "-o", "json", "schedules", "list", "--dest", str(dest))
    assert listing.returncode == 0, listing.output
    states = {(i["workspace_root"], i["workflow"], i["kind"]): (i["state"], i["reason"])
              for i in json.loads(listing.stdout)["installed"]}
    ws_root, gone_root = str(root), str(gone)
    assert states[(ws_root, "nightly", "timer")][0] == "differs"
    assert states[(ws_root, "nightly", "service")][0] == "differs"
    assert "03:00:00" in states[(ws_root, "nightly", "timer")][1]
    assert states[(ws_root, "weekdays", "timer")] == (
        "stale", f"workflow 'weekdays' is no longer in {root / 'workspace.poly'}: each run fails; "
                 f"`polycrate -w {root} schedules apply --dest {dest}` removes it")
    assert states[(ws_root, "hourly", "timer")] == (
        "stale", f"workflow 'hourly' is no longer scheduled in {root / 'workspace.poly'}; "
                 f"`polycrate -w {root} schedules apply --dest {dest}` removes it")
    assert states[(gone_root, "nightly", "timer")][0] == "stale"
    assert states[(gone_root, "nightly", "timer")][1] == (
        f"{gone / 'workspace.poly'} no longer exists: each run fails; remove it: systemctl disable --now "
        f"polycrate-old-nightly.timer && rm {dest / 'polycrate-old-nightly.service'} "
        f"{dest / 'polycrate-old-nightly.timer'} && systemctl daemon-reload")

    text = polycrate(root, "schedules", "list", "--dest", str(dest))
    assert text.returncode == 0, text.output
    rows = {line.split()[-1]: line for line in text.stdout.splitlines()}
    assert " stale " in rows["polycrate-acme-weekdays.timer"] and " stale " in rows["polycrate-acme-hourly.timer"]
    assert " differs " in rows["polycrate-acme-nightly.timer"] and " stale " in rows["polycrate-old-nightly.timer"]
    assert f"stale: polycrate-acme-weekdays.timer: workflow 'weekdays' is no longer in {root / 'workspace.poly'}" \
        in text.stdout

    assert polycrate(root, "schedules", "apply", "--dest", str(dest)).returncode == 0
    after = json.loads(polycrate(root, "-o", "json", "schedules", "list", "--dest", str(dest)).stdout)["installed"]
    assert {(i["workflow"], i["state"]) for i in after if i["workspace_root"] == ws_root} == {
        ("nightly", "applied"), ("weekly", "applied")}


@pytest.mark.parametrize("cron", [False, True], ids=["timer", "cron"])
def test_what_list_says_to_run_does_it_for_a_cron_entry_or_a_folder_of_ones_own(tmp_path, cron):
    """`schedules list --cron` (or `--dest DIR`) told of a stale or changed schedule to run `polycrate -w ROOT
    schedules apply`, which writes systemd units to /etc/systemd/system: the cron entry, or the unit in DIR,
    stayed as it was, stale or different, and the advice said the same again. Now the advice carries `--cron`
    and `--dest DIR` where the file is, and the command it names, run as written, leaves every schedule
    applied."""
    import shlex

    root = tmp_path / "ws"
    root.mkdir()
    dest = tmp_path / "my units"  # a folder a shell must quote
    dest.mkdir()
    kind = ["--cron"] if cron else []
    write_workspace(root, {"nightly": "'0 2 * * *'", "weekdays": "'30 6 * * 1-5'", "hourly": "'@hourly'"})
    assert polycrate(root, "schedules", "apply", *kind, "--dest", str(dest)).returncode == 0
    write_workspace(root, {"nightly": "'0 3 * * *'", "weekly": "'30 6 * * 1-5'", "hourly": ""})

    listing = polycrate(root, "-o", "json", "schedules", "list", *kind, "--dest", str(dest))
    installed = json.loads(listing.stdout)["installed"]
    advice = {i["workflow"]: (i["state"], i["reason"]) for i in installed if i["kind"] != "service"}
    assert {w: s for w, (s, _) in advice.items()} == {"nightly": "differs", "weekdays": "stale", "hourly": "stale"}
    commands = {re.search(r"`polycrate (.+?)`", reason).group(1) for _, reason in advice.values()}
    assert commands == {f"-w {root} schedules apply {' '.join([*kind, '--dest', shlex.quote(str(dest))])}"}
    words = shlex.split(commands.pop())
    assert words[:2] == ["-w", str(root)]
    assert polycrate(root, *words[2:]).returncode == 0  # as the advice says it
    after = json.loads(polycrate(root, "-o", "json", "schedules", "list", *kind, "--dest", str(dest)).stdout)
    assert {(i["workflow"], i["state"]) for i in after["installed"] if i["kind"] != "service"} == {
        ("nightly", "applied"), ("weekly", "applied")}


def test_apply_carries_this_machines_default_runtime_into_the_unit_and_the_cron_entry(tmp_path):
    """$POLYCRATE_RUNTIME is this machine's default runtime, read from the environment; a timer's or cron's run has
    none of the admin's environment. apply writes it where the workspace names no runtime (config.runtime wins
    anyway); a wrong value is refused before anything is written. (tests/e2e/test_systemd_timers.py runs it.)"""
    root = tmp_path / "ws"
    root.mkdir()
    systemd, cron = tmp_path / "systemd", tmp_path / "cron.d"
    systemd.mkdir()
    cron.mkdir()
    write_workspace(root, {"nightly": "'0 2 * * *'"})
    env = {"POLYCRATE_EXECUTABLE": "/usr/local/bin/polycrate", "POLYCRATE_RUNTIME": "local"}
    assert run_cli_inprocess("-w", str(root), "schedules", "apply", "--dest", str(systemd), env=env).returncode == 0
    assert "Environment=POLYCRATE_RUNTIME=local\n" in (systemd / "polycrate-acme-nightly.service").read_text()
    assert run_cli_inprocess("-w", str(root), "schedules", "apply", "--cron", "--dest", str(cron), env=env).returncode == 0
    assert " && env POLYCRATE_RUNTIME=local /usr/local/bin/polycrate --workspace " in \
        (cron / "polycrate-acme-nightly").read_text()

    bogus = run_cli_inprocess("-w", str(root), "schedules", "plan", "--dest", str(systemd),
                              env={**env, "POLYCRATE_RUNTIME": "vm"})
    assert_one_line_error(bogus, "POLYCRATE_RUNTIME='vm'")

    poly = root / "workspace.poly"
    poly.write_text(poly.read_text().replace("name: acme\n", "name: acme\nconfig:\n  runtime: container\n"))
    assert run_cli_inprocess("-w", str(root), "schedules", "apply", "--dest", str(systemd), env=env).returncode == 0
    assert "POLYCRATE_RUNTIME" not in (systemd / "polycrate-acme-nightly.service").read_text()


def _processes_named(name: str, needle: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if entry.isdigit() and os.path.basename(argv[0]) == name.encode() and needle.encode() in b" ".join(argv):
            found.append(int(entry))
    return found


def test_a_cron_entry_s_timeout_stops_its_run_and_the_record_says_why(tmp_path):
    """A cron entry's `timeout` sent SIGTERM to polycrate and to its whole process group: the record said
    'interrupted (SIGTERM)', as for anyone's kill. Now it sends SIGUSR2 to polycrate alone (--foreground), which
    stops its step and records why. The real entry's line, run by /bin/sh as cron would; the real `timeout` is
    told its time ran out with SIGALRM (its own timer's signal), once the step runs."""
    root = tmp_path / "ws"
    (root / "blocks" / "maint").mkdir(parents=True)
    marker = tmp_path / "step-started"
    (root / "blocks" / "maint" / "block.poly").write_text(
        f"name: maint\nactions:\n  - name: slow\n    script: ['touch {marker}; sleep 300']\n")
    (root / "workspace.poly").write_text(
        "name: acme\nblocks:\n  - name: maint\nworkflows:\n  - name: slow\n    steps:\n"
        "      - {name: wait, block: maint, action: slow}\n"
        f"    schedule: {{cron: '0 3 * * *', timeout: 1h, log_file: {tmp_path / 'cron.log'}}}\n")
    dest = tmp_path / "cron.d"
    dest.mkdir()
    applied = run_cli_inprocess("-w", str(root), "schedules", "apply", "--cron", "--dest", str(dest),
                                env={"POLYCRATE_EXECUTABLE": CLI[0], "POLYCRATE_RUNTIME": "local"})
    assert applied.returncode == 0, applied.output
    lines = (dest / "polycrate-acme-slow").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if re.match(r"^[A-Z]+=", line))
    command = lines[-1].split(" ", 6)[6]
    assert " timeout --foreground --kill-after=90s --signal=USR2 3600 " in command, command
    entry = subprocess.Popen([env["SHELL"], "-c", command], cwd="/", env={**env, "HOME": os.environ["HOME"]},
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not marker.exists() and entry.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        log = tmp_path / "cron.log"
        assert marker.exists(), (entry.poll(), log.read_text(errors="replace") if log.exists() else "no log")
        [timer] = _processes_named("timeout", str(root))
        os.kill(timer, signal.SIGALRM)  # what its own timer does when the hour is up
        assert entry.wait(timeout=120) == 124  # timeout's own "the time ran out"
    finally:
        if entry.poll() is None:
            os.killpg(entry.pid, signal.SIGKILL)
            entry.wait()
    [run] = json.loads(run_cli_inprocess("-w", str(root), "runs", "list", "-o", "json").stdout)["runs"]
    shown = run_cli_inprocess("-w", str(root), "runs", "show", run["run_id"], "-o", "json")
    assert shown.returncode == 0, shown.output
    record = json.loads(shown.stdout)
    said = "stopped after the schedule's timeout ran out (SIGUSR2 from the cron entry polycrate-acme-slow)"
    assert (record["status"], record["message"]) == ("interrupted", said), record
    assert [(s["name"], s["status"], s["message"]) for s in record["steps"]] == [("wait", "interrupted", said)]
