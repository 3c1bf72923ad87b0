"""Queue routing into a segment only one worker can reach, over a veth pair: a target host reachable only from
inside a network namespace is reached by a `dmz` worker running in that namespace, never by the others.

Two network namespaces made by the test (names unique per run), joined by a veth pair:
- the DMZ host (`pcdmz-ID`): the `dmz` worker runs here; its veth end has 127.77.N.1/30;
- the segment's target (`pcdmzt-ID`): an sshd, started by the test, listens on 127.77.N.2, its veth end.
Only loopback-range addresses, on the veth ends inside the test's namespaces; the root namespace is not touched.

The kernel calls 127.0.0.0/8 martian on any interface but `lo`: without `route_localnet` a connect from the DMZ
namespace to 127.77.N.2 fails at once with EINVAL (tried on this kernel, 6.x). With
`net.ipv4.conf.{all,VETH}.route_localnet=1` in both namespaces the packets cross the veth and the connection is
made; so the test sets it there (only there). In the root namespace all of 127.0.0.0/8 is local (on `lo`): a
connect to 127.77.N.2 is refused, as nothing listens on it there (asserted, before and after).

The DMZ worker reaches PostgreSQL through its unix socket (the filesystem is shared across network namespaces):
it needs no route to the host's loopback, as a worker in a DMZ connects out to the database only. The workflow
`reach` (queue `dmz`) runs an Ansible play on the target over SSH; its task writes a marker there with
`$SSH_CONNECTION` (the filesystem is shared: the test reads it), which proves the connection came from the DMZ
worker's address over the veth. The same workflow on the default queue, run by the worker in the root namespace,
fails: the target is unreachable from there. Namespaces and every process in them go, whatever happens.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import write
from tests.team.conftest import committed
from tests.team.harness import Team
from tests.helpers import wait_for as _wait_for

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"

pytestmark = [pytest.mark.team,
              pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None or not os.path.exists(SSHD),
                                 reason="network namespaces need root and iproute2 (ip netns); the target needs sshd")]

SSH_PORT = 22  # the target's own namespace: nothing else listens there


@dataclass(frozen=True)
class Segment:
    dmz: str  # the namespace of the DMZ worker
    target_ns: str  # the namespace of the target host
    dmz_address: str  # the DMZ host's veth end
    target: str  # the target's address (its veth end)

    def run_in(self, namespace: str) -> list[str]:
        return ["ip", "netns", "exec", namespace]


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True)


def _end_namespace(name: str) -> None:
    """Every process still in the namespace (the test's: it made the namespace), then the namespace."""
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            pass
    subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@pytest.fixture
def segment() -> Iterator[Segment]:
    ident = uuid.uuid4().hex[:8]
    n = random.randint(1, 250)
    seg = Segment(dmz=f"pcdmz-{ident}", target_ns=f"pcdmzt-{ident}", dmz_address=f"127.77.{n}.1",
                  target=f"127.77.{n}.2")
    veth_dmz, veth_target = f"vd{ident}", f"vt{ident}"  # at most 15 characters
    made: list[str] = []
    try:
        for name in (seg.dmz, seg.target_ns):
            _ip("netns", "add", name)
            made.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        _ip("link", "add", veth_dmz, "type", "veth", "peer", "name", veth_target)
        _ip("link", "set", veth_dmz, "netns", seg.dmz)
        _ip("link", "set", veth_target, "netns", seg.target_ns)
        for name, veth, address in ((seg.dmz, veth_dmz, seg.dmz_address), (seg.target_ns, veth_target, seg.target)):
            subprocess.run([*seg.run_in(name), "sysctl", "-q", "-w", "net.ipv4.conf.all.route_localnet=1",
                            f"net.ipv4.conf.{veth}.route_localnet=1"], check=True, capture_output=True)
            _ip("-n", name, "addr", "add", f"{address}/30", "dev", veth)
            _ip("-n", name, "link", "set", veth, "up")
        yield seg
    finally:
        for name in reversed(made):  # the veth pair goes with its namespaces
            _end_namespace(name)
        if subprocess.run(["ip", "link", "show", veth_dmz], capture_output=True).returncode == 0:
            subprocess.run(["ip", "link", "del", veth_dmz], check=False, capture_output=True)


def _connect_fails(address: str, port: int) -> str | None:
    """Why a connect from this (the root) namespace fails, or None when it succeeds."""
    with socket.socket() as s:
        s.settimeout(5)
        try:
            s.connect((address, port))
        except OSError as exc:
            return type(exc).__name__
        return None


def _reaches(seg: Segment, namespace: str, port: int) -> bool:
    probe = [*seg.run_in(namespace), sys.executable, "-c",
             f"import socket; socket.create_connection(('{seg.target}', {port}), 2).close()"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def _socket_dsn(tcp_dsn: str, socket_dir: Path, port: int) -> str:
    """The same database through PostgreSQL's unix socket (what a worker in another network namespace uses)."""
    database = urllib.parse.urlsplit(tcp_dsn).path.lstrip("/")
    return f"postgresql://polycrate@/{database}?host={urllib.parse.quote(str(socket_dir), safe='')}&port={port}"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _start_sshd(seg: Segment, folder: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """An sshd on the target's address inside the target's namespace; its process and the client key."""
    folder.mkdir()
    key, hostkey = folder / "id_ed25519", folder / "ssh_host_ed25519_key"
    for path in (key, hostkey):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    authorized = folder / "authorized_keys"
    shutil.copy(key.with_suffix(".pub"), authorized)
    authorized.chmod(0o600)
    config = folder / "sshd.conf"
    config.write_text("\n".join([
        f"ListenAddress {seg.target}:{SSH_PORT}", f"HostKey {hostkey}", f"AuthorizedKeysFile {authorized}",
        f"PidFile {folder}/sshd.pid", "PermitRootLogin prohibit-password", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "LogLevel INFO", ""]))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    out = open(folder / "sshd.log", "wb")
    try:
        proc = subprocess.Popen([*seg.run_in(seg.target_ns), SSHD, "-D", "-e", "-f", str(config)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        out.close()
    return proc, key


def _workspace(root: Path, seg: Segment, key: Path, marker: Path) -> Path:
    write(root / "workspace.poly", """
        name: dmzws
        blocks:
          - name: net
        workflows:
          - name: reach
            queue: dmz
            steps:
              - {name: mark, block: net, action: mark}
          - name: local
            steps:
              - {name: hello, block: net, action: hello}
        """)
    write(root / "blocks/net/block.poly", """
        name: net
        actions:
          - {name: mark, playbook: mark.yml}
          - name: hello
            script:
              - echo hello
        """)
    write(root / "blocks/net/mark.yml", f"""
        - hosts: target
          gather_facts: false
          tasks:
            - name: leave a marker on the target, over SSH
              ansible.builtin.shell: echo "$SSH_CONNECTION" >> {marker}
        """)
    ssh_args = ("-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ControlMaster=no "
                "-o ControlPath=none -o LogLevel=ERROR -o ConnectTimeout=10")
    write(root / "inventory.yml", f"""
        all:
          hosts:
            target:
              ansible_host: {seg.target}
              ansible_port: {SSH_PORT}
              ansible_user: root
              ansible_ssh_private_key_file: {key}
              ansible_ssh_args: "-o ControlMaster=no -o ControlPersist=no"
              ansible_ssh_common_args: "{ssh_args}"
              ansible_python_interpreter: {shutil.which("python3") or "/usr/bin/python3"}
        """)
    return committed(root)


def _status(team: Team, run_id: str) -> str | None:
    rows = team.sql("SELECT status FROM runs WHERE workspace = 'dmzws' AND id = %s", run_id)
    return rows[0]["status"] if rows else None


def test_a_dmz_workflow_reaches_its_target_from_the_dmz_worker_only(team_env, postgres, tmp_path, segment):
    seg = segment
    marker = tmp_path / "target-marker.log"
    sshd, key = _start_sshd(seg, tmp_path / "target")
    marks = tmp_path / "marks"
    marks.mkdir()
    team = Team(_workspace(tmp_path / "ws", seg, key, marker), marks, team_env, tmp_path)
    try:
        _wait_for(lambda: _reaches(seg, seg.dmz, SSH_PORT), "the target's sshd answers from the DMZ namespace")
        # the root namespace cannot reach it: there 127.77.N.2 is the host's own loopback, where nothing listens
        assert _connect_fails(seg.target, SSH_PORT) == "ConnectionRefusedError"

        team.start_worker("w-host")
        reach = team.cli("workflows", "run", "reach")  # queue: dmz; no dmz worker yet
        assert reach.returncode == 0, reach.output
        dmz_run = reach.stdout.strip().splitlines()[-1]
        # launched after it, run by w-host, which takes the oldest job it may: had it taken dmz's, that first
        here = team.cli("workflows", "run", "local", "--wait")
        assert here.returncode == 0, here.output
        assert team.sql("SELECT state FROM team_runs WHERE id = %s", dmz_run)[0]["state"] == "queued"
        assert not marker.exists()

        dmz_env = team.env | {"POLYCRATE_BACKEND": _socket_dsn(team.env["POLYCRATE_BACKEND"], postgres.data,
                                                               postgres.port)}
        team.start_worker("w-dmz", "--queue", "dmz", prefix=seg.run_in(seg.dmz), env=dmz_env)
        _wait_for(lambda: _status(team, dmz_run) not in (None, "running"), "the dmz worker ran the queued run")
        shown = team.show(dmz_run)
        assert shown["status"] == "succeeded", (shown, team.worker_log("w-dmz"))
        # the task ran on the target, over SSH from the DMZ host's veth address
        lines = marker.read_text().splitlines()
        assert len(lines) == 1 and lines[0].split()[0] == seg.dmz_address and lines[0].split()[2:] == [
            seg.target, str(SSH_PORT)], lines

        # the same workflow sent to the default queue: the host's worker runs it and cannot reach the target
        elsewhere = team.cli("workflows", "run", "reach", "--queue", "default", "--wait")
        assert elsewhere.returncode != 0, elsewhere.output
        assert "UNREACHABLE" in elsewhere.stdout, elsewhere.output
        other_run = elsewhere.stdout.splitlines()[0]
        workers = {r["id"]: (r["queue"], r["worker"]) for r in team.sql("SELECT id, queue, worker FROM team_runs")}
        assert workers[dmz_run] == ("dmz", "w-dmz")
        assert workers[other_run] == ("default", "w-host")
        other = team.show(other_run)
        assert other["status"] == "failed" and other["failed_host"] == "target", other
        assert marker.read_text().splitlines() == lines  # the target saw the dmz worker's run only
        assert _connect_fails(seg.target, SSH_PORT) == "ConnectionRefusedError"
        listed = json.loads(team.cli("worker", "list", "-o", "json").stdout)["workers"]
        assert sorted((w["name"], w["queues"], w["state"]) for w in listed) == [
            ("w-dmz", ["dmz"], "alive"), ("w-host", ["default"], "alive")]
    finally:
        team.stop_all()
        _stop(sshd)
