"""Reading YAML input files with line numbers kept for error messages.

Every mapping loaded here is a ``LineMap``: a plain dict that also knows the
line of each key, so a validation error can name ``workspace.poly:12``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from polycrate.errors import ConfigError


class LineMap(dict):
    """A dict that remembers the 1-based line of its keys and of itself."""

    line: int | None = None
    key_lines: dict

    def line_of(self, key: str) -> int | None:
        return getattr(self, "key_lines", {}).get(key, self.line)


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineMap:
    loader.flatten_mapping(node)
    result = LineMap()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise ConfigError("mapping key is not a plain value", loader.name, key_node.start_mark.line + 1)
        if key in result:
            raise ConfigError(f"duplicate key {key!r}", loader.name, key_node.start_mark.line + 1)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str, path: str | Path) -> Any:
    """Parse YAML text; syntax errors become a ConfigError with file and line."""
    loader = _Loader(text)
    loader.name = str(path)
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
        raise ConfigError(f"invalid YAML: {exc}", path) from None
    finally:
        loader.dispose()


def load_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", path) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path) from None
    return parse_yaml(text, path)


def plain(value: Any) -> Any:
    """Deep copy into plain dicts and lists (for JSON, snapshots and Ansible)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
