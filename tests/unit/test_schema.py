"""schema.py: each section of workspace.poly and secrets.poly checked where it is declared, errors with file:line."""
import pytest

from polycrate.errors import ConfigError
from polycrate.config.model import Registries, Toolchain
from polycrate.config.schema import parse_secrets, read_workspace_file
from tests.conftest import write

HEAD = "name: ws\n"


def _read(tmp_path, text):
    write(tmp_path / "workspace.poly", HEAD + text)
    return read_workspace_file(tmp_path)


def test_typed_sections(tmp_path):
    doc = _read(tmp_path, "config:\n  runtime: container\n  engine: podman\n"
                          "registries:\n  reg.lan: {mirror: 'https://m.lan', insecure: true}\n"
                          "encryption:\n  recipients: [age1abc, age1abc]\n")
    assert doc.toolchain == Toolchain("container", "podman", None)
    assert doc.registries == Registries((("reg.lan", "https://m.lan"),), frozenset({"reg.lan"}))
    assert doc.recipients == ("age1abc",)


@pytest.mark.parametrize("text, line, fragment", [
    ("config:\n  runtime: cloud\n", 3, "config.runtime must be one of local, container"),
    ("config:\n  engine: lxc\n", 3, "config.engine must be one of podman, docker"),
    ("registries:\n  reg.lan:\n    mirrors: x\n", 4, "registries.reg.lan: unknown key 'mirrors'"),
    ("registries:\n  reg.lan: {insecure: sometimes}\n", 3, "registries.reg.lan.insecure must be true or false"),
    ("encryption:\n  recipients:\n    - AGE-SECRET-KEY-1QQQ\n", 4, "holds an age SECRET key"),
    ("workflows:\n  - name: w\n    schedule: {cron: '61 * * * *'}\n    steps: [{name: s, block: b, action: a}]\n",
     4, "workflow 'w': schedule:"),
])
def test_each_section_names_its_line(tmp_path, text, line, fragment):
    with pytest.raises(ConfigError) as caught:
        _read(tmp_path, text)
    assert caught.value.line == line and fragment in caught.value.message
    assert caught.value.path.endswith("workspace.poly")


def test_secrets_poly_entries_name_their_line():
    parsed = parse_secrets("config: {token: abcd}\nblocks:\n  - name: db\n    config: {password: s3cret}\n",
                           "secrets.poly")
    assert parsed.config == {"token": "abcd"} and parsed.blocks[0].name == "db" and parsed.blocks[0].line == 3
    with pytest.raises(ConfigError) as caught:
        parse_secrets("blocks:\n  - name: db\n    config: [x]\n", "secrets.poly")
    assert caught.value.line == 3 and "block 'db': 'config' must be a mapping" in caught.value.message


def test_polycrates_workspace_keys(tmp_path):
    doc = _read(tmp_path, "labels: {team: ops, tier: 1, on-call: true}\n"
                          "dependencies:\n  - reg.example.com/a/b:1.0.0\n  - reg.example.com/a/c\n"
                          "inventory: {filename: hosts/prod.yml}\nkubeconfig: {filename: kube/prod.yml}\n")
    assert doc.labels == {"team": "ops", "tier": "1", "on-call": "true"}
    assert doc.dependencies == ("reg.example.com/a/b:1.0.0", "reg.example.com/a/c")
    assert (doc.inventory_file, doc.kubeconfig_file) == ("hosts/prod.yml", "kube/prod.yml")


@pytest.mark.parametrize("text, line, fragment", [
    ("dependencies:\n  - reg.example.com/a/b:1.0.0\n  - plain-name\n", 4, "not a registry reference"),
    ("dependencies:\n  - reg.example.com/a/b:1.0.0\n  - reg.example.com/a/b:1.0.0\n", 4, "listed twice"),
    ("dependencies:\n  - 'reg.example.com/a/b:'\n", 3, "no version"),
    ("dependencies:\n  - reg.example.com/a/b:\n", 3, "makes YAML read a mapping"),
    ("labels:\n  'two words': x\n", 3, "label 'two words'"),
    ("labels:\n  a: {b: c}\n", 3, "label 'a' must be one line of text"),
    ("inventory: {filename: ../outside.yml}\n", 2, "inventory.filename must be a file inside the workspace"),
])
def test_polycrates_workspace_keys_name_their_line(tmp_path, text, line, fragment):
    with pytest.raises(ConfigError) as caught:
        _read(tmp_path, text)
    assert caught.value.line == line and fragment in caught.value.message, (caught.value.line, caught.value.message)


def _block(tmp_path, text):
    from polycrate.config.schema import read_block_file

    write(tmp_path / "blocks" / "b" / "block.poly", text)
    return read_block_file(tmp_path / "blocks" / "b" / "block.poly", tmp_path / "blocks")


def test_block_keys_and_script_lines(tmp_path):
    block = _block(tmp_path, "name: b\ntemplate: true\nkind: k8sapp\nlabels: {x: y}\n"
                             "inventory: {from: infra}\nkubeconfig: {filename: kc.yml}\nactions:\n"
                             "  - name: a\n    script:\n      - echo one\n\n      - echo {{ .block.name }}\n")
    assert block.template and block.template_line == 2 and block.kind == "k8sapp" and block.labels == {"x": "y"}
    assert (block.inventory.source, block.inventory.filename) == ("infra", None)
    assert (block.kubeconfig.source, block.kubeconfig.filename) == (None, "kc.yml")
    assert block.actions["a"].script_lines == (10, 12)


@pytest.mark.parametrize("text, line, fragment", [
    ("name: b\nactions:\n  - name: a\n    script:\n      - echo ok\n      - echo {{ .x\n", 6, "script line 2: template"),
    ("name: b\nactions:\n  - name: a\n    script: 'echo {{ nope }}'\n", 4, 'function "nope" not defined'),
    ("name: b\ninventory: {from: 'not a name'}\n", 2, "invalid block name"),
    ("name: b\nkubeconfig: {filename: /etc/kube.yml}\n", 2, "kubeconfig.filename"),
    ("name: b\ninventory: {form: x}\n", 2, "unknown key 'form'"),
    ("name: b\nkind: [a]\n", 2, "kind must be one word"),
])
def test_block_keys_name_their_line(tmp_path, text, line, fragment):
    with pytest.raises(ConfigError) as caught:
        _block(tmp_path, text)
    assert caught.value.line == line and fragment in caught.value.message, (caught.value.line, caught.value.message)


def test_polycrates_image_mapping_is_a_reference(tmp_path):
    doc = _read(tmp_path, "config:\n  image: {reference: reg.example.com/library/polycrate, version: 0.27.1}\n")
    assert doc.toolchain.image == "reg.example.com/library/polycrate:0.27.1"
    with pytest.raises(ConfigError, match="config.image must be"):
        _read(tmp_path, "config:\n  image: {ref: x}\n")
