"""The JSON Schemas shipped in the package and the documentation's key tables, both made from the
declarations; the modeline of the files `workspace init` and `block create` write."""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from jsonschema import Draft202012Validator

from polycrate.config import schema
from polycrate.config.declarations import FILES, reachable
from polycrate.config.scaffold import create_block, init_workspace
from polycrate.config.schema_export import (
    json_schema,
    json_schema_text,
    key_tables,
    main,
    schema_file,
)
from polycrate.config.yamlfile import load_yaml, plain

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "acme-corp-automation"
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")


def _validator(file: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_file(file).read_text(encoding="utf-8")))


def _errors(file: str, data: object) -> list[tuple[str, str]]:
    return sorted((e.json_path, e.message) for e in _validator(file).iter_errors(data))


@pytest.mark.parametrize("file", list(FILES))
def test_the_shipped_schema_is_what_the_declarations_make_now(file):
    assert schema_file(file).read_text(encoding="utf-8") == json_schema_text(file), (
        "run: python -m polycrate.config.schema_export --write")
    Draft202012Validator.check_schema(json_schema(file))
    assert main(["--check"]) == 0


def test_the_example_workspace_and_its_blocks_validate():
    blocks = sorted(EXAMPLE.rglob("block.poly"))
    assert blocks  # the example has its blocks
    assert _errors("workspace.poly", plain(load_yaml(EXAMPLE / "workspace.poly"))) == []
    for file in blocks:
        assert _errors("block.poly", plain(load_yaml(file))) == [], file


def test_a_misspelt_key_is_rejected_with_its_path():
    workspace = plain(load_yaml(EXAMPLE / "workspace.poly"))
    step = workspace["workflows"][0]["steps"][1]
    step["acton"] = step.pop("action")
    errors = _errors("workspace.poly", workspace)
    assert ("$.workflows[0].steps[1]", "Additional properties are not allowed ('acton' was unexpected)") in errors
    assert ("$.workflows[0].steps[1]", "'action' is a required property") in errors
    assert {path for path, _ in errors} == {"$.workflows[0].steps[1]"}

    block = plain(load_yaml(next(EXAMPLE.rglob("block.poly"))))
    block["actions"][2]["playbok"] = block["actions"][2].pop("playbook")
    block["descripton"] = "typo"
    assert _errors("block.poly", block) == [
        ("$", "Additional properties are not allowed ('descripton' was unexpected)"),
        ("$.actions[2]", "Additional properties are not allowed ('playbok' was unexpected)")]

    # secrets.poly's top level and entries take any key (as parse_secrets does); a wrong type is refused
    assert _errors("secrets.poly", {"config": {"a": 1}, "other": 1, "blocks": [{"name": "b", "x": 1}]}) == []
    assert _errors("secrets.poly", {"blocks": [{"config": {}}]}) == [("$.blocks[0]", "'name' is a required property")]


def test_the_key_tables_list_every_section_and_key():
    text = key_tables("workspace.poly")
    headings = re.findall(r"^### `(.+)`$", text, re.MULTILINE)
    assert headings == [s.where for s in reachable("workspace.poly")]
    assert headings[0] == "workspace.poly" and "workflows[].steps[], on_failure[]" in headings
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == sum(len(s.fields) for s in reachable("workspace.poly"))
    assert "| `name` | name | yes |  | the workspace's name" in text
    assert "| `retries` | integer >= 0, <= 1,000 |  | `0` | further attempts after a failed one |" in text
    assert "| `runtime` | `local` or `container` |  | `local` |" in text
    for line in text.splitlines():
        if line.startswith("|"):  # every row has the header's five cells (a '|' inside a cell is escaped)
            assert len(re.split(r"(?<!\\)\|", line)) == 7, line
    assert "Other keys are refused." in text and "Other keys are allowed." in text  # config is open
    block = key_tables("block.poly", level=2)
    assert block.startswith("## `block.poly`") and "## `actions[]`" in block and "`playbook`" in block
    assert "## `blocks[] (secrets.poly)`" in key_tables("secrets.poly", level=2)


def _modeline_schema(path: Path) -> Path:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    match = MODELINE.match(first)
    assert match, first
    uri = urlparse(match.group(1))
    assert uri.scheme == "file"
    return Path(unquote(uri.path))


def test_init_and_block_create_write_a_modeline_naming_the_shipped_schema(tmp_path):
    root = tmp_path / "with space"  # the URI is quoted
    init_workspace(root, "ops")
    create_block(root, "disk-report")
    for path, file in ((root / "workspace.poly", "workspace.poly"), (root / "blocks/hello/block.poly", "block.poly"),
                       (root / "blocks/disk-report/block.poly", "block.poly")):
        named = _modeline_schema(path)
        assert named == schema_file(file) and named.is_file()
        assert _errors(file, plain(load_yaml(path))) == []  # what init writes passes its own schema
    # polycrate reads the files as before (the modeline is a comment)
    assert schema.read_workspace_file(root).name == "ops"
    assert schema.read_block_file(root / "blocks/disk-report/block.poly", root / "blocks").name == "disk-report"
    bare = tmp_path / "bare"
    init_workspace(bare, None, sample=False)
    assert _modeline_schema(bare / "workspace.poly") == schema_file("workspace.poly")
