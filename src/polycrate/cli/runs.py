"""`polycrate runs list|show|logs`: what ran, what changed, what failed and why."""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from typing import TYPE_CHECKING

from polycrate.cli.completion import RUN, STEP, WORKFLOW, names
from polycrate.cli.render import emit_json, state_text, table
from polycrate.errors import NotFoundError, PolycrateError
from polycrate.states import RUN_STATES, RunState, ended_word, signal_of

if TYPE_CHECKING:
    from polycrate.history import RunStore


def register(sub, shared) -> None:
    group = sub.add_parser("runs", parents=[shared], help="the run history: list, show, logs")
    rsub = group.add_subparsers(dest="runs_command", metavar="COMMAND")
    rsub.required = True

    p = rsub.add_parser("list", parents=[shared], help="recorded runs, newest first")
    names(p.add_argument("--workflow", metavar="NAME", help="only runs of this workflow"), WORKFLOW)
    p.add_argument("--kind", choices=("workflow", "action"), help="only workflow runs or only single actions")
    p.add_argument("--status", choices=RUN_STATES, help="only runs in this state")
    p.add_argument("--since", metavar="WHEN", type=_when_arg, help="runs started at or after WHEN: 30m, 12h, 1d, 2w or "
                   "an ISO date/time (2026-12-01, 2026-12-01T02:00; local time unless it ends in Z or +HH:MM)")
    p.add_argument("--until", metavar="WHEN", type=_when_arg, help="runs started before WHEN (same forms as --since)")
    p.add_argument("--limit", metavar="N", type=_positive, default=20, help="at most N runs (default 20)")
    p.set_defaults(func=cmd_list)

    p = rsub.add_parser("show", parents=[shared], help="one run: steps, durations, hosts, the failing task")
    names(p.add_argument("run_id", metavar="RUN", help=RUN_REF_HELP), RUN)
    p.set_defaults(func=cmd_show)

    p = rsub.add_parser("logs", parents=[shared], help="the full log of a run")
    names(p.add_argument("run_id", metavar="RUN", help=RUN_REF_HELP), RUN)
    names(p.add_argument("--step", metavar="STEP", help="only this step's log"), STEP)
    p.add_argument("--follow", action="store_true",
                   help="stream a running run's log as it grows, step after step; end when the run ends, "
                        "with the run's exit status")
    p.set_defaults(func=cmd_logs)

    p = rsub.add_parser("stop", parents=[shared], help="stop a running run (team mode: on whichever worker runs it)")
    names(p.add_argument("run_id", metavar="RUN", help=RUN_REF_HELP), RUN)
    p.add_argument("--wait", action="store_true", help="wait until the run is recorded as ended")
    p.add_argument("--stopped-by", help=argparse.SUPPRESS)  # the server's user (later)
    p.set_defaults(func=cmd_stop)


RUN_REF_HELP = ("a run id, a unique prefix of it or of its random part (the hex at the end), "
                "'latest', or 'latest~N' (N runs before the latest)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _when_arg(text: str) -> float:
    """An age (30m, 12h, 1d, 2w: that long ago) or an ISO 8601 date/time, as epoch seconds."""
    import re
    from datetime import datetime

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if match:
        return time.time() - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise PolycrateError(
            f"not a time: {text!r} (use an age such as 30m, 12h, 1d, 2w, or an ISO date/time such as 2026-12-01T02:00)"
        ) from None
    return moment.timestamp()  # a naive time is local time


MAX_LIMIT = 1_000_000  # beyond any store we keep; and an SQLite integer holds it


def _positive(text: str) -> int:
    digits = text.strip()
    value = int(digits) if digits.isdigit() and len(digits) <= 7 else 0
    if not 1 <= value <= MAX_LIMIT:
        shown = text if len(text) <= 40 else text[:20] + f"... ({len(text)} characters)"
        raise PolycrateError(f"--limit must be a whole number from 1 to {MAX_LIMIT:,}, not {shown!r}")
    return value


def _store(args):
    from polycrate.cli.render import workspace_from
    from polycrate.cli.backend import backend_setting
    from polycrate.history import SQLiteRunStore, open_store

    ws = workspace_from(args)
    args.workspace_name = ws.name  # the runs' `workspace` in -o json
    # opening reconciles: runs whose process died read 'interrupted'
    store = open_store(ws.root, backend=backend_setting(), workspace=ws.name)
    for message in store.recovered:
        print(f"polycrate: {message}", file=sys.stderr)
    if not store.recovered and isinstance(store, SQLiteRunStore):
        for aside in store.set_aside:
            print(f"polycrate: note: a damaged run store was moved aside to {aside}; runs before it are not "
                  "listed (delete the file once it is no longer needed)", file=sys.stderr)
    return store


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""


def _duration(d: float | None) -> str:
    return "" if d is None else f"{d:.1f}s"


def cmd_list(args) -> int:
    from polycrate import contract
    from polycrate.states import RunKind

    store = _store(args)
    try:
        kind = args.kind or ("workflow" if args.workflow else None)
        runs = store.list_runs(name=args.workflow, kind=kind, status=args.status, since=args.since,
                               until=args.until, limit=args.limit + 1)  # one more: are there more than shown?
        more = len(runs) > args.limit
        runs = runs[:args.limit]
        total = store.count_runs() if not runs and args.output != "json" else 0
    finally:
        store.close()
    # team mode: runs no worker has taken yet come first (they have not started: no time filter keeps them)
    waiting = _queued(args) if kind in (None, "workflow") and not (args.status or args.since or args.until) else []
    if args.output == "json":
        emit_json(contract.runs_document(((r, args.workspace_name) for r in runs), _documents(args, waiting)),
                  args.format)
        return 0
    if not runs and not waiting:
        print(_none_matches(args, total))
        return 0
    table(
        [
            (q["id"], "", "workflow", q["workflow"] + (f" --step {q['only_step']}" if q["only_step"] else ""),
             f"queued ({q['queue']})", "", "", q["launched_by"])
            for q in waiting
        ] + [
            (
                r.id,
                "never started" if r.never_started else _when(r.started),
                r.kind,
                r.name + (" (check)" if r.check_mode else "") + (f" --step {r.only_step}" if r.only_step else ""),
                state_text(r.status) + (" (partial)" if r.kind == RunKind.WORKFLOW and r.status == RunState.SUCCEEDED
                                           and not r.workflow_success and not r.check_mode else ""),
                _duration(r.duration),
                (r.current_step or "") if r.status == RunState.RUNNING else (r.failed_step or ""),
                f"{r.user}@{r.host}" if r.host else f"{r.user}",
            )
            for r in runs
        ],
        # STEP: the step a running run is at, or the step a failed run failed at; DURATION: so far while running
        ("RUN", "STARTED", "KIND", "NAME", "STATUS", "DURATION", "STEP", "BY"),
    )
    if more:  # a list cut short says so, not only by its length
        # the next second: --until is "started before", to the second; the last row shown again beats a row lost
        print(f"(the newest {args.limit} shown; more match: --limit N for more, --until "
              f"{shlex.quote(_when(runs[-1].started + 1))} for older ones)")
    return 0


def _none_matches(args, total: int) -> str:
    """The one line `runs list` prints instead of an empty table: which filter matched nothing, of how many runs."""
    given = [f"--{flag} {shlex.quote(str(getattr(args, key)))}" for flag, key in (("workflow", "workflow"),
             ("kind", "kind"), ("status", "status")) if getattr(args, key)]
    given += [f"--{key} {_when(getattr(args, key))}" for key in ("since", "until") if getattr(args, key) is not None]
    if not given:
        return "no runs recorded yet"
    if total == 0:
        return f"no run matches {' '.join(given)}: no runs recorded yet"
    return f"no run matches {' '.join(given)} ({total} run{'s' if total != 1 else ''} recorded)"


def _queued(args, ref: str | None = None) -> list[dict]:
    """Team mode: the workspace's runs launched through the queue that no worker has taken yet (no record
    yet), all of them or the one ``ref`` names (its id or a unique prefix); [] without a backend."""
    from polycrate.cli.backend import backend_setting

    dsn = backend_setting()
    if not dsn:
        return []
    from polycrate.team.launch import queued_runs, resolve_team_run

    run_id = resolve_team_run(dsn, args.workspace_name, ref) if ref is not None else None
    if ref is not None and run_id is None:
        return []
    return queued_runs(dsn, [args.workspace_name], getattr(args, "workflow", None), run_id)


def _documents(args, rows: list[dict]) -> list[dict]:
    """Queued runs' rows (_queued) as the API shows them: team.launch.queued_document."""
    if not rows:
        return []
    from polycrate.team.launch import queued_document

    return [queued_document(row, args.workspace_name) for row in rows]


def _show_queued(args, row: dict) -> int:
    from polycrate import contract
    from polycrate.team.launch import queued_document

    doc = queued_document(row, args.workspace_name)
    if args.output == "json":
        emit_json(contract.queued_run_document(doc), args.format)
        return 0
    print(f"run:       {doc['id']}")
    print(f"workflow:  {doc['name']}" + (" (check mode)" if doc["check_mode"] else "")
          + (f" --step {doc['only_step']}" if doc["only_step"] else ""))
    print(f"status:    queued on queue '{doc['queue']}': no worker has taken it yet")
    print(f"launched:  {_when(doc['launched'])} by {doc['launched_by']} on {doc['launched_host']}")
    if doc["git_commit"]:
        print(f"commit:    {doc['git_commit']}")
    print(f"next:      polycrate worker list (the workers of each queue); polycrate runs stop {doc['id']} "
          "(take it off the queue)")
    return 0


def cmd_show(args) -> int:
    from polycrate import contract
    from polycrate.runtime.ansible_options import AnsibleOptions
    from polycrate.states import Phase, StepState

    store = _store(args)
    try:
        run = store.get_run(args.run_id)
    except NotFoundError:
        queued = _queued(args, args.run_id)  # team mode: launched, no worker has taken it yet
        if not queued:
            raise
        return _show_queued(args, queued[0])
    finally:
        store.close()
    if args.output == "json":
        emit_json(contract.run_document(run, args.workspace_name), args.format)
        return 0
    print(f"run:       {run.id}")
    print(f"{run.kind}:{' ' * (10 - len(run.kind))}{run.name}" + (" (check mode)" if run.check_mode else ""))
    print(f"status:    {state_text(run.status)}" + (f" (exit {run.exit_code})" if run.exit_code is not None else ""))
    if run.never_started:  # stopped or refused while queued (team mode), a scheduled run refused before it started
        print(f"started:   never (launched by {run.user})")
    else:
        print(f"started:   {_when(run.started)} by {run.user}@{run.host} (pid {run.pid})")
    if run.ended:
        print(f"ended:     {_when(run.ended)}" + ("" if run.never_started else f" after {_duration(run.duration)}"))
    if run.runtime:  # runs recorded before store version 5 do not say
        image = (f", image {run.image}" + (f" ({run.image_digest})" if run.image_digest else "")) if run.image else ""
        print(f"runtime:   {run.runtime}{image}")
    if run.resumed_from:
        print(f"resumes:   {run.resumed_from}")
    if run.git_commit:  # team mode: the workspace's commit the worker ran
        print(f"commit:    {run.git_commit}")
    if run.late_by is not None:
        print(f"late:      {_duration(run.late_by)} after its slot: {run.late_reason}")
    passed = AnsibleOptions.from_record(run.ansible_options)
    if passed.given:
        shown = " ".join(shlex.quote(a) for a in passed.playbook_args())
        verbosity = f" (verbosity {passed.verbosity})" if passed.verbosity is not None else ""
        print(f"ansible:   {shown}{verbosity}".rstrip())
    if run.failed_step:
        task = f", task '{run.failed_task}' on {run.failed_host}" if run.failed_task else ""
        print(f"{ended_word(run.status) + ':':<11}step {run.failed_step}{task}")
    if run.message:
        print(f"message:   {run.message}")
    if run.nothing_ran:  # no steps to list
        return 0
    print()
    table(
        [
            (
                i,
                s.name + (" [on_failure]" if s.phase == Phase.ON_FAILURE else ""),
                f"{s.block} {s.action}",
                state_text(s.status) + (f" (killed by {signal_of(s.exit_code)})" if signal_of(s.exit_code) else ""),
                s.attempts or "-",
                _duration(s.duration),
                s.note or "",
            )
            for i, s in enumerate(run.steps, 1)
        ],
        ("#", "STEP", "ACTION", "STATUS", "ATTEMPTS", "DURATION", "NOTE"),
    )
    hosts = [(s.name, h, c) for s in run.steps for h, c in s.hosts.items()]
    if hosts:
        print()
        table(
            [(step, host, c.ok, c.changed, c.failed, c.unreachable, c.skipped) for step, host, c in hosts],
            ("STEP", "HOST", "OK", "CHANGED", "FAILED", "UNREACHABLE", "SKIPPED"),
        )
    failed = (StepState.FAILED, StepState.FAILED_ALLOWED, StepState.INTERRUPTED)
    failing = [s for s in run.steps if s.status in failed and (s.failed_task or s.message)]
    for s in failing:
        print()
        task = f" task '{s.failed_task}' on {s.failed_host}" if s.failed_task else ""
        print(f"step {s.name} {state_text(s.status)}:{task}")
        for line in (s.message or "").splitlines():
            print(f"  {line}")
    if run.notices:
        print()
        for n in run.notices:
            print(f"notice {_when(n.time)}: {n.text}")
    return 0


def _record_once_started(args, store: RunStore):
    """The run to follow; a run still queued (team mode: no worker took it yet, so no record) is waited for."""
    try:
        return store.get_run(args.run_id)
    except NotFoundError:
        queued = _queued(args, args.run_id)
        if not queued:
            raise
    run_id = queued[0]["id"]
    print(f"polycrate: run {run_id} is queued on queue '{queued[0]['queue']}'; waiting for a worker to take it "
          "(Ctrl-C stops waiting, the run stays queued)", file=sys.stderr, flush=True)
    from polycrate.cli.backend import backend_setting
    from polycrate.history.postgres import connect
    from polycrate.team.launch import team_run

    looks = 0
    while True:
        try:
            return store.get_run(run_id)
        except NotFoundError:
            looks += 1
        if looks % 10 == 0:  # taken (its record comes) or still queued; else it left the queue without a record
            db = connect(backend_setting() or "")
            try:
                row = team_run(db, args.workspace_name, run_id)
            finally:
                db.close()
            if row is None or row["state"] not in ("queued", "running"):
                try:
                    return store.get_run(run_id)
                except NotFoundError:
                    why = f": {row['reason']}" if row is not None and row.get("reason") else ""
                    raise PolycrateError(f"run {run_id} ended without starting"
                                         f" ({row['state'] if row else 'gone'}){why}") from None
        time.sleep(0.3)


def cmd_logs(args) -> int:
    from polycrate import contract

    store = _store(args)
    try:
        if args.follow:
            if args.output == "json":
                raise PolycrateError("--follow prints the log as text; for JSON use: polycrate runs logs RUN -o json")
            run = _record_once_started(args, store)
            if args.step is not None and args.step not in [s.name for s in run.steps]:
                store.step_logs(run.id, args.step)  # raises: no such step, did you mean
            return follow(store, run.id, args.step)
        run_id, logs = store.step_logs(args.run_id, args.step)
    finally:
        store.close()
    if args.output == "json":
        emit_json(contract.logs_document(run_id, logs), args.format)
        return 0
    for step, text in logs:
        if args.step is None:
            print(f"==> {step.name} ({state_text(step.status)})")
        sys.stdout.write(text)
    return 0


def cmd_stop(args) -> int:
    """`runs stop RUN`: with a backend, the run's own process stops wherever it runs (team/execute.py);
    without one, SIGTERM to the run's polycrate on this host (as the server's stop)."""
    from polycrate.cli.backend import backend_setting
    from polycrate.cli.render import workspace_from

    ws = workspace_from(args)
    dsn = backend_setting()
    if dsn is not None:
        return _stop_launched(args, dsn, ws.name, args.run_id)
    import socket

    from polycrate.history.store import current_user
    from polycrate.server.launch import stop

    store = _store(args)
    try:
        run = store.get_run(args.run_id)
    finally:
        store.close()
    stop(ws.root, run, getattr(args, "stopped_by", None) or f"{current_user()}@{socket.gethostname()}")
    print(f"polycrate: run {run.id}: stop requested (SIGTERM to pid {run.pid})", file=sys.stderr)
    return 0


def _stop_launched(args, dsn: str, workspace: str, ref: str) -> int:
    """`runs stop RUN` with a backend: ask the run to stop on whichever worker runs it."""
    import socket

    from polycrate.errors import NotFoundError
    from polycrate.history.store import current_user
    from polycrate.team.launch import resolve_team_run, stop

    run_id = resolve_team_run(dsn, workspace, ref)
    if run_id is None:
        raise NotFoundError(f"no launched run '{ref}' (see: polycrate runs list)")
    who = getattr(args, "stopped_by", None) or f"{current_user()}@{socket.gethostname()}"
    print(f"polycrate: {stop(dsn, workspace, run_id, who)}", file=sys.stderr)
    if not args.wait:
        return 0
    from polycrate.history.postgres import PostgresRunStore
    from polycrate.states import RunState

    store = PostgresRunStore(dsn, workspace=workspace)
    try:
        while True:
            run = store.find_run(run_id)
            if run is not None and run.status != RunState.RUNNING:
                print(f"run {run_id} {run.status}: {run.message or ''}".rstrip(": "))
                return 0
            time.sleep(0.1)
    finally:
        store.close()


FOLLOW_POLL_SECONDS = 0.3  # the longest pause between two looks at a quiet run
FOLLOW_POLL_FIRST = 0.05  # the pause after a look that found something new: the end comes soon after output


def next_pause(pause: float, moved: bool) -> float:
    """The pause before the next look: short while the run moves, growing to FOLLOW_POLL_SECONDS while it is
    quiet (a run's end is seen within 0.05-0.1 s of its last output, a quiet run costs a query a 0.3 s)."""
    return FOLLOW_POLL_FIRST if moved else min(FOLLOW_POLL_SECONDS, pause * 1.5)


def follow(store: RunStore, run_id: str, only_step: str | None = None) -> int:
    """Print a run's step logs as they grow, each step under a header, until the run has ended and
    every line is out; return the run's exit status (the recorded one: 0, 1, 130, ...)."""
    from polycrate import ansi
    from polycrate.states import StepState

    offsets: dict[int, int] = {}
    partial: dict[int, bytes] = {}
    announced: set[int] = set()
    finished: set[int] = set()
    pause = FOLLOW_POLL_FIRST
    while True:
        seen = (dict(offsets), len(announced), len(finished))
        store.reconcile()  # a run whose process died reads 'interrupted', and the follow ends
        run = store.get_run(run_id)  # the state first, then the logs: what it wrote before it ended is read below
        steps = [s for s in run.steps if only_step is None or s.name == only_step]
        for s in steps:
            position = s.position
            if s.log and position not in announced:
                announced.add(position)
                if only_step is None:
                    print(f"==> {s.name}: {s.block} {s.action}", flush=True)
            if s.log:
                piece = store.read_log(run_id, position, offsets.get(position, 0))
                offsets[position] = piece.cursor
                data = partial.pop(position, b"") + piece.data
                lines = data.split(b"\n")
                if lines[-1]:
                    partial[position] = lines[-1]  # a line still being written
                for line in lines[:-1]:
                    sys.stdout.write(ansi.strip(line.decode("utf-8", "replace")) + "\n")
                sys.stdout.flush()
            ended = s.status not in (StepState.RUNNING, StepState.NOT_RUN)
            if position in announced and ended and position not in finished:
                finished.add(position)
                for tail in [partial.pop(position, b"")]:
                    if tail:
                        print(ansi.strip(tail.decode("utf-8", "replace")))
                if only_step is None:
                    print(f"==> {s.name}: {state_text(s.status)} ({_duration(s.duration)})", flush=True)
        if run.status != RunState.RUNNING:
            code = run.exit_code if run.exit_code is not None else 1
            print(f"==> run {run.id} {run.status} after {_duration(run.duration)} (exit {code})", flush=True)
            return code
        pause = next_pause(pause, (dict(offsets), len(announced), len(finished)) != seen)
        time.sleep(pause)
