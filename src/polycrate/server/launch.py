"""Launching and stopping runs from the server.

A launch is a child `polycrate workflows run` process: the same pipeline as at the terminal, the
same lock (a second launch of a running workflow gets the CLI's exit 3 and the server answers 409),
the same run store. The child runs in its own session (``start_new_session``), so stopping or
restarting the server never stops a run. The server names the run id in advance and who launched
it (the child's ``--run-id`` and ``--launched-by``, which go into its run request), and the prompts the
operator confirmed in the browser become the child's ``--force``.

Every value that arrives over HTTP is data: its limit is checked as Ansible's host-pattern grammar
(no ``@file``, no path), and its variables reach Ansible in a vars file the server writes with each
text tagged ``!unsafe``, so ``{{ lookup('pipe', ...) }}`` in a value stays text and is never run.

With a team backend a workflow's launch is enqueued instead (``enqueue_launch``), exactly as `workflows run`
does there: a worker of the workflow's queue runs it, on whichever host; a second launch while one is queued or
running is refused by the database (409, naming that run and its worker); stopping asks the run's own process
on its worker (``stop_launched``). One action of a block runs here, as `polycrate run BLOCK ACTION` does.

Stopping sends SIGTERM to the run's own polycrate process (checked against the workflow's lock
holder first), which stops its step and records the run as interrupted, as Ctrl-C does.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from polycrate.errors import EXIT_BAD_INPUT, EXIT_LOCKED, PolycrateError
from polycrate.history import RunRecord, new_run_id
from polycrate.history.locking import is_held, lock_path, pid_alive, read_holder, request_stop, run_lock_key
from polycrate.runtime.ansible_options import (HOST_PATTERN_MAX, SECRET_FILE_HEAD, AnsibleOptions, as_unsafe,
                                               check_host_pattern, dump_unsafe_yaml)
from polycrate.states import RESUMABLE, RunState

if TYPE_CHECKING:
    from polycrate.server.launch_files import LaunchFiles


class LaunchRefused(PolycrateError):
    """The run did not start; ``status`` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


NAME_MAX = 128
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_JSON_DEPTH = 20


@dataclass(frozen=True)
class LaunchOptions:
    """What a launch over HTTP may set, already checked (parse_launch). Each field lands in the run
    request of run/ (FIELDS says where); extra_vars reach Ansible as data, tagged `!unsafe`."""

    check: bool = False
    step: str | None = None
    resume: bool = False
    limit: str | None = None
    tags: tuple[str, ...] = ()
    extra_vars: dict[str, Any] = field(default_factory=dict)  # free-form (admins, where the workflow allows)
    variables: dict[str, Any] = field(default_factory=dict)  # the declared launch variables (`vars`)
    secret_names: frozenset[str] = frozenset()  # which of `variables` are of type secret
    # team mode, a relaunch: secret variables as an earlier launch sealed them (team/values.py), never opened here
    sealed: dict[str, bytes] = field(default_factory=dict)

    def audit(self) -> dict:
        """What the audit log, the launch record and the run page keep: the options, the declared variables'
        values (secret ones masked), only the names of free-form extra vars (their values may be anything)."""
        from polycrate.config.launch_params import MASK

        return {"check": self.check, "step": self.step, "resume": self.resume, "limit": self.limit,
                "tags": list(self.tags), "extra_vars": sorted(self.extra_vars),
                "parameters": {k: (MASK if k in self.secret_names or k in self.sealed else v)
                               for k, v in sorted((self.variables | dict.fromkeys(self.sealed)).items())}}

    def replay(self) -> dict[str, Any]:
        """What a relaunch needs besides the secrets (which stay sealed, server/launch_files.py): kept in the
        server's own state (0600), never shown."""
        return {"check": self.check, "step": self.step, "limit": self.limit, "tags": list(self.tags),
                "extra_vars": self.extra_vars,
                "variables": {k: v for k, v in self.variables.items() if k not in self.secret_names}}

    @classmethod
    def from_replay(cls, data: dict[str, Any], secret: dict[str, Any]) -> LaunchOptions:
        """The options of an earlier launch, with its secret values (launch_files.LaunchFiles.recorded_secrets)."""
        return cls(check=bool(data.get("check")), step=data.get("step"), limit=data.get("limit"),
                   tags=tuple(data.get("tags") or ()), extra_vars=dict(data.get("extra_vars") or {}),
                   variables=dict(data.get("variables") or {}) | {k: str(v) for k, v in secret.items()})

    def plain_values(self) -> dict[str, Any]:
        return self.extra_vars | {k: v for k, v in self.variables.items() if k not in self.secret_names}

    def secret_values(self) -> dict[str, Any]:
        return {k: v for k, v in self.variables.items() if k in self.secret_names}


# Where each launch field lands in the request types of run/: (class, field). The server's launch
# options are these, checked against the classes themselves (launch_fields), not read off argparse.
FIELDS: dict[str, tuple[str, str]] = {
    "check": ("RunOptions", "check"),
    "resume": ("RunOptions", "resume"),
    "step": ("RunRequest", "only_step"),
    "limit": ("AnsibleOptions", "limit"),
    "tags": ("AnsibleOptions", "tags"),
    "extra_vars": ("AnsibleOptions", "extra_vars"),
    "vars": ("AnsibleOptions", "extra_vars"),  # declared variables travel as extra vars, checked first
}


def launch_fields() -> dict[str, tuple[str, str]]:
    """FIELDS, each checked to exist in the request type it names (a rename in run/ fails here, loudly)."""
    from dataclasses import fields

    from polycrate.run.engine import RunOptions
    from polycrate.run.pipeline import RunRequest

    types = {"RunOptions": RunOptions, "RunRequest": RunRequest, "AnsibleOptions": AnsibleOptions}
    for name, (kind, attr) in FIELDS.items():
        if attr not in {f.name for f in fields(types[kind])}:
            raise PolycrateError(f"launch field {name}: {kind} has no field {attr}")
    return dict(FIELDS)


def _bool(body: dict, key: str) -> bool:
    value = body.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):  # "false" and "no" are words, not booleans
        raise LaunchRefused(f"{key}: true or false (a JSON boolean), not {_shown(value)}")
    return value


def _text(body: dict, key: str, max_len: int = NAME_MAX) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise LaunchRefused(f"{key}: text, not {_shown(value)}")
    if len(value) > max_len:
        raise LaunchRefused(f"{key}: at most {max_len} characters, not {len(value)}")
    return value


def _name(body: dict, key: str) -> str | None:
    value = _text(body, key)
    if value is not None and not _NAME.match(value):
        raise LaunchRefused(f"{key}: letters, digits, '_', '.', '-', not {value!r}")
    return value


def _shown(value: Any) -> str:
    kind = {bool: "a boolean", int: "a number", float: "a number", str: "text", list: "a list", dict: "an object",
            type(None): "null"}.get(type(value), type(value).__name__)
    return kind if not isinstance(value, str) else repr(value[:40])


def _depth(value: Any, level: int = 0) -> int:
    if level > _JSON_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def parse_extra_vars(value: Any) -> dict[str, Any]:
    """Free-form extra vars from HTTP: an object, or a list of objects and `key=value` texts. No @file."""
    from polycrate.runtime.ansible_options import _key_values

    if value is None:
        return {}
    items = value if isinstance(value, list) else [value]
    merged: dict[str, Any] = {}
    for item in items:
        if isinstance(item, str):
            if item.lstrip().startswith("@"):
                raise LaunchRefused("extra_vars: key=value or a JSON object, not @file, over the web")
            if item.lstrip()[:1] in "{[":
                try:
                    item = json.loads(item)
                except (ValueError, RecursionError):
                    raise LaunchRefused("extra_vars: not valid JSON") from None
            else:
                try:
                    item = _key_values(item)
                except PolycrateError as exc:
                    raise LaunchRefused(f"extra_vars: {exc.message.removeprefix('--extra-vars: ')}") from None
        if not isinstance(item, dict):
            raise LaunchRefused(f"extra_vars: an object or key=value texts, not {_shown(item)}")
        for key, val in item.items():
            if not str(key).isidentifier() or len(str(key)) > NAME_MAX:
                raise LaunchRefused(f"extra_vars: {str(key)[:40]!r} is not a variable name")
            if _depth(val) > _JSON_DEPTH:
                raise LaunchRefused(f"extra_vars: {key}: nested deeper than {_JSON_DEPTH} levels")
            merged[str(key)] = val
    return merged


def parse_launch(body: Any) -> tuple[LaunchOptions, bool]:
    """A launch body (a JSON object, or the launch form made one), every field type-checked:
    LaunchRefused (400) names the field, never a 500. Returns the options and `confirm`."""
    if not isinstance(body, dict):
        raise LaunchRefused("the body must be a JSON object")
    unknown = set(body) - set(FIELDS) - {"confirm"}
    if unknown:
        raise LaunchRefused(f"unknown field(s): {', '.join(sorted(str(k)[:40] for k in unknown))}")
    limit = _text(body, "limit", HOST_PATTERN_MAX + 1)
    if limit is not None:
        try:
            limit = check_host_pattern(limit)
        except PolycrateError as exc:
            raise LaunchRefused(exc.message) from None
    tags = body.get("tags") or []
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",") if t.strip()]
    if not isinstance(tags, list) or len(tags) > 100:
        raise LaunchRefused(f"tags: a list of tag names, not {_shown(tags)}")
    tags = [_name({"tags": t}, "tags") for t in tags]
    variables = body.get("vars")
    if variables is not None and (not isinstance(variables, dict) or len(variables) > 200):
        raise LaunchRefused(f"vars: an object of the workflow's launch variables, not {_shown(variables)}")
    for key, value in (variables or {}).items():
        if _depth(value) > _JSON_DEPTH:
            raise LaunchRefused(f"vars.{str(key)[:64]}: nested deeper than {_JSON_DEPTH} levels")
    options = LaunchOptions(check=_bool(body, "check"), step=_name(body, "step"), resume=_bool(body, "resume"),
                            limit=limit, tags=tuple(t for t in tags if t),
                            extra_vars=parse_extra_vars(body.get("extra_vars")), variables=dict(variables or {}))
    if options.resume and options.step:
        raise LaunchRefused("resume and one step do not combine: resume picks the steps itself")
    return options, _bool(body, "confirm")


def prompts_of(ws, workflow, step: str | None = None) -> list[dict]:
    """Every prompt the run would ask, by the engine's own rule (the workflow's, then each planned step's)."""
    from polycrate.run.plan import plan_prompts, plan_workflow

    planned = plan_workflow(ws, workflow, step)
    return [{"who": p.asker, "message": p.message} for p in plan_prompts(ws, workflow, planned, set())]


def apply_declaration(options: LaunchOptions, declaration: Any, workflow: str, *, admin: bool) -> LaunchOptions:
    """The launch checked against the workflow's `launch:` (config.launch_params): what it lets be set, each
    declared variable's type and bounds; an undeclared variable, or free-form extra vars where they are off,
    are refused naming the field (400). A resume takes only the values given: the run then checks them against
    the values of the run it resumes, and reuses those (run/opening.py resumed_options)."""
    from dataclasses import replace

    from polycrate.config.launch_params import LaunchDeclaration, ParameterRefused, check_values

    declaration = declaration or LaunchDeclaration()
    for name, given in (("check", options.check), ("limit", options.limit), ("tags", options.tags)):
        if given and not getattr(declaration, name):
            raise LaunchRefused(f"{name}: workflow '{workflow}' does not let a launch set it (launch.{name}: false)")
    if options.extra_vars:
        if declaration.extra_vars != "admins":
            raise LaunchRefused(f"extra_vars: free-form extra vars are off for workflow '{workflow}' over the web; "
                                "declare launch variables (launch.variables), or launch.extra_vars: admins")
        if not admin:
            raise LaunchRefused(f"extra_vars: workflow '{workflow}' takes free-form extra vars from admins only", 403)
        clash = sorted(set(options.extra_vars) & {v.name for v in declaration.variables})
        if clash:
            raise LaunchRefused(f"extra_vars: {clash[0]} is a declared launch variable: give it in vars")
    checked = _without_sealed(options, declaration, workflow)
    if options.resume:  # the run reuses the values its previous run had (run/opening.py): none is filled in or asked
        checked = replace(checked, variables=tuple(replace(v, required=False, default=None)
                                                   for v in checked.variables))
    try:
        values = check_values(checked, options.variables, workflow)
    except ParameterRefused as exc:
        raise LaunchRefused(exc.message) from None
    secret = frozenset(v.name for v in declaration.variables if v.secret)
    return replace(options, variables=values, secret_names=secret)


def _without_sealed(options: LaunchOptions, declaration: Any, workflow: str) -> Any:
    """The declaration a relaunch's values are checked against: its sealed secrets were checked at their launch
    and are not opened here, so they are taken as given; one the workflow no longer declares secret is refused."""
    from dataclasses import replace

    if not options.sealed:
        return declaration
    secret = {v.name for v in declaration.variables if v.secret}
    gone = sorted(set(options.sealed) - secret)
    if gone:
        raise LaunchRefused(f"vars.{gone[0]}: workflow '{workflow}' no longer declares it a secret launch variable:"
                            " launch it anew", 409)
    given = sorted(set(options.sealed) & set(options.variables))
    if given:
        raise LaunchRefused(f"vars.{given[0]}: given twice (sealed by the earlier launch, and again)")
    return replace(declaration, variables=tuple(v for v in declaration.variables if v.name not in options.sealed))


def failed_hosts(run: RunRecord) -> list[str]:
    """The hosts on which a step of the run failed or was unreachable (for a relaunch on them only)."""
    hosts = {h for s in run.steps for h, c in (s.hosts or {}).items() if c.failed or c.unreachable}
    return sorted(hosts)


def command(root: Path, workflow: str, options: LaunchOptions, vars_file: Path | None,
            secrets_file: Path | None = None, action: str | None = None) -> list[str]:
    """`polycrate workflows run WORKFLOW`, or with `action`, `polycrate run BLOCK ACTION` (workflow: the block)."""
    # --here: with a backend a workflow is enqueued (enqueue_launch), never this; one action runs here, as at the CLI
    if action is not None:
        argv = [sys.executable, "-m", "polycrate", "-w", str(root), "run", workflow, action, "--force", "--here"]
    else:
        argv = [sys.executable, "-m", "polycrate", "-w", str(root), "workflows", "run", workflow, "--force",
                "--here"]
    if options.check:
        argv.append("--check")
    if options.step:
        argv += ["--step", options.step]
    if options.resume:
        argv.append("--resume")
    if options.limit:
        argv += ["--limit", check_host_pattern(options.limit)]  # checked again: no path reaches Ansible
    if options.tags:
        argv += ["--tags", ",".join(options.tags)]
    for path in (vars_file, secrets_file):
        if path is not None:
            argv += ["--extra-vars", f"@{path}"]
    return argv


def write_vars_file(path: Path, values: dict[str, Any], *, secret: bool = False) -> Path:
    """The launch's values as YAML, every text tagged `!unsafe`: Ansible takes them as data, never templates
    them. The file (0600, in the server's 0700 state folder) is the server's, never the operator's to name.
    A file of secret values starts with SECRET_FILE_HEAD: the run masks each of its values (the server's own
    secret values are sealed at rest instead: launch_files.py)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write((SECRET_FILE_HEAD if secret else "") + dump_unsafe_yaml(as_unsafe(values)))
    return path


@dataclass
class Launched:
    run_id: str
    pid: int | None  # the server's child; None: launched through the queue (a worker runs it)
    output: Path | None
    vars_file: Path | None = None
    secrets_file: Path | None = None  # sealed (launch_files.py); the run reads them opened, while it runs
    queued: bool = False  # team mode: no worker has opened its record yet


def _resumed_extra_vars(root: Path, workflow: str, backend: str | None, workspace: str | None) -> list[str]:
    """The --extra-vars a --resume of ``workflow`` reuses: those of the run it resumes, by run/opening.py's rule
    (the latest full run, failed, interrupted or lost); [] when there is none to resume (the run says so)."""
    from polycrate.history import open_store

    store = open_store(root, backend=backend, workspace=workspace, reconcile=False)
    try:
        previous = store.latest_full_run(workflow)
    finally:
        store.close()
    if previous is None or previous.status not in RESUMABLE:
        return []
    return list(AnsibleOptions.from_record(dict(previous.ansible_options)).extra_vars)


def _reap(proc: subprocess.Popen, files: LaunchFiles, users: list[str], opened: list[Path],
          ended: Callable[[], object] | None) -> None:
    """Wait for the child (no zombie while we live), then remove the plaintext values it used, and sweep."""
    proc.wait()
    files.finish(users, opened)
    if ended is not None:
        try:
            ended()
        except Exception:  # housekeeping: the next sweep does it
            pass


def launch(root: Path, workflow: str, options: LaunchOptions, *, launched_by: str, files: LaunchFiles,
           wait_seconds: float = 20.0, backend: str | None = None, workspace: str | None = None,
           action: str | None = None, ended: Callable[[], object] | None = None) -> Launched:
    """Start the run; return once it is recorded in the store (or raise why it did not start).
    With `action`, one action of a block: `workflow` is then the block's name. Its files are ``files``'s: secret
    values sealed at rest, opened only while the run runs (a resume's too: those of the run it resumes); ``ended``
    is called once the child has ended."""
    from polycrate.server.launch_files import SecretsGone

    if options.resume and options.step:
        raise LaunchRefused("resume and one step do not combine: resume picks the steps itself")
    if action is not None and (options.resume or options.step):
        raise LaunchRefused("step and resume apply to workflows, not to one action")
    what = f"action '{workflow} {action}'" if action is not None else f"workflow '{workflow}'"
    lock = lock_path(root, run_lock_key(workflow, action))
    if is_held(lock) and _finishing(root, read_holder(lock), backend, workspace):
        deadline = time.monotonic() + 10  # its run is recorded as ended: the process is closing, give it a moment
        while is_held(lock) and time.monotonic() < deadline:
            time.sleep(0.1)
    if is_held(lock):
        holder = read_holder(lock)
        raise LaunchRefused(
            f"{what} is already running ({holder.describe() if holder else 'holder unknown'})", 409)
    run_id = new_run_id()
    output_dir = files.folder
    output_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    output = output_dir / f"{run_id}.out"
    plain, secret = options.plain_values(), options.secret_values()
    opened: list[Path] = []
    users = files.hold(run_id)  # the sweep leaves this launch's files, and those it reopens, to its end
    try:
        if options.resume:
            opened += files.reopen(_resumed_extra_vars(root, workflow, backend, workspace), users)
        vars_file = write_vars_file(output_dir / f"{run_id}.vars.yml", plain) if plain else None
        secrets_file = files.write_secrets(run_id, secret) if secret else None
        if secrets_file is not None:
            opened.append(secrets_file)
        argv = command(root, workflow, options, vars_file, secrets_file, action)
        argv += ["--run-id", run_id, "--launched-by", launched_by]
        env = dict(os.environ)
        for key in ("POLYCRATE_WORKFLOW", "POLYCRATE_STEP"):
            env.pop(key, None)
        with open(output, "wb") as out:
            proc = subprocess.Popen(argv, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    except SecretsGone as exc:
        files.finish(users, opened)
        files.discard(run_id)
        raise LaunchRefused(f"the run did not start: {exc.message}; launch without resume, giving them again",
                            409) from None
    except LaunchRefused:
        files.finish(users, opened)
        files.discard(run_id)
        raise
    except PolycrateError as exc:  # the server's key or private folder (one line, never a traceback)
        files.finish(users, opened)
        files.discard(run_id)
        raise LaunchRefused(f"the run did not start: {exc.message}", 409) from None
    except BaseException:
        files.finish(users, opened)
        files.discard(run_id)
        raise
    threading.Thread(target=_reap, args=(proc, files, users, opened, ended), name=f"reap-{run_id}", daemon=True).start()
    sealed = files.sealed_path(run_id) if secrets_file is not None else None
    deadline = time.monotonic() + wait_seconds
    from polycrate.history import open_store

    while time.monotonic() < deadline:
        store = open_store(root, backend=backend, workspace=workspace, reconcile=False)
        try:
            row = store.find_run(run_id)
        finally:
            store.close()
        if row is not None:
            return Launched(run_id, proc.pid, output, vars_file, sealed)
        code = proc.poll()
        if code is not None:
            text = output.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            files.discard(run_id)  # no record, no relaunch: nothing of it is kept
            reason = next((line for line in reversed(text) if line.startswith("polycrate: error: ")), None)
            reason = (reason or (text[-1] if text else f"exit {code}")).removeprefix("polycrate: error: ")
            status = {EXIT_LOCKED: 409, EXIT_BAD_INPUT: 400}.get(code, 500 if code != 1 else 409)
            raise LaunchRefused(f"the run did not start: {reason}", status)
        time.sleep(0.1)
    # started but slow to record (a big block pull): 202 all the same
    return Launched(run_id, proc.pid, output, vars_file, sealed)


def enqueue_launch(dsn: str, root: Path, workspace: str, workflow: str, queue: str, options: LaunchOptions, *,
                   launched_by: str, wait_seconds: float = 20.0) -> Launched:
    """Team mode: the workflow's run enqueued on its queue through team/launch.py, as `workflows run` does with a
    backend (the workspace's commit, one run per workflow across every host); return once a worker has opened
    its record (or after ``wait_seconds``, still queued; at once when no alive worker serves the queue:
    ``queued``). A run queued or running already: 409 naming it and its worker. The launch's values travel in
    PostgreSQL with the run (team/values.py), secret ones sealed with age to the workspace's recipients: no file
    of this server's is needed on the worker's host."""
    from polycrate.team.launch import AlreadyRunning, Launch, checked_commit, enqueue
    from polycrate.team.source import workspace_source
    from polycrate.team.values import refs, web_values, with_sealed

    if options.resume and options.step:
        raise LaunchRefused("resume and one step do not combine: resume picks the steps itself")
    try:
        commit = checked_commit(root)
        source = workspace_source(root)  # where the worker fetches the commit, as `workflows run` records it
    except PolycrateError as exc:
        raise LaunchRefused(f"the run was not queued: {exc.message}", 409) from None
    plain, secret = options.plain_values(), options.secret_values()
    try:
        recipients = _recipients(root) if secret else []
        values = with_sealed(web_values(plain, secret, recipients), options.sealed)
    except PolycrateError as exc:
        raise LaunchRefused(f"the run was not queued: {exc.message}", 409) from None
    ansible = AnsibleOptions(limit=check_host_pattern(options.limit) if options.limit else None, tags=options.tags,
                             extra_vars=refs(values))
    record = {"check": options.check, "diff": False, "resume": options.resume, "runtime": None,
              "ansible": ansible.to_record()}
    try:
        run_id = enqueue(dsn, Launch(workspace=workspace, root=root, workflow=workflow, queue=queue, git_commit=commit,
                                     launched_by=launched_by, only_step=options.step, options=record,
                                     remote=source.remote if source else None, subdir=source.subdir if source else "",
                                     values=tuple(values)))
    except AlreadyRunning as exc:
        raise LaunchRefused(exc.message, 409) from None
    from polycrate.history.postgres import PostgresRunStore

    from polycrate.team.worker import served_queues

    if queue not in served_queues(dsn):
        return Launched(run_id, None, None, queued=True)  # nobody to wait for: the run's page waits for a worker
    store = PostgresRunStore(dsn, workspace=workspace)
    try:
        deadline = time.monotonic() + wait_seconds
        while not (opened := store.find_run(run_id) is not None) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        store.close()
    return Launched(run_id, None, None, queued=not opened)


def _recipients(root: Path) -> list[str]:
    """Who a launch's secret values are sealed to: the workspace's encryption.recipients (its workers' among them)."""
    from polycrate.secrets.recipients import workspace_recipients

    return workspace_recipients(root)


def sealed_of(dsn: str, workspace: str, run_id: str) -> dict[str, bytes]:
    """Team mode: the secret launch variables of run ``run_id`` as its launch sealed them (for a relaunch)."""
    from polycrate.history.postgres import connect
    from polycrate.team.values import sealed_secrets

    db = connect(dsn)
    try:
        return sealed_secrets(db, workspace, run_id)
    finally:
        db.close()


def stop_launched(dsn: str, workspace: str, run: RunRecord, by: str) -> str | None:
    """Team mode: ask a run launched through the queue to stop, on whichever worker runs it (its own process
    sees the request within team/execute.py's POLL_SECONDS); None when the run was not launched so."""
    from polycrate.team.launch import resolve_team_run
    from polycrate.team.launch import stop as stop_team_run

    if resolve_team_run(dsn, workspace, run.id) != run.id:
        return None
    try:
        return stop_team_run(dsn, workspace, run.id, by)
    except PolycrateError as exc:
        raise LaunchRefused(exc.message, 409) from None


def _finishing(root: Path, holder, backend: str | None, workspace: str | None) -> bool:
    """Whether the lock's holder has already recorded its run as ended (retention, metrics, webhooks follow)."""
    if holder is None or not holder.run_id:
        return False
    from polycrate.history import open_store

    store = open_store(root, backend=backend, workspace=workspace, reconcile=False)
    try:
        row = store.find_run(holder.run_id)
    finally:
        store.close()
    return row is not None and row.status != RunState.RUNNING


def stop(root: Path, run: RunRecord, by: str | None = None) -> None:
    """SIGTERM to the run's polycrate process, after checking that it is the one holding the run's lock;
    ``by`` (who stops it) is left beside the lock first, so that the run's record names them."""
    if run.status != RunState.RUNNING:
        raise LaunchRefused(f"run {run.id} is not running (it {run.status})", 409)
    if run.host != socket.gethostname():
        raise LaunchRefused(f"run {run.id} runs on {run.host}, not on this host", 409)
    pid = run.pid
    holder = read_holder(lock_path(root, run.lock_key)) if run.lock_key else None
    if pid is None or not pid_alive(pid) or holder is None or holder.pid != pid or holder.run_id not in (None, run.id):
        raise LaunchRefused(f"run {run.id}: its process is gone or no longer holds the lock", 409)
    if by is not None and run.lock_key:
        request_stop(lock_path(root, run.lock_key), run.id, pid, by)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        raise LaunchRefused(f"run {run.id}: its process has just ended", 409) from None
