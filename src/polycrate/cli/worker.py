"""`polycrate worker` (team mode): take launched runs of some queues and run them; `worker list`; and the
launching side of `workflows run` with a backend (enqueue, print the run id, `--wait` follows it)."""
from __future__ import annotations

import argparse
import sys
import time

from polycrate.errors import PolycrateError


def register(sub, shared) -> None:
    p = sub.add_parser("worker", parents=[shared],
                       help="team mode: run launched workflows of some queues (connects out to PostgreSQL only)")
    p.add_argument("--queue", action="append", metavar="NAME", dest="queues",
                   help="a queue to take runs from (repeat for more; default: default)")
    p.add_argument("--concurrency", type=_count, default=1, metavar="N", help="runs at once (default 1)")
    p.add_argument("--name", help="this worker's name in `worker list` (default: HOST-PID)")
    p.add_argument("--lost-after", type=_seconds, default=30.0, metavar="SECONDS",
                   help="a run whose worker sent no heartbeat for this long is marked lost (default 30)")
    p.add_argument("--heartbeat", type=_seconds, default=5.0, metavar="SECONDS",
                   help="seconds between this worker's heartbeats (default 5; keep it well below --lost-after)")
    p.add_argument("--identity", metavar="FILE",
                   help="the age identity its runs decrypt secrets with, and only it (default: the one `worker keygen` "
                   "made for --name, if any)")
    p.add_argument("--cache", metavar="DIR",
                   help="where launched commits are fetched and checked out (default: ~/.cache/polycrate/worker/NAME)")
    p.add_argument("--keep-slots", type=_whole, default=100, metavar="N",
                   help="schedule slot rows kept per schedule however old (default 100; the newest is always kept)")
    p.add_argument("--slot-retention", type=_whole, default=14 * 86400, metavar="SECONDS",
                   help="schedule slot rows newer than this are kept however many (default 1209600, 14 days)")
    wsub = p.add_subparsers(dest="worker_command", metavar="COMMAND")
    q = wsub.add_parser("list", parents=[shared], help="the workers: queues, last heartbeat, current runs")
    q.set_defaults(func=cmd_list)
    # the run's own process, started by a worker (team/execute.py); not for people
    q = wsub.add_parser("execute", parents=[shared])
    q.add_argument("run_id", metavar="RUN", nargs="?")
    q.add_argument("--workspace-name")
    q.add_argument("--worker-pid", type=int, required=True)
    q.add_argument("--cache", dest="execute_cache")
    q.add_argument("--identity", dest="execute_identity")
    q.add_argument("--standby", action="store_true", help="warm up, then read RUN<TAB>WORKSPACE on stdin")
    q.set_defaults(func=cmd_execute)
    q = wsub.add_parser("keygen", parents=[shared],
                        help="create this worker's age identity and print its recipient (for encryption.recipients)")
    q.add_argument("--name", dest="key_name", metavar="NAME",
                   help="the worker's name (as `polycrate worker --name`; default: this host's name)")
    q.add_argument("--identity", dest="key_file", metavar="FILE",
                   help="where to write it (default: ~/.config/polycrate/worker/NAME/age-identity.txt)")
    q.set_defaults(func=cmd_keygen)
    # a part of a sliced step, started by a worker (team/slice_run.py); not for people
    q = wsub.add_parser("slice", parents=[shared])
    q.add_argument("batch", metavar="BATCH")
    q.add_argument("index", type=int, metavar="INDEX")
    q.add_argument("--worker-pid", type=int, required=True)
    q.add_argument("--cache", dest="execute_cache")
    q.add_argument("--identity", dest="execute_identity")
    q.set_defaults(func=cmd_slice)
    p.set_defaults(func=cmd_worker)


def _count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 256, not {text!r}")
    return int(text)


def _whole(text: str) -> int:
    if not text.isdigit() or int(text) > 10**9:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to 1000000000, not {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0.1 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"must be seconds from 0.1 to 86400, not {text!r}")
    return value


def backend_required(what: str) -> str:
    from polycrate.cli.backend import BACKEND_ENV, HOST_CONFIG, backend_setting

    dsn = backend_setting()
    if dsn is None:
        raise PolycrateError(f"{what} needs a backend: set {BACKEND_ENV}=postgresql://USER@HOST:PORT/DATABASE, or "
                             f"backend.dsn_file in {HOST_CONFIG}")
    return dsn


def _check_schema(dsn: str) -> None:
    from polycrate.history.postgres import PostgresRunStore

    PostgresRunStore(dsn, workspace="").close()  # refuses a missing or outdated schema with one line


def cmd_worker(args) -> int:
    from polycrate.team.worker import WorkerSettings, default_name, serve

    dsn = backend_required("polycrate worker")
    _check_schema(dsn)
    from pathlib import Path

    from polycrate.team.identity import default_identity, recipient_of, worker_key_name
    from polycrate.team.source import default_cache

    found = Path(args.identity).expanduser().resolve() if args.identity else default_identity(args.name)
    identity = found if args.identity or found.is_file() else None
    # an unreadable or malformed key: one line now, not at each run
    recipient = recipient_of(identity) if identity is not None else None
    cache = Path(args.cache).expanduser().resolve() if args.cache else default_cache(worker_key_name(args.name))
    settings = WorkerSettings(name=args.name or default_name(), queues=tuple(args.queues or ["default"]),
                              concurrency=args.concurrency, lost_after=args.lost_after, heartbeat=args.heartbeat,
                              cache=cache, identity=identity, keep_slots=args.keep_slots,
                              slot_retention=float(args.slot_retention))
    if settings.heartbeat * 2 > settings.lost_after:
        raise PolycrateError(f"--heartbeat {settings.heartbeat:g} must be at most half of --lost-after "
                             f"{settings.lost_after:g}: a live worker would read as lost")
    print(f"polycrate worker: {settings.name}: launched commits are fetched to {cache}; secrets decrypt with "
          + (f"its identity {identity} (recipient {recipient})" if identity else
             "this user's key (no worker identity: `polycrate worker keygen` makes one)"), flush=True)
    return serve(dsn, settings)


def cmd_keygen(args) -> int:
    from pathlib import Path

    from polycrate.team.identity import default_identity, keygen

    name = args.key_name or args.name
    output = Path(args.key_file).expanduser() if args.key_file else default_identity(name)
    recipient = keygen(output)
    if args.output == "json":
        from polycrate import contract
        from polycrate.cli.render import emit_json

        emit_json(contract.document("secrets-keygen", {"recipient": recipient, "identity_file": str(output)}),
                  args.format)
        return 0
    print(recipient)
    print(f"# the worker's identity is written to {output} (mode 0600; keep it secret). Add the recipient above to "
          "encryption.recipients in workspace.poly, run `polycrate workspace encrypt --rekey`, commit and push; "
          + (f"start the worker with --name {name}." if name and not args.key_file else
             f"start the worker with --identity {output}." if args.key_file else "then start the worker."),
          file=sys.stderr, flush=True)
    return 0


def cmd_list(args) -> int:
    from polycrate.cli.render import table
    from polycrate.team.worker import workers

    dsn = backend_required("polycrate worker list")
    found = workers(dsn)
    now = time.time()
    if args.output == "json":
        from polycrate import contract
        from polycrate.cli.render import emit_json

        emit_json(contract.document("workers", {"workers": [
            w | {"started": contract.timestamp(w["started"]), "last_heartbeat": contract.timestamp(w["last_heartbeat"]),
                 "heartbeat_age": round(now - w["last_heartbeat"], 1) if w["last_heartbeat"] else None}
            for w in found]}), args.format)
        return 0
    if not found:
        print("no workers (start one: polycrate worker --queue NAME)")
        return 0
    rows = []
    for w in found:
        beat = f"{now - w['last_heartbeat']:.0f}s ago" if w["last_heartbeat"] else "never"
        runs = ", ".join(f"{r['run_id']} ({r['workflow']})" for r in w["runs"]) or "-"
        # a part: its run, step and slice (each worker takes the parts of its queues' runs: `QUEUE.slices`)
        parts = ", ".join(f"{p['run_id']} {p['step']} {p['slice']}/{p['slices']}" for p in w["parts"]) or "-"
        rows.append([w["name"], w["host"], ",".join(w["queues"]), str(w["concurrency"]), w["state"], beat, runs,
                     parts])
    table(rows, ["WORKER", "HOST", "QUEUES", "CONCURRENCY", "STATE", "LAST HEARTBEAT", "RUNS", "SLICES"])
    return 0


def cmd_execute(args) -> int:
    dsn = backend_required("polycrate worker execute")
    run_id, workspace = args.run_id, args.workspace_name
    if args.standby:
        from polycrate.team.standby import wait_for_run

        given = wait_for_run()
        if given is None:
            return 0  # the worker stopped before it needed this process
        run_id, workspace = given
    if not run_id or not workspace:
        raise PolycrateError("worker execute needs RUN and --workspace-name (or --standby)")
    from polycrate.team.execute import execute

    from pathlib import Path

    return execute(dsn, workspace, run_id, args.worker_pid,
                   cache=Path(args.execute_cache) if args.execute_cache else None,
                   identity=Path(args.execute_identity) if args.execute_identity else None)


def cmd_slice(args) -> int:
    from polycrate.team.slice_run import execute_slice

    from pathlib import Path

    return execute_slice(backend_required("polycrate worker slice"), args.batch, args.index, args.worker_pid,
                         cache=Path(args.execute_cache) if args.execute_cache else None,
                         identity=Path(args.execute_identity) if args.execute_identity else None)


# --- the launching side ---------------------------------------------------------------------------------------


def enqueue_workflow(args, dsn: str) -> int:
    """`workflows run NAME` with a backend: launch the run on its queue; print its id; --wait follows it."""
    from polycrate.cli.prompt import make_confirm
    from polycrate.config.workspace import find_root, get_workflow, load_workspace
    from polycrate.history.store import current_user
    from polycrate.run.plan import plan_prompts, plan_workflow
    from polycrate.runtime.ansible_options import options_from_args
    from polycrate.team.launch import Launch, checked_commit, enqueue
    from polycrate.secrets.recipients import workspace_recipients
    from polycrate.team.source import pushed, shown_url, workspace_source
    from polycrate.team.values import terminal_values
    from polycrate.team.worker import served_queues

    _check_schema(dsn)  # an unreachable or unprepared backend first: one line, exit 74 or 2, nothing queued
    root = find_root(args.workspace, explicit=args.workspace is not None).resolve()
    ws = load_workspace(root)
    workflow = get_workflow(ws, args.name)
    if getattr(args, "run_id", None):
        raise PolycrateError("--run-id does not apply to a launch through the queue (the launch names the run)")
    confirm = make_confirm(args.force)
    for prompt in plan_prompts(ws, workflow, plan_workflow(ws, workflow, args.step), set()):
        if not confirm(prompt):  # asked here, where a person is: the worker runs with the answers given
            raise PolycrateError(f"{prompt.asker}: not confirmed, nothing was queued")
    commit = checked_commit(root)
    source = workspace_source(root)
    previous = resumable(dsn, ws.name, root, workflow.name) if getattr(args, "resume", False) else None
    queue = args.queue or workflow.queue
    ansible = options_from_args(args)
    # an @FILE exists on this host only: its text travels with the run (team/values.py), a secret one sealed
    extra_vars, values = terminal_values(ansible.extra_vars, workspace_recipients(root) if any(
        v.strip().startswith("@") for v in ansible.extra_vars) else [])
    options = {"check": args.check, "diff": args.diff, "resume": bool(getattr(args, "resume", False)),
               "runtime": args.runtime, "ansible": ansible.to_record() | {"extra_vars": list(extra_vars)}}
    who = getattr(args, "launched_by", None) or current_user()
    run_id = enqueue(dsn, Launch(workspace=ws.name, root=root, workflow=workflow.name, queue=queue, git_commit=commit,
                                 launched_by=who, only_step=args.step, options=options,
                                 remote=source.remote if source else None, subdir=source.subdir if source else "",
                                 values=tuple(values)))
    print(run_id)
    where = (f"fetched from {shown_url(source.remote)}" if source else
             "its repository has no remote: a worker runs this folder on its own host")
    print(f"polycrate: run {run_id} of workflow '{workflow.name}' queued on '{queue}' (commit {commit[:12]}, {where}); "
          f"follow it: polycrate runs logs --follow {run_id}", file=sys.stderr, flush=True)
    served = served_queues(dsn)
    if queue not in served:  # a typo in `queue:`, or its workers are down: said now, not after a silent --wait
        alive = f"alive workers serve: {', '.join(sorted(served))}" if served else "no worker is alive"
        print(f"polycrate: warning: no alive worker serves queue '{queue}' ({alive}); the run waits until one does"
              f" (polycrate worker --queue {queue})", file=sys.stderr, flush=True)
    if source is not None and not pushed(root, commit):
        print(f"polycrate: warning: commit {commit[:12]} is on no remote branch this clone knows of: push it before a "
              "worker takes the run, or the run fails with nothing executed", file=sys.stderr, flush=True)
    if previous is not None:
        link_resume(dsn, ws.name, root, previous, run_id, who)
        print(f"polycrate: it resumes run {previous} ({workflow.name}) at its first unfinished step", file=sys.stderr,
              flush=True)
    if not args.wait:
        return 0
    return follow_launched(dsn, ws.name, root, run_id)


def resumable(dsn: str, workspace: str, root, workflow: str) -> str:
    """--resume through the queue: the run it resumes (the workflow's latest, failed, interrupted or lost, from
    any host), checked here where a person is; the worker resumes it (run/opening.py)."""
    from polycrate.history.postgres import PostgresRunStore
    from polycrate.run.opening import NothingToResume
    from polycrate.states import RESUMABLE

    store = PostgresRunStore(dsn, workspace=workspace, root=root)
    try:
        previous = store.latest_full_run(workflow)
    finally:
        store.close()
    if previous is None:
        raise NothingToResume(f"nothing to resume: workflow '{workflow}' has no recorded run; nothing was queued")
    if previous.status not in RESUMABLE:
        raise NothingToResume(f"nothing to resume: the latest run of '{workflow}' ({previous.id}) {previous.status}; "
                              "nothing was queued")
    return previous.id


def link_resume(dsn: str, workspace: str, root, previous: str, run_id: str, who: str) -> None:
    """The resumed run says which run resumes it (the new run's record says ``resumed_from`` once it opens)."""
    import socket

    from polycrate.history.postgres import PostgresRunStore

    store = PostgresRunStore(dsn, workspace=workspace, root=root)
    try:
        store.add_notice(previous, f"resumed by run {run_id} (launched by {who} on {socket.gethostname()})")
    finally:
        store.close()


def follow_launched(dsn: str, workspace: str, root, run_id: str) -> int:
    """Wait for the launched run's record (it has one once a worker opened it, or refused it), then follow
    its log to its end; the run's exit code."""
    from polycrate.cli.runs import FOLLOW_POLL_FIRST, follow, next_pause
    from polycrate.history.postgres import PostgresRunStore

    store = PostgresRunStore(dsn, workspace=workspace, root=root)
    try:
        pause = FOLLOW_POLL_FIRST
        while store.find_run(run_id) is None:  # an idle worker opens it within a fraction of a second
            time.sleep(pause)
            pause = next_pause(pause, False)
        return follow(store, run_id)
    finally:
        store.close()
