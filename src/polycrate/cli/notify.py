"""`polycrate notify test`: a test message on each mail and chat channel of `notifications:`."""
from __future__ import annotations

import getpass
import socket
import sys

from polycrate.cli.render import emit_json, workspace_from
from polycrate.errors import EXIT_ACTION_FAILED, PolycrateError


def register(sub, shared) -> None:
    group = sub.add_parser("notify", parents=[shared], help="mail and chat notifications (notifications:)")
    nsub = group.add_subparsers(dest="notify_command", metavar="COMMAND")
    nsub.required = True
    p = nsub.add_parser("test", parents=[shared], help="send a test message on each configured channel")
    p.add_argument("channels", nargs="*", metavar="NAME", help="only these channels (default: all)")
    p.set_defaults(func=cmd_test)


def cmd_test(args) -> int:
    """One line per channel: `sent` on stdout, the reason on stderr; exit 1 when any channel failed."""
    from polycrate.notify import channels
    from polycrate.secrets import open_runtime_secrets
    from polycrate.config.workspace import closest

    ws = workspace_from(args)
    configured = {c.name: c for c in ws.run_settings.notifications}
    if not configured:
        raise PolycrateError("no notifications: to test; declare them under notifications: in workspace.poly "
                             "(polycrate docs: how-to/alerts.md)",
                             ws.file)
    for name in args.channels:
        if name not in configured:
            raise PolycrateError(f"no notification '{name}'" + closest(name, configured), ws.file)
    chosen = [configured[n] for n in (args.channels or configured)]
    with open_runtime_secrets(ws.root, list(ws.blocks)) as opened:
        secrets = channels.Secrets(opened.poly.config if opened.poly is not None else None, opened.masker)
        mask = opened.masker.mask
        sent_by = f"{getpass.getuser()}@{socket.gethostname()}"
        results = []
        for channel in chosen:
            try:
                channels.send(channel, channels.probe_payload(ws.name, channel, sent_by), secrets)
                results.append({"name": channel.name, "type": channel.type, "sent": True, "error": None})
            except Exception as exc:  # ChannelError, or anything else: one line, never a traceback
                reason = str(exc) if isinstance(exc, channels.ChannelError) else f"{type(exc).__name__}: {exc}"
                results.append({"name": channel.name, "type": channel.type, "sent": False, "error": mask(reason)})
    if args.output in ("json", "yaml"):
        from polycrate import contract

        emit_json(contract.document("notify-test", {"channels": results}), args.format)
    else:
        for r in results:
            if r["sent"]:
                print(f"sent: notification '{r['name']}' ({r['type']})")
            else:
                print(f"polycrate: error: notification '{r['name']}' ({r['type']}) failed: {r['error']}",
                      file=sys.stderr)
    return EXIT_ACTION_FAILED if any(not r["sent"] for r in results) else 0
