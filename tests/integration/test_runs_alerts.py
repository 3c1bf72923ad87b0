"""Webhooks on a local HTTP server and the Prometheus textfile, after real ansible-playbook runs."""
import json
import math
import re
import time


from tests.conftest import run_cli
from tests.helpers import free_port, validate_document
from tests.integration.runs_workspace import SECRET, make_workspace




def test_webhook_receives_the_json_summary(tmp_path, hook_server):
    port = hook_server.port
    ws = make_workspace(
        tmp_path / "ws",
        f"""
webhooks:
  - url: http://127.0.0.1:{port}/failures
    headers: {{X-Token: abc123}}
    on: [failure]
  - url: http://127.0.0.1:{port}/all
    on: [success, failure]
""",
    )
    failed = run_cli("workflows", "run", "nightly", "-o", "json", cwd=ws)
    assert failed.returncode == 1
    run_id = json.loads(failed.stdout)["run_id"]
    assert sorted(r["path"] for r in hook_server.requests) == ["/all", "/failures"]
    hit = next(r for r in hook_server.requests if r["path"] == "/failures")
    assert hit["headers"]["X-Token"] == "abc123" and hit["headers"]["Content-Type"] == "application/json"
    body = validate_document(hit["body"], "webhook")  # the contract: schemas/webhook.v1.schema.json
    assert body["event"] == "run.finished"
    # the body is the run as `runs show -o json` prints it, with `event`: one shape for one run
    shown = json.loads(run_cli("runs", "show", run_id, "-o", "json", cwd=ws).stdout)
    assert {k: v for k, v in body.items() if k not in ("schema", "event")} == \
        {k: v for k, v in shown.items() if k != "schema"}
    assert body["run_id"] == run_id and body["workflow"] == "nightly" and body["status"] == "failed"
    assert body["failed_step"] == "update" and body["failed_task"] == "check free disk space"
    assert body["message"] == "disk /var is full on purpose"
    assert body["duration"] > 0 and body["workspace"] == "nights" and body["exit_code"] == 1

    hook_server.requests.clear()
    ok = run_cli("workflows", "run", "green", cwd=ws)
    assert ok.returncode == 0
    assert [r["path"] for r in hook_server.requests] == ["/all"]  # success goes only where asked
    validate_document(hook_server.requests[0]["body"], "webhook")
    assert hook_server.requests[0]["body"]["status"] == "succeeded"
    assert hook_server.requests[0]["body"]["failed_step"] is None

    hook_server.requests.clear()
    run_cli("workflows", "run", "secret", cwd=ws)
    assert len(hook_server.requests) == 2
    for r in hook_server.requests:
        assert SECRET not in json.dumps(r["body"])


def test_a_scheduled_run_that_cannot_start_is_recorded_and_alerted(tmp_path, hook_server):
    """A timer's (or cron's) run refused before it starts, here because its workflow's lock is held (by the real
    RunLock, as a run at the terminal holds it), was only a line in the journal: nothing in the history, no alert,
    and the night's run silently missing. Now the history keeps a failed run that never started, with the reason
    (without the --wait advice, which is for a terminal), and the failure webhook fires with it. A run typed at
    the terminal and refused the same way records nothing, as before: its user has the message."""
    from polycrate.history.locking import RunLock

    ws = make_workspace(tmp_path / "ws", f"""
webhooks:
  - url: http://127.0.0.1:{hook_server.port}/failures
    on: [failure]
""")
    before = json.loads(run_cli("runs", "list", "-o", "json", cwd=ws).stdout)["runs"]
    lock = RunLock(ws, "workflow-green", "workflow 'green'")
    lock.acquire()
    try:
        typed = run_cli("workflows", "run", "green", cwd=ws)
        assert typed.returncode == 3 and "use --wait to wait for it" in typed.stderr, typed.output
        assert json.loads(run_cli("runs", "list", "-o", "json", cwd=ws).stdout)["runs"] == before
        assert hook_server.requests == []
        timer = run_cli("workflows", "run", "--launched-by", "systemd:polycrate-nights-green.service", "green", cwd=ws)
        assert timer.returncode == 3, timer.output
        assert lock.fd is not None  # still held: the refused run took nothing
    finally:
        lock.release()
    runs = json.loads(run_cli("runs", "list", "-o", "json", cwd=ws).stdout)["runs"]
    assert len(runs) == len(before) + 1
    refused = runs[0]
    assert refused["status"] == "failed" and refused["started"] is None and refused["duration"] is None, refused
    assert refused["user"] == "systemd:polycrate-nights-green.service"
    assert re.fullmatch(r"the scheduled run did not start: workflow 'green' is already running \(pid \d+ on .+\)",
                        refused["message"]), refused["message"]
    assert [r["path"] for r in hook_server.requests] == ["/failures"]
    body = validate_document(hook_server.requests[0]["body"], "webhook")
    assert body["run_id"] == refused["run_id"] and body["status"] == "failed" and body["started"] is None
    assert body["message"] == refused["message"] and body["steps"] == []
    shown = run_cli("runs", "show", refused["run_id"], cwd=ws)
    assert shown.returncode == 0 and "started:   never (launched by systemd:polycrate-nights-green.service)" \
        in shown.stdout, shown.output


def test_dead_webhook_does_not_fail_the_run(tmp_path):
    dead = free_port()  # nothing listens here
    token = "T0KEN-in-the-path-4711"  # as in Slack's /services/T/B/TOKEN: the URL itself is a secret
    ws = make_workspace(tmp_path / "ws", f"webhooks:\n  - url: http://u:pw@127.0.0.1:{dead}/services/{token}?k={token}\n"
                                         "    on: [success, failure]\n")
    ok = run_cli("workflows", "run", "green", cwd=ws)  # run_cli's own timeout guards against a hang
    assert ok.returncode == 0, ok.output
    assert f"webhook 1 (http://127.0.0.1:{dead}/...) failed" in ok.stdout  # its place and origin, no more
    run = json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=ws).stdout)
    assert run["status"] == "succeeded"
    assert any("webhook" in n["text"] for n in run["notices"])  # logged with the run
    stored = run_cli("runs", "show", "latest", cwd=ws).stdout + json.dumps(run)
    for text in (ok.output, stored):
        assert token not in text and "pw@" not in text
    bad = run_cli("workflows", "run", "nightly", cwd=ws)
    assert bad.returncode == 1  # a failed run stays failed (not 2, not a traceback)
    assert "Traceback" not in bad.output


# --- Prometheus text format ---------------------------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\n"])*"'
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{((?:{_LABEL})(?:,{_LABEL})*)?\}})? (\S+)(?: (-?\d+))?$")


def parse_prometheus_text(text: str) -> dict[tuple[str, frozenset], float]:
    """A strict reader of the Prometheus text exposition format (0.0.4), as node_exporter's
    textfile collector requires: HELP/TYPE before samples, a known TYPE, valid names, labels and
    values, no duplicate series, a final newline."""
    assert text.endswith("\n"), "must end with a newline"
    samples: dict = {}
    types: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                assert re.fullmatch(_NAME, parts[2]), (number, line)
                if parts[1] == "TYPE":
                    assert parts[3] in ("counter", "gauge", "histogram", "summary", "untyped"), (number, line)
                    assert parts[2] not in types, f"line {number}: second TYPE for {parts[2]}"
                    assert not any(k[0] == parts[2] for k in samples), f"line {number}: TYPE after samples"
                    types[parts[2]] = parts[3]
            continue
        match = _SAMPLE.match(line)
        assert match, f"line {number} is not a sample: {line!r}"
        name, labels, value = match.group(1), match.group(2) or "", match.group(3)
        assert name in types, f"line {number}: {name} has no TYPE"
        pairs = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels))
        key = (name, pairs)
        assert key not in samples, f"line {number}: duplicate series"
        number_value = float(value)  # accepts NaN/+Inf as the format does
        assert not math.isnan(number_value)
        samples[key] = number_value
    return samples


def _metric(samples, name, workflow, **extra):
    want = {("workflow", workflow), *extra.items()}
    hits = [v for (n, labels), v in samples.items() if n == name and want <= set(labels)]
    assert len(hits) == 1, (name, workflow, hits)
    return hits[0]


def test_metrics_file_parses_and_moves_with_each_run(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    prom = ws / ".polycrate" / "metrics" / "polycrate.prom"
    assert run_cli("workflows", "run", "green", cwd=ws).returncode == 0
    first = parse_prometheus_text(prom.read_text())
    t1 = _metric(first, "polycrate_workflow_last_run_timestamp_seconds", "green")
    s1 = _metric(first, "polycrate_workflow_last_success_timestamp_seconds", "green")
    assert abs(t1 - time.time()) < 120 and s1 == t1
    assert _metric(first, "polycrate_workflow_last_status", "green", status="succeeded") == 1
    assert _metric(first, "polycrate_workflow_last_status", "green", status="failed") == 0
    assert _metric(first, "polycrate_workflow_last_duration_seconds", "green") > 0

    time.sleep(1.1)
    assert run_cli("workflows", "run", "green", cwd=ws).returncode == 0
    second = parse_prometheus_text(prom.read_text())
    t2 = _metric(second, "polycrate_workflow_last_run_timestamp_seconds", "green")
    assert t2 > t1 and _metric(second, "polycrate_workflow_last_success_timestamp_seconds", "green") == t2

    time.sleep(1.1)
    assert run_cli("workflows", "run", "nightly", cwd=ws).returncode == 1
    third = parse_prometheus_text(prom.read_text())
    assert _metric(third, "polycrate_workflow_last_status", "nightly", status="failed") == 1
    assert _metric(third, "polycrate_workflow_last_success_timestamp_seconds", "nightly") == 0  # never succeeded
    assert _metric(third, "polycrate_workflow_last_exit_code", "nightly") == 1
    assert _metric(third, "polycrate_workflow_last_run_timestamp_seconds", "nightly") > t2
    # green's series are still there, unchanged
    assert _metric(third, "polycrate_workflow_last_success_timestamp_seconds", "green") == t2
    assert not list(prom.parent.glob("*.tmp"))  # the atomic write left no temporary file

    # check-mode runs do not count as runs of the night
    assert run_cli("workflows", "run", "green", "--check", cwd=ws).returncode == 0
    fourth = parse_prometheus_text(prom.read_text())
    assert _metric(fourth, "polycrate_workflow_last_run_timestamp_seconds", "green") == t2


def test_metrics_path_is_configurable(tmp_path):
    target = tmp_path / "textfile" / "nights.prom"
    ws = make_workspace(tmp_path / "ws", f"metrics:\n  path: {target}\n")
    assert run_cli("workflows", "run", "green", cwd=ws).returncode == 0
    samples = parse_prometheus_text(target.read_text())
    assert _metric(samples, "polycrate_workflow_last_status", "green", status="succeeded") == 1
    assert not (ws / ".polycrate" / "metrics").exists()
