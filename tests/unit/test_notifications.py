"""notifications: in workspace.poly (schema.py, errors with file:line) and the channels' message formats
(channels.py, pure). Delivery to real SMTP and HTTP servers: tests/integration/test_notifications.py."""
import pytest

from polycrate import contract
from polycrate.history import RunRecord
from polycrate.notify import channels
from polycrate.errors import ConfigError
from polycrate.secrets.masking import Masker
from polycrate.config.model import SecretRef
from polycrate.config.schema import read_workspace_file
from tests.conftest import write

HEAD = "name: ws\nnotifications:\n"
MAIL = ("  - name: mail\n    type: email\n    host: smtp.example.org\n    username: alerts\n"
        "    password: {secret: notify.smtp}\n    from: polycrate@example.org\n    to: ops@example.org\n")


def _read(tmp_path, text):
    write(tmp_path / "workspace.poly", HEAD + text)
    return read_workspace_file(tmp_path).run_settings.notifications


def test_each_type_parses_with_safe_defaults(tmp_path):
    mail, slack, matrix = _read(tmp_path, MAIL + "    ca_file: certs/ca.pem\n"
                                "  - {name: chat, type: slack, url: {env: SLACK_URL}, 'on': [success, failure]}\n"
                                "  - name: mx\n    type: matrix\n    homeserver: https://matrix.example.org/\n"
                                "    room: '!abc:example.org'\n    token: {secret: mx.token}\n    on: success\n")
    assert (mail.security, mail.port, mail.on, mail.to, mail.timeout) == ("starttls", 587, ("failure",),
                                                                         ("ops@example.org",), 10.0)
    assert mail.password == SecretRef("secret", "notify.smtp") and mail.ca_file == str(tmp_path / "certs/ca.pem")
    assert slack.url == SecretRef("env", "SLACK_URL") and slack.on == ("success", "failure")
    assert matrix.homeserver == "https://matrix.example.org" and matrix.on == ("success",)
    tls, = _read(tmp_path, MAIL + "    security: tls\n")
    assert tls.port == 465


@pytest.mark.parametrize("text, line, fragment", [
    ("  - {name: a, type: discord}\n", 3, "'type' must be one of email, slack, mattermost, teams, matrix"),
    ("  - {name: a, type: slack, url: 'https://hooks.slack.com/services/T/B/x'}\n", 3, "'url' is a secret"),
    ("  - {name: a, type: slack, url: {vault: x}}\n", 3, "takes one of {secret: PATH} or {env: NAME}"),
    ("  - {name: a, type: slack, url: {env: 'not a name'}}\n", 3, "is not an environment variable name"),
    ("  - {name: a, type: slack}\n", 3, "missing required key 'url'"),
    ("  - {name: a, type: slack, url: {env: X}, channel: ops}\n", 3, "unknown key 'channel'"),
    ("  - {name: a, type: slack, url: {env: X}, 'on': [always]}\n", 3, "'on' takes success and failure"),
    ("  - {name: a, type: slack, url: {env: X}, 'on': []}\n", 3, "'on' is empty"),
    ("  - {name: a, type: slack, url: {env: X}, timeout: 900}\n", 3, "'timeout' is at most 300 seconds"),
    ("  - {name: a, type: slack, url: {env: X}}\n  - {name: a, type: teams, url: {env: Y}}\n", 4,
     "duplicate notification 'a'"),
    (MAIL.replace("password: {secret: notify.smtp}", "password: hunter2"), 7, "'password' is a secret"),
    (MAIL.replace("    username: alerts\n", ""), 6, "'password' needs 'username'"),
    (MAIL + "    security: none\n", 10, "would send the password unencrypted"),
    (MAIL + "    security: ssl\n", 10, "'security' must be one of starttls, tls, none"),
    (MAIL + "    port: 99999\n", 10, "'port' must be a port number"),
    (MAIL.replace("host: smtp.example.org", "host: smtp.example.org/x"), 5, "'host' must be the SMTP server's"),
    (MAIL.replace("host: smtp.example.org", "host: 1.0e+10"), 5, "'host' must be the SMTP server's"),
    (MAIL.replace("username: alerts", "username: ' alerts'"), 6, "'username' must be the login name"),
    (MAIL.replace("to: ops@example.org", "to: []"), 9, "'to' needs at least one mail address"),
    (MAIL.replace("to: ops@example.org", "to: ['ops@example.org\\nBcc: x@evil.example']"), 9,
     "'to' must be a mail address"),
    (MAIL.replace("from: polycrate@example.org", "from: polycrate"), 8, "'from' must be a mail address"),
    ("  - {name: m, type: matrix, homeserver: 'https://m.org', room: '#ops:m.org', token: {env: T}}\n", 3,
     "needs the room's ID"),
    ("  - {name: m, type: matrix, homeserver: 'matrix.org', room: '!a:m.org', token: {env: T}}\n", 3,
     "'homeserver' must be an http:// or https:// URL"),
])
def test_each_mistake_is_one_error_with_its_line(tmp_path, text, line, fragment):
    with pytest.raises(ConfigError) as caught:
        _read(tmp_path, text)
    assert caught.value.line == line and fragment in caught.value.message, (caught.value.line, caught.value.message)
    assert caught.value.path.endswith("workspace.poly") and "\n" not in caught.value.message


def test_secrets_come_from_secrets_poly_or_the_environment_and_join_the_masker():
    masker = Masker()
    secrets = channels.Secrets({"notify": {"smtp": "s3cret-smtp", "nested": {"x": 1}}}, masker,
                               environ={"TOKEN": "env-t0ken-value"})
    assert secrets.get(SecretRef("secret", "notify.smtp")) == "s3cret-smtp"
    assert secrets.get(SecretRef("env", "TOKEN")) == "env-t0ken-value"
    assert masker.mask("a env-t0ken-value b s3cret-smtp") == "a ******** b ********"
    for ref, message in ((SecretRef("secret", "notify.missing"), "secrets.poly has no config.notify.missing"),
                         (SecretRef("secret", "notify.nested"), "is not a text value"),
                         (SecretRef("env", "UNSET"), "environment variable UNSET is not set")):
        with pytest.raises(channels.ChannelError, match=message):
            secrets.get(ref)


RECORD = {"id": "20261201-192314-b5da7f", "kind": "workflow", "name": "nightly", "workflow": "nightly",
          "status": "failed", "exit_code": 1, "started": 1764617000.0, "ended": 1764617042.5, "duration": 42.5,
          "failed_step": "update", "failed_task": "apt upgrade", "failed_host": "db1",
          "message": "dpkg was interrupted <fix> & retry", "host": "ops1", "user": "root",
          "steps": [{"position": 1, "name": "backup", "status": "succeeded", "duration": 30.2},
                    {"position": 2, "name": "update", "status": "failed", "duration": 12.3}]}
PAYLOAD = contract.webhook_body(RunRecord.from_dict(RECORD), "prod")  # the body every webhook gets: messages are built from it


def test_the_message_of_a_failed_run_in_each_format():
    message = channels.render(PAYLOAD)
    assert message.title == "polycrate prod: workflow nightly failed" and message.ok is False
    text = message.text()
    assert "status:      failed (exit 1)" in text and "started:     2025-12-01T19:23:20.000Z" in text
    assert "  update  failed     12.3s" in text
    assert "polycrate workflows run nightly --resume" in text and "ran on:      root@ops1" in text

    slack = channels.slack_body(message)
    assert slack["text"] == message.title and slack["attachments"][0]["color"] == channels.BAD
    assert {"title": "task", "value": "apt upgrade", "short": False} in slack["attachments"][0]["fields"]

    card = channels.teams_body(message)["attachments"][0]["content"]
    assert {"title": "failed host", "value": "db1"} not in card["body"][1]["facts"]
    assert {"title": "host", "value": "db1"} in card["body"][1]["facts"]

    matrix = channels.matrix_body(message)
    assert matrix["body"] == text and "dpkg was interrupted &lt;fix&gt; &amp; retry" in matrix["formatted_body"]
    assert "<fix>" not in matrix["formatted_body"]

    ok = channels.render(contract.webhook_body(RunRecord.from_dict(
        {**RECORD, "status": "succeeded", "exit_code": 0, "failed_step": None, "failed_task": None, "failed_host": None,
         "message": None}), "prod"))
    assert ok.ok and ok.color == channels.GOOD and "--resume" not in ok.text()
    assert ("status", "succeeded") in ok.facts


def test_an_action_run_is_named_by_its_block_and_action():
    message = channels.render(contract.webhook_body(RunRecord.from_dict(
        {**RECORD, "kind": "action", "name": "db backup", "workflow": None, "block": "db", "action": "backup"}), "prod"))
    assert message.title == "polycrate prod: action db backup failed" and "--resume" not in message.text()


def test_the_documented_example_is_valid_config(tmp_path):
    import re
    import textwrap
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "how-to" / "alerts.md").read_text()
    block = re.search(r"\n  ```yaml\n(  notifications:\n.*?)\n  ```\n", page, re.S)
    assert block, "the notifications example of docs/how-to/alerts.md"
    write(tmp_path / "workspace.poly", "name: ws\n" + textwrap.dedent(block.group(1)) + "\n")
    parsed = read_workspace_file(tmp_path).run_settings.notifications
    assert [(n.name, n.type) for n in parsed] == [("ops-mail", "email"), ("ops-slack", "slack"),
                                                  ("ops-teams", "teams"), ("ops-matrix", "matrix")]


def test_any_odd_value_in_any_key_is_a_config_error_or_accepted(tmp_path):
    """Every key of every channel type given each of the fuzzer's odd values: a ConfigError with a line,
    or a channel; never another exception."""
    import yaml

    from tests.integration.fuzz_workspaces import ODD_VALUES

    entries = {
        "email": {"name": "m", "type": "email", "host": "smtp.example.org", "port": 587, "security": "starttls",
                  "username": "u", "password": {"secret": "a.b"}, "from": "a@example.org", "to": ["b@example.org"],
                  "ca_file": "ca.pem", "timeout": 5, "on": ["failure"]},
        "slack": {"name": "s", "type": "slack", "url": {"env": "URL"}},
        "matrix": {"name": "x", "type": "matrix", "homeserver": "https://m.example.org", "room": "!a:m.org",
                   "token": {"secret": "t"}},
    }
    outcomes = {"error": 0, "accepted": 0}
    for entry in entries.values():
        for key in entry:
            for odd in ODD_VALUES + [{"secret": odd} for odd in ODD_VALUES[:12]]:
                text = yaml.safe_dump({"name": "ws", "notifications": [{**entry, key: odd}]}, allow_unicode=True)
                write(tmp_path / "workspace.poly", text)
                try:
                    read_workspace_file(tmp_path)
                    outcomes["accepted"] += 1
                except ConfigError as exc:
                    assert exc.line is not None and "\n" not in exc.message, (key, odd, exc.message)
                    outcomes["error"] += 1
    assert outcomes["error"] > 500 and outcomes["accepted"] > 20
