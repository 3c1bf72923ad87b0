"""`polycrate run BLOCK ACTION`, and `polycrate run WORKFLOW` (one argument, as in the real Polycrate)."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from polycrate.ansible_options import add_ansible_options, options_from_args
from polycrate.cli.blocks import add_auto_pull_option
from polycrate.cli.prompt import make_confirm
from polycrate.cli.render import emit_json, state_text
from polycrate.errors import EXIT_ACTION_FAILED
from polycrate.states import Phase, RunKind, RunState, StepState

if TYPE_CHECKING:
    from polycrate import engine


def register(sub, shared) -> None:
    p = sub.add_parser("run", parents=[shared], help="run a workflow (one argument) or one action of a block (two)")
    p.add_argument("block", metavar="WORKFLOW|BLOCK")
    p.add_argument("action", nargs="?", metavar="ACTION")
    p.add_argument("--step", metavar="STEP", help="with WORKFLOW: run only this step")
    p.add_argument("--resume", action="store_true",
                   help="with WORKFLOW: continue the latest failed or interrupted run at its first unfinished step")
    add_run_options(p)
    p.set_defaults(func=cmd_run)


def add_run_options(p) -> None:
    p.add_argument("--check", action="store_true", help="Ansible check mode: change nothing")
    p.add_argument("--diff", action="store_true", help="show Ansible diffs")
    p.add_argument("--wait", action="store_true", help="wait for a running run of the same workflow/action to end")
    add_auto_pull_option(p)
    p.add_argument("--runtime", choices=("local", "container"), help="where actions run (default: config.runtime, else local)")
    add_ansible_options(p)
    p.add_argument("--no-preflight", dest="preflight", action="store_false",
                   help="skip the checks before step 1 (playbooks, scripts, hosts patterns; see workspace validate)")


class TextReporter:
    """Streams action output live; step banners on stderr so stdout stays the action's.

    An engine.Reporter by its methods (all five): the engine is imported only by commands that run
    something, not at every CLI start."""

    def __init__(self, workflow: bool, output: str = "text"):
        self.workflow = workflow
        # with --output json, stdout carries only the JSON summary
        self.stream = sys.stderr if output == "json" else sys.stdout

    def output(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def step_started(self, step, index, total):
        if self.workflow:
            print(f"==> [{index}/{total}] {step.name}: {step.block} {step.action}", file=sys.stderr, flush=True)

    def step_finished(self, step, index, total):
        if self.workflow:
            print(f"==> [{index}/{total}] {step.name}: {state_text(step.status)} ({step.duration:.1f}s)", file=sys.stderr,
                  flush=True)

    def notice(self, message):
        print(f"polycrate: {message}", file=sys.stderr, flush=True)

    def toolchain(self, line):
        print(f"[toolchain] {line}", file=sys.stderr, flush=True)


def summarize(result: engine.RunResult, output: str) -> int:
    failed = result.failed_step
    if output == "json":
        emit_json(
            {
                "kind": result.kind,
                "name": result.name,
                "status": RunState.SUCCEEDED if result.ok else RunState.FAILED,
                "duration": round(result.duration, 3),
                "failed_step": failed.name if failed else None,
                "run_id": result.run_id,
                "resumed_from": result.resumed_from,
                "check": result.check,
                "steps": [s.to_dict() for s in result.steps],
            }
        )
    elif result.kind == RunKind.WORKFLOW:
        print(f"workflow {result.name}{' (check mode)' if result.check else ''}:", file=sys.stderr)
        for s in result.steps:
            if s.phase == Phase.ON_FAILURE and s.status == StepState.NOT_RUN:
                continue  # on_failure steps show only when they ran
            code = f" exit {s.exit_code}" if s.exit_code not in (None, 0) else ""
            extra = " [on_failure]" if s.phase == Phase.ON_FAILURE else ""
            note = f": {s.note}" if s.note and s.status in (StepState.SKIPPED_CHECK, StepState.SUCCEEDED_BEFORE) else ""
            print(f"  {s.name:<20} {state_text(s.status)}{code} ({s.duration:.1f}s){extra}{note}", file=sys.stderr)
        if failed:
            skipped = ", ".join(s.name for s in result.skipped) or "none"
            where = f"; task '{failed.failed_task}' on {failed.failed_host}" if failed.failed_task else ""
            print(
                f"polycrate: workflow {result.name} failed at step '{failed.name}'{where}; skipped: {skipped}",
                file=sys.stderr,
            )
            if failed.message:
                print(f"polycrate: {failed.message.splitlines()[0]}", file=sys.stderr)
    elif failed:
        where = f" at task '{failed.failed_task}' on {failed.failed_host}" if failed.failed_task else ""
        print(f"polycrate: action {result.name} failed{where} (exit {failed.exit_code})", file=sys.stderr)
        if failed.message:
            print(f"polycrate: {failed.message.splitlines()[0]}", file=sys.stderr)
    elif result.steps and result.steps[0].status == StepState.SKIPPED_CHECK:
        print(f"polycrate: action {result.name} skipped: {result.steps[0].note}", file=sys.stderr)
    if result.run_id and output != "json":
        print(f"polycrate: run {result.run_id} recorded (polycrate runs show {result.run_id})", file=sys.stderr)
    return 0 if result.ok else EXIT_ACTION_FAILED


def run_request(args, **what):
    """The pipeline's request for `run` and `workflows run` from their shared options."""
    from polycrate import engine
    from polycrate.pipeline import RunRequest
    from polycrate.workspace import find_root

    options = engine.RunOptions(check=args.check, diff=args.diff, resume=getattr(args, "resume", False),
                                wait=args.wait, runtime=args.runtime, ansible=options_from_args(args),
                                preflight=args.preflight)
    return RunRequest(find_root(args.workspace, explicit=args.workspace is not None), options=options,
                      auto_pull=args.blocks_auto_pull, **what)


def cmd_run(args) -> int:
    from polycrate import pipeline

    if args.action is None:  # `polycrate run WORKFLOW`: recorded as a workflow run
        from polycrate.cli.workflows import cmd_run as run_workflow

        args.name = args.block
        return run_workflow(args)
    if getattr(args, "step", None) or getattr(args, "resume", False):
        from polycrate.errors import PolycrateError

        raise PolycrateError("--step and --resume apply to workflows (polycrate run WORKFLOW)")
    result = pipeline.run(
        run_request(args, block=args.block, action=args.action),
        confirm=make_confirm(args.force),
        reporter=TextReporter(workflow=False, output=args.output),
    )
    return summarize(result, args.output)
