"""`polycrate workspace init|inspect|validate|snapshot|update`"""
from __future__ import annotations

import argparse
from pathlib import Path

from polycrate.cli.completion import DIR, names
from polycrate.cli.render import emit_json, workspace_from
from polycrate.errors import PolycrateError


def register(sub, shared) -> None:
    group = sub.add_parser("workspace", parents=[shared], help="create, check and show the workspace")
    wsub = group.add_subparsers(dest="workspace_command", metavar="COMMAND")
    wsub.required = True

    p = wsub.add_parser("init", parents=[shared], help="create a new workspace that runs at once (a sample block and workflow)")
    add_init_options(p)
    p.set_defaults(func=cmd_init)

    for name, func, text in (
        ("inspect", cmd_inspect, "summary of the workspace"),
        ("validate", cmd_validate, "check workspace.poly, blocks, playbooks and inventory"),
        ("snapshot", cmd_snapshot, "the merged workspace as YAML (or JSON)"),
    ):
        p = wsub.add_parser(name, parents=[shared], help=text)
        p.set_defaults(func=func)

    p = wsub.add_parser("update", parents=[shared],
                        help="install the blocks listed under `dependencies:` in workspace.poly")
    p.add_argument("--update-lock", action="store_true", help="accept a digest that differs from the one in blocks.lock")
    p.set_defaults(func=cmd_update)

    from polycrate.cli import workspace_secrets

    workspace_secrets.register(wsub, shared)


def _flag_bool(text: str) -> bool:
    """A pflag boolean's value: --with-ssh-keys=false (as the real Polycrate takes it)."""
    value = text.strip().lower()
    if value in ("true", "1", "t", "yes"):
        return True
    if value in ("false", "0", "f", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def add_init_options(p) -> None:
    names(p.add_argument("path", nargs="?", default="."), DIR)
    p.add_argument("--name", "--with-name", dest="name", help="workspace name (default: the folder's name)")
    p.add_argument("--with-ssh-keys", type=_flag_bool, nargs="?", const=True, default=False, metavar="BOOL",
                   help="also create the workspace's SSH key pair, id_rsa and id_rsa.pub (Polycrate's; default here: "
                        "false)")
    p.add_argument("--with-config", type=_flag_bool, nargs="?", const=True, default=True, metavar="BOOL",
                   help="write workspace.poly and the starting files (default); false: only what --with-ssh-keys "
                        "makes, in a folder that is a workspace already")
    p.add_argument("--organization", default="")
    p.add_argument("--bare", action="store_true", help="no sample block and workflow: workspace.poly, inventory.yml, .gitignore")


def cmd_init(args) -> int:
    import shlex

    from polycrate.config import scaffold

    if not args.with_config:  # Polycrate's init in a workspace that exists: its keys only
        if not args.with_ssh_keys:
            raise PolycrateError("--with-config=false writes no workspace.poly: nothing to do without "
                                 "--with-ssh-keys")
        return _init_ssh_keys(args, Path(args.path))
    created = scaffold.init_workspace(Path(args.path), args.name, args.organization, sample=not args.bare)
    name = args.name or created.folder.name
    print(f"created workspace {name} in {created.folder}")
    if args.with_ssh_keys:
        _init_ssh_keys(args, created.folder)
    notes = {
        "workspace.poly": "blocks, workflows, config (runtime: local)",
        "inventory.yml": "localhost, ansible_connection: local",
        f"blocks/{scaffold.SAMPLE_BLOCK}/block.poly": f"the sample block: actions {scaffold.SCRIPT_ACTION} (script), "
                                                      f"{scaffold.ANSIBLE_ACTION} (Ansible)",
    }
    for rel in created.written:
        print(f"  {rel:<28} {notes.get(rel, '')}".rstrip())
    for rel in created.kept:
        print(f"  {rel:<28} kept as it was")
    if not args.bare:
        print(f"next: cd {shlex.quote(str(created.folder))} && polycrate workflows run {scaffold.SAMPLE_WORKFLOW}")
    return 0


def _init_ssh_keys(args, folder: Path) -> int:
    from polycrate.cli.ssh import cmd_create_ssh_keys

    args.workspace = str(folder.resolve())
    return cmd_create_ssh_keys(args)


def cmd_inspect(args) -> int:
    from polycrate import contract
    ws = workspace_from(args)
    data = {
        "name": ws.name,
        "organization": ws.organization,
        "description": ws.description or None,
        "root": str(ws.root),
        "inventory": str(ws.inventory) if ws.inventory.is_file() else None,
        "labels": dict(ws.labels),
        "dependencies": list(ws.dependencies),
        "blocks": {b.name: b.version for b in ws.blocks.values()},
        "workflows": list(ws.workflows),
    }
    if args.output == "json":
        emit_json(contract.document("workspace", data), args.format)
    else:
        for key, value in data.items():
            if isinstance(value, dict):
                sep = "=" if key == "labels" else " "
                value = ", ".join(f"{k}{sep}{v}" for k, v in value.items()) or "-"
            elif isinstance(value, list):
                value = ", ".join(value) or "-"
            print(f"{key + ':':<14}{value or '-'}")
    return 0


def cmd_validate(args) -> int:
    """The preflight over every action: one line per finding (`file:line: message`), exit 2 on an
    error, 0 otherwise (warnings included); writes nothing."""
    from polycrate import contract
    import sys

    from polycrate.run import preflight
    from polycrate.errors import EXIT_BAD_INPUT

    ws = workspace_from(args)
    report = preflight.check_workspace(ws)
    if args.output == "json":
        emit_json(contract.document("findings", {"findings": [f.as_dict() for f in report.findings]}), args.format)
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
    from polycrate import contract
    import yaml

    from polycrate.config.action_view import snapshot

    data = snapshot(workspace_from(args))
    if args.output == "json":
        emit_json(contract.document("snapshot", data), args.format)
    else:
        print(yaml.safe_dump(data, sort_keys=False).rstrip())
    return 0


def cmd_update(args) -> int:
    """`dependencies:` installed from their registries, as Polycrate's `workspace update`: each reference
    that is not installed at its version is pulled (atomically, verified, pinned in blocks.lock); one
    installed at the version it names is left alone. workspace.poly alone is read: the workspace need not
    load yet (its entries may use the very blocks this installs)."""
    from polycrate import contract
    from polycrate.blocks.registry import parse_reference, pull_block, transport_settings
    from polycrate.config.schema import block_version, read_workspace_file
    from polycrate.config.workspace import BLOCKS_DIR, find_root

    root = find_root(args.workspace, explicit=args.workspace is not None)
    document = read_workspace_file(root)
    transport = transport_settings(document.registries)
    done = []
    blocks_root = document.go["layout"].blocks_root if document.go else BLOCKS_DIR
    for dependency in document.dependencies:
        reference = parse_reference(dependency)
        installed = root / blocks_root / reference.path / "block.poly"
        if reference.tag and installed.is_file() and block_version(installed) == reference.tag:
            done.append({"reference": dependency, "status": "up to date", "digest": None,
                         "path": f"{blocks_root}/{reference.path}", "previous_version": None})
            if args.output != "json":
                print(f"{dependency}: up to date in {blocks_root}/{reference.path}")
            continue
        result = pull_block(root, reference, transport, update_lock=args.update_lock, blocks_root=blocks_root)
        done.append({"reference": str(result.reference), "status": "pulled", "digest": result.digest,
                     "path": str(result.folder.relative_to(root)), "previous_version": result.previous_version})
        if args.output != "json":
            print(result.describe())
    if args.output == "json":
        emit_json(contract.document("workspace-update", {"dependencies": done}), args.format)
    elif not document.dependencies:
        print("no dependencies in workspace.poly: nothing to install")
    return 0
