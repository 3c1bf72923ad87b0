"""The real Polycrate's global flags on real workspaces: before or after the command, -e in both
runtimes (script and ansible actions, an SSH test host), -m, --snapshot, --loglevel, the workspace's
SSH key, -b, --auto-commit and the run's event (.logs/ file or a POST to a loopback server)."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import assert_one_line_error, run_cli, write
from tests.helpers import free_port

RECORD_PLAY = """
- name: record what the control node was given
  hosts: all
  gather_facts: false
  tasks:
    - name: ask the SSH host, with the variable from -e
      ansible.builtin.shell: echo "$(id -un) says {{ lookup('env', 'STAGE') }}"
      register: said
      changed_when: false
    - name: write it into the workspace (on the control node)
      delegate_to: localhost
      ansible.builtin.copy:
        dest: "{{ workspace.root }}/said-{{ inventory_hostname }}.txt"
        content: "{{ said.stdout }} key={{ lookup('env', 'ANSIBLE_PRIVATE_KEY_FILE') }}\\n"
"""


def _workspace(tmp_path, fleet=None, with_key=True):
    root = tmp_path / "ws"
    write(root / "workspace.poly", """
        name: flags-ws
        blocks:
          - name: app
        workflows:
          - name: deploy
            steps:
              - {name: show, block: app, action: show}
    """)
    write(root / "blocks" / "app" / "block.poly", """
        name: app
        version: 1.0.0
        actions:
          - name: show
            script:
              - echo "STAGE=${STAGE:-unset} OTHER=${OTHER:-unset} VERBOSITY=${ANSIBLE_VERBOSITY:-unset}"
              - echo "IN_CONTAINER=$IN_CONTAINER FORCE=$POLYCRATE_FORCE WORKDIR=$POLYCRATE_BLOCK_WORKDIR"
              - echo ran >> "$POLYCRATE_WORKSPACE/ran.txt"
          - name: mounted
            script:
              - cat /data/hello.txt
          - name: record
            playbook: record.yml
    """)
    (root / "blocks" / "app" / "record.yml").write_text(RECORD_PLAY)
    if fleet is not None:
        inventory = fleet.inventory()
        if not with_key:
            for hv in inventory["all"]["hosts"].values():
                hv.pop("ansible_ssh_private_key_file", None)
        (root / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    return root


def _runs(root):
    result = run_cli("runs", "list", "-o", "json", cwd=root)
    assert result.returncode == 0, result.output
    return json.loads(result.stdout)["runs"]


def test_flags_before_and_after_the_command_reach_a_local_script(tmp_path):
    root = _workspace(tmp_path)
    result = run_cli("-e", "STAGE=before", "--loglevel", "2", "run", "app", "show", "-e", "OTHER=a=b", "--local",
                     "-f", cwd=root)
    assert result.returncode == 0, result.output
    assert "STAGE=before OTHER=a=b VERBOSITY=2" in result.stdout  # both -e kept; '=' inside a value kept
    assert f"IN_CONTAINER=0 FORCE=1 WORKDIR={root}/blocks/app" in result.stdout
    later = run_cli("-e", "STAGE=one", "workflow", "run", "deploy", "-e", "STAGE=two", "-l", cwd=root)
    assert later.returncode == 0, later.output
    assert "STAGE=two" in later.stdout  # the later one wins, as in the environment itself

    for argv, words in ((("-e", "NOT-A-NAME=1", "run", "app", "show"), ("-e/--env", "KEY=value")),
                        (("run", "app", "show", "--local", "--runtime", "container"), ("--local", "contradict")),
                        (("workflow", "list", "-e", "A=1"), ("-e/--env", "only for commands that run actions")),
                        (("run", "app", "show", "--event-handler", "webhook"), ("--event-endpoint",)),
                        (("run", "app", "show", "--loglevel", "9"), ("--loglevel",))):
        assert_one_line_error(run_cli(*argv, cwd=root), *words)
    assert (root / "ran.txt").read_text() == "ran\nran\n"  # the refused commands ran nothing


def test_snapshot_prints_what_the_action_gets_and_runs_nothing(tmp_path):
    root = _workspace(tmp_path)
    result = run_cli("--snapshot", "run", "app", "show", "-e", "STAGE=snap", "--local", cwd=root)
    assert result.returncode == 0, result.output
    data = yaml.safe_load(result.stdout)
    assert data["block"]["name"] == "app" and data["action"]["name"] == "show"
    assert data["env"]["STAGE"] == "snap" and data["env"]["POLYCRATE_ACTION"] == "show"
    assert data["env"]["IN_CONTAINER"] == "0" and data["workspace"]["name"] == "flags-ws"
    flow = yaml.safe_load(run_cli("run", "deploy", "--snapshot", "--local", cwd=root).stdout)
    assert flow["workflow"]["name"] == "deploy" and flow["env"]["POLYCRATE_WORKFLOW"] == "deploy"
    inside = yaml.safe_load(run_cli("run", "app", "show", "--snapshot", "--runtime", "container", cwd=root).stdout)
    assert inside["env"]["POLYCRATE_WORKSPACE"] == "/workspace" and inside["env"]["IN_CONTAINER"] == "1"
    assert not (root / "ran.txt").exists()  # nothing ran
    assert _runs(root) == []  # and nothing was recorded


def test_env_reaches_ansible_over_ssh_and_the_workspace_key_is_handed_to_ansible(tmp_path, fleet):
    root = _workspace(tmp_path, fleet, with_key=False)  # the inventory names no key: the workspace's is used
    host = fleet.hosts[0]
    source_key = host.host_vars()["ansible_ssh_private_key_file"]
    (root / "keys").mkdir()
    shutil.copy(source_key, root / "keys" / "deploy")
    (root / "keys" / "deploy").chmod(0o600)

    without = run_cli("run", "app", "record", "--local", "--limit", host.name, cwd=root)
    assert without.returncode == 1, without.output  # no key: the host refuses us
    assert "unreachable" in without.stdout

    given = run_cli("run", "app", "record", "--local", "--limit", host.name, "-e", "STAGE=prod",
                    "--ssh-private-key", "keys/deploy", cwd=root)
    assert given.returncode == 0, given.output
    said = (root / f"said-{host.name}.txt").read_text()
    assert said == f"root says prod key={root}/keys/deploy\n", said

    shutil.copy(source_key, root / "id_rsa")  # Polycrate's default workspace key
    (root / "id_rsa").chmod(0o600)
    default = run_cli("run", "app", "record", "-l", "--limit", host.name, "-e", "STAGE=default", cwd=root)
    assert default.returncode == 0, default.output
    assert (root / f"said-{host.name}.txt").read_text() == f"root says default key={root}/id_rsa\n"

    missing = run_cli("run", "app", "record", "-l", "--ssh-private-key", "keys/nope", cwd=root)
    assert_one_line_error(missing, "--ssh-private-key", "keys/nope")


def test_auto_commit_commits_before_and_after_the_run_and_leaves_secrets_out(tmp_path):
    root = _workspace(tmp_path)
    refused = run_cli("run", "app", "show", "--local", "--auto-commit", cwd=root)
    assert_one_line_error(refused, "--auto-commit", "not in a git repository")
    assert not (root / "ran.txt").exists()

    git = ["git", "-C", str(root)]
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run([*git, "config", "user.email", "ops@example.org"], check=True)
    subprocess.run([*git, "config", "user.name", "Ops"], check=True)
    (root / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot really\n")
    (root / "id_rsa").chmod(0o600)
    result = run_cli("run", "app", "show", "--local", "--auto-commit", cwd=root)
    assert result.returncode == 0, result.output
    run_id = _runs(root)[0]["run_id"]
    log = subprocess.run([*git, "log", "--format=%s"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert log == [f"[polycrate] Auto-Commit after run {run_id} (action app show: succeeded)",
                   "[polycrate] Auto-Commit before running action app show"]
    changed = subprocess.run([*git, "show", "--name-only", "--format=", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.split()
    assert changed == ["ran.txt"]  # what the run changed, and nothing else
    tracked = subprocess.run([*git, "ls-files"], capture_output=True, text=True, check=True).stdout.split()
    assert "id_rsa" not in tracked and "workspace.poly" in tracked
    assert "left out plaintext secrets: id_rsa" in result.output


def test_workspace_event_handler_writes_polycrate_events_to_logs(tmp_path):
    root = _workspace(tmp_path)
    ok = run_cli("run", "app", "show", "--local", "-e", "STAGE=evt", "--event-handler", "workspace", cwd=root)
    assert ok.returncode == 0, ok.output
    flow = run_cli("--event-handler", "workspace", "workflow", "run", "deploy", "--local", cwd=root)
    assert flow.returncode == 0, flow.output
    runs = {r["kind"]: r["run_id"] for r in _runs(root)}
    files = sorted((root / ".logs").glob("*/*/*/*.yml"))
    assert {f.stem for f in files} == set(runs.values())
    action_event = yaml.safe_load(next(f for f in files if f.stem == runs["action"]).read_text())
    assert action_event["labels"] == {"monk.event.class": "polycrate", "monk.event.level": "Info"}
    assert action_event["workspace"] == "flags-ws" and action_event["block"] == "app"
    assert action_event["action"] == "show" and action_event["transaction"] == runs["action"]
    assert action_event["message"] == "Transaction stopped" and action_event["exit_code"] == 0
    assert action_event["config"] == {"handler": "workspace"}
    assert "STAGE=evt" in action_event["output"]
    assert action_event["snapshot"]["env"]["STAGE"] == "evt"
    assert action_event["command"].startswith("polycrate run app show")
    path = next(f for f in files if f.stem == runs["action"]).relative_to(root)
    year, month, day = path.parts[1:4]
    assert action_event["date"].startswith(f"{year}-{month}-{day}T")
    workflow_event = yaml.safe_load(next(f for f in files if f.stem == runs["workflow"]).read_text())
    assert workflow_event["workflow"] == "deploy" and workflow_event["steps"][0]["name"] == "show"


def test_webhook_event_handler_posts_the_event_to_a_loopback_server(tmp_path, hook_server):
    root = _workspace(tmp_path)
    url = f"{hook_server.url}/events"
    result = run_cli("run", "app", "show", "--local", "--event-handler", "webhook", "--event-endpoint", url, cwd=root)
    assert result.returncode == 0, result.output
    assert len(hook_server.requests) == 1
    request = hook_server.requests[0]
    path, content_type, event = request["path"], request["headers"]["Content-Type"], request["body"]
    assert path == "/events" and content_type == "application/json; charset=UTF-8"
    assert event["transaction"] == _runs(root)[0]["run_id"] and event["message"] == "Transaction stopped"
    assert event["config"] == {"handler": "webhook", "endpoint": url}
    assert not (root / ".logs").exists()

    nobody = f"http://127.0.0.1:{free_port()}/events"  # nothing listens there
    dead = run_cli("run", "app", "show", "--local", "--event-endpoint", nobody, cwd=root)
    assert dead.returncode == 0, dead.output  # an event never fails a run
    assert "event: could not submit" in dead.stdout


@pytest.mark.container
def test_env_and_mounts_reach_the_action_in_the_container(tmp_path, fleet, podman_engine):
    root = _workspace(tmp_path, fleet)
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello.txt").write_text("from the host\n")
    result = run_cli("run", "app", "show", "--runtime", "container", "-e", "STAGE=boxed", cwd=root)
    assert result.returncode == 0, result.output
    assert "STAGE=boxed" in result.stdout and "IN_CONTAINER=1 FORCE=0 WORKDIR=/workspace/blocks/app" in result.stdout
    mounted = run_cli("-m", f"{data}:/data:ro", "run", "app", "mounted", "--runtime", "container", cwd=root)
    assert mounted.returncode == 0, mounted.output
    assert "from the host" in mounted.stdout
    host = fleet.hosts[0]
    played = run_cli("run", "app", "record", "--runtime", "container", "--limit", host.name, "-e", "STAGE=inside",
                     cwd=root)
    assert played.returncode == 0, played.output
    assert (root / f"said-{host.name}.txt").read_text().startswith("root says inside")
    assert_one_line_error(run_cli("run", "app", "mounted", "--runtime", "container", "-m", f"{tmp_path}/none:/data",
                                  cwd=root), "-m/--mount", "no such file")
    local = run_cli("run", "app", "show", "--local", "-m", f"{data}:/data", cwd=root)
    assert local.returncode == 0 and "ignored with the local runtime" in local.stderr, local.output


@pytest.mark.container
def test_build_flag_rebuilds_the_workspace_image(tmp_path, podman_engine):
    root = _workspace(tmp_path)
    write(root / "Dockerfile.poly", "FROM localhost/polycrate-base:latest\nRUN echo built > /built.txt\n")
    first = run_cli("run", "app", "show", "--runtime", "container", cwd=root)
    assert first.returncode == 0, first.output
    again = run_cli("run", "app", "show", "--runtime", "container", cwd=root)
    assert "building Dockerfile.poly" not in again.stderr  # unchanged inputs: no build
    forced = run_cli("run", "app", "show", "--runtime", "container", "-b", cwd=root)
    assert forced.returncode == 0, forced.output
    assert "building Dockerfile.poly" in forced.stderr


@pytest.mark.container
@pytest.mark.registry
def test_pull_flag_pulls_the_workspace_image_from_a_loopback_registry(tmp_path, podman_engine):
    from polycrate.runtime import toolchain
    from tests.fleet.registry import LocalRegistry

    registry = LocalRegistry()
    image = f"{registry.host}/polycrate-base:pull-{tmp_path.name[-12:].lower().replace('_', '-')}"
    try:
        subprocess.run(["podman", "tag", toolchain.BASE_IMAGE, image], check=True)
        subprocess.run(["podman", "push", "--quiet", "--tls-verify=false", "--compression-format", "zstd", image],
                       check=True, capture_output=True)
        subprocess.run(["podman", "rmi", image], check=True, capture_output=True)  # only the tag goes
        root = _workspace(tmp_path)
        poly = root / "workspace.poly"
        poly.write_text(poly.read_text() + f"config:\n  runtime: container\n  image: {image}\n")
        missing = run_cli("run", "app", "show", cwd=root)
        assert_one_line_error(missing, image, "local images")
        pulled = run_cli("run", "app", "show", "-p", cwd=root)
        assert pulled.returncode == 0, pulled.output
        assert f"pulling {image}" in pulled.stderr
        assert "IN_CONTAINER=1" in pulled.stdout
        again = run_cli("--snapshot", "run", "app", "show", cwd=root)
        ref, _, tag = image.rpartition(":")
        env = yaml.safe_load(again.stdout)["env"]
        assert (env["POLYCRATE_IMAGE_REFERENCE"], env["POLYCRATE_IMAGE_VERSION"]) == (ref, tag)
    finally:
        subprocess.run(["podman", "rmi", "--ignore", image], capture_output=True)
        registry.stop()
