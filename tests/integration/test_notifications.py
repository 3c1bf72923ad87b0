"""Mail and chat notifications after real runs, against real servers on loopback that the tests start:
aiosmtpd requiring STARTTLS (self-signed certificate) and AUTH, and an HTTP server that records what
Slack, Mattermost, Teams workflows and a Matrix homeserver would receive."""
from __future__ import annotations

import json
import re
import signal

import pytest

from tests.conftest import run_cli
from tests.helpers import free_port, validate_document, write
from tests.integration.notify_servers import HttpRecorder, SilentServer, SmtpServer
from tests.integration.runs_workspace import start_cli, wait_for

DB_PASSWORD = "Corr3ct-Horse-Battery-5taple"  # secrets.poly; the failing task prints it
SMTP_USER, SMTP_PASSWORD = "alerts", "smtp-Pa55word-9f3k"
MATRIX_TOKEN = "syt_bWF0cml4_TokenValue_1a2b3c"
SLACK_PATH = "/slack/services/T0001/B0002/XyZsecretHookToken"

WORKSPACE = """\
name: alerts
blocks:
  - name: db
workflows:
  - name: nightly
    steps:
      - {name: backup, block: db, action: backup}
  - name: green
    steps:
      - {name: ok, block: db, action: ok}
  - name: long
    steps:
      - {name: wait, block: db, action: wait}
"""

BLOCK = """\
name: db
version: 1.0.0
config:
  password: default
actions:
  - {name: backup, playbook: backup.yml}
  - name: ok
    script: ["true"]
  - name: wait
    script: ['touch "$POLYCRATE_WORKSPACE/started"', "sleep 300"]
"""

BACKUP = """\
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: dump the database
      ansible.builtin.fail:
        msg: "pg_dump: password authentication failed for {{ block.config.password }}"
"""


def make_workspace(root, notifications: str, secrets_config: str = ""):
    write(root / "workspace.poly", WORKSPACE + "notifications:\n" + notifications)
    write(root / "blocks/db/block.poly", BLOCK)
    write(root / "blocks/db/backup.yml", BACKUP)
    write(root / "inventory.yml", "all:\n  hosts:\n    localhost:\n      ansible_python_interpreter: /usr/bin/python3\n")
    write(root / "secrets.poly", f"blocks:\n  - name: db\n    config:\n      password: {DB_PASSWORD}\n"
          f"config:\n  notify:\n    smtp_password: {SMTP_PASSWORD}\n{secrets_config}")
    return root


def mail_channel(name: str, port: int, cert, password: str = "{secret: notify.smtp_password}", extra: str = ""):
    return f"""\
  - name: {name}
    type: email
    host: 127.0.0.1
    port: {port}
    username: {SMTP_USER}
    password: {password}
    from: polycrate@alerts.example.org
    to: [ops@example.org, dba@example.org]
    ca_file: {cert}
{extra}"""


@pytest.fixture
def smtp(tmp_path):
    server = SmtpServer(tmp_path, SMTP_USER, SMTP_PASSWORD).start()
    yield server
    server.stop()


def test_a_failed_run_mails_through_starttls_and_login_with_the_secret_masked(tmp_path, smtp):
    ws = make_workspace(tmp_path / "ws", mail_channel("ops-mail", smtp.port, smtp.cert))
    failed = run_cli("workflows", "run", "nightly", "-o", "json", cwd=ws)
    assert failed.returncode == 1, failed.output
    run_id = json.loads(failed.stdout)["run_id"]
    assert len(smtp.mails) == 1
    mail = smtp.mails[0]
    assert mail.tls and mail.login == SMTP_USER  # STARTTLS with the test's certificate, then AUTH
    assert mail.sender == "polycrate@alerts.example.org"
    assert mail.recipients == ["ops@example.org", "dba@example.org"]
    assert mail.message["Subject"] == "polycrate alerts: workflow nightly failed"
    assert mail.message["X-Polycrate-Run"] == run_id and mail.message["Auto-Submitted"] == "auto-generated"
    text = mail.text
    assert "failed step: backup" in text and "task:        dump the database" in text
    assert "pg_dump: password authentication failed for ********" in text
    assert "polycrate workflows run nightly --resume" in text and run_id in text
    everything = text + str(mail.message) + failed.output
    assert DB_PASSWORD not in everything and SMTP_PASSWORD not in everything
    shown = run_cli("runs", "show", run_id, "-o", "json", cwd=ws)
    assert SMTP_PASSWORD not in shown.stdout and not json.loads(shown.stdout)["notices"]

    ok = run_cli("workflows", "run", "green", cwd=ws)
    assert ok.returncode == 0 and len(smtp.mails) == 1  # on: defaults to failure: no mail for a success


@pytest.mark.parametrize("mechanism, excluded", [("LOGIN", ("PLAIN",)), ("PLAIN", ("LOGIN",))])
def test_notify_test_logs_in_with_auth_login_and_plain(tmp_path, mechanism, excluded):
    server = SmtpServer(tmp_path, SMTP_USER, SMTP_PASSWORD, exclude=excluded).start()
    try:
        ws = make_workspace(tmp_path / "ws", mail_channel("ops-mail", server.port, server.cert))
        result = run_cli("notify", "test", cwd=ws)
        assert result.returncode == 0, result.output
        assert result.stdout == "sent: notification 'ops-mail' (email)\n"
        assert [m.mechanism for m in server.mails] == [mechanism] and server.mails[0].tls
        assert server.mails[0].message["Subject"] == "polycrate alerts: test message"
        assert "channel: ops-mail" in server.mails[0].text
    finally:
        server.stop()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # it is TLS: see SmtpServer
def test_smtps_delivers_and_an_untrusted_certificate_is_refused(tmp_path):
    server = SmtpServer(tmp_path, SMTP_USER, SMTP_PASSWORD, implicit_tls=True).start()
    try:
        ws = make_workspace(tmp_path / "ws", mail_channel("smtps", server.port, server.cert, extra="    security: tls\n")
                            + mail_channel("untrusted", server.port, "/etc/ssl/certs/ca-certificates.crt",
                                           extra="    security: tls\n"))
        result = run_cli("notify", "test", cwd=ws)
        assert result.returncode == 1
        assert result.stdout == "sent: notification 'smtps' (email)\n", result.stderr
        assert [(m.tls, m.login) for m in server.mails] == [(True, SMTP_USER)]  # one mail: the trusted one
        assert result.stderr == (f"polycrate: error: notification 'untrusted' (email) failed: 127.0.0.1:{server.port}: "
                                 "its TLS certificate is not trusted (self-signed certificate)\n")
    finally:
        server.stop()


def test_refused_login_dead_and_hung_servers_are_one_warning_each_and_never_fail_the_run(tmp_path, smtp):
    dead, hung = free_port(), SilentServer()
    wrong = "Wr0ng-smtp-password-77"
    try:
        ws = make_workspace(tmp_path / "ws", (
            mail_channel("refused", smtp.port, smtp.cert, password="{env: TEST_SMTP_PASSWORD}", extra="    on: success\n")
            + mail_channel("dead", dead, smtp.cert, extra="    on: [success]\n")
            + "  - {name: hung, type: slack, url: {secret: notify.hung_url}, on: success, timeout: 1}\n"
        ), secrets_config=f"    hung_url: http://127.0.0.1:{hung.port}/hooks/abc\n")
        env = {"TEST_SMTP_PASSWORD": wrong}
        ok = run_cli("workflows", "run", "green", cwd=ws, env=env)
        assert ok.returncode == 0, ok.output
        assert "Traceback" not in ok.output and wrong not in ok.output and smtp.mails == []
        warnings = [line.removeprefix("polycrate: ") for line in ok.output.splitlines() if "notification '" in line]
        assert warnings == [
            f"warning: notification 'refused' (email) failed: 127.0.0.1:{smtp.port} refused the login of alerts "
            "(535); the run's result stands",
            f"warning: notification 'dead' (email) failed: 127.0.0.1:{dead}: connection refused; "
            "the run's result stands",
            "warning: notification 'hung' (slack) failed: no answer within 1s; the run's result stands",
        ], ok.output
        assert smtp.refused_logins  # the server saw the login and refused it
        run = json.loads(run_cli("runs", "show", "latest", "-o", "json", cwd=ws).stdout)
        assert run["status"] == "succeeded"
        assert [n["text"] for n in run["notices"]] == warnings  # kept with the run

        test = run_cli("notify", "test", cwd=ws, env=env)
        assert test.returncode == 1 and test.stdout == ""
        assert test.stderr.splitlines() == [
            f"polycrate: error: notification 'refused' (email) failed: 127.0.0.1:{smtp.port} refused the login of "
            "alerts (535)",
            f"polycrate: error: notification 'dead' (email) failed: 127.0.0.1:{dead}: connection refused",
            "polycrate: error: notification 'hung' (slack) failed: no answer within 1s",
        ]
        assert str(hung.port) + "/hooks/abc" not in test.output  # a chat URL carries its token: never shown
        unset = run_cli("notify", "test", "refused", cwd=ws, env={"TEST_SMTP_PASSWORD": ""})
        assert unset.returncode == 1 and unset.stderr == (
            "polycrate: error: notification 'refused' (email) failed: environment variable TEST_SMTP_PASSWORD "
            "is not set\n")
    finally:
        hung.stop()


CHAT = """\
  - {name: slack, type: slack, url: {secret: notify.slack_url}}
  - {name: mattermost, type: mattermost, url: {env: TEST_MATTERMOST_URL}}
  - {name: teams, type: teams, url: {secret: notify.teams_url}}
  - name: matrix
    type: matrix
    homeserver: http://127.0.0.1:PORT
    room: "!ops-room:example.org"
    token: {secret: notify.matrix_token}
  - name: matrix-bad-token
    type: matrix
    homeserver: http://127.0.0.1:PORT
    room: "!ops-room:example.org"
    token: {env: TEST_WRONG_TOKEN}
  - {name: slack-success-only, type: slack, url: {secret: notify.slack_url}, on: [success]}
"""


def test_chat_channels_receive_their_formats_with_the_secret_masked(tmp_path):
    server = HttpRecorder(matrix_token=MATRIX_TOKEN).start()
    try:
        ws = make_workspace(tmp_path / "ws", CHAT.replace("PORT", str(server.port)), secrets_config=(
            f"    slack_url: {server.url}{SLACK_PATH}\n    teams_url: {server.url}/teams/workflows/abc/triggers/x\n"
            f"    matrix_token: {MATRIX_TOKEN}\n"))
        env = {"TEST_MATTERMOST_URL": f"{server.url}/mattermost/hooks/mmtoken123", "TEST_WRONG_TOKEN": "not-it"}
        failed = run_cli("workflows", "run", "nightly", "-o", "json", cwd=ws, env=env)
        assert failed.returncode == 1
        run_id = json.loads(failed.stdout)["run_id"]
        by_path = {r["path"].split("/")[1]: r for r in server.requests if not r["path"].startswith("/_matrix")}
        matrix = [r for r in server.requests if r["path"].startswith("/_matrix")]
        assert sorted(by_path) == ["mattermost", "slack", "teams"] and len(matrix) == 2  # not slack-success-only
        assert len(server.requests) == 5
        for request in server.requests:
            assert DB_PASSWORD not in request["raw"] and "********" in request["raw"]

        for name in ("slack", "mattermost"):  # incoming webhook: text plus one coloured attachment
            request = by_path[name]
            assert request["method"] == "POST" and request["headers"]["Content-Type"] == "application/json"
            body = request["body"]
            assert body["text"] == "polycrate alerts: workflow nightly failed"
            attachment = body["attachments"][0]
            assert attachment["color"] == "#d40e0d" and attachment["title"] == body["text"]
            fields = {f["title"]: f["value"] for f in attachment["fields"]}
            assert fields["run"] == run_id and fields["failed step"] == "backup"
            assert fields["message"] == "pg_dump: password authentication failed for ********"
        assert by_path["slack"]["path"] == SLACK_PATH

        teams = by_path["teams"]["body"]  # Teams workflow: an Adaptive Card in an attachments envelope
        assert teams["type"] == "message" and len(teams["attachments"]) == 1
        assert teams["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
        card = teams["attachments"][0]["content"]
        assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
        assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
        assert card["body"][0] == {"type": "TextBlock", "text": "polycrate alerts: workflow nightly failed",
                                   "weight": "Bolder", "size": "Medium", "wrap": True, "color": "Attention"}
        facts = {f["title"]: f["value"] for f in card["body"][1]["facts"]}
        assert card["body"][1]["type"] == "FactSet" and facts["failed step"] == "backup"

        good = next(r for r in matrix if r["headers"].get("Authorization") == f"Bearer {MATRIX_TOKEN}")
        assert good["method"] == "PUT"
        assert re.fullmatch(r"/_matrix/client/v3/rooms/%21ops-room%3Aexample\.org/send/m\.room\.message/[^/]+",
                            good["path"]), good["path"]
        assert good["body"]["msgtype"] == "m.notice" and good["body"]["format"] == "org.matrix.custom.html"
        assert good["body"]["body"].startswith("polycrate alerts: workflow nightly failed\n")
        assert "<b>failed step</b>: backup" in good["body"]["formatted_body"]
        txns = {r["path"].rsplit("/", 1)[1] for r in matrix}
        assert len(txns) == 2  # each PUT has its own transaction id (a repeated one would be deduplicated)

        warnings = [n["text"] for n in json.loads(failed.stdout)["notices"]]  # the run's JSON carries them
        assert warnings == ["warning: notification 'matrix-bad-token' (matrix) failed: the server answered HTTP 401 "
                            "(M_UNKNOWN_TOKEN: Invalid access token passed.); the run's result stands"]
        for secret in (MATRIX_TOKEN, "XyZsecretHookToken", "mmtoken123", DB_PASSWORD):
            assert secret not in failed.output

        server.requests.clear()
        test = run_cli("notify", "test", cwd=ws, env=env)
        assert test.returncode == 1  # matrix-bad-token
        assert test.stdout.splitlines() == [f"sent: notification '{n}' ({t})" for n, t in (
            ("slack", "slack"), ("mattermost", "mattermost"), ("teams", "teams"), ("matrix", "matrix"),
            ("slack-success-only", "slack"))]
        assert test.stderr == ("polycrate: error: notification 'matrix-bad-token' (matrix) failed: the server "
                               "answered HTTP 401 (M_UNKNOWN_TOKEN: Invalid access token passed.)\n")
        assert len(server.requests) == 6
        assert all("test message" in r["raw"] for r in server.requests)
        doc = validate_document(json.loads(run_cli("notify", "test", "slack", "matrix-bad-token", "-o", "json",
                                                   cwd=ws, env=env).stdout), "notify-test")
        assert [(c["name"], c["sent"]) for c in doc["channels"]] == [("slack", True), ("matrix-bad-token", False)]
        assert doc["channels"][1]["error"].startswith("the server answered HTTP 401")
    finally:
        server.stop()


def test_workspace_validate_refuses_a_bad_notification_with_file_and_line(tmp_path):
    ws = make_workspace(tmp_path / "ws", "  - name: chat\n    type: slack\n    url: https://hooks.slack.com/services/T/B/tok\n")
    result = run_cli("workspace", "validate", cwd=ws)
    assert result.returncode == 2 and "Traceback" not in result.output
    assert result.stderr.splitlines() == [
        "polycrate: error: workspace.poly:17: notification 'chat': 'url' is a secret and workspace.poly is "
        "committed: write url: {secret: PATH} (a key under config: in secrets.poly) or url: {env: NAME}, not the value"
    ]
    assert "tok" not in result.stdout


def test_workspace_validate_finds_a_misspelled_secret_and_warns_of_an_unset_variable(tmp_path):
    ws = make_workspace(tmp_path / "ws", "  - name: mail\n    type: email\n    host: 127.0.0.1\n"
                        "    username: alerts\n    password: {secret: notify.smtp_pasword}\n"
                        "    from: a@example.org\n    to: b@example.org\n"
                        "  - {name: chat, type: slack, url: {env: TEST_UNSET_SLACK_URL}}\n")
    result = run_cli("workspace", "validate", cwd=ws, env={"TEST_UNSET_SLACK_URL": ""})
    assert result.returncode == 2 and SMTP_PASSWORD not in result.output
    assert result.stderr.splitlines() == [
        "polycrate: error: workspace.poly:19: notification 'mail' (email): 'password': secrets.poly has no "
        "config.notify.smtp_pasword",
        "polycrate: warning: workspace.poly:22: notification 'chat' (slack): 'url': environment variable "
        "TEST_UNSET_SLACK_URL is not set",
    ]
    text = (ws / "workspace.poly").read_text().replace("smtp_pasword", "smtp_password")
    (ws / "workspace.poly").write_text(text)
    fixed = run_cli("workspace", "validate", cwd=ws, env={"TEST_UNSET_SLACK_URL": ""})
    assert fixed.returncode == 0 and "warning" in fixed.stderr and "error" not in fixed.stderr  # a warning only
    assert run_cli("workspace", "validate", cwd=ws, env={"TEST_UNSET_SLACK_URL": "http://x/"}).stderr == ""


def test_an_interrupted_run_is_a_failure_for_the_channels(tmp_path):
    server = HttpRecorder().start()
    proc = None
    try:
        ws = make_workspace(tmp_path / "ws", "  - {name: chat, type: mattermost, url: {secret: notify.url}}\n",
                            secrets_config=f"    url: {server.url}/hooks/x\n")
        proc = start_cli("workflows", "run", "long", cwd=ws)
        wait_for(lambda: (ws / "started").exists(), what="the step to start")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, out + err
        assert [r["body"]["text"] for r in server.requests] == ["polycrate alerts: workflow long interrupted"]
        assert server.requests[0]["body"]["attachments"][0]["color"] == "#d40e0d"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        server.stop()
