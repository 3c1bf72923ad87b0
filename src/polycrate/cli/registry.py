"""`polycrate registry login REGISTRY --username USER --password-stdin`"""
from __future__ import annotations

import sys

from polycrate.errors import PolycrateError


def register(sub, shared) -> None:
    group = sub.add_parser("registry", parents=[shared], help="OCI registry credentials")
    rsub = group.add_subparsers(dest="registry_command", metavar="COMMAND")
    rsub.required = True
    p = rsub.add_parser(
        "login", parents=[shared], help="check credentials against a registry and store them in the Docker config file"
    )
    p.add_argument("registry", help="registry host[:port], e.g. registry.acme-corp.com")
    p.add_argument("--username", "-u", required=True)
    p.add_argument("--password-stdin", action="store_true", required=True, help="read the password from stdin")
    p.set_defaults(func=cmd_login)


def cmd_login(args) -> int:
    from polycrate.blocks.registry import login, transport_settings
    from polycrate.config.schema import read_workspace_file
    from polycrate.config.workspace import find_root

    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise PolycrateError("no password on stdin (echo \"$PASSWORD\" | polycrate registry login ...)")
    registries = None
    try:  # a workspace's registries: settings apply when there is one
        root = find_root(args.workspace, explicit=args.workspace is not None)
        registries = read_workspace_file(root).registries
    except PolycrateError:
        if args.workspace is not None:
            raise
    path = login(args.registry, args.username, password, transport_settings(registries))
    print(f"login succeeded: credentials for {args.registry} stored in {path}")
    return 0
