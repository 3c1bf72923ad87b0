"""team/values.py's rules without a database: what of a launch travels with the run, and how (real age keys)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from polycrate.runtime.ansible_options import SECRET_FILE_HEAD


def _key(tmp_path: Path, name: str) -> tuple[Path, str]:
    from polycrate.secrets import generate_identity

    path = tmp_path / f"{name}.txt"
    return path, generate_identity(path)


def _open(blob: bytes, identity: Path) -> bytes:
    from polycrate.secrets.keys import Keyring
    from polycrate.secrets.store import decrypt_bytes

    return decrypt_bytes(blob, Keyring(identity, environ={}), "test")


def test_a_terminal_s_files_travel_in_their_place_and_a_secret_one_sealed(tmp_path):
    from polycrate.team.values import REF, terminal_values

    identity, recipient = _key(tmp_path, "worker")
    plain, secret = tmp_path / "vars.yml", tmp_path / "secret.yml"
    plain.write_text('a: "{{ 6 * 7 }}"\nb: 1\n')
    secret.write_text(f"{SECRET_FILE_HEAD}pw: hunter2\n")
    given, values = terminal_values(("k=v", f"@{plain}", '{"j": 1}', f"@{secret}"), [recipient])
    assert given == ("k=v", f"{REF}0", '{"j": 1}', f"{REF}1")  # Ansible's order of precedence kept
    assert values[0].text == plain.read_text() and values[0].sealed is None and values[0].names == ("a", "b")
    assert values[1].text is None and values[1].names == ("pw",) and values[1].origin == str(secret)
    assert values[1].sealed is not None and b"hunter2" not in values[1].sealed
    assert _open(values[1].sealed, identity).decode() == secret.read_text()
    assert terminal_values(("k=v",), []) == (("k=v",), [])


def test_a_secret_without_recipients_or_a_huge_file_is_refused_before_anything_is_queued(tmp_path):
    from polycrate.team.values import FILE_MAX, ValuesRefused, terminal_values, web_values

    secret = tmp_path / "secret.yml"
    secret.write_text(f"{SECRET_FILE_HEAD}pw: x\n")
    with pytest.raises(ValuesRefused, match=r"encryption.recipients, and workspace.poly lists none.*nothing was queued"):
        terminal_values((f"@{secret}",), [])
    with pytest.raises(ValuesRefused, match=r"^launch variable pw: secret values travel .* lists none"):
        web_values({}, {"pw": "x"}, [])
    huge = tmp_path / "huge.yml"
    huge.write_text("a: " + "x" * FILE_MAX + "\n")
    with pytest.raises(ValuesRefused, match=rf"{huge} has {FILE_MAX + 4} bytes"):
        terminal_values((f"@{huge}",), [])


def test_a_web_launch_s_plain_values_are_data_and_each_secret_is_sealed_alone(tmp_path):
    from polycrate.team.values import web_values

    identity, recipient = _key(tmp_path, "worker")
    _, other = _key(tmp_path, "other")
    values = web_values({"note": "{{ x }}", "n": 3}, {"pw": "p-1", "token": "t-2"}, [recipient, other])
    assert [(v.kind, v.names, v.secret) for v in values] == [
        ("data", ("n", "note"), False), ("data", ("pw",), True), ("data", ("token",), True)]
    assert values[0].value == {"note": "{{ x }}", "n": 3}
    assert [json.loads(_open(v.sealed, identity)) for v in values[1:] if v.sealed] == [{"pw": "p-1"}, {"token": "t-2"}]
    assert web_values({}, {}, []) == []


def test_a_relaunch_s_sealed_secrets_count_as_given_and_stay_masked():
    from polycrate.config.launch_params import LaunchDeclaration, Variable
    from polycrate.server.launch import LaunchOptions, LaunchRefused, apply_declaration

    declaration = LaunchDeclaration(variables=(Variable(name="note", type="string"),
                                               Variable(name="pw", type="secret", required=True)))
    with pytest.raises(LaunchRefused, match="vars.pw: required"):
        apply_declaration(LaunchOptions(variables={"note": "n"}), declaration, "w", admin=False)
    options = apply_declaration(LaunchOptions(variables={"note": "n"}, sealed={"pw": b"age..."}), declaration, "w",
                                admin=False)
    assert options.variables == {"note": "n"} and options.audit()["parameters"] == {"note": "n", "pw": "********"}
    with pytest.raises(LaunchRefused, match="vars.note: workflow 'w' no longer declares it a secret") as refused:
        apply_declaration(LaunchOptions(sealed={"note": b"age..."}), declaration, "w", admin=False)
    assert refused.value.status == 409
