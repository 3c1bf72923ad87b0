"""The one JSON contract: what `-o json` (and `-o yaml`, the same data), the webhook body and the
server's API carry. Every machine-readable document is built here, so one thing has one name and
one shape everywhere:

- a document is a JSON object whose first key, ``schema``, names the JSON Schema it follows:
  ``urn:polycrate:NAME:vN``, the file ``src/polycrate/contract/schemas/NAME.vN.schema.json`` (draft 2020-12);
- a run is named ``run_id`` (in runs, webhooks, logs, launches); its ``status`` and its steps'
  ``status`` are ``polycrate.states`` values;
- times are ISO 8601 UTC strings (``2026-12-01T02:15:00.123Z``); durations are seconds as numbers
  (``duration``, ``timeout``, ``retry_delay``, ...);
- every key is always present: null when unset, ``[]``/``{}`` for an empty collection; data fields
  carry data, never prose (a script action has ``script``, its lines, not "3 script lines").

Versioning: within a version keys are only added; renaming, removing or retyping a key, or changing
its meaning, makes the next version (a new file beside the old one).
Runs are built from the run store's typed records (``history.RunRecord``, ``StepRecord``), the one place
their field names meet the contract's; only the documents that leave polycrate pass through here.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Iterable, Mapping

from polycrate.states import RunState, StepState, signal_of

if TYPE_CHECKING:
    from polycrate.history.records import RunRecord, StepRecord

SCHEMA_DIR = Path(__file__).parent / "schemas"
VERSION = 1
HOST_COUNT_KEYS = ("ok", "changed", "failed", "unreachable", "skipped", "rescued", "ignored")


def schema_id(name: str, version: int = VERSION) -> str:
    return f"urn:polycrate:{name}:v{version}"


def schema_file(name: str, version: int = VERSION) -> Path:
    return SCHEMA_DIR / f"{name}.v{version}.schema.json"


@cache
def load_schema(name: str, version: int = VERSION) -> dict:
    return json.loads(schema_file(name, version).read_text(encoding="utf-8"))


def document(name: str, data: Mapping[str, Any]) -> dict:
    """``data`` as the document ``name``: ``schema`` first, then the data."""
    return {"schema": schema_id(name), **data}


def timestamp(epoch: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds (``...T02:15:00.123Z``); None stays None."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(float(epoch), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seconds(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


# --- runs ---------------------------------------------------------------------------------------


def _state(value: Any) -> str:
    return str(value.value) if isinstance(value, (RunState, StepState)) else str(value)


def ansible_options(record: Mapping[str, Any] | None) -> dict:
    from polycrate.runtime.ansible_options import AnsibleOptions

    return AnsibleOptions.from_record(dict(record or {})).to_record()


def step(record: StepRecord) -> dict:
    """A step of a recorded run (``history.StepRecord``)."""
    return {
        "position": record.position,
        "name": record.name,
        "block": record.block,
        "action": record.action,
        "phase": _state(record.phase or "main"),
        "status": _state(record.status),
        "exit_code": record.exit_code,
        "signal": signal_of(record.exit_code),
        "attempts": record.attempts or 0,
        "started": timestamp(record.started),
        "ended": timestamp(record.ended),
        "duration": seconds(record.duration),
        "failed_task": record.failed_task,
        "failed_host": record.failed_host,
        "message": record.message,
        "note": record.note,
        "log": record.log,
        "hosts": {host: counts.as_dict() for host, counts in record.hosts.items()},
    }


def run(record: RunRecord, workspace: str | None, *, steps: bool = True) -> dict:
    """A recorded run (``history.RunRecord``, from ``RunStore.get_run``/``list_runs``) as the contract's run object."""
    current = record.current_step
    if current is None and record.status == RunState.RUNNING:
        running = [s.name for s in record.steps if s.status == StepState.RUNNING]
        current = running[-1] if running else None
    data = {
        "run_id": record.id,
        "workspace": workspace,
        "kind": _state(record.kind),
        "name": record.name,
        "workflow": record.workflow,
        "block": record.block,
        "action": record.action,
        "only_step": record.only_step,
        "status": _state(record.status),
        "exit_code": record.exit_code,
        "workflow_success": bool(record.workflow_success),
        "check_mode": bool(record.check_mode),
        "diff_mode": bool(record.diff_mode),
        "resumed_from": record.resumed_from,
        "started": None if record.never_started else timestamp(record.started),  # stopped while queued
        "ended": timestamp(record.ended),
        "duration": seconds(record.duration),
        "current_step": current if record.status == RunState.RUNNING else None,
        "failed_step": record.failed_step,
        "failed_task": record.failed_task,
        "failed_host": record.failed_host,
        "message": record.message,
        "user": record.user,
        "host": record.host,
        "pid": record.pid,
        "ansible_options": ansible_options(record.ansible_options),
        "runtime": record.runtime,
        "image": record.image,
        "image_digest": record.image_digest,
        "notices": [{"time": timestamp(n.time), "text": n.text} for n in record.notices],
    }
    if steps:  # runs show: a run a schedule launched late says so (team mode)
        data["late_by"] = seconds(record.late_by) if record.late_by is not None else None
        data["late_reason"] = record.late_reason
        data["git_commit"] = record.git_commit  # team mode: the commit a worker ran
        data["steps"] = [step(s) for s in record.steps]
    return data


def run_document(record: RunRecord, workspace: str | None) -> dict:
    """`runs show`, `run`, `workflows run`: one run with its steps (schema ``run``)."""
    return document("run", run(record, workspace))


def runs_document(records: Iterable[tuple[RunRecord, str | None]], queued: Iterable[dict] = ()) -> dict:
    """`runs list` and the server's GET /runs: runs newest first, without their steps (schema ``runs``); in team
    mode with ``queued``, the launches no worker has taken yet (team.launch.queued_document), which have no record."""
    data: dict[str, Any] = {"runs": [run(r, ws, steps=False) for r, ws in records]}
    waiting = [queued_run_document(q) for q in queued]
    if waiting:
        data["queued"] = waiting
    return document("runs", data)


def queued_run_document(launch: Mapping[str, Any]) -> dict:
    """A launch no worker has taken yet (team.launch.queued_document) with the contract's times (schema
    ``queued-run``): `runs show -o json` and GET /runs/{id} of it, and the ``queued`` of a runs document."""
    return document("queued-run", {**launch, "launched": timestamp(launch["launched"]),
                                   "scheduled_slot": timestamp(launch["scheduled_slot"])})


def logs_document(run_id: str, logs: Iterable[tuple[StepRecord, str]]) -> dict:
    """`runs logs` and GET /runs/{id}/log: each chosen step's full log (schema ``run-logs``)."""
    return document("run-logs", {
        "run_id": run_id,
        "steps": [{"position": s.position, "name": s.name, "status": _state(s.status), "log": text}
                  for s, text in logs],
    })


WEBHOOK_EVENT = "run.finished"


def webhook_body(record: RunRecord, workspace: str) -> dict:
    """The body of every notification of a finished run (webhooks; mail and chat build on it):
    the run as `runs show -o json` prints it, with ``event`` (schema ``webhook``)."""
    return document("webhook", {"event": WEBHOOK_EVENT, **run(record, workspace)})


# --- workspace things ---------------------------------------------------------------------------


def schedule(spec: Any) -> dict | None:
    """A workflow's schedule (model.Schedule), one shape however `schedule:` was written; None: none."""
    if spec is None:
        return None
    return {
        "kind": spec.kind,
        "expression": spec.expression,
        "randomized_delay": spec.randomized_delay,
        "user": spec.user,
        "group": spec.group,
        "persistent": spec.persistent,
        "timeout": spec.timeout,
        "log_file": spec.log_file,
        "missed": spec.missed,
        "max_delay": spec.max_delay,
    }


def workflow_step(s: Any) -> dict:
    """A declared step (model.Step) with its controls."""
    return {
        "name": s.name,
        "block": s.block,
        "action": s.action,
        "allow_failure": s.allow_failure,
        "allow_no_hosts": s.allow_no_hosts,
        "timeout": s.timeout,
        "retries": s.retries,
        "retry_delay": s.retry_delay,
        "slices": s.slices,
        "prompt": s.prompt.message if s.prompt else None,
        "labels": dict(s.labels),
    }


def launch_variable(v: Any) -> dict:
    """A declared launch variable (config.launch_params.Variable): what may be set at a web or API launch (a
    secret has no default: workspace.poly refuses one)."""
    return {
        "name": v.name,
        "type": v.type,
        "required": v.required,
        "default": v.default,
        "description": v.description or None,
        "choices": list(v.choices) or None,
    }


def workflow(w: Any) -> dict:
    launch = w.launch if w.launch is not None and w.launch.declared else None
    return {
        "name": w.name,
        "description": w.description or None,
        "prompt": w.prompt.message if w.prompt else None,
        "schedule": schedule(w.timer),
        "steps": [workflow_step(s) for s in w.steps],
        "on_failure": [workflow_step(s) for s in w.on_failure],
        "labels": dict(w.labels),
        "queue": w.queue,
        "launch_variables": [launch_variable(v) for v in launch.variables] if launch is not None else None,
    }


def block(ws: Any, b: Any, lock: Mapping[str, Any] | None = None) -> dict:
    """A block of a workspace as `polycrate blocks list/show -o json` and the server's /api/v1/blocks give it."""
    from polycrate.blocks.registry import default_reference
    from polycrate.config.yamlfile import plain

    ref = default_reference(b.definition.relpath)
    pinned = (lock or {}).get(f"{ref.path}:{b.version}") if ref else None
    return {
        "name": b.name,
        "version": b.version,
        "kind": b.kind,
        "template": b.template,
        "labels": dict(b.labels),
        "description": b.definition.description or None,
        "from": b.source,
        "origin": f"{ref.path}:{b.version}" if pinned and ref else "local",
        "digest": pinned.digest if pinned else None,
        "inherits": b.definition.parent,
        "path": str(b.folder.relative_to(ws.root)),
        "config": plain(b.config),
        "actions": [action(b.name, a) for a in b.actions.values()],
    }


def action(block_name: str, a: Any) -> dict:
    """A block's action: `playbook` for ansible, `script` (its lines) for script actions."""
    return {
        "block": block_name,
        "name": a.name,
        "type": a.type,
        "description": a.description or None,
        "playbook": a.playbook if a.type == "ansible" else None,
        "script": list(a.script) if a.type == "script" else None,
        "prompt": a.prompt.message if a.prompt else None,
        "labels": dict(a.labels),
    }


def utc_times(times: Iterable[Any]) -> list[str]:
    """Aware datetimes as the contract's timestamps."""
    return [str(timestamp(t.timestamp())) for t in times]
