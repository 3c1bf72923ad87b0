"""What a run's record says (issue 27): the signal that killed a step, the runtime it ran in; and the
checks that match the run: validate without the key, a schedule's unit with the identity file."""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import run_cli, write
from tests.integration.test_container_runtime import make_workspace as make_container_workspace
from tests.integration.test_container_runtime import our_containers
from tests.helpers import cli_environment, validate_document
from tests.integration.test_server_api import _session
from tests.server_fixtures import start_server

WORKSPACE = """
name: record
blocks:
  - name: s
workflows:
  - name: nap
    steps:
      - {name: nap, block: s, action: nap}
      - {name: after, block: s, action: hi}
"""
BLOCK = """
name: s
version: 1.0.0
actions:
  - name: nap
    script: ["echo $$ > ../../nap.pid; exec sleep 60"]
  - name: hi
    script: ["echo hi"]
"""


@pytest.fixture
def ws(tmp_path):
    root = tmp_path / "ws"
    write(root / "workspace.poly", WORKSPACE)
    write(root / "blocks/s/block.poly", BLOCK)
    return root


def test_a_step_killed_by_sigkill_names_the_signal_everywhere(ws, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "polycrate", "workflows", "run", "nap"], cwd=ws,
                            env=cli_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        pid_file = ws / "nap.pid"
        deadline = time.monotonic() + 120
        while not (pid_file.exists() and pid_file.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, "the step never started"
            time.sleep(0.1)
        time.sleep(0.3)  # `exec sleep`: the pid is the sleep's by now
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out
    assert re.search(r"nap\s+failed \(killed by SIGKILL\)", out), out  # the summary's table
    assert "killed by SIGKILL" in out.split("failed: step nap", 1)[1]  # the message under it

    shown = run_cli("runs", "show", "latest", cwd=ws)
    assert re.search(r"nap\s+s nap\s+failed \(killed by SIGKILL\)\s+1\s", shown.stdout), shown.stdout  # ATTEMPTS 1
    doc = validate_document(json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=ws).stdout), "run")
    nap, after = doc["steps"]
    assert nap["signal"] == "SIGKILL" and nap["exit_code"] == -9 and nap["message"] == "killed by SIGKILL"
    assert after["signal"] is None and after["status"] == "skipped"
    assert doc["status"] == "failed" and doc["runtime"] == "local" and doc["image"] is None

    server = start_server(tmp_path, [ws])
    try:
        client, _ = _session(server, "viewer")
        page = client.get(f"/runs/{doc['run_id']}")
        assert page.status_code == 200
        row = re.search(r'<tr data-step="nap">(.*?)</tr>', page.text, re.S).group(1)
        assert "(killed by SIGKILL)" in row and "<td>1</td>" in row  # the status and the attempts
        assert re.search(r'id="run-runtime">local<', page.text)
    finally:
        server.stop()


def test_the_run_header_names_the_runtime(ws):
    result = run_cli("workflows", "run", "nap", "--step", "after", cwd=ws)
    assert result.returncode == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("==> workflow nap: 1 step, run ")
    assert lines[1] == "==> runtime: local (this machine)"
    shown = run_cli("runs", "show", "latest", cwd=ws)
    assert "runtime:   local\n" in shown.stdout


def test_validate_refuses_an_encrypted_workspace_without_its_key_as_the_run_does(ws, tmp_path):
    key = tmp_path / "key.txt"
    made = run_cli("workspace", "keygen", "--identity", str(key), cwd=ws)
    assert made.returncode == 0, made.output
    recipient = made.stdout.splitlines()[0]
    text = (ws / "workspace.poly").read_text()
    write(ws / "workspace.poly", text + f"encryption:\n  recipients: [{recipient}]\n")
    write(ws / "artifacts/secrets/secrets.poly", "config:\n  password: hunter2-NOLOG\n")
    encrypted = run_cli("workspace", "encrypt", cwd=ws, env={"POLYCRATE_IDENTITY_FILE": str(key)})
    assert encrypted.returncode == 0, encrypted.output
    no_key = {"POLYCRATE_IDENTITY_FILE": "", "WORKSPACE_ENCRYPTION_KEY": "", "XDG_CONFIG_HOME": str(tmp_path / "none")}

    run = run_cli("workflows", "run", "nap", "--step", "after", cwd=ws, env=no_key)
    validate = run_cli("workspace", "validate", cwd=ws, env=no_key)
    assert run.returncode == 2 and validate.returncode == 2, (run.output, validate.output)
    said = run.stderr.strip().removeprefix("polycrate: error: ")
    assert said and said in validate.stderr, (said, validate.stderr)  # the same words as the run
    assert "hunter2" not in validate.output

    with_key = run_cli("workspace", "validate", cwd=ws, env={"POLYCRATE_IDENTITY_FILE": str(key)})
    assert with_key.returncode == 0, with_key.output


def test_a_schedule_of_an_encrypted_workspace_carries_the_identity_file(ws, tmp_path):
    key = tmp_path / "keys" / "age.txt"
    key.parent.mkdir()
    made = run_cli("workspace", "keygen", "--identity", str(key), cwd=ws)
    assert made.returncode == 0, made.output
    recipient = made.stdout.splitlines()[0]
    text = (ws / "workspace.poly").read_text().replace(
        "  - name: nap\n", "  - name: nap\n    schedule: {cron: '0 2 * * *'}\n", 1)
    write(ws / "workspace.poly", text + f"encryption:\n  recipients: [{recipient}]\n")
    write(ws / "artifacts/secrets/secrets.poly", "config:\n  password: hunter2-NOLOG\n")
    assert run_cli("workspace", "encrypt", cwd=ws, env={"POLYCRATE_IDENTITY_FILE": str(key)}).returncode == 0
    dest = tmp_path / "units"
    dest.mkdir()

    refused = run_cli("schedules", "plan", "--dest", str(dest), cwd=ws,
                      env={"POLYCRATE_IDENTITY_FILE": "", "XDG_CONFIG_HOME": str(tmp_path / "none")})
    assert refused.returncode == 2
    assert "encrypted secrets" in refused.stderr and "POLYCRATE_IDENTITY_FILE=FILE" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    applied = run_cli("schedules", "apply", "--dest", str(dest), cwd=ws, env={"POLYCRATE_IDENTITY_FILE": str(key)})
    assert applied.returncode == 0, applied.output
    service = next(dest.glob("*.service")).read_text()
    assert f"Environment=POLYCRATE_IDENTITY_FILE={key}" in service, service
    assert "AGE-SECRET-KEY" not in service

    cron = tmp_path / "cron"
    cron.mkdir()
    applied = run_cli("schedules", "apply", "--cron", "--dest", str(cron), cwd=ws,
                      env={"POLYCRATE_IDENTITY_FILE": str(key)})
    assert applied.returncode == 0, applied.output
    line = next(cron.iterdir()).read_text().splitlines()[-1]
    assert f"env POLYCRATE_IDENTITY_FILE={key} " in line, line


def test_a_container_run_says_where_it_runs_and_warns_about_local_hosts(podman_engine, fleet, tmp_path):
    """The header names the runtime, engine and image; the record keeps image and digest; a host with
    ansible_connection: local is named by the preflight; the toolchain's deprecation noise stays in the log."""
    root = make_container_workspace(tmp_path, fleet, runtime="container")
    ws = yaml.safe_load((root / "workspace.poly").read_text())
    ws["name"] = name = f"where-{secrets.token_hex(3)}"  # our containers carry it: others' runs share podman
    (root / "workspace.poly").write_text(yaml.safe_dump(ws, sort_keys=False, allow_unicode=True))
    inventory = yaml.safe_load((root / "inventory.yml").read_text())
    inventory["all"]["hosts"]["localhost"] = {"ansible_connection": "local"}
    (root / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    result = run_cli("workflows", "run", "nightly-maintenance", cwd=root)
    assert result.returncode == 0, result.output
    header = [line for line in result.stdout.splitlines() if line.startswith("==> runtime: ")]
    assert len(header) == 1 and header[0].startswith("==> runtime: container (podman), image "), result.stdout
    assert re.search(r"preflight: warning: inventory\.yml: host localhost with ansible_connection: local run in "
                     r"the container: they check the container, not this machine; say --local or config\.runtime: "
                     r"local", result.stdout), result.stdout
    assert "CryptographyDeprecationWarning" not in result.stdout

    doc = validate_document(json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=root).stdout), "run")
    assert doc["runtime"] == "container" and doc["image"] and doc["image"] in header[0]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", doc["image_digest"] or ""), doc["image_digest"]
    assert doc["image_digest"][:19] in header[0]
    shown = run_cli("runs", "show", "latest", cwd=root).stdout
    assert f"runtime:   container, image {doc['image']} ({doc['image_digest']})" in shown
    assert our_containers(name) == []
