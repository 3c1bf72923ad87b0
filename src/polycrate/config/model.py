"""Typed models of a workspace: frozen dataclasses, nothing YAML-specific inside.

``polycrate.config.schema`` is the one place that reads the files and produces them.
"""
from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Any
from polycrate.config.record import Record, record

RUNTIMES = ("local", "container")  # where actions run (config.runtime, --runtime)
ENGINES = ("podman", "docker")  # the container engines (config.engine)


@record(frozen=True, eq=False, repr=False)
class Prompt(Record):
    message: str


@record(frozen=True, eq=False, repr=False)
class Action(Record):
    name: str
    type: str  # "ansible" | "script"
    description: str = ""
    playbook: str | None = None
    script: tuple[str, ...] = ()
    prompt: Prompt | None = None
    line: int | None = None
    script_lines: tuple[int | None, ...] = ()  # the block.poly line of each script entry
    file: Path | None = None  # the block.poly it is written in (a parent's, for an inherited action)
    labels: dict[str, str] = field(default_factory=dict)
    interactive: bool = False  # Polycrate's (a terminal for the container); here stdin is /dev/null either way
    config: dict[str, Any] = field(default_factory=dict)  # Polycrate's action `config`: in the snapshot's `action`
    alias: tuple[str, ...] = ()


# Polycrate's block kinds (its docs' conventions and its code): a block inheriting from a `k8sapp`
# block, or configured from one in workspace.poly, is a `k8sappinstance`.
KINDS = ("generic", "k8sapp", "k8sappinstance", "k8scluster", "k8cluster", "linuxapp", "dockerapp", "library")
KIND_DEFAULT = "generic"


@record(frozen=True, eq=False, repr=False)
class FileFrom(Record):
    """A block's `inventory:` or `kubeconfig:` (Polycrate's form): the file `filename` in
    artifacts/blocks/<block>/, or the one of block `source` (`from:`)."""

    filename: str | None = None  # default: inventory.yml / kubeconfig.yml
    source: str | None = None  # another block's name
    line: int | None = None
    file: Path | None = None  # the file it is written in


@record(frozen=True, eq=False, repr=False)
class BlockDefinition(Record):
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
    template: bool = False  # `template: true`: only other blocks inherit from it; it never runs
    template_line: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    inventory: FileFrom | None = None
    kubeconfig: FileFrom | None = None
    alias: tuple[str, ...] = ()
    type: str = ""  # Polycrate's `type` (db, kv, mq ...) and `flavor` (postgresql ...): shown, not interpreted
    flavor: str = ""
    warnings: tuple[Any, ...] = field(default=(), compare=False)  # ConfigError: Go fields without effect here


@record(frozen=True, eq=False, repr=False)
class Block(Record):
    """A block instance of the workspace: definition + merged config."""

    name: str
    definition: BlockDefinition
    config: dict[str, Any]
    source: str | None = None  # the `from:` reference, if any
    labels: dict[str, str] = field(default_factory=dict)  # the definition's, under the entry's
    configured: bool = False  # a workspace.poly entry names it
    inventory: FileFrom | None = None  # the entry's, else the definition's
    kubeconfig: FileFrom | None = None
    entry_line: int | None = None  # its entry in workspace.poly

    @property
    def version(self) -> str:
        return self.definition.version

    @property
    def kind(self) -> str:
        """As Polycrate reports it: a configured instance of a `k8sapp` block is a `k8sappinstance`."""
        kind = self.definition.kind
        return "k8sappinstance" if kind == "k8sapp" and self.configured else kind

    @property
    def template(self) -> bool:
        """A template block used as itself: an entry with `from:` is an instance of it, and runs."""
        return self.definition.template and self.source is None

    @property
    def folder(self) -> Path:
        return self.definition.folder

    @property
    def actions(self) -> dict[str, Action]:
        return self.definition.actions


@record(frozen=True, eq=False, repr=False)
class BlockEntry(Record):
    """An entry under `blocks:` in workspace.poly."""

    name: str
    source: str | None
    config: dict[str, Any]
    line: int | None
    labels: dict[str, str] = field(default_factory=dict)
    inventory: FileFrom | None = None
    kubeconfig: FileFrom | None = None
    # the rest of a block, as Polycrate's entries may carry it: over the installed block.poly's, or
    # (with actions and nothing installed) a block defined in workspace.poly
    actions: dict[str, Action] = field(default_factory=dict)
    kind: str | None = None
    version: str | None = None
    description: str = ""
    template: bool | None = None
    alias: tuple[str, ...] = ()
    type: str = ""
    flavor: str = ""


@record(frozen=True, eq=False, repr=False)
class Step(Record):
    name: str
    block: str
    action: str
    allow_failure: bool = False
    line: int | None = None
    timeout: float | None = None  # seconds per attempt; the action is stopped and the attempt fails
    retries: int = 0  # further attempts after a failed one
    retry_delay: float = 0.0  # seconds between attempts
    allow_no_hosts: bool = False  # a play matching no host does not fail this step (nor its preflight)
    prompt: Prompt | None = None  # Polycrate's step prompt: asked with the run's other prompts, before step 1
    labels: dict[str, str] = field(default_factory=dict)
    description: str = ""
    alias: tuple[str, ...] = ()
    slices: int = 1  # an ansible step's hosts run in this many parts, each with --limit of its part (run/slicing.py)


@record(frozen=True, eq=False, repr=False)
class Workflow(Record):
    name: str
    description: str
    steps: tuple[Step, ...]
    prompt: Prompt | None = None
    schedule: Any = None  # the `schedule:` as written (a string or a mapping), for display
    line: int | None = None
    on_failure: tuple[Step, ...] = ()  # steps that run only after a step failed
    timer: Schedule | None = None  # `schedule:` checked (schema.parse_schedule)
    labels: dict[str, str] = field(default_factory=dict)
    alias: tuple[str, ...] = ()
    allow_failure: bool = False  # Polycrate's: every step may fail (applied to the steps when read)
    launch: Any = None  # `launch:` checked: config.launch_params.LaunchDeclaration (what the server may set)
    queue: str = "default"  # team mode: the workers that run it (polycrate worker --queue)


ORIGIN_WORKSPACE = "workspace"  # declared in workspace.poly: apply removes it when no longer declared
ORIGIN_ONE_OFF = "workflows-schedule"  # written by `workflows schedule`: apply leaves it alone


@record(frozen=True, eq=False, repr=False)
class Schedule(Record):
    workflow: str
    kind: str  # "on_calendar" | "cron"
    expression: str
    randomized_delay: int | None = None  # seconds
    user: str | None = None
    group: str | None = None
    persistent: bool = True
    persistent_set: bool = False  # the key was written (so a cron plan can say it has no effect)
    timeout: int | None = None  # seconds
    log_file: str | None = None
    line: int | None = None
    origin: str = ORIGIN_WORKSPACE


@record(frozen=True, eq=False, repr=False)
class Webhook(Record):
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    on: tuple[str, ...] = ("failure",)  # "success" and/or "failure" (failed or interrupted runs)


@record(frozen=True, eq=False, repr=False)
class SecretRef(Record):
    """Where a channel's secret comes from: `{secret: PATH}` (a dotted path into secrets.poly's
    `config:`) or `{env: NAME}` (an environment variable of the polycrate process). Never a literal."""

    source: str  # "secret" | "env"
    name: str
    line: int | None = field(default=None, compare=False)  # where workspace.poly names it

    def __str__(self) -> str:
        return f"{self.source} '{self.name}'"


@record(frozen=True, eq=False, repr=False)
class Notification(Record):
    """One mail or chat channel of `notifications:` (alerts.py sends, channels.py formats)."""

    name: str
    type: str  # "email" | "slack" | "mattermost" | "teams" | "matrix"
    on: tuple[str, ...] = ("failure",)
    timeout: float = 10.0
    line: int | None = None
    # slack, mattermost, teams: the incoming-webhook URL (it carries the token)
    url: SecretRef | None = None
    # email
    host: str | None = None
    port: int | None = None
    security: str = "starttls"  # "starttls" | "tls" (SMTPS) | "none" (no login then)
    username: str | None = None
    password: SecretRef | None = None
    sender: str | None = None
    to: tuple[str, ...] = ()
    ca_file: str | None = None  # trust this CA (or self-signed certificate) instead of the system's
    # matrix
    homeserver: str | None = None
    room: str | None = None
    token: SecretRef | None = None


@record(frozen=True, eq=False, repr=False)
class RunSettings(Record):
    """Workspace-level settings of the run store, alerts and metrics (`history:`, `webhooks:`,
    `notifications:`, `metrics:`)."""

    keep_runs: int | None = None
    keep_days: float | None = None
    webhooks: tuple[Webhook, ...] = ()
    notifications: tuple[Notification, ...] = ()
    metrics_path: str | None = None  # relative to the workspace root unless absolute
    metrics_enabled: bool = True


@record(frozen=True, eq=False, repr=False)
class Registries(Record):
    """`registries: {NAME: {mirror: HOST, insecure: true}}`: where a registry name is served from."""

    mirrors: tuple[tuple[str, str], ...] = ()  # (registry name, host[:port])
    insecure: frozenset[str] = frozenset()  # registry names reached over plain HTTP
    default: str | None = None  # `default: HOST`: the registry of short (hub-style) references (config/hubref.py)


@record(frozen=True, eq=False, repr=False)
class Toolchain(Record):
    """`config.runtime`, `config.engine`, `config.image`: where actions run (toolchain.py decides)."""

    runtime: str | None = None  # "local" | "container"; None: local
    engine: str | None = None  # "podman" | "docker"; None: the first installed
    image: str | None = None  # None: the base image


@record(frozen=True, eq=False, repr=False)
class EventSettings(Record):
    """Polycrate's `events:` of workspace.poly: the default of --event-handler and --event-endpoint."""

    handler: str | None = None  # "workspace" | "webhook"
    endpoint: str | None = None


@record(frozen=True, eq=False, repr=False)
class SyncSettings(Record):
    """Polycrate's `sync:` of workspace.poly, as far as `polycrate git sync` honours it."""

    remote: str | None = None  # sync.remote.name
    branch: str | None = None  # sync.remote.branch.name


@record(frozen=True, eq=False, repr=False)
class Layout(Record):
    """Polycrate's WorkspaceConfig folders and key files, relative to the workspace root."""

    blocks_root: str = "blocks"
    artifacts_root: str = "artifacts"
    logs_root: str = ".logs"
    ssh_private_key: str | None = None  # config.sshprivatekey (None: id_rsa when there)
    ssh_public_key: str | None = None


@record(frozen=True, eq=False, repr=False)
class Workspace(Record):
    name: str
    organization: str
    description: str
    root: Path
    file: Path
    blocks: dict[str, Block]
    workflows: dict[str, Workflow]
    config: dict[str, Any]
    run_settings: RunSettings = field(default_factory=RunSettings, compare=False)
    registries: Registries = field(default_factory=Registries, compare=False)
    recipients: tuple[str, ...] = ()  # `encryption.recipients`: age public keys
    toolchain: Toolchain = field(default_factory=Toolchain, compare=False)
    labels: dict[str, str] = field(default_factory=dict, compare=False)
    dependencies: tuple[str, ...] = ()  # `dependencies:`: block references `workspace update` installs
    inventory_file: str = "inventory.yml"  # `inventory: {filename: ...}`, relative to the root
    kubeconfig_file: str | None = None  # `kubeconfig: {filename: ...}`, relative to the root
    alias: tuple[str, ...] = field(default=(), compare=False)
    events: EventSettings = field(default_factory=EventSettings, compare=False)
    extra_env: tuple[tuple[str, str], ...] = field(default=(), compare=False)  # `extraenv:`, before -e
    extra_mounts: tuple[str, ...] = field(default=(), compare=False)  # `extramounts:`, before -m
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    version: str = field(default="", compare=False)  # Polycrate's workspace `version`: shown, not interpreted
    sync: SyncSettings = field(default_factory=SyncSettings, compare=False)
    layout: Layout = field(default_factory=Layout, compare=False)
    warnings: tuple[Any, ...] = field(default=(), compare=False)  # ConfigError: Go fields without effect here

    @property
    def inventory(self) -> Path:
        return self.root / self.inventory_file

    @property
    def blocks_dir(self) -> Path:
        return self.root / self.layout.blocks_root

    def artifacts_dir(self, block: str) -> Path:
        return self.root / self.layout.artifacts_root / "blocks" / block
