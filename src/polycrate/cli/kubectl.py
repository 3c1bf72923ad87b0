"""`polycrate k ...`: kubectl with the block's (--block) or the workspace's kubeconfig."""
from __future__ import annotations

import argparse
import os
import shutil

from polycrate.cli.render import workspace_from
from polycrate.errors import PolycrateError


def register(sub, shared) -> None:
    p = sub.add_parser("k", parents=[shared], help="run kubectl with the workspace's (or --block's) kubeconfig")
    p.add_argument("--block", help="use this block's kubeconfig (artifacts/blocks/BLOCK/kubeconfig.yml)")
    p.add_argument("kubectl_args", nargs=argparse.REMAINDER, metavar="ARGS", help="kubectl's arguments")
    p.set_defaults(func=cmd_k)


def kubeconfig_of(ws, block_name: str | None):
    """What an action of the block gets as KUBECONFIG (workspace.block_kubeconfig): with --block, its
    artifacts/blocks/BLOCK/kubeconfig.yml or the one its `kubeconfig: {from: ...}` names; else the
    workspace's (`kubeconfig.filename`, kubeconfig.yml in the root, artifacts/blocks/k8s/kubeconfig.yml)."""
    from polycrate.config.workspace import get_block
    from polycrate.config.action_view import block_kubeconfig

    return block_kubeconfig(ws, get_block(ws, block_name) if block_name else None)


def cmd_k(args) -> int:
    ws = workspace_from(args)
    kubeconfig = kubeconfig_of(ws, args.block)
    if kubeconfig is None and args.block:
        raise PolycrateError(f"block '{args.block}' has no kubeconfig: write artifacts/blocks/{args.block}/"
                             "kubeconfig.yml (or give the block kubeconfig: {from: BLOCK})", ws.root)
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise PolycrateError("kubectl is not installed: apt-get install kubernetes-client")
    rest = args.kubectl_args[1:] if args.kubectl_args[:1] == ["--"] else args.kubectl_args
    import subprocess

    # without a workspace kubeconfig: kubectl's own rules (KUBECONFIG, else ~/.kube/config), as Polycrate
    env = dict(os.environ) if kubeconfig is None else dict(os.environ, KUBECONFIG=str(kubeconfig))
    return subprocess.call([kubectl, *rest], env=env)
