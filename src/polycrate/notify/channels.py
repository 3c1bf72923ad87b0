"""Mail and chat channels (`notifications:`): one message per finished run, in each channel's format.

The content comes from the run's payload, the same (already masked) body the webhooks POST
(``contract.webhook_body``: the run as ``runs show -o json`` prints it): ``render`` turns it into a title,
facts and step lines, and each channel lays those out in its own format:

* ``email``: SMTP with STARTTLS (or implicit TLS) and a login, a text/plain mail;
* ``slack`` and ``mattermost``: an incoming-webhook POST, ``text`` plus one coloured attachment;
* ``teams``: a Microsoft Teams workflow webhook (Power Automate), an Adaptive Card in an
  ``attachments`` envelope;
* ``matrix``: ``PUT /_matrix/client/v3/rooms/{room}/send/m.room.message/{txnId}`` with an access token.

A channel's secret (SMTP password, Matrix token, a chat webhook URL, which carries its token) is
resolved at send time from secrets.poly's ``config:`` or the environment, added to the run's masker
and never printed: an error names the channel, never its URL. A notification never fails a run:
every error becomes one warning line (``notice``).
"""
from __future__ import annotations

import json
import os
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, UTC
from typing import Any
from collections.abc import Callable, Mapping

from polycrate.config.model import Notification, SecretRef

TEST_EVENT = "polycrate.notify.test"
GOOD, BAD, NEUTRAL = "#2eb886", "#d40e0d", "#439fe0"


class ChannelError(Exception):
    """Why one channel could not deliver, in one line that holds no secret."""


# --- what a message says ------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    title: str
    ok: bool | None  # True: succeeded, False: failed or interrupted, None: a test message
    facts: list[tuple[str, str]] = field(default_factory=list)
    steps: list[tuple[str, str, str]] = field(default_factory=list)  # name, status, duration
    next: list[str] = field(default_factory=list)  # commands to run next

    @property
    def color(self) -> str:
        return NEUTRAL if self.ok is None else GOOD if self.ok else BAD

    def text(self) -> str:
        """The plain text of the message (a mail's body, chat fallbacks, Matrix's `body`)."""
        width = max((len(k) for k, _ in self.facts), default=0) + 1
        lines = [self.title, ""]
        lines += [f"{(key + ':').ljust(width)} {value}" for key, value in self.facts]
        if self.steps:
            name_w = max(len(s[0]) for s in self.steps)
            state_w = max(len(s[1]) for s in self.steps)
            lines += ["", "steps:"] + [f"  {n.ljust(name_w)}  {st.ljust(state_w)}  {d}".rstrip()
                                       for n, st, d in self.steps]
        if self.next:
            lines += ["", "next:"] + [f"  {command}" for command in self.next]
        return "\n".join(lines) + "\n"


def _when(value: Any) -> str:
    """A timestamp of the payload (epoch seconds or ISO 8601) as ISO 8601 UTC."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def _seconds(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.1f}s"
    return str(value)


def _run_id(payload: Mapping[str, Any]) -> str | None:
    return payload.get("run_id") or payload.get("id")


def render(payload: Mapping[str, Any]) -> Message:
    """The message of a finished run's payload (or of `notify test`'s)."""
    workspace = payload.get("workspace") or "?"
    if payload.get("event") == TEST_EVENT:
        return Message(
            f"polycrate {workspace}: test message",
            None,
            [("channel", str(payload.get("channel"))), ("sent by", str(payload.get("sent_by"))),
             ("at", _when(payload.get("time")))],
        )
    kind = payload.get("kind") or "run"
    name = payload.get("workflow") or payload.get("name") or payload.get("action") or "?"
    status = str(payload.get("status") or "?")
    ok = status == "succeeded"
    what = f"{kind} {name}"
    title = f"polycrate {workspace}: {what} {status}"
    run_id = _run_id(payload)
    facts: list[tuple[str, str]] = [("run", str(run_id))]
    exit_code = payload.get("exit_code")
    facts.append(("status", status + (f" (exit {exit_code})" if exit_code not in (None, 0) else "")))
    if payload.get("check") or payload.get("check_mode"):
        facts.append(("mode", "check"))
    for key, label in (("failed_step", "failed step"), ("failed_task", "task"), ("failed_host", "host"),
                       ("message", "message")):
        if payload.get(key):
            facts.append((label, str(payload[key])))
    if payload.get("duration") is not None:
        facts.append(("duration", _seconds(payload["duration"])))
    if payload.get("started") is not None:
        facts.append(("started", _when(payload["started"])))
    if payload.get("resumed_from"):
        facts.append(("resumed from", str(payload["resumed_from"])))
    if payload.get("user") or payload.get("host"):
        facts.append(("ran on", f"{payload.get('user') or '?'}@{payload.get('host') or '?'}"))
    steps = [(str(s.get("name")), str(s.get("status")), _seconds(s.get("duration")) if s.get("duration") else "")
             for s in payload.get("steps") or () if isinstance(s, Mapping)]
    commands = [f"polycrate runs show {run_id}"] if run_id else []
    if not ok and payload.get("kind") == "workflow" and payload.get("workflow"):
        commands.append(f"polycrate workflows run {payload['workflow']} --resume")
    return Message(title, ok, facts, steps, commands)


# --- each channel's format -------------------------------------------------------------------


def slack_body(message: Message) -> dict[str, Any]:
    """Slack and Mattermost incoming webhooks: `text` (notifications, clients without attachments)
    and one attachment with the colour of the result, the facts as fields and the steps."""
    fields = [{"title": key, "value": value, "short": key not in ("message", "task")} for key, value in message.facts]
    attachment: dict[str, Any] = {"fallback": message.title, "color": message.color, "title": message.title,
                                  "fields": fields}
    extra = [f"{n}: {st} {d}".rstrip() for n, st, d in message.steps] + message.next
    if extra:
        attachment["text"] = "\n".join(extra)
    return {"text": message.title, "attachments": [attachment]}


def teams_body(message: Message) -> dict[str, Any]:
    """A Microsoft Teams workflow webhook ("Post to a channel when a webhook request is received"):
    a message whose attachment is an Adaptive Card."""
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": message.title, "weight": "Bolder", "size": "Medium", "wrap": True,
         "color": "Default" if message.ok is None else "Good" if message.ok else "Attention"},
        {"type": "FactSet", "facts": [{"title": key, "value": value} for key, value in message.facts]},
    ]
    if message.steps:
        body.append({"type": "TextBlock", "wrap": True, "spacing": "Medium",
                     "text": "\n\n".join(f"{n}: {st} {d}".rstrip() for n, st, d in message.steps)})
    if message.next:
        body.append({"type": "TextBlock", "wrap": True, "isSubtle": True, "fontType": "Monospace",
                     "text": "\n\n".join(message.next)})
    card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
            "version": "1.4", "body": body}
    return {"type": "message",
            "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
                             "content": card}]}


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def matrix_body(message: Message) -> dict[str, Any]:
    """An `m.room.message` of msgtype `m.notice` (a bot's message), plain text and HTML."""
    facts = "".join(f"<li><b>{_html(k)}</b>: {_html(v)}</li>" for k, v in message.facts)
    html = f"<p><b>{_html(message.title)}</b></p><ul>{facts}</ul>"
    if message.steps or message.next:
        html += "<pre>" + _html(message.text().split("\n\n", 2)[-1].rstrip()) + "</pre>"
    return {"msgtype": "m.notice", "body": message.text(), "format": "org.matrix.custom.html",
            "formatted_body": html}


def mail(channel: Notification, message: Message, run_id: str | None) -> Any:
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    mail = EmailMessage()
    mail["Subject"] = message.title
    mail["From"] = channel.sender
    mail["To"] = ", ".join(channel.to)
    mail["Date"] = formatdate(localtime=False, usegmt=True)
    mail["Message-ID"] = make_msgid("polycrate", domain=(channel.sender or "@localhost").rsplit("@", 1)[1])
    mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a robot
    if run_id:
        mail["X-Polycrate-Run"] = run_id
    mail.set_content(message.text())
    return mail


# --- delivery --------------------------------------------------------------------------------


class Secrets:
    """Where channel secrets are looked up: secrets.poly's `config:` and the environment. Every value
    handed out is added to `masker` first, so no line printed or stored afterwards carries it."""

    def __init__(self, config: Mapping[str, Any] | None, masker: Any = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.config = config or {}
        self.masker = masker
        self.environ = os.environ if environ is None else environ

    def get(self, ref: SecretRef) -> str:
        value: Any
        if ref.source == "env":
            value = self.environ.get(ref.name)
            if not value:
                raise ChannelError(f"environment variable {ref.name} is not set")
        else:
            value = self.config
            for part in ref.name.split("."):
                if not isinstance(value, Mapping) or part not in value:
                    raise ChannelError(f"secrets.poly has no config.{ref.name}")
                value = value[part]
            if isinstance(value, (dict, list)) or value is None or value == "":
                raise ChannelError(f"config.{ref.name} in secrets.poly is not a text value")
            value = str(value)
        if self.masker is not None:
            self.masker.add(value)
        return value


def _http(url: str, body: dict[str, Any], timeout: float, method: str = "POST",
          headers: Mapping[str, str] | None = None) -> None:
    if not url.startswith(("http://", "https://")):
        raise ChannelError("the URL is not an http:// or https:// URL")
    data = json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json", "User-Agent": "polycrate-notify", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(4096)
    except urllib.error.HTTPError as exc:
        detail = ""
        try:
            answer = json.loads(exc.read(4096) or b"{}")
            if isinstance(answer, dict) and answer.get("errcode"):  # Matrix says why
                detail = f" ({answer['errcode']}: {str(answer.get('error', ''))[:120]})"
        except Exception:
            pass
        raise ChannelError(f"the server answered HTTP {exc.code}{detail}") from None
    except urllib.error.URLError as exc:
        raise ChannelError(_network_reason(exc.reason, timeout)) from None
    except (OSError, ValueError) as exc:
        raise ChannelError(_network_reason(exc, timeout)) from None


def _network_reason(reason: Any, timeout: float) -> str:
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return f"no answer within {timeout:g}s"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"its TLS certificate is not trusted ({reason.verify_message})"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror[:1].lower() + reason.strerror[1:]
    return str(reason)


def send_email(channel: Notification, message: Message, secrets: Secrets, run_id: str | None) -> None:
    import smtplib

    password = secrets.get(channel.password) if channel.password else None
    try:
        context = ssl.create_default_context(cafile=channel.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ChannelError(f"cannot read ca_file {channel.ca_file}: {getattr(exc, 'strerror', None) or exc}") \
            from None
    host, port, timeout = channel.host or "", channel.port or 0, channel.timeout
    try:
        if channel.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
        with smtp:
            smtp.ehlo()
            if channel.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise ChannelError(f"{host}:{port} does not offer STARTTLS; nothing was sent (security: tls "
                                       "for port 465)")
                smtp.starttls(context=context)
                smtp.ehlo()
            if channel.username:
                smtp.login(channel.username, password or "")
            refused = smtp.send_message(mail(channel, message, run_id))
            if refused:
                raise ChannelError(f"the server refused {', '.join(sorted(refused))}")
    except ChannelError:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise ChannelError(f"{host}:{port} refused the login of {channel.username} ({exc.smtp_code})") from None
    except smtplib.SMTPNotSupportedError:
        raise ChannelError(f"{host}:{port} offers no login (AUTH) on this connection") from None
    except smtplib.SMTPException as exc:
        code = getattr(exc, "smtp_code", None)
        text = getattr(exc, "smtp_error", b"")
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text or exc)
        raise ChannelError(f"{host}:{port}: {code + ' ' if code else ''}{text}".strip()[:200]) from None
    except (OSError, ssl.SSLError) as exc:
        raise ChannelError(f"{host}:{port}: {_network_reason(exc, timeout)}") from None


def _ref(ref: SecretRef | None, channel: Notification, key: str) -> SecretRef:
    """The channel's secret reference; config/schema.py requires it for the channel's type."""
    if ref is None:
        raise ChannelError(f"notification channel '{channel.name}' has no '{key}'")
    return ref


def send(channel: Notification, payload: Mapping[str, Any], secrets: Secrets) -> None:
    """Deliver one message on one channel; raise ChannelError (a line without secrets) when it fails."""
    message = render(payload)
    masker = secrets.masker
    if masker is not None:  # the payload is masked by the caller; the message is built from it, and masked again
        message = Message(masker.mask(message.title), message.ok,
                          [(k, masker.mask(v)) for k, v in message.facts],
                          [(masker.mask(n), st, d) for n, st, d in message.steps], message.next)
    run_id = _run_id(payload)
    if channel.type == "email":
        send_email(channel, message, secrets, run_id)
    elif channel.type in ("slack", "mattermost"):
        _http(secrets.get(_ref(channel.url, channel, "url")), slack_body(message), channel.timeout)
    elif channel.type == "teams":
        _http(secrets.get(_ref(channel.url, channel, "url")), teams_body(message), channel.timeout)
    elif channel.type == "matrix":
        token = secrets.get(_ref(channel.token, channel, "token"))
        txn = f"polycrate-{run_id or 'test'}-{channel.name}-{os.urandom(4).hex()}"
        url = (f"{channel.homeserver}/_matrix/client/v3/rooms/{urllib.parse.quote(channel.room or '', safe='')}"
               f"/send/m.room.message/{urllib.parse.quote(txn, safe='')}")
        _http(url, matrix_body(message), channel.timeout, method="PUT",
              headers={"Authorization": f"Bearer {token}"})
    else:  # schema.py admits only the types above
        raise ChannelError(f"unknown type {channel.type!r}")


def references(channel: Notification) -> list[tuple[str, SecretRef]]:
    """The channel's secrets: (key, reference)."""
    return [(key, ref) for key in ("url", "password", "token") if (ref := getattr(channel, key)) is not None]


def check_references(channels: tuple[Notification, ...], config: Mapping[str, Any] | None,
                     environ: Mapping[str, str] | None = None) -> list[tuple[SecretRef, str, bool]]:
    """What `workspace validate` says about the channels' secrets before a night needs them:
    (reference, message, is_error). A `{secret:}` missing from secrets.poly is an error (`config` None:
    secrets.poly was not readable, not checked); an unset `{env:}` is a warning, since the shell that
    validates is seldom the environment the scheduled run gets."""
    found = []
    lookup = Secrets(config, None, environ)
    for channel in channels:
        for key, ref in references(channel):
            if ref.source == "secret" and config is None:
                continue
            try:
                lookup.get(ref)
            except ChannelError as exc:
                found.append((ref, f"{describe(channel)}: '{key}': {exc}", ref.source == "secret"))
    return found


def describe(channel: Notification) -> str:
    """How a channel is named in a line: never with its URL (a chat webhook's URL is its token)."""
    return f"notification '{channel.name}' ({channel.type})"


def send_all(channels: tuple[Notification, ...], payload: Mapping[str, Any], notice: Callable[[str], None],
             secrets: Secrets) -> int:
    """Send a finished run's message on every channel whose `on:` wants it; return how many were
    delivered. A failure is one warning line through `notice` and never raises."""
    from polycrate.notify.webhooks import wanted

    sent = 0
    for channel in channels:
        if not wanted(channel, dict(payload)):
            continue
        try:
            send(channel, payload, secrets)
            sent += 1
        except ChannelError as exc:
            notice(f"warning: {describe(channel)} failed: {exc}; the run's result stands")
        except Exception as exc:  # a notification never fails a run
            notice(f"warning: {describe(channel)} failed: {type(exc).__name__}: {exc}; the run's result stands")
    return sent


def probe_payload(workspace: str, channel: Notification, sent_by: str) -> dict[str, Any]:
    import time

    return {"event": TEST_EVENT, "workspace": workspace, "channel": channel.name, "sent_by": sent_by,
            "time": time.time()}
