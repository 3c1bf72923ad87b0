"""Reading workspace.poly, block.poly and secrets.poly: the declared check, then the rules it cannot say.

Each file is read once (through ``yamlfile``, which keeps the line of every key and
enforces the loader's limits), checked against its declaration (``config/declarations.py``) by the
generic check of ``config/validate.py`` (types, required keys, bounds, patterns, unknown keys), and
turned into the frozen models of ``polycrate.config.model``. What a declaration cannot say is written
here, each rule a named function or a commented block (names unique in a list, keys that need each
other, references, schedules and time spans, templates, folders inside the workspace). Every error is
a ``ConfigError`` naming the file and the line:

* workspace.poly (``read_workspace_file``): name, ``blocks`` entries, ``workflows`` with
  their steps, prompts and ``schedule``, ``config`` with its toolchain keys (``runtime``,
  ``engine``, ``image``), ``registries``, ``encryption``, ``webhooks``, ``notifications``, ``history``, ``metrics``;
* block.poly (``read_block_file``): name, version, config, actions;
* secrets.poly (``parse_secrets``): ``config`` and ``blocks: [{name, config}]``.

No other module reads a ``.poly`` file or looks at YAML line numbers. Checks that need
more than one file (a step naming an unknown block, `from:` resolution) are workspace.py's.
"""
from __future__ import annotations

from dataclasses import field
from pathlib import Path
from collections.abc import Callable
from typing import Any

from polycrate.errors import ConfigError
from polycrate.config.declarations import declared_keys
from polycrate.config.model import (
    ORIGIN_WORKSPACE,
    KIND_DEFAULT,
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
from polycrate.config.validate import Explain, check_field, check_file
from polycrate.config.yamlfile import LineMap, load_yaml, parse_yaml, plain
from polycrate.config.record import Record, record

WORKSPACE_FILE = "workspace.poly"
BLOCK_FILE = "block.poly"
SECRETS_FILE = "secrets.poly"

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





# --- the shapes every file shares ------------------------------------------------------------


def _line(mapping: Any, key: str | None = None) -> int | None:
    if isinstance(mapping, LineMap):
        return mapping.line_of(key) if key else mapping.line
    return None


def _map(value: Any) -> dict[str, Any]:
    """A checked mapping (None: an empty one)."""
    return LineMap() if value is None else value




def _text(mapping: dict[str, Any], key: str, default: str = "") -> str:
    """A checked text value: a number written as text is its text (`version: 1.0`)."""
    value = mapping.get(key)
    return default if value is None else str(value)


def _text_or_nothing(value: Any) -> str:
    """A key declared "for people; not read" that we now show: its text, or nothing when it is not text."""
    return str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""




def _bool(mapping: dict[str, Any], key: str, default: bool = False) -> bool:
    value = mapping.get(key)
    return default if value is None else bool(value)


def parse_prompt(value: Any) -> Prompt | None:
    """A checked `prompt:`: the message, or {message: ...}."""
    if value is None:
        return None
    return Prompt(str(value["message"]) if isinstance(value, dict) else value)


def parse_action(mapping: Any, path: Path) -> Action:
    """A checked `actions:` entry. The rules between its keys: script or playbook, not both; the type
    (written, or taken from which of the two is there) needs its key."""
    name = mapping["name"]
    if mapping.get("script") is not None and mapping.get("playbook") is not None:
        # Polycrate's `excluded_with`: which of the two would run is not for us to guess
        raise ConfigError(f"action '{name}' has both 'script' and 'playbook': an action is one or the other "
                          "(make two actions)", path, _line(mapping, "playbook"))
    kind = mapping.get("type") or ("ansible" if mapping.get("playbook") is not None else "script")
    playbook = None
    script: tuple[str, ...] = ()
    script_lines: tuple[int | None, ...] = ()
    if kind == "ansible":
        playbook = _text(mapping, "playbook")
        if not playbook:
            raise ConfigError(f"action '{name}': type ansible needs 'playbook'", path, _line(mapping))
    else:
        lines = mapping.get("script")
        if lines is None:
            raise ConfigError(f"action '{name}': type script needs 'script', a non-empty list of shell lines", path,
                              _line(mapping))
        if isinstance(lines, str):
            lines, script_lines = [lines], (_line(mapping, "script"),)
        else:
            script_lines = tuple(mapping.lines_of_items("script")) if isinstance(mapping, LineMap) else ()
        script = tuple(lines)
        script_lines = script_lines if len(script_lines) == len(script) else (_line(mapping, "script"),) * len(script)
        for index, (text, line) in enumerate(zip(script, script_lines, strict=False), 1):
            check_template(text, f"action '{name}', script line {index}", path, line)
    return Action(
        name=name,
        type=kind,
        description=_text(mapping, "description"),
        playbook=playbook,
        script=script,
        prompt=parse_prompt(mapping.get("prompt")),
        line=_line(mapping),
        script_lines=script_lines if kind == "script" else (),
        file=Path(path) if path is not None else None,
        labels=parse_labels(mapping.get("labels")),
        interactive=_bool(mapping, "interactive"),
        config=plain(_map(mapping.get("config"))),
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






def parse_labels(value: Any) -> dict[str, str]:
    """Checked `labels:` as Polycrate's map[string]string: numbers and booleans as YAML writes them (1,
    true), an empty value as ""."""
    labels: dict[str, str] = {}
    for key, item in _map(value).items():
        labels[key] = "" if item is None else ("true" if item else "false") if isinstance(item, bool) else str(item)
    return labels


def parse_file_from(value: Any, path: Path, line: int | None) -> FileFrom | None:
    """A checked `inventory:` / `kubeconfig:` of a block: `{from: BLOCK}` and/or `{filename: NAME}` (in the
    block's artifacts folder), as in Polycrate; a plain string is `from`."""
    if value is None:
        return None
    if isinstance(value, str):
        return FileFrom(filename=None, source=value, line=line, file=path)
    return FileFrom(filename=value.get("filename"), source=value.get("from"), line=line, file=path)


def _kind(mapping: dict[str, Any]) -> str:
    """`kind`: one word (checked). Polycrate's kinds (model.KINDS) are conventions, not a closed list."""
    return mapping.get("kind") or KIND_DEFAULT


def _named_items(items: Any, parse: Callable[[Any, Path], Any], what: str, path: Path) -> dict[str, Any]:
    """The rule of names unique in a list (steps of a workflow, actions of a block, ...)."""
    result: dict[str, Any] = {}
    for raw in items or ():
        item = parse(raw, path)
        if item.name in result:
            raise ConfigError(f"duplicate {what} '{item.name}'", path, item.line)
        result[item.name] = item
    return result


def parse_block_definition(raw: Any, file: Path, blocks_dir: Path) -> BlockDefinition:
    check_file(raw, BLOCK_FILE, file, EXPLAIN)
    mapping = _map(raw)
    name = mapping["name"]
    actions = _named_items(mapping.get("actions"), parse_action, "action", file)
    folder = file.parent
    return BlockDefinition(
        name=name,
        version=_text(mapping, "version", default="0.0.0"),
        kind=_kind(mapping),
        description=_text(mapping, "description"),
        config=_map(mapping.get("config")),
        actions=actions,
        folder=folder,
        file=file,
        relpath=folder.relative_to(blocks_dir).as_posix(),
        parent=_text(mapping, "from") or None,
        parent_line=_line(mapping, "from"),
        template=_bool(mapping, "template"),
        template_line=_line(mapping, "template"),
        labels=parse_labels(mapping.get("labels")),
        inventory=parse_file_from(mapping.get("inventory"), file, _line(mapping, "inventory")),
        kubeconfig=parse_file_from(mapping.get("kubeconfig"), file, _line(mapping, "kubeconfig")),
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


def parse_block_entry(mapping: Any, path: Path) -> BlockEntry:
    """A checked `blocks:` entry of workspace.poly: as in Polycrate, the whole block: it configures an
    installed block (by name or `from:`), completes it (actions, kind, version ... over the installed
    block.poly's), or defines a block of its own with its `actions:`."""
    name = mapping["name"]
    actions = _named_items(mapping.get("actions"), parse_action, f"action of block '{name}'", path)
    return BlockEntry(
        name=name, source=mapping.get("from"), config=_map(mapping.get("config")), line=_line(mapping),
        labels=parse_labels(mapping.get("labels")),
        inventory=parse_file_from(mapping.get("inventory"), path, _line(mapping, "inventory")),
        kubeconfig=parse_file_from(mapping.get("kubeconfig"), path, _line(mapping, "kubeconfig")),
        actions=actions,
        kind=_kind(mapping) if mapping.get("kind") else None,
        version=_text(mapping, "version") or None,
        description=_text_or_nothing(mapping.get("description")),
        template=_bool(mapping, "template") if "template" in mapping else None,
        alias=tuple(mapping.get("alias") or ()),
        type=_text_or_nothing(mapping.get("type")),
        flavor=_text_or_nothing(mapping.get("flavor")),
    )


# consumer (time.monotonic arithmetic, threading timeouts, SQLite integers, time spans).




def check_reference(reference: str, what: str, path: Path, line: int | None) -> None:
    """A `from:` reference: `name`, `registry/path` or `registry/path:version`, never an empty version."""
    said = _empty_version(reference)
    if said:
        raise ConfigError(f"{what}: {said}", path, line)


def _empty_version(reference: str) -> str | None:
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash and not reference[colon + 1:].strip():
        return (f"'from: {reference}' ends in ':' with no version: write the version ({reference}0.1.0) or drop "
                "the ':' to take the installed one")
    return None


def _explain_reference(value: Any) -> str | None:
    """A refused `from:`: one ending in ':' says how to write it."""
    if isinstance(value, str) and value.strip():
        return _empty_version(value.strip())
    return "must be a block reference string (a name or REGISTRY/PATH[:VERSION])"


def _explain_dependency(item: Any) -> str | None:
    """A refused entry of `dependencies:` says what a registry reference is, and why this is not one."""
    if isinstance(item, dict) and len(item) == 1 and None in item.values():
        return ("is a block reference such as registry.acme-corp.com/acme/infra/linux-maintenance:0.1.0 (a "
                "trailing ':' makes YAML read a mapping: write the version)")
    if isinstance(item, str) and _empty_version(item.strip()):
        return f"{item!r}: ends in ':' with no version: write the version or drop the ':'"
    return (f"{_short(item)!r} is not a registry reference (REGISTRY/PATH[:VERSION], such as "
            "registry.acme-corp.com/acme/infra/linux-maintenance:0.1.0)")


def _explain_recipient(item: Any) -> str | None:
    """A refused `encryption.recipients` entry: a secret key written there is said so (never shown)."""
    if isinstance(item, str) and item.strip().upper().startswith("AGE-SECRET-KEY"):
        return ("holds an age SECRET key (AGE-SECRET-KEY-...), a private key in a file that is committed: list "
                "public keys (age1...) only, and replace that key")
    return "entries must be age public keys (age1...)"


def _short(value: Any) -> Any:
    return value[:80] + "..." if isinstance(value, str) and len(value) > 80 else value


# the words of the few refusals that depend on the value (config/validate.py asks these first)
EXPLAIN: Explain = {
    ("block", "from"): _explain_reference,
    ("block_entry", "from"): _explain_reference,
    ("workspace", "dependencies"): _explain_dependency,
    ("encryption", "recipients"): _explain_recipient,
}


def parse_step(mapping: Any, path: Path) -> Step:
    """A checked step of a workflow (or of its on_failure)."""
    timeout = mapping.get("timeout")
    return Step(
        mapping["name"],
        mapping["block"],
        mapping["action"],
        _bool(mapping, "allow_failure"),
        _line(mapping),
        timeout=timeout,
        retries=mapping.get("retries") or 0,
        retry_delay=mapping.get("retry_delay") or 0.0,
        allow_no_hosts=_bool(mapping, "allow_no_hosts"),
        prompt=parse_prompt(mapping.get("prompt")),
        labels=parse_labels(mapping.get("labels")),
        description=_text_or_nothing(mapping.get("description")),
        alias=tuple(mapping.get("alias") or ()),
        slices=mapping.get("slices") or 1,
    )


def _launch(mapping: dict[str, Any], workflow: str, path: Path) -> Any:
    """The checked `launch:` declaration; its module is read only when a workflow declares one."""
    if mapping.get("launch") is None:
        return None
    from polycrate.config.launch_params import parse_declaration

    return parse_declaration(mapping.get("launch"), workflow, path, _line(mapping, "launch"))


def parse_workflow(mapping: Any, path: Path) -> Workflow:
    """A checked workflow. Its rules: step names unique, an on_failure step not named as a step, the
    schedule's expression and time spans (parse_schedule), the launch declaration (launch_params)."""
    name = mapping["name"]
    # a workflow without steps loads (as in Polycrate); running or inspecting it is refused (no_steps)
    steps = _named_items(mapping.get("steps"), parse_step, f"step in workflow '{name}'", path)
    if _bool(mapping, "allow_failure"):  # Polycrate's: every step may fail without stopping the workflow
        import dataclasses

        steps = {k: dataclasses.replace(v, allow_failure=True) for k, v in steps.items()}
    on_failure = _named_items(mapping.get("on_failure"), parse_step, f"on_failure step in workflow '{name}'", path)
    for step_name, step in on_failure.items():
        if step_name in steps:
            raise ConfigError(
                f"workflow '{name}': on_failure step '{step_name}' has the name of a step", path, step.line
            )
    schedule = mapping.get("schedule")
    return Workflow(
        name=name,
        description=_text(mapping, "description"),
        steps=tuple(steps.values()),
        prompt=parse_prompt(mapping.get("prompt")),
        schedule=plain(schedule),
        line=_line(mapping),
        on_failure=tuple(on_failure.values()),
        timer=parse_schedule(schedule, name, path, _line(mapping, "schedule"), checked=True),
        labels=parse_labels(mapping.get("labels")),
        alias=tuple(mapping.get("alias") or ()),
        allow_failure=bool(mapping.get("allow_failure")),
        launch=_launch(mapping, name, path),
        queue=mapping.get("queue") or "default",
    )




def _on_events(item: dict[Any, Any]) -> tuple[str, ...]:
    """A checked `on:` of a webhook or a notification (default: failure)."""
    on = item.get("on", "failure")
    return (on,) if isinstance(on, str) else tuple(on)




def parse_secret_ref(item: dict[str, Any], key: str) -> SecretRef | None:
    """A checked `{secret: PATH}` (PATH: a dotted key under `config:` of secrets.poly) or `{env: NAME}`."""
    value = item.get(key)
    if value is None:
        return None
    source, name = next(iter(value.items()))
    return SecretRef(source, name.strip(), _line(item, key))




def parse_notification(item: Any, path: Path) -> Notification:
    """A checked entry of `notifications:` (see the README's alerts section for each type's keys)."""
    name, kind = item["name"], item["type"]
    fields: dict[str, Any] = {"name": name, "type": kind, "on": _on_events(item), "line": _line(item)}
    if item.get("timeout") is not None:
        fields["timeout"] = float(item["timeout"])
    if kind in CHAT_WEBHOOK_TYPES:
        fields["url"] = parse_secret_ref(item, "url")
    elif kind == "matrix":
        fields["homeserver"] = item["homeserver"].strip().rstrip("/")
        fields["room"] = item["room"].strip()
        fields["token"] = parse_secret_ref(item, "token")
    else:
        fields.update(_email_fields(item, f"notification '{name}'", path))
    return Notification(**fields)


def _email_fields(item: dict[str, Any], what: str, path: Path) -> dict[str, Any]:
    """A checked email notification. Its rules: a login is username and password together, and never
    sent unencrypted; the port's default follows the security."""
    security = item.get("security") or "starttls"
    username = item.get("username")
    password = parse_secret_ref(item, "password")
    if password is not None and username is None:
        raise ConfigError(f"{what}: 'password' needs 'username'", path, _line(item, "password"))
    if username is not None and password is None:
        raise ConfigError(f"{what}: 'username' needs 'password' ({{secret: PATH}} or {{env: NAME}})", path,
                          _line(item, "username"))
    if username is not None and security == "none":
        raise ConfigError(f"{what}: a login with security: none would send the password unencrypted: use "
                          "security: starttls (port 587) or tls (port 465)", path, _line(item, "security")
                          or _line(item, "username"))
    to = item["to"]
    ca_file = _text(item, "ca_file") or None
    if ca_file is not None:
        ca_file = str((path.parent / ca_file) if not ca_file.startswith("/") else Path(ca_file))
    return {"host": item["host"], "port": item.get("port", SMTP_SECURITY[security]), "security": security,
            "username": username, "password": password, "sender": item["from"].strip(),
            "to": tuple(x.strip() for x in ([to] if isinstance(to, str) else to)), "ca_file": ca_file}


def parse_run_settings(raw: dict[str, Any], path: Path, checked: bool = False) -> RunSettings:
    """`history: {keep_runs, keep_days}`, `webhooks: [{url, headers, on}]`, `notifications: [{name, type,
    on, ...}]`, `metrics: {path, enabled}` (checked here unless `checked`, as read_workspace_file does)."""
    if not checked:
        for key in ("history", "webhooks", "notifications", "metrics"):
            if raw.get(key) is not None:
                check_field(raw[key], "workspace", key, path, _line(raw, key), explain=EXPLAIN)
    history = _map(raw.get("history"))
    webhooks = [Webhook(hook["url"], tuple((str(k), str(v)) for k, v in _map(hook.get("headers")).items()),
                        _on_events(hook)) for hook in raw.get("webhooks") or ()]
    notifications = _named_items(raw.get("notifications"), parse_notification, "notification", path)
    metrics = _map(raw.get("metrics"))
    return RunSettings(
        keep_runs=history.get("keep_runs"),
        keep_days=history.get("keep_days"),
        webhooks=tuple(webhooks),
        notifications=tuple(notifications.values()),
        metrics_path=_text(metrics, "path") or None,
        metrics_enabled=_bool(metrics, "enabled", default=True),
    )


CHAT_WEBHOOK_TYPES = ("slack", "mattermost", "teams")
SMTP_SECURITY = {"starttls": 587, "tls": 465, "none": 25}  # and the default port of each


# --- workspace.poly --------------------------------------------------------------------------


@record(frozen=True, eq=False, repr=False)
class WorkspaceFile(Record):
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
    """Checked `dependencies:` (registry block references, as in Polycrate) in full: a short one
    (`acme/infra/block:0.1.0`) with the default registry (config/hubref.py). The rules of references
    after that: a registry reference, a version if a ':' is written, none listed twice."""
    items = raw.get("dependencies") or []
    if not items:
        return ()
    from polycrate.config.hubref import expand
    from polycrate.config.refs import is_registry_reference

    lines = raw.lines_of_items("dependencies") if isinstance(raw, LineMap) else [None] * len(items)
    result: list[str] = []
    for item, line in zip(items, lines, strict=False):
        item = expand(item.strip(), default_registry, "dependencies", path, line)
        check_reference(item, "dependencies", path, line)
        if not is_registry_reference(item):
            raise ConfigError(f"dependencies: {item!r} is not a registry reference (REGISTRY/PATH[:VERSION], "
                              "such as registry.acme-corp.com/acme/infra/linux-maintenance:0.1.0)", path, line)
        if item in result:
            raise ConfigError(f"dependencies: {item!r} is listed twice", path, line)
        result.append(item)
    return tuple(result)


def _workspace_file(raw: dict[str, Any], key: str, default: str | None) -> str | None:
    """A checked `inventory: {filename: ...}` / `kubeconfig: {filename: ...}` of workspace.poly."""
    filename = _map(raw.get(key)).get("filename")
    return default if filename is None else filename


def read_workspace_file(root: Path) -> WorkspaceFile:
    file = root / WORKSPACE_FILE
    raw = load_yaml(file)
    check_file(raw, WORKSPACE_FILE, file, EXPLAIN)
    raw = _map(raw)
    entries = _named_items(raw.get("blocks"), parse_block_entry, "block", file)
    workflows = _named_items(raw.get("workflows"), parse_workflow, "workflow", file)
    config = _map(raw.get("config"))
    registries = parse_registries(raw, file)
    default_registry = registry_default(registries)
    entries = {name: _expanded_entry(entry, default_registry, file) for name, entry in entries.items()}
    return WorkspaceFile(
        file=file,
        name=raw["name"],
        organization=_text(raw, "organization"),
        description=_text(raw, "description"),
        entries=entries,
        workflows=workflows,
        config=config,
        run_settings=parse_run_settings(raw, file, checked=True),
        registries=registries,
        recipients=tuple(check_recipients(raw, file)),
        toolchain=parse_toolchain(config),
        labels=parse_labels(raw.get("labels")),
        dependencies=parse_dependencies(raw, file, default_registry),
        inventory_file=_workspace_file(raw, "inventory", "inventory.yml") or "inventory.yml",
        kubeconfig_file=_workspace_file(raw, "kubeconfig", None),
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
    """The rule of the roots (blocksroot ...): a folder inside the workspace."""
    value = config.get(key)
    if value is None or value == "":
        return default
    text = str(value)
    if text.startswith("/") or ".." in Path(text).parts or has_control(text) or Path(text).as_posix() in (".", ""):
        raise ConfigError(f"config.{key} must be a folder inside the workspace, such as {default}, not {value!r}",
                          path, _line(config, key))
    return Path(text).as_posix()


def parse_go_workspace(raw: dict[str, Any], config: dict[str, Any], path: Path) -> dict[str, Any]:
    """The checked fields of Polycrate's Workspace and WorkspaceConfig that have an effect here (the
    keyword arguments of model.Workspace): alias, events, extraenv, extramounts, meta, sync, the roots, the
    keys; and the warnings for those without (workspace_warnings). Their rules: the webhook event handler
    needs its endpoint; extraenv is KEY=value (action_env.parse_env); the roots are folders inside the
    workspace."""
    from polycrate.config.action_env import parse_env
    from polycrate.config.model import EventSettings, Layout, SyncSettings
    from polycrate.errors import PolycrateError

    events = _map(raw.get("events"))
    handler = events.get("handler")
    endpoint = _text(events, "endpoint") or None
    if handler == "webhook" and not (endpoint or "").startswith(("http://", "https://")):
        raise ConfigError("events.handler webhook needs events.endpoint, an http:// or https:// URL", path,
                          _line(events, "endpoint") or _line(events, "handler"))
    env: list[tuple[str, str]] = []
    extraenv = raw.get("extraenv") or []
    for item, line in zip(extraenv, _item_lines(raw, "extraenv", len(extraenv)), strict=True):
        try:
            env.append(parse_env(item))
        except PolycrateError as exc:
            raise ConfigError(exc.message.replace("-e/--env", "extraenv"), path, line) from None
    remote = _map(_map(raw.get("sync")).get("remote"))
    branch = _map(remote.get("branch"))
    layout = Layout(
        blocks_root=_relative_folder(config, "blocksroot", path, "blocks"),
        artifacts_root=_relative_folder(config, "artifactsroot", path, "artifacts"),
        logs_root=_relative_folder(config, "logsroot", path, ".logs"),
        ssh_private_key=_text(config, "sshprivatekey") or None,
        ssh_public_key=_text(config, "sshpublickey") or None,
    )
    return {
        "alias": tuple(raw.get("alias") or ()),
        "events": EventSettings(handler, endpoint),
        "extra_env": tuple(env),
        "extra_mounts": tuple(raw.get("extramounts") or ()),
        "meta": plain(_map(raw.get("meta"))),
        "version": _text_or_nothing(raw.get("version")),
        "sync": SyncSettings(_text(remote, "name") or None, _text(branch, "name") or None),
        "layout": layout,
        "warnings": tuple(workspace_warnings(raw, path)),
    }


def _item_lines(mapping: Any, key: str, count: int) -> list[int | None]:
    return mapping.lines_of_items(key) if isinstance(mapping, LineMap) else [None] * count



def parse_toolchain(config: dict[str, Any]) -> Toolchain:
    """Checked `config.runtime`, `config.engine` and `config.image` (also Polycrate's form `image:
    {reference: cargo.ayedo.cloud/library/polycrate, version: latest}`)."""
    runtime, engine, image = config.get("runtime"), config.get("engine"), config.get("image")
    if isinstance(image, dict):
        version = image.get("version")
        image = image["reference"].strip() + (f":{version}" if version not in (None, "") else "")
    return Toolchain(runtime, engine, image.strip() if image is not None else None)


def parse_registries(raw: dict[str, Any], path: Path) -> Registries:
    """Checked `registries: {NAME: {mirror: HOST[:PORT], insecure: true}}`; its rule: `default:` (the
    registry of short references) is a registry host."""
    mirrors: list[tuple[str, str]] = []
    insecure: set[str] = set()
    default = None
    for name, settings in _map(raw.get("registries")).items():
        if not isinstance(settings, dict):  # `default: HOST`, the registry of short references
            from polycrate.config.refs import looks_like_host

            host = str(settings or "").strip().removeprefix("https://").removeprefix("http://").rstrip("/")
            if name != "default":  # the rule the declaration cannot say: only `default` is a host
                raise ConfigError(f"registries.{name}: only registries.default names a host; a registry's settings "
                                  "are {mirror: HOST[:PORT], insecure: true}", path, _line(raw.get("registries"), name))
            if not looks_like_host(host):
                raise ConfigError(f"registries.default must be a registry host such as cargo.ayedo.cloud, not "
                                  f"{settings!r}", path, _line(raw.get("registries"), name))
            default = host
            continue
        mirror = settings.get("mirror")
        if mirror:
            mirrors.append((str(name), mirror.strip()))
        if settings.get("insecure") is True:
            insecure.add(str(name))
    return Registries(tuple(mirrors), frozenset(insecure), default)


RECIPIENT_PREFIX = "age1"


def check_recipients(raw: Any, path: Path) -> list[str]:
    """``encryption.recipients`` of workspace.poly, checked (age public keys, never a secret key; the
    keys' syntax is checked by pyrage when they are used), each once."""
    encryption = raw.get("encryption") if isinstance(raw, dict) else None
    if encryption is None:
        return []
    check_field(encryption, "workspace", "encryption", path, _line(raw, "encryption"), explain=EXPLAIN)
    result: list[str] = []
    for item in encryption.get("recipients") or ():
        if item.strip() not in result:
            result.append(item.strip())
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


def parse_schedule(
    raw: Any,
    workflow: str,
    path: Path | str | None = None,
    line: int | None = None,
    origin: str = ORIGIN_WORKSPACE,
    checked: bool = False,
) -> Schedule | None:
    """``workflows[].schedule`` (a string or a mapping) as a Schedule; None when absent. Checked here
    unless ``checked`` (read_workspace_file checked it); its rules: the OnCalendar or cron expression and
    the time spans (timespec/). Every problem is a ConfigError naming ``path`` and the line."""
    if raw is None:
        return None
    prefix = f"workflow '{workflow}': schedule: "
    if not checked:
        check_field(raw, "workflow", "schedule", path or "", line, prefix=prefix, name="")
    # the time rules live in timespec/ (loaded only for a workspace that declares a schedule)
    from polycrate.timespec.cron import looks_like_cron, validate_cron
    from polycrate.timespec.oncalendar import validate_calendar
    from polycrate.timespec.times import ScheduleError, parse_timespan

    def fail(message: str, key: str | None = None) -> ConfigError:
        where = (_line(raw, key) if key is not None and isinstance(raw, LineMap) else None) or line
        return ConfigError(prefix + message, path, where)

    raw_map: dict[str, Any] = raw if isinstance(raw, dict) else {
        "cron" if looks_like_cron(raw.strip()) else "on_calendar": raw.strip()}
    kind = "on_calendar" if raw_map.get("on_calendar") is not None else "cron"
    expression = " ".join(raw_map[kind].split())
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
        return None if value is None else str(value)

    persistent = raw_map.get("persistent")
    return Schedule(
        workflow=workflow,
        kind=kind,
        expression=expression,
        randomized_delay=span("randomized_delay", 0),
        user=name("user"),
        group=name("group"),
        persistent=True if persistent is None else persistent,
        persistent_set="persistent" in raw_map,
        timeout=span("timeout", 1),
        log_file=raw_map.get("log_file"),
        line=line,
        origin=origin,
    )


def has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


# --- secrets.poly ----------------------------------------------------------------------------


@record(frozen=True, eq=False, repr=False)
class SecretBlock(Record):
    name: str
    config: dict[str, Any]
    line: int | None


@record(frozen=True, eq=False, repr=False)
class SecretsFile(Record):
    """secrets.poly (decrypted): what merges over workspace.poly, and every value (for masking)."""

    file: str
    config: dict[str, Any]
    blocks: tuple[SecretBlock, ...]
    values: dict[str, Any]  # the whole document as plain data


def parse_secrets(text: str, where: str | Path) -> SecretsFile:
    """secrets.poly's text (after decryption), checked: `config:` and `blocks: [{name, config}]`."""
    raw = parse_yaml(text, where)
    check_file(raw, SECRETS_FILE, where)
    raw = _map(raw)
    blocks = tuple(SecretBlock(entry["name"], plain(_map(entry.get("config"))), _line(entry))
                   for entry in raw.get("blocks") or ())
    return SecretsFile(str(where), plain(_map(raw.get("config"))), blocks, plain(raw))
