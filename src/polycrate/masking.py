"""Secret masking: the one place that hides secret values in text we show or store.

A ``Masker`` holds a set of secret strings. ``mask(text)`` replaces every
occurrence of every secret by ``********``, also inside longer strings
(``"Authorization: Bearer s3cr3t-token"``). Where secrets overlap
(``"abcdef"`` and ``"defghi"`` in ``"abcdefghi"``) the union of all their
occurrences is hidden, so no fragment of either leaks; adjacent or overlapping
hits collapse into one ``********``.

Speed with many secrets: the secrets are compiled into one regular expression,
built as a character trie (so the engine walks shared prefixes once instead of
trying every secret at every position), rebuilt lazily only after ``add``.

This module is pure: no I/O, no knowledge of where secrets come from
(see ``polycrate.secrets`` for that).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

MASK = "********"


def _trie_pattern(words: Iterable[str]) -> str:
    """A regex matching any of ``words``, preferring the longest at a position.

    Built from a character trie: at each node the children are tried before
    ending the word, so backtracking returns the longest word first.
    """
    trie: dict = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}  # end of a word

    def render(node: dict) -> str:
        ends = "" in node
        branches = [re.escape(ch) + render(child) for ch, child in sorted(node.items()) if ch != ""]
        if not branches:
            return ""
        if len(branches) == 1 and not ends:
            return branches[0]
        body = "(?:" + "|".join(branches) + ")"
        return body + "?" if ends else body

    return render(trie)


class Masker:
    """Replace secret values by ``********`` in text.

    >>> m = Masker(["hunter2-pass"])
    >>> m.mask("login with hunter2-password")
    'login with ********word'
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._regex: re.Pattern[str] | None = None
        self._dirty = False
        for secret in secrets:
            self.add(secret)

    def add(self, value: object) -> None:
        """Add one secret. Non-strings are converted with ``str``; empty values are ignored."""
        if value is None or isinstance(value, bool):
            return
        text = value if isinstance(value, str) else str(value)
        if not text or text in self._secrets:
            return
        self._secrets.add(text)
        self._dirty = True

    def update(self, values: Iterable[object]) -> None:
        for value in values:
            self.add(value)

    @property
    def count(self) -> int:
        """How many distinct secrets are held (``Masker`` has no ``__len__`` on purpose:
        an empty masker must not be falsy where code tests ``if masker:``)."""
        return len(self._secrets)

    def _compiled(self) -> re.Pattern[str] | None:
        if self._dirty:
            # A zero-width lookahead finds a match at *every* start position,
            # including ones inside an earlier match, so overlaps are seen.
            self._regex = re.compile("(?=(" + _trie_pattern(self._secrets) + "))") if self._secrets else None
            self._dirty = False
        return self._regex

    def mask(self, text: str) -> str:
        """Return ``text`` with every occurrence of every secret replaced by ``********``."""
        regex = self._compiled()
        if regex is None or not text:
            return text
        spans: list[list[int]] = []
        for match in regex.finditer(text):
            start, end = match.start(1), match.end(1)
            if spans and start <= spans[-1][1]:
                if end > spans[-1][1]:
                    spans[-1][1] = end
            else:
                spans.append([start, end])
        if not spans:
            return text
        parts: list[str] = []
        pos = 0
        for start, end in spans:
            parts.append(text[pos:start])
            parts.append(MASK)
            pos = end
        parts.append(text[pos:])
        return "".join(parts)

    def mask_lines(self, lines: Iterable[str]) -> Iterator[str]:
        """Mask a stream of lines (e.g. an action's output) one line at a time."""
        for line in lines:
            yield self.mask(line)

    def mask_data(self, value: object) -> object:
        """Mask every string inside nested dicts/lists (for JSON output, events, webhooks)."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {k: self.mask_data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.mask_data(v) for v in value]
        return value
