"""A run as the real Polycrate records it: the snapshot an action gets (`--snapshot`), the run's event
(`--event-handler workspace|webhook`) and the workspace's git commits around it (`--auto-commit`).

The event has the fields of Polycrate's (cmd/polycrate.go, PolycrateEvent): labels
(`monk.event.class`, `monk.event.level`), workspace, workflow, step, block, action, command, exit_code,
user_email, user_name, date, snapshot (workspace, action, block, workflow, env, mounts), transaction
(our run id), version, commit_sha, output, config (handler, endpoint) and message ("Transaction
stopped|failed|killed"), plus ours: status and steps. Handler `workspace` writes it as YAML to
`.logs/YYYY/MM/DD/<run id>.yml` in the workspace; `webhook` POSTs it as JSON to the endpoint.
Neither ever changes a run's result: a failure is a notice of the run.
"""
from __future__ import annotations

import getpass
import json
import os
import time
from datetime import datetime
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from polycrate import __version__
from polycrate.states import RunKind, RunState

if TYPE_CHECKING:
    from polycrate.history import RunRecord, RunStore

LOGS_ROOT = ".logs"  # Polycrate's workspace logs root
OUTPUT_LIMIT = 256 * 1024  # characters of the run's output kept in an event (the tail); `runs logs` has all
WEBHOOK_TIMEOUT = 5.0

_LEVEL = {RunState.SUCCEEDED: ("Info", "Transaction stopped"), RunState.FAILED: ("Error", "Transaction failed"),
          RunState.INTERRUPTED: ("Error", "Transaction killed"), RunState.LOST: ("Error", "Transaction lost")}


# --------------------------------------------------------------------------- the snapshot


def run_snapshot(ws, options, runtime_name: str, *, workflow: str | None = None, block: str | None = None,
                 action: str | None = None, only_step: str | None = None) -> dict[str, Any]:
    """What `--snapshot` prints: the merged workspace, the workflow or block and action, and the
    environment and mounts the (first) action would get, with the paths of the runtime it would run in."""
    from polycrate.runtime.action import ActionRequest
    from polycrate.runtime.ansible import ansible_environment
    from polycrate.runtime.container import WORKSPACE_MOUNT, PathMap
    from polycrate.runtime.toolchain import Runtime
    from polycrate.config.workspace import get_action, get_block, get_workflow
    from polycrate.config.action_view import action_vars, block_vars, snapshot, step_vars, workflow_vars

    data = snapshot(ws)
    step_name = None
    if workflow is not None:
        wf = get_workflow(ws, workflow)
        steps = [s for s in wf.steps if only_step is None or s.name == only_step] or list(wf.steps)
        data["workflow"] = workflow_vars(wf)
        if steps:
            block, action, step_name = steps[0].block, steps[0].action, steps[0].name
            data["step"] = step_vars(wf, steps[0])
    env: dict[str, str] = {}
    mounts: dict[str, str] = {}
    if block is not None and action is not None:
        b = get_block(ws, block)
        a = get_action(b, action)
        data["block"] = block_vars(ws, b)
        data["action"] = action_vars(b, a)
        container = runtime_name == "container"
        runtime = Runtime("container", None, ws.toolchain.image) if container else None
        request = ActionRequest(ws=ws, block=b, action=a, workflow=workflow, step=step_name, runtime=runtime,
                                ansible_options=options.ansible, env=options.env, ssh_key=options.ssh_key,
                                force=options.force, check=options.check)
        full = ansible_environment(request) if a.type == "ansible" else _script_environment(request)
        given = {k for k, _ in options.env}
        env = {k: v for k, v in sorted(full.items()) if k in given or os.environ.get(k) != v}
        if container:
            paths = PathMap({str(ws.root): WORKSPACE_MOUNT})
            env = {k: (v if k in given else paths.text(v)) for k, v in env.items()}
            data = paths.data(data)
            mounts = {str(ws.root): WORKSPACE_MOUNT} | {m.host: m.container for m in options.mounts}
    data["env"] = env
    data["mounts"] = mounts
    return data


def _script_environment(request) -> dict[str, str]:
    from polycrate.runtime.action import action_environment

    return action_environment(request)


# --------------------------------------------------------------------------- the event


def _output(store: RunStore, run_id: str) -> str:
    try:
        _, logs = store.step_logs(run_id)
    except Exception:
        return ""
    text = "".join(body for _, body in logs)
    if len(text) > OUTPUT_LIMIT:
        cut = len(text) - OUTPUT_LIMIT
        text = f"... ({cut} characters cut: `polycrate runs logs {run_id}` has the whole output)\n" + text[cut:]
    return text


def _user(root: Path) -> tuple[str, str]:
    from polycrate.config import gitrepo as gitcli

    try:
        return gitcli.config_value(root, "user.email"), gitcli.config_value(root, "user.name") or getpass.getuser()
    except Exception:
        return "", getpass.getuser()


def event_document(*, ws, result, record: RunRecord, store: RunStore, options, snapshot: dict, commit_sha: str) -> dict[str, Any]:
    level, message = _LEVEL.get(result.status, ("Warning", "Transaction running but not finished"))
    email, name = _user(ws.root)
    started = record.started or time.time()
    doc: dict[str, Any] = {
        "labels": {"monk.event.class": "polycrate", "monk.event.level": level},
        "workspace": ws.name,
    }
    if result.kind == RunKind.WORKFLOW:
        doc["workflow"] = result.name
        if record.only_step:
            doc["step"] = record.only_step
    else:
        doc["block"], doc["action"] = record.block, record.action
    doc.update({
        "command": options.command or None,
        "exit_code": record.exit_code,
        "user_email": email or None,
        "user_name": name or None,
        "date": datetime.fromtimestamp(started).astimezone().isoformat(timespec="seconds"),  # RFC 3339
        "snapshot": snapshot,
        "transaction": result.run_id,
        "version": __version__,
        "commit_sha": commit_sha or None,
        "output": _output(store, result.run_id),
        "config": {"handler": options.event_handler, "endpoint": options.event_endpoint},
        "message": message,
        "status": str(result.status),
        "steps": [{"name": s.name, "block": s.block, "action": s.action, "status": str(s.status),
                   "duration": round(s.duration, 3)} for s in result.steps],
    })
    if not doc["config"]["endpoint"]:
        del doc["config"]["endpoint"]
    return {k: v for k, v in doc.items() if v is not None}


def event_path(root: Path, run_id: str, logs_root: str = LOGS_ROOT, when: float | None = None) -> Path:
    day = time.strftime("%Y/%m/%d", time.localtime(when if when is not None else time.time()))
    return root / logs_root / day / f"{run_id}.yml"


def write_event(root: Path, doc: dict[str, Any], logs_root: str = LOGS_ROOT) -> Path:
    import yaml

    from polycrate.atomicfile import write_atomic

    path = event_path(root, doc["transaction"], logs_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(json.loads(json.dumps(doc, default=str)), sort_keys=False, allow_unicode=True)
    write_atomic(path, text, 0o644)
    return path


def post_event(endpoint: str, doc: dict[str, Any]) -> int:
    body = json.dumps(doc, default=str).encode("utf-8")
    request = urllib.request.Request(endpoint, data=body, method="POST", headers={
        "Content-Type": "application/json; charset=UTF-8", "User-Agent": "polycrate-event"})
    with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:
        response.read(1024)
        return response.status


def submit(doc: dict[str, Any], root: Path, handler: str, endpoint: str | None, notice: Callable[[str], None],
           logs_root: str = LOGS_ROOT) -> None:
    """`logs_root`: workspace.poly's `config.logsroot` (Polycrate's), relative to the root."""
    try:
        if handler == "workspace":
            path = write_event(root, doc, logs_root)
            notice(f"event: {path.relative_to(root)}")
        elif handler == "webhook" and endpoint:
            post_event(endpoint, doc)
    except urllib.error.HTTPError as exc:
        notice(f"event: {endpoint} answered HTTP {exc.code}; the run's result stands")
    except Exception as exc:  # an event never fails a run
        reason = getattr(exc, "reason", None) or exc
        notice(f"event: could not submit to {endpoint or logs_root}: {reason}; the run's result stands")


# --------------------------------------------------------------------------- git around a run


def secret_paths(root: Path, ssh_key: Path | None) -> list[str]:
    """Plaintext secrets auto-commit leaves out: artifacts/secrets and secrets.poly unencrypted, and
    the workspace's private SSH key."""
    out = []
    try:
        from polycrate.secrets.files import walk_secret_files

        out += [p for p in walk_secret_files(root) if not p.name.endswith(".age")]
    except Exception:
        pass
    for key in (ssh_key, root / "id_rsa"):
        if key is not None and key.is_file():
            out.append(key)
    rels = []
    for path in out:
        try:
            rels.append(str(path.resolve().relative_to(root.resolve())))
        except ValueError:
            continue
    return sorted(set(rels))


def auto_commit(root: Path, message: str, ssh_key: Path | None, notice: Callable[[str], None]) -> str | None:
    from polycrate.config import gitrepo as gitcli

    left_out = secret_paths(root, ssh_key)
    sha = gitcli.commit_all(root, message, exclude=left_out)
    if left_out and gitcli.untracked_or_changed(root, left_out):
        notice(f"auto-commit: left out plaintext secrets: {', '.join(left_out)}")
    if sha:
        notice(f"auto-commit: {sha[:12]} {message}")
    return sha


__all__ = ["auto_commit", "event_document", "event_path", "run_snapshot", "submit", "write_event"]
