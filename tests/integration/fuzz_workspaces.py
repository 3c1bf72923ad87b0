"""A seeded generator of broken workspaces (issue 14), and an in-process CLI runner that guards
each call with a timeout. Used by test_fuzz.py; `python -m tests.integration.fuzz_workspaces N`
prints a few generated cases for a look.

Every case starts from one small, valid workspace (script actions only: nothing slow runs) and
applies one to three mutations drawn from the input classes an admin meets on a bad night:
control characters, invalid UTF-8, deep nesting, alias bombs, huge or non-finite numbers, too many
keys or values, long values, huge files, FIFOs, devices and folders where files belong, wrong
shapes, odd keys, bad schedules, empty tags, duplicate block names, secret keys as recipients.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

import yaml

AGE_SECRET = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ"

BASE: dict[str, Any] = {
    "workspace.poly": {
        "name": "fuzz",
        "organization": "acme",
        "blocks": [
            {"name": "app", "config": {"greeting": "hello", "port": 8080, "tags": ["a", "b"]}},
            {"name": "db"},
        ],
        "workflows": [
            {
                "name": "nightly",
                "description": "backup then check",
                "schedule": "*-*-* 02:00:00",
                "steps": [
                    {"name": "one", "block": "app", "action": "hello", "timeout": 30, "retries": 1, "retry_delay": 0},
                    {"name": "two", "block": "db", "action": "check"},
                ],
            }
        ],
        "history": {"keep_runs": 50},
    },
    "blocks/app/block.poly": {
        "name": "app", "version": "1.0.0", "config": {"greeting": "hi", "port": 1},
        "actions": [{"name": "hello", "script": ["echo hello"]}],
    },
    "blocks/db/block.poly": {
        "name": "db", "version": "2.0.0", "actions": [{"name": "check", "script": ["true"]}],
    },
    "inventory.yml": {"all": {"hosts": {"localhost": {"ansible_connection": "local"}}}},
    "secrets.poly": {"blocks": [{"name": "app", "config": {"token": "s3cr3t-value-1234"}}]},
}
FILES = list(BASE)

# Values a setting must refuse or take without falling over.
ODD_VALUES: list[Any] = [
    float("nan"), float("inf"), float("-inf"), 1e308, -1, 0, 10**25, -(10**25), 1e-300, 2**63, 2**64,
    "", " ", "x" * 300, "a\nb", "a\tb", None, [], {}, [1, [2, [3]]], {"a": {"b": None}}, True, False,
    "../../etc/passwd", "/etc/shadow", "a/../../b", "-rf", "--help", "$(id)", "{{ lookup('pipe','id') }}",
    "*-*-* 99:00:00", "0 0 30 2 *", "61 * * * *", "*/0 * * * *", "Mon..Fri 25:00", "2038-01-19 03:14:08",
    "9999-12-31 23:59:59", "*-*-* 02:00:00\nExecStart=/bin/sh", AGE_SECRET, "age1" + "q" * 58,
    "registry.acme-corp.com/acme/infra/linux-maintenance:", "registry.acme-corp.com/x:latest", ":",
    "ünïcödé-✓", "\u202eevil", "1" * 40, "0x" + "f" * 20, "10e10000", "1_000", "0o777", "~", "null", "yes",
]

# Where a value may go (path into the data of a file).
SLOTS: list[tuple[str, tuple]] = [
    ("workspace.poly", ("name",)),
    ("workspace.poly", ("organization",)),
    ("workspace.poly", ("blocks",)),
    ("workspace.poly", ("blocks", 0)),
    ("workspace.poly", ("blocks", 0, "name")),
    ("workspace.poly", ("blocks", 0, "from")),
    ("workspace.poly", ("blocks", 0, "config")),
    ("workspace.poly", ("blocks", 0, "config", "port")),
    ("workspace.poly", ("workflows",)),
    ("workspace.poly", ("workflows", 0, "name")),
    ("workspace.poly", ("workflows", 0, "schedule")),
    ("workspace.poly", ("workflows", 0, "schedule", "on_calendar")),
    ("workspace.poly", ("workflows", 0, "schedule", "cron")),
    ("workspace.poly", ("workflows", 0, "schedule", "timeout")),
    ("workspace.poly", ("workflows", 0, "schedule", "randomized_delay")),
    ("workspace.poly", ("workflows", 0, "steps")),
    ("workspace.poly", ("workflows", 0, "steps", 0, "timeout")),
    ("workspace.poly", ("workflows", 0, "steps", 0, "retries")),
    ("workspace.poly", ("workflows", 0, "steps", 0, "retry_delay")),
    ("workspace.poly", ("workflows", 0, "steps", 0, "block")),
    ("workspace.poly", ("workflows", 0, "steps", 0, "action")),
    ("workspace.poly", ("workflows", 0, "prompt")),
    ("workspace.poly", ("workflows", 0, "on_failure")),
    ("workspace.poly", ("encryption",)),
    ("workspace.poly", ("encryption", "recipients")),
    ("workspace.poly", ("encryption", "recipients", 0)),
    ("workspace.poly", ("registries",)),
    ("workspace.poly", ("history", "keep_runs")),
    ("workspace.poly", ("history", "keep_days")),
    ("workspace.poly", ("webhooks",)),
    ("workspace.poly", ("webhooks", 0, "url")),
    ("workspace.poly", ("metrics",)),
    ("workspace.poly", ("runtime",)),
    ("workspace.poly", ("toolchain",)),
    ("blocks/app/block.poly", ("name",)),
    ("blocks/app/block.poly", ("version",)),
    ("blocks/app/block.poly", ("from",)),
    ("blocks/app/block.poly", ("config",)),
    ("blocks/app/block.poly", ("actions",)),
    ("blocks/app/block.poly", ("actions", 0, "name")),
    ("blocks/app/block.poly", ("actions", 0, "script")),
    ("blocks/app/block.poly", ("actions", 0, "script", 0)),
    ("blocks/app/block.poly", ("actions", 0, "playbook")),
    ("blocks/db/block.poly", ("name",)),
    ("inventory.yml", ("all",)),
    ("inventory.yml", ("all", "hosts")),
    ("inventory.yml", ("all", "hosts", "localhost", "ansible_port")),
    ("secrets.poly", ()),
    ("secrets.poly", ("blocks",)),
    ("secrets.poly", ("blocks", 0)),
    ("secrets.poly", ("blocks", 0, "name")),
    ("secrets.poly", ("blocks", 0, "config")),
    ("secrets.poly", ("config",)),
]

# Lowered limits for the in-process cases (set by the test; the same code paths at a fraction of
# the cost), and what a case generates to exceed them. The subprocess sample uses the real limits.
SMALL_LIMITS = {"MAX_BYTES": 50_000, "MAX_NODES": 1_000, "MAX_KEYS": 100, "MAX_SCALAR": 5_000}


@dataclass
class Case:
    seed: int
    texts: dict[str, bytes] = field(default_factory=dict)  # relpath -> content
    specials: list[tuple[str, str]] = field(default_factory=list)  # (relpath, fifo|folder|devzero|...)
    classes: list[str] = field(default_factory=list)

    def write(self, root: Path) -> None:
        for rel, data in self.texts.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        for rel, kind in self.specials:
            path = root / rel
            if path.is_dir() and not path.is_symlink():
                import shutil

                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "fifo":
                os.mkfifo(path)
            elif kind == "folder":
                path.mkdir()
            elif kind == "devzero":
                path.symlink_to("/dev/zero")
            elif kind == "devnull":
                path.symlink_to("/dev/null")
            elif kind == "dangling":
                path.symlink_to(root / "no-such-file")
            elif kind == "loop":
                path.symlink_to(path)
            elif kind == "garbage":
                path.write_bytes(bytes(random.Random(len(rel)).randrange(256) for _ in range(4096)))
            elif kind == "file":
                path.write_text("not a folder\n")


def _set(data: Any, path: tuple, value: Any) -> Any:
    """``data`` with the value at ``path`` replaced (creating mappings on the way)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(head, int):
        if not isinstance(data, list) or not data:
            data = [{}]
        index = min(head, len(data) - 1)
        data[index] = _set(data[index], rest, value)
        return data
    if not isinstance(data, dict):
        data = {}
    data[head] = _set(data.get(head), rest, value)
    return data


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10_000)


# ---- text mutations: (rng, text) -> text


def _insert(rng: random.Random, text: str, piece: str) -> str:
    at = rng.randrange(len(text) + 1)
    return text[:at] + piece + text[at:]


def m_control(rng, text):
    char = rng.choice(["\x00", "\x01", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\x9f", "\ufeff",
                       "\ufffe", "\u2028"])
    return _insert(rng, text, char * rng.randint(1, 3))


def m_escape(rng, text):
    escape = rng.choice(["a\\0b", "\\x00", "\\x1b[31m", "\\uD800", "\\e"])
    return text + 'escaped: "' + escape + '"\n'


def m_deep_block(rng, text):
    depth = rng.randint(60, 600)
    return text + "deep:\n" + "".join("  " * i + "- \n" for i in range(1, depth))


def m_deep_flow(rng, text):
    depth = rng.randint(60, 3_000)
    opener, closer = rng.choice([("[", "]"), ("{a: ", "}")])
    return text + "deep: " + opener * depth + "1" + closer * depth + "\n"


def m_alias_bomb(rng, text):
    width = rng.randint(5, 12)
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, rng.randint(6, 12)):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return text + "\n".join(lines) + "\n"


def m_many_keys(rng, text):
    n = SMALL_LIMITS["MAX_KEYS"] + rng.randint(1, 50)
    return text + "many:\n" + "".join(f"  k{i}: {i}\n" for i in range(n))


def m_many_values(rng, text):
    n = SMALL_LIMITS["MAX_NODES"] + rng.randint(1, 500)
    return text + "big: [" + ",".join("1" for _ in range(n)) + "]\n"


def m_long_value(rng, text):
    return text + "long: " + "x" * (SMALL_LIMITS["MAX_SCALAR"] + rng.randint(1, 500)) + "\n"


def m_huge_comment(rng, text):
    return text + "# " + "c" * (SMALL_LIMITS["MAX_BYTES"] + rng.randint(1, 1000)) + "\n"


def m_big_int(rng, text):
    return text + f"number: {'9' * rng.randint(31, 6000)}\n"


def m_odd_keys(rng, text):
    key = rng.choice(["? [a, b]\n: 1", "? {a: 1}\n: 2", "2024-01-01: x", "~: x", "null: x", "on: x", "1.5: x",
                      "[a]: x", "!!binary aGk=: x", "<<: {x: 1}", "<<: *nope", "&a k: *a", "? |\n  block\n: x"])
    return text + key + "\n"


def m_truncate(rng, text):
    return text[: rng.randrange(len(text) + 1)]


def m_flip(rng, text):
    chars = list(text)
    for _ in range(rng.randint(1, 5)):
        if chars:
            chars[rng.randrange(len(chars))] = rng.choice(":-[]{}&*!|>'\"%@`#,? \n\t")
    return "".join(chars)


def m_tab_indent(rng, text):
    return text.replace("  ", "\t", rng.randint(1, 3))


def m_tags(rng, text):
    return text + rng.choice(["t: !!python/object:os.system 'id'", "t: !!set {a, b}", "t: !!omap [a: 1]",
                              "t: !!float nan", "t: !!int 'x'", "t: !custom 1", "t: !!timestamp 2024-13-45",
                              "t: !!binary '%%%'", "t: !!float 1e999"]) + "\n"


def m_multidoc(rng, text):
    return text + "---\nname: second\n"


TEXT_MUTATIONS: dict[str, Callable] = {
    "control": m_control, "escape": m_escape, "deep-block": m_deep_block, "deep-flow": m_deep_flow,
    "alias-bomb": m_alias_bomb, "many-keys": m_many_keys, "many-values": m_many_values,
    "long-value": m_long_value, "huge-comment": m_huge_comment, "big-int": m_big_int, "odd-keys": m_odd_keys,
    "truncate": m_truncate, "flip": m_flip, "tab-indent": m_tab_indent, "tags": m_tags, "multidoc": m_multidoc,
}

BYTE_MUTATIONS = {
    "invalid-utf8": [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82"],
    "bom-utf16": [b"\xff\xfe"],
}

SPECIALS = [
    ("fifo", FILES), ("folder", FILES), ("devzero", FILES), ("devnull", FILES), ("dangling", FILES),
    ("loop", FILES), ("file", [".polycrate", ".polycrate/locks", "blocks", "blocks/app"]),
    ("garbage", [".polycrate/runs.db", "blocks.lock"]), ("fifo", ["blocks.lock", ".polycrate/runs.db"]),
    ("folder", ["blocks.lock"]),
]


def generate(seed: int) -> Case:
    rng = random.Random(seed)
    data = copy.deepcopy(BASE)
    case = Case(seed)
    text_muts: dict[str, list[str]] = {}
    byte_muts: dict[str, list[bytes]] = {}
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        roll = rng.random()
        if roll < 0.40:
            rel, path = rng.choice(SLOTS)
            value = copy.deepcopy(rng.choice(ODD_VALUES))
            data[rel] = _set(data[rel], path, value)
            case.classes.append(f"value:{'.'.join(map(str, path)) or '/'}={str(value)[:20]!r}")
        elif roll < 0.47:
            what = rng.choice(["dup-name", "empty-tag", "agekey", "from-loop", "missing-block", "blocks.lock"])
            case.classes.append(what)
            if what == "dup-name":
                data["blocks/app2/block.poly"] = copy.deepcopy(data["blocks/app/block.poly"])
            elif what == "empty-tag":
                data["workspace.poly"]["blocks"][0]["from"] = "registry.acme-corp.com/acme/infra/app:"
            elif what == "agekey":
                data["workspace.poly"]["encryption"] = {"recipients": [AGE_SECRET]}
            elif what == "from-loop":
                data["blocks/app/block.poly"]["from"] = "db"
                data["blocks/db/block.poly"]["from"] = "app"
            elif what == "missing-block":
                del data["blocks/db/block.poly"]
            else:
                data["blocks.lock"] = rng.choice([{"blocks": {"x": {"digest": 1}}}, {"blocks": [1]}, [1], "x",
                                                  {"blocks": {"r": "sha256:0"}}])
        elif roll < 0.85:
            rel = rng.choice(FILES)
            name = rng.choice(list(TEXT_MUTATIONS))
            text_muts.setdefault(rel, []).append(name)
            case.classes.append(f"{name}@{rel}")
        elif roll < 0.92:
            rel = rng.choice(FILES)
            name = rng.choice(list(BYTE_MUTATIONS))
            byte_muts.setdefault(rel, []).append(rng.choice(BYTE_MUTATIONS[name]))
            case.classes.append(f"{name}@{rel}")
        else:
            kind, targets = rng.choice(SPECIALS)
            rel = rng.choice(targets)
            case.specials.append((rel, kind))
            case.classes.append(f"{kind}@{rel}")
    for rel, content in data.items():
        text = _dump(content)
        for name in text_muts.get(rel, []):
            text = TEXT_MUTATIONS[name](rng, text)
        raw = text.encode("utf-8", "surrogatepass")
        for piece in byte_muts.get(rel, []):
            at = rng.randrange(len(raw) + 1)
            raw = raw[:at] + piece + raw[at:]
        case.texts[rel] = raw
    return case


# ---- running the CLI in-process, guarded


COMMANDS: list[list[str]] = [
    ["workspace", "validate"],
    ["workflows", "list"],
    ["workflows", "inspect", "nightly"],
    ["workflows", "run", "nightly"],
    ["blocks", "list"],
    ["actions", "list"],
    ["workspace", "snapshot"],
    ["workspace", "snapshot", "-o", "json"],
    ["schedules", "plan"],
    ["run", "app", "hello"],
]


class Hang(BaseException):
    """Raised by the alarm: a command ran past its timeout."""


@dataclass
class Outcome:
    code: int | None  # None: an exception escaped main (a traceback) or a hang
    stdout: str
    stderr: str
    escaped: BaseException | None = None
    hung: bool = False
    seconds: float = 0.0

    @property
    def traceback(self) -> bool:
        return (self.escaped is not None and not self.hung) or self.code == 70 or "Traceback" in self.stderr


def run_inprocess(argv: list[str], timeout: float) -> Outcome:
    from polycrate.cli import main

    out, err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8"), io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)}

    def alarm(signum, frame):
        raise Hang()

    signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    started = time.monotonic()
    code: int | None = None
    escaped: BaseException | None = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except Hang as exc:
        escaped = exc
    except SystemExit as exc:  # argparse --help and the like
        code = exc.code if isinstance(exc.code, int) else 0
    except BaseException as exc:
        escaped = exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for s, handler in saved.items():
            signal.signal(s, handler)
    seconds = time.monotonic() - started
    texts = []
    for stream in (out, err):
        stream.flush()
        texts.append(stream.buffer.getvalue().decode("utf-8", "replace"))  # type: ignore[attr-defined]
    return Outcome(code, texts[0], texts[1], escaped, isinstance(escaped, Hang), seconds)


def tree_digest(root: Path) -> str:
    """What is in the workspace folder: names, kinds and contents (FIFOs and devices not opened)."""
    digest = hashlib.sha256()
    # A run takes its lock before it decrypts secrets: the lock file (and the .polycrate/ folder that
    # holds it) is bookkeeping, not a change; a run record or a log would be one.
    bookkeeping = {".polycrate", ".polycrate/.gitignore", ".polycrate/locks"}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if rel in bookkeeping and path.is_dir() == (rel != ".polycrate/.gitignore") or (
                    rel.startswith(".polycrate/locks/") and path.is_file() and not path.is_symlink()):
                continue
            digest.update(str(path.relative_to(root)).encode("utf-8", "surrogateescape"))
            try:
                st = path.lstat()
            except OSError:
                continue
            digest.update(oct(st.st_mode).encode())
            if path.is_symlink():
                digest.update(os.readlink(path).encode("utf-8", "surrogateescape"))
            elif path.is_file():
                digest.update(path.read_bytes())
    return digest.hexdigest()


if __name__ == "__main__":
    for seed in range(int(sys.argv[1]) if len(sys.argv) > 1 else 5):
        c = generate(seed)
        print(seed, c.classes, c.specials)
