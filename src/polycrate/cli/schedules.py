"""`polycrate schedules plan|apply|list` and `polycrate workflows schedule NAME` (the one-off form)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from polycrate.cli.render import emit_json, table, workspace_from
from polycrate.errors import PolycrateError


def register(sub, shared) -> None:
    group = sub.add_parser(
        "schedules", parents=[shared], help="run workflows on a schedule (systemd timers or cron)"
    )
    ssub = group.add_subparsers(dest="schedules_command", metavar="COMMAND")
    ssub.required = True

    p = ssub.add_parser(
        "plan", parents=[shared], help="show the units or cron entries apply would write, and the next run times"
    )
    _dest_options(p)
    p.set_defaults(func=cmd_plan)

    p = ssub.add_parser("apply", parents=[shared], help="write the declared schedules (idempotent)")
    _dest_options(p)
    p.set_defaults(func=cmd_apply)

    p = ssub.add_parser("list", parents=[shared], help="show the schedules polycrate has installed")
    _dest_options(p)
    p.set_defaults(func=cmd_list)


def _dest_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dest", metavar="DIR", help="folder to write to (default /etc/systemd/system, or /etc/cron.d with --cron)"
    )
    p.add_argument("--cron", action="store_true", help="cron entries for /etc/cron.d instead of systemd timers")


def add_workflow_schedule_command(wsub, shared) -> None:
    p = wsub.add_parser(
        "schedule",
        parents=[shared],
        help="schedule one workflow now, without declaring it in workspace.poly",
    )
    p.add_argument("name", metavar="NAME")
    spec = p.add_mutually_exclusive_group()
    spec.add_argument("--on-calendar", metavar="SPEC", help="a systemd OnCalendar expression: a timer")
    spec.add_argument("--cron", metavar="SPEC", help="a five-field cron expression: an /etc/cron.d entry")
    spec.add_argument("--remove", action="store_true", help="remove this workflow's schedule files")
    p.add_argument("--dest", metavar="DIR", help="folder to write to (default /etc/systemd/system or /etc/cron.d)")
    p.add_argument("--randomized-delay", metavar="SPAN", help="random delay before each run (seconds or '15m')")
    p.add_argument("--user", help="run as this user")
    p.add_argument("--group", help="run with this group (systemd only)")
    p.add_argument("--timeout", metavar="SPAN", help="stop a run after this long (seconds or '2h')")
    p.add_argument("--no-persistent", action="store_true", help="do not catch up a run missed while off")
    p.add_argument("--log-file", metavar="PATH", help="append the run's output to this file")
    p.set_defaults(func=cmd_workflow_schedule)


# --- handlers ---------------------------------------------------------------------------------


def run_environment(ws) -> dict[str, str]:
    """What a scheduled run needs in its environment beyond PATH, so that it is the run the admin tried: the
    identity file of an encrypted workspace (secrets/keys.py: scheduled_identity_file refuses, saying how, when
    there is none), and this machine's default runtime ($POLYCRATE_RUNTIME, checked) when the workspace names
    none (a unit or cron entry gets none of the admin's environment: its run went to a container)."""
    from polycrate.runtime.toolchain import RUNTIME_ENV, runtime_of
    from polycrate.secrets.files import secret_pairs
    from polycrate.secrets.keys import ENV_IDENTITY_FILE, scheduled_identity_file

    environment = {}
    encrypted = any(has_age and not has_plain for has_plain, has_age in secret_pairs(ws.root).values())
    identity = scheduled_identity_file(encrypted)
    if identity is not None:
        environment[ENV_IDENTITY_FILE] = str(identity)
    if not ws.toolchain.runtime and os.environ.get(RUNTIME_ENV, "").strip():
        environment[RUNTIME_ENV] = runtime_of(ws)
    return environment


def cmd_plan(args) -> int:
    from polycrate import contract
    from polycrate import schedule as sched

    dsn = _team_backend(args)
    if dsn is not None:
        return _apply_team(args, dsn, write=False)
    ws = workspace_from(args)
    plan = sched.plan_schedules(ws, _dest(args), cron=args.cron, environment=run_environment(ws))
    if args.output == "json":
        emit_json(contract.document("schedule-plan", _plan_json(plan)), args.format)
        return 0
    _print_plan_header(plan)
    if not plan.entries:
        print("no schedules declared in workspace.poly")
    for entry in plan.entries:
        _print_entry(entry)
        by_name = {c.path.name: c for c in plan.changes}
        for name, content in entry.files.items():
            change = by_name.get(name)
            print(f"  {_verb(change.status if change else 'create', planned=True)}  {plan.dest / name}")
            for line in _shown(plan.dest / name, content, change.status if change else "create"):
                print(f"    | {line}")
        print()
    _print_other_changes(plan, planned=True)
    command = plan.enable_command()
    if command:
        print(f"after apply: {command}")
    return 0


def cmd_apply(args) -> int:
    from polycrate import contract
    from polycrate import schedule as sched

    dsn = _team_backend(args)
    if dsn is not None:
        return _apply_team(args, dsn, write=True)
    ws = workspace_from(args)
    plan = sched.apply_plan(sched.plan_schedules(ws, _dest(args), cron=args.cron, environment=run_environment(ws)))
    if args.output == "json":
        emit_json(contract.document("schedule-plan", _plan_json(plan, applied=True)), args.format)
        return 0
    if not plan.entries and not plan.changes:
        print("no schedules declared in workspace.poly; nothing to do")
        return 0
    for change in plan.changes:
        print(f"{_verb(change.status, planned=False):<10} {change.path}")
    for entry in plan.entries:
        for note in entry.notes:
            print(f"note: {entry.schedule.workflow}: {note}")
    _print_next_steps(plan)
    return 0


def cmd_list(args) -> int:
    from polycrate import contract
    from polycrate import schedule as sched

    dsn = _team_backend(args)
    if dsn is not None:
        return _list_team(args, dsn)
    dest = _dest(args)
    dests = sched.listed_dests(Path(args.dest) if args.dest else None, args.cron)
    found = sched.installed_in(dests)
    states = sched.installed_states(found)
    if args.output == "json":
        emit_json(contract.document("schedules-installed", {
            "dest": str(dest),
            "dests": [str(d) for d in dests],
            "installed": [
                {
                    "path": str(m.path),
                    "kind": m.kind,
                    "workflow": m.workflow,
                    "workspace_root": m.workspace_root,
                    "origin": m.origin,
                    "expression": m.expression,
                    "state": states[(m.workspace_root, m.workflow)].state,
                    "reason": states[(m.workspace_root, m.workflow)].reason,
                }
                for m in found
            ],
        }), args.format)
        return 0
    looked = " or ".join(str(d) for d in dests)
    if not found:
        print(f"no polycrate schedules in {looked}" + ("" if args.dest else " (--dest DIR to look elsewhere)"))
        return 0
    table(
        [(m.workflow, m.kind, m.expression or "", states[(m.workspace_root, m.workflow)].state, m.workspace_root,
          m.path.name) for m in found],
        ("WORKFLOW", "KIND", "SCHEDULE", "STATE", "WORKSPACE", "FILE"),
    )
    for m in found:  # once per schedule: its timer's (or cron entry's) line
        state = states[(m.workspace_root, m.workflow)]
        if state.reason and m.kind in ("timer", "cron"):
            print(f"{state.state}: {m.path.name}: {state.reason}")
    print(f"looked in {' and '.join(str(d) for d in dests)}" + ("" if args.dest else " (--dest DIR to look elsewhere)"))
    return 0


def cmd_workflow_schedule(args) -> int:
    from polycrate import contract
    from polycrate import schedule as sched

    if _team_backend(None) is not None:
        raise PolycrateError("workflows schedule writes a systemd timer or cron entry on this host; with a backend (team "
                             "mode) declare the schedule in workspace.poly and run: polycrate schedules apply")
    ws = workspace_from(args)
    if args.remove:
        dests = sched.listed_dests(Path(args.dest) if args.dest else None)
        removed = [p for d in dests for p in sched.remove_one_off(ws, args.name, d)]
        if args.output == "json":
            removed_doc = {"workflow": args.name, "removed": [str(p) for p in removed]}
            emit_json(contract.document("schedule-removed", removed_doc), args.format)
        elif not removed:
            print(f"nothing removed: no timer, unit or cron file of workflow '{args.name}' of the workspace at "
                  f"{Path(ws.root).resolve()} in {', '.join(map(str, dests))}")
        else:
            for path in removed:
                print(f"{'removed':<10} {path}")
            timers = [p.name for p in removed if p.suffix == ".timer"]
            if timers:  # systemd keeps a started timer running after its file is gone
                print(f"stop the removed timer: systemctl stop {' '.join(timers)} && systemctl daemon-reload")
            if any(not p.suffix for p in removed):
                print("cron reads /etc/cron.d by itself: the removed entry no longer runs")
            workflow = ws.workflows.get(args.name)
            if workflow is not None and workflow.timer is not None:
                print(f"note: workspace.poly still schedules '{args.name}' ({workflow.timer.expression}): the next "
                      "`polycrate schedules apply` writes it again; remove its schedule: there to stop it for good")
        return 0
    if args.on_calendar is None and args.cron is None:
        raise PolycrateError("workflows schedule: give --on-calendar SPEC, --cron SPEC or --remove (see --help)")
    schedule = sched.one_off_schedule(
        ws,
        args.name,
        args.on_calendar,
        args.cron,
        randomized_delay=args.randomized_delay,
        user=args.user,
        group=args.group,
        timeout=args.timeout,
        persistent=False if args.no_persistent else None,
        log_file=args.log_file,
    )
    cron = schedule.kind == "cron"
    dest = Path(args.dest) if args.dest else sched.default_dest(cron)
    plan = sched.apply_plan(
        sched.plan_schedules(ws, dest, cron=cron, schedules=[schedule], only_workflow=args.name,
                             environment=run_environment(ws))
    )
    if args.output == "json":
        emit_json(contract.document("schedule-plan", _plan_json(plan, applied=True)), args.format)
        return 0
    for entry in plan.entries:
        _print_entry(entry)
    for change in plan.changes:
        print(f"{_verb(change.status, planned=False):<10} {change.path}")
    _print_next_steps(plan)
    return 0


# --- team mode: schedules in PostgreSQL, fired by the workers (team/scheduler.py) ---------------------------

# what a systemd timer or cron entry honours and a worker does not
_HOST_ONLY = (("user", "the run runs as its worker's user"), ("group", "the run runs as its worker's user"),
              ("randomized_delay", "slots fire at their time"), ("timeout", "a step's own timeout still applies"),
              ("log_file", "the run's log is in the backend: polycrate runs logs"))


_TEAM_VERBS = {"created": ("would create", "created"), "updated": ("would update", "updated"),
               "unchanged": ("unchanged", "unchanged"), "removed": ("would remove", "removed")}


def _team_backend(args) -> str | None:
    """The backend DSN when team mode is on (then --dest/--cron make no sense), else None."""
    from polycrate.cli.backend import backend_setting

    dsn = backend_setting()
    if dsn is not None and args is not None and (args.dest or args.cron):
        raise PolycrateError("with a backend (team mode) the schedules are written to PostgreSQL and the workers run "
                             "them: --dest and --cron do not apply (unset POLYCRATE_BACKEND to write timers or cron)")
    return dsn


def _team_rows(ws) -> tuple[list, list[str]]:
    """The workspace's schedules as rows of team_schedules, and notes for people."""
    import time

    from polycrate import schedule as sched
    from polycrate.history.store import current_user
    from polycrate.team.launch import checked_commit
    from polycrate.team.scheduler import TeamSchedule
    from polycrate.timespec.times import local_zone, zone_key

    root = Path(ws.root).resolve()
    declared = sched.workspace_schedules(ws)
    commit = checked_commit(root) if declared else ""
    from polycrate.team.source import workspace_source

    source = workspace_source(root) if declared else None
    zone = zone_key(local_zone())
    rows, notes = [], []
    from polycrate.schedule.unattended import unattended_refusal

    for s in declared:  # a workflow nobody can answer on a worker is refused before anything is written
        refusal = unattended_refusal(ws, s.workflow)
        if refusal is not None:
            raise refusal
    for s in declared:
        prompts = sched.prompts_of(ws, s.workflow)
        for key, why in _HOST_ONLY:
            if getattr(s, key) is not None:
                notes.append(f"{s.workflow}: '{key}' has no effect in team mode ({why})")
        if s.persistent_set:
            notes.append(f"{s.workflow}: 'persistent' has no effect in team mode; 'missed' says what happens to a slot "
                         "missed while no worker was alive")
        rows.append(TeamSchedule(workspace=ws.name, workflow=s.workflow, kind=s.kind, expression=s.expression, zone=zone,
                                 missed=s.missed, max_delay=float(s.max_delay) if s.max_delay is not None else None,
                                 queue=ws.workflows[s.workflow].queue, root=str(root), git_commit=commit,
                                 remote=source.remote if source else None, subdir=source.subdir if source else "",
                                 prompts=", ".join(prompts) or None, applied=time.time(), applied_by=current_user()))
    return rows, notes


def _next_slots(row, count: int = 3) -> list[float]:
    import time

    from polycrate.team.scheduler import Slots

    try:
        return Slots(row.kind, row.expression, row.zone).after(time.time(), count)
    except PolycrateError:
        return []


def _team_item(row, status: str | None, last: dict | None = None) -> dict:
    from polycrate import contract

    return {
        "workspace": row.workspace, "workflow": row.workflow, "status": status, "kind": row.kind,
        "expression": row.expression, "zone": row.zone, "missed": row.missed, "max_delay": row.max_delay,
        "queue": row.queue, "root": row.root, "git_commit": row.git_commit, "prompts": row.prompts,
        "applied": contract.timestamp(row.applied), "applied_by": row.applied_by,
        "next_runs": [contract.timestamp(t) for t in _next_slots(row)] if status != "removed" else [],
        "last_slot": None if not last or last.get("last_slot") is None else {
            "slot": contract.timestamp(last["last_slot"]), "outcome": last["last_outcome"],
            "run_id": last["last_run_id"], "late_by": contract.seconds(last["last_late_by"]),
            "reason": last["last_reason"], "worker": last["last_worker"]},
    }


def _describe(row) -> str:
    what = "OnCalendar" if row.kind == "on_calendar" else "cron"
    delay = f" within {row.max_delay:g}s" if row.missed == "run-once" and row.max_delay is not None else ""
    return f"{what} {row.expression} (missed: {row.missed}{delay}), queue {row.queue}"


def _apply_team(args, dsn: str, write: bool) -> int:
    from polycrate import contract
    from polycrate.history.postgres import safe_dsn
    from polycrate.team.scheduler import TICK_SECONDS, apply_schedules

    from polycrate.cli.worker import _check_schema

    ws = workspace_from(args)
    _check_schema(dsn)
    rows, notes = _team_rows(ws)
    changes = apply_schedules(dsn, ws.name, rows, write=write)
    notes += _unserved(dsn, [row for status, row in changes if status != "removed"])
    if args.output == "json":
        emit_json(contract.document("schedules-backend", {
            "backend": safe_dsn(dsn), "workspace": ws.name, "applied": write,
            "schedules": [_team_item(row, status) for status, row in changes], "notes": notes}), args.format)
        return 0
    verb = "written to" if write else "to be written to"
    commit = f" at commit {rows[0].git_commit[:12]}" if rows else ""
    print(f"team mode: the schedules of workspace '{ws.name}'{commit} {verb} the backend {safe_dsn(dsn)}; every "
          "`polycrate worker` runs them (no systemd units or cron lines are written)")
    if not changes:
        print("no schedules declared in workspace.poly; nothing to do")
    for status, row in changes:
        shown = _TEAM_VERBS[status][1 if write else 0]
        times = ", ".join(contract.timestamp(t) or "" for t in _next_slots(row)) if status != "removed" else ""
        print(f"{shown:<12} {row.workflow}: {_describe(row)}" + (f"; next {times}" if times else ""))
    for note in notes:
        print(f"note: {note}")
    if write and changes:
        print(f"the workers pick the change up within {TICK_SECONDS:g}s; see them: polycrate schedules list")
    return 0


def _unserved(dsn: str, rows: list) -> list[str]:
    """A schedule whose queue no alive worker serves runs nothing at its time (a typo in `queue:`, its workers
    down): with no worker alive nobody fires its slots; otherwise its runs wait on the queue. Said when it is
    applied, not found the morning after."""
    from polycrate.team.worker import served_queues

    served = served_queues(dsn) if rows else set()
    if not served:
        return [f"{row.workflow}: no worker is alive: nothing fires its slots until one is (a slot missed meanwhile "
                f"follows 'missed: {row.missed}'; start one: polycrate worker --queue {row.queue})" for row in rows]
    return [f"{row.workflow}: no alive worker serves queue '{row.queue}' (alive workers serve: {', '.join(sorted(served))}):"
            f" its runs are launched on time and wait until one does (polycrate worker --queue {row.queue})"
            for row in rows if row.queue not in served]


def _list_team(args, dsn: str) -> int:
    from polycrate import contract
    from polycrate.history.postgres import safe_dsn
    from polycrate.team.scheduler import TeamSchedule, schedules_in_backend

    from polycrate.cli.worker import _check_schema

    _check_schema(dsn)
    found = schedules_in_backend(dsn)
    columns = TeamSchedule.__dataclass_fields__
    rows = [(TeamSchedule(**{k: r[k] for k in columns}), r) for r in found]
    if args.output == "json":
        emit_json(contract.document("schedules-backend", {
            "backend": safe_dsn(dsn), "workspace": None, "applied": False,
            "schedules": [_team_item(row, None, r) for row, r in rows], "notes": []}), args.format)
        return 0
    if not rows:
        print(f"no schedules in the backend {safe_dsn(dsn)} (declare them in workspace.poly: polycrate schedules apply)")
        return 0
    table([(row.workspace, row.workflow, _describe(row),
            ", ".join(contract.timestamp(t) or "" for t in _next_slots(row, 1)),
            "-" if r["last_slot"] is None else f"{contract.timestamp(r['last_slot'])} {r['last_outcome']}"
            + (f" {r['last_run_id']}" if r["last_run_id"] else ""))
           for row, r in rows], ("WORKSPACE", "WORKFLOW", "SCHEDULE", "NEXT", "LAST SLOT"))
    return 0


# --- rendering --------------------------------------------------------------------------------


def _dest(args) -> Path:
    from polycrate import schedule as sched

    return Path(args.dest) if args.dest else sched.default_dest(args.cron)


_VERBS = {
    "create": ("would create", "created"),
    "update": ("would update", "updated"),
    "unchanged": ("unchanged", "unchanged"),
    "remove": ("would remove", "removed"),
    "keep": ("keeps", "kept"),
}


def _verb(status: str, planned: bool) -> str:
    return _VERBS[status][0 if planned else 1]


def _shown(path: Path, content: str, status: str) -> list[str]:
    """A file plan would write: whole when new; when it replaces one, what changes (a unified diff, a line of
    context), so that a changed time is not lost among forty unchanged lines (whole again if the file in
    place cannot be read); nothing when it stays as it is."""
    if status == "unchanged":
        return []
    if status == "update":
        import difflib

        try:
            before = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return content.splitlines()
        diff = list(difflib.unified_diff(before.splitlines(), content.splitlines(), lineterm="", n=1))
        return diff[2:]  # without the ---/+++ file lines: the path is on the line above
    return content.splitlines()


def _print_plan_header(plan) -> None:
    print(f"workspace {plan.workspace} ({plan.root}): {plan.mode} files in {plan.dest}")
    print()


def _print_entry(entry) -> None:
    from polycrate import schedule as sched

    s = entry.schedule
    what = "OnCalendar" if s.kind == "on_calendar" else "cron"
    extras = []
    if s.user:
        extras.append(f"user {s.user}")
    if s.group:
        extras.append(f"group {s.group}")
    if s.randomized_delay:
        extras.append(f"randomized delay {s.randomized_delay}s")
    if s.timeout:
        extras.append(f"timeout {s.timeout}s")
    if s.kind == "on_calendar":
        extras.append("persistent" if s.persistent else "not persistent")
    print(f"{s.workflow}: {what} {s.expression}" + (f" ({', '.join(extras)})" if extras else ""))
    times = sched.iter_times(entry.next_runs)
    print("  next runs: " + (", ".join(t.replace("T", " ") for t in times) if times else "never"))
    for note in entry.notes:
        print(f"  note: {note}")


def _print_other_changes(plan, planned: bool) -> None:
    for change in plan.changes:
        if change.status == "remove":
            print(f"{_verb('remove', planned)} {change.path} (workflow '{change.workflow}' is no longer scheduled)")
        elif change.status == "keep":
            print(f"{_verb('keep', planned)} {change.path} (written by `workflows schedule`)")


def _print_next_steps(plan) -> None:
    stop = plan.stop_command()
    if stop:
        print(f"stop the removed timers: {stop}")
    command = plan.enable_command()
    if command:
        print(f"enable: {command}")
    elif plan.mode == "cron" and plan.entries:
        print("cron reads /etc/cron.d by itself; nothing to enable")


def _plan_json(plan, applied: bool = False) -> dict:
    from polycrate import contract
    by_name = {c.path.name: c for c in plan.changes}
    status_key = "status"
    return {
        "workspace": plan.workspace,
        "root": str(plan.root),
        "mode": plan.mode,
        "dest": str(plan.dest),
        "applied": applied,
        "schedules": [
            {
                "workflow": e.schedule.workflow,
                "kind": e.schedule.kind,
                "expression": e.schedule.expression,
                "randomized_delay": e.schedule.randomized_delay,
                "user": e.schedule.user,
                "group": e.schedule.group,
                "persistent": e.schedule.persistent,
                "timeout": e.schedule.timeout,
                "log_file": e.schedule.log_file,
                "next_runs": contract.utc_times(e.next_runs),
                "notes": e.notes,
                "files": [
                    {
                        "path": str(plan.dest / name),
                        status_key: by_name[name].status if name in by_name else "create",
                        "content": content,
                    }
                    for name, content in e.files.items()
                ],
            }
            for e in plan.entries
        ],
        "changes": [{"path": str(c.path), "status": c.status, "workflow": c.workflow} for c in plan.changes],
        "enable_command": plan.enable_command(),
        "stop_command": plan.stop_command(),
    }
