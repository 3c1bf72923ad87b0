"""`polycrate ssh HOST [-- COMMAND]`, `polycrate ssh list` and `polycrate create ssh-keys`."""
from __future__ import annotations

import argparse
import sys

from polycrate.cli.render import emit_json, table, workspace_from
from polycrate.errors import PolycrateError

from polycrate.config.action_env import WORKSPACE_PRIVATE_KEY as SSH_PRIVATE_KEY
from polycrate.config.action_env import WORKSPACE_PUBLIC_KEY as SSH_PUBLIC_KEY


def _key_path(ws, given, default):
    """--ssh-private-key/--ssh-public-key (relative to the workspace root), else workspace.poly's
    config.sshprivatekey/sshpublickey (Polycrate's), else id_rsa/id_rsa.pub there."""
    import os
    from pathlib import Path

    if not given:
        given = ws.layout.ssh_private_key if default == SSH_PRIVATE_KEY else ws.layout.ssh_public_key
    if not given:
        return ws.root / default
    path = Path(os.path.expanduser(given))
    return path if path.is_absolute() else ws.root / path


def register(sub, shared) -> None:
    p = sub.add_parser("ssh", parents=[shared], help="SSH into an inventory host (`ssh list`: the hosts)")
    p.add_argument("host", help="a host of the inventory, or `list`")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND: run it instead of a shell")
    p.add_argument("--block", help="use this block's inventory (default: the workspace's)")
    p.set_defaults(func=cmd_ssh)

    group = sub.add_parser("create", parents=[shared], help="create workspace files")
    csub = group.add_subparsers(dest="create_command", metavar="COMMAND")
    csub.required = True
    p = csub.add_parser("ssh-keys", parents=[shared], help="create the workspace's SSH key pair (id_rsa, id_rsa.pub)")
    p.set_defaults(func=cmd_create_ssh_keys)


def _inventory(ws, block_name):
    """The block's own inventory (artifacts/blocks/BLOCK/inventory.yml) with --block, else the workspace's."""
    from polycrate.config.workspace import get_block

    inventory = ws.inventory if ws.inventory.is_file() else None
    if block_name:
        own = ws.artifacts_dir(get_block(ws, block_name).name) / "inventory.yml"
        inventory = own if own.is_file() else inventory
    if inventory is None:
        raise PolycrateError("no inventory: write inventory.yml in the workspace root", ws.root)
    return inventory


def cmd_ssh(args) -> int:
    from polycrate.config.inventory import find_host, inventory_hosts, ssh_argv

    ws = workspace_from(args)
    inventory = _inventory(ws, args.block)
    hosts = inventory_hosts(inventory)
    if args.host == "list":
        if args.output == "json":
            from polycrate import contract

            emit_json(contract.document("ssh-hosts", {"hosts": [
                {"name": h.name, "host": h.address, "user": h.user, "port": h.port} for h in hosts]}), args.format)
        else:
            table([(h.name, h.address, h.user, h.port, f"polycrate ssh {h.name}") for h in hosts],
                  ("NAME", "HOST", "USER", "PORT", "COMMAND"))
        return 0
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    argv = ssh_argv(find_host(hosts, args.host, inventory),
                    _key_path(ws, getattr(args, "ssh_private_key", None), SSH_PRIVATE_KEY), command)
    import subprocess

    try:
        return subprocess.call(argv)
    except FileNotFoundError:
        raise PolycrateError("ssh is not installed: apt-get install openssh-client") from None


def cmd_create_ssh_keys(args) -> int:
    ws = workspace_from(args)
    private = _key_path(ws, getattr(args, "ssh_private_key", None), SSH_PRIVATE_KEY)
    public = _key_path(ws, getattr(args, "ssh_public_key", None), SSH_PUBLIC_KEY)
    if getattr(args, "ssh_private_key", None) and not getattr(args, "ssh_public_key", None):
        public = private.with_name(private.name + ".pub")
    existing = [p for p in (private, public) if p.exists()]
    if existing:
        raise PolycrateError("the workspace's SSH keys exist already; nothing changed", existing[0])
    private.parent.mkdir(parents=True, exist_ok=True)
    tmp = private.with_name(f".{private.name}.new")
    for stale in (tmp, tmp.with_name(tmp.name + ".pub")):
        stale.unlink(missing_ok=True)
    import subprocess

    proc = subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "4096", "-N", "", "-C", f"polycrate@{ws.name}",
                           "-f", str(tmp)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise PolycrateError(f"ssh-keygen failed: {proc.stderr.strip()}")
    tmp.chmod(0o600)
    public.parent.mkdir(parents=True, exist_ok=True)
    tmp.with_name(tmp.name + ".pub").replace(public)
    tmp.replace(private)
    print(f"created {private} (mode 0600) and {public}:", file=sys.stderr)
    print(public.read_text().strip())
    return 0
