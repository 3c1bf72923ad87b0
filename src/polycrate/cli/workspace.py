"""`polycrate workspace init|inspect|validate|snapshot`"""
from __future__ import annotations

from pathlib import Path

from polycrate.cli.completion import DIR, names
from polycrate.cli.render import emit_json, workspace_from
from polycrate.errors import PolycrateError
from polycrate.schema import validate_name
from polycrate.workspace import WORKSPACE_FILE, snapshot


def register(sub, shared) -> None:
    group = sub.add_parser("workspace", parents=[shared], help="create, check and show the workspace")
    wsub = group.add_subparsers(dest="workspace_command", metavar="COMMAND")
    wsub.required = True

    p = wsub.add_parser("init", parents=[shared], help="create a new workspace in a folder")
    names(p.add_argument("path", nargs="?", default="."), DIR)
    p.add_argument("--name", help="workspace name (default: the folder's name)")
    p.add_argument("--organization", default="")
    p.set_defaults(func=cmd_init)

    for name, func, text in (
        ("inspect", cmd_inspect, "summary of the workspace"),
        ("validate", cmd_validate, "check workspace.poly, blocks, playbooks and inventory"),
        ("snapshot", cmd_snapshot, "the merged workspace as YAML (or JSON)"),
    ):
        p = wsub.add_parser(name, parents=[shared], help=text)
        p.set_defaults(func=func)

    from polycrate.cli import workspace_secrets

    workspace_secrets.register(wsub, shared)


def cmd_init(args) -> int:
    folder = Path(args.path).resolve()
    file = folder / WORKSPACE_FILE
    if folder.exists() and not folder.is_dir():
        raise PolycrateError("is a file, not a folder: a workspace is a folder; nothing changed", folder)
    if file.exists() or file.is_symlink():
        raise PolycrateError("a workspace already exists here; nothing changed", file)
    name = args.name or folder.name
    validate_name(name, "workspace", file, None)
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("blocks", "artifacts/secrets"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    import yaml

    text = yaml.safe_dump(
        {"name": name, "organization": args.organization, "blocks": [], "workflows": []}, sort_keys=False
    )
    file.write_text(text, encoding="utf-8")
    inventory = folder / "inventory.yml"
    if not inventory.exists():
        inventory.write_text("all:\n  hosts: {}\n  children: {}\n", encoding="utf-8")
    gitignore = folder / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text(".polycrate/\nartifacts/blocks/\n", encoding="utf-8")
    print(f"created workspace {name} in {folder}")
    return 0


def cmd_inspect(args) -> int:
    ws = workspace_from(args)
    data = {
        "name": ws.name,
        "organization": ws.organization,
        "description": ws.description,
        "root": str(ws.root),
        "inventory": str(ws.inventory) if ws.inventory.is_file() else None,
        "blocks": {b.name: b.version for b in ws.blocks.values()},
        "workflows": list(ws.workflows),
    }
    if args.output == "json":
        emit_json(data)
    else:
        for key, value in data.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
            elif isinstance(value, list):
                value = ", ".join(value) or "-"
            print(f"{key + ':':<14}{value or '-'}")
    return 0


def cmd_validate(args) -> int:
    """The preflight over every action: one line per finding (`file:line: message`), exit 2 on an
    error, 0 otherwise (warnings included); writes nothing."""
    import sys

    from polycrate import preflight
    from polycrate.errors import EXIT_BAD_INPUT

    ws = workspace_from(args)
    report = preflight.check(ws, preflight.workspace_targets(ws))
    if args.output == "json":
        emit_json([f.as_dict() for f in report.findings])
    else:
        for finding in report.findings:  # the one-line form of every error of ours, one per finding
            print(f"polycrate: {finding.severity}: {finding}", file=sys.stderr)
        if report.ok:
            actions = sum(len(b.actions) for b in ws.blocks.values())
            hosts = f", {report.inventory_hosts} hosts" if report.inventory_hosts is not None else ""
            print(f"workspace {ws.name} is valid: {len(ws.blocks)} blocks, {actions} actions, "
                  f"{len(ws.workflows)} workflows, {len(report.plays)} plays{hosts} ({report.seconds:.1f}s)")
    return EXIT_BAD_INPUT if report.errors else 0


def cmd_snapshot(args) -> int:
    import yaml

    data = snapshot(workspace_from(args))
    if args.output == "json":
        emit_json(data)
    else:
        print(yaml.safe_dump(data, sort_keys=False).rstrip())
    return 0
