"""Webhooks: a JSON summary of a finished run, POSTed to the URLs in `webhooks:`.

A webhook never fails a run: every error comes back as a message for the run's
notices. The timeout is short so a dead endpoint delays the end of a run by
seconds, not minutes.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any
from collections.abc import Callable

from polycrate.config.model import Notification, Webhook
from polycrate.states import RunKind, RunState

TIMEOUT_SECONDS = 5.0


def wanted(hook: Webhook | Notification, payload: dict[str, Any]) -> bool:
    """Whether a webhook or a notification (channels.py) wants this run, by its `on:`.
    `failure`: a failed or interrupted run. `success`: a succeeded action run, or a workflow
    success (polycrate.success: a --step or check-mode run of a workflow is none)."""
    if payload.get("status") != RunState.SUCCEEDED:
        return "failure" in hook.on
    if payload.get("kind") == RunKind.WORKFLOW and not payload.get("workflow_success"):
        return False
    return "success" in hook.on


def post(hook: Webhook, payload: dict[str, Any], timeout: float = TIMEOUT_SECONDS) -> None:
    body = json.dumps(payload, default=str).encode("utf-8")
    headers = {"Content-Type": "application/json", "User-Agent": "polycrate-webhook"}
    headers.update(dict(hook.headers))
    request = urllib.request.Request(hook.url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read(1024)


def shown(number: int, url: str) -> str:
    """How a webhook is named in notices: its place in `webhooks:` and its origin only. The path, query
    and user info of a webhook URL often carry its token (Slack's /services/T/B/TOKEN, ?token=...)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{number} ({parts.scheme}://{host}{port}/...)"


def send_all(hooks: tuple[Webhook, ...], payload: dict[str, Any], notice: Callable[[str], None]) -> int:
    """POST to every hook that wants this status; return how many succeeded. Errors go to `notice`."""
    sent = 0
    for number, hook in enumerate(hooks, 1):
        if not wanted(hook, payload):
            continue
        try:
            post(hook, payload)
            sent += 1
        except urllib.error.HTTPError as exc:
            notice(f"webhook {shown(number, hook.url)} answered HTTP {exc.code}; the run's result stands")
        except Exception as exc:  # a webhook never fails a run
            reason = getattr(exc, "reason", None) or exc
            notice(f"webhook {shown(number, hook.url)} failed: {reason}; the run's result stands")
    return sent
