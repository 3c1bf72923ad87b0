"""Each input class of issue 14, on every listed command: exit 2, one line naming the file, nothing
written, and it ends (a timeout guards each call). In-process through cli.main(argv)."""
from __future__ import annotations

import os

import pytest

from polycrate.config import yamlfile
from tests.integration.fuzz_workspaces import AGE_SECRET, BASE, COMMANDS, _dump, run_inprocess, tree_digest


WP = _dump(BASE["workspace.poly"])
BP = _dump(BASE["blocks/app/block.poly"])

# name -> (file -> text or bytes or a special kind, the file the message names, words in the message)
CLASSES = {
    "NUL in workspace.poly": ({"workspace.poly": WP + "description: a\x00b\n"}, "workspace.poly:", "U+0000"),
    "control character in block.poly": ({"blocks/app/block.poly": BP + "description: \x1b[31m\n"},
                                        "blocks/app/block.poly:", "control character"),
    "control character in inventory.yml": ({"inventory.yml": "all:\n  hosts:\n    a\x07: {}\n"}, "inventory.yml:3",
                                           "control character"),
    "invalid UTF-8": ({"blocks/app/block.poly": BP.encode() + b"description: caf\xe9\n"}, "blocks/app/block.poly:",
                      "UTF-8"),
    "deep nesting": ({"workspace.poly": WP + "deep: " + "[" * 500 + "]" * 500 + "\n"}, "workspace.poly:", "nested"),
    "alias bomb": ({"workspace.poly": WP + "a0: &a0 [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 9))}, "workspace.poly:", "aliases"),
    "5,000-digit integer": ({"workspace.poly": WP.replace("timeout: 30", "timeout: " + "9" * 5000)},
                            "workspace.poly:", "digits"),
    "too many values": ({"blocks/app/block.poly": BP + "labels: [" + ",".join(["1"] * 3000) + "]\n"},
                        "blocks/app/block.poly:", "values"),
    "too many keys": ({"workspace.poly": WP + "many:\n" + "".join(f"  k{i}: {i}\n" for i in range(500))},
                      "workspace.poly:", "keys"),
    "huge comment": ({"blocks/db/block.poly": "# " + "c" * 60_000 + "\n"}, "blocks/db/block.poly", "larger"),
    "long value": ({"workspace.poly": WP + "long: " + "v" * 30_000 + "\n"}, "workspace.poly:", "characters"),
    "non-string key": ({"workspace.poly": WP + "? [a, b]\n: c\n"}, "workspace.poly:", "not text"),
    "FIFO block.poly": ({"blocks/app/block.poly": "fifo"}, "blocks/app/block.poly", "FIFO"),
    "device inventory.yml": ({"inventory.yml": "devzero"}, "inventory.yml", "device"),
    "folder workspace.poly": ({"workspace.poly": "folder"}, "workspace.poly", None),
    "nan timeout": ({"workspace.poly": WP.replace("timeout: 30", "timeout: .nan")}, "workspace.poly:", "'timeout'"),
    "infinite retry_delay": ({"workspace.poly": WP.replace("retry_delay: 0", "retry_delay: .inf")},
                             "workspace.poly:", "'retry_delay'"),
    "huge retries": ({"workspace.poly": WP.replace("retries: 1", "retries: 1000000000000")}, "workspace.poly:",
                     "'retries'"),
    "huge timeout": ({"workspace.poly": WP.replace("timeout: 30", "timeout: 1.0e+300")}, "workspace.poly:",
                     "'timeout'"),
    "empty tag": ({"workspace.poly": WP.replace("- name: app\n", "- name: app\n  from: 'registry.acme-corp.com/acme/app:'\n")},
                  "workspace.poly:", "no version"),
    "secret key as recipient": ({"workspace.poly": WP + f"encryption:\n  recipients:\n  - {AGE_SECRET}\n"},
                                "workspace.poly:", "SECRET key"),
    "schedule with a newline": ({"workspace.poly": WP.replace("schedule: '*-*-* 02:00:00'",
                                                               "schedule: \"*-*-* 02:00:00\\nOnCalendar=daily\"")},
                                "workspace.poly:", "schedule"),
    "impossible cron date": ({"workspace.poly": WP.replace("schedule: '*-*-* 02:00:00'",
                                                           "schedule: {cron: '0 0 30 2 *'}")},
                             "workspace.poly:", "schedule"),
    "impossible calendar date": ({"workspace.poly": WP.replace("schedule: '*-*-* 02:00:00'",
                                                               "schedule: {on_calendar: '*-02-30 00:00:00'}")},
                                 "workspace.poly:", "schedule"),
    # a name two folders declare: an error where the name is used without `from:` picking a folder
    "duplicate block names": ({"blocks/app2/block.poly": BP}, "workspace.poly:", "blocks/app and by blocks/app2"),
    "duplicate names of unused blocks": ({"blocks/x1/block.poly": BP.replace("name: app", "name: extra"),
                                          "blocks/x2/block.poly": BP.replace("name: app", "name: extra")},
                                         "blocks/x2/block.poly", "blocks/x1 and by blocks/x2"),
}


@pytest.fixture(autouse=True)
def small_limits(monkeypatch):
    # the real limits are exercised by test_fuzz.py's subprocess sample; these reach them cheaply
    for name, value in {"MAX_BYTES": 50_000, "MAX_NODES": 2_000, "MAX_KEYS": 300, "MAX_SCALAR": 20_000}.items():
        monkeypatch.setattr(yamlfile, name, value)


@pytest.mark.parametrize("name", list(CLASSES))
def test_input_class_on_every_command(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files, where, word = CLASSES[name]
    root = tmp_path / "ws"
    for rel, content in {k: _dump(v) for k, v in BASE.items()}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content in ("fifo", "devzero", "folder"):
            path.unlink()
            {"fifo": lambda path=path: os.mkfifo(path), "devzero": lambda path=path: path.symlink_to("/dev/zero"),
             "folder": lambda path=path: path.mkdir()}[content]()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    before = tree_digest(root)
    # inventory.yml is read only where hosts are needed (issue 13: a fleet inventory is not bad input)
    commands = [c for c in COMMANDS if c[0] in ("workspace", "run") and c[:2] != ["workspace", "snapshot"]
                or c[:2] == ["workflows", "run"]] if "inventory.yml" in files and "devzero" not in files.values() else COMMANDS
    for command in commands:
        outcome = run_inprocess(["-w", str(root), *command], timeout=60)
        label = f"{name}: {' '.join(command)}"
        assert not outcome.hung and outcome.escaped is None, label
        assert outcome.code == 2, (label, outcome.code, outcome.stdout[-300:], outcome.stderr[-300:])
        lines = [line for line in outcome.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("polycrate: error: "), (label, outcome.stderr)
        assert "Traceback" not in outcome.stderr and where in lines[0], (label, lines[0])
        if word:
            assert word in lines[0], (label, lines[0])
        assert tree_digest(root) == before, label


def test_a_date_key_and_a_date_value_reach_json_as_text(tmp_path):
    root = tmp_path / "ws"
    for rel, content in {k: _dump(v) for k, v in BASE.items()}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)
    wp = (root / "workspace.poly").read_text().replace("port: 8080", "port: 8080\n    2024-01-01: released\n"
                                                       "    since: 2024-01-01")
    (root / "workspace.poly").write_text(wp)
    outcome = run_inprocess(["-w", str(root), "workspace", "snapshot", "-o", "json"], timeout=60)
    assert outcome.code == 0, outcome.stderr
    assert '"2024-01-01": "released"' in outcome.stdout and '"since": "2024-01-01"' in outcome.stdout
