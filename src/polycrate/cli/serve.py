"""`polycrate serve` (the web view and API) and `polycrate server token|user|audit` (its state).

The web stack (starlette, uvicorn, jinja2) is imported only inside `cmd_serve`: every other command,
`polycrate --help` included, starts without it.
"""
from __future__ import annotations

import ipaddress
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from polycrate.cli.render import emit_json, table
from polycrate.errors import PolycrateError

DEFAULT_LISTEN = "127.0.0.1:8470"


def register(sub, shared) -> None:
    # not the shared options: here -w repeats (several workspaces, or folders of them)
    p = sub.add_parser("serve", help="the web view and JSON API over workspaces' runs")
    p.add_argument("--listen", metavar="HOST:PORT", default=DEFAULT_LISTEN,
                   help=f"address to listen on (default {DEFAULT_LISTEN}; other than loopback needs TLS or --behind-proxy)")
    p.add_argument("-w", "--workspace", dest="serve_workspaces", metavar="PATH", action="append", default=[],
                   help="a workspace, or a folder of workspaces (repeatable; default: the workspace here)")
    p.add_argument("--certfile", metavar="FILE", help="TLS certificate (PEM)")
    p.add_argument("--keyfile", metavar="FILE", help="TLS private key (PEM)")
    p.add_argument("--behind-proxy", action="store_true",
                   help="a reverse proxy terminates TLS (trust its X-Forwarded-* headers, from --proxy only)")
    p.add_argument("--proxy", metavar="ADDRESS", action="append", default=[],
                   help="with --behind-proxy: the proxy's address, whose X-Forwarded-For is believed "
                        "(repeatable; default 127.0.0.1 and ::1)")
    p.add_argument("--allowed-host", metavar="NAME", action="append", default=[],
                   help="a Host name this server answers to (repeatable; the --listen host and the loopback names "
                        "always; others get 400)")
    p.add_argument("--schedule-dest", metavar="DIR", action="append", default=[],
                   help="where `schedules apply` installs (repeatable; default /etc/systemd/system and /etc/cron.d):"
                        " the schedules page says whether each schedule is applied")
    p.add_argument("--keep-launch-secrets", metavar="SPAN", default="7d",
                   help="how long a web launch's secret values are kept, sealed to this server's key, for a relaunch"
                        " or a resume (a time span: 7d, 12h, 0; default 7d); after it they are asked for again")
    _state_option(p)
    p.set_defaults(func=cmd_serve)

    group = sub.add_parser("server", parents=[shared], help="the web server's users, API tokens and audit log")
    ssub = group.add_subparsers(dest="server_command", metavar="COMMAND")
    ssub.required = True
    tokens = ssub.add_parser("token", help="API tokens").add_subparsers(dest="token_command", metavar="COMMAND")
    tokens.required = True
    p = tokens.add_parser("add", parents=[shared], help="make a token; it is printed once, as the last line")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=("viewer", "operator", "admin", "none"),
                   help="the role in every workspace; none: only the workspaces granted (server grant add token:NAME)")
    _state_option(p)
    p.set_defaults(func=cmd_token_add)
    p = tokens.add_parser("list", parents=[shared], help="tokens (names and roles; never the tokens)")
    _state_option(p)
    p.set_defaults(func=cmd_token_list)
    p = tokens.add_parser("remove", parents=[shared], help="revoke a token")
    p.add_argument("name")
    _state_option(p)
    p.set_defaults(func=cmd_token_remove)

    users = ssub.add_parser("user", help="users of the web view").add_subparsers(dest="user_command", metavar="COMMAND")
    users.required = True
    p = users.add_parser("add", parents=[shared], help="add a user (or --replace its password and role)")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=("viewer", "operator", "admin", "none"),
                   help="the role in every workspace; none: only the workspaces granted (server grant add)")
    p.add_argument("--password-stdin", action="store_true", required=True, help="read the password from stdin")
    p.add_argument("--replace", action="store_true", help="set a new password and role for an existing user")
    _state_option(p)
    p.set_defaults(func=cmd_user_add)
    p = users.add_parser("list", parents=[shared], help="users and roles")
    _state_option(p)
    p.set_defaults(func=cmd_user_list)
    p = users.add_parser("remove", parents=[shared], help="remove a user (ends their sessions)")
    p.add_argument("name")
    _state_option(p)
    p.set_defaults(func=cmd_user_remove)

    p = ssub.add_parser("audit", parents=[shared], help="the audit log: logins, launches, stops, token and user changes")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--before", type=int, metavar="ID", help="rows older than this row id (the next page)")
    p.add_argument("--actor", metavar="NAME", help="only this user (or token:NAME)")
    p.add_argument("--action", metavar="ACTION", help="only this action (login, launch, stop, ...)")
    p.add_argument("--outcome", metavar="TEXT", help="only outcomes that begin so (ok, failed, refused)")
    _state_option(p)
    p.set_defaults(func=cmd_audit)

    grants = ssub.add_parser("grant", help="roles per workspace").add_subparsers(dest="grant_command", metavar="COMMAND")
    grants.required = True
    p = grants.add_parser("add", parents=[shared],
                          help="give a user (or token:NAME, or team:NAME) a role in one workspace")
    p.add_argument("principal", metavar="USER")
    p.add_argument("target_workspace", metavar="WORKSPACE", help="the workspace's name as the server shows it")
    p.add_argument("--role", required=True, choices=("viewer", "operator", "admin"))
    _state_option(p)
    p.set_defaults(func=cmd_grant_add)
    p = grants.add_parser("remove", parents=[shared], help="take a grant back")
    p.add_argument("principal", metavar="USER")
    p.add_argument("target_workspace", metavar="WORKSPACE")
    _state_option(p)
    p.set_defaults(func=cmd_grant_remove)
    p = grants.add_parser("list", parents=[shared], help="every grant")
    _state_option(p)
    p.set_defaults(func=cmd_grant_list)

    teams = ssub.add_parser("team", help="teams: a grant to team:NAME holds for each member").add_subparsers(
        dest="team_command", metavar="COMMAND")
    teams.required = True
    p = teams.add_parser("add", parents=[shared], help="make a team (then: server grant add team:NAME WORKSPACE)")
    p.add_argument("name")
    _state_option(p)
    p.set_defaults(func=cmd_team_add)
    p = teams.add_parser("remove", parents=[shared], help="remove a team and its grants")
    p.add_argument("name")
    _state_option(p)
    p.set_defaults(func=cmd_team_remove)
    p = teams.add_parser("join", parents=[shared], help="put a user into a team")
    p.add_argument("name", metavar="TEAM")
    p.add_argument("user", metavar="USER")
    _state_option(p)
    p.set_defaults(func=cmd_team_join)
    p = teams.add_parser("leave", parents=[shared], help="take a user out of a team")
    p.add_argument("name", metavar="TEAM")
    p.add_argument("user", metavar="USER")
    _state_option(p)
    p.set_defaults(func=cmd_team_leave)
    p = teams.add_parser("list", parents=[shared], help="teams with their members and grants")
    _state_option(p)
    p.set_defaults(func=cmd_team_list)


def _state_option(p) -> None:
    p.add_argument("--state", metavar="DIR", help="server state folder (default $POLYCRATE_SERVER_STATE, "
                                                   "else $XDG_DATA_HOME/polycrate/server); with a backend, users, "
                                                   "tokens, sessions and the audit are in the backend")


@contextmanager
def _state(args):
    """The state every server of this host's setting shares: the backend's, else the --state folder's."""
    from polycrate.cli.backend import backend_setting
    from polycrate.server.state_backends import open_state

    state = open_state(Path(args.state) if args.state else None, backend_setting())
    try:
        yield state
    finally:
        state.close()


def _actor() -> str:
    from polycrate.history import current_user

    return f"cli:{current_user()}"


def _when(t) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PolycrateError(f"--listen must be HOST:PORT (e.g. {DEFAULT_LISTEN}), not {text!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(args) -> int:
    sources = [Path(p) for p in args.serve_workspaces]
    if args.workspace:
        sources.insert(0, Path(args.workspace))
    if not sources:
        from polycrate.config.workspace import find_root

        sources = [find_root(None)]
    from polycrate.server.catalog import check_sources

    check_sources(sources)
    host, port = parse_listen(args.listen)
    if bool(args.certfile) != bool(args.keyfile):
        raise PolycrateError("--certfile and --keyfile go together")
    tls = bool(args.certfile)
    from polycrate.timespec.times import ScheduleError, parse_timespan

    try:
        keep_secrets = parse_timespan(args.keep_launch_secrets)
    except ScheduleError as exc:
        raise PolycrateError(f"--keep-launch-secrets: {exc}") from None
    for f in (args.certfile, args.keyfile):
        if f and not Path(f).is_file():
            raise PolycrateError(f"no such file: {f}")
    if not is_loopback(host) and not tls and not args.behind_proxy:
        raise PolycrateError(
            f"--listen {args.listen} is not a loopback address: give --certfile/--keyfile for TLS, or "
            "--behind-proxy when a reverse proxy on this host terminates TLS (polycrate docs: how-to/web-view.md)")
    try:
        import uvicorn

        from polycrate.server.app import Settings, create_app
    except ImportError as exc:
        raise PolycrateError(f"polycrate serve needs the web extra: pip install 'polycrate[web]' ({exc.name} missing)") from None
    from polycrate.server.state import default_state_dir

    from polycrate.server.app import LOOPBACK_NAMES
    from polycrate.server.catalog import find_workspaces

    state_dir = Path(args.state) if args.state else default_state_dir()
    from polycrate.cli.backend import backend_setting

    allowed = tuple(dict.fromkeys([*LOOPBACK_NAMES, host.lower(), *(h.strip().lower() for h in args.allowed_host)]))
    proxies = tuple(args.proxy) or ("127.0.0.1", "::1")
    for address in proxies:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise PolycrateError(f"--proxy {address!r}: an IP address (the proxy's, as this server sees it)") from None
    settings = Settings(sources=sources, state_dir=state_dir, tls=tls, behind_proxy=args.behind_proxy,
                        allowed_hosts=allowed, proxies=proxies,
                        backend=backend_setting(),
                        schedule_dests=tuple(Path(d) for d in args.schedule_dest) or None,
                        keep_launch_secrets=keep_secrets)
    app = create_app(settings)
    scheme = "https" if tls else "http"
    sock = _bind(host, port, args.listen)  # before saying we serve: a taken port is one line, not uvicorn's log
    print(f"polycrate serve: {scheme}://{args.listen}/ over "
          f"{len(find_workspaces(sources))} workspace(s); state in {_where_state(settings)}", file=sys.stderr, flush=True)
    # the proxy headers are read by the app itself (server.app.ProxyClient), from --proxy addresses only
    config = uvicorn.Config(app, ssl_certfile=args.certfile, ssl_keyfile=args.keyfile, proxy_headers=False,
                            log_level="warning", access_log=False, server_header=False, timeout_graceful_shutdown=3)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _where_state(settings) -> str:
    if settings.backend:
        from polycrate.history.postgres import safe_dsn

        return f"the backend {safe_dsn(settings.backend)} (launch files in {settings.state_dir})"
    return str(settings.state_dir)


def _bind(host: str, port: int, listen: str):
    """The listening socket, or a one-line error (the address is taken, or not this machine's)."""
    import socket

    from polycrate.errors import SystemFault

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise SystemFault(f"--listen {listen}: {exc.strerror or exc}") from None
    # no Nagle delay: accepted connections inherit it (uvicorn sets it only on sockets it binds itself;
    # without it every small answer waited ~45 ms for the client's delayed ACK: 30x slower)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def cmd_token_add(args) -> int:
    with _state(args) as state:
        token = state.add_token(args.name, args.role)
        state.audit(_actor(), "token-add", args.name, "ok", None, {"role": args.role})
    print(f"token '{args.name}' ({args.role}) made; it is shown once, here, and only its hash is kept:",
          file=sys.stderr)
    print(token)
    return 0


def cmd_token_list(args) -> int:
    from polycrate import contract
    with _state(args) as state:
        rows = state.tokens()
    if args.output == "json":
        emit_json(contract.document("server-tokens", {"tokens": [
            r | {"created": contract.timestamp(r["created"]), "last_used": contract.timestamp(r["last_used"])}
            for r in rows]}), args.format)
    else:
        table([(r["name"], r["role"], _when(r["created"]), _when(r["last_used"])) for r in rows],
              ("NAME", "ROLE", "CREATED", "LAST_USED"))
    return 0


def cmd_token_remove(args) -> int:
    with _state(args) as state:
        state.remove_token(args.name)
        state.audit(_actor(), "token-remove", args.name, "ok")
    print(f"token '{args.name}' revoked", file=sys.stderr)
    return 0


def cmd_user_add(args) -> int:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise PolycrateError("no password on stdin (echo \"$PASSWORD\" | polycrate server user add NAME ...)")
    with _state(args) as state:
        state.add_user(args.name, args.role, password, replace=args.replace)
        state.audit(_actor(), "user-add", args.name, "ok", None, {"role": args.role, "replace": args.replace})
    print(f"user '{args.name}' ({args.role}) {'updated' if args.replace else 'added'}", file=sys.stderr)
    return 0


def cmd_user_list(args) -> int:
    from polycrate import contract
    with _state(args) as state:
        rows = state.users()
    if args.output == "json":
        emit_json(contract.document("server-users", {"users": [r | {"created": contract.timestamp(r["created"])}
                                                               for r in rows]}), args.format)
    else:
        table([(r["name"], r["role"], _when(r["created"])) for r in rows], ("NAME", "ROLE", "CREATED"))
    return 0


def cmd_user_remove(args) -> int:
    with _state(args) as state:
        state.remove_user(args.name)
        state.audit(_actor(), "user-remove", args.name, "ok")
    print(f"user '{args.name}' removed", file=sys.stderr)
    return 0


def _escaped(value: object) -> str:
    """A cell for the terminal: control characters written as escapes (a name may hold ESC sequences)."""
    text = "" if value is None else str(value)
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def cmd_grant_add(args) -> int:
    with _state(args) as state:
        state.grant(args.principal, args.target_workspace, args.role)
        state.audit(_actor(), "grant-add", f"{args.principal}@{args.target_workspace}", "ok", None,
                    {"role": args.role})
    print(f"{args.principal} is {args.role} in {args.target_workspace}", file=sys.stderr)
    return 0


def cmd_grant_remove(args) -> int:
    with _state(args) as state:
        state.revoke(args.principal, args.target_workspace)
        state.audit(_actor(), "grant-remove", f"{args.principal}@{args.target_workspace}", "ok")
    print(f"grant of {args.principal} in {args.target_workspace} removed", file=sys.stderr)
    return 0


def cmd_grant_list(args) -> int:
    from polycrate import contract
    with _state(args) as state:
        rows = state.grants()
    if args.output == "json":
        emit_json(contract.document("server-grants", {"grants": [
            r | {"created": contract.timestamp(r["created"])} for r in rows]}))
    else:
        table([(r["principal"], r["workspace"], r["role"], _when(r["created"])) for r in rows],
              ("WHO", "WORKSPACE", "ROLE", "GRANTED"))
    return 0


def cmd_audit(args) -> int:
    from polycrate import contract
    with _state(args) as state:
        rows = state.audit_log(max(1, args.limit), before=args.before, actor=args.actor, action=args.action,
                               outcome=args.outcome)
    if args.output == "json":
        emit_json(contract.document("server-audit", {"entries": [r | {"time": contract.timestamp(r["time"])}
                                                                 for r in rows]}), args.format)
    else:
        table([(_when(r["time"]), *(_escaped(r[k]) for k in ("actor", "action", "target", "outcome", "client")))
               for r in rows], ("TIME", "WHO", "WHAT", "TARGET", "OUTCOME", "CLIENT"))
    return 0


def cmd_team_add(args) -> int:
    with _state(args) as state:
        state.add_team(args.name)
        state.audit(_actor(), "team-add", args.name, "ok")
    print(f"team '{args.name}' made; grant it roles with: polycrate server grant add team:{args.name} WORKSPACE"
          " --role ROLE", file=sys.stderr)
    return 0


def cmd_team_remove(args) -> int:
    with _state(args) as state:
        state.remove_team(args.name)
        state.audit(_actor(), "team-remove", args.name, "ok")
    print(f"team '{args.name}' removed (and its grants)", file=sys.stderr)
    return 0


def cmd_team_join(args) -> int:
    with _state(args) as state:
        state.add_member(args.name, args.user)
        state.audit(_actor(), "team-member-add", f"{args.user}@{args.name}", "ok")
    print(f"{args.user} is in team {args.name}", file=sys.stderr)
    return 0


def cmd_team_leave(args) -> int:
    with _state(args) as state:
        state.remove_member(args.name, args.user)
        state.audit(_actor(), "team-member-remove", f"{args.user}@{args.name}", "ok")
    print(f"{args.user} left team {args.name}", file=sys.stderr)
    return 0


def cmd_team_list(args) -> int:
    from polycrate import contract
    with _state(args) as state:
        rows = state.teams()
    if args.output == "json":
        emit_json(contract.document("server-teams", {"teams": [
            r | {"created": contract.timestamp(r["created"])} for r in rows]}), args.format)
    else:
        table([(r["name"], ", ".join(r["members"]) or "-",
                ", ".join(f"{g['workspace']}:{g['role']}" for g in r["grants"]) or "-", _when(r["created"]))
               for r in rows], ("TEAM", "MEMBERS", "GRANTS", "CREATED"))
    return 0
