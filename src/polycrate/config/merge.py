"""The one config merge rule.

Block defaults < workspace overrides. Maps merge deeply; every other value
(lists included) is replaced whole by the override, so an override of
``false``, ``0``, ``""`` or ``[]`` wins over a truthy default. ``None`` in
an override is a value too (an explicit YAML ``null``).
"""
from __future__ import annotations

from typing import Any
from collections.abc import Mapping


def merge_config(defaults: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    result: dict[str, Any] = {k: _copy(v) for k, v in (defaults or {}).items()}
    for key, value in (overrides or {}).items():
        base = result.get(key)
        if isinstance(base, Mapping) and isinstance(value, Mapping):
            result[key] = merge_config(base, value)
        else:
            result[key] = _copy(value)
    return result


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
