"""`polycrate run BLOCK ACTION`"""
from __future__ import annotations

import sys

from polycrate import engine
from polycrate.cli.prompt import make_confirm
from polycrate.cli.render import emit_json, workspace_from
from polycrate.errors import EXIT_ACTION_FAILED


def register(sub, shared) -> None:
    p = sub.add_parser("run", parents=[shared], help="run one action of a block")
    p.add_argument("block")
    p.add_argument("action")
    add_run_options(p)
    p.set_defaults(func=cmd_run)


def add_run_options(p) -> None:
    p.add_argument("--check", action="store_true", help="Ansible check mode: change nothing")
    p.add_argument("--diff", action="store_true", help="show Ansible diffs")


class TextReporter(engine.Reporter):
    """Streams action output live; step banners on stderr so stdout stays the action's."""

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
            print(f"==> [{index}/{total}] {step.name}: {step.status} ({step.duration:.1f}s)", file=sys.stderr, flush=True)


def summarize(result: engine.RunResult, output: str) -> int:
    failed = result.failed_step
    if output == "json":
        emit_json(
            {
                "kind": result.kind,
                "name": result.name,
                "status": "succeeded" if result.ok else "failed",
                "duration": round(result.duration, 3),
                "failed_step": failed.name if failed else None,
                "steps": [vars(s) for s in result.steps],
            }
        )
    elif result.kind == "workflow":
        print(f"workflow {result.name}:", file=sys.stderr)
        for s in result.steps:
            code = f" exit {s.exit_code}" if s.exit_code not in (None, 0) else ""
            print(f"  {s.name:<20} {s.status}{code} ({s.duration:.1f}s)", file=sys.stderr)
        if failed:
            skipped = ", ".join(s.name for s in result.skipped) or "none"
            print(
                f"polycrate: workflow {result.name} failed at step '{failed.name}'; skipped: {skipped}",
                file=sys.stderr,
            )
    elif failed:
        print(f"polycrate: action {result.name} failed (exit {failed.exit_code})", file=sys.stderr)
    return 0 if result.ok else EXIT_ACTION_FAILED


def cmd_run(args) -> int:
    ws = workspace_from(args)
    options = engine.RunOptions(check=args.check, diff=args.diff)
    result = engine.run_action(
        ws,
        args.block,
        args.action,
        confirm=make_confirm(args.force),
        reporter=TextReporter(workflow=False, output=args.output),
        options=options,
    )
    return summarize(result, args.output)
