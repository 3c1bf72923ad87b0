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
import re
import shlex
from pathlib import Path
from typing import Any

from polycrate.errors import PolycrateError
from polycrate.config.record import Record, record

UNSAFE_TAG = "!unsafe"  # Ansible's tag for a value it must never template


class UnsafeText(str):
    """A value that arrived as data (over HTTP, from a launch form): Ansible gets it tagged `!unsafe`,
    so `{{ ... }}` in it stays text and is never evaluated, wherever the variable is used."""


def _yaml_loader():
    """PyYAML's safe loader that also reads Ansible's `!unsafe` tag (as UnsafeText)."""
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):
        pass

    def unsafe(loader, node):
        if isinstance(node, yaml.ScalarNode):
            return UnsafeText(loader.construct_scalar(node))
        raise yaml.constructor.ConstructorError(None, None, "!unsafe applies to text values here", node.start_mark)

    Loader.add_constructor(UNSAFE_TAG, unsafe)
    return Loader


def dump_unsafe_yaml(data: Any) -> str:
    """YAML in which every UnsafeText is tagged `!unsafe` (Ansible reads the tag; so does _load_file)."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(UnsafeText, lambda d, v: d.represent_scalar(UNSAFE_TAG, str(v), style="'"))
    return yaml.dump(data, Dumper=Dumper, sort_keys=True, allow_unicode=True)


SECRET_FILE_HEAD = "# polycrate: every value in this file is secret (masked in the run's log and record)\n"


def secret_values(values: tuple[str, ...] | list[str]) -> list[str]:
    """The values of `--extra-vars @file` files that begin with SECRET_FILE_HEAD (the server writes a
    launch's secret-typed parameters so): the run masks them wherever it prints or stores."""
    found: list[str] = []

    def leaves(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                leaves(v)
        elif isinstance(value, list):
            for v in value:
                leaves(v)
        elif value is not None and not isinstance(value, bool):
            found.append(str(value))

    for value in values:
        text = value.strip()
        if not text.startswith("@"):
            continue
        path = Path(text[1:])
        try:
            with open(path, encoding="utf-8") as handle:
                if handle.readline() != SECRET_FILE_HEAD:
                    continue
        except OSError:
            continue
        try:
            leaves(_load_file(path))
        except PolycrateError:
            continue
    return found


def as_unsafe(value: Any) -> Any:
    """Every text inside `value` (keys stay plain: Ansible does not template names) made UnsafeText."""
    if isinstance(value, str):
        return UnsafeText(value)
    if isinstance(value, dict):
        return {str(k): as_unsafe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_unsafe(v) for v in value]
    return value


def has_unsafe(value: Any) -> bool:
    if isinstance(value, UnsafeText):
        return True
    if isinstance(value, dict):
        return any(has_unsafe(v) for v in value.values())
    if isinstance(value, list):
        return any(has_unsafe(v) for v in value)
    return False


@record(frozen=True, eq=False, repr=False)
class AnsibleOptions(Record):
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
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_yaml_loader())  # the safe loader, plus !unsafe
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


# --- values that arrive over HTTP ---------------------------------------------------------------

HOST_PATTERN_MAX = 1024
_TERM = re.compile(r"^[!&]?(?:~[^\s@/\\{}%'\"`$;<>|]+|[A-Za-z0-9_.*?\[\]-]+(?:\[[0-9:-]*\])?)$")


def check_host_pattern(text: str, what: str = "limit") -> str:
    """A --limit from HTTP, parsed as Ansible's host-pattern grammar: terms split on ',' (or ':'),
    each a name, a glob, a group with a [range], or ~regex, led by '!' or '&'. Anything that makes
    Ansible read a file (@file, in any position) or names a path is refused, as is any control
    character; the text is what ansible-playbook gets, unchanged."""
    if not isinstance(text, str):
        raise PolycrateError(f"{what}: a host pattern as text, not {type(text).__name__}")
    if len(text) > HOST_PATTERN_MAX:
        raise PolycrateError(f"{what}: at most {HOST_PATTERN_MAX} characters, not {len(text)}")
    if any(not c.isprintable() for c in text):
        raise PolycrateError(f"{what}: control characters are not part of a host pattern")
    if "@" in text:
        raise PolycrateError(f"{what}: '@' (a file of hosts) is not allowed over the web")
    if "/" in text or "\\" in text:
        raise PolycrateError(f"{what}: a host pattern, not a path")
    terms = [t.strip() for t in re.split(r"[,:]", text)] if "[" not in text else _split_keeping_ranges(text)
    if not any(terms):
        raise PolycrateError(f"{what}: an empty host pattern")
    for term in terms:
        if term and not _TERM.match(term):
            raise PolycrateError(f"{what}: {term!r} is not a host pattern term (name, glob, group[range], ~regex)")
    return text.strip()


def _split_keeping_ranges(text: str) -> list[str]:
    """Split on ',' and ':' outside [...] (a range such as web[0:3] has its own ':')."""
    terms, depth, current = [], 0, ""
    for c in text:
        if c == "[":
            depth += 1
        elif c == "]":
            depth = max(depth - 1, 0)
        if c in ",:" and depth == 0:
            terms.append(current.strip())
            current = ""
        else:
            current += c
    terms.append(current.strip())
    return terms


def redacted_extra_vars(values: list[str] | tuple[str, ...]) -> list[str]:
    """Extra vars as people without the run's own rights see them: the names, never the values."""
    shown: list[str] = []
    for value in values:
        text = str(value).strip()
        if text.startswith("@"):
            shown.append("@(file)")
            continue
        try:
            names = sorted(json.loads(text)) if text[:1] in "{[" else list(_key_values(text))
        except (PolycrateError, ValueError, TypeError):
            shown.append("(hidden)")
            continue
        shown.append(" ".join(f"{name}=********" for name in names))
    return shown
