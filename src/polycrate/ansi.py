"""Terminal escape codes: recognised and removed wherever text is kept or leaves a terminal.

A run's stored log keeps the colours (SGR sequences, ``ESC[...m``) and nothing else of the kind
(``keep_colour``): the web page renders them as spans. Every plain reader (`runs logs`, the JSON
documents, the raw download, failure texts, notifications, webhooks) removes them (``strip``); only a
terminal (with colour allowed) sees Ansible's colours.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

# CSI sequences (colours, cursor moves, erase), OSC sequences (titles, links), and lone ESC + one char
ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
ESCAPE_BYTES = re.compile(ESCAPE.pattern.encode())
# Select Graphic Rendition: colour and weight, the one sequence a stored log keeps
SGR = re.compile(r"\x1b\[[0-9;]*m")
_COLOUR_OR_OTHER = re.compile(rf"({SGR.pattern})|{ESCAPE.pattern}")


def strip(text: str) -> str:
    """The text without any escape sequence (colours included): what plain readers show."""
    return ESCAPE.sub("", text) if "\x1b" in text else text


def strip_bytes(data: bytes) -> bytes:
    """``strip`` for a log's bytes (a download streams them undecoded)."""
    return ESCAPE_BYTES.sub(b"", data) if b"\x1b" in data else data


def keep_colour(text: str) -> str:
    """The text with its colours (SGR sequences) and without every other escape sequence: what a log keeps."""
    if "\x1b" not in text or "\x1b" not in SGR.sub("", text):  # the usual line: colours only, kept as it is
        return text
    return _COLOUR_OR_OTHER.sub(lambda m: m.group(1) or "", text)


def sgr_spans(text: str) -> list[tuple[int, int]]:
    """The ``[start, end)`` stretches of ``text`` that are colour codes, in order."""
    return [m.span() for m in SGR.finditer(text)] if "\x1b" in text else []


def colour_recorded(environ: Mapping[str, str], no_color: bool = False) -> bool:
    """Whether Ansible colours its output for the run's log, wherever the output goes (a terminal, a pipe, a
    server's or a worker's file): unless the user turned colour off (--no-color, NO_COLOR, ANSIBLE_NOCOLOR)."""
    if no_color or "NO_COLOR" in environ:
        return False
    return environ.get("ANSIBLE_NOCOLOR", "").strip().lower() in ("", "0", "false", "no", "off", "n", "f")


def ansible_colour(environ: Mapping[str, str], no_color: bool = False) -> tuple[tuple[str, str], ...]:
    """The variables that make Ansible colour its output, or not (``colour_recorded``)."""
    if colour_recorded(environ, no_color):
        return (("ANSIBLE_FORCE_COLOR", "1"),)
    return (("ANSIBLE_NOCOLOR", "1"), ("ANSIBLE_FORCE_COLOR", "0"))
