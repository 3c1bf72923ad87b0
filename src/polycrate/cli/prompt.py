"""Answering prompts: -f/--force says yes; a terminal is asked; no terminal refuses."""
from __future__ import annotations

import sys

from polycrate.errors import CLI, SCHEDULE, WEB, PolycrateError


def make_confirm(force: bool):
    """The `confirm` callback of a run: answers a ``states.RunPrompt``."""

    def confirm(prompt) -> bool:
        who, message = prompt.asker, prompt.message
        if force:
            return True
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            if prompt.pulls:
                raise _cannot_pull(prompt.pulls)
            raise PolycrateError(
                f"{who} asks for confirmation ({message!r}) but there is no terminal",
                hints={CLI: "re-run with --force to answer yes", WEB: "tick its confirmation box to launch it",
                       SCHEDULE: "a scheduled run never answers prompts: remove the prompt, or the schedule"},
            )
        for change in prompt.pulls:
            print(f"polycrate: {change.describe()}", file=sys.stderr)
        sys.stderr.write(f"{who}: {message} [y/N] ")
        sys.stderr.flush()
        answer = sys.stdin.readline()
        return answer.strip().lower() in ("y", "yes")

    return confirm


def _cannot_pull(changes) -> PolycrateError:
    """Blocks to install and nobody to ask: the commands that install them, or the flag that allows it."""
    commands = "; ".join(f"polycrate blocks pull {c.reference}" for c in changes)
    what = "; ".join(c.describe() for c in changes)
    flag = "--force" if any(c.kind == "downgrade" for c in changes) else "--blocks-auto-pull"
    first = changes[0]
    return PolycrateError(f"{what}: run `{commands}`, or re-run with {flag}", first.file, first.line)
