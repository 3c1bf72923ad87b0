"""`polycrate schedules plan|apply|list` and `polycrate workflows schedule NAME` (the one-off form)."""
from __future__ import annotations

import argparse
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


def cmd_plan(args) -> int:
    from polycrate import contract
    from polycrate import schedule as sched

    ws = workspace_from(args)
    plan = sched.plan_schedules(ws, _dest(args), cron=args.cron)
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
            for line in content.splitlines():
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

    ws = workspace_from(args)
    plan = sched.apply_plan(sched.plan_schedules(ws, _dest(args), cron=args.cron))
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

    dest = _dest(args)
    found = sched.installed(dest)
    if args.output == "json":
        emit_json(contract.document("schedules-installed", {
            "dest": str(dest),
            "installed": [
                {
                    "path": str(m.path),
                    "kind": m.kind,
                    "workflow": m.workflow,
                    "workspace_root": m.workspace_root,
                    "origin": m.origin,
                    "expression": m.expression,
                }
                for m in found
            ],
        }), args.format)
        return 0
    if not found:
        print(f"no polycrate schedules in {dest}")
        return 0
    table(
        [(m.workflow, m.kind, m.expression or "", m.workspace_root, m.path.name) for m in found],
        ("WORKFLOW", "KIND", "SCHEDULE", "WORKSPACE", "FILE"),
    )
    return 0


def cmd_workflow_schedule(args) -> int:
    from polycrate import contract
    from polycrate import schedule as sched

    ws = workspace_from(args)
    if args.remove:
        dests = [Path(args.dest)] if args.dest else [sched.SYSTEMD_DEST, sched.CRON_DEST]
        removed = [p for d in dests for p in sched.remove_one_off(ws, args.name, d)]
        if args.output == "json":
            emit_json(contract.document("schedule-removed", {"workflow": args.name, "removed": [str(p) for p in removed]}), args.format)
        elif not removed:
            print(f"no schedule files of workflow '{args.name}' in {', '.join(map(str, dests))}")
        else:
            for path in removed:
                print(f"{'removed':<10} {path}")
            if any(p.suffix == ".timer" for p in removed):
                print("then: systemctl daemon-reload")
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
        sched.plan_schedules(ws, dest, cron=cron, schedules=[schedule], only_workflow=args.name)
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
