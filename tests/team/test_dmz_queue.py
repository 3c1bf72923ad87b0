"""Queue routing into a segment only one worker can reach: a target host listening inside a network namespace
the test makes (its own `lo`, the target on 127.77.0.2) is reached by a `dmz` worker running in that
namespace, never by the worker outside it.

The dmz worker reaches PostgreSQL through its unix socket (the filesystem is shared across network
namespaces): it needs no route to the host's loopback, as a worker in a DMZ connects out to the database only.
The target is a tiny HTTP host that writes down every request. Real parts throughout: `ip netns`, PostgreSQL,
`polycrate worker` processes, the CLI; nothing leaves loopback or the test's namespace.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest

from tests.conftest import write
from tests.helpers import run_cli

pytestmark = [pytest.mark.team,
              pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                 reason="network namespaces need root and iproute2 (ip netns)")]

TARGET = "127.77.0.2"  # inside the namespace only; on the host nothing listens there (checked)
DEADLINE = 180.0

TARGET_SERVER = """
import http.server, sys
log = sys.argv[3]
class Target(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(log, "a") as f:
            f.write(self.path + "\\n")
        body = b"dmz target answered\\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), Target).serve_forever()
"""


def _wait_for(what, description: str):
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        value = what()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {DEADLINE:g}s: {description}")


def _refused(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        try:
            s.connect((address, port))
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
        return False


def _socket_dsn(tcp_dsn: str, socket_dir: Path, port: int) -> str:
    """The same database through PostgreSQL's unix socket (what a worker in another network namespace uses)."""
    database = urllib.parse.urlsplit(tcp_dsn).path.lstrip("/")
    return f"postgresql://polycrate@/{database}?host={urllib.parse.quote(str(socket_dir), safe='')}&port={port}"


@pytest.fixture
def dmz_namespace():
    name = f"polycrate-dmz-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_dmz_workflow_reaches_its_target_from_the_dmz_worker_only(team_env, postgres, tmp_path, dmz_namespace):
    from polycrate.history.postgres import connect

    port = 18000 + uuid.uuid4().int % 20000
    assert _refused(TARGET, port), f"something on this host answers on {TARGET}:{port}: the test would prove nothing"
    requests_log = tmp_path / "target-requests.log"
    requests_log.touch()
    ws = tmp_path / "ws"
    write(ws / "workspace.poly", """
        name: dmzws
        blocks:
          - name: net
        workflows:
          - name: reach
            queue: dmz
            steps:
              - {name: fetch, block: net, action: fetch}
          - name: local
            steps:
              - {name: hello, block: net, action: hello}
        """)
    write(ws / "blocks/net/block.poly", f"""
        name: net
        actions:
          - name: fetch
            script:
              - >-
                python3 -c 'import sys, urllib.request;
                sys.stdout.write(urllib.request.urlopen("http://{TARGET}:{port}/reach", timeout=10).read().decode())'
          - name: hello
            script:
              - echo hello
        """)
    write(ws / "inventory.yml", "all:\n  hosts:\n    localhost: {}\n")
    write(ws / ".gitignore", ".polycrate/\nartifacts/\n")
    for argv in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit",
                                                    "-q", "-m", "workspace"]):
        subprocess.run(["git", *argv], cwd=ws, check=True, capture_output=True)

    def sql(query: str, *args):
        db = connect(team_env["POLYCRATE_BACKEND"])
        try:
            return list(db.execute(query, args).fetchall())
        finally:
            db.close()

    def status(run_id: str) -> str | None:
        rows = sql("SELECT status FROM runs WHERE workspace = 'dmzws' AND id = %s", run_id)
        return rows[0]["status"] if rows else None

    started: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], log: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out = open(tmp_path / log, "wb")
        try:
            proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()
        started.append(proc)
        return proc

    in_dmz = ["ip", "netns", "exec", dmz_namespace]
    worker = [sys.executable, "-m", "polycrate", "worker", "--lost-after", "10", "--heartbeat", "1"]
    try:
        start([*in_dmz, sys.executable, "-c", TARGET_SERVER, TARGET, str(port), str(requests_log)], "target.log")
        probe = [*in_dmz, sys.executable, "-c", f"import socket; socket.create_connection(('{TARGET}', {port}), 2)"]
        _wait_for(lambda: subprocess.run(probe, capture_output=True).returncode == 0,
                  "the target listens inside the namespace")
        assert _refused(TARGET, port)  # and still nothing on the host: only the namespace reaches it

        start([*worker, "--name", "w-host"], "worker-w-host.log", os.environ | team_env)
        reach = run_cli("workflows", "run", "reach", cwd=ws, env=team_env)  # queue: dmz; no dmz worker yet
        assert reach.returncode == 0, reach.output
        dmz_run = reach.stdout.strip().splitlines()[-1]
        # launched after it, run by w-host, which takes the oldest job it may: had it taken dmz's, that first
        here = run_cli("workflows", "run", "local", "--wait", cwd=ws, env=team_env)
        assert here.returncode == 0, here.output
        assert sql("SELECT state FROM team_runs WHERE id = %s", dmz_run)[0]["state"] == "queued"

        dmz_env = os.environ | team_env | {
            "POLYCRATE_BACKEND": _socket_dsn(team_env["POLYCRATE_BACKEND"], postgres.data, postgres.port)}
        start([*in_dmz, *worker, "--name", "w-dmz", "--queue", "dmz"], "worker-w-dmz.log", dmz_env)
        _wait_for(lambda: status(dmz_run) not in (None, "running"), "the dmz worker ran the queued run")
        shown = run_cli("runs", "show", dmz_run, "-o", "json", cwd=ws, env=team_env)
        assert json.loads(shown.stdout)["status"] == "succeeded", shown.output
        logs = run_cli("runs", "logs", dmz_run, cwd=ws, env=team_env)
        assert "dmz target answered" in logs.stdout, logs.output
        assert requests_log.read_text().splitlines() == ["/reach"]

        # the same workflow sent to the default queue: the host's worker runs it and cannot reach the target
        elsewhere = run_cli("workflows", "run", "reach", "--queue", "default", "--wait", cwd=ws, env=team_env)
        assert elsewhere.returncode == 1, elsewhere.output
        assert "Connection refused" in elsewhere.stdout, elsewhere.output
        other_run = elsewhere.stdout.splitlines()[0]
        workers = {r["id"]: (r["queue"], r["worker"]) for r in sql("SELECT id, queue, worker FROM team_runs")}
        assert workers[dmz_run] == ("dmz", "w-dmz")
        assert workers[other_run] == ("default", "w-host")
        assert status(other_run) == "failed"
        assert requests_log.read_text().splitlines() == ["/reach"]  # the target saw the dmz worker's run only
        listed = json.loads(run_cli("worker", "list", "-o", "json", cwd=ws, env=team_env).stdout)["workers"]
        assert sorted((w["name"], w["queues"], w["state"]) for w in listed) == [
            ("w-dmz", ["dmz"], "alive"), ("w-host", ["default"], "alive")]
    finally:
        for proc in reversed(started):
            _stop(proc)
