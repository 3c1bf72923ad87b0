"""Top-level commands of the real Polycrate that are other commands by another name:
`install|uninstall|prune BLOCK...` (run the block's action of that name), `pull`, `push` (block pull/push)
and `init` (workspace init)."""
from __future__ import annotations

LIFECYCLE_ACTIONS = ("install", "uninstall", "prune")


def register(sub, shared) -> None:
    from polycrate.cli import blocks, workspace
    from polycrate.cli.completion import BLOCK, names
    from polycrate.cli.run import add_run_options

    for name in LIFECYCLE_ACTIONS:
        p = sub.add_parser(name, parents=[shared], help=f"run the '{name}' action of each block given, in order")
        names(p.add_argument("blocks", nargs="+", metavar="BLOCK"), BLOCK)
        add_run_options(p)
        p.set_defaults(func=cmd_lifecycle, lifecycle_action=name)

    p = sub.add_parser("pull", parents=[shared], help="install a block from an OCI registry (as `block pull`)")
    p.add_argument("reference", help="REGISTRY/PATH[:VERSION] (no version: the highest one)")
    p.add_argument("--update-lock", action="store_true", help="accept a digest that differs from the one in blocks.lock")
    p.set_defaults(func=blocks.cmd_pull)

    p = sub.add_parser("push", parents=[shared], help="push a block to an OCI registry (as `block push`)")
    names(p.add_argument("block", help="block name (or its folder under blocks/)"), BLOCK)
    p.add_argument("reference", nargs="?", help="REGISTRY/PATH[:VERSION] (default: the block's path under blocks/)")
    p.set_defaults(func=blocks.cmd_push)

    p = sub.add_parser("init", parents=[shared], help="create a new workspace in a folder (as `workspace init`)")
    workspace.add_init_options(p)
    p.set_defaults(func=workspace.cmd_init)


def cmd_lifecycle(args) -> int:
    from polycrate.cli.run import cmd_run

    code = 0
    for block in args.blocks:
        args.block, args.action = block, args.lifecycle_action
        code = cmd_run(args)
        if code:
            return code  # the first failing block stops the rest, as a workflow's failing step does
    return code
