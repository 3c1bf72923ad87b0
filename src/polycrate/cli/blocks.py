"""`polycrate blocks list|inspect|push|pull|uninstall` (the auto-install before a run is pipeline.py's)."""
from __future__ import annotations

from pathlib import Path

from polycrate.cli.completion import BLOCK, names
from polycrate.cli.render import emit_json, table, workspace_from
from polycrate.errors import PolycrateError


def register(sub, shared) -> None:
    group = sub.add_parser("block", aliases=["blocks"], parents=[shared],
                           help="installed blocks; push and pull them through OCI registries")
    bsub = group.add_subparsers(dest="blocks_command", metavar="COMMAND")
    bsub.required = False  # the group alone lists its items, as in the real Polycrate
    group.set_defaults(func=cmd_list)
    p = bsub.add_parser("list", parents=[shared], help="list blocks with versions and origins")
    p.set_defaults(func=cmd_list)
    p = bsub.add_parser("inspect", parents=[shared], help="show a block's merged config and actions")
    names(p.add_argument("name"), BLOCK)
    p.set_defaults(func=cmd_inspect)

    p = bsub.add_parser("create", parents=[shared], help="add a new block blocks/NAME (a script and an Ansible action)")
    p.add_argument("name", help="the block's name (letters, digits, '.', '_', '-')")
    p.add_argument("--description", help="the block's description")
    p.set_defaults(func=cmd_create)

    p = bsub.add_parser("push", parents=[shared], help="push a block to an OCI registry, tagged with its version")
    names(p.add_argument("block", help="block name (or its folder under blocks/)"), BLOCK)
    p.add_argument(
        "reference", nargs="?", help="REGISTRY/PATH[:VERSION] (default: the block's path under blocks/)"
    )
    p.set_defaults(func=cmd_push)

    p = bsub.add_parser("pull", parents=[shared], help="install a block from an OCI registry into blocks/REGISTRY/PATH")
    p.add_argument("reference", help="REGISTRY/PATH[:VERSION] (no version: the highest one)")
    p.add_argument("--update-lock", action="store_true", help="accept a digest that differs from the one in blocks.lock")
    p.set_defaults(func=cmd_pull)

    p = bsub.add_parser("uninstall", parents=[shared], help="remove an installed block from blocks/")
    names(p.add_argument("name", help="block name, or REGISTRY/PATH"), BLOCK)
    p.set_defaults(func=cmd_uninstall)

    p = bsub.add_parser("readme", parents=[shared], help="print a block's README.md")
    names(p.add_argument("name"), BLOCK)
    p.set_defaults(func=cmd_readme)


def _root(args) -> Path:
    from polycrate.config.workspace import find_root

    return find_root(args.workspace, explicit=args.workspace is not None)


def _full_reference(root: Path, text: str):
    """A block reference of the command line, a short one (team/block:1.0) with the default registry
    (workspace.poly's `registries.default`, else the host's: config/hubref.py)."""
    from polycrate.blocks.registry import parse_reference
    from polycrate.config.hubref import expand
    from polycrate.config.schema import read_workspace_file, registry_default

    return parse_reference(expand(text, registry_default(read_workspace_file(root).registries), "reference"))


def _transport(root: Path):
    from polycrate.blocks.registry import transport_settings
    from polycrate.config.schema import read_workspace_file

    return transport_settings(read_workspace_file(root).registries)


def _describe(ws, block, lock=None) -> dict:
    from polycrate import contract

    return contract.block(ws, block, lock)


def cmd_list(args) -> int:
    from polycrate import contract
    from polycrate.blocks.store import read_lock

    ws = workspace_from(args)
    lock = read_lock(ws.root)
    data = [_describe(ws, b, lock) for b in ws.blocks.values()]
    if args.output == "json":
        emit_json(contract.document("blocks", {"blocks": data}), args.format)
    else:
        table(
            [
                (d["name"], d["version"], d["kind"] + (" (template)" if d["template"] else ""),
                 d["from"] or "(local)", d["origin"], (d["digest"] or "")[:19], d["path"],
                 ",".join(f"{k}={v}" for k, v in d["labels"].items()))
                for d in data
            ],
            ("NAME", "VERSION", "KIND", "FROM", "ORIGIN", "DIGEST", "PATH", "LABELS"),
        )
    return 0


def cmd_inspect(args) -> int:
    from polycrate import contract
    import yaml

    from polycrate.blocks.store import read_lock

    ws = workspace_from(args)
    from polycrate.config.workspace import get_block

    data = _describe(ws, get_block(ws, args.name), read_lock(ws.root))
    if args.output == "json":
        emit_json(contract.document("block", data), args.format)
    else:
        print(yaml.safe_dump(data, sort_keys=False).rstrip())
    return 0


def _find_definition(root: Path, name: str):
    """An installed block by name or by its path under blocks/ (the workspace need not load)."""
    from polycrate.config.workspace import BLOCKS_DIR, closest, discover_blocks

    installed = discover_blocks(root)
    wanted = name.rstrip("/").removeprefix(f"{BLOCKS_DIR}/")
    by_path = [b for b in installed if b.relpath == wanted]
    found = by_path or [b for b in installed if b.name == name]
    if len(found) == 1:
        return found[0]
    if not found:
        raise PolycrateError(
            f"no installed block '{name}' under {BLOCKS_DIR}/" + closest(name, [b.name for b in installed]), root
        )
    paths = ", ".join(f"{BLOCKS_DIR}/{b.relpath}" for b in found)
    raise PolycrateError(f"block '{name}' is ambiguous ({paths}): name it by its path", root)


def cmd_create(args) -> int:
    from polycrate.config import scaffold

    created = scaffold.create_block(_root(args), args.name, args.description)
    where = created.folder.relative_to(_root(args))
    print(f"created block {args.name} in {where}/ ({', '.join(created.written)}): "
          f"polycrate run {args.name} {scaffold.BLOCK_SCRIPT_ACTION}, "
          f"polycrate run {args.name} {scaffold.BLOCK_ANSIBLE_ACTION}")
    return 0


def cmd_push(args) -> int:
    from polycrate import contract
    from polycrate.blocks.registry import default_reference, push_block

    root = _root(args)
    definition = _find_definition(root, args.block)
    if args.reference:
        reference = _full_reference(root, args.reference)
    else:
        reference = default_reference(definition.relpath)
        if reference is None:
            raise PolycrateError(
                f"block '{definition.name}' lives in blocks/{definition.relpath}, which is not a registry path: "
                "give the reference (polycrate blocks push NAME REGISTRY/PATH)"
            )
    result = push_block(definition, reference, _transport(root), force=args.force)
    if args.output == "json":
        emit_json(contract.document("block-push", {
            "reference": str(result.reference), "digest": result.digest, "content_digest": result.content,
            "size": result.size, "replaced": result.replaced}), args.format)
    else:
        replaced = f" (replaced {result.replaced})" if result.replaced else ""
        print(f"pushed {result.reference} {result.digest}{replaced}")
    return 0


def cmd_pull(args) -> int:
    from polycrate import contract
    root = _root(args)
    from polycrate.blocks.registry import pull_block

    from polycrate.config.schema import read_workspace_file

    document = read_workspace_file(root)
    result = pull_block(root, _full_reference(root, args.reference), _transport(root), update_lock=args.update_lock,
                        blocks_root=document.go["layout"].blocks_root)
    if args.output == "json":
        emit_json(contract.document("block-pull", {
            "reference": str(result.reference), "digest": result.digest,
            "path": str(result.folder.relative_to(root)), "previous_version": result.previous_version}), args.format)
    else:
        print(result.describe())
    return 0


def cmd_uninstall(args) -> int:
    from polycrate.blocks.store import uninstall_block

    root = _root(args)
    definition = _find_definition(root, args.name)
    uninstall_block(root, definition.folder)
    print(f"uninstalled {definition.name} {definition.version} from blocks/{definition.relpath}")
    return 0


def cmd_readme(args) -> int:
    ws = workspace_from(args)
    from polycrate.config.workspace import get_block

    block = get_block(ws, args.name)
    readme = next((p for p in (block.folder / n for n in ("README.md", "readme.md", "README")) if p.is_file()), None)
    if readme is None:
        raise PolycrateError(f"block '{block.name}' has no README.md", block.folder)
    print(readme.read_text(encoding="utf-8").rstrip())
    return 0


# --- auto-install before a run ----------------------------------------------------------------


def add_auto_pull_option(p) -> None:
    p.add_argument(
        "--blocks-auto-pull",
        action="store_true",
        help="install missing `from:` blocks (and upgrades) without asking; a downgrade still asks (or --force)",
    )
