"""`polycrate run BLOCK ACTION`, and `polycrate run WORKFLOW` (one argument, as in the real Polycrate)."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from polycrate.runtime.ansible_options import add_ansible_options, options_from_args
from polycrate.cli.blocks import add_auto_pull_option
from polycrate.cli.completion import ACTION, STEP, WORKFLOW_OR_BLOCK, names
from polycrate.cli.live import add_view_options
from polycrate.cli.prompt import make_confirm
from polycrate.cli.render import emit_json
from polycrate.errors import EXIT_ACTION_FAILED

if TYPE_CHECKING:
    from polycrate.run.request import RunResult


def register(sub, shared) -> None:
    p = sub.add_parser("run", parents=[shared], help="run a workflow (one argument) or one action of a block (two)")
    names(p.add_argument("block", metavar="WORKFLOW|BLOCK"), WORKFLOW_OR_BLOCK)
    names(p.add_argument("action", nargs="?", metavar="ACTION"), ACTION)
    names(p.add_argument("--step", metavar="STEP", help="with WORKFLOW: run only this step"), STEP)
    p.add_argument("--resume", action="store_true",
                   help="with WORKFLOW: continue the latest failed, interrupted or lost run at its first unfinished step")
    add_run_options(p)
    p.set_defaults(func=cmd_run)


def add_run_options(p) -> None:
    p.add_argument("--check", action="store_true", help="Ansible check mode: change nothing")
    p.add_argument("--diff", action="store_true", help="show Ansible diffs")
    p.add_argument("--wait", action="store_true", help="wait for a running run of the same workflow/action to end; "
                   "with a backend: follow the launched run to its end and exit with its code")
    p.add_argument("--queue", metavar="NAME", help="with a backend: launch on this queue (default: the workflow's queue:)")
    p.add_argument("--here", action="store_true",
                   help="with a backend: run on this host now instead of launching it on a worker's queue")
    add_auto_pull_option(p)
    p.add_argument("--runtime", choices=("local", "container"),
                   help="where actions run (default: config.runtime, else $POLYCRATE_RUNTIME, else container)")
    add_ansible_options(p)
    p.add_argument("--no-preflight", dest="preflight", action="store_false",
                   help="skip the checks before step 1 (playbooks, scripts, hosts patterns; see workspace validate)")
    add_view_options(p)
    # for `polycrate serve`, which names the run before it starts and records who launched it
    p.add_argument("--run-id", help=argparse.SUPPRESS)
    p.add_argument("--launched-by", help=argparse.SUPPRESS)
    p.set_defaults(runs_actions=True)  # takes the global run flags (cli/flags.py)


def make_reporter(args):
    """The live view (cli/live.py) with this command's output format, colour and heartbeat choices."""
    from polycrate.cli.live import LiveReporter

    return LiveReporter(output=args.output, no_color=args.no_color, heartbeat=args.heartbeat)


def rerun_command(args, *words: str) -> str:
    import shlex

    where = f" -w {shlex.quote(str(args.workspace))}" if getattr(args, "workspace", None) else ""
    return "polycrate" + where + " " + " ".join(shlex.quote(w) for w in words)


def summarize(result: RunResult, output: str, reporter=None, command: str | None = None, fmt: str = "json") -> int:
    """The run's summary: the JSON document on stdout, or the text layout (cli/summary.py) on the story's stream."""
    from polycrate.cli import summary
    from polycrate.cli.live import story_stream

    if output == "json":  # the run as recorded: the document of `runs show RUN -o json`
        from polycrate import contract

        if result.record is not None:
            emit_json(contract.run_document(result.record, result.workspace), fmt)
        else:  # the engine could not read the finished run back (its notice said why): no document, no traceback
            import sys

            print(f"polycrate: error: run {result.run_id}: not readable from the run store, no JSON document",
                  file=sys.stderr)
    stream = reporter.stream if reporter is not None else story_stream(output)
    paint = reporter._paint if reporter is not None else (lambda text, colour: text)
    summary.render(result, stream, paint, command)
    stream.flush()
    return 0 if result.ok else EXIT_ACTION_FAILED


def zygote_enabled() -> bool:
    """POLYCRATE_ZYGOTE=0 (or false, no, off): every ansible step starts its own process."""
    import os

    return os.environ.get("POLYCRATE_ZYGOTE", "1").strip().lower() not in ("0", "false", "no", "off")


def run_request(args, reporter, early_zygote=None, **what):
    """The pipeline's request for `run` and `workflows run` from their shared options."""
    import shlex

    from polycrate.cli.backend import backend_setting
    from polycrate.cli.flags import run_settings
    from polycrate.run.request import RunOptions, RunRequest
    from polycrate.config.workspace import find_root

    options = RunOptions(check=args.check, diff=args.diff, resume=getattr(args, "resume", False),
                                wait=args.wait, ansible=options_from_args(args), preflight=args.preflight,
                                display_env=reporter.environment() if reporter is not None else (),
                                command=shlex.join(["polycrate", *getattr(args, "argv", [])]),
                                zygote=zygote_enabled(), run_id=getattr(args, "run_id", None),
                                launched_by=getattr(args, "launched_by", None), backend=backend_setting(),
                                **run_settings(args))
    return RunRequest(find_root(args.workspace, explicit=args.workspace is not None), options=options,
                      auto_pull=args.blocks_auto_pull, early_zygote=early_zygote, **what)


def print_snapshot(args, **what) -> int:
    """--snapshot: the snapshot the run's actions would get, as YAML (or -o json); nothing runs."""
    import yaml

    from polycrate.run import pipeline

    data = pipeline.snapshot(run_request(args, None, **what))
    if args.output == "json":
        from polycrate import contract

        emit_json(contract.document("run-snapshot", data), args.format)
    else:
        print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip())
    return 0


def _local_before_reading(args) -> bool:
    """Whether the run is local by what is known before workspace.poly is read: -l, --runtime local, or
    POLYCRATE_RUNTIME=local without --runtime. (config.runtime: local alone misses the early zygote, not the zygote.)"""
    import os

    from polycrate.runtime.toolchain import RUNTIME_ENV

    runtime = getattr(args, "runtime", None)
    return bool(args.local) or runtime == "local" or (
        runtime is None and os.environ.get(RUNTIME_ENV, "").strip() == "local")


def run_and_summarize(args, rerun: str, **what) -> int:
    """Run one request through the pipeline with the terminal view, then print its summary."""
    from polycrate.run import pipeline

    if args.snapshot:
        return print_snapshot(args, **what)
    if (what.get("workflow") is not None or args.preflight) and _local_before_reading(args):
        # ansible steps (and the preflight) fork from a zygote: start it while the run is prepared (local only)
        from polycrate.runtime.zygote import prespawn

        early = prespawn(zygote_enabled())
    else:
        early = None
    try:
        reporter = make_reporter(args)
        try:
            result = pipeline.run(run_request(args, reporter, early, **what), confirm=make_confirm(args.force),
                                  reporter=reporter)
        except KeyboardInterrupt:
            reporter.close()  # the status line goes first: the hint starts a line of its own
            _interrupted_hint(reporter, rerun, what)
            raise
        finally:
            reporter.close()
    finally:
        if early is not None:  # whoever starts it ends it: unused (a script-only run, a refused request), or taken
            early.discard()
    try:
        return summarize(result, args.output, reporter, rerun, args.format)
    except (OSError, ValueError):  # the viewer went away (`| head`): the exit code is still the run's
        from polycrate import success
        from polycrate.cli.live import drop_closed_streams

        drop_closed_streams()
        return success.exit_code_of(result.status) if result.status.finished else EXIT_ACTION_FAILED


def _interrupted_hint(reporter, rerun: str, what: dict) -> None:
    """After Ctrl-C (or SIGTERM, SIGHUP) of a recorded run: how to continue it and where its record is."""
    if not reporter.run_id:
        return
    lines = []  # the engine's notice said "run ... interrupted; recorded as interrupted" just before
    if what.get("workflow") is not None and not what.get("only_step"):
        lines.append(f"next: continue it:  {rerun} --resume")
    lines.append(f"{'      ' if lines else 'next: '}details:      polycrate runs show {reporter.run_id}")
    try:
        for line in lines:
            print(line, file=reporter.stream, flush=True)
    except (OSError, ValueError):
        pass


def cmd_run(args) -> int:
    if args.action is None:  # `polycrate run WORKFLOW`: recorded as a workflow run
        args.name = args.block
        return run_workflow(args)
    if getattr(args, "step", None) or getattr(args, "resume", False):
        from polycrate.errors import PolycrateError

        raise PolycrateError("--step and --resume apply to workflows (polycrate run WORKFLOW)")
    return run_and_summarize(args, rerun_command(args, "run", args.block, args.action),
                             block=args.block, action=args.action)


def run_workflow(args) -> int:
    """`workflows run NAME` and `run NAME`: one workflow run with the terminal view; with a backend (team
    mode), launched on its queue instead unless --here."""
    from polycrate.cli.backend import backend_setting

    dsn = backend_setting()
    if dsn is not None and not args.here and not args.snapshot:
        from polycrate.cli.worker import enqueue_workflow

        return enqueue_workflow(args, dsn)
    return run_and_summarize(args, rerun_command(args, "workflows", "run", args.name),
                             workflow=args.name, only_step=args.step)
