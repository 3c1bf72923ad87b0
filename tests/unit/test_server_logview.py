"""The log's colours as spans of fixed classes, everything else escaped; the bounded search."""
from __future__ import annotations

import re

import pytest

from polycrate.server.logview import SEARCH_MATCHES, Found, check_search, render, search


def test_sgr_codes_become_spans_with_our_classes():
    html = str(render("\x1b[1;31mfailed:\x1b[0m ok\n\x1b[32mchanged\x1b[39m plain\n"))
    assert html == ('<span class="ln"><span class="ansi-fg1 ansi-bold">failed:</span> ok</span>\n'
                    '<span class="ln"><span class="ansi-fg2">changed</span> plain</span>\n')


def test_a_colour_carries_over_to_the_next_line_until_reset():
    html = str(render("\x1b[33mfirst\nsecond\x1b[0m\nthird"))
    assert html.count('class="ansi-fg3"') == 2 and "third</span>" in html and html.endswith(
        '<span class="ln">third</span>\n')


def test_bright_background_and_256_colours():
    assert 'class="ansi-fg9 ansi-bg12"' in str(render("\x1b[91;104mx"))
    assert str(render("\x1b[38;5;196mx\x1b[0m")) == '<span class="ln">x</span>\n'  # not in the table: no class
    assert str(render("\x1b[38;2;1;2;3;1mx")) == '<span class="ln"><span class="ansi-bold">x</span></span>\n'


@pytest.mark.parametrize("payload", [
    '<script>alert(1)</script>', '<img src=x onerror=alert(1)>', '"><svg onload=alert(1)>',
    '\x1b[31m<b>red</b>', '\x1b]8;;javascript:alert(1)\x07link\x1b]8;;\x07', '\x1b[2J\x1b[Hcleared',
    '\x1b[31;"onmouseover=alert(1)m x', '&lt;already&gt;',
])
def test_nothing_from_the_log_becomes_markup(payload):
    html = str(render(payload))
    tags = re.findall(r"<[^>]*>", html)
    assert all(re.fullmatch(r'</?span( class="(ln|(ansi-[a-z0-9]+ ?)+)")?>', t) for t in tags), tags
    assert "\x1b" not in html


def test_search_finds_lines_case_folded_and_ignores_colour_codes():
    found = search([("one", b"alpha\n\x1b[31mBe\x1b[0mta here\ngamma\n"), ("two", b"BETA again")], "beta")
    assert found.matches == [{"step": "one", "line": 2, "text": "Beta here"},
                             {"step": "two", "line": 1, "text": "BETA again"}]
    assert not found.more and found.scanned == len(b"alpha\n\x1b[31mBe\x1b[0mta here\ngamma\n") + 10


def test_search_is_bounded():
    data = b"hit\n" * (SEARCH_MATCHES + 10)
    found = search([("s", data)], "hit", Found())
    assert len(found.matches) == SEARCH_MATCHES and found.more


@pytest.mark.parametrize("text", ["", "x" * 201, "a\x00b", "\n"])
def test_a_search_text_is_short_and_printable(text):
    with pytest.raises(ValueError):
        check_search(text)
