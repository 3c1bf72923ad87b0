"""The failure texts: Ansible's exit statuses in words, unreachable hosts, a script's failing line."""
import json

from polycrate.run import failure
from polycrate.runtime.script import PRELUDE_LINES, script_line, script_text


def test_ansible_exit_statuses_are_translated():
    none = failure.StepEvents()
    assert failure.describe_ansible(2, None, none, []) == "ansible-playbook exit status 2 (one or more hosts failed)"
    assert "bad or incomplete options" in failure.describe_ansible(5, None, none, [])
    assert "interrupted" in failure.describe_ansible(99, None, none, [])
    assert "unexpected error inside Ansible" in failure.describe_ansible(250, None, none, [])
    assert "aborted" in failure.describe_ansible(8, None, none, [])
    # 4 is Ansible's code for both a parser error and unreachable hosts: the output tells which
    parsed = failure.describe_ansible(4, None, none, ["[ERROR]: couldn't resolve module/action 'debugg'",
                                                      "Origin: /ws/blocks/b/go.yml:4:7", "", "4     - debugg:"])
    assert parsed == ("ansible-playbook exit status 4 (Ansible could not parse the playbook): "
                      "couldn't resolve module/action 'debugg' (/ws/blocks/b/go.yml:4:7)")
    assert failure.exit_meaning(4, unreachable=True) == "one or more hosts were unreachable"


def test_unreachable_hosts_are_named(tmp_path):
    events = tmp_path / "events.jsonl"
    lines = [{"event": "unreachable", "host": h, "task": "Gathering Facts", "message": "ssh: connect: refused"}
             for h in ("web02", "web01")]
    events.write_text("".join(json.dumps(e) + "\n" for e in lines))
    seen = failure.read_step_events(events)
    text = failure.describe_ansible(4, {"task": "Gathering Facts", "host": "web01", "message": "ssh: connect: refused"},
                                    seen, [])
    assert text == "unreachable: web01, web02 (ssh: connect: refused)"


def test_a_task_failure_keeps_its_message():
    got = failure.describe_ansible(2, {"task": "t", "host": "h", "message": "disk full"}, failure.StepEvents(), [])
    assert got == "disk full"


def test_script_lines_map_back_through_the_prelude():
    lines = ("echo one", "if true; then\n  false\nfi", "echo three")
    text = script_text(lines).splitlines()
    assert text[PRELUDE_LINES] == "echo one"
    assert script_line(lines, PRELUDE_LINES + 1) == (1, "echo one")
    assert script_line(lines, PRELUDE_LINES + 3) == (2, "  false")
    assert script_line(lines, PRELUDE_LINES + 5) == (3, "echo three")
    assert script_line(lines, 1) is None and script_line(lines, PRELUDE_LINES + 9) is None


def test_a_script_failure_names_line_text_and_status(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"event": "script_failed", "line": PRELUDE_LINES + 2, "status": 3}) + "\n"
                      + json.dumps({"event": "script_failed", "line": PRELUDE_LINES + 1, "status": 1}) + "\n")
    seen = failure.read_step_events(events)
    got = failure.describe_script(("echo a", "grep -q x /etc/hosts"), 3, seen, ["+ echo a", "a"])
    assert got == "script line 2 `grep -q x /etc/hosts` failed with exit status 3"  # the first (innermost) one
    assert failure.describe_script(("exit 4",), 4, failure.StepEvents(), ["+ exit 4", "bye"]) == "exit status 4: bye"
    ended = failure.StepEvents(script_exit={"line": PRELUDE_LINES + 1, "status": 4})
    assert failure.describe_script(("exit 4",), 4, ended, []) == "script line 1 `exit 4` failed with exit status 4"


def test_no_hosts_wording():
    seen = failure.StepEvents(no_hosts=[{"play": "patch", "pattern": "web_servrs"}])
    assert failure.describe_no_hosts(seen) == "play 'patch' matched no hosts (pattern 'web_servrs')"
    assert failure.describe_no_hosts(failure.StepEvents()) is None
