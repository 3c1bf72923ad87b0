"""Secrets during a run: decrypted into a private folder that is gone afterwards, visible to the
playbook as workspace.secrets / block.secrets, merged into config from secrets.poly, masked everywhere."""
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, run_cli, write

S3_SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
DB_PASSWORD = "correct-horse-battery-staple-42"

PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: where the secret file is
      ansible.builtin.copy:
        dest: "{{ workspace.root }}/seen-paths.txt"
        content: "{{ workspace.secrets['rclone.conf'] }}\\n{{ block.secrets['token'] }}\\n"
    - name: the playbook reads the secret file
      ansible.builtin.debug:
        msg: "rclone config says: {{ lookup('ansible.builtin.file', workspace.secrets['rclone.conf']) }}"
    - name: the password from secrets.poly reached block.config
      ansible.builtin.debug:
        msg: "connecting with password={{ block.config.db_password }} as {{ block.config.db_user }}"
    - name: prove the values were the real ones
      ansible.builtin.copy:
        dest: "{{ workspace.root }}/checks.txt"
        content: "{{ (block.config.db_password | hash('sha256')) }} {{ lookup('ansible.builtin.file', block.secrets['token']) | length }}\\n"
"""


@pytest.fixture
def key(tmp_path):
    out = subprocess.run(["age-keygen"], capture_output=True, text=True, check=True).stdout
    return next(line for line in out.splitlines() if line.startswith("AGE-SECRET-KEY-"))


@pytest.fixture
def ws(tmp_path, key):
    root = tmp_path / "ws"
    write(root / "workspace.poly", "name: sec\nblocks:\n  - name: b\n    config:\n      db_user: app\n")
    write(root / "blocks/b/block.poly", "name: b\nversion: 1.0.0\nconfig:\n  db_password: ''\n  db_user: x\n"
          "actions:\n  - name: go\n    playbook: go.yml\n")
    write(root / "blocks/b/go.yml", PLAY)
    write(root / "artifacts/secrets/rclone.conf",
          f"[acme-s3]\ntype = s3\naccess_key_id = AKIAEXAMPLE\nsecret_access_key = {S3_SECRET}\n")
    write(root / "artifacts/secrets/b/token", "tok-3f9a8b7c6d5e\n")
    write(root / "secrets.poly", f"blocks:\n  - name: b\n    config:\n      db_password: {DB_PASSWORD}\n")
    result = run_cli("workspace", "encrypt", cwd=root, env={"WORKSPACE_ENCRYPTION_KEY": key})
    assert result.returncode == 0, result.output
    assert not (root / "secrets.poly").exists() and (root / "secrets.poly.age").exists()
    assert (root / "artifacts/secrets/rclone.conf.age").exists()
    return root


def everything_stored(root: Path) -> bytes:
    data = b""
    for path in (root / ".polycrate").rglob("*"):
        if path.is_file():
            data += path.read_bytes()
    return data


def test_playbook_reads_secrets_and_they_are_masked_and_gone(ws, key):
    import hashlib

    result = run_cli("run", "b", "go", cwd=ws, env={"WORKSPACE_ENCRYPTION_KEY": key})
    assert result.returncode == 0, result.output
    # the values were real inside the play
    digest, token_len = (ws / "checks.txt").read_text().split()
    assert digest == hashlib.sha256(DB_PASSWORD.encode()).hexdigest() and token_len == "16"
    # masked in what we print and store
    for secret in (S3_SECRET, DB_PASSWORD, "tok-3f9a8b7c6d5e"):
        assert secret not in result.output
        assert secret.encode() not in everything_stored(ws)
    assert "secret_access_key = ********" in result.output and "password=******** as app" in result.output
    logs = run_cli("runs", "logs", "latest", cwd=ws)
    assert "password=********" in logs.stdout and DB_PASSWORD not in logs.stdout
    # the private folder existed during the run, with mode 0700, and is gone now
    conf_path, token_path = (ws / "seen-paths.txt").read_text().split()
    folder = Path(conf_path).parent
    assert folder.name.startswith("polycrate-secrets-") and Path(token_path).parent.parent == folder
    assert not folder.exists()


def test_secret_folder_is_removed_after_a_failed_run(ws, key):
    play = ws / "blocks/b/go.yml"
    play.write_text(play.read_text() + "    - ansible.builtin.fail:\n        msg: boom\n")
    result = run_cli("run", "b", "go", cwd=ws, env={"WORKSPACE_ENCRYPTION_KEY": key})
    assert result.returncode == 1
    conf_path = (ws / "seen-paths.txt").read_text().split()[0]
    assert not Path(conf_path).parent.exists()


def test_wrong_key_runs_nothing(ws):
    other = subprocess.run(["age-keygen"], capture_output=True, text=True, check=True).stdout
    wrong = next(line for line in other.splitlines() if line.startswith("AGE-SECRET-KEY-"))
    env = {k: v for k, v in os.environ.items() if k != "WORKSPACE_ENCRYPTION_KEY"}
    env["WORKSPACE_ENCRYPTION_KEY"] = wrong
    result = run_cli("run", "b", "go", cwd=ws, env=env)
    assert_one_line_error(result, ".age")
    assert not (ws / "seen-paths.txt").exists()


def test_a_templated_script_line_gets_secrets_poly_values_and_they_are_masked(ws, key):
    """Go-templated script lines are filled in after secrets.poly is merged; the `+ line` trace, the output
    and the store show ******** where the value stands."""
    block = ws / "blocks/b/block.poly"
    block.write_text(block.read_text() + "  - name: sh\n    script:\n"
                     "      - echo \"pw={{ .block.config.db_password }} user={{ .block.config.db_user }}\"\n"
                     "      - printf '%s' '{{ .block.config.db_password }}' | sha256sum > \"$POLYCRATE_WORKSPACE/sh.txt\"\n")
    import hashlib

    result = run_cli("run", "b", "sh", cwd=ws, env={"WORKSPACE_ENCRYPTION_KEY": key})
    assert result.returncode == 0, result.output
    assert (ws / "sh.txt").read_text().split()[0] == hashlib.sha256(DB_PASSWORD.encode()).hexdigest()
    assert "pw=******** user=app" in result.output and '+ echo "pw=******** user=app"' in result.output
    assert DB_PASSWORD not in result.output and DB_PASSWORD.encode() not in everything_stored(ws)
