"""What the server accepts from HTTP, as pure rules: host patterns, launch bodies, unsafe values, the audit's
bounds and budget, the login backoff (on a real SQLite state in a temporary folder)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from polycrate.errors import PolycrateError
from polycrate.runtime.ansible_options import (UnsafeText, _load_file, as_unsafe, check_host_pattern,
                                               dump_unsafe_yaml, redacted_extra_vars)
from polycrate.server.launch import FIELDS, LaunchRefused, command, launch_fields, parse_launch
from polycrate.server.state import (AUDIT_ANONYMOUS_PER_MINUTE, LOGIN_FREE_FAILURES, Principal, ServerState,
                                    bounded)


@pytest.mark.parametrize("pattern", [
    "localhost", "web*", "web01,db01", "webservers:&staging", "all:!db*", "web[0:3]", "~web\\d+".replace("\\d", "x"),
    "db01.acme-corp.com", "webservers:!web02,localhost",
])
def test_host_patterns_of_ansibles_grammar_pass_unchanged(pattern):
    assert check_host_pattern(pattern) == pattern


@pytest.mark.parametrize("pattern, why", [
    ("@/etc/shadow", "'@'"), ("localhost,@/etc/shadow", "'@'"), ("localhost:@/etc/shadow", "'@'"),
    ("localhost, @hosts.txt", "'@'"), ("web@x", "'@'"), ("/etc/hosts", "path"), ("localhost,../inventory", "path"),
    ("local\x00host", "control"), ("a\nb", "control"), ("x" * 1025, "at most"), ("a b", "not a host pattern"),
    ("{{ lookup('pipe','id') }}", "not a host pattern"), ("$(id)", "not a host pattern"), (",", "empty"),
])
def test_host_patterns_that_read_files_or_name_paths_are_refused(pattern, why):
    with pytest.raises(PolycrateError, match=why):
        check_host_pattern(pattern)


def test_a_limit_that_is_not_text_is_refused():
    for value in (5, ["localhost"], {"a": 1}):
        with pytest.raises(PolycrateError, match="as text"):
            check_host_pattern(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("body, field", [
    ({"limit": 5}, "limit"), ({"limit": ["a"]}, "limit"), ({"step": ["a"]}, "step"), ({"step": 3}, "step"),
    ({"extra_vars": 5}, "extra_vars"), ({"extra_vars": [5]}, "extra_vars"), ({"extra_vars": ["@/etc/shadow"]}, "@file"),
    ({"extra_vars": {"1x": "a"}}, "variable name"), ({"extra_vars": {"a": [[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]}},
                                                    "nested"),
    ({"confirm": "false"}, "confirm"), ({"check": "no"}, "check"), ({"check": 1}, "check"), ({"resume": "yes"}, "resume"),
    ({"limit": "local\x00host"}, "control"), ({"limit": "x" * 1_000_000}, "limit"), ({"tags": 5}, "tags"),
    ({"tags": [["a"]]}, "tags"), ({"step": "../x"}, "step"), ({"bogus": 1}, "unknown field"),
    ({"resume": True, "step": "a"}, "do not combine"),
])
def test_every_launch_field_is_type_checked(body, field):
    with pytest.raises(LaunchRefused) as caught:
        parse_launch(body)
    assert field in caught.value.message and caught.value.status == 400


def test_a_launch_body_that_is_not_an_object_is_refused():
    for body in ([], "x", 5, None):
        with pytest.raises(LaunchRefused, match="JSON object"):
            parse_launch(body)


def test_booleans_only_from_real_booleans():
    options, confirm = parse_launch({"check": True, "confirm": False, "resume": None})
    assert options.check is True and confirm is False and options.resume is False
    assert parse_launch({"extra_vars": ["a=1 b='two words'", {"c": {"d": [1]}}]})[0].extra_vars == {
        "a": "1", "b": "two words", "c": {"d": [1]}}


def test_launch_values_become_an_unsafe_vars_file_and_never_a_path_of_the_operators(tmp_path):
    payload = "{{ lookup('pipe','id > /tmp/pwned') }}/usr/bin/python3"
    text = dump_unsafe_yaml(as_unsafe({"ansible_python_interpreter": payload, "n": 3, "l": ["{{ x }}"]}))
    assert "!unsafe" in text and yaml.safe_load(text.replace("!unsafe ", "")) == {
        "ansible_python_interpreter": payload, "l": ["{{ x }}"], "n": 3}
    path = tmp_path / "v.yml"
    path.write_text(text)
    loaded = _load_file(path)  # polycrate's own reading of the file keeps the mark
    assert loaded["ansible_python_interpreter"] == payload and isinstance(loaded["ansible_python_interpreter"], UnsafeText)
    options, _ = parse_launch({"limit": "localhost", "tags": ["a", "b"], "check": True})
    argv = command(Path("/ws"), "wf", options, tmp_path / "v.yml")
    assert argv[-6:] == ["--limit", "localhost", "--tags", "a,b", "--extra-vars", f"@{tmp_path / 'v.yml'}"]


def test_extra_vars_are_shown_by_name_only():
    assert redacted_extra_vars(["db_password=hunter2 user=x", '{"token": "abc"}', "@/etc/vars.yml", "not valid ="]) == [
        "db_password=******** user=********", "token=********", "@(file)", "(hidden)"]


def test_launch_fields_are_the_run_request_types_fields():
    assert launch_fields() == FIELDS  # raises if run/ renamed one of them


def test_names_in_the_audit_are_bounded_and_escaped():
    assert bounded("x" * 900_000) == "x" * 64 + "...(900000 characters)"
    assert bounded("ad\x1b[2Jmin") == "ad\\x1b[2Jmin"
    assert bounded("ok") == "ok"


def test_login_backoff_is_per_user_and_address_and_counted_before_the_check(tmp_path):
    state = ServerState(tmp_path / "s")
    for _ in range(LOGIN_FREE_FAILURES):
        assert state.begin_login("admin", "10.0.0.1") is not None
    assert state.begin_login("admin", "10.0.0.1") is None  # that pair waits
    wait = state.login_wait("admin", "10.0.0.1")
    assert 0 < wait <= 30
    assert state.begin_login("admin", "10.0.0.2") is not None  # the owner elsewhere is not locked out
    assert state.begin_login("viewer", "10.0.0.1") is not None  # nor another name from that address
    state.login_succeeded("admin", "10.0.0.2")
    assert state.login_wait("admin", "10.0.0.2") == 0
    later = time.time() + 31
    assert state.login_wait("admin", "10.0.0.1", now=later) == 0  # the wait passes


def test_anonymous_audit_rows_have_a_budget_and_say_what_they_left_out(tmp_path):
    state = ServerState(tmp_path / "s")
    written = sum(state.audit_anonymous("x", "login", "failed", "10.0.0.9") for _ in range(200))
    assert written == AUDIT_ANONYMOUS_PER_MINUTE
    assert state.audit_anonymous("y", "login", "failed", "10.0.0.8")
    newest = state.audit_log(1)[0]
    assert newest["detail"] == {"not_logged_before": 200 - AUDIT_ANONYMOUS_PER_MINUTE}


def test_audit_pages_and_filters(tmp_path):
    state = ServerState(tmp_path / "s")
    for i in range(30):
        state.audit("alice" if i % 2 else "bob", "launch" if i % 3 else "stop", f"t{i}", "ok" if i % 5 else "refused: x")
    first = state.audit_log(10)
    second = state.audit_log(10, before=first[-1]["id"])
    assert [r["target"] for r in first] == [f"t{i}" for i in range(29, 19, -1)]
    assert [r["target"] for r in second] == [f"t{i}" for i in range(19, 9, -1)]
    assert {r["actor"] for r in state.audit_log(100, actor="alice")} == {"alice"}
    assert {r["action"] for r in state.audit_log(100, action="stop")} == {"stop"}
    assert len(state.audit_log(100, outcome="refused")) == 6
    assert state.audit_log(100, outcome="%") == []  # a LIKE wildcard is a character here


def test_grants_give_a_role_in_one_workspace(tmp_path):
    state = ServerState(tmp_path / "s")
    state.add_user("ann", "none", "ann-password")
    state.grant("ann", "ops", "operator")
    who = Principal("ann", "none", "session", grants=state.grants_of("ann"))
    assert who.sees("ops") and not who.sees("lab") and not who.everywhere
    assert who.may("operator", "ops") and not who.may("admin", "ops") and not who.may("viewer")
    assert who.may_somewhere("operator") and not who.may_somewhere("admin")
    everywhere = Principal("bo", "viewer", "session", grants=(("ops", "admin"),))
    assert everywhere.everywhere and everywhere.may("admin", "ops") and not everywhere.may("operator", "lab")
    with pytest.raises(PolycrateError, match="unknown role"):
        state.grant("ann", "ops", "root")


def _declaration(text: str):
    from polycrate.config.launch_params import parse_declaration

    return parse_declaration(yaml.safe_load(text), "deploy", Path("workspace.poly"), 3)


def test_launch_declarations_are_checked_where_they_are_written():
    from polycrate.errors import ConfigError

    ok = _declaration("""
variables:
  - {name: version, type: string, pattern: "^[0-9.]+$", required: true}
  - {name: n, type: integer, min: 1, max: 3, default: 2}
  - {name: env, type: choice, choices: [a, b]}
  - {name: pw, type: secret}
limit: false
extra_vars: admins
""")
    assert [v.name for v in ok.variables] == ["version", "n", "env", "pw"] and ok.limit is False and ok.check is True
    for bad, why in (("variables: [{name: x, type: float}]", "type is one of"),
                     ("variables: [{name: x, type: choice}]", "needs 'choices'"),
                     ("variables: [{name: x, type: integer, default: 9, max: 3}]", "default: vars.x: at most 3"),
                     ("variables: [{name: x, type: secret, default: s}]", "no default"),
                     ("variables: [{name: x}, {name: x}]", "declared twice"),
                     ("variables: [{name: 1x}]", "variable name"), ("extra_vars: everyone", "off or admins"),
                     ("limit: 'yes'", "true or false"), ("bogus: 1", "unknown key"),
                     ("variables: [{name: x, pattern: '('}]", "pattern")):
        with pytest.raises(ConfigError, match=why):
            _declaration(bad)


def test_launch_values_against_the_declaration():
    from polycrate.config.launch_params import ParameterRefused, check_values, shown_values

    d = _declaration("variables: [{name: v, pattern: '^[0-9.]+$', required: true}, {name: n, type: integer, default: 2},"
                     " {name: pw, type: secret}, {name: b, type: boolean}]")
    assert check_values(d, {"v": "1.2", "pw": "x", "b": False}, "deploy") == {"v": "1.2", "n": 2, "pw": "x", "b": False}
    assert shown_values(d, {"v": "1.2", "pw": "x"}) == {"v": "1.2", "pw": "********"}
    for values, why in (({}, "vars.v: required"), ({"v": "1;rm"}, "does not match"), ({"v": "1", "n": True}, "whole"),
                        ({"v": "1", "b": "false"}, "true or false"), ({"v": "1", "z": 1}, "vars.z: workflow 'deploy'"),
                        ({"v": "1", "pw": "x" * 5000}, "at most"), ([1], "an object")):
        with pytest.raises(ParameterRefused, match=why):
            check_values(d, values, "deploy")
    with pytest.raises(ParameterRefused) as caught:
        check_values(_declaration("variables: [{name: pw, type: secret, pattern: '^a$'}]"), {"pw": "hunter2"}, "deploy")
    assert "hunter2" not in caught.value.message
