"""Reading YAML input files with line numbers kept for error messages, and with limits.

Every mapping loaded here is a ``LineMap``: a plain dict that also knows the
line of each key, so a validation error can name ``workspace.poly:12``.

Every file we read ourselves (``workspace.poly``, each ``block.poly``,
``inventory.yml``, ``secrets.poly``, ``blocks.lock``) passes through here, and
nothing in it can knock polycrate over: a FIFO or a device is not opened for a
blocking read, a file larger than ``MAX_BYTES`` is not read, text must be UTF-8
without control characters, and the document is bounded in depth, in nodes
(aliases counted as what they expand to, so an alias bomb is refused before it
is built), in keys per mapping and in the length of a scalar. Integers are
bounded (Python refuses to parse more than 4,300 digits), timestamps stay text
and mapping keys are the text written. Anything else is a one-line ConfigError naming
the file and the line.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from polycrate.errors import ConfigError

MAX_BYTES = 4 * 1024 * 1024  # far beyond a hand-written file; PyYAML reads about 1 MB/s
MAX_DEPTH = 64  # nesting of mappings and lists (the composer recurses: keep far from Python's limit)
MAX_NODES = 250_000  # nodes of a document, aliases counted as the nodes they stand for
MAX_KEYS = 20_000  # keys of one mapping
MAX_SCALAR = 1024 * 1024  # characters of one value (a long certificate fits)
MAX_INT_DIGITS = 30  # beyond any count, size or duration (2**63 has 19 digits)

# What YAML forbids in a stream (PyYAML's reader would raise without a line number).
_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class LineMap(dict[str, Any]):
    """A dict that remembers the 1-based line of its keys and of itself."""

    line: int | None = None
    key_lines: dict[str, int]
    item_lines: dict[str, list[int]]  # key -> the line of each item, where the key's value is a list

    def line_of(self, key: str) -> int | None:
        return getattr(self, "key_lines", {}).get(key, self.line)

    def lines_of_items(self, key: str) -> list[int | None]:
        """The line of each item of the list under `key` (the key's line where unknown)."""
        lines = getattr(self, "item_lines", {}).get(key)
        value = self.get(key)
        count = len(value) if isinstance(value, list) else 0
        return list(lines) if lines and len(lines) == count else [self.line_of(key)] * count


def _line(node: yaml.Node | yaml.Event | None) -> int | None:
    mark = getattr(node, "start_mark", None)
    return mark.line + 1 if mark is not None else None


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: str, name: str) -> None:
        super().__init__(stream)
        self.name = name
        self._depth = 0
        self._nodes = 0
        self.max_keys = MAX_KEYS
        self._sizes: dict[int, int] = {}  # id(node) -> nodes it stands for (for aliases)

    def _fail(self, message: str, where: yaml.Node | yaml.Event | None) -> None:
        raise ConfigError(message, self.name, _line(where))

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None:
                self._count(self._sizes.get(id(node), 1), event)
            return super().compose_node(parent, index)
        event = self.peek_event()
        self._depth += 1
        if self._depth > MAX_DEPTH:
            self._fail(f"nested more than {MAX_DEPTH} levels deep", event)
        try:
            before = self._nodes
            self._count(1, event)
            node = super().compose_node(parent, index)
            if isinstance(node, yaml.ScalarNode) and len(node.value) > MAX_SCALAR:
                self._fail(f"a value of {len(node.value):,} characters (at most {MAX_SCALAR:,})", node)
            if isinstance(node, yaml.MappingNode) and len(node.value) > self.max_keys:
                self._fail(f"a mapping of {len(node.value):,} keys (at most {self.max_keys:,})", node)
            self._sizes[id(node)] = self._nodes - before
            return node
        finally:
            self._depth -= 1

    def _count(self, n: int, where: yaml.Event) -> None:
        self._nodes += n
        if self._nodes > MAX_NODES:
            self._fail(f"more than {MAX_NODES:,} values (aliases counted as what they expand to)", where)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineMap:
    loader.flatten_mapping(node)
    result = LineMap()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    result.item_lines = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode):
            raise ConfigError("mapping key is a list or mapping, not text", loader.name, line)
        # A key is the text written: `on:`, `80:` or `2024-01-01:` are names, not a boolean,
        # a number or a date (a date key broke `-o json`; `on: true` surprised everyone).
        key = _construct_str(loader, key_node)
        if key in result:
            raise ConfigError(f"duplicate key {key!r}", loader.name, line)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
        if isinstance(value_node, yaml.SequenceNode):
            result.item_lines[key] = [item.start_mark.line + 1 for item in value_node.value]
    return result


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    digits = sum(ch.isalnum() for ch in node.value.lstrip("+-").removeprefix("0x").removeprefix("0o"))
    if digits > MAX_INT_DIGITS:
        raise ConfigError(f"a number of {digits:,} digits (at most {MAX_INT_DIGITS}; quote it if it is text)",
                          loader.name, _line(node))
    return yaml.SafeLoader.construct_yaml_int(loader, node)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _construct_str(loader: _Loader, node: yaml.ScalarNode) -> str:
    value = loader.construct_scalar(node)
    if "\x00" in value:  # "\0" escapes: a NUL can reach no path, argument or environment
        raise ConfigError("a value holds a NUL character", loader.name, _line(node))
    lone = _SURROGATE.search(value)
    if lone is not None:  # "\ud83d": no UTF-8 for it, so every print, file and store of it fails later
        raise ConfigError(f"a value holds a lone surrogate (\\u{ord(lone.group()):04x}), which is no character: write the "
                          "character itself or one \\U00XXXXXX escape", loader.name, _line(node))
    return value


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:str", _construct_str)
# dates stay text: `version: 2024-01-01` is a version, and a date is no JSON value
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_str)


def _check_printable(text: str, path: str | Path) -> None:
    bad = _NON_PRINTABLE.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        raise ConfigError(f"control character U+{ord(bad.group()):04X} at column {column} (not allowed in YAML)",
                          path, line)


def parse_yaml(text: str, path: str | Path, *, max_keys: int | None = None) -> Any:
    """Parse YAML text within the limits above; any problem is a ConfigError with file and line.
    `max_keys`: more keys in one mapping for a file whose job is a long list (an inventory's hosts)."""
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{len(text):,} characters: larger than the {_size(MAX_BYTES)} this file may have",
                          path)
    _check_printable(text.lstrip("\ufeff"), path)
    loader = _Loader(text, str(path))
    loader.max_keys = MAX_KEYS if max_keys is None else max_keys
    try:
        return loader.get_single_data()
    except ConfigError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"invalid YAML: {problem}", path, line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {' '.join(str(exc).split())}", path) from None
    except RecursionError:  # a limit above should have come first; never a traceback
        raise ConfigError("invalid YAML: nested too deeply", path) from None
    finally:
        loader.dispose()


def decode_text(data: bytes, path: str | Path) -> str:
    """UTF-8 text of a file's bytes; invalid UTF-8 names its line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"not UTF-8 text (byte 0x{data[exc.start]:02x})", path, line) from None


def read_bytes(path: Path, limit: int = MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes. A FIFO, a device, a socket or a
    folder is refused without a blocking open; so is a file that is too large."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError("file not found", path) from None
    except IsADirectoryError:
        raise ConfigError("is a folder, not a file", path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError("is a folder, not a file", path)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"is not a regular file (a {_kind(info.st_mode)})", path)
        if info.st_size > limit:
            raise ConfigError(f"{info.st_size:,} bytes: larger than the {_size(limit)} this file may have", path)
        chunks, total = [], 0
        while True:
            try:
                chunk = os.read(fd, 1 << 20)
            except OSError as exc:
                raise ConfigError(f"cannot read: {exc.strerror}", path) from None
            if not chunk:
                break
            total += len(chunk)
            if total > limit:  # grew while we read
                raise ConfigError(f"larger than the {_size(limit)} this file may have", path)
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def regular_file(path: Path) -> bool:
    """Whether `path` exists, by stat alone (nothing opened, nothing read); a folder, FIFO, device or
    socket is refused as read_bytes would refuse it."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ConfigError("file not found (a dangling symbolic link)", path) from None
        return False
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path) from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError("is a folder, not a file", path)
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"is not a regular file (a {_kind(info.st_mode)})", path)
    return True


def check_text(text: str, path: str | Path) -> None:
    """The character rules of every file we read (no control characters), for a file that Ansible,
    not our YAML loader, parses."""
    _check_printable(text.lstrip("\ufeff"), path)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def read_text(path: Path, limit: int = MAX_BYTES) -> str:
    return decode_text(read_bytes(path, limit), path)


def load_yaml(path: Path) -> Any:
    return parse_yaml(read_text(path), path)


def plain(value: Any) -> Any:
    """Deep copy into plain dicts and lists (for JSON, snapshots and Ansible)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def _size(limit: int) -> str:
    """A size limit for people: '1 MiB', '64 KiB', '500 bytes' (never '0 MiB')."""
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if limit >= scale and limit % scale == 0:
            return f"{limit // scale} {unit}"
    return f"{limit:,} bytes"
