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
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from polycrate import __version__
from polycrate.errors import NotFoundError, PolycrateError
from polycrate.history import RunRecord
from polycrate.cli.render import state_text
from polycrate.states import RunState, StepState
from polycrate import contract
from polycrate.server import chart, openapi
from polycrate.server.catalog import RUN_STATES, Catalog
from polycrate.server.launch import LaunchOptions, LaunchRefused, launch, prompts_of, run_options_supported, stop
from polycrate.server.state import Principal, ServerState

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "pc_session"
LOGIN_COOKIE = "pc_login"  # the login form's CSRF token (double submit: cookie and form field)
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
       " form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SPANS = {"1h": 3600, "6h": 6 * 3600, "1d": 86400, "7d": 7 * 86400, "30d": 30 * 86400}


@dataclass
class Settings:
    sources: list[Path]
    state_dir: Path
    tls: bool = False
    behind_proxy: bool = False
    backend: str | None = None  # team mode: the PostgreSQL DSN runs are read from (cli/ reads the user's setting)


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
    env.filters.update(when=_when, span=_span, ago=_ago, until=_until, words=state_text)
    env.globals.update(RunState=RunState, StepState=StepState)  # templates name states, never spell them
    return env


# --- the application --------------------------------------------------------------------------


class Web:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.state = ServerState(settings.state_dir)
        self.catalog = Catalog(settings.sources, backend=settings.backend)
        self.templates = _templates()
        self.supported = run_options_supported()

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
            return self.login_page(request, status=401, message=exc.message, next_url=str(request.url.path))
        return self.page(request, "error.html", status=exc.status, title=f"{exc.status}", message=exc.message)

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
        R = Route  # noqa: N806
        g = self.guard
        return [
            R("/login", self.login_form, methods=["GET"]),
            R("/login", self.login, methods=["POST"]),
            R("/logout", g(self.logout, "viewer"), methods=["POST"]),
            R("/", g(self.overview, "viewer")),
            R("/runs", g(self.runs_page, "viewer")),
            R("/runs/{run_id}", g(self.run_page, "viewer")),
            R("/runs/{run_id}/log/events", g(self.log_events, "viewer")),
            R("/runs/{run_id}/stop", g(self.stop_form, "operator"), methods=["POST"]),
            R("/workspaces/{workspace}/workflows/{workflow}", g(self.workflow_page, "viewer")),
            R("/workspaces/{workspace}/workflows/{workflow}/launch", g(self.launch_form, "operator"),
              methods=["POST"]),
            R("/schedules", g(self.schedules_page, "viewer")),
            R("/blocks", g(self.blocks_page, "viewer")),
            R("/audit", g(self.audit_page, "admin")),
            R("/admin", g(self.admin_page, "admin")),
            R("/admin/tokens", g(self.token_add_form, "admin"), methods=["POST"]),
            R("/admin/tokens/{name}/revoke", g(self.token_revoke_form, "admin"), methods=["POST"]),
            R("/api/v1/openapi.json", self.openapi),
            R("/api/v1/whoami", g(self.api_whoami, "viewer")),
            R("/api/v1/overview", g(self.api_overview, "viewer")),
            R("/api/v1/runs", g(self.api_runs, "viewer")),
            R("/api/v1/runs/{run_id}", g(self.api_run, "viewer")),
            R("/api/v1/runs/{run_id}/log", g(self.api_log, "viewer")),
            R("/api/v1/runs/{run_id}/log/events", g(self.log_events, "viewer")),
            R("/api/v1/runs/{run_id}/stop", g(self.api_stop, "operator"), methods=["POST"]),
            R("/api/v1/workspaces/{workspace}/workflows/{workflow}/runs", g(self.api_launch, "operator"),
              methods=["POST"]),
            R("/api/v1/schedules", g(self.api_schedules, "viewer")),
            R("/api/v1/blocks", g(self.api_blocks, "viewer")),
            R("/api/v1/audit", g(self.api_audit, "admin")),
            R("/api/v1/users", g(self.api_users, "admin")),
            R("/api/v1/tokens", g(self.api_tokens, "admin")),
            Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
        ]

    def guard(self, endpoint: Callable, role: str) -> Callable:
        """The one gate: authenticated (401), allowed (403), CSRF on state-changing session requests (403)."""
        is_async = asyncio.iscoroutinefunction(endpoint)

        def check(request: Request, form: dict | None) -> None:
            who = self.principal(request)
            if who is None:
                if request.headers.get("authorization"):
                    raise HTTPError(401, "invalid or unknown API token")
                raise HTTPError(401, "log in first (or send an API token: Authorization: Bearer ...)")
            request.state.principal = who
            if request.method not in ("GET", "HEAD") and who.via == "session":
                sent = request.headers.get("x-csrf-token") or (form or {}).get("csrf") or ""
                if not (who.csrf and hmac.compare_digest(str(sent), who.csrf)):
                    self.state.audit(who.label, "csrf-refused", request.url.path, "refused", self.client(request))
                    raise HTTPError(403, "missing or wrong CSRF token: reload the page and try again")
            if not who.may(role):
                if request.method not in ("GET", "HEAD"):
                    self.state.audit(who.label, "denied", request.url.path, "refused", self.client(request),
                                     {"role": who.role, "needed": role})
                raise HTTPError(403, f"{who.label} is a {who.role}; this needs the {role} role")

        async def endpoint_with_gate(request: Request) -> Response:
            try:
                form = None
                if request.method not in ("GET", "HEAD") and "form" in request.headers.get("content-type", ""):
                    form = dict(await request.form())
                    request.state.form = form
                await asyncio.to_thread(check, request, form)
                if is_async:
                    return await endpoint(request)
                return await asyncio.to_thread(endpoint, request)
            except HTTPError as exc:
                return self.error(request, exc)
            except LaunchRefused as exc:
                return self.error(request, HTTPError(exc.status, exc.message))
            except NotFoundError as exc:
                return self.error(request, HTTPError(404, exc.message))
            except PolycrateError as exc:
                return self.error(request, HTTPError(400, str(exc)))

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
        name = str(form.get("username", "")).strip()
        password = str(form.get("password", ""))
        next_url = str(form.get("next") or "/")
        sent, cookie = str(form.get("csrf", "")), request.cookies.get(LOGIN_COOKIE, "")
        if not (cookie and hmac.compare_digest(sent, cookie)):
            self.state.audit(name or "-", "login", None, "refused: CSRF", client)
            return self.page(request, "error.html", status=403, title="403",
                             message="missing or wrong CSRF token: reload the login page and try again")
        if self.state.login_blocked(name, client):
            self.state.audit(name, "login", None, "refused: rate limit", client)
            return self.login_page(request, status=429, next_url=next_url,
                                   message="too many failed logins: wait 15 minutes and try again")
        role = self.state.authenticate(name, password)
        if role is None:
            self.state.record_login_failure(name, client)
            self.state.audit(name or "-", "login", None, "failed", client)
            return self.login_page(request, status=401, message="wrong user name or password", next_url=next_url)
        self.state.clear_login_failures(name)
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
        rows = self.catalog.overview()
        return self.page(request, "overview.html", title="Overview", rows=rows)

    def _filters(self, request: Request) -> dict:
        q = request.query_params
        filters: dict[str, Any] = {}
        for key in ("workspace", "workflow", "status"):
            if q.get(key):
                filters[key] = q[key]
        for key in ("since", "until"):
            if q.get(key):
                filters[key] = _time_filter(q[key], key)
        limit = q.get("limit", "50")
        if not limit.isdigit() or not 1 <= int(limit) <= 1000:
            raise HTTPError(400, f"limit must be a whole number from 1 to 1000, not {limit!r}")
        filters["limit"] = int(limit)
        return filters

    def runs_page(self, request: Request) -> Response:
        filters = self._filters(request)
        runs = self.catalog.list_runs(**filters)
        query = {k: v for k, v in request.query_params.items() if k != "until"}
        more = None
        if len(runs) == filters["limit"]:  # the next page: runs started before the last one shown
            more = "/runs?" + urlencode({**query, "until": repr(runs[-1].started)})
        return self.page(request, "runs.html", title="Runs", runs=runs, q=request.query_params, more=more,
                         workspaces=[e.key for e in self.catalog.entries()], spans=list(SPANS))

    def run_page(self, request: Request) -> Response:
        entry, run, logs = self.catalog.run_logs(request.path_params["run_id"])
        timeline = chart.timeline(run)
        return self.page(request, "run.html", title=f"Run {run.id}", run=run, logs=logs, timeline=timeline,
                         timeline_svg=chart.timeline_svg(timeline), live=run.status == RunState.RUNNING)

    def workflow_page(self, request: Request) -> Response:
        key, name = request.path_params["workspace"], request.path_params["workflow"]
        entry, workflow = self.catalog.workflow(key, name)
        history = self.catalog.workflow_runs(key, name)
        running = self.catalog.list_runs(workspace=key, workflow=name, status=RunState.RUNNING, limit=1)
        return self.page(
            request, "workflow.html", title=f"{key} / {name}", entry=entry, workflow=workflow,
            svg=chart.durations(history), history=list(reversed(history)), prompts=prompts_of(entry.ws, workflow),
            running=running[0] if running else None, supported=self.supported,
            message=request.query_params.get("message"))

    def schedules_page(self, request: Request) -> Response:
        return self.page(request, "schedules.html", title="Schedules", rows=self.catalog.schedules())

    def blocks_page(self, request: Request) -> Response:
        return self.page(request, "blocks.html", title="Blocks", rows=self.catalog.blocks())

    def audit_page(self, request: Request) -> Response:
        return self.page(request, "audit.html", title="Audit log", rows=self.state.audit_log())

    def admin_page(self, request: Request, new_token: str | None = None, new_name: str | None = None) -> Response:
        return self.page(request, "admin.html", title="Users and tokens", users=self.state.users(),
                         tokens=self.state.tokens(), new_token=new_token, new_name=new_name)

    def token_add_form(self, request: Request) -> Response:
        """A new API token, shown once on the page that answers; only its hash is kept."""
        form = request.state.form if hasattr(request.state, "form") else {}
        who: Principal = request.state.principal
        name, role = str(form.get("name", "")).strip(), str(form.get("role", ""))
        token = self.state.add_token(name, role)  # PolycrateError (bad name, role, exists): 400
        self.state.audit(who.label, "token-add", name, "ok", self.client(request), {"role": role})
        return self.admin_page(request, new_token=token, new_name=name)

    def token_revoke_form(self, request: Request) -> Response:
        who: Principal = request.state.principal
        name = request.path_params["name"]
        self.state.remove_token(name)
        self.state.audit(who.label, "token-remove", name, "ok", self.client(request))
        return RedirectResponse("/admin", status_code=303)

    # --- launch and stop -------------------------------------------------------------------

    def _launch(self, request: Request, key: str, name: str, options: LaunchOptions, confirmed: bool) -> str:
        who: Principal = request.state.principal
        entry, workflow = self.catalog.workflow(key, name)
        if options.step and options.step not in {s.name for s in workflow.steps}:
            raise HTTPError(400, f"workflow '{name}' has no step '{options.step}'")
        asks = prompts_of(entry.ws, workflow, options.step)
        detail = options.audit() | {"workspace": key, "workflow": name}
        if asks and not confirmed:
            raise HTTPError(422, f"workflow '{name}' asks for confirmation: confirm every prompt to launch it",
                            {"prompts": asks})
        try:
            launched = launch(entry.root, name, options, launched_by=f"web:{who.label}",
                              output_dir=self.settings.state_dir / "launches", supported=self.supported,
                              backend=self.settings.backend, workspace=entry.name)
        except LaunchRefused as exc:
            self.state.audit(who.label, "launch", f"{key}/{name}", f"refused: {exc.message}", self.client(request),
                             detail)
            raise
        self.state.audit(who.label, "launch", f"{key}/{name}", "ok", self.client(request),
                         detail | {"run_id": launched.run_id, "confirmed": [a["message"] for a in asks]})
        return launched.run_id

    def launch_form(self, request: Request) -> Response:
        form = request.state.form if hasattr(request.state, "form") else {}
        key, name = request.path_params["workspace"], request.path_params["workflow"]
        entry, workflow = self.catalog.workflow(key, name)
        asks = prompts_of(entry.ws, workflow, form.get("step") or None)
        confirmed = all(form.get(f"confirm-{i}") == "yes" for i in range(len(asks)))
        options = LaunchOptions(
            check=form.get("check") == "yes", step=form.get("step") or None, resume=form.get("resume") == "yes",
            limit=(form.get("limit") or "").strip() or None,
            extra_vars=tuple(line.strip() for line in str(form.get("extra_vars") or "").splitlines() if line.strip()),
        )
        try:
            run_id = self._launch(request, key, name, options, confirmed)
        except (HTTPError, LaunchRefused) as exc:
            status = exc.status
            message = exc.message
            return self.page(request, "error.html", status=status, title=str(status), message=message,
                             back=f"/workspaces/{key}/workflows/{name}")
        return RedirectResponse(f"/runs/{run_id}", status_code=303)

    def _stop(self, request: Request) -> RunRecord:
        who: Principal = request.state.principal
        entry, run = self.catalog.find_run(request.path_params["run_id"])
        try:
            stop(entry.root, run)
        except LaunchRefused as exc:
            self.state.audit(who.label, "stop", run.id, f"refused: {exc.message}", self.client(request))
            raise
        self.state.audit(who.label, "stop", run.id, "ok", self.client(request), {"workspace": entry.key})
        return run

    def stop_form(self, request: Request) -> Response:
        run = self._stop(request)
        return RedirectResponse(f"/runs/{run.id}", status_code=303)

    # --- the live log ----------------------------------------------------------------------

    async def log_events(self, request: Request) -> Response:
        """Server-sent events: `step` when a step's log begins, `line` per log line, `end` with the result."""
        run_id = request.path_params["run_id"]
        entry, run = await asyncio.to_thread(self.catalog.find_run, run_id)

        async def stream():
            offsets: dict[int, int] = {}
            announced: set[int] = set()
            pending: dict[int, str] = {}
            idle = 0.0
            while True:
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
                    for position, rest in pending.items():
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
        return JSONResponse(self.catalog.overview())

    # runs leave as the documents of polycrate.contract: those of `polycrate runs list/show/logs -o json`

    def api_runs(self, request: Request) -> Response:
        runs = self.catalog.list_runs(**self._filters(request))
        return JSONResponse(contract.runs_document((r, r.workspace) for r in runs))

    def api_run(self, request: Request) -> Response:
        run = self.catalog.find_run(request.path_params["run_id"])[1]
        return JSONResponse(contract.run_document(run, run.workspace))

    def api_log(self, request: Request) -> Response:
        _, run, logs = self.catalog.run_logs(request.path_params["run_id"], request.query_params.get("step"))
        return JSONResponse(contract.logs_document(run.id, logs))

    def api_schedules(self, request: Request) -> Response:
        return JSONResponse(self.catalog.schedules())

    def api_blocks(self, request: Request) -> Response:
        return JSONResponse(self.catalog.blocks())

    def api_audit(self, request: Request) -> Response:
        return JSONResponse(self.state.audit_log())

    def api_users(self, request: Request) -> Response:
        return JSONResponse(self.state.users())

    def api_tokens(self, request: Request) -> Response:
        return JSONResponse(self.state.tokens())  # names, roles, times: never a token or its hash

    async def api_launch(self, request: Request) -> Response:
        try:
            body = await request.json() if await request.body() else {}
        except ValueError:
            raise HTTPError(400, "the body must be JSON") from None
        if not isinstance(body, dict):
            raise HTTPError(400, "the body must be a JSON object")
        unknown = set(body) - {"check", "step", "resume", "limit", "extra_vars", "confirm"}
        if unknown:
            raise HTTPError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
        extra = body.get("extra_vars") or []
        if isinstance(extra, (str, dict)):
            extra = [extra]
        options = LaunchOptions(check=bool(body.get("check")), step=body.get("step") or None,
                                resume=bool(body.get("resume")), limit=body.get("limit") or None,
                                extra_vars=tuple(e if isinstance(e, str) else json.dumps(e) for e in extra))
        key, name = request.path_params["workspace"], request.path_params["workflow"]
        run_id = await asyncio.to_thread(self._launch, request, key, name, options, bool(body.get("confirm")))
        return JSONResponse({"run_id": run_id, "status": RunState.RUNNING, "url": f"/api/v1/runs/{run_id}"}, status_code=202,
                            headers={"Location": f"/api/v1/runs/{run_id}"})

    def api_stop(self, request: Request) -> Response:
        run = self._stop(request)
        return JSONResponse({"run_id": run.id, "status": "stopping"}, status_code=202)


def _local_path(url: str) -> str:
    """Where to go after logging in: a path on this server, never another site (`//x`, `/\\x`, `http:`)."""
    ok = url.startswith("/") and not url.startswith(("//", "/\\")) and all(c.isprintable() for c in url)
    return url if ok else "/"


def _event(kind: str, data: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


def _time_filter(text: str, what: str) -> float:
    """`since`/`until`: a span back from now (1h, 6h, 1d, 7d, 30d), an epoch time, or an ISO date/time."""
    if text in SPANS:
        return time.time() - SPANS[text]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
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


def create_app(settings: Settings):
    web = Web(settings)
    app = Starlette(routes=web.routes())
    app.state.web = web
    return SecurityHeaders(app, settings.tls)
