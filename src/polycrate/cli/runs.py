"""`polycrate runs list|show|logs`: what ran, what changed, what failed and why."""
from __future__ import annotations

import sys
import time

from polycrate.cli.render import emit_json, table
from polycrate.errors import PolycrateError


def register(sub, shared) -> None:
    group = sub.add_parser("runs", parents=[shared], help="the run history: list, show, logs")
    rsub = group.add_subparsers(dest="runs_command", metavar="COMMAND")
    rsub.required = True

    p = rsub.add_parser("list", parents=[shared], help="recorded runs, newest first")
    p.add_argument("--workflow", metavar="NAME", help="only runs of this workflow")
    p.add_argument("--limit", metavar="N", type=_positive, default=20, help="at most N runs (default 20)")
    p.set_defaults(func=cmd_list)

    p = rsub.add_parser("show", parents=[shared], help="one run: steps, durations, hosts, the failing task")
    p.add_argument("run_id", metavar="RUN_ID", help="a run id, a unique prefix of one, or 'latest'")
    p.set_defaults(func=cmd_show)

    p = rsub.add_parser("logs", parents=[shared], help="the full log of a run")
    p.add_argument("run_id", metavar="RUN_ID", help="a run id, a unique prefix of one, or 'latest'")
    p.add_argument("--step", metavar="STEP", help="only this step's log")
    p.set_defaults(func=cmd_logs)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise PolycrateError(f"--limit must be a whole number >= 1, not {text!r}")
    return value


def _store(args):
    from polycrate.cli.render import workspace_from
    from polycrate.history import open_store

    ws = workspace_from(args)
    return open_store(ws.root)  # opening reconciles: runs whose process died read 'interrupted'


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""


def _duration(d: float | None) -> str:
    return "" if d is None else f"{d:.1f}s"


def cmd_list(args) -> int:
    store = _store(args)
    try:
        runs = store.list_runs(name=args.workflow, kind="workflow" if args.workflow else None, limit=args.limit)
    finally:
        store.close()
    if args.output == "json":
        emit_json(runs)
        return 0
    table(
        [
            (
                r["id"],
                _when(r["started"]),
                r["kind"],
                r["name"] + (" (check)" if r["check_mode"] else "") + (f" --step {r['only_step']}" if r["only_step"] else ""),
                r["status"],
                _duration(r["duration"]),
                r["failed_step"] or "",
                f"{r['user']}@{r['host']}",
            )
            for r in runs
        ],
        ("RUN", "STARTED", "KIND", "NAME", "STATUS", "DURATION", "FAILED_STEP", "BY"),
    )
    return 0


def cmd_show(args) -> int:
    store = _store(args)
    try:
        run = store.get_run(args.run_id)
    finally:
        store.close()
    if args.output == "json":
        emit_json(run)
        return 0
    print(f"run:       {run['id']}")
    print(f"{run['kind']}:{' ' * (10 - len(run['kind']))}{run['name']}" + (" (check mode)" if run["check_mode"] else ""))
    print(f"status:    {run['status']} (exit {run['exit_code']})")
    print(f"started:   {_when(run['started'])} by {run['user']}@{run['host']} (pid {run['pid']})")
    if run["ended"]:
        print(f"ended:     {_when(run['ended'])} after {_duration(run['duration'])}")
    if run["resumed_from"]:
        print(f"resumes:   {run['resumed_from']}")
    if run["failed_step"]:
        print(f"failed:    step {run['failed_step']}" + (f", task '{run['failed_task']}' on {run['failed_host']}" if run["failed_task"] else ""))
    if run["message"]:
        print(f"message:   {run['message']}")
    print()
    table(
        [
            (
                i,
                s["name"] + (" [on_failure]" if s["phase"] == "on_failure" else ""),
                f"{s['block']} {s['action']}",
                s["status"],
                s["attempts"] if s["attempts"] > 1 else "",
                _duration(s["duration"]),
                s["note"] or "",
            )
            for i, s in enumerate(run["steps"], 1)
        ],
        ("#", "STEP", "ACTION", "STATUS", "ATTEMPTS", "DURATION", "NOTE"),
    )
    hosts = [(s["name"], h, c) for s in run["steps"] for h, c in s["hosts"].items()]
    if hosts:
        print()
        table(
            [(step, host, c["ok"], c["changed"], c["failed"], c["unreachable"], c["skipped"]) for step, host, c in hosts],
            ("STEP", "HOST", "OK", "CHANGED", "FAILED", "UNREACHABLE", "SKIPPED"),
        )
    failing = [s for s in run["steps"] if s["status"] in ("failed", "failed (allowed)", "interrupted") and (s["failed_task"] or s["message"])]
    for s in failing:
        print()
        task = f" task '{s['failed_task']}' on {s['failed_host']}" if s["failed_task"] else ""
        print(f"step {s['name']} {s['status']}:{task}")
        for line in (s["message"] or "").splitlines():
            print(f"  {line}")
    if run["notices"]:
        print()
        for n in run["notices"]:
            print(f"notice {_when(n['time'])}: {n['text']}")
    return 0


def cmd_logs(args) -> int:
    store = _store(args)
    try:
        run_id, logs = store.step_logs(args.run_id, args.step)
    finally:
        store.close()
    if args.output == "json":
        emit_json({"run_id": run_id, "steps": [{"name": s["name"], "status": s["status"], "log": text} for s, text in logs]})
        return 0
    for step, text in logs:
        if args.step is None:
            print(f"==> {step['name']} ({step['status']})")
        sys.stdout.write(text)
    return 0
