"""The YAML loader cannot be knocked over (issue 14): each class of bad input is one ConfigError
naming the file (and the line where there is one), and ends quickly."""
from __future__ import annotations

import os

import pytest

from polycrate.config import yamlfile
from polycrate.errors import ConfigError
from polycrate.config.yamlfile import load_yaml, parse_yaml


def refused(text: str, *words: str, line: int | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_yaml(text, "/ws/block.poly")
    err = info.value
    assert err.path == "/ws/block.poly"
    assert "\n" not in str(err)
    for word in words:
        assert word in err.message, err.message
    if line is not None:
        assert err.line == line, (err.line, err.message)
    return err


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b", "\x7f", "\x9f", "\ufffe"])
def test_control_characters_name_their_line(char):
    err = refused(f"name: a\nversion: 1\ndescription: x{char}y\n", "control character", line=3)
    assert f"U+{ord(char):04X}" in err.message


def test_nul_through_an_escape_is_refused():
    refused('name: "a\\0b"\n', "NUL", line=1)


def test_deep_nesting_block_and_flow():
    refused("a:\n" + "".join("  " * i + "- \n" for i in range(1, 400)), "nested")
    refused("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested", line=1)
    refused("a: " + "{b: " * 300 + "1" + "}" * 300 + "\n", "nested", line=1)
    assert parse_yaml("a: " + "[" * 60 + "]" * 60 + "\n", "x")  # well within the limit


def test_alias_bomb_is_refused_before_it_is_built():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 10):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        bomb += f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]\n"
    refused(bomb, "aliases")


def test_aliases_that_stay_small_are_fine():
    data = parse_yaml("base: &b {x: 1}\none: *b\ntwo: *b\n", "x")
    assert data["one"] == {"x": 1} and data["two"] == {"x": 1}


def test_too_many_values_and_keys(monkeypatch):
    monkeypatch.setattr(yamlfile, "MAX_NODES", 1000)
    refused("a: [" + ", ".join("1" for _ in range(2000)) + "]\n", "values")
    monkeypatch.setattr(yamlfile, "MAX_NODES", 10**6)
    monkeypatch.setattr(yamlfile, "MAX_KEYS", 100)
    refused("".join(f"k{i}: {i}\n" for i in range(101)), "keys")


def test_a_long_value_and_a_huge_file(monkeypatch):
    monkeypatch.setattr(yamlfile, "MAX_SCALAR", 1000)
    refused("a: " + "x" * 1001 + "\n", "characters", line=1)
    assert parse_yaml("a: " + "x" * 1000 + "\n", "x")["a"] == "x" * 1000
    monkeypatch.setattr(yamlfile, "MAX_BYTES", 10_000)
    refused("# " + "c" * 20_000 + "\n", "larger")


def test_huge_integers():
    refused("retries: " + "9" * 5000 + "\n", "digits", line=1)
    refused("retries: 0x" + "f" * 40 + "\n", "digits", line=1)
    assert parse_yaml("retries: 1_000\n", "x")["retries"] == 1000


def test_keys_are_the_text_written():
    data = parse_yaml("2024-01-01: a\n80: b\non: c\nnull: d\n", "x")
    assert list(data) == ["2024-01-01", "80", "on", "null"]
    assert parse_yaml("version: 2024-01-01\n", "x")["version"] == "2024-01-01"  # dates stay text
    refused("? [a, b]\n: c\n", "not text", line=1)
    refused("on: 1\n'on': 2\n", "duplicate", line=2)


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "inventory.yml"
    path.write_bytes(b"all:\n  hosts:\n    caf\xe9: {}\n")
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    assert "UTF-8" in info.value.message and info.value.line == 3 and info.value.path == str(path)


def test_special_files_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "block.poly"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="FIFO"):
        load_yaml(fifo)
    with pytest.raises(ConfigError, match="device"):
        load_yaml(tmp_path.joinpath("..", "..", "..", "..", "dev", "null").resolve())
    folder = tmp_path / "workspace.poly"
    folder.mkdir()
    with pytest.raises(ConfigError, match="folder"):
        load_yaml(folder)
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.poly")
