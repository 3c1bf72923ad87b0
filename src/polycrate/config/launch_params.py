"""What an operator may set when launching a workflow from the server: its `launch:` declaration.

    workflows:
      - name: deploy
        launch:
          check: true          # may check mode be chosen (default true)
          limit: true          # may --limit be given, a host pattern (default true)
          tags: false          # may --tags be given (default false)
          extra_vars: admins   # free-form extra vars over HTTP: off (default) or admins
          variables:
            - name: version
              type: string     # string | integer | boolean | choice | secret
              pattern: "^[0-9]+[.][0-9]+$"
              required: true
              description: the release to deploy
            - {name: replicas, type: integer, min: 1, max: 10, default: 2}
            - {name: target, type: choice, choices: [staging, production], default: staging}
            - {name: db_password, type: secret, required: true}

The server checks every launch against this (``check_values``): an undeclared variable is refused
naming it, a value of the wrong type or out of bounds is refused naming the variable. Values reach
Ansible as data (``!unsafe``), never templated. Secret values are masked wherever the server shows or
keeps a launch (pages, API, audit, its launch record).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polycrate.config.declarations import allowed_keys
from polycrate.errors import ConfigError, PolycrateError

TYPES = ("string", "integer", "boolean", "choice", "secret")
EXTRA_VARS = ("off", "admins")
TEXT_MAX = 4096  # characters of one string or secret value
MASK = "********"
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True)
class Variable:
    name: str
    type: str = "string"
    description: str = ""
    required: bool = False
    default: Any = None
    choices: tuple[Any, ...] = ()
    min: int | None = None
    max: int | None = None
    pattern: str | None = None
    line: int | None = None

    @property
    def secret(self) -> bool:
        return self.type == "secret"


@dataclass(frozen=True)
class LaunchDeclaration:
    variables: tuple[Variable, ...] = ()
    check: bool = True
    limit: bool = True
    tags: bool = False
    extra_vars: str = "off"  # "off" | "admins"
    declared: bool = field(default=False)  # the workflow has a `launch:` block

    def variable(self, name: str) -> Variable | None:
        return next((v for v in self.variables if v.name == name), None)


class ParameterRefused(PolycrateError):
    """A launch value the declaration does not allow; the message names the field."""


def _line(mapping: Any, key: str | None = None) -> int | None:
    line_of = getattr(mapping, "line_of", None)
    if key is not None and line_of is not None:
        return line_of(key)
    return getattr(mapping, "line", None)


def parse_declaration(raw: Any, workflow: str, path: Path, line: int | None) -> LaunchDeclaration:
    """A workflow's `launch:` mapping, checked; ConfigError names the file and the line."""
    where = f"workflow '{workflow}': launch"
    if raw is None:
        return LaunchDeclaration()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, not {type(raw).__name__}", path, line)
    known = allowed_keys("launch")
    for key in raw:
        if key not in known:
            raise ConfigError(f"unknown key '{key}' in {where} (known: {', '.join(sorted(known))})", path, _line(raw, key))
    flags = {}
    for key, default in (("check", True), ("limit", True), ("tags", False)):
        value = raw.get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: '{key}' must be true or false", path, _line(raw, key))
        flags[key] = value
    extra = raw.get("extra_vars", "off")
    if extra is False:
        extra = "off"
    if extra not in EXTRA_VARS:
        raise ConfigError(f"{where}: 'extra_vars' is off or admins, not {extra!r}", path, _line(raw, "extra_vars"))
    items = raw.get("variables") or []
    if not isinstance(items, list):
        raise ConfigError(f"{where}: 'variables' must be a list", path, _line(raw, "variables"))
    variables: list[Variable] = []
    for item in items:
        variable = _parse_variable(item, where, path, _line(item) or _line(raw, "variables"))
        if any(v.name == variable.name for v in variables):
            raise ConfigError(f"{where}: variable '{variable.name}' is declared twice", path, variable.line)
        variables.append(variable)
    return LaunchDeclaration(tuple(variables), flags["check"], flags["limit"], flags["tags"], extra, True)


def _parse_variable(item: Any, where: str, path: Path, line: int | None) -> Variable:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: a variable is a mapping (name, type, ...)", path, line)
    known = allowed_keys("launch_variable")
    for key in item:
        if key not in known:
            raise ConfigError(f"unknown key '{key}' in a launch variable (known: {', '.join(sorted(known))})", path,
                              _line(item, key))
    name = item.get("name")
    if not isinstance(name, str) or not _VAR_NAME.match(name):
        raise ConfigError(f"{where}: variable name {name!r}: letters, digits and '_', not starting with a digit",
                          path, _line(item, "name"))
    what = f"{where}: variable '{name}'"
    kind = item.get("type", "string")
    if kind not in TYPES:
        raise ConfigError(f"{what}: type is one of {', '.join(TYPES)}, not {kind!r}", path, _line(item, "type"))
    description = item.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{what}: description must be text", path, _line(item, "description"))
    required = item.get("required", False)
    if not isinstance(required, bool):
        raise ConfigError(f"{what}: required must be true or false", path, _line(item, "required"))
    choices = item.get("choices")
    if kind == "choice":
        if not isinstance(choices, list) or not choices or not all(isinstance(c, (str, int)) and not isinstance(c, bool)
                                                                  for c in choices):
            raise ConfigError(f"{what}: a choice needs 'choices', a list of texts or numbers", path, line)
    elif choices is not None:
        raise ConfigError(f"{what}: 'choices' belongs to type choice", path, _line(item, "choices"))
    bounds = {}
    for key in ("min", "max"):
        value = item.get(key)
        if value is not None and (kind != "integer" or not isinstance(value, int) or isinstance(value, bool)):
            raise ConfigError(f"{what}: '{key}' is a whole number, for type integer", path, _line(item, key))
        bounds[key] = value
    pattern = item.get("pattern")
    if pattern is not None:
        if kind not in ("string", "secret") or not isinstance(pattern, str):
            raise ConfigError(f"{what}: 'pattern' is a regular expression, for type string or secret", path,
                              _line(item, "pattern"))
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{what}: pattern: {exc}", path, _line(item, "pattern")) from None
    variable = Variable(name, kind, description, required, None, tuple(choices or ()), bounds["min"], bounds["max"],
                        pattern, line)
    if "default" in item and item["default"] is not None:
        if kind == "secret":
            raise ConfigError(f"{what}: a secret has no default in workspace.poly (it would not be secret)", path,
                              _line(item, "default"))
        try:
            default = check_value(variable, item["default"])
        except ParameterRefused as exc:
            raise ConfigError(f"{what}: default: {exc.message}", path, _line(item, "default")) from None
        variable = Variable(name, kind, description, required, default, variable.choices, variable.min, variable.max,
                            pattern, line)
    return variable


def check_value(variable: Variable, value: Any) -> Any:
    """One value, as JSON gave it, checked against its declaration: the value to use, or ParameterRefused."""
    name = f"vars.{variable.name}"
    if variable.type in ("string", "secret"):
        if not isinstance(value, str):
            raise ParameterRefused(f"{name}: text, not {_kind(value)}")
        if len(value) > TEXT_MAX:
            raise ParameterRefused(f"{name}: at most {TEXT_MAX} characters")
        if "\x00" in value:
            raise ParameterRefused(f"{name}: no NUL characters")
        if variable.pattern is not None and not re.fullmatch(variable.pattern, value):
            shown = "the secret" if variable.secret else repr(value[:60])
            raise ParameterRefused(f"{name}: {shown} does not match {variable.pattern}")
        return value
    if variable.type == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ParameterRefused(f"{name}: a whole number, not {_kind(value)}")
        if variable.min is not None and value < variable.min:
            raise ParameterRefused(f"{name}: at least {variable.min}, not {value}")
        if variable.max is not None and value > variable.max:
            raise ParameterRefused(f"{name}: at most {variable.max}, not {value}")
        return value
    if variable.type == "boolean":
        if not isinstance(value, bool):  # "false" is a word, not a boolean
            raise ParameterRefused(f"{name}: true or false, not {_kind(value)}")
        return value
    if value not in variable.choices or isinstance(value, bool):
        raise ParameterRefused(f"{name}: one of {', '.join(map(str, variable.choices))}, not {str(value)[:60]!r}")
    return value


def check_values(declaration: LaunchDeclaration, values: Any, workflow: str) -> dict[str, Any]:
    """Every declared variable's value (given, else its default), each checked; an undeclared name or a
    missing required one is refused naming it."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ParameterRefused(f"vars: an object of the declared variables, not {_kind(values)}")
    declared = [v.name for v in declaration.variables]
    for key in values:
        if key not in declared:
            raise ParameterRefused(f"vars.{str(key)[:64]}: workflow '{workflow}' declares no such launch variable"
                                   f" (declared: {', '.join(declared) or 'none'})")
    checked: dict[str, Any] = {}
    for variable in declaration.variables:
        if variable.name in values and values[variable.name] is not None:
            checked[variable.name] = check_value(variable, values[variable.name])
        elif variable.default is not None:
            checked[variable.name] = variable.default
        elif variable.required:
            raise ParameterRefused(f"vars.{variable.name}: required")
    return checked


def shown_values(declaration: LaunchDeclaration, values: dict[str, Any]) -> dict[str, Any]:
    """The values as pages, the API and the audit may show them: secrets masked."""
    out = {}
    for name, value in values.items():
        variable = declaration.variable(name)
        out[name] = MASK if variable is None or variable.secret else value
    return out


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "text", list: "a list", dict: "an object",
            type(None): "null"}.get(type(value), type(value).__name__)
