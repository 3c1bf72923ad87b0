"""`polycrate actions list`"""
from __future__ import annotations

from polycrate.cli.completion import ACTION, BLOCK, names
from polycrate.cli.render import emit_json, table, workspace_from


def register(sub, shared) -> None:
    group = sub.add_parser("action", aliases=["actions"], parents=[shared], help="list the actions of the workspace's blocks")
    asub = group.add_subparsers(dest="actions_command", metavar="COMMAND")
    asub.required = False  # the group alone lists its items, as in the real Polycrate
    group.set_defaults(func=cmd_list, block=None)
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
    from polycrate import contract
    import yaml

    from polycrate.config.workspace import get_action, get_block

    ws = workspace_from(args)
    block = get_block(ws, args.block)
    action = get_action(block, args.action)
    data = contract.action(block.name, action)
    if args.output == "json":
        emit_json(contract.document("action", data), args.format)
    else:
        print(yaml.safe_dump({k: v for k, v in data.items() if v not in (None, "", {})}, sort_keys=False).rstrip())
    return 0


def cmd_list(args) -> int:
    from polycrate import contract
    ws = workspace_from(args)
    rows = [contract.action(block.name, action) for block in ws.blocks.values()
            if not args.block or block.name == args.block for action in block.actions.values()]
    if args.output == "json":
        emit_json(contract.document("actions", {"actions": rows}), args.format)
    else:
        table([(r["block"], r["name"], r["type"],
                r["playbook"] if r["type"] == "ansible" else f"{len(r['script'])} script lines", r["description"])
               for r in rows], ("BLOCK", "ACTION", "TYPE", "RUNS", "DESCRIPTION"))
    return 0
