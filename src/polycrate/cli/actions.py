"""`polycrate actions list`"""
from __future__ import annotations

from polycrate.cli.render import emit_json, table, workspace_from


def register(sub, shared) -> None:
    group = sub.add_parser("action", aliases=["actions"], parents=[shared], help="list the actions of the workspace's blocks")
    asub = group.add_subparsers(dest="actions_command", metavar="COMMAND")
    asub.required = True
    p = asub.add_parser("list", parents=[shared], help="list actions")
    p.add_argument("--block", help="only this block's actions")
    p.set_defaults(func=cmd_list)


def cmd_list(args) -> int:
    ws = workspace_from(args)
    rows = []
    for block in ws.blocks.values():
        if args.block and block.name != args.block:
            continue
        for action in block.actions.values():
            rows.append(
                {
                    "block": block.name,
                    "action": action.name,
                    "type": action.type,
                    "target": action.playbook if action.type == "ansible" else f"{len(action.script)} script lines",
                    "description": action.description,
                }
            )
    if args.output == "json":
        emit_json(rows)
    else:
        table([tuple(r.values()) for r in rows], ("BLOCK", "ACTION", "TYPE", "RUNS", "DESCRIPTION"))
    return 0
