"""A small renderer for the subset of Go's text/template that Polycrate's script lines use.

The real Polycrate renders every script line with Go's text/template over the action's snapshot
(cmd/actions.go), so `echo {{ .block.config.db_name }}` prints the merged config value. The subset:

- text and actions `{{ ... }}`, with the trim markers `{{- ` and ` -}}`, and comments `{{/* ... */}}`;
- values: `.` (the current value), `$` (the root), field chains `.block.config.db_name`, `$.workspace.name`;
  string literals ("..." with Go escapes, and `raw`), numbers, true, false, nil;
- `if` / `else if` / `else` / `end`, `range` (over lists, and maps in key order) and `with`;
- pipelines `a | f b` and the built-in functions and, or, not, eq, ne, lt, le, gt, ge, len, index,
  print, printf, println.

Field names: a map key is matched exactly first, then regardless of case, so both the snapshot's
keys (`.block.config`) and Go's exported field names (`.Block.Config`) work. A missing key renders
as `<no value>`, as Go does for maps; any other error (unknown function, unclosed action, a field
of a non-map) is a TemplateError with the reason.
"""
from __future__ import annotations

import re
from typing import Any, Callable

NO_VALUE = "<no value>"


class TemplateError(Exception):
    pass


# --- lexing ----------------------------------------------------------------------------------

# an action ends at the first `}}` outside its string literals (Go's lexer: `{{ "}}" }}` prints `}}`)
_ACTION = re.compile(r"""\{\{(-\s)?((?:"(?:[^"\\]|\\.)*"|`[^`]*`|[^"`])*?)(\s-)?\}\}""", re.S)
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>"(?:[^"\\]|\\.)*")
      | (?P<raw>`[^`]*`)
      | (?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
      | (?P<field>(?:\$[A-Za-z0-9_]*)?(?:\.[A-Za-z0-9_]+)+|\$[A-Za-z0-9_]*|\.)
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<pipe>\|)
      | (?P<lparen>\()
      | (?P<rparen>\))
    )""",
    re.X,
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"unexpected {text[pos:].strip()[:20]!r} in action")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def _split(source: str) -> list[tuple[str, str]]:
    """[("text", ...), ("action", ...)] with trim markers applied."""
    parts: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(source):
        text = source[pos:m.start()]
        if m.group(1):
            text = text.rstrip()
        if parts and parts[-1][0] == "trim-next":
            parts.pop()
            text = text.lstrip()
        parts.append(("text", text))
        body = m.group(2)
        if body.strip().startswith("/*"):
            if not body.strip().endswith("*/"):
                raise TemplateError("unclosed comment")
        else:
            parts.append(("action", body))
        if m.group(3):
            parts.append(("trim-next", ""))
        pos = m.end()
    rest = source[pos:]
    if parts and parts[-1][0] == "trim-next":
        parts.pop()
        rest = rest.lstrip()
    if "{{" in rest:
        raise TemplateError("unclosed action ('{{' without '}}')")
    parts.append(("text", rest))
    return [p for p in parts if p != ("text", "")]


# --- parsing into a tree ---------------------------------------------------------------------

def _parse(parts: list[tuple[str, str]]) -> list[Any]:
    """Nodes: ("text", s) | ("out", tokens) | ("if", [(tokens|None, body)...]) | ("range"|"with", tokens, body, else)."""
    pos = 0

    def block(stop: tuple[str, ...]) -> tuple[list[Any], str, list[Any]]:
        nonlocal pos
        nodes: list[Any] = []
        while pos < len(parts):
            kind, body = parts[pos]
            pos += 1
            if kind == "text":
                nodes.append(("text", body))
                continue
            toks = _tokens(body)
            if not toks:
                raise TemplateError("empty action {{ }}")
            head = toks[0][1] if toks[0][0] == "word" else None
            if head in ("end", "else"):
                if head not in stop and not (head == "else" and "else" in stop):
                    raise TemplateError(f"unexpected {{{{ {head} }}}}")
                return nodes, head, toks[1:]
            if head == "if":
                branches: list[tuple[Any, Any]] = [(toks[1:], None)]
                body_nodes, ended, rest = block(("end", "else"))
                branches[0] = (toks[1:], body_nodes)
                while ended == "else":
                    cond = rest[1:] if rest and rest[0] == ("word", "if") else None
                    body_nodes, ended, rest = block(("end", "else"))
                    branches.append((cond, body_nodes))
                    if cond is None and ended == "else":
                        raise TemplateError("{{ else }} after {{ else }}")
                nodes.append(("if", branches))
            elif head in ("range", "with"):
                body_nodes, ended, rest = block(("end", "else"))
                otherwise: list[Any] = []
                if ended == "else":
                    otherwise, ended, rest = block(("end",))
                nodes.append((head, toks[1:], body_nodes, otherwise))
            elif head in ("define", "template", "block"):
                raise TemplateError(f"{{{{ {head} }}}} is not supported in script lines")
            else:
                nodes.append(("out", toks))
        if stop:
            raise TemplateError("missing {{ end }}")
        return nodes, "", []

    nodes, _, _ = block(())
    return nodes


# --- evaluation ------------------------------------------------------------------------------

def _truth(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0
    if isinstance(value, (str, list, tuple, dict)):
        return len(value) > 0
    return True


def _lookup(value: Any, name: str, path: str) -> Any:
    if isinstance(value, dict):
        if name in value:
            return value[name]
        lowered = name.lower()
        for key in value:
            if isinstance(key, str) and key.lower() == lowered:
                return value[key]
        return None
    if value is None:
        raise TemplateError(f"{path}: nil value has no field '{name}'")
    raise TemplateError(f"{path}: can't evaluate field '{name}' of {type(value).__name__}")


def _field(token: str, dot: Any, root: Any) -> Any:
    if token == ".":
        return dot
    if token.startswith("$"):
        var, _, rest = token.partition(".")
        if var != "$":
            raise TemplateError(f"undefined variable {var}")
        value, names = root, [n for n in rest.split(".") if n] if rest else []
    else:
        value, names = dot, token[1:].split(".")
    path = ""
    for name in names:
        path += "." + name
        value = _lookup(value, name, path)
    return value


def _unquote(token: str) -> str:
    import ast

    try:
        return str(ast.literal_eval(token))
    except (ValueError, SyntaxError):
        raise TemplateError(f"bad string literal {token}") from None


def _format(value: Any) -> str:
    """Go's %v."""
    if value is None:
        return NO_VALUE
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        return f"{value:g}" if not value.is_integer() or abs(value) >= 1e21 else str(int(value))
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(_format(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{_format(k)}:{_format(value[k])}" for k in sorted(value, key=str)) + "]"
    return str(value)


def _printf(fmt: str, *args: Any) -> str:
    out, i, n = [], 0, 0
    while i < len(fmt):
        c = fmt[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        i += 1
        if i >= len(fmt):
            out.append("%!(NOVERB)")
            break
        verb = fmt[i]
        i += 1
        if verb == "%":
            out.append("%")
            continue
        if n >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[n]
        n += 1
        if verb == "q":
            out.append('"' + str(arg).replace("\\", "\\\\").replace('"', '\\"') + '"')
        elif verb == "d" and isinstance(arg, int):
            out.append(str(arg))
        else:
            out.append(_format(arg))
    return "".join(out)


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, (list, tuple)) and isinstance(key, int):
            if not 0 <= key < len(value):
                raise TemplateError(f"index {key} out of range")
            value = value[key]
        else:
            raise TemplateError(f"can't index {type(value).__name__}")
    return value


def _compare(op: str, a: Any, b: Any) -> bool:
    try:
        return bool({"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op])
    except TypeError:
        raise TemplateError(f"{op}: incompatible types for comparison") from None


def _len(value: Any) -> int:
    if not isinstance(value, (str, list, tuple, dict)):
        raise TemplateError(f"len of {type(value).__name__}")
    return len(value)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "not": lambda a: not _truth(a),
    "eq": lambda a, *bs: any(a == b for b in bs),
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: _compare("lt", a, b),
    "le": lambda a, b: _compare("le", a, b),
    "gt": lambda a, b: _compare("gt", a, b),
    "ge": lambda a, b: _compare("ge", a, b),
    "len": _len,
    "index": _index,
    "print": lambda *a: "".join(_format(x) for x in a),
    "println": lambda *a: " ".join(_format(x) for x in a) + "\n",
    "printf": lambda fmt, *a: _printf(str(fmt), *a),
}


def _operand(tok: tuple[str, str], dot: Any, root: Any) -> Any:
    kind, text = tok
    if kind == "field":
        return _field(text, dot, root)
    if kind == "str":
        return _unquote(text)
    if kind == "raw":
        return text[1:-1]
    if kind == "num":
        return float(text) if any(c in text for c in ".eE") else int(text)
    if kind == "word" and text in ("true", "false"):
        return text == "true"
    if kind == "word" and text == "nil":
        return None
    raise TemplateError(f"unexpected {text!r}")


def _command(toks: list[tuple[str, str]], dot: Any, root: Any, piped: tuple[Any, ...] = ()) -> Any:
    args, i = [], 0
    while i < len(toks):
        if toks[i][0] == "lparen":
            depth, j = 1, i + 1
            while j < len(toks) and depth:
                depth += {"lparen": 1, "rparen": -1}.get(toks[j][0], 0)
                j += 1
            if depth:
                raise TemplateError("unclosed '('")
            args.append(("value", _pipeline(toks[i + 1:j - 1], dot, root)))
            i = j
        else:
            args.append(("tok", toks[i]))
            i += 1
    if not args:
        raise TemplateError("empty command")
    head = args[0]
    if head[0] == "tok" and head[1][0] == "word" and head[1][1] not in ("true", "false", "nil"):
        name = head[1][1]
        values = [a[1] if a[0] == "value" else _operand(a[1], dot, root) for a in args[1:]]
        if name in ("and", "or"):
            values += list(piped)
            result = values[0] if values else None
            for v in values:
                result = v
                if _truth(v) != (name == "and"):
                    break
            return result
        if name not in FUNCTIONS:
            raise TemplateError(f'function "{name}" not defined')
        try:
            return FUNCTIONS[name](*values, *piped)
        except TypeError:
            raise TemplateError(f"wrong number of arguments for {name}") from None
    if len(args) > 1 or piped:
        raise TemplateError("can't give arguments to a non-function")
    return head[1] if head[0] == "value" else _operand(head[1], dot, root)


def _pipeline(toks: list[tuple[str, str]], dot: Any, root: Any) -> Any:
    commands: list[list[tuple[str, str]]] = [[]]
    depth = 0
    for tok in toks:
        depth += {"lparen": 1, "rparen": -1}.get(tok[0], 0)
        if tok[0] == "pipe" and depth == 0:
            commands.append([])
        else:
            commands[-1].append(tok)
    if any(not c for c in commands):
        raise TemplateError("missing command in pipeline")
    value = _command(commands[0], dot, root)
    for command in commands[1:]:
        value = _command(command, dot, root, (value,))
    return value


def _render(nodes: list[Any], dot: Any, root: Any, out: list[str]) -> None:
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "out":
            out.append(_format(_pipeline(node[1], dot, root)))
        elif kind == "if":
            for cond, body in node[1]:
                if cond is None or _truth(_pipeline(cond, dot, root)):
                    _render(body, dot, root, out)
                    break
        elif kind == "with":
            value = _pipeline(node[1], dot, root)
            _render(node[2] if _truth(value) else node[3], value if _truth(value) else dot, root, out)
        elif kind == "range":
            value = _pipeline(node[1], dot, root)
            items = [value[k] for k in sorted(value, key=str)] if isinstance(value, dict) else value
            if items is None:
                items = []
            if not isinstance(items, (list, tuple)):
                raise TemplateError(f"range can't iterate over {_format(value)}")
            if not items:
                _render(node[3], dot, root, out)
            for item in items:
                _render(node[2], item, root, out)


_NOT_FUNCTIONS = {"true", "false", "nil", "and", "or", "if", "else"}


def check(source: str) -> None:
    """Raise TemplateError for what Go's parser refuses: bad syntax, and a function that is not defined
    (`{{ block.config.x }}`, Jinja's spelling, names a function `block`)."""

    def words(tokens: list[tuple[str, str]]) -> None:
        for kind, text in tokens or ():
            if kind == "word" and text not in _NOT_FUNCTIONS and text not in FUNCTIONS:
                raise TemplateError(f'function "{text}" not defined')

    def walk(nodes: list[Any]) -> None:
        for node in nodes:
            if node[0] == "out":
                words(node[1])
            elif node[0] == "if":
                for cond, body in node[1]:
                    words(cond)
                    walk(body)
            elif node[0] in ("range", "with"):
                words(node[1])
                walk(node[2])
                walk(node[3])

    walk(parse(source))


def parse(source: str) -> list[Any]:
    """The template's tree; raises TemplateError on a syntax error."""
    return _parse(_split(source)) if "{{" in source else [("text", source)]


def render(source: str, data: Any) -> str:
    """`source` rendered over `data`; raises TemplateError."""
    if "{{" not in source:
        return source
    out: list[str] = []
    _render(_parse(_split(source)), data, data, out)
    return "".join(out)


def template_message(what: str, exc: Exception) -> str:
    hint = ""
    if "not defined" in str(exc) or "not supported" in str(exc):
        hint = " (script lines are Go templates: write {{ .block.config.NAME }}, with the leading dot)"
    return f"{what}: template: {exc}{hint}"
