"""--limit, --tags, --skip-tags and --extra-vars reach every ansible step (real ansible-playbook), script
steps as POLYCRATE_* variables, the run record, and --resume."""
from __future__ import annotations

import json

import pytest

from tests.conftest import assert_one_line_error, run_cli, write
from tests.integration.term_workspace import lines_of, make_term_workspace


@pytest.fixture
def ws(tmp_path):
    return make_term_workspace(tmp_path / "ws")


def test_limit_runs_on_that_host_only(ws):
    result = run_cli("run", "app", "play", "--limit", "h1", cwd=ws)
    assert result.returncode == 0, result.output
    assert lines_of(ws, "hosts.txt") == ["h1"]
    everyone = run_cli("run", "app", "play", cwd=ws)
    assert everyone.returncode == 0, everyone.output
    assert sorted(lines_of(ws, "hosts.txt")) == ["h1", "h1", "h2", "localhost"]


def test_tags_run_only_the_tagged_task_and_skip_tags_skip_it(ws):
    result = run_cli("workflows", "run", "plays", "--tags", "special", "--limit", "h2", cwd=ws)
    assert result.returncode == 0, result.output
    assert lines_of(ws, "tagged.txt") == ["h2"]
    assert lines_of(ws, "hosts.txt") == []  # the untagged-for-this-run task did not run
    skipped = run_cli("run", "app", "play", "--skip-tags", "special", "--limit", "h1", cwd=ws)
    assert skipped.returncode == 0, skipped.output
    assert lines_of(ws, "tagged.txt") == ["h2"] and lines_of(ws, "hosts.txt") == ["h1"]


def test_extra_vars_reach_an_assert_in_every_form(ws, tmp_path):
    # the play asserts wanted == expected: without extra vars both are 'none'
    assert run_cli("run", "app", "play", "--limit", "h1", cwd=ws).returncode == 0
    failed = run_cli("run", "app", "play", "--limit", "h1", "--extra-vars", "wanted=yes", cwd=ws)
    assert failed.returncode == 1 and "wanted=yes expected=none" in failed.output
    forms = [
        ["--extra-vars", "wanted=yes expected=yes"],
        ["--extra-vars", '{"wanted": "yes", "expected": "yes"}'],
        ["--extra-vars", "wanted=yes", "--extra-vars", "expected=yes"],
    ]
    write(tmp_path / "vars.yml", "wanted: 42\nexpected: 42\n")
    forms.append(["--extra-vars", f"@{tmp_path / 'vars.yml'}"])
    forms.append(["--extra-vars", "wanted=no expected=yes", "--extra-vars", '{"wanted": "yes"}'])  # later wins
    for form in forms:
        result = run_cli("run", "app", "play", "--limit", "h1", *form, cwd=ws)
        assert result.returncode == 0, (form, result.output)


def test_script_steps_get_them_as_variables_and_the_run_records_them(ws):
    result = run_cli("workflows", "run", "plays", "--limit", "h1", "--tags", "record,always", "--skip-tags", "special",
                     "--extra-vars", "wanted=x expected=x", "-o", "json", cwd=ws)
    assert result.returncode == 0, result.output
    logs = run_cli("runs", "logs", "latest", "--step", "env", cwd=ws).stdout
    assert "limit=h1 tags=record,always skip=special" in logs
    assert 'extra={"expected": "x", "wanted": "x"}' in logs
    record = json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=ws).stdout)
    assert record["ansible_options"] == {
        "limit": "h1", "tags": ["record", "always"], "skip_tags": ["special"],
        "extra_vars": ["wanted=x expected=x"], "verbosity": None,
    }
    shown = run_cli("runs", "show", "latest", cwd=ws).stdout
    assert "--limit h1 --tags record,always --skip-tags special --extra-vars 'wanted=x expected=x'" in shown


def test_resume_reuses_the_recorded_options(ws, tmp_path):
    write(ws / "workspace.poly", (ws / "workspace.poly").read_text() + """
  - name: fixable
    steps:
      - {name: play, block: app, action: play}
      - {name: gate, block: app, action: fixable}
      - {name: again, block: app, action: play}
""")
    write(ws / "blocks/app/block.poly", (ws / "blocks/app/block.poly").read_text() + """
  - name: fixable
    script:
      - test -e "$POLYCRATE_WORKSPACE/fixed"
""")
    first = run_cli("workflows", "run", "fixable", "--limit", "h2", "--extra-vars", "wanted=1 expected=1", cwd=ws)
    assert first.returncode == 1, first.output
    assert lines_of(ws, "hosts.txt") == ["h2"]
    (ws / "fixed").write_text("")
    refused = run_cli("workflows", "run", "fixable", "--resume", "--limit", "h1", cwd=ws)
    assert_one_line_error(refused, "a resumed run reuses the Ansible options", "--limit h2", code=2)
    resumed = run_cli("workflows", "run", "fixable", "--resume", cwd=ws)
    assert resumed.returncode == 0, resumed.output
    assert lines_of(ws, "hosts.txt") == ["h2", "h2"]  # the resumed step ran with --limit h2 again
    record = json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=ws).stdout)
    assert record["ansible_options"]["limit"] == "h2"
    assert record["ansible_options"]["extra_vars"] == ["wanted=1 expected=1"]


def test_resume_takes_the_same_values_from_another_file_and_names_a_value_that_differs(ws, tmp_path):
    """A resume compares extra vars by their values (a web launch writes the same values to a new @FILE each
    time); one that differs is refused naming it, never showing it; a recorded @FILE gone since is said first."""
    write(ws / "workspace.poly", (ws / "workspace.poly").read_text() + """
  - name: fixable
    steps:
      - {name: play, block: app, action: play}
      - {name: gate, block: app, action: fixable}
      - {name: again, block: app, action: play}
""")
    write(ws / "blocks/app/block.poly", (ws / "blocks/app/block.poly").read_text() + """
  - name: fixable
    script:
      - test -e "$POLYCRATE_WORKSPACE/fixed"
""")
    write(tmp_path / "first.yml", "wanted: 1\nexpected: 1\n")
    write(tmp_path / "same.yml", "expected: 1\n")
    write(tmp_path / "other.yml", "expected: hush-2\n")
    first = run_cli("workflows", "run", "fixable", "--limit", "h2", "--extra-vars", f"@{tmp_path}/first.yml", cwd=ws)
    assert first.returncode == 1, first.output
    (ws / "fixed").write_text("")
    refused = run_cli("workflows", "run", "fixable", "--resume", "--extra-vars", f"@{tmp_path}/other.yml", cwd=ws)
    assert_one_line_error(refused, "a resumed run reuses the launch values of run", "expected differs", code=2)
    assert "hush-2" not in refused.output
    resumed = run_cli("workflows", "run", "fixable", "--resume", "--extra-vars", f"@{tmp_path}/same.yml", cwd=ws)
    assert resumed.returncode == 0, resumed.output
    record = json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=ws).stdout)
    assert record["ansible_options"]["extra_vars"] == [f"@{tmp_path}/first.yml"]  # the run's own, reused
    assert record["ansible_options"]["limit"] == "h2"
    # a resume whose values file is gone since
    (ws / "fixed").unlink()
    assert run_cli("workflows", "run", "fixable", "--extra-vars", f"@{tmp_path}/other.yml", cwd=ws).returncode == 1
    (tmp_path / "other.yml").unlink()
    gone = run_cli("workflows", "run", "fixable", "--resume", cwd=ws)
    assert_one_line_error(gone, "was started with are gone", f"{tmp_path}/other.yml", code=2)


@pytest.mark.parametrize("args, fragment", [
    (["--extra-vars", "novalue"], "expected key=value"),
    (["--extra-vars", "{not json"], "not valid JSON"),
    (["--extra-vars", "[1, 2]"], "must be an object"),
    (["--extra-vars", "@/nonexistent/vars.yml"], "no such file: /nonexistent/vars.yml"),
    (["--tags", ","], "--tags needs at least one tag"),
])
def test_bad_pass_through_options_are_one_line_errors_and_nothing_runs(ws, args, fragment):
    result = run_cli("run", "app", "play", *args, cwd=ws)
    assert_one_line_error(result, fragment)
    assert lines_of(ws, "hosts.txt") == []
    assert not (ws / ".polycrate" / "runs.db").exists() or json.loads(run_cli("runs", "list", "-o", "json", cwd=ws).stdout)["runs"] == []
