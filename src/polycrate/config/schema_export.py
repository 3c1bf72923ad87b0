"""What comes out of the declarations (``config/declarations.py``) besides the checks: the JSON Schema of
each file (shipped in ``config/schemas/``, named in the modeline ``workspace init`` and ``block create``
write) and the key tables of the documentation.

    python -m polycrate.config.schema_export --write    # regenerate config/schemas/*.schema.json
    python -m polycrate.config.schema_export --check    # exit 1 when a shipped file differs
    python -m polycrate.config.schema_export --markdown workspace.poly
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from polycrate.config.declarations import (
    FILES,
    SECTIONS,
    Field,
    Kind,
    Section,
    reachable,
    strict_end,
)

SCHEMAS_DIR = Path(__file__).parent / "schemas"
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def schema_file(file: str) -> Path:
    """The shipped JSON Schema of ``file`` (workspace.poly, block.poly, secrets.poly)."""
    if file not in FILES:
        raise KeyError(file)
    return SCHEMAS_DIR / f"{file}.schema.json"


# --- JSON Schema ------------------------------------------------------------------------------------


def _kind_schema(kind: Kind) -> dict[str, Any]:
    schema: dict[str, Any]
    if kind.of == "string":
        schema = {"type": ["string", "number"] if kind.numbers else "string"}
        if kind.pattern:  # the end of the text, for ECMAScript and Python's re alike (a final newline refused)
            schema["pattern"] = strict_end(kind.pattern)
    elif kind.of in ("integer", "number"):
        schema = {"type": kind.of}
        for key, value in (("minimum", kind.minimum), ("exclusiveMinimum", kind.exclusive_minimum),
                           ("maximum", kind.maximum)):
            if value is not None:
                schema[key] = value
    elif kind.of in ("boolean", "null"):
        schema = {"type": kind.of}
    elif kind.of == "enum":
        schema = {"enum": list(kind.choices)}
    elif kind.of == "list":
        assert kind.items is not None
        schema = {"type": "array", "items": _kind_schema(kind.items)}
        if kind.min_items:
            schema["minItems"] = kind.min_items
        if kind.unique:
            schema["uniqueItems"] = True
    elif kind.of == "mapping":
        schema = {"type": "object"}
        if kind.keys:
            schema["propertyNames"] = {"pattern": strict_end(kind.keys)}
        if kind.items is not None and kind.items.of != "any":
            schema["additionalProperties"] = _kind_schema(kind.items)
    elif kind.of == "section":
        schema = {"$ref": f"#/$defs/{kind.section}"}
    elif kind.of == "one_of":
        schema = {"anyOf": [_kind_schema(option) for option in kind.options]}
    elif kind.of == "any":
        schema = {}
    else:
        raise ValueError(f"unknown kind {kind.of!r}")
    return schema


def _field_schema(field: Field) -> dict[str, Any]:
    schema = _kind_schema(field.kind)
    if field.null and not field.required and schema:  # `key:` alone means "not set"
        if "type" in schema:
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            schema["type"] = [*types, "null"]
        elif "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
        elif "anyOf" in schema:
            schema["anyOf"] = [*schema["anyOf"], {"type": "null"}]
        else:
            schema = {"anyOf": [schema, {"type": "null"}]}
    schema["description"] = field.doc
    if field.default is not None:
        schema["default"] = field.default
    return schema


def _section_schema(section: Section) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "title": section.where, "description": section.doc}
    if section.fields:
        schema["properties"] = {f.key: _field_schema(f) for f in section.fields}
    required = [f.key for f in section.fields if f.required]
    if required:
        schema["required"] = required
    if section.closed:
        schema["additionalProperties"] = False
    if section.exactly_one:
        schema["oneOf"] = [{"required": [key]} for key in section.exactly_one]
    if section.at_least_one:
        schema["anyOf"] = [{"required": [key]} for key in section.at_least_one]
    return schema


def json_schema(file: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``file``: its top level, and every section it uses in ``$defs``."""
    top, *nested = reachable(file)
    schema: dict[str, Any] = {"$schema": DRAFT, **_section_schema(top)}
    schema["title"] = file
    if nested:
        schema["$defs"] = {s.name: _section_schema(s) for s in nested}
    return schema


def json_schema_text(file: str) -> str:
    """The text of the shipped file: stable (declaration order, two-space indent, a final newline)."""
    return json.dumps(json_schema(file), indent=2, ensure_ascii=False) + "\n"


def write_schemas(folder: Path = SCHEMAS_DIR) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for file in FILES:
        path = folder / f"{file}.schema.json"
        path.write_text(json_schema_text(file), encoding="utf-8")
        written.append(path)
    return written


# --- documentation ----------------------------------------------------------------------------------


def _number_text(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def _kind_text(kind: Kind) -> str:
    if kind.hint:
        return kind.hint
    if kind.of == "string":
        return "text" if kind.numbers else "string"
    if kind.of in ("integer", "number"):
        bounds = []
        if kind.exclusive_minimum is not None:
            bounds.append(f"> {_number_text(kind.exclusive_minimum)}")
        if kind.minimum is not None:
            bounds.append(f">= {_number_text(kind.minimum)}")
        if kind.maximum is not None:
            bounds.append(f"<= {_number_text(kind.maximum)}")
        return kind.of + (" " + ", ".join(bounds) if bounds else "")
    if kind.of in ("boolean", "null", "any"):
        return {"boolean": "true or false", "null": "empty", "any": "any"}[kind.of]
    if kind.of == "enum":
        return " or ".join(f"`{c}`" if c != "" else '`""`' for c in kind.choices)
    if kind.of == "list":
        assert kind.items is not None
        text = f"list of {_kind_text(kind.items)}"
        return text + (f" (at least {kind.min_items})" if kind.min_items else "")
    if kind.of == "mapping":
        return "mapping" + (f" of {_kind_text(kind.items)}" if kind.items is not None and kind.items.of != "any" else "")
    if kind.of == "section":
        assert kind.section is not None
        return f"mapping ({SECTIONS[kind.section].where})"
    if kind.of == "one_of":
        return " or ".join(_kind_text(option) for option in kind.options)
    raise ValueError(f"unknown kind {kind.of!r}")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default_text(value: Any) -> str:
    if value is None:
        return ""
    if value == "":
        return '`""`'
    return f"`{json.dumps(value)}`" if not isinstance(value, str) else f"`{value}`"


def _keys_text(keys: tuple[str, ...]) -> str:
    return ", ".join(f"`{key}`" for key in keys[:-1]) + f" or `{keys[-1]}`"


def key_tables(file: str, level: int = 3) -> str:
    """The keys of ``file`` as Markdown: a heading and a table per section, its top level first."""
    parts = []
    for section in reachable(file):
        rule = "Other keys are refused." if section.closed else "Other keys are allowed."
        if section.exactly_one:
            rule += f" Exactly one of {_keys_text(section.exactly_one)} is written."
        if section.at_least_one:
            rule += f" At least one of {_keys_text(section.at_least_one)} is written."
        lines = [f"{'#' * level} `{section.where}`", "", f"{section.doc} {rule}", ""]
        if section.fields:
            lines += ["| Key | Type | Required | Default | Description |", "| --- | --- | --- | --- | --- |"]
            for field in section.fields:
                lines.append("| " + " | ".join(_cell(text) for text in (
                    f"`{field.key}`", _kind_text(field.kind), "yes" if field.required else "",
                    _default_text(field.default), field.doc)) + " |")
            lines.append("")
        parts.append("\n".join(lines))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--write"]:
        for written in write_schemas():
            print(written)
        return 0
    if args == ["--check"]:
        stale = [str(schema_file(f)) for f in FILES
                 if not schema_file(f).is_file() or schema_file(f).read_text(encoding="utf-8") != json_schema_text(f)]
        for path in stale:
            print(f"{path}: differs from the declarations (python -m polycrate.config.schema_export --write)",
                  file=sys.stderr)
        return 1 if stale else 0
    if len(args) == 2 and args[0] == "--markdown" and args[1] in FILES:
        print(key_tables(args[1]), end="")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
