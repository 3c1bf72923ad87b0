"""The preflight: what would fail at night, found before anything runs.

`workspace validate` checks every action of the workspace; a run checks the actions of its
planned steps before step 1 (nothing here contacts a host). The checks:

* the workspace's settings: schedules, registries, encryption, the secrets notification channels
  name (webhooks, notifications, history and metrics are checked when the workspace loads);
* script actions: ``bash -n`` on the script as it will run;
* ansible actions: the playbook exists, Ansible parses and checks it with the variables the action
  gets (``ansible-playbook --syntax-check``'s own code, module and action names resolved), the
  inventory loads, and each play's hosts pattern, templated, matches a host of the inventory
  (``runtime/ansible_preflight.py``, one Ansible process for all playbooks, forked from the run's
  warm zygote when there is one).

A play whose pattern matches nothing is an error unless every step that runs the action says
``allow_no_hosts: true``. Findings are data (``Finding``); the CLI renders them.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Callable, Iterable, Sequence

from polycrate.errors import PolycrateError
from polycrate.config.model import Action, Block, Workspace
from polycrate.config.record import MutableRecord, Record, record

if TYPE_CHECKING:
    from polycrate.runtime.action import ActionRequest
    from polycrate.runtime.ansible_options import AnsibleOptions
    from polycrate.runtime.run_container import RunContainer
    from polycrate.runtime.ssh_masters import SSHSharing
    from polycrate.runtime.toolchain import Runtime
    from polycrate.runtime.zygote import Zygote
    from polycrate.secrets.runtime import RuntimeSecrets

ERROR = "error"
WARNING = "warning"
# inventory.yml is read by Ansible, whose loader has no limit at all: an alias bomb or a list of a
# million entries kept it busy for minutes. It passes our YAML limits first (config/yamlfile.py:
# 4 MiB, 250,000 values, 64 levels), which leave room for a fleet of thousands of hosts.
INVENTORY_MAX_BYTES = 1 << 30  # read up to this; parse_yaml then says which of our limits it passes


@record(frozen=True, eq=False, repr=False)
class Finding(Record):
    path: str | None
    line: int | None
    message: str
    severity: str = ERROR
    block: str | None = None
    action: str | None = None

    def __str__(self) -> str:
        """`file:line: message`, the path relative to the current folder like every error of ours."""
        return str(PolycrateError(self._text(), self.path, self.line))

    def _text(self) -> str:
        text = self.message
        if self.block and self.action:
            text += f" (block '{self.block}', action '{self.action}')"
        return text

    def text_in(self, root: Path) -> str:
        """The same line with the path relative to the workspace root: for the run store and webhooks,
        which outlive the current folder."""
        path = self.path
        if path:
            try:
                path = str(Path(path).resolve().relative_to(root.resolve()))
            except (ValueError, OSError):
                pass
            where = f"{path}:{self.line}: " if self.line else f"{path}: "
        else:
            where = ""
        return where + " ".join(self._text().split())

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "line": self.line,
            "severity": self.severity,
            "message": self.message,
            "block": self.block,
            "action": self.action,
            "text": str(self),
        }


@record(frozen=True, eq=False, repr=False)
class Target(Record):
    """One action to check, with what its steps allow."""

    block: Block
    action: Action
    allow_no_hosts: bool = False


@dataclass(eq=False, repr=False)
class Report(MutableRecord):
    findings: list[Finding] = field(default_factory=list)
    plays: list[dict[str, Any]] = field(default_factory=list)  # {"block", "action", "play", "pattern", "hosts"}
    inventory_hosts: int | None = None
    seconds: float = 0.0

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def ok(self) -> bool:
        return not self.errors


def workspace_targets(ws: Workspace) -> list[Target]:
    """Every action of every block but templates (they never run; their instances are checked with their
    own config); an action allows no hosts when every step running it says so."""
    steps: dict[tuple[str, str], list[bool]] = {}
    for workflow in ws.workflows.values():
        for step in (*workflow.steps, *workflow.on_failure):
            steps.setdefault((step.block, step.action), []).append(step.allow_no_hosts)
    targets = []
    for block in ws.blocks.values():
        if block.template:
            continue
        for action in block.actions.values():
            flags = steps.get((block.name, action.name), [])
            targets.append(Target(block, action, bool(flags) and all(flags)))
    return targets


def step_targets(ws: Workspace, steps: Iterable[tuple[str, str, bool]]) -> list[Target]:
    """The actions of planned steps: (block, action, allow_no_hosts) each, merged per action."""
    merged: dict[tuple[str, str], bool] = {}
    for block, action, allow in steps:
        merged[(block, action)] = merged.get((block, action), True) and allow
    return [Target(ws.blocks[b], ws.blocks[b].actions[a], allow) for (b, a), allow in merged.items()]


# --- the checks -------------------------------------------------------------------------------


def check_settings(ws: Workspace) -> list[Finding]:
    """Schedules, registries and encryption: each stops at its first error, so one finding each."""
    from polycrate import schedule, secrets
    from polycrate.blocks import registry

    from polycrate.config.workspace import template_refusal

    findings = []
    for workflow in ws.workflows.values():  # a step on a template block would be refused at run time
        for step in (*workflow.steps, *workflow.on_failure):
            error = template_refusal(ws, step.block, workflow, step)
            if error is not None:
                findings.append(Finding(str(error.path), error.line, error.message, block=step.block,
                                        action=step.action))
    findings += check_notifications(ws)
    findings += check_unattended(ws)
    for check in (
        lambda: schedule.workspace_schedules(ws),
        lambda: registry.transport_settings(ws.registries),
        lambda: secrets.workspace_recipients(ws.root),
        lambda: _open_secrets(ws),
    ):
        try:
            check()
        except PolycrateError as exc:
            findings.append(Finding(exc.path or str(ws.file), exc.line, exc.message))
        except ValueError as exc:
            findings.append(Finding(str(ws.file), None, str(exc)))
    return findings


def check_unattended(ws: Workspace) -> list[Finding]:
    """A scheduled workflow must run with nobody at a terminal: a launch value it requires without a default is
    an error (no timer, cron entry or worker types it); a prompt is a warning (the run fails there; team mode's
    apply refuses it)."""
    from polycrate.schedule import workspace_schedules
    from polycrate.schedule.unattended import PROMPT, consequence, unattended_problems

    findings = []
    for schedule in workspace_schedules(ws):
        for problem in unattended_problems(ws, schedule.workflow):
            prompt = problem.kind == PROMPT
            findings.append(Finding(
                str(problem.path or ws.file), problem.line,
                f"{problem.message}: {consequence(schedule.workflow, (problem.kind,))}"
                + ("; its scheduled runs fail at the prompt (team mode's apply refuses it)" if prompt else ""),
                WARNING if prompt else ERROR))
    return findings


def _open_secrets(ws: Workspace) -> None:
    """The secrets opened exactly as a run opens them (the same key lookup, the same errors), then closed:
    an encrypted workspace whose key is not here fails validate as it would fail the run."""
    from polycrate.secrets import open_runtime_secrets

    open_runtime_secrets(ws.root, list(ws.blocks)).close()


def check_notifications(ws: Workspace) -> list[Finding]:
    """The secrets the mail and chat channels name exist (secrets.poly's when it can be read here; the
    environment's, as a warning): a typo shows now, not in the night's warning line."""
    channels_ = ws.run_settings.notifications
    if not channels_:
        return []
    from polycrate.notify import channels

    config = None
    if any(ref.source == "secret" for c in channels_ for _, ref in channels.references(c)):
        try:
            from polycrate.secrets import open_runtime_secrets

            with open_runtime_secrets(ws.root, list(ws.blocks)) as opened:
                config = opened.poly.config if opened.poly is not None else {}
        except PolycrateError as exc:
            return [Finding(str(ws.file), None, f"notifications: secrets.poly not checked: {exc.message}", WARNING)]
    return [Finding(str(ws.file), ref.line, message, ERROR if error else WARNING)
            for ref, message, error in channels.check_references(channels_, config)]


def check_inventory(ws: Workspace, targets: Sequence[Target] = (), runtime: Any = None) -> list[Finding]:
    """The file rules every input of ours follows (a regular file, UTF-8, no control characters, our YAML
    limits), for the workspace's inventory and each ansible target's own
    (artifacts/blocks/BLOCK/inventory.yml); the meaning is Ansible's (check_playbooks). With the
    container runtime: a warning for hosts with ``ansible_connection: local`` (they are the container)."""
    from polycrate.config import yamlfile
    from polycrate.config.action_view import block_inventory

    files = [ws.inventory]
    for target in targets:
        own = block_inventory(ws, target.block) if target.action.type == "ansible" else None
        if own is not None and own not in files:
            files.append(own)
    container = getattr(runtime, "container", runtime == "container")
    ansible = any(t.action.type == "ansible" for t in targets)
    warnings = []
    for file in files:
        try:
            if yamlfile.regular_file(file):
                text = yamlfile.read_text(file, INVENTORY_MAX_BYTES)
                yamlfile.check_text(text, file)
                if file.suffix in (".yml", ".yaml"):
                    # a fleet's hosts are one mapping: bounded by the count of values, not of keys
                    data = yamlfile.parse_yaml(text, file, max_keys=yamlfile.MAX_NODES)
                    local = local_connection_hosts(data) if container and ansible else []
                    if local:
                        warnings.append(Finding(
                            str(file), None,
                            f"host{'s' if len(local) > 1 else ''} {', '.join(local[:5])}"
                            f"{f' (+{len(local) - 5})' if len(local) > 5 else ''} with ansible_connection: local"
                            " run in the container: they check the container, not this machine; say --local or "
                            "config.runtime: local", WARNING))
        except PolycrateError as exc:
            return [Finding(exc.path, exc.line, exc.message)]
    return warnings


def local_connection_hosts(data: Any) -> list[str]:
    """The inventory's hosts whose ``ansible_connection`` is ``local`` (their own, or their group's)."""
    found: set[str] = set()

    def walk(group: Any, inherited: bool, depth: int) -> None:
        if not isinstance(group, dict) or depth > 64:
            return
        declared = group.get("vars")
        own: dict[Any, Any] = declared if isinstance(declared, dict) else {}
        local = inherited if "ansible_connection" not in own else str(own["ansible_connection"]) == "local"
        hosts = group.get("hosts")
        if isinstance(hosts, dict):
            for name, variables in hosts.items():
                conn = variables.get("ansible_connection") if isinstance(variables, dict) else None
                if conn == "local" or (conn is None and local):
                    found.add(str(name))
        children = group.get("children")
        if isinstance(children, dict):
            for child in children.values():
                walk(child, local, depth + 1)

    if isinstance(data, dict):
        for group in data.values():
            walk(group, False, 0)
    return sorted(found)


def check_script(block: Block, action: Action, ws: Workspace | None = None,
                 secrets: RuntimeSecrets | None = None) -> list[Finding]:
    """The script's Go templates filled in, then ``bash -n`` on the script exactly as it will run; a
    template that cannot be filled in, or a syntax error, names the script line."""
    from polycrate.runtime.script import script_line, script_text

    lines = action.script
    if ws is not None:
        from polycrate.runtime.action import ActionRequest
        from polycrate.runtime.script import rendered_script

        try:
            lines = rendered_script(ActionRequest(ws=ws, block=block, action=action, secrets=secrets))
        except PolycrateError as exc:
            return [Finding(exc.path, exc.line, exc.message, block=block.name, action=action.name)]
    folder = Path(tempfile.mkdtemp(prefix="polycrate-preflight-"))
    try:
        path = folder / "action.sh"
        path.write_text(script_text(lines), encoding="utf-8")
        proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if proc.returncode == 0:
        return []
    findings = []
    for line in proc.stderr.splitlines():
        text = line.removeprefix(str(path) + ": ")
        where = ""
        if text.startswith("line "):
            number, _, rest = text[5:].partition(": ")
            mapped = script_line(lines, int(number)) if number.isdigit() else None
            if mapped:
                where = f"script line {mapped[0]} `{mapped[1].strip()}`: "
            text = rest
        findings.append(Finding(str(block.definition.file), action.line, f"{where}bash: {text}",
                                block=block.name, action=action.name))
    return findings[:1] or [Finding(str(block.definition.file), action.line, "bash -n failed",
                                    block=block.name, action=action.name)]


def check_playbooks(ws: Workspace, targets: list[Target], *, secrets: RuntimeSecrets | None = None,
                    zygote: Zygote | None = None, runtime: Runtime | None = None,
                    ansible: AnsibleOptions | None = None, display_env: tuple[tuple[str, str], ...] = (),
                    ssh_sharing: SSHSharing | None = None, container: RunContainer | None = None) -> Report:
    """The Ansible half: one Ansible process per distinct Ansible configuration (a block folder
    with its own ansible.cfg gets its own), forked from `zygote` when it fits. `ansible` (the run's
    AnsibleOptions) adds its --extra-vars over ours and its --limit to every pattern, as in the run.
    `display_env` is the run's (engine.RunOptions): with it the environment is the steps', so the
    zygote's configuration fits and the check forks warm instead of starting a cold process.
    `container` (the run's runtime.run_container.RunContainer): the check runs in it, forked from its
    zygote, as the steps will."""
    from polycrate.runtime.action import ActionRequest
    from polycrate.runtime.ansible_options import merged_extra_vars

    report = Report()
    extra = merged_extra_vars(ansible.extra_vars) if ansible is not None and ansible.extra_vars else {}
    groups = _playbook_groups(ws, targets, report)
    if not groups:
        return report
    # 0700: variables may carry secrets; in the run's container folder when there is one (the container sees it)
    private = Path(tempfile.mkdtemp(prefix="polycrate-preflight-", dir=container.folder if container else None))
    try:
        for index, ((own, inventory), items) in enumerate(groups.items()):
            first = items[0][0]
            request = ActionRequest(ws=ws, block=first.block, action=first.action, secrets=secrets, runtime=runtime,
                                    ansible_options=ansible, extra_env=dict(display_env),
                                    ssh_sharing=ssh_sharing)
            playbooks = []
            for n, (target, path) in enumerate(items):
                variables = _write_variables(private / f"vars-{index}-{n}.json", ws, target, secrets, extra)
                playbooks.append({"key": n, "path": str(path), "vars_file": str(variables),
                                  "allow_no_hosts": target.allow_no_hosts})
            request_file = private / f"request-{index}.json"
            request_file.write_text(json.dumps({
                "inventory": str(inventory) if inventory is not None else None, "playbooks": playbooks,
                "limit": ansible.limit if ansible is not None else None}))
            result = _run_ansible_half(request, request_file, private, own or first.block.folder, zygote, container)
            _add_result(report, items, result)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return report


def _playbook_groups(ws: Workspace, targets: list[Target], report: Report
                     ) -> dict[tuple[Path | None, Path | None], list[tuple[Target, Path]]]:
    """The ansible targets by Ansible configuration and inventory: one Ansible process for each group
    (a block may have its own ansible.cfg, and its own inventory in its artifacts)."""
    from polycrate.config.action_view import block_inventory, playbook_path

    groups: dict[tuple[Path | None, Path | None], list[tuple[Target, Path]]] = {}
    for target in targets:
        if target.action.type != "ansible":
            continue
        try:
            path = playbook_path(target.block, target.action)
        except PolycrateError as exc:
            report.findings.append(Finding(exc.path, exc.line, exc.message, block=target.block.name,
                                           action=target.action.name))
            continue
        own = target.block.folder if (target.block.folder / "ansible.cfg").is_file() else None
        groups.setdefault((own, block_inventory(ws, target.block)), []).append((target, path))
    return groups


def _write_variables(variables: Path, ws: Workspace, target: Target, secrets: RuntimeSecrets | None,
                     extra: dict[str, Any]) -> Path:
    """The variables the action gets, with the run's --extra-vars over them, in a file only we can read."""
    from polycrate.runtime.action import ActionRequest, action_variables
    from polycrate.runtime.ansible_options import dump_unsafe_yaml, has_unsafe

    fd = os.open(variables, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        variables_of = action_variables(ActionRequest(ws=ws, block=target.block, action=target.action,
                                                      secrets=secrets))
        if has_unsafe(extra):
            # values that arrived as data stay `!unsafe` here too: the check templates play fields
            handle.write(dump_unsafe_yaml(json.loads(json.dumps(variables_of, default=str)) | extra))
        else:
            json.dump(variables_of | extra, handle, default=str)  # extra vars win whole, as in Ansible
    return variables


def _add_result(report: Report, items: list[tuple[Target, Path]], result: dict[str, Any]) -> None:
    """One Ansible process's answer into the report: its findings, its plays' host counts."""
    if "error" in result:
        report.findings.append(Finding(None, None, f"preflight: Ansible's check failed: {result['error']}"))
    for item in result.get("findings", []):
        owner = items[item["key"]][0] if item.get("key") is not None else None
        report.findings.append(Finding(
            item.get("path"), item.get("line"), item["message"], item.get("severity", ERROR),
            block=owner.block.name if owner else None, action=owner.action.name if owner else None,
        ))
    for play in result.get("plays", []):
        target = items[play.pop("key")][0]
        report.plays.append({"block": target.block.name, "action": target.action.name, **play})
    if result.get("inventory_hosts") is not None:
        report.inventory_hosts = result["inventory_hosts"]


def _run_ansible_half(request: ActionRequest, request_file: Path, private: Path, cwd: Path, zygote: Zygote | None,
                      container: RunContainer | None = None) -> dict[str, Any]:
    from polycrate.runtime.action import event_environment
    from polycrate.runtime.process import stream
    from polycrate.runtime.ansible import ansible_environment
    from polycrate.runtime.playbook_check import RESULT_MARK

    # the environment of a step (so the zygote's configuration fits), without its event stream
    env = event_environment(ansible_environment(request), private / "events.jsonl")
    argv = [sys.executable, "-m", "polycrate.runtime.ansible_playbook", "--polycrate-preflight", str(request_file)]
    lines: list[str] = []
    if container is not None:  # in the run's container: its paths in the files and the command
        from polycrate.runtime.container import _rewrite_private_files

        _rewrite_private_files(private, container.paths)
        argv, env, cwd = container.process(request, argv, env, cwd)
        zygote = container.connected()
    code = stream(argv, env, cwd, lines.append, zygote=zygote)
    for line in reversed(lines):
        if line.startswith(RESULT_MARK):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARK):])
            return container.host_paths(result) if container is not None else result
    tail = next((line for line in reversed(lines) if line.strip()), "")
    return {"error": f"exit status {code}" + (f": {tail}" if tail else "")}


def check_workspace(ws: Workspace) -> Report:
    """`workspace validate`: every action checked as a run checks it, with the workspace's secrets opened as a run
    opens them (a script or playbook that uses a secret config value is checked with it, not with `<no value>`).
    Secrets that cannot be opened here are the settings check's finding, and the rest is checked without them."""
    from polycrate.secrets import open_runtime_secrets

    try:
        opened = open_runtime_secrets(ws.root, list(ws.blocks))
    except PolycrateError:
        return check(ws, workspace_targets(ws))
    from polycrate.config.workspace import with_secret_values

    with opened:
        ws = with_secret_values(ws, opened.poly)  # secrets.poly's config over the workspace's, as a run sees it
        return check(ws, workspace_targets(ws), secrets=opened)


def check(ws: Workspace, targets: list[Target], *, settings: bool = True, secrets: RuntimeSecrets | None = None,
          zygote: Zygote | None = None, runtime: Runtime | None = None, ansible: AnsibleOptions | None = None,
          display_env: tuple[tuple[str, str], ...] = (), ssh_sharing: SSHSharing | None = None,
          container: RunContainer | None = None) -> Report:
    started = time.monotonic()
    findings = check_settings(ws) if settings else []
    for target in targets:
        if target.action.type == "script":
            findings += check_script(target.block, target.action, ws, secrets)
    inventory = check_inventory(ws, targets, runtime)
    findings += inventory
    if any(f.severity == ERROR for f in inventory):  # Ansible would only repeat it, less clearly
        targets = [t for t in targets if t.action.type != "ansible"]
    report = check_playbooks(ws, targets, secrets=secrets, zygote=zygote, runtime=runtime, ansible=ansible,
                             display_env=display_env, ssh_sharing=ssh_sharing, container=container)
    report.findings = findings + report.findings
    report.seconds = time.monotonic() - started
    return report


class PreflightFailed(PolycrateError):
    """A run's preflight found errors: nothing ran, nothing was recorded. One line, naming the first
    error's file and line (and the step that would have failed)."""

    def __init__(self, report: Report, step: str | None = None, mask: Callable[[str], str] = lambda text: text
                 ) -> None:
        first = report.errors[0]
        more = len(report.errors) - 1
        message = first._text() + (f" (and {more} more: polycrate workspace validate)" if more else "")
        message += f"; step {step} would fail, nothing was run" if step else "; nothing was run"
        super().__init__(mask(message), first.path, first.line)
        self.report = report
