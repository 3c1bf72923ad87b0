"""The declarations (config/declarations.py) say what schema.py's checks accept: the same keys in every
section, the same constants, and the same verdict on values at the edges."""
from __future__ import annotations

import ast
import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from polycrate.config import declarations as decl
from polycrate.config import schema
from polycrate.config.declarations import FILES, SECTIONS, allowed_keys, reachable
from polycrate.errors import ConfigError

SCHEMA_SOURCE = Path(inspect.getfile(schema)).read_text(encoding="utf-8")
SCHEMA_TREE = ast.parse(SCHEMA_SOURCE)


@dataclass(frozen=True)
class Check:
    """A `_check_keys(mapping, KEYS, what, path)` call in `function` (`what`: its third argument when the
    function has several calls; `names`: values of the local names KEYS uses, such as `kind`)."""

    function: str
    what: str | None = None
    names: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Literal:
    """A tuple or set of key names written in `function` (a key check not made with _check_keys)."""

    function: str
    index: int = 0


@dataclass(frozen=True)
class Constant:
    """A module-level constant of schema.py."""

    name: str


# Where schema.py keeps the allow-list of each declared section. When schema.py's allow-lists become
# `allowed_keys(...)`, an entry here is the only thing to change (see the report of branch schema-decl).
SCHEMA_LISTS: dict[str | tuple[str, ...], Check | Literal | Constant] = {
    "workspace": Check("read_workspace_file"),
    "block_entry": Check("parse_block_entry"),
    "workflow": Check("parse_workflow"),
    "step": Check("parse_step"),
    "schedule": Constant("SCHEDULE_KEYS"),
    "history": Check("parse_run_settings", "history"),
    "webhook": Check("parse_run_settings", "webhook"),
    "metrics": Check("parse_run_settings", "metrics"),
    **{f"notification.{kind}": Check("parse_notification", names={"kind": kind})
       for kind in decl.NOTIFICATION_TYPES},
    "encryption": Check("check_recipients"),
    "workspace_file": Check("_workspace_file"),
    "registry": Literal("parse_registries"),  # `if key not in ("mirror", "insecure")`
    "image": Literal("parse_toolchain"),  # `set(image) <= {"reference", "version"}`
    ("secret_ref.secret", "secret_ref.env"): Literal("parse_secret_ref"),  # one key of ("secret", "env")
    "block": Check("parse_block_definition"),
    "action": Check("parse_action"),
    "file_from": Check("parse_file_from"),
    "events": Check("parse_go_workspace", "events"),
    "sync": Check("parse_go_workspace", "sync"),
    "sync_remote": Check("parse_go_workspace", "sync.remote"),
    "sync_branch": Check("parse_go_workspace", "sync.remote.branch"),
}


def _function(name: str, tree: ast.Module = SCHEMA_TREE) -> ast.FunctionDef:
    found = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name]
    assert len(found) == 1, f"schema.py has {len(found)} functions named {name}"
    return found[0]


def _check_calls(function: ast.FunctionDef) -> list[ast.Call]:
    return [n for n in ast.walk(function) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
            and n.func.id == "_check_keys"]


def _what(call: ast.Call) -> str | None:
    arg = call.args[2] if len(call.args) > 2 else None
    return arg.value if isinstance(arg, ast.Constant) else None


def _evaluate(node: ast.expr, names: dict[str, Any]) -> Any:
    """The value of an allow-list expression: a literal, a constant of schema.py, `A | B`, `A[kind]`."""
    if isinstance(node, (ast.Set, ast.Tuple, ast.List)):
        return set(ast.literal_eval(node))
    if isinstance(node, ast.Name):
        return names[node.id] if node.id in names else getattr(schema, node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return set(_evaluate(node.left, names)) | set(_evaluate(node.right, names))
    if isinstance(node, ast.Subscript):
        return _evaluate(node.value, names)[_evaluate(node.slice, names)]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("allowed_keys",
                                                                                          "declared_keys"):
        return allowed_keys(_text(node.args[0], names))  # after the swap
    raise AssertionError(f"schema.py line {node.lineno}: an allow-list this test cannot read: {ast.unparse(node)}")


def _text(node: ast.expr, names: dict[str, Any]) -> str:
    """A section name as written: "step", or f"notification.{kind}" with `kind` from `names`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_text(value, names) for value in node.values)
    if isinstance(node, ast.FormattedValue):
        return str(_evaluate(node.value, names))
    raise AssertionError(f"schema.py line {node.lineno}: a section name this test cannot read: {ast.unparse(node)}")


def _schema_keys(where: Check | Literal | Constant, tree: ast.Module = SCHEMA_TREE) -> set[str]:
    if isinstance(where, Constant):
        return set(getattr(schema, where.name))
    function = _function(where.function, tree)
    if isinstance(where, Check):
        calls = [c for c in _check_calls(function) if where.what is None or _what(c) == where.what]
        assert len(calls) == 1, f"{where}: {len(calls)} matching _check_keys calls"
        return set(_evaluate(calls[0].args[1], where.names))
    uses = [n for n in ast.walk(function) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
            and n.func.id in ("allowed_keys", "declared_keys")]
    if uses:  # after the swap: `key not in allowed_keys("registry")`
        return set().union(*(allowed_keys(ast.literal_eval(n.args[0])) for n in uses))
    literals = [n for n in ast.walk(function) if isinstance(n, (ast.Set, ast.Tuple))
                and n.elts and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in n.elts)]
    literals.sort(key=lambda n: (n.lineno, n.col_offset))
    return set(ast.literal_eval(literals[where.index]))


@pytest.mark.parametrize("sections", list(SCHEMA_LISTS), ids=str)
def test_declared_keys_equal_schema_py_allow_list(sections):
    names = sections if isinstance(sections, tuple) else (sections,)
    declared = set().union(*(allowed_keys(name) for name in names))
    assert declared == _schema_keys(SCHEMA_LISTS[sections])


def test_every_check_keys_call_of_schema_py_has_its_declared_section():
    """A _check_keys call added to schema.py without a declaration (and an entry above) fails here."""
    calls = {(f.name, _what(c)) for f in ast.walk(SCHEMA_TREE) if isinstance(f, ast.FunctionDef)
             for c in _check_calls(f)}
    claimed = set()
    for where in SCHEMA_LISTS.values():
        if isinstance(where, Check):
            function = _function(where.function)
            claimed |= {(where.function, _what(c)) for c in _check_calls(function)
                        if where.what is None or _what(c) == where.what}
    assert calls == claimed
    assert len(calls) >= 13  # the test reads schema.py (it found its calls)


# Sections whose keys are checked outside schema.py, with allowed_keys in their own parser.
OTHER_CHECKS = {"launch": "polycrate.config.launch_params", "launch_variable": "polycrate.config.launch_params"}


def test_sections_checked_elsewhere_use_allowed_keys():
    import importlib

    for section, module in OTHER_CHECKS.items():
        source = Path(inspect.getfile(importlib.import_module(module))).read_text(encoding="utf-8")
        assert f'allowed_keys("{section}")' in source, (section, module)


def test_every_closed_section_is_compared():
    """Each section that refuses unknown keys is one schema.py checks: a declaration cannot refuse
    more than the checks do."""
    compared = {name for key in SCHEMA_LISTS for name in (key if isinstance(key, tuple) else (key,))}
    compared |= set(OTHER_CHECKS)
    closed = {s.name for file in FILES for s in reachable(file) if s.closed}
    assert closed == compared
    assert set(SECTIONS) == {s.name for file in FILES for s in reachable(file)}  # nothing declared unused


def test_a_key_schema_py_gains_without_a_declaration_fails_the_comparison(monkeypatch):
    monkeypatch.setattr(schema, "SCHEDULE_KEYS", (*schema.SCHEDULE_KEYS, "jitter"))
    assert allowed_keys("schedule") != _schema_keys(SCHEMA_LISTS["schedule"])
    keys = ", ".join(repr(k) for k in sorted(allowed_keys("step") | {"needs"}))
    edited = ast.parse(f"def parse_step(mapping, path):\n    _check_keys(mapping, {{{keys}}}, 'workflow step', path)\n")
    assert _schema_keys(SCHEMA_LISTS["step"], edited) - allowed_keys("step") == {"needs"}


def test_allowed_keys_of_an_unknown_section_is_an_error():
    with pytest.raises(KeyError):
        allowed_keys("workflows")


def test_constants_equal_schema_py():
    assert decl.WORD_PATTERN == schema.NAME_RE.pattern
    assert decl.ACTION_TYPES == schema.ACTION_TYPES
    assert decl.WEBHOOK_EVENTS == schema.WEBHOOK_EVENTS
    assert decl.NOTIFICATION_TYPES == schema.NOTIFICATION_TYPES
    assert decl.SMTP_SECURITY == tuple(schema.SMTP_SECURITY)
    assert (decl.MAX_SECONDS, decl.MAX_DAYS, decl.MAX_NOTIFY_TIMEOUT) == (
        schema.MAX_SECONDS, schema.MAX_DAYS, schema.MAX_NOTIFY_TIMEOUT)
    assert {"retries": decl.MAX_RETRIES, "keep_runs": decl.MAX_KEEP_RUNS} == schema.MAX_COUNT
    assert decl.LABEL_KEY_MAX == schema.LABEL_KEY_MAX
    assert decl._USER == schema._USER_RE.pattern


@pytest.mark.parametrize("name", ["a", "A1", "web-01", "a.b_c", "x" * 63, "a_", "-a", "a-", "a.", "", "x" * 64,
                                  "a b", "é", "1", "a..b", "_a", "a/b", "ayedo/k8s/harbor", "a/", "/a", "a//b",
                                  "a/b-", "a/.b", "a/" + "x" * 64])
def test_the_name_pattern_is_validate_name(name):
    for what, pattern in (("workflow", decl.NAME_PATTERN), ("block", decl.BLOCK_NAME_PATTERN)):
        try:
            schema.validate_name(name, what, "workspace.poly", None)
            accepted = True
        except ConfigError:
            accepted = False
        assert bool(re.search(pattern, name)) is accepted, (what, name)


# --- the same verdict: schema.py's checks and the JSON Schema made from the declarations ----------------

_STEP = "workflows:\n- name: w\n  steps:\n  - {name: s, block: b, action: a%s}\n"
_EMAIL = "notifications:\n- {name: n, type: email, host: smtp.example.org, from: ops@example.org%s}\n"
_TO = ", to: me@example.org"
WORKSPACE_CASES = [
    (_STEP % ", retries: 1000", True), (_STEP % ", retries: 1001", False), (_STEP % ", retries: 1.5", False),
    (_STEP % ", timeout: 0", False), (_STEP % ", timeout: 0.5", True), (_STEP % ", retry_delay: -1", False),
    (_STEP % ", allow_failure: null", False), (_STEP % ", allow_failure: true", True),
    (_STEP % ", description: [1]", True), (_STEP % ", acton: a", False), (_STEP % ", alias: [x-]", True),
    (_STEP % ", alias: ['a b']", False), (_STEP % ", prompt: {message: 'sure?'}", True),
    (_STEP % ", prompt: {}", False), ("workflows:\n- name: w\n  steps:\n  - {name: s, block: b-, action: a}\n", False),
    ("workflows:\n- {name: w, steps: []}\n", True), ("workflows:\n- {name: w}\n", True),  # as Polycrate: refused when run
    ("labels: {'a b': x}\n", False), ("labels: {app.kubernetes.io/part-of: x, n: 1, e: null, t: true}\n", True),
    ("labels: {k: [1]}\n", False), ("labels: {'': x}\n", False), ("labels: {k: \"a\\nb\"}\n", False),
    ("dependencies: [registry.acme-corp.com/acme/infra/linux-maintenance:0.1.0, localhost:5000/a/b]\n", True),
    ("dependencies: [linux-maintenance]\n", False), ("dependencies: ['registry.x.io/a/b:']\n", False),
    ("dependencies: [registry.x.io/a/b, registry.x.io/a/b]\n", False), ("dependencies: [registry.x.io/A/b]\n", False),
    ("history: {keep_runs: 0}\n", False), ("history: {keep_runs: 5, keep_days: 0.5}\n", True),
    ("history: {keep_days: 36601}\n", False), ("history: {keep_weeks: 1}\n", False), ("history:\n", True),
    ("metrics: {enabled: null}\n", False), ("metrics: {path: m.prom, enabled: false}\n", True),
    ("registries: {r: {mirror: 'localhost:5000', insecure: true}}\n", True),
    ("registries: {r: {mirrors: x}}\n", False), ("registries: {r: null}\n", False),
    ("registries: {r: {mirror: ' '}}\n", False), ("registries: [r]\n", False),
    ("encryption: {recipients: [age1abc]}\n", True), ("encryption: {recipients: [AGE-SECRET-KEY-1X]}\n", False),
    ("encryption:\n", True), ("encryption: {recipients: [age1abc], identity: x}\n", False),
    ("inventory: {filename: ../x.yml}\n", False), ("inventory: {filename: hosts/x.yml}\n", True),
    ("inventory: hosts.yml\n", False), ("kubeconfig: {filename: /etc/k}\n", False),
    ("config: {runtime: container, engine: docker, image: {reference: x, version: 1}, foo: 1}\n", True),
    ("config: {runtime: vm}\n", False), ("config: {image: ''}\n", False), ("config: {image: {ref: x}}\n", False),
    ("blocks:\n- {name: b, from: 'reg.io/a/b:'}\n", False), ("blocks:\n- {name: b, from: ' '}\n", False),
    ("blocks:\n- {name: b, from: reg.io/a/b:1, inventory: other, kubeconfig: {filename: k.yml}}\n", True),
    ("blocks:\n- {name: b, inventory: {from: o, user: y}}\n", False), ("blocks:\n- {name: b, configs: {}}\n", False),
    ("workflows:\n- {name: w, steps: [{name: s, block: b, action: a}], schedule: '0 2 * * *'}\n", True),
    (("workflows:\n- name: w\n  steps: [{name: s, block: b, action: a}]\n"
      "  schedule: {cron: '0 2 * * *', timeout: 30m, user: 0, group: adm, persistent: false}\n"), True),
    ("workflows:\n- {name: w, steps: [{name: s, block: b, action: a}], schedule: {cron: '0 2 * * *', jitter: 1}}\n",
     False),
    ("workflows:\n- {name: w, steps: [{name: s, block: b, action: a}], schedule: {cron: '0 2 * * *', log_file: x}}\n",
     False),
    ("workflows:\n- {name: w, steps: [{name: s, block: b, action: a}], allow_failure: null}\n", False),
    ("workflows:\n- {name: w, steps: [{name: s, block: b, action: a}], schedule: {persistent: true}}\n", False),
    (("workflows:\n- {name: w, steps: [{name: s, block: b, action: a}], schedule: {cron: '0 2 * * *', "
      "on_calendar: daily}}\n"), False),
    ("webhooks:\n- {url: 'https://x', on: [success, failure], headers: {X-A: 1}}\n", True),
    ("webhooks:\n- {url: 'https://x', on: []}\n", False), ("webhooks:\n- {url: 'ftp://x'}\n", False),
    ("webhooks:\n- {url: 'https://x', on: sometimes}\n", False), ("webhooks:\n- {url: 'https://x', to: y}\n", False),
    (_EMAIL % _TO, True), (_EMAIL % (_TO + ", port: 0"), False), (_EMAIL % (_TO + ", timeout: 301"), False),
    (_EMAIL % (_TO + ", url: {env: X}"), False),
    (_EMAIL % (_TO + ", username: u, password: {env: SMTP_PASSWORD}"), True),
    (_EMAIL % (_TO + ", username: u, password: {secret: notify.smtp}, security: tls, port: 465, ca_file: c.pem"),
     True),
    (_EMAIL % (_TO + ", username: u, password: {secret: notify..smtp}"), False),
    (_EMAIL % (_TO + ", username: u, password: hunter2"), False), (_EMAIL % ", to: []", False), (_EMAIL % "", False),
    (_EMAIL % ", to: [a@b.c, 'd e']", False), (_EMAIL % ", security: ssl", False),
    ("notifications:\n- {name: n, type: slack, url: {env: SLACK_URL}}\n", True),
    ("notifications:\n- {name: n, type: teams, url: 'https://hooks'}\n", False),
    ("notifications:\n- {name: n, type: slack, url: {env: 1X}}\n", False),
    ("notifications:\n- {name: n, type: slack, url: {env: X, secret: y}}\n", False),
    ("notifications:\n- {name: n, type: slack, url: {env: X}, room: r}\n", False),
    ("notifications:\n- {name: n, type: irc, url: {env: X}}\n", False),
    ("notifications:\n- {name: n, type: matrix, homeserver: 'https://m.org/', room: '!r:m.org', token: {env: T}}\n",
     True),
    ("notifications:\n- {name: n, type: matrix, homeserver: 'https://m.org', room: '#r:m.org', token: {env: T}}\n",
     False),
    ("notifications:\n- {name: n, type: matrix, homeserver: 'https://', room: '!r:m.org', token: {env: T}}\n",
     False),
    ("organization: 1\ndescription: null\nversion: [any]\n", True), ("nam: ws\n", False),
]

BLOCK_CASES = [
    ("kind: ''\n", True), ("kind: k8sapp\n", True), ("kind: two words\n", False), ("version: 1.0\n", True),
    ("flavor: [x]\ntype: 1\n", True), ("from: 'reg.io/a:'\n", False), ("template: null\n", False),
    ("inventory: {from: o, filename: inv.yml}\n", True), ("inventory: {filename: /x}\n", False),
    ("actions:\n- {name: b, script: echo, interactive: null}\n", False),
    ("actions:\n- {name: b, type: shell, script: [echo]}\n", False),
    ("actions:\n- {name: b, playbok: x.yml, script: [echo]}\n", False),
    ("actions:\n- {name: b, playbook: x.yml, labels: {a: b}, alias: [c], description: 2}\n", True),
    ("actions:\n- {name: b, script: []}\n", False), ("actions:\n- {name: b, description: x}\n", False),
    ("actions:\n- {name: b, script: [echo, 1]}\n", False),
    ("configs: {}\n", False),
]


def _verdicts(tmp_path: Path, file: str, text: str) -> tuple[bool, bool]:
    from jsonschema import Draft202012Validator

    from polycrate.config.schema_export import json_schema
    from polycrate.config.yamlfile import load_yaml, plain

    path = tmp_path / "blocks" / "b" / file if file == "block.poly" else tmp_path / file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    try:
        if file == "block.poly":
            schema.read_block_file(path, tmp_path / "blocks")
        else:
            schema.read_workspace_file(tmp_path)
        checks = True
    except ConfigError:
        checks = False
    return checks, Draft202012Validator(json_schema(file)).is_valid(plain(load_yaml(path)))


@pytest.mark.parametrize(("text", "accepted"), WORKSPACE_CASES, ids=[t for t, _ in WORKSPACE_CASES])
def test_workspace_checks_and_json_schema_agree(tmp_path, text, accepted):
    text = text if text.startswith("nam:") else "name: ws\n" + text
    assert _verdicts(tmp_path, "workspace.poly", text) == (accepted, accepted)


@pytest.mark.parametrize(("text", "accepted"), BLOCK_CASES, ids=[t for t, _ in BLOCK_CASES])
def test_block_checks_and_json_schema_agree(tmp_path, text, accepted):
    text = "name: b\n" + text + ("" if "actions:" in text else "actions:\n- {name: a, script: [echo]}\n")
    assert _verdicts(tmp_path, "block.poly", text) == (accepted, accepted)


SECRETS_CASES = [
    ("config: {a: 1}\nblocks:\n- {name: b, config: {x: 1}}\n", True), ("other: 1\nblocks:\n- {name: b, extra: 1}\n", True),
    ("blocks:\n- {name: b}\nconfig:\n", True), ("blocks: {b: 1}\n", False), ("blocks:\n- {config: {}}\n", False),
    ("blocks:\n- {name: 1}\n", False), ("blocks:\n- {name: b, config: [1]}\n", False), ("config: [1]\n", False),
    ("blocks:\n- b\n", False),
]


@pytest.mark.parametrize(("text", "accepted"), SECRETS_CASES, ids=[t for t, _ in SECRETS_CASES])
def test_secrets_checks_and_json_schema_agree(text, accepted):
    from jsonschema import Draft202012Validator

    from polycrate.config.schema_export import json_schema
    from polycrate.config.yamlfile import parse_yaml, plain

    try:
        schema.parse_secrets(text, "secrets.poly")
        checks = True
    except ConfigError:
        checks = False
    valid = Draft202012Validator(json_schema("secrets.poly")).is_valid(plain(parse_yaml(text, "secrets.poly")))
    assert (checks, valid) == (accepted, accepted)
