"""Ansible pass-through: --limit, --tags, --skip-tags, --extra-vars and verbosity of one run.

The options apply to every ansible step of a run (as ansible-playbook's own flags, in the order
given, after polycrate's own `block`/`workspace` variables, so Ansible's precedence rules hold)
and reach script steps as environment variables:

    POLYCRATE_LIMIT        the --limit pattern ("" when not given)
    POLYCRATE_TAGS         the --tags list, comma-separated
    POLYCRATE_SKIP_TAGS    the --skip-tags list, comma-separated
    POLYCRATE_EXTRA_VARS   every --extra-vars merged in order, as one JSON object ("{}" when none)
    ANSIBLE_VERBOSITY      the verbosity (--loglevel N), when given

They are recorded with the run (`runs show`) so that `--resume` runs the rest the same way.
"""
from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polycrate.errors import PolycrateError


@dataclass(frozen=True)
class AnsibleOptions:
    limit: str | None = None
    tags: tuple[str, ...] = ()
    skip_tags: tuple[str, ...] = ()
    extra_vars: tuple[str, ...] = ()  # as given (key=value ..., a JSON/YAML object, @/absolute/file)
    verbosity: int | None = None

    @property
    def given(self) -> bool:
        return bool(self.limit or self.tags or self.skip_tags or self.extra_vars or self.verbosity is not None)

    def playbook_args(self) -> list[str]:
        args: list[str] = []
        if self.limit:
            args += ["--limit", self.limit]
        if self.tags:
            args += ["--tags", ",".join(self.tags)]
        if self.skip_tags:
            args += ["--skip-tags", ",".join(self.skip_tags)]
        for value in self.extra_vars:
            args += ["--extra-vars", value]
        return args

    def environment(self) -> dict[str, str]:
        env = {
            "POLYCRATE_LIMIT": self.limit or "",
            "POLYCRATE_TAGS": ",".join(self.tags),
            "POLYCRATE_SKIP_TAGS": ",".join(self.skip_tags),
            "POLYCRATE_EXTRA_VARS": json.dumps(merged_extra_vars(self.extra_vars), sort_keys=True, default=str),
        }
        if self.verbosity is not None:
            env["ANSIBLE_VERBOSITY"] = str(self.verbosity)
        return env

    def to_record(self) -> dict[str, Any]:
        """The JSON form kept with the run and shown by `runs show`."""
        return {
            "limit": self.limit,
            "tags": list(self.tags),
            "skip_tags": list(self.skip_tags),
            "extra_vars": list(self.extra_vars),
            "verbosity": self.verbosity,
        }

    @classmethod
    def from_record(cls, data: dict[str, Any] | None) -> AnsibleOptions:
        data = data or {}
        return cls(
            limit=data.get("limit"),
            tags=tuple(data.get("tags") or ()),
            skip_tags=tuple(data.get("skip_tags") or ()),
            extra_vars=tuple(data.get("extra_vars") or ()),
            verbosity=data.get("verbosity"),
        )


def _tag_list(values: list[str] | None, flag: str) -> tuple[str, ...]:
    tags = tuple(t.strip() for v in values or () for t in v.split(",") if t.strip())
    if values and not tags:
        raise PolycrateError(f"{flag} needs at least one tag name")
    return tags


def parse_extra_vars(value: str, cwd: Path | None = None) -> str:
    """One --extra-vars value, checked now (a bad one stops the run before anything runs) and made
    independent of the current folder: @file becomes @/absolute/file."""
    text = value.strip()
    if not text:
        raise PolycrateError("--extra-vars needs a value: key=value, a JSON object or @file")
    if text.startswith("@"):
        path = Path(os.path.expanduser(text[1:]))
        if not path.is_absolute():
            path = (cwd or Path.cwd()) / path
        if not path.is_file():
            raise PolycrateError(f"--extra-vars: no such file: {path}")
        _load_file(path)
        return f"@{path}"
    if text[0] in "{[":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolycrateError(f"--extra-vars: not valid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(data, dict):
            raise PolycrateError("--extra-vars: JSON must be an object ({\"key\": value})")
        return text
    _key_values(text)
    return text


def _key_values(text: str) -> dict[str, str]:
    """Ansible's key=value form: space-separated, shell-quoted values."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise PolycrateError(f"--extra-vars: {exc} in {text!r}") from None
    out = {}
    for word in words:
        key, sep, val = word.partition("=")
        if not sep or not key.strip() or not key.strip().isidentifier():
            raise PolycrateError(f"--extra-vars: expected key=value, a JSON object or @file, not {word!r}")
        out[key.strip()] = val
    return out


def _load_file(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PolycrateError(f"--extra-vars: cannot read {path}: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PolycrateError(f"--extra-vars: {path} must hold a mapping of variables")
    return data


def merged_extra_vars(values: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Every --extra-vars in order, later ones winning, as Ansible merges them."""
    merged: dict[str, Any] = {}
    for value in values:
        text = value.strip()
        if text.startswith("@"):
            try:
                merged.update(_load_file(Path(text[1:])))
            except PolycrateError:
                continue  # the file went away since the run was recorded: ansible says so itself
        elif text[:1] in "{[":
            merged.update(json.loads(text))
        else:
            merged.update(_key_values(text))
    return merged


def add_ansible_options(parser) -> None:
    """The pass-through flags of `run` and `workflows run`: long forms only (short flags are Polycrate's)."""
    group = parser.add_argument_group("Ansible pass-through (every ansible step; scripts get POLYCRATE_* variables)")
    group.add_argument("--limit", metavar="PATTERN", help="run only on hosts matching PATTERN (ansible-playbook --limit)")
    group.add_argument("--tags", metavar="TAGS", action="append", help="run only tasks tagged so (comma-separated; repeatable)")
    group.add_argument("--skip-tags", metavar="TAGS", action="append", help="skip tasks tagged so (comma-separated; repeatable)")
    group.add_argument("--extra-vars", metavar="VARS", action="append",
                       help="extra variables: key=value, a JSON object, or @file (YAML/JSON); repeatable, later wins")


def options_from_args(args) -> AnsibleOptions:
    limit = (getattr(args, "limit", None) or "").strip() or None
    verbosity = getattr(args, "loglevel", None)
    return AnsibleOptions(
        limit=limit,
        tags=_tag_list(getattr(args, "tags", None), "--tags"),
        skip_tags=_tag_list(getattr(args, "skip_tags", None), "--skip-tags"),
        extra_vars=tuple(parse_extra_vars(v) for v in getattr(args, "extra_vars", None) or ()),
        verbosity=verbosity,
    )
