"""A run's log as the web page shows it: colours (SGR codes) as spans with fixed classes, and search.

Everything from the log is escaped; the only markup is ours: `<span class="ln">` per line and
`<span class="ansi-...">` for colour and weight, whose class names come from a fixed table (a code
that is not in it is dropped, never copied into the page). Every other escape sequence is removed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from markupsafe import Markup, escape

from polycrate.ansi import ESCAPE

SGR = re.compile(r"\x1b\[([0-9;]{0,40})m")
SEARCH_MAX = 200  # characters of a search text
SEARCH_MATCHES = 500  # matching lines an answer carries at most (it says when there were more)
LINE_SHOWN = 400  # characters of a matching line an answer carries

_FG = {**{30 + i: f"fg{i}" for i in range(8)}, **{90 + i: f"fg{i + 8}" for i in range(8)}}
_BG = {**{40 + i: f"bg{i}" for i in range(8)}, **{100 + i: f"bg{i + 8}" for i in range(8)}}


@dataclass
class _Style:
    fg: str | None = None
    bg: str | None = None
    flags: set[str] = field(default_factory=set)  # bold, dim, italic, underline

    def apply(self, params: str) -> None:
        codes = [int(c) if c.isdigit() else 0 for c in params.split(";")] if params else [0]
        i = 0
        while i < len(codes):
            code = codes[i]
            if code == 0:
                self.fg, self.bg, self.flags = None, None, set()
            elif code in (1, 2, 3, 4):
                self.flags.add({1: "bold", 2: "dim", 3: "italic", 4: "underline"}[code])
            elif code == 22:
                self.flags -= {"bold", "dim"}
            elif code in (23, 24):
                self.flags.discard("italic" if code == 23 else "underline")
            elif code in _FG:
                self.fg = _FG[code]
            elif code in _BG:
                self.bg = _BG[code]
            elif code == 39:
                self.fg = None
            elif code == 49:
                self.bg = None
            elif code in (38, 48):  # 256-colour or RGB: not in our table; skip its arguments
                i += 2 if codes[i + 1:i + 2] == [5] else 4
            i += 1

    def classes(self) -> str:
        names = [f"ansi-{n}" for n in (self.fg, self.bg) if n] + [f"ansi-{f}" for f in sorted(self.flags)]
        return " ".join(names)


def render(text: str) -> Markup:
    """The log text as HTML: one `<span class="ln">` per line, colours as spans of our classes."""
    style = _Style()
    out: list[str] = []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for line in lines:
        parts: list[str] = ['<span class="ln">']
        open_span = False
        if style.classes():
            parts.append(f'<span class="{style.classes()}">')
            open_span = True
        position = 0
        for match in SGR.finditer(line):
            parts.append(str(escape(_plain(line[position:match.start()]))))
            position = match.end()
            style.apply(match.group(1))
            if open_span:
                parts.append("</span>")
                open_span = False
            if style.classes():
                parts.append(f'<span class="{style.classes()}">')
                open_span = True
        parts.append(str(escape(_plain(line[position:]))))
        if open_span:
            parts.append("</span>")
        parts.append("</span>\n")
        out.append("".join(parts))
    return Markup("".join(out))


def _plain(text: str) -> str:
    """A piece between colour codes: other escape sequences (cursor moves, titles, links) removed."""
    text = ESCAPE.sub("", text) if "\x1b" in text else text
    return "".join(c for c in text if c == "\t" or c.isprintable() or c == "\r").replace("\r", "")


def strip(text: str) -> str:
    return ESCAPE.sub("", text) if "\x1b" in text else text


def check_search(text: str) -> str:
    """A search text from a query string: 1 to SEARCH_MAX printable characters (ValueError otherwise)."""
    if not text or len(text) > SEARCH_MAX or not text.isprintable():
        raise ValueError(f"search: 1 to {SEARCH_MAX} printable characters")
    return text


@dataclass
class Found:
    matches: list[dict] = field(default_factory=list)  # {"step", "line" (from 1), "text"}
    more: bool = False  # more lines matched than SEARCH_MATCHES
    scanned: int = 0  # bytes of log read


def search(steps: list[tuple[str, bytes]], text: str, found: Found | None = None) -> Found:
    """Lines of each step's log holding `text` (case folded, colour codes ignored), in order, at most
    SEARCH_MATCHES of them; a step's log is read whole but matched line by line."""
    found = found or Found()
    needle = text.casefold()
    for name, data in steps:
        found.scanned += len(data)
        for number, raw in enumerate(data.decode("utf-8", "replace").split("\n"), 1):
            line = strip(raw)
            if needle in line.casefold():
                if len(found.matches) >= SEARCH_MATCHES:
                    found.more = True
                    return found
                found.matches.append({"step": name, "line": number, "text": line[:LINE_SHOWN]})
    return found
