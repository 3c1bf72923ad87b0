"""Secret masking: the one place that hides secret values in text we show or store.

A ``Masker`` holds a set of secret strings. ``mask(text)`` replaces every
occurrence of every secret by ``********``, also inside longer strings
(``"Authorization: Bearer s3cr3t-token"``). Where secrets overlap
(``"abcdef"`` and ``"defghi"`` in ``"abcdefghi"``) the union of all their
occurrences is hidden, so no fragment of either leaks; adjacent or overlapping
hits collapse into one ``********``.

Any secret, any number of secrets: the secrets are compiled into one
Aho–Corasick automaton (pyahocorasick, in C), built iteratively and rebuilt
lazily only after ``add``. Building is linear in the total length of the
secrets, a scan linear in the text plus the hits: a 100 KB certificate or
10,000 API tokens cost what their length costs, never a recursion per
character (the regex trie this replaced died of ``RecursionError`` on a
~500-character secret). The cost per MB of output is measured in
``bench/masking.py``.

The rules of which strings of a run's secrets are hidden (``build_masker``:
thresholds, trivial words, ``key = value`` lines) live here too. This module is
pure: no I/O, no knowledge of where secrets come from (see ``polycrate.secrets``
for that).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from polycrate import ansi

MASK = "********"


def _automaton(secrets: Iterable[str]) -> Any:
    import ahocorasick  # C extension; loaded only once a run has secrets

    automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
    for secret in secrets:
        automaton.add_word(secret, len(secret))
    automaton.make_automaton()
    return automaton


class Masker:
    """Replace secret values by ``********`` in text.

    >>> m = Masker(["hunter2-pass"])
    >>> m.mask("login with hunter2-password")
    'login with ********word'
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._automaton: Any = None
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

    def _compiled(self) -> Any:
        if self._dirty:
            self._automaton = _automaton(self._secrets) if self._secrets else None
            self._dirty = False
        return self._automaton

    def spans(self, text: str) -> list[list[int]]:
        """The ``[start, end)`` stretches of ``text`` covered by secrets, merged, in order."""
        automaton = self._compiled()
        if automaton is None or not text:
            return []
        spans: list[list[int]] = []
        # Hits arrive ordered by their end; a later hit may start before earlier ones
        # (a long secret ending after short ones inside it), so it swallows them.
        for last, length in automaton.iter(text):
            start, end = last - length + 1, last + 1
            while spans and start <= spans[-1][1]:
                start = min(start, spans.pop()[0])
            spans.append([start, end])
        return spans

    def mask(self, text: str) -> str:
        """Return ``text`` with every occurrence of every secret replaced by ``********``, also where colour
        codes split a secret (``hun\\x1b[1mter2``: a coloured log keeps its colours, never the secret)."""
        if "\x1b" in text and self._compiled() is not None:
            plain = ansi.SGR.sub("", text)
            if plain != text:
                return self._mask_across(text, plain) if self.spans(plain) else text
        spans = self.spans(text)
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

    def _mask_across(self, text: str, plain: str) -> str:
        """Mask the text as if its colour codes were not there (`plain`: the text without them); codes inside
        a hidden stretch follow the mask, so the colours after it stay what they were."""
        codes = ansi.sgr_spans(text)
        where: list[int] = []  # the position in `text` of each character of the plain text
        pos = 0
        for start, end in [*codes, (len(text), len(text))]:
            where.extend(range(pos, start))
            pos = end
        spans = self.spans(plain)
        parts: list[str] = []
        pos = 0
        for start, end in spans:
            first, last = where[start], where[end - 1] + 1
            parts.append(text[pos:first])
            parts.append(MASK)
            parts.extend(text[a:b] for a, b in codes if first <= a < last)
            pos = last
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


# --------------------------------------------------------------------------- what is a secret
# The rules that pick, from a run's secrets, the strings to hide (see build_masker).

MIN_VALUE_LEN = 4  # values in secrets.poly
MIN_LINE_LEN = 6  # lines (and key=value values) of secret files
TRIVIAL_WORDS = frozenset(
    {"true", "false", "enabled", "disabled", "localhost", "default", "password", "username",
     "secret", "region", "endpoint", "provider", "private", "public"}
)


def _file_lines(data: bytes) -> list[str]:
    """Non-trivial lines of a secret file, and the value part of ``key = value`` lines."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return []
    found: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]") and "=" not in line:
            continue  # an INI section header such as `[acme-s3]` names, it does not hide
        candidates = [line]
        for sep in ("=", ":"):
            if sep in line:
                key, _, value = line.partition(sep)
                value_has_text = any(ch.isalnum() for ch in value)  # not base64 padding `xyz==`
                if key.strip() and " " not in key.strip() and not key.strip().startswith("-") and value_has_text:
                    # `key = value`: the value is the secret; the line as a whole is not
                    # (masking `type = s3` would only blot harmless output)
                    candidates = [value.strip().strip("'\"")]
                break
        found += [c for c in candidates if _non_trivial(c, MIN_LINE_LEN)]
    return found


def _non_trivial(text: str, min_len: int) -> bool:
    if len(text) < min_len:
        return False
    if not any(ch.isalnum() for ch in text):
        return False
    return text.lower() not in TRIVIAL_WORDS


def _values_of(data: Any) -> Iterable[str]:
    if isinstance(data, dict):
        for value in data.values():
            yield from _values_of(value)
    elif isinstance(data, (list, tuple)):
        for value in data:
            yield from _values_of(value)
    elif data is None or isinstance(data, bool):
        return
    else:
        text = str(data)
        if len(text) >= MIN_VALUE_LEN:
            yield text
        if "\n" in text:
            yield from (line.strip() for line in text.splitlines() if _non_trivial(line.strip(), MIN_LINE_LEN))


def build_masker(values: Any, file_contents: Iterable[bytes]) -> Masker:
    """The Masker for a run: every value in secrets.poly (scalars of >= MIN_VALUE_LEN
    characters; booleans and nulls skipped) and every non-trivial line of each secret file
    (>= MIN_LINE_LEN characters, some alphanumerics, not a TRIVIAL_WORD, not an INI
    ``[section]`` header); for ``key = value`` / ``key: value`` lines only the value counts.
    Binary (non-UTF-8) files contribute nothing: they are not printed as text."""
    masker = Masker()
    masker.update(_values_of(values))
    for data in file_contents:
        masker.update(_file_lines(data))
    return masker
