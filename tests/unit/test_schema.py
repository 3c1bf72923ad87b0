"""schema.py: each section of workspace.poly and secrets.poly checked where it is declared, errors with file:line."""
import pytest

from polycrate.errors import ConfigError
from polycrate.model import Registries, Toolchain
from polycrate.schema import parse_secrets, read_workspace_file
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
    ("encryption:\n  recipients:\n    - AGE-SECRET-KEY-1QQQ\n", 3, "holds an age SECRET key"),
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
    assert caught.value.line == 2 and "'config' of block 'db'" in caught.value.message
