"""`polycrate actions list`"""
from __future__ import annotations

from polycrate.cli.completion import ACTION, BLOCK, names
from polycrate.cli.render import emit_json, table, workspace_from


def register(sub, shared) -> None:
    group = sub.add_parser("action", aliases=["actions"], parents=[shared], help="list the actions of the workspace's blocks")
    asub = group.add_subparsers(dest="actions_command", metavar="COMMAND")
    asub.required = True
    p = asub.add_parser("list", parents=[shared], help="list actions")
    names(p.add_argument("--block", help="only this block's actions"), BLOCK)
    p.set_defaults(func=cmd_list)
    p = asub.add_parser("inspect", parents=[shared], help="show one action")
    names(p.add_argument("block"), BLOCK)
    names(p.add_argument("action"), ACTION)
    p.set_defaults(func=cmd_inspect)

    from polycrate.cli.run import add_run_options, cmd_run

    p = asub.add_parser("run", parents=[shared], help="run one action (as `polycrate run BLOCK ACTION`)")
    names(p.add_argument("block"), BLOCK)
    names(p.add_argument("action"), ACTION)
    add_run_options(p)
    p.set_defaults(func=cmd_run)


def cmd_inspect(args) -> int:
    import yaml

    from polycrate.workspace import get_action, get_block

    ws = workspace_from(args)
    block = get_block(ws, args.block)
    action = get_action(block, args.action)
    data = {"name": action.name, "block": block.name, "type": action.type, "description": action.description,
            "playbook": action.playbook, "script": list(action.script) or None,
            "prompt": action.prompt.message if action.prompt else None, "labels": dict(action.labels) or None}
    if args.output == "json":
        emit_json(data)
    else:
        print(yaml.safe_dump({k: v for k, v in data.items() if v not in (None, "")}, sort_keys=False).rstrip())
    return 0


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
