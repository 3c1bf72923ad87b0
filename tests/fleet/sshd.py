"""SSH test hosts on loopback: a real sshd per host, on 127.0.0.N, started and stopped by PID.

Each host is this machine reached over real SSH (its own sshd, host key and
client key), so playbooks run exactly as they do against a remote server.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.fleet.process import free_port, start_server, stop_process

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass
class SSHHost:
    name: str
    address: str
    port: int
    key: Path  # client private key
    proc: subprocess.Popen
    log: Path | None = None  # sshd's output (LogLevel INFO)

    def accepted_connections(self) -> int:
        """SSH connections this host's sshd has authenticated so far."""
        if self.log is None or not self.log.exists():
            return 0
        return self.log.read_text(errors="replace").count("Accepted publickey for ")

    def host_vars(self, sharing: bool = False) -> dict:
        """Connection variables. `sharing=False` (the fixture's settings): no SSH connection sharing.
        `sharing=True`: only what reaching the test host needs; Ansible's (or polycrate's) SSH defaults
        (ControlMaster=auto, ControlPersist) apply."""
        if sharing:
            return {
                "ansible_host": self.address,
                "ansible_port": self.port,
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(self.key),
                "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                "-o LogLevel=ERROR",
                "ansible_python_interpreter": shutil.which("python3") or "/usr/bin/python3",
            }
        return {
            "ansible_host": self.address,
            "ansible_port": self.port,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.key),
            # no connection sharing: it would leave ssh masters behind after the test. ansible_ssh_args
            # replaces Ansible's default "-o ControlMaster=auto ..." (ssh takes an option's first value)
            "ansible_ssh_args": "-o ControlMaster=no -o ControlPersist=no",
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
            "-o ControlMaster=no -o ControlPath=none -o LogLevel=ERROR",
            "ansible_python_interpreter": shutil.which("python3") or "/usr/bin/python3",
        }


class SSHFleet:
    """Start `count` sshd hosts on 127.0.0.2, 127.0.0.3, ... ; `stop()` ends them all."""

    def __init__(self, count: int = 1, first: int = 2, names: list[str] | None = None):
        if not os.path.exists(SSHD):
            raise RuntimeError("sshd not found: apt-get install openssh-server")
        self.dir = Path(tempfile.mkdtemp(prefix="polycrate-fleet-"))
        self.hosts: list[SSHHost] = []
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        key = self.dir / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        hostkey = self.dir / "ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey)], check=True)
        authorized = self.dir / "authorized_keys"
        shutil.copy(key.with_suffix(".pub"), authorized)
        authorized.chmod(0o600)
        try:
            for i in range(count):
                address = f"127.0.0.{first + i}"
                name = names[i] if names else f"host{i + 1}"
                self.hosts.append(self._start(name, address, key, hostkey, authorized))
        except BaseException:
            self.stop()
            raise

    def _start(self, name: str, address: str, key: Path, hostkey: Path, authorized: Path) -> SSHHost:
        port = free_port(address)
        config = self.dir / f"sshd_{address}.conf"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress {address}:{port}",
                    f"HostKey {hostkey}",
                    f"AuthorizedKeysFile {authorized}",
                    f"PidFile {self.dir}/sshd_{address}.pid",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "MaxStartups 200",
                    "MaxSessions 100",
                    "Subsystem sftp internal-sftp",
                    "LogLevel INFO",  # "Accepted publickey ...": accepted_connections counts them
                    "",
                ]
            )
        )
        proc = start_server([SSHD, "-D", "-e", "-f", str(config)], address, port,
                            self.dir / f"sshd_{address}.log", f"sshd on {address}", timeout=10)
        return SSHHost(name, address, port, key, proc, self.dir / f"sshd_{address}.log")

    def inventory(self, groups: dict[str, list[str]] | None = None, extra_vars: dict | None = None,
                  sharing: bool = False) -> dict:
        """An inventory in the article's shape: hosts under all.hosts, groups by name only
        (`sharing`: see SSHHost.host_vars)."""
        inv: dict = {"all": {"vars": dict(extra_vars or {}), "hosts": {}, "children": {}}}
        for host in self.hosts:
            inv["all"]["hosts"][host.name] = host.host_vars(sharing)
        for group, members in (groups or {}).items():
            inv["all"]["children"][group] = {"hosts": dict.fromkeys(members)}
        return inv

    def stop(self) -> None:
        for host in self.hosts:
            stop_process(host.proc, grace=5)
        self.hosts = []
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SSHFleet:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
