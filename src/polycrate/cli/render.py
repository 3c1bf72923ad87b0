"""Output for people (text) and machines (--output json)."""
from __future__ import annotations

import json
import sys
from typing import Any
from collections.abc import Sequence

# Every command module imports this one while the parser is built: what it imports is paid by
# `--help` and `workflows list` too, so the workspace and the states come when a command needs them.


def state_text(state: Any) -> str:
    """The wording of a run or step state for people: polycrate.states.state_text (shared with the server)."""
    from polycrate.states import state_text as words

    return words(state)


def workspace_from(args):
    from polycrate.config.workspace import find_root, load_workspace

    ws = load_workspace(find_root(args.workspace, explicit=args.workspace is not None))
    for warning in ws.warnings:  # Polycrate's fields that have no effect here: one line each, on stderr
        print(f"polycrate: warning: {warning}", file=sys.stderr)
    return ws


# terminal colours (only where colour is allowed: cli/live.py decides)
GREEN, RED, YELLOW, BOLD, DIM, RESET = "\x1b[32m", "\x1b[31m", "\x1b[33m", "\x1b[1m", "\x1b[2m", "\x1b[0m"


def emit_json(data: Any, fmt: str = "json") -> None:
    """A contract document on stdout: JSON, or the same data as YAML (`fmt` "yaml": -o yaml)."""
    if fmt == "yaml":
        import yaml

        sys.stdout.write(yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False))
        return
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    cells = [[str(c) for c in headers]] + [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())
