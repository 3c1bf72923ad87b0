"""The one generic check of workspace.poly, block.poly and secrets.poly, driven by the declarations.

``check_file`` walks a loaded document (``yamlfile``'s ``LineMap``s, which know the line of every key)
along ``config/declarations.py``: each section's keys (unknown ones refused where the section is closed),
required keys, the type of every value (string, whole number, number, true/false, one of a list,
list, mapping, a nested section, one of several kinds), bounds, patterns, list lengths and uniqueness,
and the section rules "exactly one of" / "at least one of". The first problem is a one-line
``ConfigError`` naming the file and the line.

Messages are made from the declaration: ``PREFIX SUBJECT must be EXPECTED, not VALUE``, where PREFIX
names the enclosing named items (``workflow 'nightly': step 'dump': ``) and the sections entered
(``history: ``), and SUBJECT is the key (``'retries'``) or, in a section declared ``dotted``, its path
(``config.runtime``). A field's ``says`` replaces "must be EXPECTED" where the generic words would say
less (``'port' must be a port number 1-65535``). What a declaration cannot say (cross-field rules,
references, names unique in a list) stays in ``schema.py``, which calls this first.

Patterns are the declarations' expressions with every end anchor made strict (``strict_end``), as
the shipped JSON Schema has them: a trailing newline is refused here, by editors and by any validator.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from polycrate.config.declarations import (
    BLOCK_NAME_PATTERN,
    FILES,
    NAME_PATTERN,
    SECTIONS,
    Field,
    Kind,
    Section,
    strict_end,
)
from polycrate.errors import ConfigError

# (section name, key) -> a function that says what is wrong with a refused value, or None for the
# field's usual words; schema.py passes these for the few messages that need to look at the value.
Explain = Mapping[tuple[str, str], Callable[[Any], str | None]]

_PATTERNS: dict[str, re.Pattern[str]] = {}
_SHOWN = 80  # characters of a refused value quoted in a message


def matches(pattern: str, text: str) -> bool:
    """Whether ``text`` matches a declared pattern (re.search, ``$`` the end of the text)."""
    compiled = _PATTERNS.get(pattern)
    if compiled is None:
        compiled = _PATTERNS[pattern] = re.compile(strict_end(pattern))
    return compiled.search(text) is not None


def validate_name(value: Any, what: str, path: Path | str, line: int | None) -> str:
    """The naming rule for blocks, actions, workflows, steps and notifications (a block's may be a hub
    path: a/b/c); the declared NAME_PATTERN / BLOCK_NAME_PATTERN."""
    if value is None or value == "":
        raise ConfigError(f"the {what} has no name: write `name: ...`", path, line)
    if not isinstance(value, str) or not matches(BLOCK_NAME_PATTERN if what == "block" else NAME_PATTERN, value):
        hub = " (a block's name may be a path of such names: ayedo/k8s/harbor)" if what == "block" else ""
        raise ConfigError(
            f"invalid {what} name {_short(value)!r}: use letters, digits, '.', '_' and '-', "
            f"starting with a letter or digit, at most 63 characters{hub}",
            path,
            line,
        )
    return value


# --- words ------------------------------------------------------------------------------------------


def _short(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _SHOWN:
        return value[:_SHOWN] + "..."
    return value


def _shown(value: Any) -> str:
    if value is None or isinstance(value, (bool, int, float, str)):
        return f", not {_short(value)!r}"
    return f", not {_type_word(value)}"


def _type_word(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _number_text(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def _article(text: str) -> str:
    return ("an " if text[:1].lower() in "aeio" else "a ") + text


def expected(kind: Kind) -> str:
    """What a value of ``kind`` is, for "must be ...": "a whole number >= 0, at most 1,000"."""
    if kind.of == "string":
        return _article(kind.hint) if kind.hint else "text" if kind.numbers else "a string"
    if kind.of in ("integer", "number"):
        text = "a whole number" if kind.of == "integer" else "a number"
        if kind.exclusive_minimum is not None:
            text += f" > {_number_text(kind.exclusive_minimum)}"
        elif kind.minimum is not None:
            text += f" >= {_number_text(kind.minimum)}"
        if kind.maximum is not None:
            text += f", at most {_number_text(kind.maximum)}"
        return text
    if kind.of == "boolean":
        return "true or false"
    if kind.of == "null":
        return "empty"
    if kind.of == "enum":
        return "one of " + ", ".join(str(c) if c != "" else "''" for c in kind.choices)
    if kind.of == "list":
        assert kind.items is not None
        return f"a list of {_plural(kind.items)}"
    if kind.of in ("mapping", "section"):
        return "a mapping" + (f" ({SECTIONS[kind.section].where})" if kind.section else "")
    if kind.of == "one_of":
        if kind.hint:
            return _article(kind.hint) if not kind.hint.startswith("mapping") else "a " + kind.hint
        words: list[str] = []
        for option in kind.options:
            word = expected(option)
            if word not in words:
                words.append(word)
        return " or ".join(words)
    return "anything"


def _plural(kind: Kind) -> str:
    """"names" for a list of names; the words as they are where a plural would be clumsy."""
    word = expected(kind).removeprefix("an ").removeprefix("a ")
    if kind.of != "string" or not re.fullmatch(r"[a-z ]+", word):
        return word
    return word + ("es" if word.endswith("s") else "s")


# --- the walk ---------------------------------------------------------------------------------------


class _Where:
    """Where a value sits: the file and line, the words before the subject, the subject's name and
    whether it is quoted (``'retries'``) or a dotted path (``config.runtime``), the field's own words,
    and whether the value is an item of a list (a named item puts ``LABEL 'NAME': `` in front)."""

    __slots__ = ("path", "line", "prefix", "name", "quoted", "says", "section", "key", "explain", "container",
                 "item")

    def __init__(self, path: Path | str, line: int | None, prefix: str, name: str, quoted: bool, says: str,
                 section: str, key: str, explain: Explain | None, container: Any = None, item: bool = False) -> None:
        self.path, self.line, self.prefix, self.name, self.quoted = path, line, prefix, name, quoted
        self.says, self.section, self.key, self.explain = says, section, key, explain
        self.container, self.item = container, item

    def subject(self) -> str:
        if not self.name:
            return ""
        return f"'{self.name}' " if self.quoted else f"{self.name} "

    def fail(self, value: Any, words: str | None = None, show: bool = True) -> ConfigError:
        """The error for a refused value: the explanation, the field's words or ``must be WORDS``."""
        hook = self.explain.get((self.section, self.key)) if self.explain else None
        said = hook(value) if hook is not None else None
        if said is None and self.says:  # the value only where the words place it (never a secret's)
            said = self.says.replace("{key}", self.key).replace("{value}", repr(_short(value)) if show
                                                                 else _type_word(value))
        if said is None:
            said = f"must be {words}" + (_shown(value) if show else "")
        if said.startswith("{name}"):
            return ConfigError(f"{self.prefix}{said.replace('{name}', self.name, 1)}", self.path, self.line)
        return ConfigError(f"{self.prefix}{self.subject()}{said}", self.path, self.line)

    def error(self, words: str, line: int | None = None) -> ConfigError:
        return ConfigError(f"{self.prefix}{self.subject()}{words}", self.path, line or self.line)

    def at(self, line: int | None, name: str | None = None, quoted: bool | None = None,
           item: bool = False) -> _Where:
        return _Where(self.path, line, self.prefix, self.name if name is None else name,
                      self.quoted if quoted is None else quoted, self.says, self.section, self.key, self.explain,
                      self.container, item)


def _line_of(container: Any, key: Any) -> int | None:
    line_of = getattr(container, "line_of", None)
    return line_of(key) if line_of is not None else None


def _item_lines(container: Any, key: str, count: int, default: int | None) -> list[int | None]:
    lines_of = getattr(container, "lines_of_items", None)
    lines = lines_of(key) if lines_of is not None and key in container else []
    return list(lines) if len(lines) == count else [default] * count


def _accepts(kind: Kind, value: Any) -> bool:
    """Whether ``value`` is of the type ``kind`` takes (bounds and patterns aside)."""
    of = kind.of
    if of == "any":
        return True
    if of == "string":
        return isinstance(value, str) or (kind.numbers and isinstance(value, (int, float))
                                          and not isinstance(value, bool))
    if of == "integer":  # 3.0 is not a whole number here: YAML wrote a float
        return isinstance(value, int) and not isinstance(value, bool)
    if of == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if of == "boolean":
        return isinstance(value, bool)
    if of == "null":
        return value is None
    if of == "enum":
        return any(type(choice) is type(value) and choice == value for choice in kind.choices)
    if of == "list":
        return isinstance(value, list)
    if of in ("mapping", "section"):
        return isinstance(value, dict)
    if of == "one_of":
        return any(_accepts(option, value) for option in kind.options)
    raise ValueError(f"unknown kind {of!r}")


def _fits(section: Section, value: dict[Any, Any]) -> bool:
    """Whether a mapping is written as ``section``: its required keys there, no key it does not know."""
    keys = {f.key for f in section.fields}
    if section.closed and not set(value) <= keys:
        return False
    return all(value.get(f.key) is not None for f in section.fields if f.required)


def _discriminator(options: list[Kind]) -> str | None:
    """The key that tells sections apart: every option a section with a required one-choice enum
    under the same key (a notification's `type`)."""
    keys: set[str] | None = None
    for option in options:
        if option.of != "section":
            return None
        found = {f.key for f in SECTIONS[option.section or ""].fields
                 if f.required and f.kind.of == "enum" and len(f.kind.choices) == 1}
        keys = found if keys is None else keys & found
    return min(keys) if keys else None


def _choice(option: Kind, key: str) -> Any:
    return SECTIONS[option.section or ""].field(key).kind.choices[0]


def _check(value: Any, kind: Kind, where: _Where, field: Field | None = None) -> None:
    of = kind.of
    if of == "any":
        return
    if of == "one_of":
        _check_union(value, kind, where, field)
        return
    if of == "section":
        if not isinstance(value, dict):
            raise where.fail(value, expected(kind))
        _check_section(value, SECTIONS[kind.section or ""], where)
        return
    if of == "string" and kind.pattern in (NAME_PATTERN, BLOCK_NAME_PATTERN):
        # the naming rule has its own words (validate_name); `what` is the block, the action, ...
        what = "block" if kind.pattern == BLOCK_NAME_PATTERN else (
            SECTIONS[where.section].label or "name" if where.key == "name" else where.key)
        validate_name(value, what, where.path, where.line)
        return
    if not _accepts(kind, value):
        if of in ("list", "mapping") and not where.says:
            raise where.fail(value, "a list" if of == "list" else "a mapping")
        raise where.fail(value, expected(kind))
    if of == "string":
        if kind.pattern and not matches(kind.pattern, value if isinstance(value, str) else str(value)):
            raise where.fail(value, expected(kind))
    elif of in ("integer", "number"):
        if (not math.isfinite(value) or (kind.minimum is not None and value < kind.minimum)
                or (kind.exclusive_minimum is not None and value <= kind.exclusive_minimum)
                or (kind.maximum is not None and value > kind.maximum)):
            raise where.fail(value, expected(kind))
    elif of == "list":
        _check_list(value, kind, where, field)
    elif of == "mapping":
        _check_mapping(value, kind, where, field)


def _check_union(value: Any, kind: Kind, where: _Where, field: Field | None) -> None:
    candidates = [option for option in kind.options if _accepts(option, value)]
    if not candidates:
        raise where.fail(value, expected(kind), show=not isinstance(value, (dict, list)))
    if len(candidates) == 1:
        option = candidates[0]
        if (option.of == "section" and where.says and len(kind.options) > 1
                and not _fits(SECTIONS[option.section or ""], value)):
            raise where.fail(value, show=False)  # a mapping that is not that section: the field's own words
        _check(value, option, where, field)
        return
    if isinstance(value, dict):
        key = _discriminator(candidates)
        if key is not None:
            chosen = [option for option in candidates if _choice(option, key) == value.get(key)]
            if len(chosen) == 1:
                _check(value, chosen[0], where, field)
                return
            name = value.get("name")
            label = SECTIONS[candidates[0].section or ""].label
            named = f"{label} '{name}': " if label and isinstance(name, str) and name else ""
            choices = ", ".join(str(_choice(option, key)) for option in candidates)
            raise ConfigError(f"{where.prefix}{named}'{key}' must be one of {choices}{_shown(value.get(key))}",
                              where.path, _line_of(value, key) or getattr(value, "line", None) or where.line)
        fitting = [o for o in candidates if o.of == "section" and _fits(SECTIONS[o.section or ""], value)]
        if len(fitting) == 1:
            _check(value, fitting[0], where, field)
            return
        sections = [SECTIONS[o.section or ""].where for o in candidates if o.of == "section"]
        if len(sections) == len(candidates):
            raise where.error("takes one of " + " or ".join(sections))
    first: ConfigError | None = None
    for option in candidates:
        try:
            _check(value, option, where, field)
            return
        except ConfigError as exc:
            first = first or exc
    if first is not None and not where.says and not kind.hint:
        raise first
    raise where.fail(value, expected(kind))


def _check_list(value: list[Any], kind: Kind, where: _Where, field: Field | None) -> None:
    items = kind.items
    assert items is not None
    if kind.min_items and len(value) < kind.min_items:
        if field is not None and field.empty:
            raise where.error(field.empty)
        raise where.error(f"needs at least {kind.min_items} item{'s' if kind.min_items > 1 else ''} "
                          f"({expected(items)})")
    lines = _item_lines(where.container, where.key, len(value), where.line)
    seen: list[Any] = []
    for index, item in enumerate(value):
        _check(item, items, where.at(lines[index], item=True), field)
        if kind.unique:
            if any(type(item) is type(other) and item == other for other in seen):
                raise ConfigError(f"{where.prefix}{where.subject().strip()}: {_short(item)!r} is listed twice",
                                  where.path, lines[index])
            seen.append(item)


def _check_mapping(value: dict[Any, Any], kind: Kind, where: _Where, field: Field | None) -> None:
    noun = field.item if field is not None else ""
    for key, item in value.items():
        line = _line_of(value, key) or where.line
        if kind.keys and not (isinstance(key, str) and matches(kind.keys, key)):
            words = field.keys_says if field is not None and field.keys_says else f"a key must match {kind.keys}"
            if noun:
                raise ConfigError(f"{where.prefix}{noun} {_short(key)!r}: {words}", where.path, line)
            raise where.error(f"key {_short(key)!r}: {words}", line)
        if kind.items is not None:
            name = f"{noun} '{key}'" if noun else f"{where.name}.{key}"
            _check(item, kind.items, where.at(line, name, False if noun else where.quoted), field)


def _check_section(value: dict[Any, Any], section: Section, where: _Where) -> None:
    """The keys of one section; ``where`` is where the mapping sits."""
    keys = {f.key: f for f in section.fields}
    if True in value and "on" in keys and "on" not in value:
        # YAML 1.1 reads a bare `on:` key as the boolean true: it is the `on` key (webhooks, notifications)
        true_line = _line_of(value, True)
        value["on"] = value.pop(True)
        key_lines = getattr(value, "key_lines", None)
        if isinstance(key_lines, dict) and true_line is not None:
            key_lines.setdefault("on", true_line)
    line = getattr(value, "line", None) or where.line
    if section.dotted:
        prefix, path = where.prefix, where.name
    elif where.name and not where.item:
        prefix, path = f"{where.prefix}{where.name}: ", ""
    else:
        prefix, path = where.prefix, ""
    label = section.label
    name_field = keys.get("name")
    named = bool(label) and name_field is not None and name_field.kind.pattern in (NAME_PATTERN, BLOCK_NAME_PATTERN)
    if named:  # the name first, in its own words: it names the item in every later message
        validate_name(value.get("name"), label, where.path, _line_of(value, "name") or line)
    name = value.get("name")
    if where.item and label and isinstance(name, str) and name:
        prefix += f"{label} '{name}': "
    at = f"{path}: " if path else ""
    if section.closed:
        for key in value:
            if key not in keys:
                known = ", ".join(sorted(keys))
                raise ConfigError(f"{prefix}{at}unknown key '{key}' (known: {known})", where.path,
                                  _line_of(value, key) or line)
    for field in section.fields:
        if field.required and value.get(field.key) is None and not (named and field.key == "name"):
            raise ConfigError(f"{prefix}{at}missing required key '{field.key}'", where.path, line)
    for key, item in value.items():
        declared = keys.get(key)
        if declared is None or (named and key == "name") or (item is None and declared.null and not declared.required):
            continue
        field_where = _Where(where.path, _line_of(value, key) or line, prefix, f"{path}.{key}" if path else key,
                             not path, declared.says, section.name, key, where.explain, value)
        _check(item, declared.kind, field_where, declared)
    if section.exactly_one and sum(value.get(key) is not None for key in section.exactly_one) != 1:
        raise ConfigError(f"{prefix}{at}give exactly one of " + " or ".join(f"'{k}'" for k in section.exactly_one),
                          where.path, where.line or line)
    if section.at_least_one and all(value.get(key) is None for key in section.at_least_one):
        raise ConfigError(f"{prefix}{at}give one of " + ", ".join(f"'{k}'" for k in section.at_least_one[:-1])
                          + f" or '{section.at_least_one[-1]}'", where.path, line)


def check(value: Any, section: str, path: Path | str, line: int | None = None, prefix: str = "",
          name: str = "", explain: Explain | None = None) -> None:
    """Check one section's mapping ``value``; ``name`` is its key where it sits, for the words
    ("" when ``prefix`` already says where)."""
    where = _Where(path, line, prefix, name, True, "", section, "", explain)
    _check(value, Kind("section", section=section), where)


def check_field(value: Any, section: str, key: str, path: Path | str, line: int | None = None,
                prefix: str = "", name: str | None = None, explain: Explain | None = None) -> None:
    """Check the value of one field of ``section`` (``name``: the subject; "" for none)."""
    field = SECTIONS[section].field(key)
    where = _Where(path, line, prefix, key if name is None else name, True, field.says, section, key, explain)
    _check(value, field.kind, where, field)


def check_file(raw: Any, file: str, path: Path | str, explain: Explain | None = None) -> None:
    """Check a whole document of ``file`` (workspace.poly, block.poly, secrets.poly) as loaded."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{file} must be a mapping, not {_type_word(raw)}", path, 1)
    section = FILES[file]
    _check_section(raw, SECTIONS[section], _Where(path, getattr(raw, "line", None) or 1, "", "", True, "",
                                                  section, "", explain))
