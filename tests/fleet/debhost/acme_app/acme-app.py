#!/usr/bin/python3
"""acme-app: tiny demo web application used by the polycrate e2e fleet.

GET /health  -> 200 {"status": "ok", "version": ...}   (500 in a "broken" build, or when
                the database does not answer)
GET /db      -> the database it uses and the migrations applied there (JSON)
GET /version -> the version as plain text
GET /        -> a short text page naming the version
Configuration via environment (see /etc/default/acme-app):
ACME_APP_PORT (default 8080), ACME_APP_BIND (default 127.0.0.1), ACME_DB_HOST and ACME_DB_PORT
(the PostgreSQL server, reached over TCP with psql: localhost or another host).
"""
import json
import os
import signal
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "@VERSION@"
# "ok": healthy build; "health": /health answers 500; "start": exits at start.
BROKEN = "@BROKEN@"


def database():
    """(address, migrations applied or None, error): one query over TCP, as the application's own."""
    host = os.environ.get("ACME_DB_HOST") or "localhost"
    port = os.environ.get("ACME_DB_PORT") or os.environ.get("PGPORT") or "5432"
    env = dict(os.environ, PGPASSFILE="/root/.pgpass", PGCONNECT_TIMEOUT="3")
    try:
        res = subprocess.run(["psql", "-h", host, "-p", port, "-U", "acme", "-d", "acme_app", "-tAc",
                              "SELECT coalesce(string_agg(version, ',' ORDER BY version), '') FROM schema_migrations"],
                             capture_output=True, text=True, timeout=10, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "%s:%s" % (host, port), None, str(exc)
    if res.returncode != 0:
        return "%s:%s" % (host, port), None, res.stderr.strip()[-300:]
    return "%s:%s" % (host, port), [v for v in res.stdout.strip().split(",") if v], ""


class Handler(BaseHTTPRequestHandler):
    server_version = "acme-app/" + VERSION

    def _send(self, code, body, ctype):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Acme-Version", VERSION)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path in ("/health", "/healthz"):
            if BROKEN == "health":
                body = {"status": "error", "version": VERSION,
                        "error": "database migration failed"}
                self._send(500, json.dumps(body) + "\n", "application/json")
            else:
                address, migrations, error = database()
                if migrations is None:
                    body = {"status": "error", "version": VERSION,
                            "error": "database %s unreachable: %s" % (address, error)}
                    self._send(500, json.dumps(body) + "\n", "application/json")
                else:
                    body = {"status": "ok", "version": VERSION}
                    self._send(200, json.dumps(body) + "\n", "application/json")
        elif path == "/db":
            address, migrations, error = database()
            body = {"database": address, "migrations": migrations, "error": error}
            self._send(200 if migrations is not None else 500, json.dumps(body) + "\n", "application/json")
        elif path == "/version":
            self._send(200, VERSION + "\n", "text/plain")
        elif path == "/":
            self._send(200, "acme-app " + VERSION + "\n", "text/plain")
        else:
            self._send(404, "not found\n", "text/plain")

    do_HEAD = do_GET

    def log_message(self, fmt, *args):
        sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))
        sys.stderr.flush()


def main():
    if BROKEN == "start":
        sys.stderr.write("acme-app %s: fatal: cannot load configuration\n" % VERSION)
        return 1
    port = int(os.environ.get("ACME_APP_PORT", "8080"))
    bind = os.environ.get("ACME_APP_BIND", "127.0.0.1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ThreadingHTTPServer.allow_reuse_address = True
    httpd = ThreadingHTTPServer((bind, port), Handler)
    sys.stderr.write("acme-app %s listening on %s:%d\n" % (VERSION, bind, port))
    sys.stderr.flush()
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
