"""Typed models of a workspace, and the one place their schema is checked.

``parse_*`` functions turn a loaded YAML mapping (a ``LineMap``) into frozen
models, raising ``ConfigError`` with file and line on anything invalid.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polycrate.errors import ConfigError
from polycrate.yamlfile import LineMap

NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62})$")
ACTION_TYPES = ("ansible", "script")


def validate_name(value: Any, what: str, path: Path | str, line: int | None) -> str:
    """The naming rule for blocks, actions, workflows and steps."""
    if not isinstance(value, str) or not NAME_RE.match(value) or value.endswith((".", "-")):
        raise ConfigError(
            f"invalid {what} name {value!r}: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 63 characters",
            path,
            line,
        )
    return value


@dataclass(frozen=True)
class Prompt:
    message: str


@dataclass(frozen=True)
class Action:
    name: str
    type: str  # "ansible" | "script"
    description: str = ""
    playbook: str | None = None
    script: tuple[str, ...] = ()
    prompt: Prompt | None = None
    line: int | None = None


@dataclass(frozen=True)
class BlockDefinition:
    """A block as installed under blocks/: its block.poly, not yet merged."""

    name: str
    version: str
    kind: str
    description: str
    config: dict[str, Any]
    actions: dict[str, Action]
    folder: Path  # absolute
    file: Path  # absolute path of block.poly
    relpath: str  # folder relative to blocks/, e.g. registry.acme-corp.com/acme/infra/linux-maintenance
    parent: str | None = None  # block.poly's own `from:` (inheritance), resolved by workspace.py
    parent_line: int | None = None


@dataclass(frozen=True)
class Block:
    """A block instance of the workspace: definition + merged config."""

    name: str
    definition: BlockDefinition
    config: dict[str, Any]
    source: str | None = None  # the `from:` reference, if any

    @property
    def version(self) -> str:
        return self.definition.version

    @property
    def folder(self) -> Path:
        return self.definition.folder

    @property
    def actions(self) -> dict[str, Action]:
        return self.definition.actions


@dataclass(frozen=True)
class BlockEntry:
    """An entry under `blocks:` in workspace.poly."""

    name: str
    source: str | None
    config: dict[str, Any]
    line: int | None


@dataclass(frozen=True)
class Step:
    name: str
    block: str
    action: str
    allow_failure: bool = False
    line: int | None = None
    timeout: float | None = None  # seconds per attempt; the action is stopped and the attempt fails
    retries: int = 0  # further attempts after a failed one
    retry_delay: float = 0.0  # seconds between attempts
    allow_no_hosts: bool = False  # a play matching no host does not fail this step (nor its preflight)


@dataclass(frozen=True)
class Workflow:
    name: str
    description: str
    steps: tuple[Step, ...]
    prompt: Prompt | None = None
    schedule: Any = None
    line: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    on_failure: tuple[Step, ...] = ()  # steps that run only after a step failed


@dataclass(frozen=True)
class Webhook:
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    on: tuple[str, ...] = ("failure",)  # "success" and/or "failure" (failed or interrupted runs)


@dataclass(frozen=True)
class RunSettings:
    """Workspace-level settings of the run store, alerts and metrics (`history:`, `webhooks:`, `metrics:`)."""

    keep_runs: int | None = None
    keep_days: float | None = None
    webhooks: tuple[Webhook, ...] = ()
    metrics_path: str | None = None  # relative to the workspace root unless absolute
    metrics_enabled: bool = True


@dataclass(frozen=True)
class Workspace:
    name: str
    organization: str
    description: str
    root: Path
    file: Path
    blocks: dict[str, Block]
    workflows: dict[str, Workflow]
    config: dict[str, Any]
    raw: dict[str, Any] = field(compare=False, repr=False)
    run_settings: RunSettings = field(default_factory=RunSettings, compare=False)

    @property
    def inventory(self) -> Path:
        return self.root / "inventory.yml"

    def artifacts_dir(self, block: str) -> Path:
        return self.root / "artifacts" / "blocks" / block


# --- schema checks -------------------------------------------------------------------------


def _line(mapping: Any, key: str | None = None) -> int | None:
    if isinstance(mapping, LineMap):
        return mapping.line_of(key) if key else mapping.line
    return None


def _expect_map(value: Any, what: str, path: Path, line: int | None) -> dict:
    if value is None:
        return LineMap()
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a mapping, not {type(value).__name__}", path, line)
    return value


def _expect_list(value: Any, what: str, path: Path, line: int | None) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{what} must be a list, not {type(value).__name__}", path, line)
    return value


def _string(mapping: dict, key: str, path: Path, default: str = "", required: bool = False) -> str:
    value = mapping.get(key)
    if value is None:
        if required:
            raise ConfigError(f"missing required key '{key}'", path, _line(mapping))
        return default
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # `version: 1.0` is a common spelling
    if not isinstance(value, str):
        raise ConfigError(f"'{key}' must be a string", path, _line(mapping, key))
    return value


def _check_keys(mapping: dict, allowed: set[str], what: str, path: Path) -> None:
    for key in mapping:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise ConfigError(f"unknown key '{key}' in {what} (known: {known})", path, _line(mapping, key))


def _bool(mapping: dict, key: str, path: Path) -> bool:
    value = mapping.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"'{key}' must be true or false", path, _line(mapping, key))
    return value


def parse_prompt(value: Any, path: Path, line: int | None) -> Prompt | None:
    if value is None:
        return None
    if isinstance(value, str):
        return Prompt(value)
    mapping = _expect_map(value, "prompt", path, line)
    message = _string(mapping, "message", path, required=True)
    return Prompt(message)


def parse_action(raw: Any, path: Path) -> Action:
    mapping = _expect_map(raw, "an action", path, _line(raw))
    _check_keys(mapping, {"name", "description", "type", "playbook", "script", "prompt"}, "action", path)
    name = validate_name(mapping.get("name"), "action", path, _line(mapping, "name"))
    kind = mapping.get("type")
    if kind is None:
        kind = "ansible" if "playbook" in mapping else "script" if "script" in mapping else None
    if kind not in ACTION_TYPES:
        raise ConfigError(
            f"action '{name}': type must be one of {', '.join(ACTION_TYPES)}", path, _line(mapping, "type")
        )
    playbook = None
    script: tuple[str, ...] = ()
    if kind == "ansible":
        playbook = _string(mapping, "playbook", path)
        if not playbook:
            raise ConfigError(f"action '{name}': type ansible needs 'playbook'", path, _line(mapping))
    else:
        lines = mapping.get("script")
        if isinstance(lines, str):
            lines = [lines]
        lines = _expect_list(lines, f"action '{name}': script", path, _line(mapping, "script"))
        if not lines or not all(isinstance(x, str) for x in lines):
            raise ConfigError(
                f"action '{name}': script must be a non-empty list of shell lines", path, _line(mapping, "script")
            )
        script = tuple(lines)
    return Action(
        name=name,
        type=kind,
        description=_string(mapping, "description", path),
        playbook=playbook,
        script=script,
        prompt=parse_prompt(mapping.get("prompt"), path, _line(mapping, "prompt")),
        line=_line(mapping),
    )


def _named_items(items: list, parse, what: str, path: Path) -> dict:
    result: dict = {}
    for raw in items:
        item = parse(raw, path)
        if item.name in result:
            raise ConfigError(f"duplicate {what} '{item.name}'", path, item.line)
        result[item.name] = item
    return result


def parse_block_definition(raw: Any, file: Path, blocks_dir: Path) -> BlockDefinition:
    mapping = _expect_map(raw, "block.poly", file, 1)
    _check_keys(
        mapping,
        {"name", "version", "kind", "description", "config", "actions", "from", "labels", "alias"},
        "block.poly",
        file,
    )
    name = validate_name(mapping.get("name"), "block", file, _line(mapping, "name"))
    config = _expect_map(mapping.get("config"), "config", file, _line(mapping, "config"))
    actions = _named_items(
        _expect_list(mapping.get("actions"), "actions", file, _line(mapping, "actions")), parse_action, "action", file
    )
    folder = file.parent
    parent = _string(mapping, "from", file) or None
    if parent is not None:
        check_reference(parent, f"block '{name}'", file, _line(mapping, "from"))
    return BlockDefinition(
        name=name,
        version=_string(mapping, "version", file, default="0.0.0"),
        kind=_string(mapping, "kind", file, default="generic"),
        description=_string(mapping, "description", file),
        config=config,
        actions=actions,
        folder=folder,
        file=file,
        relpath=folder.relative_to(blocks_dir).as_posix(),
        parent=parent,
        parent_line=_line(mapping, "from"),
    )


def parse_block_entry(raw: Any, path: Path) -> BlockEntry:
    mapping = _expect_map(raw, "a block entry", path, _line(raw))
    _check_keys(mapping, {"name", "from", "config", "description"}, "block entry", path)
    name = validate_name(mapping.get("name"), "block", path, _line(mapping, "name"))
    source = mapping.get("from")
    if source is not None and (not isinstance(source, str) or not source.strip()):
        raise ConfigError(f"block '{name}': 'from' must be a block reference string", path, _line(mapping, "from"))
    if source is not None:
        check_reference(source, f"block '{name}'", path, _line(mapping, "from"))
    config = _expect_map(mapping.get("config"), f"block '{name}': config", path, _line(mapping, "config"))
    return BlockEntry(name=name, source=source, config=config, line=_line(mapping))


# Upper bounds of durations and counts: far beyond any real use, and small enough for every
# consumer (time.monotonic arithmetic, threading timeouts, SQLite integers, time spans).
MAX_SECONDS = 366 * 86400  # a year
MAX_COUNT = {"retries": 1000, "keep_runs": 10**9}
MAX_DAYS = 100 * 366


def _number(mapping: dict, key: str, path: Path, *, integer: bool = False, positive: bool = False) -> Any:
    """An optional non-negative, finite, bounded number (seconds, counts, days); None when absent."""
    value = mapping.get(key)
    if value is None:
        return None
    kinds = (int,) if integer else (int, float)
    what = "a whole number" if integer else ("a number of days" if key.endswith("_days") else "a number of seconds")
    limit = MAX_COUNT.get(key, 10**9) if integer else (MAX_DAYS if key.endswith("_days") else MAX_SECONDS)
    if (isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) or value < 0
            or (positive and value == 0) or value > limit):
        shown = f" (not {value!r})" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
        raise ConfigError(f"'{key}' must be {what} >= {1 if positive else 0}, at most {limit:,}{shown}",
                          path, _line(mapping, key))
    return value


def check_reference(reference: str, what: str, path: Path, line: int | None) -> None:
    """A `from:` reference: `name`, `registry/path` or `registry/path:version`, never an empty version."""
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash and not reference[colon + 1:].strip():
        raise ConfigError(f"{what}: 'from: {reference}' ends in ':' with no version: write the version "
                          f"({reference}0.1.0) or drop the ':' to take the installed one", path, line)


def parse_step(raw: Any, path: Path) -> Step:
    mapping = _expect_map(raw, "a workflow step", path, _line(raw))
    _check_keys(
        mapping,
        {"name", "description", "block", "action", "allow_failure", "timeout", "retries", "retry_delay",
         "allow_no_hosts"},
        "workflow step",
        path,
    )
    name = validate_name(mapping.get("name"), "step", path, _line(mapping, "name"))
    block = validate_name(mapping.get("block"), "block", path, _line(mapping, "block"))
    action = validate_name(mapping.get("action"), "action", path, _line(mapping, "action"))
    return Step(
        name,
        block,
        action,
        _bool(mapping, "allow_failure", path),
        _line(mapping),
        timeout=_number(mapping, "timeout", path, positive=True),
        retries=_number(mapping, "retries", path, integer=True) or 0,
        retry_delay=_number(mapping, "retry_delay", path) or 0.0,
        allow_no_hosts=_bool(mapping, "allow_no_hosts", path),
    )


def parse_workflow(raw: Any, path: Path) -> Workflow:
    mapping = _expect_map(raw, "a workflow", path, _line(raw))
    _check_keys(mapping, {"name", "description", "steps", "prompt", "schedule", "on_failure"}, "workflow", path)
    name = validate_name(mapping.get("name"), "workflow", path, _line(mapping, "name"))
    steps_raw = _expect_list(mapping.get("steps"), f"workflow '{name}': steps", path, _line(mapping, "steps"))
    if not steps_raw:
        raise ConfigError(f"workflow '{name}' has no steps", path, _line(mapping))
    steps = _named_items(steps_raw, parse_step, f"step in workflow '{name}'", path)
    on_failure = _named_items(
        _expect_list(mapping.get("on_failure"), f"workflow '{name}': on_failure", path, _line(mapping, "on_failure")),
        parse_step,
        f"on_failure step in workflow '{name}'",
        path,
    )
    for step_name, step in on_failure.items():
        if step_name in steps:
            raise ConfigError(
                f"workflow '{name}': on_failure step '{step_name}' has the name of a step", path, step.line
            )
    return Workflow(
        name=name,
        description=_string(mapping, "description", path),
        steps=tuple(steps.values()),
        prompt=parse_prompt(mapping.get("prompt"), path, _line(mapping, "prompt")),
        schedule=mapping.get("schedule"),
        line=_line(mapping),
        raw=mapping,
        on_failure=tuple(on_failure.values()),
    )


WEBHOOK_EVENTS = ("success", "failure")


def parse_run_settings(raw: dict, path: Path) -> RunSettings:
    """`history: {keep_runs, keep_days}`, `webhooks: [{url, headers, on}]`, `metrics: {path, enabled}`."""
    history = _expect_map(raw.get("history"), "history", path, _line(raw, "history"))
    _check_keys(history, {"keep_runs", "keep_days"}, "history", path)
    webhooks = []
    for item in _expect_list(raw.get("webhooks"), "webhooks", path, _line(raw, "webhooks")):
        hook = _expect_map(item, "a webhook", path, _line(raw, "webhooks"))
        if True in hook:  # YAML 1.1 reads a bare `on:` key as the boolean true
            if isinstance(hook, LineMap):
                getattr(hook, "key_lines", {}).setdefault("on", hook.line_of(True))  # type: ignore[arg-type]
            hook["on"] = hook.pop(True)
        _check_keys(hook, {"name", "url", "headers", "on"}, "webhook", path)
        url = _string(hook, "url", path, required=True)
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"webhook url must start with http:// or https://: {url!r}", path, _line(hook, "url"))
        headers = _expect_map(hook.get("headers"), "webhook headers", path, _line(hook, "headers"))
        on = hook.get("on", ["failure"])
        if isinstance(on, str):
            on = [on]
        on = _expect_list(on, "webhook 'on'", path, _line(hook, "on"))
        for event in on:
            if event not in WEBHOOK_EVENTS:
                raise ConfigError(
                    f"webhook 'on' takes {' and '.join(WEBHOOK_EVENTS)}, not {event!r}", path, _line(hook, "on")
                )
        webhooks.append(Webhook(url, tuple((str(k), str(v)) for k, v in headers.items()), tuple(on)))
    metrics = _expect_map(raw.get("metrics"), "metrics", path, _line(raw, "metrics"))
    _check_keys(metrics, {"path", "enabled"}, "metrics", path)
    enabled = metrics.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("'enabled' must be true or false", path, _line(metrics, "enabled"))
    return RunSettings(
        keep_runs=_number(history, "keep_runs", path, integer=True, positive=True),
        keep_days=_number(history, "keep_days", path, positive=True),
        webhooks=tuple(webhooks),
        metrics_path=_string(metrics, "path", path) or None,
        metrics_enabled=enabled,
    )


RECIPIENT_PREFIX = "age1"


def check_recipients(raw: Any, path: Path) -> list[str]:
    """The shape of ``encryption.recipients`` of workspace.poly (checked at every load; the keys'
    syntax is checked by pyrage when they are used): age public keys, and never a secret key."""
    encryption = raw.get("encryption") if isinstance(raw, dict) else None
    if encryption is None:
        return []
    if not isinstance(encryption, dict):
        raise ConfigError("'encryption' must be a mapping with 'recipients'", path, _line(raw, "encryption"))
    _check_keys(encryption, {"recipients"}, "encryption", path)
    recipients = encryption.get("recipients") or []
    line = _line(encryption, "recipients")
    if not isinstance(recipients, list):
        raise ConfigError("'encryption.recipients' must be a list of age public keys", path, line)
    result: list[str] = []
    for item in recipients:
        text = item.strip() if isinstance(item, str) else ""
        if text.upper().startswith("AGE-SECRET-KEY"):
            raise ConfigError("'encryption.recipients' holds an age SECRET key (AGE-SECRET-KEY-...), a private key "
                              "in a file that is committed: list public keys (age1...) only, and replace that key",
                              path, line)
        if not text.startswith(RECIPIENT_PREFIX):
            raise ConfigError("'encryption.recipients' entries must be age public keys (age1...)", path, line)
        if text not in result:
            result.append(text)
    return result


WORKSPACE_KEYS = {
    "name",
    "organization",
    "description",
    "blocks",
    "workflows",
    "config",
    "encryption",
    "webhooks",
    "history",
    "metrics",
    "version",
    "registries",  # registry mirrors and insecure (plain HTTP) registries, see registry.py
}
