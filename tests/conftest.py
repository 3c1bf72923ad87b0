"""Shared fixtures: run the real CLI, build real workspaces in temporary folders, start SSH hosts."""
from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "acme-corp-automation"
ARTICLE_BLOCK = "blocks/registry.acme-corp.com/acme/infra/linux-maintenance"
# The article's own files, verbatim: workspace.poly, inventory.yml, block.poly and its sample playbooks.
# The example workspace ships the same workspace.poly and inventory.yml, and a block that keeps the
# article's block.poly keys and actions but adds its own (see the block's README).
ARTICLE_FILES = REPO / "tests" / "data" / "article"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, input: str | None = None,
            timeout: float = 300) -> Result:
    full_env = dict(os.environ)
    full_env.pop("POLYCRATE_WORKFLOW", None)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "polycrate", *args],
        cwd=cwd,
        env=full_env,
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def run_cli_tty(*args: str, cwd: Path, answer: str | None, timeout: float = 120) -> Result:
    """Run the CLI on a pseudo-terminal; type `answer` when it prompts."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.chdir(cwd)
        os.execv(sys.executable, [sys.executable, "-m", "polycrate", *args])
    out = b""
    answered = False
    while True:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            os.kill(pid, 9)
            raise AssertionError(f"no output for {timeout}s; got {out!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
        if answer is not None and not answered and b"[y/N]" in out:
            os.write(fd, answer.encode() + b"\n")
            answered = True
    _, status = os.waitpid(pid, 0)
    return Result(os.waitstatus_to_exitcode(status), out.decode(errors="replace"), "")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def assert_one_line_error(result: Result, *fragments: str, code: int = 2) -> None:
    assert result.returncode == code, result.output
    assert "Traceback" not in result.output, result.output
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("polycrate: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def fleet():
    from tests.fleet.sshd import SSHFleet

    f = SSHFleet(2, names=["db01.acme-corp.com", "app01.acme-corp.com"])
    yield f
    f.stop()


def article_inventory(fleet) -> dict:
    """The article's inventory.yml, with each host's connection pointed at its SSH test host."""
    inv = yaml.safe_load((EXAMPLE / "inventory.yml").read_text())
    for host in fleet.hosts:
        hv = host.host_vars()
        hv["ansible_ssh_port"] = hv["ansible_port"]
        inv["all"]["hosts"][host.name] = hv
    return inv


RECORDER_PLAY = """
- name: record {action}
  hosts: "{{{{ block.config.{hosts_key} }}}}"
  gather_facts: false
  tasks:
    - name: record what this play was given
      ansible.builtin.shell: >-
        printf '%s\\n' {{{{ {{'action': '{action}', 'host': inventory_hostname, 'config': block.config,
        'block': block.name, 'version': block.version, 'workspace': workspace.name,
        'step': lookup('env', 'POLYCRATE_STEP'), 'workflow': lookup('env', 'POLYCRATE_WORKFLOW')}}
        | to_json | quote }}}} >> {{{{ workspace.root }}}}/records.jsonl
"""


@pytest.fixture
def article_workspace(tmp_path, fleet):
    """The article's workspace.poly and block.poly unchanged, with recorder plays in place of the real ones."""
    root = tmp_path / "acme-corp-automation"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("artifacts", ".polycrate"))
    block = root / ARTICLE_BLOCK
    shutil.rmtree(block)
    block.mkdir()
    shutil.copy(ARTICLE_FILES / "block.poly", block / "block.poly")
    shutil.copy(ARTICLE_FILES / "workspace.poly", root / "workspace.poly")
    for action, key in (("backup", "hosts"), ("update", "web_hosts"), ("verify", "web_hosts")):
        (block / f"{action}.yml").write_text(RECORDER_PLAY.format(action=action, hosts_key=key))
    (root / "inventory.yml").write_text(yaml.safe_dump(article_inventory(fleet), sort_keys=False))
    return root


def records(root: Path) -> list[dict]:
    import json

    path = root / "records.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
