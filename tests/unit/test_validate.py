"""config/validate.py, the check driven by the declarations, and the shipped JSON Schema made from the same
declarations: for every declared field, a value of the wrong type is refused by both; every closed
section refuses an unknown key in both; a pattern's end is the end of the text in both."""
from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from polycrate.config import validate
from polycrate.config.declarations import FILES, SECTIONS, Field, Kind, Section, reachable
from polycrate.config.schema_export import DRAFT, schema_file
from polycrate.config.validate import matches
from polycrate.config.yamlfile import parse_yaml
from polycrate.errors import ConfigError

# texts tried, in order, for a string field's valid sample: the first its pattern accepts
_TEXTS = ("a", "a.b", "X", "https://x.example", "smtp.example.org", "ops@example.org", "!room:example.org",
          "age1abc", "/var/log/x.log", "registry.example.org/a/b:1.0", "a/b:1.0", "x=1")
# values tried, in order, as a value of the wrong type: the first the field's kind does not take
_WRONG = ("text", 3.5, True, [1], {"unknown_key": 1})


def _file_of(section: str) -> str:
    return next(file for file in FILES if section in {s.name for s in reachable(file)})


def _validator(section: str) -> Draft202012Validator:
    """The shipped JSON Schema of the file holding ``section``, entered at that section."""
    file = _file_of(section)
    shipped = json.loads(schema_file(file).read_text(encoding="utf-8"))
    if section == FILES[file]:
        return Draft202012Validator(shipped)
    return Draft202012Validator({"$schema": DRAFT, "$defs": shipped["$defs"], "$ref": f"#/$defs/{section}"})


def _sample(kind: Kind) -> Any:
    """A value ``kind`` takes (the smallest)."""
    of = kind.of
    if of == "string":
        return next(text for text in _TEXTS if kind.pattern is None or matches(kind.pattern, text))
    if of == "integer":
        return int(kind.minimum) if kind.minimum is not None else 1
    if of == "number":
        return kind.minimum if kind.minimum is not None else 1
    if of == "boolean":
        return True
    if of == "enum":
        return kind.choices[0]
    if of == "list":
        assert kind.items is not None
        return [_sample(kind.items)] if kind.min_items else []
    if of == "mapping":
        return {}
    if of == "section":
        return _minimal(SECTIONS[kind.section or ""])
    if of == "one_of":
        return _sample(kind.options[0])
    return None


def _minimal(section: Section) -> dict[str, Any]:
    """The smallest mapping ``section`` takes: its required keys, one of `exactly_one`/`at_least_one`."""
    value = {f.key: _sample(f.kind) for f in section.fields if f.required}
    for key in section.exactly_one[:1] + section.at_least_one[:1]:
        value[key] = _sample(section.field(key).kind)
    return value


def _accepted(section: str, value: dict[str, Any]) -> tuple[bool, bool]:
    try:
        validate.check(value, section, "x.poly")
        ours = True
    except ConfigError:
        ours = False
    return ours, _validator(section).is_valid(value)


def _typed_fields() -> list[tuple[str, Field]]:
    return [(s.name, f) for s in SECTIONS.values() for f in s.fields if f.kind.of != "any"]


@pytest.mark.parametrize("section", list(SECTIONS))
def test_the_smallest_value_of_each_section_is_accepted_by_both(section):
    assert _accepted(section, _minimal(SECTIONS[section])) == (True, True)


@pytest.mark.parametrize(("section", "field"), _typed_fields(), ids=[f"{s}.{f.key}" for s, f in _typed_fields()])
def test_a_value_of_the_wrong_type_is_refused_by_both(section, field):
    wrong = next(value for value in _WRONG if not validate._accepts(field.kind, value))
    value = {**_minimal(SECTIONS[section]), field.key: wrong}
    assert _accepted(section, value) == (False, False), (field.key, wrong)


@pytest.mark.parametrize("section", [s for s in SECTIONS if SECTIONS[s].closed])
def test_an_unknown_key_is_refused_by_both(section):
    assert _accepted(section, {**_minimal(SECTIONS[section]), "unknwon": 1}) == (False, False)


_ANCHORED = [(s.name, f) for s in SECTIONS.values() for f in s.fields
             if f.kind.of == "string" and f.kind.pattern and f.kind.pattern.endswith("$")
             and not f.kind.pattern.endswith(r"\s*$")]  # these take spaces around the value (and strip them)


@pytest.mark.parametrize(("section", "field"), _ANCHORED, ids=[f"{s}.{f.key}" for s, f in _ANCHORED])
def test_a_trailing_newline_is_refused_by_both(section, field):
    value = {**_minimal(SECTIONS[section]), field.key: _sample(field.kind) + "\n"}
    assert _accepted(section, value) == (False, False)
    assert len(_ANCHORED) >= 10


_INTEGERS = [(s.name, f) for s in SECTIONS.values() for f in s.fields
             if f.kind.of == "integer" or any(o.of == "integer" for o in f.kind.options)]


@pytest.mark.parametrize(("section", "field"), _INTEGERS, ids=[f"{s}.{f.key}" for s, f in _INTEGERS])
def test_a_whole_number_written_as_a_float_is_refused(section, field):
    """`retries: 3.0` is refused (YAML read a float); the JSON Schema cannot say so: JSON has one number
    type and a number with a zero fraction is an integer there (draft 2020-12, "type": "integer")."""
    value = {**_minimal(SECTIONS[section]), field.key: 3.0}
    with pytest.raises(ConfigError):
        validate.check(value, section, "x.poly")
    assert len(_INTEGERS) >= 8


def _error(text: str, file: str = "workspace.poly") -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        validate.check_file(parse_yaml(text, file), file, file)
    return caught.value


@pytest.mark.parametrize(("text", "line", "message"), [
    ("name: ws\nworkflows:\n- name: w\n  steps:\n  - {name: s, block: b, action: a, retries: 1.5}\n", 5,
     "workflow 'w': step 's': 'retries' must be a whole number >= 0, at most 1,000, not 1.5"),
    ("name: ws\nhistory:\n  keep_days: 0\n", 3, "history: 'keep_days' must be a number > 0, at most 36,600, not 0"),
    ("name: ws\nconfig:\n  engine: lxc\n", 3, "config.engine must be one of podman, docker, not 'lxc'"),
    ("name: ws\nworkflows: {w: 1}\n", 2, "'workflows' must be a list, not a mapping"),
    ("name: ws\nworkflows:\n- name: w\n  stepz: []\n", 4, "workflow 'w': unknown key 'stepz' (known: "),
    ("name: ws\nworkflows:\n- name: w\n  schedule: {persistent: true}\n", 4,
     "workflow 'w': schedule: give exactly one of 'on_calendar' or 'cron'"),
    ("name: ws\nwebhooks:\n- url: https://x\n  headers: [1]\n", 4, "'headers' must be a mapping, not a list"),
    ("name: ws\ndependencies: [reg.example.org/a/b:1, reg.example.org/a/b:1]\n", 2, "is listed twice"),
    ("name: 'web\n'\n", 1, "invalid workspace name"),
    ("name: b\nactions:\n- {name: a, description: x}\n", 3,
     "action 'a': give one of 'type', 'playbook' or 'script'"),
])
def test_messages_name_the_place_and_the_line(text, line, message):
    error = _error(text, "block.poly" if "actions:" in text else "workspace.poly")
    assert message in error.message and error.line == line, (error.line, error.message)
    assert "\n" not in error.message


def test_a_secret_written_as_a_value_is_never_shown():
    error = _error("name: ws\nnotifications:\n- {name: n, type: slack, url: 'https://hooks.example/T0/s3cret'}\n")
    assert "'url' is a secret" in error.message and "s3cret" not in error.message


def test_a_long_value_is_shortened_in_the_message():
    error = _error("name: ws\nconfig:\n  engine: " + "x" * 5000 + "\n")
    assert len(error.message) < 300
