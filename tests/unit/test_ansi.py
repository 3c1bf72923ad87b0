"""polycrate.ansi: what a stored log keeps (colours) and what plain readers see (no escape code)."""
from __future__ import annotations

from polycrate import ansi


def test_keep_colour_keeps_sgr_only():
    text = "a\x1b[2K\x1b[0;31mb\x1b]0;title\x07c\x1b[0m\x1b[1Ad\x1bM"
    assert ansi.keep_colour(text) == "a\x1b[0;31mbc\x1b[0md"
    assert ansi.strip(text) == "abcd"
    assert ansi.keep_colour("plain") == "plain"


def test_strip_bytes_is_strip():
    text = "\x1b[0;32mok: [localhost]\x1b[0m \x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"
    assert ansi.strip_bytes(text.encode()) == ansi.strip(text).encode() == b"ok: [localhost] link"
