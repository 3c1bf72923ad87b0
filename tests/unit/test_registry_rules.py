"""Pure rules of registry.py (references, transport, credentials) and of block inheritance and auto-install planning."""
import base64
import json

import pytest

from polycrate.errors import ConfigError
from polycrate.config.model import Registries
from polycrate.config.refs import BadReference
from polycrate.blocks.registry import (
    Reference,
    Transport,
    find_credentials,
    is_loopback,
    parse_reference,
    store_credentials,
    transport_settings,
    version_key,
)
from polycrate.config.workspace import block_changes, load_workspace, read_sources
from tests.conftest import write


def test_parse_reference():
    ref = parse_reference("registry.acme-corp.com/acme/infra/linux-maintenance:0.1.0")
    assert ref == Reference("registry.acme-corp.com", "acme/infra/linux-maintenance", "0.1.0")
    assert ref.path == "registry.acme-corp.com/acme/infra/linux-maintenance"
    assert str(ref) == "registry.acme-corp.com/acme/infra/linux-maintenance:0.1.0"
    assert parse_reference("127.0.0.1:5000/t/tool") == Reference("127.0.0.1:5000", "t/tool", None)
    assert parse_reference("localhost/t/tool:1").tag == "1"


@pytest.mark.parametrize(
    "bad",
    ["linux-maintenance", "acme/infra/tool:1.0", "reg.example.com/../etc:1", "reg.example.com/Upper/x",
     "reg.example.com/t/tool@sha256:abc", "reg.example.com/t/tool:", "reg.example.com/t//tool", "/abs/path"],
)
def test_bad_references(bad):
    with pytest.raises(BadReference):
        parse_reference(bad)


def test_https_by_default_plain_http_only_for_loopback_or_insecure():
    t = Transport()
    assert t.endpoint("registry.acme-corp.com") == ("registry.acme-corp.com", "https")
    assert t.endpoint("127.0.0.1:5000") == ("127.0.0.1:5000", "http")
    assert t.endpoint("127.8.9.10") == ("127.8.9.10", "http")
    assert t.endpoint("localhost:5000") == ("localhost:5000", "http")
    assert t.endpoint("10.0.0.5:5000") == ("10.0.0.5:5000", "https")
    assert is_loopback("[::1]:5000") and not is_loopback("128.0.0.1")
    env = {"POLYCRATE_REGISTRY_INSECURE": "harbor.lan:8080", "POLYCRATE_REGISTRY_MIRRORS": "registry.acme-corp.com=127.0.0.1:5000"}
    t = transport_settings(None, env)
    assert t.endpoint("harbor.lan:8080") == ("harbor.lan:8080", "http")
    assert t.endpoint("registry.acme-corp.com") == ("127.0.0.1:5000", "http")
    t = transport_settings(Registries((("reg.x.io", "https://m.x.io"),), frozenset({"gitlab.lan"})), {})
    assert t.endpoint("gitlab.lan") == ("gitlab.lan", "http")
    assert t.endpoint("reg.x.io") == ("m.x.io", "https")


def test_credentials_from_env_then_docker_config(tmp_path):
    env = {"DOCKER_CONFIG": str(tmp_path / "docker")}
    assert find_credentials("reg.example.com", env) is None
    path = store_credentials("reg.example.com", "alice", "pa:ss", env)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert json.loads(path.read_text())["auths"]["reg.example.com"]["auth"] == base64.b64encode(b"alice:pa:ss").decode()
    assert find_credentials("reg.example.com", env) == ("alice", "pa:ss")
    assert find_credentials("other.example.com", env) is None
    env |= {"POLYCRATE_REGISTRY_USERNAME": "bob", "POLYCRATE_REGISTRY_PASSWORD": "pw"}
    assert find_credentials("other.example.com", env) == ("bob", "pw")


def test_version_order():
    versions = ["0.9.1", "0.10.0", "0.10.0-rc1", "1.0.0", "0.2"]
    assert sorted(versions, key=version_key) == ["0.2", "0.9.1", "0.10.0-rc1", "0.10.0", "1.0.0"]


PARENT = """
name: base
version: 1.0.0
kind: maintenance
config: {greeting: hello, nested: {a: 1, b: 2}}
actions:
  - name: hello
    playbook: hello.yml
  - name: greet
    script: [echo parent]
"""


def test_inheritance_merges_config_and_actions(tmp_path):
    write(tmp_path / "workspace.poly", "name: ws\nblocks:\n  - name: child\n    config: {nested: {b: 3}}\n")
    write(tmp_path / "blocks/reg.example.com/t/base/block.poly", PARENT)
    write(
        tmp_path / "blocks/child/block.poly",
        """
        name: child
        version: 0.1.0
        from: reg.example.com/t/base:1.0.0
        config: {greeting: hi}
        actions:
          - name: greet
            script: [echo child]
        """,
    )
    ws = load_workspace(tmp_path)
    child = ws.blocks["child"]
    assert child.config == {"greeting": "hi", "nested": {"a": 1, "b": 3}}
    assert child.actions["greet"].script == ("echo child",)  # overridden
    assert child.actions["hello"].playbook == "../reg.example.com/t/base/hello.yml"  # inherited, parent's file
    assert (child.folder / child.actions["hello"].playbook).resolve() == (tmp_path / "blocks/reg.example.com/t/base/hello.yml").resolve()
    assert child.definition.kind == "maintenance" and child.version == "0.1.0"


def test_inheritance_errors(tmp_path):
    write(tmp_path / "workspace.poly", "name: ws\n")
    write(tmp_path / "blocks/child/block.poly", "name: child\nfrom: reg.example.com/t/base:1.0.0\n")
    with pytest.raises(ConfigError) as err:
        load_workspace(tmp_path)
    assert "matches no installed block" in str(err.value) and "blocks pull" in str(err.value)
    assert "block.poly:2" in str(err.value)
    write(tmp_path / "blocks/child/block.poly", "name: child\nfrom: other\n")
    write(tmp_path / "blocks/other/block.poly", "name: other\nfrom: child\n")
    with pytest.raises(ConfigError, match="loops"):
        load_workspace(tmp_path)


def test_block_changes_lists_missing_and_other_versions(tmp_path):
    write(
        tmp_path / "workspace.poly",
        """
        name: ws
        blocks:
          - name: a
            from: reg.example.com/t/a:2.0.0
          - name: b
            from: reg.example.com/t/b:1.0.0
          - name: c
            from: reg.example.com/t/c:0.9.0
          - name: d
            from: reg.example.com/t/d:1.0.0
          - name: local
        """,
    )
    write(tmp_path / "blocks/reg.example.com/t/a/block.poly", "name: a\nversion: 1.0.0\n")
    write(tmp_path / "blocks/reg.example.com/t/c/block.poly", "name: c\nversion: 1.0.0\n")
    write(tmp_path / "blocks/reg.example.com/t/d/block.poly", "name: d\nversion: 1.0.0\nfrom: reg.example.com/t/base:3.0.0\n")
    write(tmp_path / "blocks/local/block.poly", "name: local\n")
    changes = {c.name: c for c in block_changes(read_sources(tmp_path))}
    assert {n: c.kind for n, c in changes.items()} == {"a": "upgrade", "b": "install", "c": "downgrade", "d": "install"}
    assert changes["d"].reference == "reg.example.com/t/base:3.0.0"  # a parent of an installed block
    assert changes["b"].line == 5  # the entry's line in workspace.poly
