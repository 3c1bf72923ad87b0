"""A run that became ``lost`` tells the team as a failed run does: the workspace's webhooks and mail/chat
notifications (`webhooks:`, `notifications:`) with the run's record as body, sent by the worker that marked it
lost (``worker.reap``), since the run's own process is gone and nobody else will.

The worker reads the workspace from the folder the launch named (on the worker's host: the same path), and the
notifications' secrets with its own age identity, as the run would have. What fails (no workspace here, a
secret it cannot read, an endpoint that does not answer) is a notice of the run; the run stays lost.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from polycrate.history.postgres import PostgresRunStore


def announce(dsn: str, row: dict[str, Any]) -> int:
    """Send the lost run's webhooks and notifications (those whose `on:` wants a failure); how many were
    delivered. ``row``: the run's team_runs row. Never raises: what goes wrong is a notice of the run."""
    store = PostgresRunStore(dsn, workspace=row["workspace"])
    try:
        return _announce(store, row, lambda text: store.add_notice(row["id"], text))
    except Exception as exc:  # the reaper goes on; the run's record keeps why nobody was told
        try:
            store.add_notice(row["id"], f"webhooks and notifications of the lost run: not sent: {type(exc).__name__}: "
                             f"{str(exc).strip()[:200]}")
        except Exception:
            pass
        return 0
    finally:
        store.close()


def _announce(store: PostgresRunStore, row: dict[str, Any], notice: Callable[[str], None]) -> int:
    from polycrate import contract
    from polycrate.config.workspace import load_workspace
    from polycrate.errors import PolycrateError
    from polycrate.notify import channels, webhooks
    from polycrate.run.context import masked
    from polycrate.secrets import open_runtime_secrets

    root = Path(row["root"])
    if not (root / "workspace.poly").is_file():
        notice(f"webhooks and notifications of the lost run: not sent: the workspace folder {root} is not on this "
               "worker's host")
        return 0
    ws = load_workspace(root)
    hooks, targets = ws.run_settings.webhooks, ws.run_settings.notifications
    if not hooks and not targets:
        return 0
    record = store.get_run(row["id"])
    try:
        opened = open_runtime_secrets(ws.root, list(ws.blocks))
    except PolycrateError as exc:
        # the record was masked when it was written: the webhooks go; a channel that needs a secret says why not
        notice(f"notifications of the lost run: secrets not readable on this worker ({exc})")
        body = contract.webhook_body(record, ws.name)
        sent = webhooks.send_all(hooks, body, notice)
        return sent + channels.send_all(targets, body, notice, channels.Secrets(None))
    with opened:
        masker = opened.masker

        def masked_notice(text: str) -> None:
            notice(masker.mask(text))

        body = masked(masker, contract.webhook_body(record, ws.name))
        sent = webhooks.send_all(hooks, body, masked_notice)
        poly = opened.poly
        return sent + channels.send_all(targets, body, masked_notice,
                                        channels.Secrets(poly.config if poly is not None else None, masker))


__all__ = ["announce"]
