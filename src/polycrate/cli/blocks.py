"""`polycrate blocks list|inspect`"""
from __future__ import annotations

from polycrate.cli.render import emit_json, table, workspace_from
from polycrate.workspace import get_block
from polycrate.yamlfile import plain


def register(sub, shared) -> None:
    group = sub.add_parser("blocks", parents=[shared], help="installed blocks")
    bsub = group.add_subparsers(dest="blocks_command", metavar="COMMAND")
    bsub.required = True
    p = bsub.add_parser("list", parents=[shared], help="list blocks with versions and origins")
    p.set_defaults(func=cmd_list)
    p = bsub.add_parser("inspect", parents=[shared], help="show a block's merged config and actions")
    p.add_argument("name")
    p.set_defaults(func=cmd_inspect)


def _describe(ws, block) -> dict:
    return {
        "name": block.name,
        "version": block.version,
        "kind": block.definition.kind,
        "description": block.definition.description,
        "from": block.source,
        "path": str(block.folder.relative_to(ws.root)),
        "config": plain(block.config),
        "actions": [
            {"name": a.name, "type": a.type, "playbook": a.playbook, "description": a.description}
            for a in block.actions.values()
        ],
    }


def cmd_list(args) -> int:
    ws = workspace_from(args)
    data = [_describe(ws, b) for b in ws.blocks.values()]
    if args.output == "json":
        emit_json(data)
    else:
        table([(d["name"], d["version"], d["from"] or "(local)", d["path"]) for d in data], ("NAME", "VERSION", "FROM", "PATH"))
    return 0


def cmd_inspect(args) -> int:
    import yaml

    ws = workspace_from(args)
    data = _describe(ws, get_block(ws, args.name))
    if args.output == "json":
        emit_json(data)
    else:
        print(yaml.safe_dump(data, sort_keys=False).rstrip())
    return 0
