"""Real servers on loopback for the notification tests, started and stopped by the tests.

* ``SmtpServer``: aiosmtpd (a real SMTP server) on a free loopback port that requires STARTTLS (or
  speaks TLS from the first byte, SMTPS), with
  a self-signed certificate made by the openssl CLI for 127.0.0.1, and AUTH (LOGIN/PLAIN) checked
  against one user and password; it keeps every mail it accepted with its session's TLS and login.
* ``HttpRecorder``: an HTTP server that records every request (method, path, headers, JSON body)
  and answers as Slack, Mattermost, Teams workflows and a Matrix homeserver do.
* ``SilentServer``: a socket that accepts connections and never answers (a hung endpoint).
"""
from __future__ import annotations

import email
import email.policy
import http.server
import json
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import free_port


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A certificate for IP 127.0.0.1 (and localhost) and its key, valid for a day."""
    cert, key = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )
    return cert, key


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: email.message.EmailMessage
    tls: bool  # the mail came after STARTTLS
    login: str | None  # the user that logged in
    mechanism: str | None  # the AUTH mechanism the client used

    @property
    def text(self) -> str:
        return self.message.get_content()


def tls_in_use(server, session) -> bool:
    """The SMTP session runs over TLS (after STARTTLS, or from the first byte)."""
    return session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None


class SmtpServer:
    def __init__(self, folder: Path, user: str, password: str, exclude: tuple[str, ...] = (),
                 implicit_tls: bool = False):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.cert, self.key = self_signed_cert(folder)
        self.mails: list[Mail] = []
        self.refused_logins: list[str] = []
        mechanisms: dict[int, str] = {}
        outer = self

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (isinstance(auth_data, LoginPassword) and auth_data.login == user.encode()
                  and auth_data.password == password.encode())
            if ok:
                mechanisms[id(session)] = mechanism
            else:
                outer.refused_logins.append(mechanism)
            return AuthResult(success=ok, handled=False, auth_data=auth_data)

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                message = email.message_from_bytes(envelope.original_content or envelope.content,
                                                   policy=email.policy.default)
                auth = session.auth_data
                login = auth.login.decode() if isinstance(auth, LoginPassword) else None
                outer.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), message,
                                        tls_in_use(server, session), login, mechanisms.get(id(session))))
                return "250 OK"

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.cert), str(self.key))
        self.port = free_port()
        # aiosmtpd offers AUTH under implicit TLS only with auth_require_tls off (it looks for STARTTLS);
        # the connection is TLS from its first byte there, and the mail records it (tls_in_use)
        tls = ({"ssl_context": context, "auth_require_tls": False} if implicit_tls
               else {"tls_context": context, "require_starttls": True, "auth_require_tls": True})
        self.controller = Controller(
            Handler(), hostname="127.0.0.1", port=self.port, auth_required=True,
            authenticator=authenticator, auth_exclude_mechanism=list(exclude), server_hostname="127.0.0.1", **tls,
        )

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


class _Recorder(http.server.BaseHTTPRequestHandler):
    def _record(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self.server.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                     "raw": raw.decode("utf-8", "replace"), "body": body})
        status = self.server.status
        if self.path.startswith("/_matrix/"):
            if self.headers.get("Authorization") != f"Bearer {self.server.matrix_token}":
                self._answer(401, {"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token passed."})
            else:
                self._answer(status, {"event_id": f"$event{len(self.server.requests)}"})
        elif self.path.startswith("/teams"):
            self._answer(202 if status == 200 else status, None)  # Power Automate answers 202 Accepted
        else:
            self._answer(status, "ok")  # Slack and Mattermost answer "ok" in text

    def _answer(self, status: int, body):
        data = b"" if body is None else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_PUT = _record

    def log_message(self, *args):
        pass


class HttpRecorder:
    def __init__(self, matrix_token: str = "", status: int = 200):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        self.server.requests = []
        self.server.status = status
        self.server.matrix_token = matrix_token
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def requests(self) -> list[dict]:
        return self.server.requests

    def start(self) -> HttpRecorder:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SilentServer:
    """Accepts TCP connections and never says a word: a hung HTTP or SMTP endpoint."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def stop(self) -> None:
        self.sock.close()
