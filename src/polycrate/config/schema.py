"""The one place the files' schema is checked: workspace.poly, block.poly and secrets.poly.

Each file is read once (through ``yamlfile``, which keeps the line of every key and
enforces the loader's limits) and turned into the frozen models of ``polycrate.config.model``.
Every section is checked here, next to where it is declared, and every error is a
``ConfigError`` naming the file and the line:

* workspace.poly (``read_workspace_file``): name, ``blocks`` entries, ``workflows`` with
  their steps, prompts and ``schedule``, ``config`` with its toolchain keys (``runtime``,
  ``engine``, ``image``), ``registries``, ``encryption``, ``webhooks``, ``notifications``, ``history``, ``metrics``;
* block.poly (``read_block_file``): name, version, config, actions;
* secrets.poly (``parse_secrets``): ``config`` and ``blocks: [{name, config}]``.

No other module reads a ``.poly`` file or looks at YAML line numbers. Checks that need
more than one file (a step naming an unknown block, `from:` resolution) are workspace.py's.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

from polycrate.errors import ConfigError
from polycrate.config.declarations import allowed_keys, declared_keys
from polycrate.config.launch_params import parse_declaration
from polycrate.config.model import (
    ENGINES,
    RUNTIMES,
    ORIGIN_WORKSPACE,
    KIND_DEFAULT,
    KINDS,
    Action,
    BlockDefinition,
    BlockEntry,
    FileFrom,
    Prompt,
    Registries,
    RunSettings,
    Schedule,
    Step,
    Notification,
    SecretRef,
    Toolchain,
    Webhook,
    Workflow,
)
from polycrate.config.yamlfile import LineMap, load_yaml, parse_yaml, plain

WORKSPACE_FILE = "workspace.poly"
BLOCK_FILE = "block.poly"
SECRETS_FILE = "secrets.poly"

NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62})$")
# a block's name may be a hub path, as in Polycrate (cmd/vars.go ValidateBlockNameRegex): ayedo/k8s/harbor
BLOCK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,62}){0,7}$")
ACTION_TYPES = ("ansible", "script")

# --- the real Polycrate's data model ----------------------------------------------------------
# Every field of Go's structs loads (cmd/workspace.go Workspace and WorkspaceConfig, cmd/blocks.go
# Block, cmd/actions.go Action, cmd/workflows.go Workflow and Step): each is declared in
# config/declarations.py; a Go field that has no effect here is in *_NO_EFFECT with the reason, said in
# one warning line (workspace_warnings, block_warnings) when a file sets it.
COMPUTED_PATHS = ("path", "localpath", "containerpath")
_COMPUTED = "computed from where the files are (Polycrate overwrites it too)"
WORKSPACE_NO_EFFECT = {
    "identifier": "Polycrate's cloud (backplane) identifier, and there is no backplane here",
    "path": _COMPUTED, "localpath": _COMPUTED, "containerpath": _COMPUTED,
    "registry": "Polycrate itself never reads it; registries: and `polycrate registry login` configure registries",
}
# WorkspaceConfig keys without an effect here: (Polycrate's default, why); said only when not the default
CONFIG_NO_EFFECT: dict[str, tuple[Any, str]] = {
    "blocksconfig": ("block.poly", "a block's file is always block.poly here"),
    "workspaceconfig": ("workspace.poly", "the workspace's file is always workspace.poly here"),
    "workflowsroot": ("workflows", "workflows are read from workspace.poly only (as Polycrate does)"),
    "containerroot": ("/workspace", "the container runtime mounts the workspace at /workspace"),
    "remoteroot": ("/polycrate", "Polycrate itself never reads it"),
    "dockerfile": ("Dockerfile.poly", "the workspace image is always built from Dockerfile.poly"),
    "globals": ({}, "Polycrate itself never reads it: shared values go under config:"),
}
CONFIG_ROOTS = {"blocksroot": "blocks", "artifactsroot": "artifacts", "logsroot": ".logs"}  # Go's defaults
BLOCK_NO_EFFECT = {
    "changelog": "release notes for Polycrate's hub; nothing reads them here",
    "workdir": "the block's folder, computed (Polycrate overwrites it too)",
    "artifacts": "artifacts/blocks/<block>, computed (Polycrate overwrites it too)",
    "checksum": "computed when a block is pulled (blocks.lock holds the digest); a written one is not checked",
}


def validate_name(value: Any, what: str, path: Path | str, line: int | None) -> str:
    """The naming rule for blocks, actions, workflows and steps (a block's may be a hub path: a/b/c)."""
    rule = BLOCK_NAME_RE if what == "block" else NAME_RE
    if value is None or value == "":
        raise ConfigError(f"the {what} has no name: write `name: ...`", path, line)
    if not isinstance(value, str) or not rule.match(value) or value.endswith((".", "-")) or any(
            part.endswith((".", "-")) for part in value.split("/")):
        hub = " (a block's name may be a path of such names: ayedo/k8s/harbor)" if what == "block" else ""
        raise ConfigError(
            f"invalid {what} name {value!r}: use letters, digits, '.', '_' and '-', "
            f"starting with a letter or digit, at most 63 characters{hub}",
            path,
            line,
        )
    return value



# --- the shapes every file shares ------------------------------------------------------------


def _line(mapping: Any, key: str | None = None) -> int | None:
    if isinstance(mapping, LineMap):
        return mapping.line_of(key) if key else mapping.line
    return None


def _expect_map(value: Any, what: str, path: Path, line: int | None) -> dict[str, Any]:
    if value is None:
        return LineMap()
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a mapping, not {type(value).__name__}", path, line)
    return value


def _expect_list(value: Any, what: str, path: Path, line: int | None) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{what} must be a list, not {type(value).__name__}", path, line)
    return value


def _string(mapping: dict[str, Any], key: str, path: Path, default: str = "", required: bool = False) -> str:
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


def _text_or_nothing(value: Any) -> str:
    """A key declared "for people; not read" that we now show: its text, or nothing when it is not text."""
    return str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""


def _check_keys(mapping: dict[str, Any], allowed: set[str], what: str, path: Path) -> None:
    for key in mapping:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise ConfigError(f"unknown key '{key}' in {what} (known: {known})", path, _line(mapping, key))


def _bool(mapping: dict[str, Any], key: str, path: Path) -> bool:
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
    _check_keys(mapping, allowed_keys("action"), "action", path)
    name = validate_name(mapping.get("name"), "action", path, _line(mapping, "name"))
    check_alias(mapping, path)
    if mapping.get("script") is not None and mapping.get("playbook") is not None:
        # Polycrate's `excluded_with`: which of the two would run is not for us to guess
        raise ConfigError(f"action '{name}' has both 'script' and 'playbook': an action is one or the other "
                          "(make two actions)", path, _line(mapping, "playbook"))
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
            script_lines: tuple[int | None, ...] = (_line(mapping, "script"),)
        else:
            script_lines = tuple(mapping.lines_of_items("script")) if isinstance(mapping, LineMap) else ()
        lines = _expect_list(lines, f"action '{name}': script", path, _line(mapping, "script"))
        if not lines or not all(isinstance(x, str) for x in lines):
            raise ConfigError(
                f"action '{name}': script must be a non-empty list of shell lines", path, _line(mapping, "script")
            )
        script = tuple(lines)
        script_lines = script_lines if len(script_lines) == len(script) else (_line(mapping, "script"),) * len(script)
        for index, (text, line) in enumerate(zip(script, script_lines, strict=False), 1):
            check_template(text, f"action '{name}', script line {index}", path, line)
    return Action(
        name=name,
        type=kind,
        description=_string(mapping, "description", path),
        playbook=playbook,
        script=script,
        prompt=parse_prompt(mapping.get("prompt"), path, _line(mapping, "prompt")),
        line=_line(mapping),
        script_lines=script_lines if kind == "script" else (),
        file=Path(path) if path is not None else None,
        labels=parse_labels(mapping.get("labels"), f"action '{name}': ", path, _line(mapping, "labels")),
        interactive=_bool(mapping, "interactive", path),
        config=plain(_expect_map(mapping.get("config"), f"action '{name}': config", path, _line(mapping, "config"))),
        alias=tuple(mapping.get("alias") or ()),
    )


def check_template(text: str, what: str, path: Path | str, line: int | None) -> None:
    """A script line is a Go template (as in Polycrate): its syntax is checked when block.poly is read;
    the values are filled in when the action runs (runtime/script.py)."""
    if "{{" not in text:
        return
    from polycrate.config.gotemplate import TemplateError, check, template_message

    try:
        check(text)
    except TemplateError as exc:
        raise ConfigError(template_message(what, exc), path, line) from None


LABEL_KEY_MAX = 317  # Kubernetes': a 253-character prefix, '/', a 63-character name


def check_alias(mapping: dict[str, Any], path: Path) -> None:
    """`alias:` (Polycrate's, on blocks, actions, workflows and steps): a list of names. Polycrate merges
    aliases and looks nothing up by them; neither do we."""
    for item in _expect_list(mapping.get("alias"), "alias", path, _line(mapping, "alias")):
        if not isinstance(item, str) or not NAME_RE.match(item):
            raise ConfigError(f"alias must be a list of names, not {item!r}", path, _line(mapping, "alias"))


def parse_labels(value: Any, what: str, path: Path, line: int | None) -> dict[str, str]:
    """`labels:` (block.poly, a workspace entry, workspace.poly): text keys -> text values, as Polycrate's
    map[string]string; numbers and booleans are written as YAML writes them (1, true)."""
    mapping = _expect_map(value, f"{what}labels", path, line)
    labels: dict[str, str] = {}
    for key, item in mapping.items():
        where = _line(mapping, key)
        if not key or len(key) > LABEL_KEY_MAX or any(c.isspace() for c in key) or has_control(key):
            raise ConfigError(f"{what}label {key!r}: a label key is 1-{LABEL_KEY_MAX} characters without "
                              "spaces, such as app.kubernetes.io/part-of", path, where)
        if item is None:
            item = ""
        if isinstance(item, bool):
            item = "true" if item else "false"
        elif isinstance(item, (int, float)):
            item = str(item)
        if not isinstance(item, str) or has_control(item):
            raise ConfigError(f"{what}label '{key}' must be one line of text, not "
                              f"{type(item).__name__ if not isinstance(item, str) else 'several lines'}", path, where)
        labels[key] = item
    return labels


def parse_file_from(value: Any, what: str, path: Path, line: int | None) -> FileFrom | None:
    """`inventory:` / `kubeconfig:` of a block: `{from: BLOCK}` and/or `{filename: NAME}` (in the block's
    artifacts folder), as in Polycrate; a plain string is `from`."""
    if value is None:
        return None
    if isinstance(value, str):
        value = {"from": value}
    mapping = _expect_map(value, what, path, line)
    _check_keys(mapping, allowed_keys("file_from"), what, path)
    source = mapping.get("from")
    if source is not None:
        source = validate_name(source, "block", path, _line(mapping, "from"))
    filename = mapping.get("filename")
    if filename is not None:
        if (not isinstance(filename, str) or not filename.strip() or filename.startswith("/")
                or ".." in Path(filename).parts or has_control(filename)):
            raise ConfigError(f"{what}.filename must be a file name inside the block's artifacts folder, "
                              f"not {filename!r}", path, _line(mapping, "filename"))
    return FileFrom(filename=filename, source=source, line=line, file=path)


def _kind(mapping: dict[str, Any], path: Path) -> str:
    """`kind`: one word (the naming rule). Polycrate's kinds (model.KINDS) are conventions, not a closed
    list (its CLI takes any text, and blocks in use carry others), so another word is accepted as well."""
    kind = mapping.get("kind")
    if kind is None or kind == "":
        return KIND_DEFAULT
    if not isinstance(kind, str) or not NAME_RE.match(kind):
        raise ConfigError(f"kind must be one word such as {', '.join(KINDS[:5])}, not {kind!r}",
                          path, _line(mapping, "kind"))
    return kind


def _named_items(items: list[Any], parse: Callable[[Any, Path], Any], what: str, path: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for raw in items:
        item = parse(raw, path)
        if item.name in result:
            raise ConfigError(f"duplicate {what} '{item.name}'", path, item.line)
        result[item.name] = item
    return result


def parse_block_definition(raw: Any, file: Path, blocks_dir: Path) -> BlockDefinition:
    mapping = _expect_map(raw, "block.poly", file, 1)
    _check_keys(mapping, allowed_keys("block"), "block.poly", file)
    name = validate_name(mapping.get("name"), "block", file, _line(mapping, "name"))
    check_alias(mapping, file)
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
        kind=_kind(mapping, file),
        description=_string(mapping, "description", file),
        config=config,
        actions=actions,
        folder=folder,
        file=file,
        relpath=folder.relative_to(blocks_dir).as_posix(),
        parent=parent,
        parent_line=_line(mapping, "from"),
        template=_bool(mapping, "template", file),
        template_line=_line(mapping, "template"),
        labels=parse_labels(mapping.get("labels"), "", file, _line(mapping, "labels")),
        inventory=parse_file_from(mapping.get("inventory"), "inventory", file, _line(mapping, "inventory")),
        kubeconfig=parse_file_from(mapping.get("kubeconfig"), "kubeconfig", file, _line(mapping, "kubeconfig")),
        alias=tuple(mapping.get("alias") or ()),
        type=_text_or_nothing(mapping.get("type")),
        flavor=_text_or_nothing(mapping.get("flavor")),
        warnings=tuple(block_warnings(mapping, file)),
    )


def _warn(sink: list[ConfigError], key: str, reason: str, path: Path, line: int | None, what: str = "") -> None:
    sink.append(ConfigError(f"{what}'{key}' has no effect here: {reason}", path, line))


def _computed_paths(mapping: Any, what: str, path: Path, sink: list[ConfigError]) -> None:
    for key in ("inventory", "kubeconfig"):
        value = mapping.get(key) if isinstance(mapping, dict) else None
        if isinstance(value, dict):
            for computed in COMPUTED_PATHS:
                if computed in value:
                    _warn(sink, f"{key}.{computed}", _COMPUTED, path, _line(value, computed), what)


def block_warnings(mapping: Any, path: Path, what: str = "") -> list[ConfigError]:
    """The Go fields a block (block.poly, or a workspace.poly entry) sets that have no effect here."""
    sink: list[ConfigError] = []
    if not isinstance(mapping, dict):
        return sink
    for key, reason in BLOCK_NO_EFFECT.items():
        if key in mapping:
            _warn(sink, key, reason, path, _line(mapping, key), what)
    _computed_paths(mapping, what, path, sink)
    name = mapping.get("name")
    for action in mapping.get("actions") or ():
        if isinstance(action, dict) and action.get("block") not in (None, name):
            _warn(sink, "block", f"an action belongs to the block it is written in, '{name}' (Polycrate sets it "
                  "itself)", path, _line(action, "block"), f"{what}action '{action.get('name')}': ")
    return sink


def workspace_warnings(raw: Any, path: Path) -> list[ConfigError]:
    """The Go fields workspace.poly sets that have no effect here, each said once."""
    sink: list[ConfigError] = []
    for key, reason in WORKSPACE_NO_EFFECT.items():
        if key in raw:
            _warn(sink, key, reason, path, _line(raw, key))
    config = raw.get("config")
    if isinstance(config, dict):
        for key, (default, reason) in CONFIG_NO_EFFECT.items():
            if key in config and config[key] not in (default, None):
                _warn(sink, f"config.{key}", reason, path, _line(config, key))
    events = raw.get("events")
    if isinstance(events, dict) and events.get("commit"):
        _warn(sink, "events.commit", "the run's own commits are --auto-commit's", path, _line(events, "commit"))
    sync = raw.get("sync")
    if isinstance(sync, dict):
        for key in ("enabled", "auto"):
            if sync.get(key):
                _warn(sink, f"sync.{key}", "nothing syncs by itself here: `polycrate git sync` pulls and pushes "
                      "with sync.remote", path, _line(sync, key))
        if isinstance(sync.get("local"), dict):
            _warn(sink, "sync.local", "`polycrate git sync` works on the branch checked out", path,
                  _line(sync, "local"))
    _computed_paths(raw, "", path, sink)
    for entry in raw.get("blocks") or ():
        if isinstance(entry, dict):
            sink += block_warnings(entry, path, f"block '{entry.get('name')}': ")
    for workflow in raw.get("workflows") or ():
        if not isinstance(workflow, dict):
            continue
        for step in workflow.get("steps") or ():
            if isinstance(step, dict) and step.get("workflow") not in (None, workflow.get("name")):
                _warn(sink, "workflow", "a step belongs to the workflow it is written in (Polycrate sets it "
                      "itself)", path, _line(step, "workflow"),
                      f"workflow '{workflow.get('name')}', step '{step.get('name')}': ")
    return sink


def parse_block_entry(raw: Any, path: Path) -> BlockEntry:
    """A `blocks:` entry of workspace.poly: as in Polycrate, the whole block: it configures an installed
    block (by name or `from:`), completes it (actions, kind, version ... over the installed block.poly's),
    or defines a block of its own with its `actions:`."""
    mapping = _expect_map(raw, "a block entry", path, _line(raw))
    _check_keys(mapping, allowed_keys("block_entry"), "block entry", path)
    name = validate_name(mapping.get("name"), "block", path, _line(mapping, "name"))
    check_alias(mapping, path)
    source = mapping.get("from")
    if source is not None and (not isinstance(source, str) or not source.strip()):
        raise ConfigError(f"block '{name}': 'from' must be a block reference string", path, _line(mapping, "from"))
    if source is not None:
        check_reference(source, f"block '{name}'", path, _line(mapping, "from"))
    config = _expect_map(mapping.get("config"), f"block '{name}': config", path, _line(mapping, "config"))
    actions = _named_items(_expect_list(mapping.get("actions"), f"block '{name}': actions", path,
                                        _line(mapping, "actions")), parse_action, f"action of block '{name}'", path)
    return BlockEntry(
        name=name, source=source, config=config, line=_line(mapping),
        labels=parse_labels(mapping.get("labels"), f"block '{name}': ", path, _line(mapping, "labels")),
        inventory=parse_file_from(mapping.get("inventory"), f"block '{name}': inventory", path,
                                  _line(mapping, "inventory")),
        kubeconfig=parse_file_from(mapping.get("kubeconfig"), f"block '{name}': kubeconfig", path,
                                   _line(mapping, "kubeconfig")),
        actions=actions,
        kind=_kind(mapping, path) if mapping.get("kind") else None,
        version=_string(mapping, "version", path) or None,
        description=_text_or_nothing(mapping.get("description")),
        template=_bool(mapping, "template", path) if "template" in mapping else None,
        alias=tuple(mapping.get("alias") or ()),
        type=_text_or_nothing(mapping.get("type")),
        flavor=_text_or_nothing(mapping.get("flavor")),
    )


# Upper bounds of durations and counts: far beyond any real use, and small enough for every
# consumer (time.monotonic arithmetic, threading timeouts, SQLite integers, time spans).
MAX_SECONDS = 366 * 86400  # a year
MAX_COUNT = {"retries": 1000, "keep_runs": 10**9}
MAX_DAYS = 100 * 366


def _number(mapping: dict[str, Any], key: str, path: Path, *, integer: bool = False, positive: bool = False) -> Any:
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
    _check_keys(mapping, allowed_keys("step"), "workflow step", path)
    name = validate_name(mapping.get("name"), "step", path, _line(mapping, "name"))
    check_alias(mapping, path)
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
        prompt=parse_prompt(mapping.get("prompt"), path, _line(mapping, "prompt")),
        labels=parse_labels(mapping.get("labels"), f"step '{name}': ", path, _line(mapping, "labels")),
        description=_text_or_nothing(mapping.get("description")),
        alias=tuple(mapping.get("alias") or ()),
    )


def parse_workflow(raw: Any, path: Path) -> Workflow:
    mapping = _expect_map(raw, "a workflow", path, _line(raw))
    _check_keys(mapping, allowed_keys("workflow"), "workflow", path)
    name = validate_name(mapping.get("name"), "workflow", path, _line(mapping, "name"))
    check_alias(mapping, path)
    steps_raw = _expect_list(mapping.get("steps"), f"workflow '{name}': steps", path, _line(mapping, "steps"))
    # a workflow without steps loads (as in Polycrate); running or inspecting it is refused (no_steps)
    steps = _named_items(steps_raw, parse_step, f"step in workflow '{name}'", path)
    if _bool(mapping, "allow_failure", path):  # Polycrate's: every step may fail without stopping the workflow
        import dataclasses

        steps = {k: dataclasses.replace(v, allow_failure=True) for k, v in steps.items()}
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
    schedule = mapping.get("schedule")
    return Workflow(
        name=name,
        description=_string(mapping, "description", path),
        steps=tuple(steps.values()),
        prompt=parse_prompt(mapping.get("prompt"), path, _line(mapping, "prompt")),
        schedule=plain(schedule),
        line=_line(mapping),
        on_failure=tuple(on_failure.values()),
        timer=parse_schedule(schedule, name, path, _line(mapping, "schedule")),
        labels=parse_labels(mapping.get("labels"), f"workflow '{name}': ", path, _line(mapping, "labels")),
        alias=tuple(mapping.get("alias") or ()),
        allow_failure=bool(mapping.get("allow_failure")),
        launch=parse_declaration(mapping.get("launch"), name, path, _line(mapping, "launch")),
        queue=_queue(mapping, name, path),
    )


def _queue(mapping: dict[str, Any], workflow: str, path: Path) -> str:
    """`queue:` (team mode): a name by the naming rule; default 'default'."""
    import re

    from polycrate.config.declarations import NAME_PATTERN

    value = mapping.get("queue")
    if value is None:
        return "default"
    if not isinstance(value, str) or not re.match(NAME_PATTERN, value):
        raise ConfigError(f"workflow '{workflow}': invalid queue {value!r} (a name: letters, digits, '.', '-', '_')", path,
                          _line(mapping, "queue"))
    return value


WEBHOOK_EVENTS = ("success", "failure")


def _on_events(item: dict[Any, Any], what: str, path: Path) -> tuple[str, ...]:
    """`on: failure`, `on: [success, failure]` (default: failure) of a webhook or a notification."""
    if True in item:  # YAML 1.1 reads a bare `on:` key as the boolean true
        if isinstance(item, LineMap):
            item.key_lines.setdefault("on", item.line_of(True))  # type: ignore[arg-type]
        item["on"] = item.pop(True)
    on = item.get("on", ["failure"])
    if isinstance(on, str):
        on = [on]
    on = _expect_list(on, f"{what} 'on'", path, _line(item, "on"))
    if not on:  # an empty list would silently mean "never": say so rather than guess
        raise ConfigError(f"{what} 'on' is empty: it takes {' and '.join(WEBHOOK_EVENTS)} (remove the {what} "
                          "to turn it off)", path, _line(item, "on"))
    for event in on:
        if event not in WEBHOOK_EVENTS:
            raise ConfigError(f"{what} 'on' takes {' and '.join(WEBHOOK_EVENTS)}, not {event!r}", path,
                              _line(item, "on"))
    return tuple(on)


NOTIFICATION_TYPES = ("email", "slack", "mattermost", "teams", "matrix")
CHAT_WEBHOOK_TYPES = ("slack", "mattermost", "teams")
SMTP_SECURITY = {"starttls": 587, "tls": 465, "none": 25}  # and the default port of each
MAX_NOTIFY_TIMEOUT = 300
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HOST_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?$")  # a name or IPv4 (IDN: punycode)
_IPV6_RE = re.compile(r"^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*$")
_ADDRESS_RE = re.compile(r"^[^\s@<>,;\"]+@[^\s@<>,;\"]+$")


def parse_secret_ref(item: dict[str, Any], key: str, what: str, path: Path, required: bool = True) -> SecretRef | None:
    """`{secret: PATH}` (PATH: a dotted key under `config:` of secrets.poly) or `{env: NAME}`; a secret
    written as a value in workspace.poly, a committed file, is refused."""
    value = item.get(key)
    line = _line(item, key)
    if value is None:
        if required:
            raise ConfigError(f"{what}: missing required key '{key}' ({key}: {{secret: PATH}} or {{env: NAME}})",
                              path, _line(item))
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{what}: '{key}' is a secret and workspace.poly is committed: write "
                          f"{key}: {{secret: PATH}} (a key under config: in secrets.poly) or {key}: {{env: NAME}}, "
                          "not the value", path, line)
    if len(value) != 1 or next(iter(value)) not in allowed_keys("secret_ref.secret") | allowed_keys("secret_ref.env"):
        raise ConfigError(f"{what}: '{key}' takes one of {{secret: PATH}} or {{env: NAME}}", path, line)
    source, name = next(iter(value.items()))
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{what}: '{key}': {source} needs a name", path, line)
    name = name.strip()
    if source == "env" and not _ENV_RE.match(name):
        raise ConfigError(f"{what}: '{key}': {name!r} is not an environment variable name", path, line)
    if source == "secret" and any(not part for part in name.split(".")):
        raise ConfigError(f"{what}: '{key}': {name!r} is not a dotted key path such as notify.smtp_password",
                          path, line)
    return SecretRef(source, name, line)


def _http_url(item: dict[str, Any], key: str, what: str, path: Path) -> str:
    url = _string(item, key, path, required=True).strip().rstrip("/")
    if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0 or has_control(url):
        raise ConfigError(f"{what}: '{key}' must be an http:// or https:// URL, not {url!r}", path, _line(item, key))
    return url


def parse_notification(raw: Any, path: Path) -> Notification:
    """One entry of `notifications:` (see the README's alerts section for each type's keys)."""
    item = _expect_map(raw, "a notification", path, _line(raw))
    name = validate_name(item.get("name"), "notification", path, _line(item, "name"))
    what = f"notification '{name}'"
    kind = item.get("type")
    if kind not in NOTIFICATION_TYPES:
        raise ConfigError(f"{what}: 'type' must be one of {', '.join(NOTIFICATION_TYPES)}, not {kind!r}", path,
                          _line(item, "type") or _line(item))
    on = _on_events(item, what, path)
    _check_keys(item, allowed_keys(f"notification.{kind}"), f"{what} (type {kind})", path)
    timeout = _number(item, "timeout", path, positive=True)
    if timeout is not None and timeout > MAX_NOTIFY_TIMEOUT:
        raise ConfigError(f"{what}: 'timeout' is at most {MAX_NOTIFY_TIMEOUT} seconds: a notification delays the "
                          "end of its run", path, _line(item, "timeout"))
    fields: dict[str, Any] = {"name": name, "type": kind, "on": on, "line": _line(item)}
    if timeout is not None:
        fields["timeout"] = float(timeout)
    if kind in CHAT_WEBHOOK_TYPES:
        fields["url"] = parse_secret_ref(item, "url", what, path)
    elif kind == "matrix":
        fields["homeserver"] = _http_url(item, "homeserver", what, path)
        room = _string(item, "room", path, required=True).strip()
        if room.startswith("#"):
            raise ConfigError(f"{what}: 'room' needs the room's ID (!...:server, in Element under Room settings, "
                              f"Advanced), not its alias {room!r}", path, _line(item, "room"))
        if not room.startswith("!") or ":" not in room or has_control(room) or " " in room:
            raise ConfigError(f"{what}: 'room' must be a Matrix room ID such as !abcdef:example.org, not {room!r}",
                              path, _line(item, "room"))
        fields["room"] = room
        fields["token"] = parse_secret_ref(item, "token", what, path)
    else:
        fields.update(_email_fields(item, what, path))
    return Notification(**fields)


def _email_fields(item: dict[str, Any], what: str, path: Path) -> dict[str, Any]:
    host = item.get("host")
    if host is None:
        raise ConfigError(f"{what}: missing required key 'host'", path, _line(item))
    if not isinstance(host, str) or not (_HOST_RE.match(host) or _IPV6_RE.match(host)):
        raise ConfigError(f"{what}: 'host' must be the SMTP server's host name or address, not {host!r}", path,
                          _line(item, "host"))
    security = _string(item, "security", path, default="starttls")
    if security not in SMTP_SECURITY:
        raise ConfigError(f"{what}: 'security' must be one of {', '.join(SMTP_SECURITY)}, not {security!r}", path,
                          _line(item, "security"))
    port = item.get("port", SMTP_SECURITY[security])
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"{what}: 'port' must be a port number 1-65535, not {port!r}", path, _line(item, "port"))
    username = item.get("username")
    if username is not None and (not isinstance(username, str) or not username.strip()
                                 or username != username.strip() or has_control(username)):
        raise ConfigError(f"{what}: 'username' must be the login name as text, not {username!r}", path,
                          _line(item, "username"))
    password = parse_secret_ref(item, "password", what, path, required=False)
    if password is not None and username is None:
        raise ConfigError(f"{what}: 'password' needs 'username'", path, _line(item, "password"))
    if username is not None and password is None:
        raise ConfigError(f"{what}: 'username' needs 'password' ({{secret: PATH}} or {{env: NAME}})", path,
                          _line(item, "username"))
    if username is not None and security == "none":
        raise ConfigError(f"{what}: a login with security: none would send the password unencrypted: use "
                          "security: starttls (port 587) or tls (port 465)", path, _line(item, "security")
                          or _line(item, "username"))

    def address(value: Any, key: str) -> str:
        if not isinstance(value, str) or not _ADDRESS_RE.match(value.strip()):
            raise ConfigError(f"{what}: '{key}' must be a mail address such as ops@example.com, not {value!r}",
                              path, _line(item, key))
        return value.strip()

    sender = address(item.get("from"), "from")
    to = item.get("to")
    if isinstance(to, str):
        to = [to]
    to = _expect_list(to, f"{what}: 'to'", path, _line(item, "to"))
    if not to:
        raise ConfigError(f"{what}: 'to' needs at least one mail address", path, _line(item, "to") or _line(item))
    ca_file = _string(item, "ca_file", path) or None
    if ca_file is not None:
        ca_file = str((path.parent / ca_file) if not ca_file.startswith("/") else Path(ca_file))
    return {"host": host, "port": port, "security": security, "username": username, "password": password,
            "sender": sender, "to": tuple(address(x, "to") for x in to), "ca_file": ca_file}


def parse_run_settings(raw: dict[str, Any], path: Path) -> RunSettings:
    """`history: {keep_runs, keep_days}`, `webhooks: [{url, headers, on}]`, `notifications: [{name, type,
    on, ...}]`, `metrics: {path, enabled}`."""
    history = _expect_map(raw.get("history"), "history", path, _line(raw, "history"))
    _check_keys(history, allowed_keys("history"), "history", path)
    webhooks = []
    for item in _expect_list(raw.get("webhooks"), "webhooks", path, _line(raw, "webhooks")):
        hook = _expect_map(item, "a webhook", path, _line(raw, "webhooks"))
        on = _on_events(hook, "webhook", path)
        _check_keys(hook, allowed_keys("webhook"), "webhook", path)
        url = _string(hook, "url", path, required=True)
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"webhook url must start with http:// or https://: {url!r}", path, _line(hook, "url"))
        headers = _expect_map(hook.get("headers"), "webhook headers", path, _line(hook, "headers"))
        webhooks.append(Webhook(url, tuple((str(k), str(v)) for k, v in headers.items()), on))
    notifications = _named_items(
        _expect_list(raw.get("notifications"), "notifications", path, _line(raw, "notifications")),
        parse_notification, "notification", path,
    )
    metrics = _expect_map(raw.get("metrics"), "metrics", path, _line(raw, "metrics"))
    _check_keys(metrics, allowed_keys("metrics"), "metrics", path)
    enabled = metrics.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("'enabled' must be true or false", path, _line(metrics, "enabled"))
    return RunSettings(
        keep_runs=_number(history, "keep_runs", path, integer=True, positive=True),
        keep_days=_number(history, "keep_days", path, positive=True),
        webhooks=tuple(webhooks),
        notifications=tuple(notifications.values()),
        metrics_path=_string(metrics, "path", path) or None,
        metrics_enabled=enabled,
    )


WORKSPACE_KEYS = allowed_keys("workspace")


# --- workspace.poly --------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkspaceFile:
    """workspace.poly, every section checked; its block entries are not yet resolved (workspace.py)."""

    file: Path
    name: str
    organization: str
    description: str
    entries: dict[str, BlockEntry]
    workflows: dict[str, Workflow]
    config: dict[str, Any]
    run_settings: RunSettings
    registries: Registries
    recipients: tuple[str, ...]
    toolchain: Toolchain
    labels: dict[str, str]
    dependencies: tuple[str, ...]
    inventory_file: str
    kubeconfig_file: str | None
    go: dict[str, Any] = field(default_factory=dict)  # parse_go_workspace: Workspace fields of Polycrate's


def parse_dependencies(raw: dict[str, Any], path: Path, default_registry: Any = None) -> tuple[str, ...]:
    """`dependencies:`: a list of registry block references (`registry/path:version`), as in Polycrate;
    a short one (`acme/infra/block:0.1.0`) in full with the default registry (config/hubref.py)."""
    items = _expect_list(raw.get("dependencies"), "dependencies", path, _line(raw, "dependencies"))
    if not items:
        return ()
    from polycrate.config.refs import is_registry_reference

    lines = raw.lines_of_items("dependencies") if isinstance(raw, LineMap) else [None] * len(items)
    result: list[str] = []
    for item, line in zip(items, lines, strict=False):
        if not isinstance(item, str) or not item.strip() or has_control(item):
            hint = (" (a trailing ':' makes YAML read a mapping: write the version)"
                    if isinstance(item, dict) and len(item) == 1 and None in item.values() else "")
            raise ConfigError("each of 'dependencies' is a block reference such as "
                              f"registry.acme-corp.com/acme/infra/linux-maintenance:0.1.0{hint}", path, line)
        from polycrate.config.hubref import expand

        item = expand(item.strip(), default_registry, "dependencies", path, line)
        check_reference(item, "dependencies", path, line)
        if not is_registry_reference(item):
            raise ConfigError(f"dependencies: {item!r} is not a registry reference (REGISTRY/PATH[:VERSION], "
                              "such as registry.acme-corp.com/acme/infra/linux-maintenance:0.1.0)", path, line)
        if item in result:
            raise ConfigError(f"dependencies: {item!r} is listed twice", path, line)
        result.append(item)
    return tuple(result)


def _workspace_file(raw: dict[str, Any], key: str, path: Path, default: str | None) -> str | None:
    """`inventory: {filename: ...}` / `kubeconfig: {filename: ...}` of workspace.poly: a file in the workspace."""
    value = _expect_map(raw.get(key), key, path, _line(raw, key))
    _check_keys(value, allowed_keys("workspace_file"), key, path)
    filename = value.get("filename")
    if filename is None:
        return default
    if (not isinstance(filename, str) or not filename.strip() or filename.startswith("/")
            or ".." in Path(filename).parts or has_control(filename)):
        raise ConfigError(f"{key}.filename must be a file inside the workspace, not {filename!r}", path,
                          _line(value, "filename"))
    return filename


def read_workspace_file(root: Path) -> WorkspaceFile:
    file = root / WORKSPACE_FILE
    raw = _expect_map(load_yaml(file), WORKSPACE_FILE, file, 1)
    _check_keys(raw, WORKSPACE_KEYS, WORKSPACE_FILE, file)
    name = validate_name(raw.get("name"), "workspace", file, _line(raw, "name"))
    entries = _named_items(
        _expect_list(raw.get("blocks"), "blocks", file, _line(raw, "blocks")), parse_block_entry, "block", file
    )
    workflows = _named_items(
        _expect_list(raw.get("workflows"), "workflows", file, _line(raw, "workflows")), parse_workflow, "workflow",
        file,
    )
    config = _expect_map(raw.get("config"), "config", file, _line(raw, "config"))
    registries = parse_registries(raw, file)
    default_registry = registry_default(registries)
    entries = {name: _expanded_entry(entry, default_registry, file) for name, entry in entries.items()}
    return WorkspaceFile(
        file=file,
        name=name,
        organization=_string(raw, "organization", file),
        description=_string(raw, "description", file),
        entries=entries,
        workflows=workflows,
        config=config,
        run_settings=parse_run_settings(raw, file),
        registries=registries,
        recipients=tuple(check_recipients(raw, file)),
        toolchain=parse_toolchain(config, file),
        labels=parse_labels(raw.get("labels"), "", file, _line(raw, "labels")),
        dependencies=parse_dependencies(raw, file, default_registry),
        inventory_file=_workspace_file(raw, "inventory", file, "inventory.yml") or "inventory.yml",
        kubeconfig_file=_workspace_file(raw, "kubeconfig", file, None),
        go=parse_go_workspace(raw, config, file),
    )


def registry_default(registries: Registries) -> Callable[[], str | None]:
    """The default registry of short references, looked up when first needed: workspace.poly's
    `registries.default`, else the host's (config/hubref.py)."""
    from polycrate.config.hubref import host_default_registry

    return lambda: registries.default or host_default_registry()


def _expanded_entry(entry: BlockEntry, default_registry: Callable[[], str | None], file: Path) -> BlockEntry:
    """A short `from:` in full when a default registry is set; else as written (a folder under blocks/
    or a block's name, as before hub references)."""
    from polycrate.config.hubref import is_short

    if entry.source is None or not is_short(entry.source):
        return entry
    registry = default_registry()
    if not registry:
        return entry
    import dataclasses

    return dataclasses.replace(entry, source=f"{registry}/{entry.source}")


def _relative_folder(config: dict[str, Any], key: str, path: Path, default: str) -> str:
    value = config.get(key)
    if value is None or value == "":
        return default
    if (not isinstance(value, str) or value.startswith("/") or ".." in Path(value).parts or has_control(value)
            or Path(value).as_posix() in (".", "")):
        raise ConfigError(f"config.{key} must be a folder inside the workspace, such as {default}, not {value!r}",
                          path, _line(config, key))
    return Path(value).as_posix()


def parse_go_workspace(raw: dict[str, Any], config: dict[str, Any], path: Path) -> dict[str, Any]:
    """The fields of Polycrate's Workspace and WorkspaceConfig that have an effect here (the keyword
    arguments of model.Workspace): alias, events, extraenv, extramounts, meta, sync, the roots, the keys;
    and the warnings for those without (workspace_warnings)."""
    from polycrate.config.action_env import parse_env
    from polycrate.config.model import EventSettings, Layout, SyncSettings
    from polycrate.errors import PolycrateError

    check_alias(raw, path)
    events = _expect_map(raw.get("events"), "events", path, _line(raw, "events"))
    _check_keys(events, allowed_keys("events"), "events", path)
    handler = events.get("handler")
    if handler is not None and handler not in ("workspace", "webhook"):
        raise ConfigError(f"events.handler must be workspace or webhook, not {handler!r}", path,
                          _line(events, "handler"))
    endpoint = _string(events, "endpoint", path) or None
    if handler == "webhook" and not (endpoint or "").startswith(("http://", "https://")):
        raise ConfigError("events.handler webhook needs events.endpoint, an http:// or https:// URL", path,
                          _line(events, "endpoint") or _line(events, "handler"))
    env: list[tuple[str, str]] = []
    lines = raw.lines_of_items("extraenv") if isinstance(raw, LineMap) and "extraenv" in raw else []
    for index, item in enumerate(_expect_list(raw.get("extraenv"), "extraenv", path, _line(raw, "extraenv"))):
        line = lines[index] if index < len(lines) else _line(raw, "extraenv")
        if not isinstance(item, str):
            raise ConfigError(f"each of 'extraenv' is KEY=value, not {item!r}", path, line)
        try:
            env.append(parse_env(item))
        except PolycrateError as exc:
            raise ConfigError(exc.message.replace("-e/--env", "extraenv"), path, line) from None
    mounts: list[str] = []
    lines = raw.lines_of_items("extramounts") if isinstance(raw, LineMap) and "extramounts" in raw else []
    for index, item in enumerate(_expect_list(raw.get("extramounts"), "extramounts", path,
                                              _line(raw, "extramounts"))):
        line = lines[index] if index < len(lines) else _line(raw, "extramounts")
        parts = item.split(":") if isinstance(item, str) else []
        if not 2 <= len(parts) <= 3 or not all(parts[:2]) or not parts[1].startswith("/") or (
                len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise ConfigError(f"each of 'extramounts' is /host:/container[:ro], not {item!r}", path, line)
        mounts.append(item)
    sync = _expect_map(raw.get("sync"), "sync", path, _line(raw, "sync"))
    _check_keys(sync, allowed_keys("sync"), "sync", path)
    remote = _expect_map(sync.get("remote"), "sync.remote", path, _line(sync, "remote"))
    _check_keys(remote, allowed_keys("sync_remote"), "sync.remote", path)
    branch = _expect_map(remote.get("branch"), "sync.remote.branch", path, _line(remote, "branch"))
    _check_keys(branch, allowed_keys("sync_branch"), "sync.remote.branch", path)
    meta = _expect_map(raw.get("meta"), "meta", path, _line(raw, "meta"))
    for key in ("sshprivatekey", "sshpublickey"):
        value = config.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip() or has_control(value)):
            raise ConfigError(f"config.{key} must be a file name (relative to the workspace), not {value!r}",
                              path, _line(config, key))
    layout = Layout(
        blocks_root=_relative_folder(config, "blocksroot", path, "blocks"),
        artifacts_root=_relative_folder(config, "artifactsroot", path, "artifacts"),
        logs_root=_relative_folder(config, "logsroot", path, ".logs"),
        ssh_private_key=config.get("sshprivatekey") or None,
        ssh_public_key=config.get("sshpublickey") or None,
    )
    return {
        "alias": tuple(raw.get("alias") or ()),
        "events": EventSettings(handler, endpoint),
        "extra_env": tuple(env),
        "extra_mounts": tuple(mounts),
        "meta": plain(meta),
        "version": _text_or_nothing(raw.get("version")),
        "sync": SyncSettings(_string(remote, "name", path) or None, _string(branch, "name", path) or None),
        "layout": layout,
        "warnings": tuple(workspace_warnings(raw, path)),
    }



def parse_toolchain(config: dict[str, Any], path: Path) -> Toolchain:
    """`config.runtime`, `config.engine` and `config.image`."""
    runtime, engine, image = config.get("runtime"), config.get("engine"), config.get("image")
    if runtime is not None and runtime not in RUNTIMES:
        raise ConfigError(f"config.runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}", path,
                          _line(config, "runtime"))
    if engine is not None and engine not in ENGINES:
        raise ConfigError(f"config.engine must be one of {', '.join(ENGINES)}, not {engine!r}", path,
                          _line(config, "engine"))
    if isinstance(image, dict) and set(image) <= allowed_keys("image") and isinstance(image.get("reference"), str):
        # Polycrate's form: `image: {reference: cargo.ayedo.cloud/library/polycrate, version: latest}`
        version = image.get("version")
        image = image["reference"].strip() + (f":{version}" if version not in (None, "") else "")
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise ConfigError("config.image must be an image reference such as localhost/polycrate-base:latest", path,
                          _line(config, "image"))
    return Toolchain(runtime, engine, image.strip() if image is not None else None)


def parse_registries(raw: dict[str, Any], path: Path) -> Registries:
    """`registries: {NAME: {mirror: HOST[:PORT], insecure: true}}`."""
    registries = raw.get("registries")
    if registries is None:
        return Registries()
    if not isinstance(registries, dict):
        raise ConfigError("'registries' must be a mapping of registry name -> settings", path,
                          _line(raw, "registries"))
    mirrors: list[tuple[str, str]] = []
    insecure: set[str] = set()
    default = None
    for name, settings in registries.items():
        if name == "default" and not isinstance(settings, dict):  # the registry of short references
            from polycrate.config.refs import looks_like_host

            host = str(settings or "").strip().removeprefix("https://").removeprefix("http://").rstrip("/")
            if not looks_like_host(host):
                raise ConfigError(f"registries.default must be a registry host such as cargo.ayedo.cloud, not "
                                  f"{settings!r}", path, _line(registries, name))
            default = host
            continue
        if not isinstance(settings, dict):
            raise ConfigError(f"registries.{name} must be a mapping (mirror, insecure)", path,
                              _line(registries, name))
        for key in settings:
            if key not in allowed_keys("registry"):
                raise ConfigError(f"registries.{name}: unknown key {key!r} (known: insecure, mirror)", path,
                                  _line(settings, key))
        mirror = settings.get("mirror")
        if mirror is not None and (not isinstance(mirror, str) or not mirror.strip()):
            raise ConfigError(f"registries.{name}.mirror must be a host[:port]", path, _line(settings, "mirror"))
        if mirror:
            mirrors.append((str(name), mirror.strip()))
        if not isinstance(settings.get("insecure", False), bool):
            raise ConfigError(f"registries.{name}.insecure must be true or false", path, _line(settings, "insecure"))
        if settings.get("insecure") is True:
            insecure.add(str(name))
    return Registries(tuple(mirrors), frozenset(insecure), default)


RECIPIENT_PREFIX = "age1"


def check_recipients(raw: Any, path: Path) -> list[str]:
    """The shape of ``encryption.recipients`` of workspace.poly (checked at every load; the keys'
    syntax is checked by pyrage when they are used): age public keys, and never a secret key."""
    encryption = raw.get("encryption") if isinstance(raw, dict) else None
    if encryption is None:
        return []
    if not isinstance(encryption, dict):
        raise ConfigError("'encryption' must be a mapping with 'recipients'", path, _line(raw, "encryption"))
    _check_keys(encryption, allowed_keys("encryption"), "encryption", path)
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


# --- block.poly ------------------------------------------------------------------------------


def read_block_file(file: Path, blocks_dir: Path) -> BlockDefinition:
    """One block.poly; `blocks_dir` is the folder its path is relative to (blocks/, or a staging folder)."""
    return parse_block_definition(load_yaml(file), file, blocks_dir)


def block_version(file: Path) -> str | None:
    """The `version` a block.poly declares, without checking the rest (what is being replaced)."""
    raw = load_yaml(file)
    return str(raw.get("version") or "") or None if isinstance(raw, dict) else None


# --- schedules ------------------------------------------------------------------------------

SCHEDULE_KEYS = declared_keys("schedule")
_USER_RE = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|[0-9]{1,10})$")


def parse_schedule(
    raw: Any,
    workflow: str,
    path: Path | str | None = None,
    line: int | None = None,
    origin: str = ORIGIN_WORKSPACE,
) -> Schedule | None:
    """Validate ``workflows[].schedule`` (a string or a mapping) into a Schedule; None when absent.

    Every problem is a ConfigError naming ``path`` and the line of the offending key where known.
    """
    if raw is None:
        return None
    # the time rules live in schedule/ (loaded only for a workspace that declares a schedule)
    from polycrate.timespec.cron import looks_like_cron, validate_cron
    from polycrate.timespec.oncalendar import validate_calendar
    from polycrate.timespec.times import ScheduleError, parse_timespan

    def fail(message: str, key: str | None = None) -> ConfigError:
        where = (_line(raw, key) if key is not None and isinstance(raw, LineMap) else None) or line
        return ConfigError(f"workflow '{workflow}': schedule: {message}", path, where)

    if isinstance(raw, str):
        text = raw.strip()
        if not text:
            raise fail("empty expression")
        raw_map: dict[str, Any] = {"cron" if looks_like_cron(text) else "on_calendar": text}
    elif isinstance(raw, dict):
        raw_map = raw
        for key in raw_map:
            if key not in SCHEDULE_KEYS:
                raise fail(f"unknown key '{key}' (known: {', '.join(SCHEDULE_KEYS)})", key)
    else:
        raise fail(f"must be an OnCalendar/cron string or a mapping, not {type(raw).__name__}")

    kinds = [k for k in ("on_calendar", "cron") if raw_map.get(k) is not None]
    if len(kinds) != 1:
        raise fail("give exactly one of 'on_calendar' or 'cron'")
    kind = kinds[0]
    expression = raw_map[kind]
    if not isinstance(expression, str) or not expression.strip():
        raise fail(f"'{kind}' must be a non-empty string", kind)
    expression = " ".join(expression.split())
    try:
        if kind == "cron":
            validate_cron(expression)
        else:
            validate_calendar(expression)
    except ScheduleError as exc:
        raise fail(str(exc), kind) from None

    def span(key: str, minimum: int) -> int | None:
        value = raw_map.get(key)
        if value is None:
            return None
        try:
            seconds = parse_timespan(value)
        except ScheduleError as exc:
            raise fail(f"'{key}': {exc}", key) from None
        if seconds < minimum:
            raise fail(f"'{key}' must be at least {minimum} seconds", key)
        return seconds

    def name(key: str) -> str | None:
        value = raw_map.get(key)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not _USER_RE.match(value):
            raise fail(f"'{key}' must be a user/group name or number, not {value!r}", key)
        return value

    persistent = raw_map.get("persistent", True)
    if not isinstance(persistent, bool):
        raise fail("'persistent' must be true or false", "persistent")
    log_file = raw_map.get("log_file")
    if log_file is not None:
        if not isinstance(log_file, str) or not log_file.startswith("/") or has_control(log_file):
            raise fail("'log_file' must be an absolute path", "log_file")
    return Schedule(
        workflow=workflow,
        kind=kind,
        expression=expression,
        randomized_delay=span("randomized_delay", 0),
        user=name("user"),
        group=name("group"),
        persistent=persistent,
        persistent_set="persistent" in raw_map,
        timeout=span("timeout", 1),
        log_file=log_file,
        line=line,
        origin=origin,
    )


def has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


# --- secrets.poly ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretBlock:
    name: str
    config: dict[str, Any]
    line: int | None


@dataclass(frozen=True)
class SecretsFile:
    """secrets.poly (decrypted): what merges over workspace.poly, and every value (for masking)."""

    file: str
    config: dict[str, Any]
    blocks: tuple[SecretBlock, ...]
    values: dict[str, Any]  # the whole document as plain data


def parse_secrets(text: str, where: str | Path) -> SecretsFile:
    """secrets.poly's text (after decryption): `config:` and `blocks: [{name, config}]`."""
    raw = parse_yaml(text, where)
    if raw is None:
        raw = LineMap()
    if not isinstance(raw, dict):
        raise ConfigError("secrets.poly must be a mapping", where)
    entries = raw.get("blocks") or []
    if not isinstance(entries, list):
        raise ConfigError("'blocks' in secrets.poly must be a list", where, _line(raw, "blocks"))
    blocks = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ConfigError("each entry of 'blocks' in secrets.poly must be a mapping with 'name' and 'config'",
                              where, _line(raw, "blocks"))
        name = entry.get("name")
        if not isinstance(name, str):
            raise ConfigError(f"secrets.poly names block {name!r}: a block entry needs its 'name'", where,
                              _line(entry))
        if not isinstance(entry.get("config") or {}, dict):
            raise ConfigError(f"'config' of block '{name}' in secrets.poly must be a mapping", where, _line(entry))
        blocks.append(SecretBlock(name, plain(entry.get("config") or {}), _line(entry)))
    if not isinstance(raw.get("config") or {}, dict):
        raise ConfigError("'config' in secrets.poly must be a mapping", where, _line(raw, "config"))
    return SecretsFile(str(where), plain(raw.get("config") or {}), tuple(blocks), plain(raw))
