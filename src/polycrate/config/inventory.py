"""SSH into an inventory host the way the real Polycrate's `polycrate ssh HOST` does (cmd/ssh.go):
the workspace's key and the host's connection variables.

The hosts and their variables come from `ansible-inventory --list` on the block's (or the
workspace's) inventory, so group and `all` variables apply with Ansible's own precedence.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polycrate.errors import NotFoundError, PolycrateError


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    user: str
    port: int
    key: str | None  # ansible_ssh_private_key_file
    common_args: str  # ansible_ssh_common_args
    extra_args: str  # ansible_ssh_extra_args
    jump: str | None  # ansible_ssh_jump / polycrate ProxyJump from `jump_host`


def inventory_hosts(inventory: Path) -> list[Host]:
    """Every host of the inventory with its merged variables."""
    names, hostvars = inventory_list(inventory)
    return [_host(name, hostvars.get(name, {})) for name in names]


def inventory_list(inventory: Path | None, limit: str | None = None) -> tuple[list[str], dict[str, Any]]:
    """The inventory's host names after ``limit`` (ansible-playbook's --limit), in the inventory's order
    (groups walked from ``all``), and their variables. None: Ansible's default inventory."""
    # ansible-inventory gets the user's own environment (their ANSIBLE_* settings), with this inventory
    env = dict(os.environ, ANSIBLE_INVENTORY=str(inventory)) if inventory is not None else dict(os.environ)
    env.pop("ANSIBLE_INVENTORY_ENABLED", None)
    argv = [sys.executable, "-m", "ansible.cli.inventory", "--list"]
    argv += ["-i", str(inventory)] if inventory is not None else []
    argv += ["--limit", limit] if limit else []
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = [text for text in proc.stderr.splitlines() if text.strip()]
        raise PolycrateError(f"ansible-inventory failed: {lines[-1] if lines else proc.returncode}", inventory)
    data = json.loads(proc.stdout)
    hostvars = data.get("_meta", {}).get("hostvars", {})
    names: list[str] = []

    def walk(group: str, seen: set[str]) -> None:
        if group in seen:
            return
        seen.add(group)
        for host in data.get(group, {}).get("hosts", []):
            if host not in names:
                names.append(host)
        for child in data.get(group, {}).get("children", []):
            walk(child, seen)

    walk("all", set())
    return names, hostvars


def _host(name: str, hv: dict[str, Any]) -> Host:
    port: Any = hv.get("ansible_port", hv.get("ansible_ssh_port", 22))
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise PolycrateError(f"host {name}: ansible_port {port!r} is not a number") from None
    return Host(
        name=name,
        address=str(hv.get("ansible_host", hv.get("ansible_ssh_host", name))),
        user=str(hv.get("ansible_user", hv.get("ansible_ssh_user", "root"))),
        port=port,
        key=hv.get("ansible_ssh_private_key_file") or hv.get("ansible_private_key_file"),
        common_args=str(hv.get("ansible_ssh_common_args", "") or ""),
        extra_args=str(hv.get("ansible_ssh_extra_args", "") or ""),
        jump=hv.get("ansible_ssh_jump") or hv.get("jump_host"),
    )


def find_host(hosts: list[Host], name: str, inventory: Path) -> Host:
    for host in hosts:
        if host.name == name:
            return host
    from polycrate.config.workspace import closest

    raise NotFoundError(f"no host '{name}' in the inventory" + closest(name, [h.name for h in hosts]), inventory)


def ssh_argv(host: Host, workspace_key: Path | None, command: list[str]) -> list[str]:
    """The ssh command line: the host's key (else the workspace's), user, port, common and extra args,
    the jump host, then the command (none: an interactive shell)."""
    argv = ["ssh", "-l", host.user, "-p", str(host.port)]
    key = host.key or (str(workspace_key) if workspace_key and workspace_key.is_file() else None)
    if key:
        argv += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
    if host.jump:
        argv += ["-J", str(host.jump)]
    argv += shlex.split(host.common_args) + shlex.split(host.extra_args)
    if command:
        argv += ["-o", "BatchMode=yes"]
    argv.append(host.address)
    if command:
        argv += ["--", *command]
    return argv
