"""The container runtime with real podman and a real Docker engine: same results as local, nothing left behind.

Runs on a machine where the engine can start a container from the local base image
(made once by `polycrate toolchain build --base`, cached as a tarball in
~/.cache/polycrate or $POLYCRATE_CACHE); elsewhere these tests skip and say why.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ARTICLE_BLOCK, EXAMPLE, article_inventory, assert_one_line_error, run_cli, write
from tests.helpers import cli_environment
from tests.integration.container_engines import EngineUnderTest

pytestmark = pytest.mark.container

LABEL = "org.polycrate.run"


def our_containers(workspace_name: str | None = None) -> list[str]:
    """Our containers in podman (test_container_toolchain's check); the engine's own: engine.containers."""
    return EngineUnderTest("podman").containers(workspace_name)


# Each play asks the SSH host something (over the real SSH connection, with the inventory's key)
# and records it, with what polycrate gave the play, from the control node into the workspace:
# in the container the control node is the container and the workspace is /workspace.
PROBE_PLAY = """
- name: probe {action}
  hosts: "{{{{ block.config.{hosts_key} }}}}"
  gather_facts: false
  tasks:
    - name: ask the host
      ansible.builtin.shell: echo "$(id -un)@$(cat /etc/debian_version | cut -d. -f1)"
      register: remote
      changed_when: false
    - name: record
      delegate_to: localhost
      ansible.builtin.shell: >-
        printf '%s\\n' {{{{ {{'action': '{action}', 'host': inventory_hostname, 'remote': remote.stdout,
        'config': block.config, 'block': block.name, 'version': block.version, 'workspace': workspace.name,
        'root': workspace.root, 'block_path': block.path, 'artifacts': block.artifacts.path,
        'step': lookup('env', 'POLYCRATE_STEP'), 'workflow': lookup('env', 'POLYCRATE_WORKFLOW'),
        'env_workspace': lookup('env', 'POLYCRATE_WORKSPACE'), 'env_block_path': lookup('env', 'POLYCRATE_BLOCK_PATH'),
        'inventory': lookup('env', 'ANSIBLE_INVENTORY'), 'cwd': lookup('pipe', 'pwd')}}
        | to_json | quote }}}} >> {{{{ workspace.root }}}}/records.jsonl
"""

PROBE_BLOCK = """
name: probe
version: 1.0.0
kind: generic
config:
  greeting: hello
actions:
  - name: show
    script:
      - echo "cwd=$(pwd)"
      - echo "workspace=$POLYCRATE_WORKSPACE block_path=$POLYCRATE_BLOCK_PATH action=$POLYCRATE_ACTION"
      - echo "inventory=${ANSIBLE_INVENTORY:-none}"
      - echo "templated={{ .block.path }} {{ .block.config.greeting }}"
      - python3 -c "import yaml,os; d=yaml.safe_load(open(os.environ['POLYCRATE_WORKSPACE_SNAPSHOT_YAML'])); print('snapshot', d['workspace']['root'], d['block']['path'], d['block']['config']['greeting'])"
      - test -f "$POLYCRATE_WORKSPACE/workspace.poly" && echo "workspace.poly is there"
  - name: fail
    script:
      - echo "about to fail"
      - exit 3
  - name: sleep
    script:
      - echo "sleeping"
      - sleep 300
"""


def make_workspace(tmp_path: Path, fleet, runtime: str | None = None, engine: EngineUnderTest | None = None,
                   name: str | None = None) -> Path:
    """The article's workspace (workspace.poly and block.poly unchanged) with probe plays, plus a script block.
    `name`: the workspace's own (our containers carry it: other runs of the article's workspace on this
    machine, other checkouts' tests, have containers of the article's name)."""
    root = tmp_path / "acme-corp-automation"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("artifacts", ".polycrate", ".demo"))
    block = root / ARTICLE_BLOCK
    for action, key in (("backup", "hosts"), ("update", "web_hosts"), ("verify", "web_hosts")):
        (block / f"{action}.yml").write_text(PROBE_PLAY.format(action=action, hosts_key=key))
    (root / "inventory.yml").write_text(yaml.safe_dump(article_inventory(fleet), sort_keys=False))
    write(root / "blocks" / "probe" / "block.poly", PROBE_BLOCK)
    if runtime or engine or name:
        ws = yaml.safe_load((root / "workspace.poly").read_text())
        if name:
            ws["name"] = name
        if runtime:
            ws.setdefault("config", {})["runtime"] = runtime
        if engine:
            ws.setdefault("config", {})["engine"] = engine.name
        (root / "workspace.poly").write_text(yaml.safe_dump(ws, sort_keys=False, allow_unicode=True))
    return root


def normalized_records(root: Path) -> list[dict]:
    lines = (root / "records.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return sorted(records, key=lambda r: (r["action"], r["host"]))


def test_same_workflow_same_result_in_local_and_container(engine, fleet, tmp_path):
    results = {}
    name = f"acme-{secrets.token_hex(3)}"
    for runtime in ("local", "container"):
        root = make_workspace(tmp_path / runtime, fleet, engine=engine, name=name)
        result = run_cli("workflows", "run", "nightly-maintenance", "--runtime", runtime, "-o", "json", cwd=root,
                         env=engine.env)
        assert result.returncode == 0, result.output
        summary = json.loads(result.stdout)
        assert [s["status"] for s in summary["steps"]] == ["succeeded"] * 3, summary
        results[runtime] = (root, normalized_records(root))

    (local_root, local), (_container_root, inside) = results["local"], results["container"]
    assert len(local) == 3  # backup on db01; update and verify on app01
    # the paths the play was given are the workspace's paths where the play runs
    for record in inside:
        for key in ("root", "env_workspace"):
            assert record[key] == "/workspace", record
        assert record["block_path"] == f"/workspace/{ARTICLE_BLOCK}"
        assert record["env_block_path"] == record["block_path"] == record["cwd"]
        assert record["inventory"] == "/workspace/inventory.yml"
        assert record["artifacts"] == "/workspace/artifacts/blocks/linux-maintenance"
    for record in local:
        assert record["root"] == str(local_root)
        assert record["cwd"] == str(local_root / ARTICLE_BLOCK)

    def relative(records, root):
        return [json.loads(json.dumps(r).replace(str(root), "<ws>")) for r in records]

    assert relative(local, local_root) == relative(inside, "/workspace")
    assert {r["remote"] for r in inside} == {"root@12"}  # the SSH host answered, over SSH, in both runtimes
    assert [r["step"] for r in inside] == ["backup", "update", "verify"]
    assert engine.containers(name) == []


def test_script_action_sees_container_paths_and_fails_cleanly(engine, fleet, tmp_path):
    name = f"acme-{secrets.token_hex(3)}"
    root = make_workspace(tmp_path, fleet, runtime="container", engine=engine, name=name)  # config.runtime: container
    result = run_cli("run", "probe", "show", cwd=root, env=engine.env)
    assert result.returncode == 0, result.output
    assert "cwd=/workspace/blocks/probe" in result.stdout
    assert "workspace=/workspace block_path=/workspace/blocks/probe action=show" in result.stdout
    assert "inventory=/workspace/inventory.yml" in result.stdout
    assert "templated=/workspace/blocks/probe hello" in result.stdout  # Go templates over container paths
    assert "snapshot /workspace /workspace/blocks/probe hello" in result.stdout
    assert "workspace.poly is there" in result.stdout

    local = run_cli("run", "probe", "show", "--runtime", "local", cwd=root, env=engine.env)
    assert local.returncode == 0, local.output
    assert f"cwd={root}/blocks/probe" in local.stdout
    assert f"templated={root}/blocks/probe hello" in local.stdout

    failed = run_cli("run", "probe", "fail", cwd=root, env=engine.env)
    assert failed.returncode == 1, failed.output
    assert "about to fail" in failed.stdout
    assert "exit 3" in failed.stdout
    assert engine.containers(name) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_container_run_leaves_no_container(engine, fleet, tmp_path, sig):
    root = make_workspace(tmp_path, fleet, runtime="container", engine=engine)
    ws = yaml.safe_load((root / "workspace.poly").read_text())
    ws["name"] = name = f"interrupt-{secrets.token_hex(3)}"  # our containers carry the workspace's name
    (root / "workspace.poly").write_text(yaml.safe_dump(ws, sort_keys=False, allow_unicode=True))
    proc = subprocess.Popen(
        [sys.executable, "-m", "polycrate", "run", "probe", "sleep"],
        cwd=root,
        env=cli_environment(engine.env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the step runs in the run's container
            seen.append(line)
            if line.strip() == "sleeping":
                break
        assert engine.containers(name), "".join(seen)
        proc.send_signal(sig)
        started = time.monotonic()
        out, _ = proc.communicate(timeout=60)
        out = "".join(seen) + out
        stopped_in = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "sleeping" in out
    assert engine.containers(name) == [], "a container was left behind"
    assert stopped_in < 15, f"stopping took {stopped_in:.1f}s"


def test_container_runtime_errors_are_one_line(engine, fleet, tmp_path):
    name = f"acme-{secrets.token_hex(3)}"
    root = make_workspace(tmp_path, fleet, name=name)
    text = (root / "workspace.poly").read_text()

    (root / "workspace.poly").write_text(text + "config:\n  runtime: cloud\n")
    result = run_cli("run", "probe", "show", cwd=root)
    assert_one_line_error(result, "workspace.poly:", "config.runtime must be one of local, container")

    (root / "workspace.poly").write_text(text + f"config:\n  runtime: container\n  engine: {engine.name}\n"
                                         "  image: localhost/no-such-image:1\n")
    result = run_cli("run", "probe", "show", cwd=root, env=engine.env)
    assert_one_line_error(result, "localhost/no-such-image:1", f"{engine.name} load")

    (root / "workspace.poly").write_text(text + "config:\n  runtime: container\n")
    result = run_cli("run", "probe", "show", cwd=root, env={"PATH": str(tmp_path / "empty")})
    assert_one_line_error(result, "needs podman or docker", "apt-get install podman", "--local")

    (root / "workspace.poly").write_text(text + "config:\n  runtime: container\n  engine: docker\n")
    result = run_cli("run", "probe", "show", cwd=root)
    if shutil.which("docker") is None:
        assert_one_line_error(result, "needs docker", "--local")
    elif subprocess.run(["docker", "version"], capture_output=True).returncode != 0:
        assert_one_line_error(result, "docker is installed but its daemon does not answer", "--local")

    (root / "workspace.poly").write_text(text + f"config:\n  engine: {engine.name}\n")
    write(root / "Dockerfile.poly", "FROM localhost/polycrate-base:latest\nRUN echo broken; exit 7\n")
    result = run_cli("run", "probe", "show", "--runtime", "container", cwd=root, env=engine.env)
    assert result.returncode == 2, result.output
    assert "Traceback" not in result.output
    last = result.stderr.strip().splitlines()[-1]  # after the build's own output (prefixed [toolchain])
    assert last.startswith("polycrate: error: Dockerfile.poly: building Dockerfile.poly failed"), last
    assert "polycrate toolchain build" in last and "exit 7" in result.stderr
    assert engine.containers(name) == []


DEFAULT = {"POLYCRATE_RUNTIME": ""}  # no machine default (conftest says local for the other tests)


def test_the_container_is_the_default_runtime_and_local_opts_out(engine, fleet, tmp_path):
    name = f"acme-{secrets.token_hex(3)}"
    root = make_workspace(tmp_path, fleet, engine=engine, name=name)  # workspace.poly says nothing about the runtime
    default = DEFAULT | engine.env
    inside = run_cli("run", "probe", "show", cwd=root, env=default)
    assert inside.returncode == 0, inside.output
    assert "cwd=/workspace/blocks/probe" in inside.stdout  # in the container
    played = run_cli("workflow", "run", "nightly-maintenance", "-o", "json", cwd=root, env=default)
    assert played.returncode == 0, played.output
    assert {r["root"] for r in normalized_records(root)} == {"/workspace"}  # ansible too, over SSH

    for argv in (("run", "probe", "show", "--local"), ("-l", "run", "probe", "show")):
        local = run_cli(*argv, cwd=root, env=default)
        assert local.returncode == 0, local.output
        assert f"cwd={root}/blocks/probe" in local.stdout
    ws = yaml.safe_load((root / "workspace.poly").read_text())
    ws.setdefault("config", {})["runtime"] = "local"
    (root / "workspace.poly").write_text(yaml.safe_dump(ws, sort_keys=False, allow_unicode=True))
    local = run_cli("run", "probe", "show", cwd=root, env=default)
    assert local.returncode == 0 and f"cwd={root}/blocks/probe" in local.stdout, local.output
    assert engine.containers(name) == []


def test_no_engine_stops_the_default_run_with_one_line_naming_both_fixes(tmp_path, fleet):
    root = make_workspace(tmp_path, fleet)
    before = json.loads(run_cli("runs", "list", "-o", "json", cwd=root).stdout)["runs"]
    result = run_cli("run", "probe", "show", cwd=root, env={**DEFAULT, "PATH": str(tmp_path / "empty")})
    assert_one_line_error(result, "the default runtime", "apt-get install podman", "--local")
    assert "cwd=" not in result.stdout  # never a silent fallback to this machine: nothing ran
    assert json.loads(run_cli("runs", "list", "-o", "json", cwd=root).stdout)["runs"] == before
    local = run_cli("run", "probe", "show", "--local", cwd=root, env={**DEFAULT, "PATH": os.environ["PATH"]})
    assert local.returncode == 0, local.output
