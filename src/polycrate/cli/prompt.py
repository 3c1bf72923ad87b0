"""Answering prompts: -f/--force says yes; a terminal is asked; no terminal refuses."""
from __future__ import annotations

import sys

from polycrate.errors import PolycrateError


def make_confirm(force: bool):
    """The `confirm` callback of a run: answers a ``states.RunPrompt``."""

    def confirm(prompt) -> bool:
        who, message = prompt.asker, prompt.message
        if force:
            return True
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise PolycrateError(
                f"{who} asks for confirmation ({message!r}) but there is no terminal: "
                "re-run with --force to answer yes"
            )
        sys.stderr.write(f"{who}: {message} [y/N] ")
        sys.stderr.flush()
        answer = sys.stdin.readline()
        return answer.strip().lower() in ("y", "yes")

    return confirm
