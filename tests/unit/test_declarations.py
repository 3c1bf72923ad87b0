"""The declarations (config/declarations.py) are what the checks accept: schema.py writes no allow-list
or type check of its own, and the checks and the JSON Schema made from the declarations give the same
verdict on values at the edges."""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from polycrate.config import declarations as decl
from polycrate.config import schema
from polycrate.config.declarations import FILES, SECTIONS, allowed_keys, reachable
from polycrate.config.validate import validate_name
from polycrate.errors import ConfigError

SCHEMA_SOURCE = Path(inspect.getfile(schema)).read_text(encoding="utf-8")
SCHEMA_TREE = ast.parse(SCHEMA_SOURCE)


def test_schema_py_writes_no_allow_list_and_no_type_check_of_its_own():
    """The keys, types and bounds come from the declarations (config/validate.py checks them): schema.py
    has no key list, no `_check_keys`, no `allowed_keys`, and tests the type of a value only where one
    field takes several forms (a prompt's text or mapping, a schedule's expression or mapping ...)."""
    calls = {n.func.id for n in ast.walk(SCHEMA_TREE) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert not calls & {"_check_keys", "allowed_keys", "_expect_map", "_expect_list", "_number"}
    assert "check_file" in calls  # the declared check runs first
    words = " ".join(n.value for n in ast.walk(SCHEMA_TREE) if isinstance(n, ast.Constant) and isinstance(n.value, str))
    for type_words in ("must be a list", "must be a mapping", "true or false", "whole number", "must be a string"):
        assert type_words not in words, type_words


# Sections whose keys are checked outside schema.py, with allowed_keys in their own parser.
OTHER_CHECKS = {"launch": "polycrate.config.launch_params", "launch_variable": "polycrate.config.launch_params"}


def test_sections_checked_elsewhere_use_allowed_keys():
    import importlib

    for section, module in OTHER_CHECKS.items():
        source = Path(inspect.getfile(importlib.import_module(module))).read_text(encoding="utf-8")
        assert f'allowed_keys("{section}")' in source, (section, module)


def test_every_section_is_reached_from_a_file():
    assert set(SECTIONS) == {s.name for file in FILES for s in reachable(file)}  # nothing declared unused


def test_allowed_keys_of_an_unknown_section_is_an_error():
    with pytest.raises(KeyError):
        allowed_keys("workflows")


@pytest.mark.parametrize("name", ["a", "A1", "web-01", "a.b_c", "x" * 63, "a_", "-a", "a-", "a.", "", "x" * 64,
                                  "a b", "é", "1", "a..b", "_a", "a/b", "ayedo/k8s/harbor", "a/", "/a", "a//b",
                                  "a/b-", "a/.b", "a/" + "x" * 64, "web\n", "a/b\n", "\nweb"])
def test_the_name_pattern_is_validate_name(name):
    for what, pattern in (("workflow", decl.NAME_PATTERN), ("block", decl.BLOCK_NAME_PATTERN)):
        try:
            validate_name(name, what, "workspace.poly", None)
            accepted = True
        except ConfigError:
            accepted = False
        assert bool(re.search(decl.strict_end(pattern), name)) is accepted, (what, name)
        assert not (name.endswith("\n") and accepted)  # a trailing newline is never part of a name


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
    ("extramounts: ['data:/data:ro', '/srv:/srv']\n", True), ("extramounts: [data]\n", False),
    ("extramounts: ['data:/data:rx']\n", False), ("config: {sshprivatekey: keys/id_ed25519}\n", True),
    ("config: {sshprivatekey: ' '}\n", False),
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
