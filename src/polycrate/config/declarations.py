"""The fields of workspace.poly, block.poly and secrets.poly, declared once.

Each section of a file (the workspace's top level, a workflow, a step, a notification of one type, ...)
is a ``Section``: its keys as ``Field``s with the value's ``Kind`` (string, integer, list of X, one of
X/Y, a nested section, ...), whether it is required, its default, its bounds or pattern, and a line for
people. From these come the checks (``polycrate.config.validate``: types, required keys, bounds,
patterns, unknown keys, with the words of a field's ``says`` where the generic ones would say less), the
key allow-lists (``allowed_keys``), the JSON Schema of each file and the documentation's key tables
(``polycrate.config.schema_export``); ``tests/unit/test_validate.py`` holds the checks and the shipped
JSON Schema to the same verdict on every field.

Of the rules that tie keys together, "exactly one of" and "at least one of" are declared (a schedule's
``on_calendar``/``cron``; an action's ``type``/``playbook``/``script``); the others (an ansible action
needs ``playbook``; an email login needs both ``username`` and ``password``) are written in the fields'
descriptions and checked in ``schema.py``. The checks read this module at every load, so it holds plain
data only: nothing here imports beyond the standard library, ``config.model`` and ``config.record``.
"""
from __future__ import annotations

from typing import Any

from polycrate.config.model import ENGINES, KIND_DEFAULT, RUNTIMES
from polycrate.config.record import Frozen, record

# --- the constants the checks share ------------------------------------------------------------------

# validate_name: (a letter or digit, then up to 62 of letters, digits, '.', '_', '-'), and not
# ending in '.' or '-'; written as one pattern.
NAME_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9_])?$"
# a block's name: such names joined by '/', as Polycrate's hub names (ayedo/k8s/harbor)
BLOCK_NAME_PATTERN = (r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9_])?"
                      r"(?:/[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9_])?){0,7}$")
# aliases and `kind`: the same words, without the rule on the last character
WORD_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62})$"
ACTION_TYPES = ("ansible", "script")
MISSED_POLICIES = ("run-once", "skip")  # a schedule's `missed:` (team mode)
WEBHOOK_EVENTS = ("success", "failure")
NOTIFICATION_TYPES = ("email", "slack", "mattermost", "teams", "matrix")
SMTP_SECURITY = ("starttls", "tls", "none")
MAX_SECONDS = 366 * 86400  # a year
MAX_DAYS = 100 * 366
MAX_RETRIES = 1000
MAX_SLICES = 100  # parts of a sliced step (each a job on a worker)
MAX_KEEP_RUNS = 10**9
MAX_NOTIFY_TIMEOUT = 300
LABEL_KEY_MAX = 317  # Kubernetes': a 253-character prefix, '/', a 63-character name

# Patterns: regular expressions that Python (re.search) and ECMAScript (editors) read alike, with every '$'
# made the end of the text (strict_end); a control character is refused with a look-ahead.
_NO_CONTROL = r"^(?![\s\S]*[\x00-\x1f\x7f])"
_RELATIVE_FILE = r"^(?!/)(?!(?:[\s\S]*/)?\.\.(?:/|$))(?=[\s\S]*\S)(?![\s\S]*[\x00-\x1f\x7f])"
_ABSOLUTE_FILE = r"^/(?![\s\S]*[\x00-\x1f\x7f])"
_NOT_BLANK = r"\S"
_FILE_NAME = r"^(?=[\s\S]*\S)(?![\s\S]*[\x00-\x1f\x7f])"  # not blank, one line
_MOUNT = r"^[^:]+:/[^:]*(?::(?:ro|rw))?$"  # /host:/container[:ro|:rw] (a relative host path is the workspace's)
_WEBHOOK_URL = r"^https?://"
_HTTP_URL = r"^\s*https?://[^\x00-\x1f\x7f]*[^\x00-\x1f\x7f\s/][^\x00-\x1f\x7f]*\s*$"
_ENV_NAME = r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*$"
_DOTTED_PATH = r"^(?![\s\S]*\.\.)\s*[^\s.](?:[\s\S]*[^\s.])?\s*$"
_USER = r"^(?:[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|[0-9]{1,10})$"
_MAIL_ADDRESS = r"^\s*[^\s@<>,;\"]+@[^\s@<>,;\"]+\s*$"
_SMTP_HOST = r"^(?:(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)$"
_LOGIN = r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?$"
_MATRIX_ROOM = r"^\s*![^\x00-\x1f\x7f ]*:[^\x00-\x1f\x7f ]*\s*$"
_AGE_RECIPIENT = r"^\s*age1"
_REFERENCE = r"^(?![\s\S]*:\s*$)"  # check_reference: never ending in ':' (an empty version)
_ENTRY_FROM = r"^(?=[\s\S]*\S)(?![\s\S]*:\s*$)"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = (r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
         r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_SPACE = r"[^\S\x00-\x1f\x7f]*"
# refs.parse_reference after strip: REGISTRY/PATH[:TAG], the registry a host (with '.' or ':') or localhost
_REGISTRY_REFERENCE = (rf"^(?![\s\S]*[\x00-\x1f\x7f]){_SPACE}(?=localhost/|[^/]*[.:][^/]*/){_HOST}/{_COMPONENT}"
                       rf"(?:/{_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})?{_SPACE}$")
# hubref.is_short: a path of several components without a registry host in front (team/block:1.0)
_SHORT_REFERENCE = (rf"^(?![\s\S]*[\x00-\x1f\x7f]){_SPACE}(?!localhost/)(?![^/]*[.:][^/]*/){_COMPONENT}"
                    rf"(?:/{_COMPONENT})+(?::[A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})?{_SPACE}$")
_LABEL_KEY = rf"^(?![\s\S]*[\s\x00-\x1f\x7f])[\s\S]{{1,{LABEL_KEY_MAX}}}$"


def strict_end(pattern: str) -> str:
    """``pattern`` with every end anchor ``$`` (not escaped, not in a class) as ``(?![\\s\\S])``: the end
    of the text in Python and ECMAScript alike (Python's ``$`` also matches before a final newline, so
    `name: "web\\n"` would pass). The checks (config/validate.py) and the JSON Schema use this form."""
    out: list[str] = []
    index, in_class = 0, False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            out.append(pattern[index:index + 2])
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "$":
            char = r"(?![\s\S])"
        out.append(char)
        index += 1
    return "".join(out)


# --- the structure ----------------------------------------------------------------------------------


# on Frozen: compared by identity (no __eq__ or __hash__ to build), the repr shared (config/record.py)
@record(frozen=True, eq=False, repr=False)
class Kind(Frozen):
    """The type of a value. ``of`` is one of: string, integer, number, boolean, null, enum, list, mapping,
    section (a declared section, by name), one_of (any of ``options``), any."""

    of: str
    items: Kind | None = None  # list: each item; mapping: each value
    choices: tuple[Any, ...] = ()  # enum
    section: str | None = None  # section
    options: tuple[Kind, ...] = ()  # one_of
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    pattern: str | None = None  # string: a regular expression it matches (re.search)
    keys: str | None = None  # mapping: the pattern of its keys
    min_items: int | None = None  # list
    unique: bool = False  # list
    numbers: bool = False  # string: a number is taken as its text (`version: 1.0`)
    hint: str = ""  # what it is, for people ("block reference"), instead of the type's own words


@record(frozen=True, eq=False, repr=False)
class Field(Frozen):
    """One key of a section."""

    key: str  # as written in YAML
    kind: Kind
    doc: str  # one line for people
    required: bool = False
    default: Any = None  # None: no default (absent means "not set")
    null: bool = True  # `key:` with no value (null) counts as absent; False: null is refused
    # the words of the check (config/validate.py) where "must be <the type>" would say less:
    says: str = ""  # for a refused value, instead of "must be ..." ({key}: the key; {name}...: no subject)
    empty: str = ""  # for a list shorter than its min_items
    keys_says: str = ""  # for a refused key of a mapping
    item: str = ""  # a mapping's entries are called "<item> 'KEY'" (label 'team')


@record(frozen=True, eq=False, repr=False)
class Section(Frozen):
    """A mapping of a file: its keys, where it sits (``where``, for people) and whether unknown keys are
    refused (``closed``)."""

    name: str
    where: str
    doc: str
    fields: tuple[Field, ...]
    closed: bool = True
    exactly_one: tuple[str, ...] = ()  # exactly one of these keys is written
    at_least_one: tuple[str, ...] = ()  # one or more of these keys is written
    label: str = ""  # what an item is called in messages (workflow 'nightly': ...); its name follows the naming rule
    dotted: bool = False  # messages name its keys by their path (config.runtime), not quoted ('retries')

    def field(self, key: str) -> Field:
        return next(f for f in self.fields if f.key == key)


def string(pattern: str | None = None, *, numbers: bool = False, hint: str = "") -> Kind:
    return Kind("string", pattern=pattern, numbers=numbers, hint=hint)


def integer(minimum: float | None = None, maximum: float | None = None) -> Kind:
    return Kind("integer", minimum=minimum, maximum=maximum)


def number(minimum: float | None = None, maximum: float | None = None, *, above: float | None = None) -> Kind:
    return Kind("number", minimum=minimum, maximum=maximum, exclusive_minimum=above)


def enum(*choices: Any) -> Kind:
    return Kind("enum", choices=choices)


def list_of(item: Kind, *, min_items: int | None = None, unique: bool = False) -> Kind:
    return Kind("list", items=item, min_items=min_items, unique=unique)


def mapping(values: Kind | None = None, keys: str | None = None, *, hint: str = "") -> Kind:
    return Kind("mapping", items=values, keys=keys, hint=hint)


def section(name: str) -> Kind:
    return Kind("section", section=name)


def one_of(*options: Kind, hint: str = "") -> Kind:
    return Kind("one_of", options=options, hint=hint)


BOOLEAN = Kind("boolean")
NULL = Kind("null")
ANY = Kind("any")
TEXT = string(numbers=True)  # schema._string: text, or a number written as text
NAME = string(NAME_PATTERN, hint="name")
WORD = string(WORD_PATTERN, hint="name")
BLOCK_NAME = string(BLOCK_NAME_PATTERN, hint="block name")
_NO_EFFECT = "Polycrate's; no effect here (a warning line says why)"
_COMPUTED_FIELDS = tuple(Field(key, ANY, "Polycrate's, computed: " + _NO_EFFECT)
                         for key in ("path", "localpath", "containerpath"))
SECONDS = number(maximum=MAX_SECONDS)
TIMESPAN_HINT = "seconds or a systemd time span such as 15m"


def _name(doc: str) -> Field:
    return Field("name", NAME, doc, required=True, null=False)


# schema.parse_labels: a number or a boolean is written as YAML writes it, null is ""
LABELS = mapping(one_of(string(_NO_CONTROL, hint="one line"), number(), BOOLEAN, NULL), keys=_LABEL_KEY,
                 hint="mapping of label -> one line of text")


def _labels(where: str) -> Field:
    return Field("labels", LABELS, f"labels of {where}: keys of 1-{LABEL_KEY_MAX} characters without spaces, "
                 "one-line values", says="must be one line of text", item="label",
                 keys_says=f"a label key is 1-{LABEL_KEY_MAX} characters without spaces, such as "
                 "app.kubernetes.io/part-of")


_ALIAS = Field("alias", list_of(WORD), "other names (Polycrate's; merged, nothing is looked up by them)",
               says="{name} must be a list of names, not {value}")
_FILE_SAYS = "must be a file name (relative to the workspace), not {value}"
_MAIL_SAYS = "must be a mail address such as ops@example.com, not {value}"
_KIND_SAYS = "{name} must be one word such as generic, k8sapp or linuxapp (a convention, not a closed list), not {value}"
_PROMPT_DOC = "a question asked before the run starts: the message, or {message: ...}"
_ON = Field("on", one_of(enum(*WEBHOOK_EVENTS), list_of(enum(*WEBHOOK_EVENTS), min_items=1)),
            "when it fires: failure (failed or interrupted runs), success, or both", default="failure", null=False,
            says="takes success and failure, not {value}",
            empty="is empty: it takes success and failure (remove the entry to turn it off)")
_FILE_FROM_DOC = "the file {filename} in the block's artifacts folder, or the one of block {from}"


def _secret_ref(key: str, doc: str, required: bool = True) -> Field:
    return Field(key, one_of(section("secret_ref.secret"), section("secret_ref.env")),
                 f"{doc}: {{secret: PATH}} (a key under config: of secrets.poly) or {{env: NAME}}, never the value",
                 required=required, null=not required,
                 says="is a secret and workspace.poly is committed: write {key}: {secret: PATH} (a key under "
                 "config: in secrets.poly) or {key}: {env: NAME}, not the value")


def _notification(kind: str, doc: str, *fields: Field) -> Section:
    common = (
        _name("the channel's name (the naming rule), unique among notifications"),
        Field("type", enum(kind), "the channel's type", required=True, null=False),
        _ON,
        Field("timeout", number(maximum=MAX_NOTIFY_TIMEOUT, above=0), "seconds to wait for the server", default=10,
              says=f"is at most {MAX_NOTIFY_TIMEOUT} seconds (and more than 0): a notification delays the end of its run, "
              "not {{value}}"),
    )
    return Section(f"notification.{kind}", f"notifications[] (type {kind})", doc, common + fields,
                   label="notification")


SECTIONS: dict[str, Section] = {s.name: s for s in (
    # --- workspace.poly ---------------------------------------------------------------------------
    Section("workspace", "workspace.poly", "The workspace: its blocks, workflows and settings.", label="workspace",
            fields=(
        _name("the workspace's name (letters, digits, '.', '_', '-'; at most 63 characters)"),
        Field("organization", TEXT, "the organization it belongs to", default=""),
        Field("description", TEXT, "what the workspace is for", default=""),
        Field("blocks", list_of(section("block_entry")), "the blocks it configures (blocks/ holds them)"),
        Field("workflows", list_of(section("workflow")), "named sequences of block actions"),
        Field("config", section("config"), "the workspace's config, merged under every block's"),
        Field("encryption", section("encryption"), "who can decrypt the workspace's secrets"),
        Field("webhooks", list_of(section("webhook")), "HTTP POSTs at the end of a run"),
        Field("notifications", list_of(one_of(*(section(f"notification.{t}") for t in NOTIFICATION_TYPES),
                                              hint="mapping (notifications[], by type)")),
              "mail and chat channels told at the end of a run (by type: email, slack, mattermost, teams, matrix)"),
        Field("history", section("history"), "how long the run history is kept"),
        Field("metrics", section("metrics"), "the Prometheus text file written after each run"),
        Field("version", ANY, "accepted for Polycrate's workspaces; not read"),
        Field("registries", mapping(one_of(section("registry"), string(_NOT_BLANK, hint="registry host"))),
              "by registry name: a mirror to use, or plain HTTP; `default: HOST`: the registry of short references"),
        _labels("the workspace"),
        Field("dependencies", list_of(one_of(string(_REGISTRY_REFERENCE, hint="registry block reference"),
                                             string(_SHORT_REFERENCE, hint="short block reference")), unique=True),
              "registry block references (REGISTRY/PATH:VERSION, or PATH:VERSION of the default registry) that "
              "`workspace update` installs"),
        Field("inventory", section("workspace_file"), "the workspace's Ansible inventory (default: inventory.yml)"),
        Field("kubeconfig", section("workspace_file"), "the workspace's kubeconfig"),
        # the rest of Polycrate's Workspace struct (cmd/workspace.go)
        _ALIAS,
        Field("events", section("events"), "the event handler: the default of --event-handler and --event-endpoint"),
        Field("extraenv", list_of(string(hint="KEY=value")), "KEY=value for every action (before -e)"),
        Field("extramounts", list_of(string(_MOUNT, hint="/host:/container[:ro]")),
              "mounts of the container runtime (before -m; a relative host path is the workspace's)",
              says="must be /host:/container[:ro], not {value}"),
        Field("meta", mapping(), "free data, in the snapshot"),
        Field("sync", section("sync"), "where `polycrate git sync` pulls from and pushes to"),
        Field("team", section("team"), "team mode: where workers fetch the launched commit from"),
        Field("identifier", ANY, _NO_EFFECT),
        Field("registry", ANY, _NO_EFFECT),
        *_COMPUTED_FIELDS,
    )),
    Section("events", "events", "Polycrate's event handler settings.", (
        Field("handler", enum("workspace", "webhook"), "workspace (<logsroot>/YYYY/MM/DD/RUN.yml) or webhook"),
        Field("endpoint", TEXT, "the webhook's http(s) URL (handler webhook needs it)"),
        Field("commit", ANY, _NO_EFFECT + " (--auto-commit commits the event)"),
    ), dotted=True),
    Section("sync", "sync", "Polycrate's git sync settings.", (
        Field("local", ANY, _NO_EFFECT + " (git sync works on the branch checked out)"),
        Field("remote", section("sync_remote"), "the remote `git sync` pulls from and pushes to"),
        Field("enabled", ANY, _NO_EFFECT + " (nothing syncs by itself)"),
        Field("auto", ANY, _NO_EFFECT + " (nothing syncs by itself)"),
    )),
    Section("sync_remote", "sync.remote", "The remote of `git sync`.", (
        Field("name", TEXT, "the git remote's name"),
        Field("branch", section("sync_branch"), "its branch"),
    )),
    Section("sync_branch", "sync.remote.branch", "The branch of `git sync`.", (
        Field("name", TEXT, "the branch's name"),
    )),
    Section("config", "config", "Free keys for blocks and playbooks, and the toolchain keys below.", (
        Field("runtime", enum(*RUNTIMES), "where actions run: on this machine or in a container", default="local"),
        Field("engine", enum(*ENGINES), "the container engine (default: the first installed)"),
        Field("image", one_of(string(_NOT_BLANK, hint="image reference"), section("image")),
              "the toolchain image of the container runtime (default: the base image)",
              says="must be an image reference such as localhost/polycrate-base:latest, not {value}"),
        Field("blocksroot", TEXT, "the folder of the installed blocks (Polycrate's)", default="blocks"),
        Field("artifactsroot", TEXT, "the folder of the blocks' artifacts (Polycrate's)", default="artifacts"),
        Field("logsroot", TEXT, "the folder of the workspace event handler's events (Polycrate's)", default=".logs"),
        Field("sshprivatekey", string(_FILE_NAME, numbers=True), "the workspace's SSH private key, relative to it "
              "(Polycrate's)", default="id_rsa", says=_FILE_SAYS),
        Field("sshpublickey", string(_FILE_NAME, numbers=True), "the workspace's SSH public key (Polycrate's)",
              default="id_rsa.pub", says=_FILE_SAYS),
    ), closed=False, dotted=True),
    Section("image", "config.image", "Polycrate's spelling of an image: reference and version.", (
        Field("reference", string(), "the image without its tag, such as cargo.ayedo.cloud/library/polycrate",
              required=True, null=False),
        Field("version", ANY, "the tag (empty: none)"),
    ), dotted=True),
    Section("block_entry", "blocks[]", "A block of the workspace: which one and its config; as in Polycrate, "
            "the whole block (actions and all) may be written here.", (
        Field("name", BLOCK_NAME, "the block's name (the naming rule, or such names joined by '/'), unique in the "
              "workspace", required=True, null=False),
        Field("from", string(_ENTRY_FROM, hint="block reference"),
              "the block it is an instance of: a name or REGISTRY/PATH[:VERSION] (never ending in ':')"),
        Field("config", mapping(), "merged over the block's own config"),
        Field("description", ANY, "for people; not read"),
        _labels("this block (over the block's own)"),
        Field("inventory", one_of(BLOCK_NAME, section("file_from")), _FILE_FROM_DOC + " (a name alone is from)"),
        Field("kubeconfig", one_of(BLOCK_NAME, section("file_from")), _FILE_FROM_DOC + " (a name alone is from)"),
        Field("actions", list_of(section("action")), "actions over the installed block's, by name; with none "
              "installed, the block is defined here"),
        Field("version", TEXT, "over the installed block's"),
        Field("kind", one_of(enum(""), WORD), "over the installed block's", says=_KIND_SAYS),
        Field("template", BOOLEAN, "over the installed block's", null=False),
        _ALIAS,
        Field("type", ANY, "shown in the snapshot"),
        Field("flavor", ANY, "shown in the snapshot"),
        Field("changelog", ANY, _NO_EFFECT),
        Field("workdir", ANY, _NO_EFFECT),
        Field("artifacts", ANY, _NO_EFFECT),
        Field("checksum", ANY, _NO_EFFECT),
    ), label="block"),
    Section("file_from", "blocks[].inventory, kubeconfig", "A block's inventory or kubeconfig file.", (
        Field("from", BLOCK_NAME, "the block whose file this is"),
        Field("filename", string(_RELATIVE_FILE, hint="relative path"),
              "the file in the block's artifacts folder (relative, no '..')",
              says="must be a file name inside the block's artifacts folder, not {value}"),
        *_COMPUTED_FIELDS,
    ), dotted=True),
    Section("workspace_file", "inventory, kubeconfig", "A file of the workspace.", (
        Field("filename", string(_RELATIVE_FILE, hint="relative path"),
              "the file, relative to the workspace (no '..')", says="must be a file inside the workspace, not {value}"),
        *_COMPUTED_FIELDS,
    ), dotted=True),
    Section("workflow", "workflows[]", "A named sequence of steps.", (
        _name("the workflow's name (the naming rule), unique in the workspace"),
        Field("description", TEXT, "what it does", default=""),
        Field("steps", list_of(section("step")), "the steps, run in order (a workflow without steps loads; running "
              "or inspecting it is refused)"),
        Field("prompt", one_of(string(), section("prompt")), _PROMPT_DOC),
        Field("schedule", one_of(string(_NOT_BLANK, hint="OnCalendar or cron"), section("schedule")),
              "when it runs by itself: an OnCalendar or cron expression, or a mapping"),
        Field("on_failure", list_of(section("step")), "steps that run only after a step failed"),
        _labels("the workflow"),
        _ALIAS,
        Field("allow_failure", BOOLEAN, "every step may fail without stopping the workflow", default=False,
              null=False),
        Field("launch", section("launch"), "what a launch from `polycrate serve` may set"),
        Field("queue", NAME, "team mode: the queue whose workers run it (`polycrate worker --queue NAME`)",
              default="default"),
    ), label="workflow"),
    Section("launch", "workflows[].launch", "What an operator may set when launching from the server.", (
        Field("variables", list_of(section("launch_variable")), "the launch variables, each typed and checked"),
        Field("check", BOOLEAN, "check mode may be chosen", default=True, null=False),
        Field("limit", BOOLEAN, "a host pattern (--limit) may be given", default=True, null=False),
        Field("tags", BOOLEAN, "tags (--tags) may be given", default=False, null=False),
        Field("extra_vars", one_of(enum("off", "admins"), enum(False)),
              "free-form extra vars over HTTP: off, or admins", default="off"),
    )),
    Section("launch_variable", "workflows[].launch.variables[]", "One value a launch may set.", (
        Field("name", string(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", hint="variable name"), "the variable's name",
              required=True, null=False),
        Field("type", enum("string", "integer", "boolean", "choice", "secret"), "its type", default="string"),
        Field("description", string(), "for the launch form", default=""),
        Field("required", BOOLEAN, "a launch must give it", default=False, null=False),
        Field("default", ANY, "the value when a launch gives none (not for secrets)"),
        Field("choices", list_of(one_of(string(), integer())), "type choice: the values allowed"),
        Field("min", integer(), "type integer: the smallest value"),
        Field("max", integer(), "type integer: the largest value"),
        Field("pattern", string(), "type string or secret: a regular expression the whole value matches"),
    ), label="variable"),
    Section("step", "workflows[].steps[], on_failure[]", "One action of one block.", (
        _name("the step's name (the naming rule), unique in its workflow"),
        Field("description", ANY, "for people; not read"),
        Field("block", BLOCK_NAME, "the block whose action runs", required=True, null=False),
        Field("action", NAME, "the action of that block", required=True, null=False),
        Field("allow_failure", BOOLEAN, "a failure does not stop the workflow", default=False, null=False),
        Field("timeout", number(maximum=MAX_SECONDS, above=0), "seconds per attempt; then the attempt fails"),
        Field("retries", integer(0, MAX_RETRIES), "further attempts after a failed one", default=0),
        Field("retry_delay", number(0, MAX_SECONDS), "seconds between attempts", default=0),
        Field("allow_no_hosts", BOOLEAN, "a play matching no host does not fail the step", default=False,
              null=False),
        Field("slices", integer(1, MAX_SLICES), "an ansible step: its inventory's hosts (after --limit) split into "
              "this many parts, each run with --limit of its part; with a backend on up to this many workers at "
              "once, without one one after the other", default=1),
        Field("prompt", one_of(string(), section("prompt")), _PROMPT_DOC),
        _labels("the step"),
        _ALIAS,
        Field("workflow", ANY, "Polycrate's: the workflow it is written in (another name is warned about)"),
    ), label="step"),
    Section("prompt", "prompt", "A question asked before the run starts.", (
        Field("message", TEXT, "the question", required=True, null=False),
    ), closed=False),
    Section("schedule", "workflows[].schedule", "When a workflow runs by itself (a systemd timer).", (
        Field("on_calendar", string(_NOT_BLANK, hint="OnCalendar"), "a systemd OnCalendar expression"),
        Field("cron", string(_NOT_BLANK, hint="cron"), "a cron expression (five fields)"),
        Field("randomized_delay", one_of(integer(0), string(_NOT_BLANK, hint="time span")),
              f"a random delay before each run: {TIMESPAN_HINT}"),
        Field("user", one_of(integer(0, 9_999_999_999), string(_USER, hint="user")), "the user it runs as"),
        Field("group", one_of(integer(0, 9_999_999_999), string(_USER, hint="group")), "the group it runs as"),
        Field("persistent", BOOLEAN, "a run missed while the machine was off is made up at boot", default=True,
              null=False),
        Field("timeout", one_of(integer(1), string(_NOT_BLANK, hint="time span")),
              f"the run is stopped after this long (at least 1 second): {TIMESPAN_HINT}"),
        Field("log_file", string(_ABSOLUTE_FILE, hint="absolute path"), "where the timer's output goes"),
        Field("missed", enum(*MISSED_POLICIES),
              "team mode: a slot missed while no worker was alive: run-once (the latest one, once) or skip",
              default="run-once", null=False),
        Field("max_delay", one_of(integer(1), string(_NOT_BLANK, hint="time span")),
              f"team mode, missed: run-once: not when the missed slot is older than this (default: however old): "
              f"{TIMESPAN_HINT}"),
    ), exactly_one=("on_calendar", "cron")),
    Section("team", "team", "Team mode: how workers get the workspace.", (
        Field("remote", string(_FILE_NAME, hint="remote name or URL"),
              "the git remote (its name in this repository, or a URL or path) that workers fetch the launched commit "
              "from (default: the branch's upstream, else the repository's only remote)"),
    )),
    Section("encryption", "encryption", "Who can decrypt secrets.poly.", (
        Field("recipients", list_of(string(_AGE_RECIPIENT, hint="age public key")),
              "age public keys (age1...), never a secret key"),
    )),
    Section("registry", "registries.NAME", "How one registry is reached.", (
        Field("mirror", string(_NOT_BLANK, hint="host[:port]"), "the host[:port] that serves it instead"),
        Field("insecure", BOOLEAN, "plain HTTP instead of HTTPS", default=False, null=False),
    ), dotted=True),
    Section("webhook", "webhooks[]", "An HTTP POST of the run's summary.", (
        Field("name", ANY, "for people; not read"),
        Field("url", string(_WEBHOOK_URL, hint="URL"), "the http:// or https:// URL posted to",
              required=True, null=False, says="must start with http:// or https://, not {value}"),
        Field("headers", mapping(ANY), "extra HTTP headers (values are sent as text)"),
        _ON,
    ), label="webhook"),
    _notification("email", "A mail through an SMTP server.",
                  Field("host", string(_SMTP_HOST, hint="host"), "the SMTP server's host name or address",
                        required=True, null=False, says="must be the SMTP server's host name or address, not {value}"),
                  Field("port", integer(1, 65535), "the SMTP port (default: 587 starttls, 465 tls, 25 none)",
                        null=False, says="must be a port number 1-65535, not {value}"),
                  Field("security", enum(*SMTP_SECURITY), "starttls, tls (SMTPS) or none (then no login)",
                        default="starttls"),
                  Field("username", string(_LOGIN, hint="login"),
                        "the login name (needs password; refused with security: none)",
                        says="must be the login name as text, not {value}"),
                  _secret_ref("password", "the login's password (needs username)", required=False),
                  Field("from", string(_MAIL_ADDRESS, hint="mail address"), "the sender's address", required=True,
                        null=False, says=_MAIL_SAYS),
                  Field("to", one_of(string(_MAIL_ADDRESS, hint="mail address"),
                                     list_of(string(_MAIL_ADDRESS, hint="mail address"), min_items=1)),
                        "the recipients' addresses", required=True, null=False, says=_MAIL_SAYS,
                        empty="needs at least one mail address"),
                  Field("ca_file", TEXT, "trust this CA file instead of the system's (relative to the workspace)")),
    *(_notification(kind, f"A message to a {kind.title()} incoming webhook.",
                    _secret_ref("url", "the incoming-webhook URL (it carries the token)"))
      for kind in ("slack", "mattermost", "teams")),
    _notification("matrix", "A message to a Matrix room.",
                  Field("homeserver", string(_HTTP_URL, hint="URL"), "the homeserver's http(s) URL",
                        required=True, null=False, says="must be an http:// or https:// URL, not {value}"),
                  Field("room", string(_MATRIX_ROOM, hint="room ID"), "the room's ID (!...:server), not its alias",
                        required=True, null=False, says="needs the room's ID such as !abcdef:example.org (in Element "
                        "under Room settings, Advanced), not its alias or {value}"),
                  _secret_ref("token", "the access token")),
    Section("secret_ref.secret", "{secret: PATH}", "A secret from secrets.poly.", (
        Field("secret", string(_DOTTED_PATH, hint="dotted key path"), "a dotted key path under config: of "
              "secrets.poly, such as notify.smtp_password", required=True, null=False,
              says="is not a dotted key path such as notify.smtp_password"),
    )),
    Section("secret_ref.env", "{env: NAME}", "A secret from the environment of the polycrate process.", (
        Field("env", string(_ENV_NAME, hint="variable name"), "an environment variable's name", required=True,
              null=False, says="is not an environment variable name"),
    )),
    Section("history", "history", "How long the run history is kept (default: every run).", (
        Field("keep_runs", integer(1, MAX_KEEP_RUNS), "keep the newest N runs"),
        Field("keep_days", number(maximum=MAX_DAYS, above=0), "keep the runs of the last N days"),
    )),
    Section("metrics", "metrics", "The Prometheus text file written after each run.", (
        Field("path", TEXT, "the file (relative to the workspace unless absolute)",
              default=".polycrate/metrics/polycrate.prom"),
        Field("enabled", BOOLEAN, "write it at all", default=True, null=False),
    )),
    # --- block.poly -------------------------------------------------------------------------------
    Section("block", "block.poly", "A block: its default config and its actions.", (
        Field("name", BLOCK_NAME, "the block's name (the naming rule, or such names joined by '/')", required=True,
              null=False),
        Field("version", TEXT, "the block's version", default="0.0.0"),
        Field("kind", one_of(enum(""), WORD), "one word such as generic, k8sapp, linuxapp (a convention, not a "
              "closed list)", default=KIND_DEFAULT, says=_KIND_SAYS),
        Field("description", TEXT, "what the block does", default=""),
        Field("config", mapping(), "the block's default config (a workspace entry's config overrides it)"),
        Field("actions", list_of(section("action")), "what the block can do"),
        Field("from", string(_REFERENCE, numbers=True, hint="block reference"),
              "the block it inherits from: a name or REGISTRY/PATH[:VERSION] (never ending in ':')"),
        _labels("the block"),
        _ALIAS,
        Field("template", BOOLEAN, "only other blocks inherit from it; it never runs itself", default=False,
              null=False),
        Field("inventory", one_of(BLOCK_NAME, section("file_from")), _FILE_FROM_DOC + " (a name alone is from)"),
        Field("kubeconfig", one_of(BLOCK_NAME, section("file_from")), _FILE_FROM_DOC + " (a name alone is from)"),
        Field("type", ANY, "Polycrate's (db, kv, mq ...): shown in the snapshot"),
        Field("flavor", ANY, "Polycrate's (postgresql ...): shown in the snapshot"),
        Field("changelog", ANY, _NO_EFFECT),
        Field("workdir", ANY, _NO_EFFECT),
        Field("artifacts", ANY, _NO_EFFECT),
        Field("checksum", ANY, _NO_EFFECT),
    ), label="block"),
    Section("action", "actions[]", "An Ansible playbook or shell lines.", (
        _name("the action's name (the naming rule), unique in the block"),
        Field("description", TEXT, "what it does", default=""),
        Field("type", enum(*ACTION_TYPES), "ansible or script (default: ansible with playbook, script with script)"),
        Field("playbook", TEXT, "the playbook, relative to the block's folder (type ansible needs it)"),
        Field("script", one_of(string(), list_of(string(), min_items=1)),
              "shell lines, each a Go template (type script needs it)"),
        Field("prompt", one_of(string(), section("prompt")), _PROMPT_DOC),
        _labels("the action"),
        _ALIAS,
        Field("interactive", BOOLEAN, "Polycrate's (a terminal for the container); stdin is /dev/null either way",
              default=False, null=False),
        Field("config", mapping(), "Polycrate's: the action's own config, in the snapshot's `action`"),
        Field("block", ANY, "Polycrate's: the block it is written in (another name is warned about)"),
    ), at_least_one=("type", "playbook", "script"), label="action"),
    # --- secrets.poly -----------------------------------------------------------------------------
    Section("secrets", "secrets.poly", "Secrets, merged over workspace.poly when a run needs them "
            "(encrypted as secrets.poly.age).", (
        Field("config", mapping(), "merged over the workspace's config"),
        Field("blocks", list_of(section("secret_block")), "per block: config merged over that block's"),
    ), closed=False),
    Section("secret_block", "blocks[] (secrets.poly)", "Secret config of one block.", (
        Field("name", string(), "the block's name", required=True, null=False),
        Field("config", mapping(), "merged over the block's config"),
    ), closed=False, label="block"),
)}

# The sections each file starts from.
FILES: dict[str, str] = {"workspace.poly": "workspace", "block.poly": "block", "secrets.poly": "secrets"}


def allowed_keys(name: str) -> set[str]:
    """The keys a section accepts (KeyError for an unknown section)."""
    return {f.key for f in SECTIONS[name].fields}


def declared_keys(name: str) -> tuple[str, ...]:
    """The keys of a section in the order they are declared (for messages that list them)."""
    return tuple(f.key for f in SECTIONS[name].fields)


def reachable(file: str) -> list[Section]:
    """The sections of a file, its top level first, then in the order they are named."""
    seen: list[str] = []

    def visit(kind: Kind | None) -> None:
        if kind is None:
            return
        if kind.section is not None and kind.section not in seen:
            seen.append(kind.section)
            for field in SECTIONS[kind.section].fields:
                visit(field.kind)
        visit(kind.items)
        for option in kind.options:
            visit(option)

    visit(section(FILES[file]))
    return [SECTIONS[name] for name in seen]
