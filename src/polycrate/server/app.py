"""The web application: HTML pages, the JSON API under /api/v1, live logs over server-sent events.

Starlette with Jinja2 templates. Every request passes one gate (``_gate``): who is asking (a
session cookie or a bearer token), whether their role allows the route, and for state-changing
requests made with a session cookie, the CSRF token. Pages are plain HTML that read without
JavaScript; ``static/app.js`` (no inline script anywhere: the CSP forbids it) follows running logs
over server-sent events, and htmx (vendored, see static/VENDOR.md) refreshes the overview.

Blocking work (SQLite, loading workspaces, scrypt) runs in sync endpoints, which Starlette runs in
its thread pool; only the log stream is async.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import sys
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlencode, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from polycrate import __version__, ansi
from polycrate.errors import NotFoundError, PolycrateError
from polycrate.history import RunRecord
from polycrate.states import RUN_STATES, RunState, StepState, ended_word, signal_of, state_text
from polycrate import contract
from polycrate.server import chart, flash, openapi
from polycrate.server.catalog import Catalog
from polycrate.runtime.ansible_options import check_host_pattern
from polycrate.server.launch import (LaunchOptions, LaunchRefused, apply_declaration, enqueue_launch, failed_hosts,
                                     launch, parse_launch, prompts_of, sealed_of, stop, stop_launched)
from polycrate.server.launch_files import (DEFAULT_KEEP_SECRETS, SWEEP_SECONDS, WAITING_SECONDS, LaunchFiles,
                                           SecretsGone)
from polycrate.server.state import NO_ROLE, Principal, bounded
from polycrate.server.state_backends import open_state

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "pc_session"
LOGIN_COOKIE = "pc_login"  # the login form's CSRF token (double submit: cookie and form field)
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
       " form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SPANS = {"1h": 3600, "6h": 6 * 3600, "1d": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
LOG_TAIL = 256 * 1024  # bytes of each step's log a run page shows at first (older parts on demand)
BODY_LIMIT = 64 * 1024  # bytes of a request body: a launch or a form is a few hundred
STREAM_RECHECK = 1.0  # seconds between checks that a live stream's session or token still holds
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")
ANYONE = "anyone"  # a route's role: every authenticated user or token (one's own account)


@dataclass
class Settings:
    sources: list[Path]
    state_dir: Path
    tls: bool = False
    behind_proxy: bool = False
    allowed_hosts: tuple[str, ...] = ()  # Host header values served (the port aside); () = loopback names
    proxies: tuple[str, ...] = ("127.0.0.1", "::1")  # the reverse proxy whose X-Forwarded-* is believed
    body_limit: int = BODY_LIMIT
    backend: str | None = None  # team mode: the PostgreSQL DSN runs are read from (cli/ reads the user's setting)
    schedule_dests: tuple[Path, ...] | None = None  # where schedules are installed (None: systemd's and cron's)
    keep_launch_secrets: int = DEFAULT_KEEP_SECRETS  # seconds a launch's sealed secret values are kept (relaunch)


class HTTPError(Exception):
    def __init__(self, status: int, message: str, extra: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra or {}


# --- formatting for templates -----------------------------------------------------------------


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else ""


def _span(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m {int(seconds % 60)}s"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h {minutes % 60}m"
    return f"{hours // 24}d {hours % 24}h"


def _ago(t: float | None) -> str:
    return f"{_span(time.time() - t)} ago" if t else ""


def _until(t: float | None) -> str:
    return f"in {_span(t - time.time())}" if t else ""


def _templates() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    from polycrate.server.logview import render

    env.filters.update(when=_when, span=_span, ago=_ago, until=_until, words=state_text, ansi=render)
    # templates name states, never spell them
    env.globals.update(RunState=RunState, StepState=StepState, signal_of=signal_of, ended_word=ended_word)
    return env


# --- the application --------------------------------------------------------------------------


class Web:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.state = open_state(settings.state_dir, settings.backend)
        self.catalog = Catalog(settings.sources, backend=settings.backend, schedule_dests=settings.schedule_dests)
        self.templates = _templates()
        self.files = LaunchFiles(settings.state_dir, settings.keep_launch_secrets)
        self._sweeping = threading.Lock()

    # --- who is asking ---------------------------------------------------------------------

    def principal(self, request: Request) -> Principal | None:
        header = request.headers.get("authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return None
            return self.state.token(token.strip())
        session = request.cookies.get(SESSION_COOKIE)
        return self.state.session(session) if session else None

    def client(self, request: Request) -> str | None:
        return request.client.host if request.client else None

    def secure(self, request: Request) -> bool:
        return request.url.scheme == "https"

    # --- rendering -------------------------------------------------------------------------

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        who = getattr(request.state, "principal", None)
        context.setdefault("title", "")
        html = self.templates.get_template(template).render(
            request=request, who=who, csrf=who.csrf if who else None, version=__version__,
            run_states=RUN_STATES, **context)
        return HTMLResponse(html, status_code=status)

    def error(self, request: Request, exc: HTTPError) -> Response:
        if request.url.path.startswith("/api/"):
            headers = {"WWW-Authenticate": 'Bearer realm="polycrate"'} if exc.status == 401 else {}
            return JSONResponse({"error": exc.message, **exc.extra}, status_code=exc.status, headers=headers)
        if exc.status == 401:
            return self.login_page(request, status=401, message=exc.message, next_url=_return_to(request))
        return self.error_page(request, exc.status, exc.message)

    def error_page(self, request: Request, status: int, message: str) -> HTMLResponse:
        """The site's page for a refusal or an error that has no page of its own (the gate's 403, a 415, a page
        that does not exist): the usual layout, a heading in plain words, the message, and a link back to the
        page the user came from (this site's only) or else to the overview."""
        back = _came_from(request)
        return self.page(request, "error.html", status=status, title=_error_heading(status),
                         message=message, code=status, back=back or "/",
                         back_text="Back to the page you came from" if back else "Back to the overview")

    async def unrouted(self, request: Request, exc: Exception) -> Response:
        """Starlette's own 404 (no route, no static file) and 405 (a route, another method), in this server's
        words: the error page (with who is logged in) or the API's error document; a 405 keeps its Allow."""
        status = getattr(exc, "status_code", 404)
        path = bounded(request.url.path, 200)
        allow = next((v for k, v in (getattr(exc, "headers", None) or {}).items() if k.lower() == "allow"), None)
        headers = {"Allow": allow} if allow else {}
        api = request.url.path.startswith("/api/")
        if status == 405:
            message = f"{request.method} is not how {path} is used (it takes {allow or 'another method'})"
            if not api:
                message += ": use the page's buttons and forms"
        elif status == 404:
            message = f"no API route {path} (see /api/v1/openapi.json)" if api else f"no page at {path}"
        else:
            message = str(getattr(exc, "detail", "")) or f"HTTP {status}"
        if api:
            return JSONResponse({"error": message}, status_code=status, headers=headers)
        request.state.principal = await asyncio.to_thread(self.principal, request)
        response = self.error_page(request, status, message)
        response.headers.update(headers)
        return response

    def login_page(self, request: Request, status: int = 200, message: str | None = None,
                   next_url: str = "/") -> HTMLResponse:
        token = secrets.token_urlsafe(24)
        response = self.page(request, "login.html", status=status, title="Log in", message=message,
                             login_csrf=token, next_url=_local_path(next_url))
        response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=self.secure(request),
                            path="/login")
        return response

    # --- routes ----------------------------------------------------------------------------

    def routes(self) -> list:
        R = Route
        g = self.guard
        return [
            R("/login", self.login_form, methods=["GET"]),
            R("/login", self.login, methods=["POST"]),
            R("/logout", g(self.logout, "viewer"), methods=["POST"]),
            R("/", g(self.overview, "viewer")),
            R("/runs", g(self.runs_page, "viewer")),
            R("/runs/{run_id}", g(self.run_page, "viewer")),
            R("/runs/{run_id}/log/events", g(self.log_events, "viewer")),
            R("/runs/{run_id}/log/raw", g(self.raw_log, "viewer")),
            R("/runs/{run_id}/stop", g(self.stop_form, "operator"), methods=["POST"]),
            R("/runs/{run_id}/relaunch", g(self.relaunch_form, "operator"), methods=["POST"]),
            R("/workspaces/{workspace}/workflows/{workflow}", g(self.workflow_page, "viewer")),
            R("/workspaces/{workspace}/workflows/{workflow}/launch", g(self.launch_form, "operator"),
              methods=["POST"]),
            R("/workspaces/{workspace}/blocks/{block}/actions/{action}", g(self.action_page, "viewer")),
            R("/workspaces/{workspace}/blocks/{block}/actions/{action}/launch", g(self.action_launch_form, "operator"),
              methods=["POST"]),
            R("/schedules", g(self.schedules_page, "viewer")),
            R("/blocks", g(self.blocks_page, "viewer")),
            R("/audit", g(self.audit_page, "admin")),
            R("/admin", g(self.admin_view, "admin")),
            R("/admin/tokens", g(self.token_add_form, "admin"), methods=["POST"]),
            R("/admin/tokens/{name}/revoke", g(self.token_revoke_form, "admin"), methods=["POST"]),
            R("/admin/users", g(self.user_add_form, "admin"), methods=["POST"]),
            R("/admin/users/{name}/role", g(self.user_role_form, "admin"), methods=["POST"]),
            R("/admin/users/{name}/password", g(self.user_password_form, "admin"), methods=["POST"]),
            R("/admin/users/{name}/remove", g(self.user_remove_form, "admin"), methods=["POST"]),
            R("/admin/grants", g(self.grant_add_form, "admin"), methods=["POST"]),
            R("/admin/grants/revoke", g(self.grant_revoke_form, "admin"), methods=["POST"]),
            R("/admin/teams", g(self.team_add_form, "admin"), methods=["POST"]),
            R("/admin/teams/{name}/remove", g(self.team_remove_form, "admin"), methods=["POST"]),
            R("/admin/teams/{name}/members", g(self.member_add_form, "admin"), methods=["POST"]),
            R("/admin/teams/{name}/members/remove", g(self.member_remove_form, "admin"), methods=["POST"]),
            R("/account", g(self.account_view, ANYONE)),
            R("/account/password", g(self.password_form, ANYONE), methods=["POST"]),
            R("/api/v1/openapi.json", self.openapi),
            R("/api/v1/whoami", g(self.api_whoami, ANYONE)),
            R("/api/v1/overview", g(self.api_overview, "viewer")),
            R("/api/v1/runs", g(self.api_runs, "viewer")),
            R("/api/v1/runs/{run_id}", g(self.api_run, "viewer")),
            R("/api/v1/runs/{run_id}/log", g(self.api_log, "viewer")),
            R("/api/v1/runs/{run_id}/log/events", g(self.log_events, "viewer")),
            R("/api/v1/runs/{run_id}/stop", g(self.api_stop, "operator"), methods=["POST"]),
            R("/api/v1/runs/{run_id}/relaunch", g(self.api_relaunch, "operator"), methods=["POST"]),
            R("/api/v1/workspaces/{workspace}/workflows/{workflow}/runs", g(self.api_launch, "operator"),
              methods=["POST"]),
            R("/api/v1/workspaces/{workspace}/blocks/{block}/actions/{action}/runs", g(self.api_action_launch, "operator"),
              methods=["POST"]),
            R("/api/v1/schedules", g(self.api_schedules, "viewer")),
            R("/api/v1/blocks", g(self.api_blocks, "viewer")),
            R("/api/v1/audit", g(self.api_audit, "admin")),
            R("/api/v1/users", g(self.api_users, "admin")),
            R("/api/v1/users", g(self.api_user_add, "admin"), methods=["POST"]),
            R("/api/v1/users/{name}", g(self.api_user_change, "admin"), methods=["PATCH"]),
            R("/api/v1/users/{name}", g(self.api_user_remove, "admin"), methods=["DELETE"]),
            R("/api/v1/grants", g(self.api_grants, "admin")),
            R("/api/v1/grants", g(self.api_grant_add, "admin"), methods=["POST"]),
            R("/api/v1/grants", g(self.api_grant_remove, "admin"), methods=["DELETE"]),
            R("/api/v1/teams", g(self.api_teams, "admin")),
            R("/api/v1/teams", g(self.api_team_add, "admin"), methods=["POST"]),
            R("/api/v1/teams/{name}", g(self.api_team_remove, "admin"), methods=["DELETE"]),
            R("/api/v1/teams/{name}/members", g(self.api_member_add, "admin"), methods=["POST"]),
            R("/api/v1/teams/{name}/members", g(self.api_member_remove, "admin"), methods=["DELETE"]),
            R("/api/v1/account/password", g(self.api_password, ANYONE), methods=["POST"]),
            R("/api/v1/tokens", g(self.api_tokens, "admin")),
            Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
        ]

    def guard(self, endpoint: Callable, role: str) -> Callable:
        """The one gate: authenticated (401), allowed (403), CSRF on state-changing session requests (403).
        Who asks is known from the headers alone: no body is read before that (an anonymous upload is
        refused before a byte of it is parsed). A route with {workspace} in its path needs the role in that
        workspace (a workspace one may not see reads as missing: 404); others need it somewhere, and their
        endpoints check each run's workspace (a run of a workspace one may not see is missing: 404, also
        for someone with no grant at all)."""
        is_async = asyncio.iscoroutinefunction(endpoint)

        def authenticate(request: Request) -> Principal:
            who = self.principal(request)
            if who is None:
                if request.headers.get("authorization"):
                    raise HTTPError(401, "invalid or unknown API token")
                if request.cookies.get(SESSION_COOKIE):
                    raise HTTPError(401, "your session has ended (it expired, you logged out elsewhere or the "
                                         "password changed): log in again")
                raise HTTPError(401, "log in first (or send an API token: Authorization: Bearer ...)")
            request.state.principal = who
            return who

        def authorize(request: Request, who: Principal, form: dict | None) -> None:
            if request.method not in ("GET", "HEAD") and who.via == "session":
                sent = request.headers.get("x-csrf-token") or (form or {}).get("csrf") or ""
                if not (who.csrf and isinstance(sent, str) and hmac.compare_digest(sent.encode(), who.csrf.encode())):
                    self.state.audit(who.label, "csrf-refused", request.url.path, "refused", self.client(request))
                    raise HTTPError(403, "missing or wrong CSRF token: reload the page and try again")
            workspace = request.path_params.get("workspace")
            if workspace is not None and not who.sees(workspace):
                raise HTTPError(404, f"no workspace '{bounded(workspace, 100)}' is served here")
            if role == ANYONE:  # one's own account: every user, whatever the grants
                return
            allowed = who.may(role, workspace) if workspace is not None else who.may_somewhere(role)
            if role == "admin" and workspace is None:
                allowed = who.may("admin")  # users, tokens, the audit log: admins of everything
            if not allowed:
                if request.method not in ("GET", "HEAD"):
                    self.state.audit(who.label, "denied", request.url.path, "refused", self.client(request),
                                     {"role": who.role_in(workspace), "needed": role})
                run_id = request.path_params.get("run_id")
                if run_id is not None and workspace is None:
                    # a run of a workspace one may not see reads as missing, as that workspace does: 404, and
                    # a 403 only where the run is visible (the endpoints check its workspace's role again)
                    try:
                        self.catalog.find_run(run_id, who)  # NotFoundError: 404
                    except NotFoundError:
                        if self.catalog.find_queued(run_id, who) is None:  # team mode: a queued run is visible
                            raise
                raise HTTPError(403, _refusal(who, role, workspace))

        async def endpoint_with_gate(request: Request) -> Response:
            try:
                who = await asyncio.to_thread(authenticate, request)
                form = None
                if request.method not in ("GET", "HEAD"):
                    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
                    if kind == "application/x-www-form-urlencoded":
                        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
                        request.state.form = form
                await asyncio.to_thread(authorize, request, who, form)
                if is_async:
                    return await endpoint(request)
                return await asyncio.to_thread(endpoint, request)
            except (HTTPError, PolycrateError) as exc:
                return self.error(request, _as_http(exc))

        return endpoint_with_gate

    # --- login -----------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        who = await asyncio.to_thread(self.principal, request)
        if who is not None and who.via == "session":
            return RedirectResponse("/", status_code=303)
        return self.login_page(request, next_url=request.query_params.get("next", "/"))

    async def login(self, request: Request) -> Response:
        form = dict(await request.form())
        return await asyncio.to_thread(self._login, request, form)

    def _login(self, request: Request, form: dict) -> Response:
        client = self.client(request)
        fields = {k: form.get(k, "") for k in ("username", "password", "next", "csrf")}
        if not all(isinstance(v, str) for v in fields.values()):
            return self.error_page(request, 400, "the login form has text fields")
        name, password = fields["username"].strip(), fields["password"]
        next_url = fields["next"] or "/"
        sent, cookie = fields["csrf"], request.cookies.get(LOGIN_COOKIE, "")
        if not (cookie and hmac.compare_digest(sent.encode(), cookie.encode())):
            self.state.audit_anonymous(name or "-", "login", "refused: CSRF", client)
            return self.error_page(request, 403, "missing or wrong CSRF token: reload the login page and try again")
        attempt = self.state.begin_login(name, client)  # counted as failed until the password proves right
        if attempt is None:
            self.state.audit_anonymous(name, "login", "refused: rate limit", client)
            wait = int(self.state.login_wait(name, client)) + 1
            return self.login_page(request, status=429, next_url=next_url,
                                   message=f"too many failed logins from here: wait {_span(wait)} and try again")
        role = self.state.authenticate(name, password)
        if role is None:
            self.state.audit_anonymous(name or "-", "login", "failed", client)
            return self.login_page(request, status=401, message="wrong user name or password", next_url=next_url)
        self.state.login_succeeded(name, client)
        session = self.state.new_session(name)
        self.state.audit(name, "login", None, "ok", client)
        response = RedirectResponse(_local_path(next_url), status_code=303)
        response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="lax", secure=self.secure(request),
                            max_age=12 * 3600, path="/")
        response.delete_cookie(LOGIN_COOKIE, path="/login")
        return response

    def logout(self, request: Request) -> Response:
        session = request.cookies.get(SESSION_COOKIE)
        if session:
            self.state.end_session(session)
        self.state.audit(request.state.principal.label, "logout", None, "ok", self.client(request))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # --- pages -----------------------------------------------------------------------------

    def overview(self, request: Request) -> Response:
        rows = self.catalog.overview(who=request.state.principal)
        return self.page(request, "overview.html", title="Overview", rows=rows)

    def _filters(self, request: Request) -> dict:
        q = request.query_params
        filters: dict[str, Any] = {"who": request.state.principal}
        for key in ("workspace", "workflow", "status"):
            if q.get(key):
                filters[key] = _query_text(q[key], key)
        for key in ("since", "until"):
            if q.get(key):
                filters[key] = _time_filter(_query_text(q[key], key), key)
        filters["limit"] = _whole(q.get("limit", "50"), "limit", 1, 1000)
        return filters

    def runs_page(self, request: Request) -> Response:
        filters = self._filters(request)
        # 'queued' (team mode) is no state of a recorded run: only the queued list answers it
        runs = [] if filters.get("status") == "queued" else self.catalog.list_runs(**filters)
        query = {k: v for k, v in request.query_params.items() if k != "until"}
        more = None
        if len(runs) == filters["limit"]:  # the next page: runs started before the last one shown
            more = "/runs?" + urlencode({**query, "until": repr(runs[-1].started)})
        return self.page(request, "runs.html", title="Runs", runs=runs, q=request.query_params, more=more,
                         workspaces=[e.key for e in self.catalog.entries(request.state.principal)],
                         spans=list(SPANS), queued=self._queued(filters))

    def _queued(self, filters: dict) -> list[dict]:
        """Team mode: the runs launched through the queue that no worker has taken yet, under the list's filters
        (a status filter other than 'queued' leaves them out, as does a time window: they have not started)."""
        if filters.get("status") not in (None, "queued") or "since" in filters or "until" in filters:
            return []
        return [q for _, q in self.catalog.queued_runs(filters.get("workspace"), filters.get("workflow"),
                                                       who=filters["who"])]

    def run_page(self, request: Request, message: str | None = None, status: int = 200) -> Response:
        """The run's page; after a refused relaunch (`message`, `status`) with the reason on top, as a refused
        launch shows the workflow's page again."""
        who: Principal = request.state.principal
        tail = _whole(request.query_params.get("tail", str(LOG_TAIL)), "tail", 1024, 1 << 31)
        try:
            entry, run, logs = self.catalog.run_log_tails(request.path_params["run_id"], tail, who=who)
        except NotFoundError:
            queued = self.catalog.find_queued(request.path_params["run_id"], who)
            if queued is None:
                raise
            return self.page(request, "queued_run.html", title=f"Run {queued[1]['id']} (queued)", run=queued[1],
                             launched=self.state.launch_of(queued[1]["id"]),
                             may_operate=who.may("operator", queued[0].key))
        timeline = chart.timeline(run)
        launched = self.state.launch_of(run.id)
        found = None
        if request.query_params.get("search"):  # the search form without JavaScript: the whole log, on the server
            found = self.catalog.search_log(run.id, _search_text(request), who=who)[1]
        may_operate = who.may("operator", entry.key)
        return self.page(request, "run.html", status=status, title=f"Run {run.id}", message=message, run=run,
                         logs=logs, timeline=timeline, found=found, search=request.query_params.get("search", ""),
                         timeline_svg=chart.timeline_svg(timeline), live=run.status == RunState.RUNNING,
                         launched=launched, may_operate=may_operate, failed_hosts=failed_hosts(run), tail=tail,
                         asks=self._relaunch_asks(entry, run, who) if may_operate else [])

    def _relaunch_asks(self, entry: Any, run: RunRecord, who: Principal) -> list[dict]:
        """The prompts a relaunch of the run would ask now (its workflow's, or its one action's), by the rule the
        launch checks them with; none when the workflow or action is gone (the relaunch then says so)."""
        try:
            if run.kind == "action" and run.block and run.action:
                _, _, act = self.catalog.action(entry.key, run.block, run.action, who)
                return _action_asks(run.block, run.action, act)
            if run.kind == "workflow":
                _, workflow = self.catalog.workflow(entry.key, run.name, who)
                return prompts_of(entry.ws, workflow, run.only_step)
        except PolycrateError:
            pass
        return []

    def workflow_page(self, request: Request, message: str | None = None, status: int = 200,
                      sent: dict[str, str] | None = None) -> Response:
        """The workflow's page; after a refused launch (`message`, `status`) its form holds what was `sent`,
        but a secret's value and free-form extra vars (which may hold one), never written into a page."""
        key, name = request.path_params["workspace"], request.path_params["workflow"]
        who: Principal = request.state.principal
        entry, workflow = self.catalog.workflow(key, name, who)
        history = self.catalog.workflow_runs(key, name, who=who)
        running = self.catalog.list_runs(workspace=key, workflow=name, status=RunState.RUNNING, limit=1, who=who)
        if sent is not None:
            secrets_ = {f"var-{v.name}" for v in getattr(workflow.launch, "variables", ()) if v.secret}
            sent = {k: v for k, v in sent.items() if k not in secrets_ and k not in ("csrf", "extra_vars")}
        return self.page(
            request, "workflow.html", status=status, title=f"{key} / {name}", message=message, sent=sent,
            entry=entry, workflow=workflow,
            svg=chart.durations(history), history=list(reversed(history)), prompts=prompts_of(entry.ws, workflow),
            running=running[0] if running else None, may_operate=who.may("operator", key),
            declaration=workflow.launch, may_extra=bool(workflow.launch and workflow.launch.extra_vars == "admins"
                                                        and who.may("admin", key)))

    def schedules_page(self, request: Request) -> Response:
        return self.page(request, "schedules.html", title="Schedules",
                         rows=self.catalog.schedules(who=request.state.principal))

    def blocks_page(self, request: Request) -> Response:
        return self.page(request, "blocks.html", title="Blocks", rows=self.catalog.blocks(who=request.state.principal))

    def audit_page(self, request: Request) -> Response:
        filters = _audit_filters(request)
        rows = self.state.audit_log(**filters)
        more = None
        if len(rows) == filters["limit"]:
            query = {k: v for k, v in request.query_params.items() if k != "before"}
            more = "/audit?" + urlencode({**query, "before": rows[-1]["id"]})
        return self.page(request, "audit.html", title="Audit log", rows=rows, more=more, q=request.query_params)

    def admin_page(self, request: Request, new_token: str | None = None, new_name: str | None = None,
                   message: str | None = None, status: int = 200) -> Response:
        return self.page(request, "admin.html", status=status, title="Users, teams and tokens",
                         users=self.state.users(), tokens=self.state.tokens(), new_token=new_token,
                         new_name=new_name, grants=self.state.grants(), teams=self.state.teams(), message=message,
                         ok=status < 400, workspaces=[e.key for e in self.catalog.entries(request.state.principal)])

    def admin_view(self, request: Request) -> Response:
        """The admin page, with the note a form's change left for it (flash.py)."""
        note = self._take_note(request)
        response = self.admin_page(request, new_token=note.get("token"), new_name=note.get("name"),
                                   message=note.get("message"))
        return self._note_taken(response, "/admin") if note else response

    def token_add_form(self, request: Request) -> Response:
        """A new API token, shown once on the page the form redirects to; only its hash is kept."""
        form = request.state.form if hasattr(request.state, "form") else {}
        who: Principal = request.state.principal
        name, role = str(form.get("name", "")).strip(), str(form.get("role", ""))
        try:
            token = self.state.add_token(name, role)
        except PolycrateError as exc:  # a bad name or role, or one that exists: the form again, with why
            return self.admin_page(request, message=str(exc), status=400)
        self.state.audit(who.label, "token-add", name, "ok", self.client(request), {"role": role})
        return self._redirect_with_note(request, "/admin", {"token": token, "name": name})

    # Post/Redirect/Get: a form's success answers 303 to its page, which shows the note once (flash.py)

    def _redirect_with_note(self, request: Request, back: str, note: dict[str, str]) -> Response:
        who: Principal = request.state.principal
        response = RedirectResponse(back, status_code=303)
        if who.secret:
            response.set_cookie(flash.COOKIE, flash.encode(who.secret, note), max_age=flash.MAX_AGE, path=back,
                                httponly=True, samesite="strict", secure=self.secure(request))
        return response

    def _take_note(self, request: Request) -> dict[str, Any]:
        who: Principal = request.state.principal
        return (flash.decode(who.secret, request.cookies.get(flash.COOKIE)) if who.secret else None) or {}

    def _note_taken(self, response: Response, back: str) -> Response:
        response.delete_cookie(flash.COOKIE, path=back)  # (every page is sent Cache-Control: no-store)
        return response

    def token_revoke_form(self, request: Request) -> Response:
        who: Principal = request.state.principal
        name = request.path_params["name"]
        self.state.remove_token(name)
        self.state.audit(who.label, "token-remove", name, "ok", self.client(request))
        return RedirectResponse("/admin", status_code=303)

    # --- users, grants, teams (admins), one's own password (everyone) ---------------------------
    # The forms and the API share one function per change (`_user_add`, ...): the same checks, the same
    # audit row; a password never reaches the audit (its detail names what changed, never the value).

    def _admins_left_without(self, name: str) -> bool:
        return not any(u["role"] == "admin" and u["name"] != name for u in self.state.users())

    def _user_add(self, request: Request, name: str, role: str, password: str) -> None:
        if any(u["name"] == name for u in self.state.users()):  # the state's own message names the CLI's --replace
            raise HTTPError(400, f"user '{bounded(name)}' exists: set its role or password instead (its row on the "
                                 f"users page; PATCH /api/v1/users/{bounded(name)})")
        self.state.add_user(name, role, password)
        self._audit(request, "user-add", name, {"role": role})

    def _user_role(self, request: Request, name: str, role: str) -> None:
        if role != "admin" and self._admins_left_without(name):
            raise HTTPError(409, f"'{bounded(name)}' is the last admin: make another admin first")
        self.state.set_role(name, role)
        self._audit(request, "user-role", name, {"role": role})

    def _user_password(self, request: Request, name: str, password: str) -> None:
        self.state.set_password(name, password)  # ends that user's sessions
        self._audit(request, "user-password", name)

    def _user_remove(self, request: Request, name: str) -> None:
        if self._admins_left_without(name) and any(u["name"] == name for u in self.state.users()):
            raise HTTPError(409, f"'{bounded(name)}' is the last admin: make another admin first")
        self.state.remove_user(name)
        self._audit(request, "user-remove", name)

    def _grant_add(self, request: Request, principal: str, workspace: str, role: str) -> None:
        if not any(e.key == workspace for e in self.catalog.entries(request.state.principal)):
            raise HTTPError(400, f"no workspace '{bounded(workspace, 100)}' is served here")
        self.state.grant(principal, workspace, role)
        self._audit(request, "grant-add", f"{principal}@{workspace}", {"role": role})

    def _grant_remove(self, request: Request, principal: str, workspace: str) -> None:
        self.state.revoke(principal, workspace)
        self._audit(request, "grant-remove", f"{principal}@{workspace}")

    def _team_add(self, request: Request, name: str) -> None:
        self.state.add_team(name)
        self._audit(request, "team-add", name)

    def _team_remove(self, request: Request, name: str) -> None:
        self.state.remove_team(name)
        self._audit(request, "team-remove", name)

    def _member_add(self, request: Request, team: str, user: str) -> None:
        self.state.add_member(team, user)
        self._audit(request, "team-member-add", f"{user}@{team}")

    def _member_remove(self, request: Request, team: str, user: str) -> None:
        self.state.remove_member(team, user)
        self._audit(request, "team-member-remove", f"{user}@{team}")

    def _own_password(self, request: Request, current: str, new: str) -> None:
        who: Principal = request.state.principal
        if who.via != "session":
            raise HTTPError(400, "an API token has no password: log in as the user to change it")
        if len(current) > 1024 or not self.state.change_own_password(who.name, current, new, who.secret):
            self._audit(request, "password-change", who.name, outcome="refused: wrong current password")
            raise HTTPError(403, "the current password is not right")
        self._audit(request, "password-change", who.name)

    def _audit(self, request: Request, action: str, target: str, detail: dict | None = None,
               outcome: str = "ok") -> None:
        self.state.audit(request.state.principal.label, action, target, outcome, self.client(request), detail)

    def _form_change(self, request: Request, change: Callable[[], None], done: str, back: str = "/admin") -> Response:
        """A form's change, then 303 to the page it came from, which shows a note (a refresh sends nothing
        again); a refusal renders that page with the message and the error's status."""
        try:
            change()
        except HTTPError as exc:
            return self._back(request, back, exc.message, exc.status)
        except NotFoundError as exc:
            return self._back(request, back, exc.message, 404)
        except PolycrateError as exc:
            return self._back(request, back, str(exc), 400)
        return self._redirect_with_note(request, back, {"message": done})

    def _back(self, request: Request, back: str, message: str, status: int) -> Response:
        if back == "/account":
            return self.account_page(request, message=message, status=status)
        return self.admin_page(request, message=message, status=status)

    def user_add_form(self, request: Request) -> Response:
        f = _form(request, "name", "role", "password")
        return self._form_change(request, lambda: self._user_add(request, f["name"].strip(), f["role"], f["password"]),
                                 f"user {f['name'].strip()} added")

    def user_role_form(self, request: Request) -> Response:
        name, f = request.path_params["name"], _form(request, "role")
        return self._form_change(request, lambda: self._user_role(request, name, f["role"]),
                                 f"{name} is now {f['role']}")

    def user_password_form(self, request: Request) -> Response:
        name, f = request.path_params["name"], _form(request, "password")
        return self._form_change(request, lambda: self._user_password(request, name, f["password"]),
                                 f"the password of {name} is set; their sessions have ended")

    def user_remove_form(self, request: Request) -> Response:
        name = request.path_params["name"]
        return self._form_change(request, lambda: self._user_remove(request, name), f"user {name} removed")

    def grant_add_form(self, request: Request) -> Response:
        f = _form(request, "principal", "workspace", "role")
        return self._form_change(request, lambda: self._grant_add(request, f["principal"].strip(), f["workspace"],
                                                                  f["role"]),
                                 f"{f['principal'].strip()} is {f['role']} in {f['workspace']}")

    def grant_revoke_form(self, request: Request) -> Response:
        f = _form(request, "principal", "workspace")
        return self._form_change(request, lambda: self._grant_remove(request, f["principal"], f["workspace"]),
                                 f"grant of {f['principal']} in {f['workspace']} removed")

    def team_add_form(self, request: Request) -> Response:
        f = _form(request, "name")
        return self._form_change(request, lambda: self._team_add(request, f["name"].strip()),
                                 f"team {f['name'].strip()} made")

    def team_remove_form(self, request: Request) -> Response:
        name = request.path_params["name"]
        return self._form_change(request, lambda: self._team_remove(request, name), f"team {name} removed")

    def member_add_form(self, request: Request) -> Response:
        name, f = request.path_params["name"], _form(request, "user")
        return self._form_change(request, lambda: self._member_add(request, name, f["user"].strip()),
                                 f"{f['user'].strip()} is in team {name}")

    def member_remove_form(self, request: Request) -> Response:
        name, f = request.path_params["name"], _form(request, "user")
        return self._form_change(request, lambda: self._member_remove(request, name, f["user"]),
                                 f"{f['user']} left team {name}")

    def account_view(self, request: Request) -> Response:
        note = self._take_note(request)
        response = self.account_page(request, message=note.get("message"))
        return self._note_taken(response, "/account") if note else response

    def account_page(self, request: Request, message: str | None = None, status: int = 200) -> Response:
        who: Principal = request.state.principal
        teams = [t["name"] for t in self.state.teams() if who.via == "session" and who.name in t["members"]]
        return self.page(request, "account.html", status=status, title="Your account", message=message,
                         ok=status < 400, grants=who.grants, teams=teams)

    def password_form(self, request: Request) -> Response:
        f = _form(request, "current", "new", "again")
        if f["new"] != f["again"]:
            return self.account_page(request, message="the new password and its repetition differ", status=400)
        return self._form_change(request, lambda: self._own_password(request, f["current"], f["new"]),
                                 "your password is changed; your other sessions have ended", back="/account")

    async def api_user_add(self, request: Request) -> Response:
        body = _fields(await _json_body(request), required=("name", "role", "password"))
        await asyncio.to_thread(self._user_add, request, body["name"], body["role"], body["password"])
        return JSONResponse({"name": body["name"], "role": body["role"]}, status_code=201)

    async def api_user_change(self, request: Request) -> Response:
        body = _fields(await _json_body(request), optional=("role", "password"))
        if not body:
            raise HTTPError(400, "give role or password (or both)")
        name = request.path_params["name"]
        if "role" in body:
            await asyncio.to_thread(self._user_role, request, name, body["role"])
        if "password" in body:
            await asyncio.to_thread(self._user_password, request, name, body["password"])
        return JSONResponse({"name": name, "changed": sorted(body)})

    def api_user_remove(self, request: Request) -> Response:
        self._user_remove(request, request.path_params["name"])
        return Response(status_code=204)

    def api_grants(self, request: Request) -> Response:
        return JSONResponse(self.state.grants())

    async def api_grant_add(self, request: Request) -> Response:
        body = _fields(await _json_body(request), required=("principal", "workspace", "role"))
        await asyncio.to_thread(self._grant_add, request, body["principal"], body["workspace"], body["role"])
        return JSONResponse(body, status_code=201)

    def api_grant_remove(self, request: Request) -> Response:
        q = request.query_params
        if not q.get("principal") or not q.get("workspace"):
            raise HTTPError(400, "name the grant: ?principal=NAME&workspace=KEY")
        self._grant_remove(request, _query_text(q["principal"], "principal"), _query_text(q["workspace"], "workspace"))
        return Response(status_code=204)

    def api_teams(self, request: Request) -> Response:
        return JSONResponse(self.state.teams())

    async def api_team_add(self, request: Request) -> Response:
        body = _fields(await _json_body(request), required=("name",))
        await asyncio.to_thread(self._team_add, request, body["name"])
        return JSONResponse(body, status_code=201)

    def api_team_remove(self, request: Request) -> Response:
        self._team_remove(request, request.path_params["name"])
        return Response(status_code=204)

    async def api_member_add(self, request: Request) -> Response:
        body = _fields(await _json_body(request), required=("user",))
        await asyncio.to_thread(self._member_add, request, request.path_params["name"], body["user"])
        return JSONResponse({"team": request.path_params["name"], "user": body["user"]}, status_code=201)

    def api_member_remove(self, request: Request) -> Response:
        user = request.query_params.get("user")
        if not user:
            raise HTTPError(400, "name the member: ?user=NAME")
        self._member_remove(request, request.path_params["name"], _query_text(user, "user"))
        return Response(status_code=204)

    async def api_password(self, request: Request) -> Response:
        body = _fields(await _json_body(request), required=("current", "new"))
        await asyncio.to_thread(self._own_password, request, body["current"], body["new"])
        return JSONResponse({"name": request.state.principal.name, "changed": ["password"]})

    # --- launch and stop -------------------------------------------------------------------

    def launch_state(self, run_id: str) -> str:
        """For the sweep of launch files (launch_files.LaunchFiles.sweep): whether launch ``run_id``'s values may
        be in use ("running": its workflow's lock is held; a child of this server is never swept), its run is
        recorded ("ended"), or no longer ("pruned"); "unknown": this server has no record of the launch."""
        from polycrate.history.locking import is_held, lock_path, run_lock_key

        record = self.state.launch_of(run_id)
        if record is None:
            return "unknown"
        try:
            entry = self.catalog.entry(record["workspace"])
        except NotFoundError:
            return "unknown"
        block, _, action = str(record["workflow"]).partition(" ")
        if is_held(lock_path(entry.root, run_lock_key(block, action))):
            return "running"
        with self.catalog.store(entry) as store:
            return "ended" if store.find_run(run_id) is not None else "pruned"

    def sweep_launches(self) -> dict[str, int]:
        """Remove the launch files that outlived their use (launch_files.py says which); one sweep at a time."""
        with self._sweeping:
            return self.files.sweep(self.launch_state)

    @contextmanager
    def _refusal_audited(self, request: Request, action: str, target: str, detail: dict | None = None
                         ) -> Iterator[None]:
        """A launch refused goes to the audit log with why: a value, a field, a host pattern (an operator's
        `@/etc/shadow`), free-form extra vars, the lock. The confirmation a prompt asks for (422) is a question,
        not a refusal. `detail` may be filled in while the block runs (secrets masked: options.audit())."""
        try:
            yield
        except (HTTPError, LaunchRefused) as exc:
            if exc.status != 422:
                self.state.audit(request.state.principal.label, action, target, f"refused: {exc.message}",
                                 self.client(request), detail or None)
            raise

    def _parsed_launch(self, request: Request, action: str, target: str, body: Any) -> tuple[LaunchOptions, bool]:
        with self._refusal_audited(request, action, target):
            return parse_launch(body)

    def _launch(self, request: Request, key: str, name: str, options: LaunchOptions, confirmed: bool) -> str:
        who: Principal = request.state.principal
        entry, workflow = self.catalog.workflow(key, name, who)
        detail: dict[str, Any] = {"workspace": key, "workflow": name}
        with self._refusal_audited(request, "launch", f"{key}/{name}", detail):
            if options.step and options.step not in {s.name for s in workflow.steps}:
                raise HTTPError(400, f"workflow '{name}' has no step '{options.step}'")
            options = apply_declaration(options, workflow.launch, name, admin=who.may("admin", key))
            asks = prompts_of(entry.ws, workflow, options.step)
            detail.update(options.audit() | {"workspace": key, "workflow": name})
            if asks and not confirmed:
                raise HTTPError(422, f"workflow '{name}' asks for confirmation: confirm every prompt to launch it",
                                {"prompts": asks})
            if self.settings.backend:  # team mode: through the queue, as `workflows run` with a backend
                launched = enqueue_launch(self.settings.backend, entry.root, entry.name, name, workflow.queue, options,
                                          launched_by=f"web:{who.label}")
            else:
                launched = launch(entry.root, name, options, launched_by=f"web:{who.label}", files=self.files,
                                  backend=self.settings.backend, workspace=entry.name, ended=self.sweep_launches)
        request.state.queued = launched.queued  # team mode: no worker has taken it yet (the API answers so)
        self.state.record_launch(launched.run_id, who.label, key, name, options.audit(), options.replay(),
                                 str(launched.secrets_file) if launched.secrets_file else None)
        self.state.audit(who.label, "launch", f"{key}/{name}", "ok", self.client(request),
                         detail | {"run_id": launched.run_id, "confirmed": [a["message"] for a in asks]})
        return launched.run_id

    def _launch_action(self, request: Request, key: str, block: str, action: str, options: LaunchOptions,
                       confirmed: bool) -> str:
        """One action of a block, by the rules of a workflow without a `launch:` declaration: check mode and a
        checked host pattern may be set; no variables, no free-form extra vars, no tags, no step, no resume."""
        who: Principal = request.state.principal
        entry, found, act = self.catalog.action(key, block, action, who)
        target = f"{key}/{block}/{action}"
        detail: dict[str, Any] = {"workspace": key, "block": block, "action": action}
        with self._refusal_audited(request, "launch-action", target, detail):
            if found.template:
                raise HTTPError(400, f"block '{block}' is a template: its actions run in the blocks made from it")
            if options.step or options.resume:
                raise HTTPError(400, "step and resume apply to workflows, not to one action")
            given = [name for name, value in (("tags", options.tags), ("extra_vars", options.extra_vars)) if value]
            given += [f"vars.{name}" for name in sorted(options.variables)[:1]]
            if given:  # (the workflow's rule would name a `launch:` declaration, which an action has none of)
                raise HTTPError(400, f"{given[0]}: one action takes check mode and a host pattern only; launch "
                                     "values, tags and extra vars are for workflows (launch: in workspace.poly)")
            options = apply_declaration(options, None, f"{block} {action}", admin=who.may("admin", key))
            asks = _action_asks(block, action, act)
            detail.update(options.audit() | {"workspace": key, "block": block, "action": action})
            if asks and not confirmed:
                raise HTTPError(422, f"action '{block} {action}' asks for confirmation: confirm to launch it",
                                {"prompts": asks})
            launched = launch(entry.root, block, options, launched_by=f"web:{who.label}", files=self.files,
                              backend=self.settings.backend, workspace=entry.name, action=action,
                              ended=self.sweep_launches)
        self.state.record_launch(launched.run_id, who.label, key, f"{block} {action}", options.audit(),
                                 options.replay(), None)
        self.state.audit(who.label, "launch-action", target, "ok", self.client(request),
                         detail | {"run_id": launched.run_id, "confirmed": [a["message"] for a in asks]})
        return launched.run_id

    def action_page(self, request: Request, message: str | None = None, status: int = 200,
                    sent: dict[str, str] | None = None) -> Response:
        """The action's page; after a refused launch (`message`, `status`) its form holds what was `sent`, as the
        workflow's page does."""
        key, block, action = (request.path_params[k] for k in ("workspace", "block", "action"))
        who: Principal = request.state.principal
        entry, found, act = self.catalog.action(key, block, action, who)
        runs = [r for r in self.catalog.list_runs(workspace=key, limit=200, who=who)
                if r.kind == "action" and r.name == f"{block} {action}"][:10]
        return self.page(request, "action.html", status=status, title=f"{key} / {block} {action}", message=message,
                         sent=sent, entry=entry, block=found, action=act, runs=runs,
                         may_operate=who.may("operator", key) and not found.template)

    def action_launch_form(self, request: Request) -> Response:
        form = _form(request, "check", "limit", "confirm")
        key, block, action = (request.path_params[k] for k in ("workspace", "block", "action"))
        try:
            options, _ = self._parsed_launch(request, "launch-action", f"{key}/{block}/{action}",
                                             {"check": form["check"] == "yes", "limit": form["limit"].strip() or None})
            run_id = self._launch_action(request, key, block, action, options, form["confirm"] == "yes")
        except (HTTPError, PolycrateError) as exc:
            refused = _as_http(exc)
            return self.action_page(request, message=refused.message, status=refused.status, sent=form)
        return RedirectResponse(f"/runs/{run_id}", status_code=303)

    async def api_action_launch(self, request: Request) -> Response:
        body = await _json_body(request)
        key, block, action = (request.path_params[k] for k in ("workspace", "block", "action"))
        options, confirm = await asyncio.to_thread(self._parsed_launch, request, "launch-action",
                                                   f"{key}/{block}/{action}", body)
        run_id = await asyncio.to_thread(self._launch_action, request, key, block, action, options, confirm)
        return JSONResponse({"run_id": run_id, "status": RunState.RUNNING, "url": f"/api/v1/runs/{run_id}"},
                            status_code=202, headers={"Location": f"/api/v1/runs/{run_id}"})

    def launch_form(self, request: Request) -> Response:
        if not hasattr(request.state, "form"):
            raise HTTPError(415, "the launch form is a form (application/x-www-form-urlencoded); the API takes JSON")
        form = request.state.form
        key, name = request.path_params["workspace"], request.path_params["workflow"]
        try:
            entry, workflow = self.catalog.workflow(key, name, request.state.principal)
            unknown = [k for k in form if k not in ("csrf", "check", "resume", "step", "limit", "extra_vars")
                       and not k.startswith(("confirm-", "var-"))]
            if unknown:
                raise HTTPError(400, f"the launch form has no field {sorted(unknown)[0][:40]!r}")
            step = form.get("step") or None
            asks = prompts_of(entry.ws, workflow, step if step in {s.name for s in workflow.steps} else None)
            confirmed = all(form.get(f"confirm-{i}") == "yes" for i in range(len(asks)))
            # a checkbox sends its value ("yes") when ticked, nothing when not: that is the form's boolean
            body: dict[str, Any] = {"check": form.get("check") == "yes", "resume": form.get("resume") == "yes",
                                    "step": step, "limit": (form.get("limit") or "").strip() or None}
            lines = [line.strip() for line in str(form.get("extra_vars") or "").splitlines() if line.strip()]
            if lines:
                body["extra_vars"] = lines
            body["vars"] = _form_variables(workflow.launch, form)
            options, _ = self._parsed_launch(request, "launch", f"{key}/{name}", body)
            run_id = self._launch(request, key, name, options, confirmed)
        except (HTTPError, LaunchRefused) as exc:
            return self.workflow_page(request, message=exc.message, status=exc.status, sent=form)
        return RedirectResponse(f"/runs/{run_id}", status_code=303)

    def _run_for(self, request: Request, role: str) -> tuple[Any, RunRecord]:
        """The run named in the path, if `who` may see its workspace (else 404) and has `role` there (else 403)."""
        who: Principal = request.state.principal
        entry, run = self.catalog.find_run(request.path_params["run_id"], who)
        if not who.may(role, entry.key):
            raise HTTPError(403, _refusal(who, role, entry.key))
        return entry, run

    def _queued_for(self, request: Request, role: str) -> tuple[Any, dict] | None:
        """Team mode: the queued run named in the path (no record yet), as ``_run_for`` checks a run; None if
        there is none."""
        who: Principal = request.state.principal
        found = self.catalog.find_queued(request.path_params["run_id"], who)
        if found is not None and not who.may(role, found[0].key):
            raise HTTPError(403, _refusal(who, role, found[0].key))
        return found

    def _stop_queued(self, request: Request) -> str:
        """Stop a run still in the queue: taken off it and recorded as interrupted by whom (as `runs stop`)."""
        from polycrate.team.launch import stop as stop_team_run

        who: Principal = request.state.principal
        found = self._queued_for(request, "operator")
        if found is None:
            raise NotFoundError(f"no run '{request.path_params['run_id'][:80]}'")
        entry, queued = found
        try:
            said = stop_team_run(self.settings.backend or "", entry.name, queued["id"], f"web:{who.label}",
                                 via="the server's Stop")
        except PolycrateError as exc:
            self.state.audit(who.label, "stop", queued["id"], f"refused: {exc.message}", self.client(request))
            raise HTTPError(409, exc.message) from None
        self.state.audit(who.label, "stop", queued["id"], "ok", self.client(request),
                         {"workspace": entry.key, "queued": True, "said": said})
        request.state.taken_off_queue = "taken off the queue" in said  # else a worker took it meanwhile: stopping
        return str(queued["id"])

    def _stop(self, request: Request) -> RunRecord | str:
        who: Principal = request.state.principal
        try:
            entry, run = self._run_for(request, "operator")
        except NotFoundError:
            if not self.settings.backend:
                raise
            return self._stop_queued(request)  # launched, no worker took it yet
        try:
            asked = None
            if self.settings.backend and run.status == RunState.RUNNING:  # on whichever worker runs it
                asked = stop_launched(self.settings.backend, entry.name, run, f"web:{who.label}")
            if asked is None:
                stop(entry.root, run, f"web:{who.label}")
        except LaunchRefused as exc:
            self.state.audit(who.label, "stop", run.id, f"refused: {exc.message}", self.client(request))
            raise
        self.state.audit(who.label, "stop", run.id, "ok", self.client(request), {"workspace": entry.key})
        return run

    def stop_form(self, request: Request) -> Response:
        """The Stop button asks first (a page of its own, so it works without JavaScript); the answer stops."""
        form = request.state.form if hasattr(request.state, "form") else None
        if form is None:
            raise HTTPError(415, "the Stop button sends a form")
        if form.get("confirm") != "yes":
            try:
                entry, run = self._run_for(request, "operator")
            except NotFoundError:
                found = self._queued_for(request, "operator") if self.settings.backend else None
                if found is None:
                    raise
                return self.page(request, "confirm_stop.html", title=f"Stop run {found[1]['id']}?", run=found[1],
                                 queued=True)
            return self.page(request, "confirm_stop.html", title=f"Stop run {run.id}?", run=run)
        stopped = self._stop(request)
        return RedirectResponse(f"/runs/{stopped if isinstance(stopped, str) else stopped.id}", status_code=303)

    def _relaunch(self, request: Request, failed_only: bool, confirmed: bool) -> str:
        """The run's workflow, or its one action, again with the same launch values (secret ones read back
        from the launch's own file), or on its failed hosts only."""
        entry, run = self._run_for(request, "operator")
        if run.kind not in ("workflow", "action") or (run.kind == "action" and not (run.block and run.action)):
            raise HTTPError(409, f"run {run.id} is neither a workflow's run nor one action's")
        if run.status == RunState.RUNNING:
            raise HTTPError(409, f"run {run.id} is still running")
        record = self.state.launch_of(run.id)
        if record is not None:
            try:
                secret = self.files.recorded_secrets(record["vars_file"])
            except SecretsGone as exc:
                raise HTTPError(409, f"{exc.message}: launch the workflow from its page, giving them again") from None
            options = LaunchOptions.from_replay(record["options"], secret)
            if self.settings.backend and run.kind == "workflow":  # its secrets as its launch sealed them, unopened
                options = replace(options, sealed=sealed_of(self.settings.backend, entry.name, run.id))
        else:  # launched at the terminal: what its record holds, never its extra vars (not ours to show or reuse)
            recorded = run.ansible_options or {}
            if recorded.get("extra_vars"):
                raise HTTPError(409, f"run {run.id} was started with extra vars at the terminal: relaunch it there")
            options = LaunchOptions(check=bool(run.check_mode), step=run.only_step,
                                    limit=recorded.get("limit"), tags=tuple(recorded.get("tags") or ()))
        if failed_only:
            hosts = failed_hosts(run)
            if not hosts:
                raise HTTPError(409, f"run {run.id} has no failed or unreachable host")
            try:
                limit = check_host_pattern(",".join(hosts))
            except PolycrateError as exc:
                raise HTTPError(409, f"the failed hosts are no host pattern: {exc.message}") from None
            options = replace(options, limit=limit)
        if run.kind == "action":
            assert run.block is not None and run.action is not None  # checked above
            run_id = self._launch_action(request, entry.key, run.block, run.action, options, confirmed)
        else:
            run_id = self._launch(request, entry.key, run.name, options, confirmed)
        self.state.audit(request.state.principal.label, "relaunch", run.id, "ok", self.client(request),
                         {"run_id": run_id, "failed_hosts": failed_only})
        return run_id

    def relaunch_form(self, request: Request) -> Response:
        form = request.state.form if hasattr(request.state, "form") else None
        if form is None:
            raise HTTPError(415, "the relaunch button sends a form")
        unknown = sorted(set(form) - {"csrf", "confirm", "failed_hosts"})
        if unknown:
            raise HTTPError(400, f"the relaunch form has no field {unknown[0][:40]!r}")
        try:
            run_id = self._relaunch(request, form.get("failed_hosts") == "yes", form.get("confirm") == "yes")
        except (HTTPError, PolycrateError) as exc:  # the run itself missing: its page is the 404 then
            refused = _as_http(exc)
            return self.run_page(request, message=refused.message, status=refused.status)
        return RedirectResponse(f"/runs/{run_id}", status_code=303)

    async def api_relaunch(self, request: Request) -> Response:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("application/json", ""):
            raise HTTPError(415, "the body must be JSON (Content-Type: application/json)")
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (ValueError, RecursionError):
            raise HTTPError(400, "the body must be JSON") from None
        if not isinstance(body, dict) or set(body) - {"failed_hosts", "confirm"}:
            raise HTTPError(400, "the body is an object with failed_hosts and confirm (booleans), nothing else")
        for key in ("failed_hosts", "confirm"):
            if not isinstance(body.get(key, False), bool):
                raise HTTPError(400, f"{key}: true or false (a JSON boolean)")
        run_id = await asyncio.to_thread(self._relaunch, request, body.get("failed_hosts", False),
                                         body.get("confirm", False))
        return JSONResponse({"run_id": run_id, "status": _launched_status(request), "url": f"/api/v1/runs/{run_id}"},
                            status_code=202, headers={"Location": f"/api/v1/runs/{run_id}"})

    def raw_log(self, request: Request) -> Response:
        """The whole log as text, to download: each step's file after a `==> step` line, read in chunks.
        Plain text; with `?ansi=1` the colour codes as stored (for `less -R` or a terminal)."""
        who: Principal = request.state.principal
        colours = request.query_params.get("ansi", "0")
        if colours not in ("0", "1"):
            raise HTTPError(400, "ansi: 1 (the colour codes as stored) or 0 (plain text, the default)")
        entry, run = self.catalog.find_run(request.path_params["run_id"], who)
        steps = [(s.name, s.position, bool(s.log)) for s in run.steps]

        def chunks():
            for name, position, has_log in steps:
                yield f"==> {name}\n".encode()
                if has_log:
                    data = self.catalog.read_log(entry, run.id, position, 0).data
                    yield data if colours == "1" else ansi.strip_bytes(data)

        return StreamingResponse(chunks(), media_type="text/plain; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="polycrate-run-{run.id}.log"'})

    # --- the live log ----------------------------------------------------------------------

    async def log_events(self, request: Request) -> Response:
        """Server-sent events: `step` when a step's log begins, `line` per log line, `end` with the result."""
        who: Principal = request.state.principal
        run_id = request.path_params["run_id"]
        entry, run = await asyncio.to_thread(self.catalog.find_run, run_id, who)

        async def stream():
            offsets: dict[int, int] = {}
            announced: set[int] = set()
            pending: dict[int, str] = {}
            idle = 0.0
            checked = time.monotonic()
            while True:
                if time.monotonic() - checked >= STREAM_RECHECK:  # logged out, token revoked: the stream ends
                    checked = time.monotonic()
                    if not await asyncio.to_thread(self.state.still_valid, who):
                        yield _event("gone", {"reason": "the session or token has ended"})
                        return
                current = await asyncio.to_thread(self.catalog.get_run, entry, run.id)
                for step in current.steps:
                    position = step.position
                    if step.log is None:
                        continue
                    if position not in announced:
                        announced.add(position)
                        yield _event("step", {"name": step.name, "position": position, "status": step.status})
                    piece = await asyncio.to_thread(self.catalog.read_log, entry, run.id, position,
                                                    offsets.get(position, 0))
                    offsets[position] = piece.cursor
                    text = pending.pop(position, "") + piece.data.decode("utf-8", errors="replace")
                    *lines, rest = text.split("\n")
                    if rest:
                        pending[position] = rest
                    for line in lines:
                        yield _event("line", {"step": step.name, "text": line})
                if current.status != RunState.RUNNING:
                    for rest in pending.values():
                        yield _event("line", {"step": "", "text": rest})
                    yield _event("end", {"status": current.status, "exit_code": current.exit_code,
                                         "duration": current.duration})
                    return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.25)
                idle += 0.25
                if idle >= 15:  # a comment line keeps proxies from closing a quiet stream
                    idle = 0.0
                    yield ": keep-alive\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # --- API -------------------------------------------------------------------------------

    def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi.document(__version__))

    def api_whoami(self, request: Request) -> Response:
        who: Principal = request.state.principal
        return JSONResponse({"name": who.name, "role": who.role, "via": who.via})

    def api_overview(self, request: Request) -> Response:
        return JSONResponse(self.catalog.overview(who=request.state.principal))

    # runs leave as the documents of polycrate.contract: those of `polycrate runs list/show/logs -o json`

    def api_runs(self, request: Request) -> Response:
        filters = self._filters(request)
        runs = [] if filters.get("status") == "queued" else self.catalog.list_runs(**filters)
        return JSONResponse(contract.runs_document(((r, r.workspace) for r in runs), self._queued(filters)))

    def api_run(self, request: Request) -> Response:
        try:
            run = self.catalog.find_run(request.path_params["run_id"], request.state.principal)[1]
        except NotFoundError:
            queued = self.catalog.find_queued(request.path_params["run_id"], request.state.principal)
            if queued is None:
                raise
            # not a run document (it has no record yet): its launch, status 'queued', times as the contract's
            doc = {k: v for k, v in contract.queued_run_document(queued[1]).items() if k != "schema"}
            doc["launch"] = (self.state.launch_of(doc["id"]) or {}).get("shown")
            return JSONResponse(doc)
        return JSONResponse(contract.run_document(run, run.workspace))

    def api_log(self, request: Request) -> Response:
        step = request.query_params.get("step")
        if "search" in request.query_params:  # lines of the whole log holding the text, bounded
            run, found = self.catalog.search_log(request.path_params["run_id"], _search_text(request),
                                                 _query_text(step, "step") if step else None,
                                                 who=request.state.principal)
            return JSONResponse({"run_id": run.id, "search": request.query_params["search"],
                                 "matches": found.matches, "more": found.more, "scanned_bytes": found.scanned})
        _, run, logs = self.catalog.run_logs(request.path_params["run_id"], _query_text(step, "step") if step else None,
                                             who=request.state.principal)
        return JSONResponse(contract.logs_document(run.id, logs))

    def api_schedules(self, request: Request) -> Response:
        return JSONResponse(self.catalog.schedules(who=request.state.principal))

    def api_blocks(self, request: Request) -> Response:
        return JSONResponse(self.catalog.blocks(who=request.state.principal))

    def api_audit(self, request: Request) -> Response:
        filters = _audit_filters(request)
        rows = self.state.audit_log(**filters)
        headers = {}
        if len(rows) == filters["limit"]:  # the next page, older rows: as a Link header, the body stays a list
            query = {k: v for k, v in request.query_params.items() if k != "before"}
            headers["Link"] = f'</api/v1/audit?{urlencode({**query, "before": rows[-1]["id"]})}>; rel="next"'
        return JSONResponse(rows, headers=headers)

    def api_users(self, request: Request) -> Response:
        return JSONResponse(self.state.users())

    def api_tokens(self, request: Request) -> Response:
        return JSONResponse(self.state.tokens())  # names, roles, times: never a token or its hash

    async def api_launch(self, request: Request) -> Response:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("application/json", ""):  # (a form was read by the gate already: its stream is spent)
            raise HTTPError(415, "the body must be JSON (Content-Type: application/json)")
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (ValueError, RecursionError):
            raise HTTPError(400, "the body must be JSON") from None
        key, name = request.path_params["workspace"], request.path_params["workflow"]
        options, confirm = await asyncio.to_thread(self._parsed_launch, request, "launch", f"{key}/{name}", body)
        run_id = await asyncio.to_thread(self._launch, request, key, name, options, confirm)
        return JSONResponse({"run_id": run_id, "status": _launched_status(request), "url": f"/api/v1/runs/{run_id}"},
                            status_code=202, headers={"Location": f"/api/v1/runs/{run_id}"})

    def api_stop(self, request: Request) -> Response:
        stopped = self._stop(request)
        if isinstance(stopped, str) and getattr(request.state, "taken_off_queue", False):
            # it was queued: taken off the queue, recorded as interrupted already
            return JSONResponse({"run_id": stopped, "status": RunState.INTERRUPTED}, status_code=200)
        if isinstance(stopped, str):
            return JSONResponse({"run_id": stopped, "status": "stopping"}, status_code=202)
        return JSONResponse({"run_id": stopped.id, "status": "stopping"}, status_code=202)


def _as_http(exc: HTTPError | PolycrateError) -> HTTPError:
    """An error as the answer it gets: a refused launch its own status, something missing 404, other bad input
    400 (the gate's rule, and a refused form's)."""
    if isinstance(exc, HTTPError):
        return exc
    if isinstance(exc, LaunchRefused):
        return HTTPError(exc.status, exc.message)
    if isinstance(exc, NotFoundError):
        return HTTPError(404, exc.message)
    return HTTPError(400, str(exc))


def _action_asks(block: str, action: str, act: Any) -> list[dict]:
    """The prompt a launch of one action asks (its `prompt:`), in the shape of a workflow's (``prompts_of``)."""
    return [{"who": f"action {block} {action}", "message": act.prompt.message}] if act.prompt else []


def _form(request: Request, *names: str) -> dict[str, str]:
    """The named fields of the form the gate read (missing ones empty); any other field but csrf: 400."""
    form = getattr(request.state, "form", None)
    if form is None:
        raise HTTPError(415, "this takes a form (application/x-www-form-urlencoded)")
    unknown = sorted(set(form) - {"csrf", *names})
    if unknown:
        raise HTTPError(400, f"the form has no field {unknown[0][:40]!r}")
    return {n: form.get(n, "") for n in names}


async def _json_body(request: Request) -> Any:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/json", ""):  # (a form was read by the gate already: its stream is spent)
        raise HTTPError(415, "the body must be JSON (Content-Type: application/json)")
    raw = await request.body()
    try:
        return json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):
        raise HTTPError(400, "the body must be JSON") from None


def _fields(body: Any, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()) -> dict[str, str]:
    """A JSON object of text fields: the required ones present, nothing else; each a string of at most 1024."""
    if not isinstance(body, dict):
        raise HTTPError(400, "the body is a JSON object")
    unknown = sorted(set(body) - set(required) - set(optional))
    if unknown:
        raise HTTPError(400, f"no field {str(unknown[0])[:40]!r} here (fields: {', '.join(required + optional)})")
    for key in required:
        if key not in body:
            raise HTTPError(400, f"{key}: required")
    for key, value in body.items():
        if not isinstance(value, str) or len(value) > 1024:
            raise HTTPError(400, f"{key}: a string of at most 1024 characters")
    return dict(body)


def _launched_status(request: Request) -> str:
    """A launch's status in the API's answer: running, or (team mode) queued while no worker has taken it."""
    return "queued" if getattr(request.state, "queued", False) else str(RunState.RUNNING)


def _refusal(who: Principal, needed: str, workspace: str | None) -> str:
    """A 403's reason: the role held (in that workspace, or everywhere) and the one needed; one with no role in
    any workspace is told how to get one."""
    if who.role == NO_ROLE and not who.grants:
        return (f"{who.label} has no role in any workspace yet: an admin grants one (polycrate server grant add "
                f"{who.label} WORKSPACE --role viewer, or on the users page)")
    held = who.role_in(workspace)
    where = f"in {workspace}" if workspace is not None else "here"
    return f"{who.label} has {'no role' if held == NO_ROLE else f'the {held} role'} {where}; this needs the {needed} role"


def _return_to(request: Request) -> str:
    """Where to go after logging in from a 401: the page asked for (with its query: a filter of /runs), or for a
    form sent (a POST, which a redirect after the login cannot repeat) the page the form was on, from this
    server's Referer."""
    if request.method in ("GET", "HEAD"):
        return request.url.path + (f"?{request.url.query}" if request.url.query else "")
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.scheme in ("http", "https") and referer.netloc == request.headers.get("host"):
        return referer.path + (f"?{referer.query}" if referer.query else "")
    return "/"


_ERROR_HEADINGS = {400: "That was not accepted", 403: "Not allowed", 404: "Page not found",
                   405: "Not how this page is used", 409: "Not possible now", 413: "Too much sent at once",
                   415: "Not what this page takes", 422: "It needs a confirmation", 429: "Too many attempts"}


def _error_heading(status: int) -> str:
    """The error page's heading: what the status means, in plain words."""
    return _ERROR_HEADINGS.get(status) or ("Something went wrong on the server" if status >= 500
                                           else "That did not work")


def _came_from(request: Request) -> str | None:
    """The page of this site the request came from (its Referer: same scheme and host, a local path), to link
    back to; None for another site, no Referer, or the failing page itself (a link back to it would fail again)."""
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.scheme not in ("http", "https") or referer.netloc != request.headers.get("host"):
        return None
    path = referer.path or "/"
    if path == request.url.path and request.method in ("GET", "HEAD"):
        return None
    back = path + (f"?{referer.query}" if referer.query else "")
    return back if _local_path(back) == back else None


def _local_path(url: str) -> str:
    """Where to go after logging in: a path on this server, never another site (`//x`, `/\\x`, `http:`)."""
    ok = url.startswith("/") and not url.startswith(("//", "/\\")) and all(c.isprintable() for c in url)
    return url if ok else "/"


def _form_variables(declaration: Any, form: dict) -> dict[str, Any]:
    """The launch form's typed fields (`var-NAME`) as the JSON values the API takes: a form sends text, so
    a number field's text becomes a number here, a ticked box true; the declaration then checks them."""
    values: dict[str, Any] = {}
    for variable in getattr(declaration, "variables", ()):
        raw = form.get(f"var-{variable.name}")
        if variable.type == "boolean":
            values[variable.name] = raw == "yes"
            continue
        if raw is None or raw == "":
            continue
        if variable.type == "integer":
            text = raw.strip()
            if not (text.lstrip("-").isascii() and text.lstrip("-").isdigit() and len(text) < 19):
                raise HTTPError(400, f"vars.{variable.name}: a whole number, not {text[:40]!r}")
            values[variable.name] = int(text)
        elif variable.type == "choice":
            values[variable.name] = next((c for c in variable.choices if str(c) == raw), raw)
        else:
            values[variable.name] = raw
    return values


def _query_text(value: str, what: str, limit: int = 200) -> str:
    if len(value) > limit or not value.isprintable():
        raise HTTPError(400, f"{what}: at most {limit} printable characters")
    return value


def _search_text(request: Request) -> str:
    from polycrate.server.logview import check_search

    try:
        return check_search(request.query_params.get("search", ""))
    except ValueError as exc:
        raise HTTPError(400, str(exc)) from None


def _whole(text: str, what: str, low: int, high: int) -> int:
    """A whole number from a query string: ASCII digits only ('²' is a digit to str.isdigit, not to int)."""
    if not (text.isascii() and text.isdigit() and len(text) <= 9 and low <= int(text) <= high):
        raise HTTPError(400, f"{what} must be a whole number from {low} to {high}, not {text[:20]!r}")
    return int(text)


def _audit_filters(request: Request) -> dict[str, Any]:
    q = request.query_params
    filters: dict[str, Any] = {"limit": _whole(q.get("limit", "200"), "limit", 1, 1000)}
    if q.get("before"):
        filters["before"] = _whole(q["before"], "before", 1, 10**15)
    for key in ("actor", "action", "outcome"):
        if q.get(key):
            filters[key] = _query_text(q[key], key)
    if q.get("since"):
        filters["since"] = _time_filter(_query_text(q["since"], "since"), "since")
    return filters


def _event(kind: str, data: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


def _time_filter(text: str, what: str) -> float:
    """`since`/`until`: a span back from now (1h, 6h, 1d, 7d, 30d), an epoch time, or an ISO date/time."""
    if text in SPANS:
        return time.time() - SPANS[text]
    try:
        value = float(text)
        if value == value and abs(value) < 1e11:  # not NaN, not inf, a time of this world
            return value
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except (ValueError, OverflowError, OSError):
        raise HTTPError(400, f"{what}: give 1h, 6h, 1d, 7d, 30d, an epoch time or an ISO date, not {text!r}") from None


class SecurityHeaders:
    """CSP without inline script, no framing, no sniffing; HSTS under TLS."""

    def __init__(self, app, tls: bool):
        self.app = app
        self.tls = tls

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"same-origin"),
                ]
                if self.tls or scope.get("scheme") == "https":
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                if not scope["path"].startswith("/static/"):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        return await self.app(scope, receive, send_with_headers)


class ProxyClient:
    """Behind --behind-proxy: the client's address and scheme from X-Forwarded-For/-Proto, believed only when
    the connection comes from a configured proxy address, and then the rightmost address the proxy added
    (what a client writes into the header itself stands left of it and is ignored). Elsewhere the headers
    are ignored: a client that rotates X-Forwarded-For gets no new address from it."""

    def __init__(self, app, proxies: tuple[str, ...]):
        self.app = app
        self.proxies = set(proxies)

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket") and scope.get("client") and scope["client"][0] in self.proxies:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            chain = [a.strip() for a in headers.get("x-forwarded-for", "").split(",") if a.strip()]
            for address in reversed(chain):
                if address not in self.proxies:
                    scope = dict(scope, client=(address[:64], 0))
                    break
            proto = headers.get("x-forwarded-proto", "").split(",")[-1].strip().lower()
            if proto in ("http", "https"):
                scope = dict(scope, scheme=proto)
        return await self.app(scope, receive, send)


class TrustedHosts:
    """Requests whose Host header is not one this server answers to get 400 (DNS rebinding: a page on
    another site that resolves its own name to 127.0.0.1 cannot talk to us with our cookies' trust)."""

    def __init__(self, app, allowed: tuple[str, ...], web: Web | None = None):
        self.app = app
        self.allowed = {h.lower() for h in allowed}
        self.web = web

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        host = ""
        for key, value in scope.get("headers", []):
            if key == b"host":
                host = value.decode("latin-1").lower()
                break
        name = host[: host.rindex("]") + 1] if host.startswith("[") and "]" in host else host.split(":")[0]
        if name not in self.allowed and "*" not in self.allowed:
            # the page for a browser names nobody: under DNS rebinding another site's script reads it
            return await _refuse(scope, send, 400, "this server does not answer to that Host name (see polycrate serve "
                                 "--allowed-host)", self.web, anonymous=True)
        return await self.app(scope, receive, send)


class BodyLimit:
    """At most `limit` bytes of request body, else 413, before any route sees it; multipart (file uploads,
    which Starlette would spool to a temporary file) is refused with 415 unread: no route takes files.
    Bodies are short (a login, a launch), so a body within the limit is read into memory here."""

    def __init__(self, app, limit: int, web: Web | None = None):
        self.app = app
        self.limit = limit
        self.web = web

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        declared = headers.get(b"content-length", b"")
        if declared and (not declared.isdigit() or int(declared) > self.limit):
            return await _refuse(scope, send, 413, f"the request body is larger than {self.limit} bytes", self.web)
        chunks, size = [], 0
        while True:  # read (in memory, at most the limit) before answering: an unread body makes the close a reset
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await _refuse(scope, send, 413, f"the request body is larger than {self.limit} bytes", self.web)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if kind.startswith(b"multipart/"):  # never parsed: Starlette would spool its files to disk
            return await _refuse(scope, send, 415, "no file uploads here: send JSON or a form (urlencoded)", self.web)
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


class SlashRedirect:
    """`/runs/` -> `/runs`, as a path on this server: the Location never carries the Host header (which a
    client chooses) and never starts with `//` (another site, to a browser)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/") and not path.startswith("/static/"):
            target = "/" + path.strip("/")
            from urllib.parse import quote

            location = quote(target, safe="/-._~") + (("?" + scope["query_string"].decode("latin-1"))
                                                       if scope.get("query_string") else "")
            await send({"type": "http.response.start", "status": 308,
                        "headers": [(b"location", location.encode("latin-1", "replace")), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return None
        return await self.app(scope, receive, send)


def _wants_page(scope) -> bool:
    """A browser asking for a page (Accept names text/html, outside /api/): it gets the site's error page where an
    API client gets the error document."""
    if scope["type"] != "http" or scope.get("path", "").startswith("/api/"):
        return False
    accept = next((v for k, v in scope.get("headers", []) if k == b"accept"), b"")
    return b"text/html" in accept.lower()


async def _refuse(scope, send, status: int, message: str, web: Web | None, anonymous: bool = False) -> None:
    """A refusal before any route saw the request (its Host, its body): the site's error page for a browser
    (``anonymous``: without who is logged in), else the API's error document, as a route's refusal would be."""
    if web is None or not _wants_page(scope):
        return await _plain(send, status, message)
    request = Request(scope)
    request.state.principal = None if anonymous else await asyncio.to_thread(web.principal, request)
    response = web.error_page(request, status, message)
    response.headers["connection"] = "close"

    async def nothing() -> dict:
        return {"type": "http.disconnect"}

    await response(scope, nothing, send)
    return None


async def _plain(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _sweeper(web: Web) -> None:
    """The launch files' sweep on the server's start and every SWEEP_SECONDS (also after each launched run); in
    between, every WAITING_SECONDS, the values of runs this server did not start (it was restarted) once ended."""
    while True:
        try:
            web.sweep_launches()
        except Exception:  # housekeeping: the next sweep does it
            pass
        for _ in range(SWEEP_SECONDS // WAITING_SECONDS):
            time.sleep(WAITING_SECONDS)
            if web.files.waiting:
                try:
                    web.files.sweep_waiting(web.launch_state)
                except Exception:
                    pass


def create_app(settings: Settings):
    web = Web(settings)
    sealed = web.files.migrate(web.launch_state)
    if sealed:  # one line, never what they hold
        print(f"polycrate serve: sealed {sealed} plaintext secret launch values file(s) an older version left in "
              f"{web.files.folder} (removed, or once their run ends)", file=sys.stderr, flush=True)
    threading.Thread(target=_sweeper, args=(web,), name="launch-files", daemon=True).start()
    app = Starlette(routes=web.routes(), exception_handlers={StarletteHTTPException: web.unrouted})
    app.router.redirect_slashes = False  # SlashRedirect does it without echoing Host
    app.state.web = web
    allowed = settings.allowed_hosts or LOOPBACK_NAMES
    inner = SecurityHeaders(TrustedHosts(SlashRedirect(BodyLimit(app, settings.body_limit, web)), tuple(allowed), web),
                            settings.tls)
    return ProxyClient(inner, settings.proxies) if settings.behind_proxy else inner
