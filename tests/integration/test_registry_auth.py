"""Credentials against a real registry with htpasswd (bcrypt) auth: login, wrong credentials, never printed."""
from __future__ import annotations

import json

import pytest

from tests.conftest import assert_one_line_error, run_cli, write
from tests.fleet.registry import LocalRegistry

pytestmark = pytest.mark.registry
PASSWORD = "correct-horse-7f3a"


@pytest.fixture(scope="module")
def registry():
    reg = LocalRegistry(users={"alice": PASSWORD})
    yield reg
    reg.stop()


@pytest.fixture
def src(registry, tmp_path):
    root = tmp_path / "src"
    write(root / "workspace.poly", "name: src\n")
    write(root / "blocks" / registry.host / "t/secure/block.poly", "name: secure\nversion: 1.0.0\nactions:\n  - name: go\n    script: [echo ok]\n")
    return root


def test_missing_and_wrong_credentials_are_one_line_errors(registry, src, tmp_path):
    env = {"DOCKER_CONFIG": str(tmp_path / "docker")}
    assert_one_line_error(run_cli("blocks", "push", "secure", cwd=src, env=env), "requires credentials", "registry login")
    wrong = env | {"POLYCRATE_REGISTRY_USERNAME": "alice", "POLYCRATE_REGISTRY_PASSWORD": "guess"}
    result = run_cli("blocks", "push", "secure", cwd=src, env=wrong)
    assert_one_line_error(result, "authentication", "wrong username or password")
    assert "guess" not in result.output
    result = run_cli("registry", "login", registry.host, "--username", "alice", "--password-stdin", cwd=src, env=env,
                     input="guess\n")
    assert_one_line_error(result, "wrong username or password")
    assert not (tmp_path / "docker").exists()  # nothing stored


def test_login_stores_credentials_that_push_and_pull_use(registry, src, tmp_path):
    env = {"DOCKER_CONFIG": str(tmp_path / "docker")}
    result = run_cli("registry", "login", registry.host, "--username", "alice", "--password-stdin", cwd=src, env=env,
                     input=PASSWORD + "\n")
    assert result.returncode == 0, result.output
    assert PASSWORD not in result.output
    config = tmp_path / "docker/config.json"
    assert registry.host in json.loads(config.read_text())["auths"]
    assert oct(config.stat().st_mode & 0o777) == "0o600"

    pushed = run_cli("blocks", "push", "secure", cwd=src, env=env)
    assert pushed.returncode == 0, pushed.output
    consumer = tmp_path / "consumer"
    write(consumer / "workspace.poly", f"name: c\nblocks:\n  - name: secure\n    from: {registry.host}/t/secure:1.0.0\n")
    result = run_cli("run", "secure", "go", "--blocks-auto-pull", cwd=consumer, env=env)
    assert result.returncode == 0, result.output
    assert "ok" in result.stdout and PASSWORD not in result.output

    # environment credentials work without the config file, too
    env2 = {"DOCKER_CONFIG": str(tmp_path / "none"), "POLYCRATE_REGISTRY_USERNAME": "alice",
            "POLYCRATE_REGISTRY_PASSWORD": PASSWORD}
    other = tmp_path / "other"
    write(other / "workspace.poly", "name: o\n")
    result = run_cli("blocks", "pull", f"{registry.host}/t/secure:1.0.0", cwd=other, env=env2)
    assert result.returncode == 0, result.output
