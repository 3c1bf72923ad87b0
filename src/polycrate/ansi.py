"""Terminal escape codes: recognised and removed wherever text is kept or leaves a terminal.

The run store, `runs logs`, JSON and every output that is not a terminal carry plain text;
only a terminal (with colour allowed) sees Ansible's colours.
"""
from __future__ import annotations

import re

# CSI sequences (colours, cursor moves, erase), OSC sequences (titles, links), and lone ESC + one char
ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


def strip(text: str) -> str:
    return ESCAPE.sub("", text) if "\x1b" in text else text
