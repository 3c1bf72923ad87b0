"""Every route of a real `polycrate serve`, with wrongly typed, odd and oversized input: never a 500.

The routes come from the application itself (a route added later is fuzzed too); each is called by every
kind of caller (anonymous, viewer, operator, admin token), with each of its methods and one it does not
take, odd path parameters and query strings, and bodies of every wrong type and size. The bodies are
all invalid, so nothing is launched, stopped or revoked by accident; the test prints how many requests
it made.
"""
from __future__ import annotations

import itertools
import json

import httpx
import pytest

from polycrate.server.app import BODY_LIMIT
from tests.conftest import run_cli
from tests.server_fixtures import make_workspace, seed_runs, start_server

ODD_SEGMENTS = ["x" * 3000, "%00", "%C2%B2", "..", "%2e%2e%2fetc", "%FF%FE", "latest~99999999999999999999",
                "%F0%9F%98%80", "a%0Ab", "%7B%7B7*7%7D%7D"]
ODD_QUERIES: list[dict[str, str] | str] = [
               {"limit": "²"}, {"limit": "-1"}, {"limit": "1e9"}, {"limit": "9" * 50}, {"since": "nan"}, {"since": "inf"},
               {"until": "9999-99-99"}, {"since": "1e400"}, {"status": "\x00"}, {"workspace": "x" * 5000},
               "step=%FF%FE", "limit=%00", "a=%ZZ&&&==", {"before": "²"}, {"before": "-5"}, {"actor": "\x1b[2J"},
               {"next": "//evil"}]
BODIES: list[tuple[str, bytes]] = [
    ("application/json", json.dumps(v).encode()) for v in (
        [], [1], "x", 5, None, True, {"limit": 5}, {"limit": ["a"]}, {"step": ["a"]}, {"step": {"a": 1}},
        {"extra_vars": 5}, {"extra_vars": [None]}, {"extra_vars": {"": 1}}, {"check": "no"}, {"confirm": "false"},
        {"resume": 1}, {"tags": 5}, {"limit": "a\x00b"}, {"limit": "x" * 50_000}, {"bogus": 1},
        {"extra_vars": {"x": json.loads("[" * 40 + "]" * 40)}}, {"extra_vars": ["@/etc/shadow"]},
    )
] + [
    ("application/json", b"{"), ("application/json", b"\xff\xfe\x00"),
    ("application/json", b"[" * 30_000 + b"]" * 30_000),
    ("application/json", b"{" + b" " * 70_000 + b"}"), ("text/plain", b"hello"), ("application/xml", b"<a/>"),
    ("application/x-www-form-urlencoded", b"name=%FF%FE&role=%00&csrf=x"),
    ("application/x-www-form-urlencoded", b"a=" + b"b" * 70_000),
    ("application/x-www-form-urlencoded", b"username=&password=&csrf=&check=maybe&limit=%40%2Fetc%2Fshadow"),
    ("multipart/form-data; boundary=b",
     b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x\"\r\n\r\nx\r\n--b--\r\n"),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    ops = make_workspace(tmp / "ops", "ops")
    seed_runs(ops)
    server = start_server(tmp, [ops])
    yield server
    server.stop()


def routes(tmp_path) -> list[tuple[str, set[str]]]:
    from starlette.routing import Route

    from polycrate.server.app import Settings, Web

    ws = make_workspace(tmp_path / "probe", "probe")
    web = Web(Settings(sources=[ws], state_dir=tmp_path / "probe-state"))
    return [(r.path, set(r.methods or ())) for r in web.routes() if isinstance(r, Route)]


def paths(template: str, run_id: str) -> list[str]:
    names = [p.strip("{}") for p in template.split("/") if p.startswith("{")]
    real = {"run_id": run_id, "workspace": "ops", "workflow": "green", "name": "no-such-token", "block": "sh",
            "action": "ok"}
    out = [template.format(**real)] if names else [template]
    for name in names:
        for odd in ODD_SEGMENTS:
            out.append(template.format(**(real | {name: odd})))
    return out


def test_no_route_answers_500_to_wrong_types_or_sizes(served, tmp_path):
    run_id = httpx.get(served.url + "/api/v1/runs", headers={"Authorization": f"Bearer {served.tokens['admin']}"}
                       ).json()["runs"][0]["run_id"]
    callers = {"anonymous": {}} | {role: {"Authorization": f"Bearer {served.tokens[role]}"} for role in
                                   ("viewer", "operator", "admin")}
    count, failures = 0, []
    with httpx.Client(base_url=served.url, timeout=60) as client:
        def call(method: str, url: str, headers: dict, **kwargs) -> None:
            nonlocal count
            count += 1
            try:
                r = client.request(method, url, headers=headers, **kwargs)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                # a body over the limit is answered 413 and the connection closed while we still send it
                if len(kwargs.get("content", b"")) <= BODY_LIMIT:
                    failures.append((method, url, f"connection: {exc}"))
                return
            except httpx.TimeoutException:
                failures.append((method, url, kwargs.get("params"), "no answer in 60 s"))
                return
            if r.status_code >= 500:
                failures.append((method, url, r.status_code, r.text[:200]))

        for template, methods in routes(tmp_path):
            if template.endswith("/log/events"):
                continue  # a stream: fuzzed below with a finished run only
            wrong = ["DELETE"] if "DELETE" not in methods else []
            for method in sorted(methods - {"HEAD"}) + wrong:
                urls = paths(template, run_id)
                # every caller gets the real path with every odd query or body; the odd paths go to the
                # admin (who passes every gate, so the route's own code meets them) with the first few
                for (_who, headers), url in itertools.chain(
                        ((c, urls[0]) for c in callers.items()), ((("admin", callers["admin"]), u) for u in urls[1:])):
                    few = url != urls[0]
                    if method in ("GET", "DELETE"):
                        call(method, url, headers)
                        for query in ODD_QUERIES[:3] if few else ODD_QUERIES:
                            if isinstance(query, str):  # raw: bytes no client library would encode so
                                call(method, f"{url}?{query}", headers)
                            else:
                                call(method, url, headers, params=query)
                    else:
                        for kind, body in BODIES[:4] if few else BODIES:
                            call(method, url, headers | {"Content-Type": kind}, content=body)
        for headers in callers.values():
            for odd in ODD_SEGMENTS:
                call("GET", f"/api/v1/runs/{odd}/log/events", headers)
                call("GET", f"/runs/{odd}/log/events", headers)
            call("GET", f"/api/v1/runs/{run_id}/log/events", headers)
        for host in ("evil.example", "", "127.0.0.1:1:2", "[::1", "x" * 5000):
            call("GET", "/api/v1/runs", {"Host": host} | callers["viewer"])
    for failure in failures:
        print("fuzz failure:", failure)
    print(f"\nfuzz: {count} requests over {len(routes(tmp_path))} routes, {len(failures)} answered 5xx")
    assert failures == []
    assert count > 1000
    # and the server still answers, with the runs it had
    assert run_cli("server", "audit", "--state", str(served.state), "--limit", "1").returncode == 0
    r = httpx.get(served.url + "/api/v1/runs", headers=callers["viewer"])
    assert r.status_code == 200 and r.json()["runs"][0]["run_id"] == run_id
