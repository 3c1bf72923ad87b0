"""Secrets of any length are masked in a real run (issue 14): a 100 KB one-line secret file,
a 1,200-character token in secrets.poly. The old masking trie died of RecursionError at ~500."""
import random
import string
import subprocess
from pathlib import Path

from tests.conftest import run_cli, write

PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: print the long secret file
      ansible.builtin.debug:
        msg: "cert={{ lookup('ansible.builtin.file', block.secrets['cert']) }}"
    - name: print the token from secrets.poly
      ansible.builtin.debug:
        msg: "token={{ block.config.api_token }}"
"""


def test_run_with_a_100_kb_secret_masks_it_and_succeeds(tmp_path):
    rng = random.Random(14)
    cert = "".join(rng.choices(string.ascii_letters + string.digits + "+/", k=100_000))
    token = "".join(rng.choices(string.ascii_letters + string.digits, k=1_200))
    out = subprocess.run(["age-keygen"], capture_output=True, text=True, check=True).stdout
    key = next(line for line in out.splitlines() if line.startswith("AGE-SECRET-KEY-"))
    root = tmp_path / "ws"
    write(root / "workspace.poly", "name: longsec\nblocks:\n  - name: b\n")
    write(root / "blocks/b/block.poly", "name: b\nversion: 1.0.0\nconfig:\n  api_token: ''\n"
          "actions:\n  - name: go\n    playbook: go.yml\n")
    write(root / "blocks/b/go.yml", PLAY)
    write(root / "artifacts/secrets/b/cert", cert + "\n")
    write(root / "secrets.poly", f"blocks:\n  - name: b\n    config:\n      api_token: {token}\n")
    env = {"WORKSPACE_ENCRYPTION_KEY": key}
    assert run_cli("workspace", "encrypt", cwd=root, env=env).returncode == 0

    result = run_cli("run", "b", "go", cwd=root, env=env)

    assert result.returncode == 0, result.output[-2000:]
    assert "Traceback" not in result.output
    assert "cert=********" in result.output and "token=********" in result.output
    stored = b"".join(p.read_bytes() for p in Path(root / ".polycrate").rglob("*") if p.is_file())
    for secret in (cert, token, cert[:2000], token[:400]):
        assert secret not in result.output
        assert secret.encode() not in stored
    logs = run_cli("runs", "logs", "latest", cwd=root)
    assert "cert=********" in logs.stdout and cert[:2000] not in logs.stdout
