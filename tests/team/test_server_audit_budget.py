"""The anonymous audit budget (#26: rows of people not logged in, e.g. logins refused for a missing CSRF token,
are limited per address and in all before they are written) is one budget for every `polycrate serve` on a
backend (#25): two servers each allowing the whole budget would double what an attacker writes.

Two real `serve` processes on one real PostgreSQL. The assertion is on the rows in any one minute, from the
rows' own times: no timed assertion on how fast the tries go."""
from __future__ import annotations

import httpx
import pytest

from polycrate.server.state import AUDIT_ANONYMOUS_PER_MINUTE
from tests.server_fixtures import make_workspace, start_server
from tests.team.conftest import committed
from tests.team.harness import Team
from tests.team.test_serve_instances import _second_server

pytestmark = pytest.mark.team

TRIES = 8  # on each server: together more than one address's budget, each alone within it


def test_two_servers_share_one_anonymous_audit_budget(team_env, tmp_path, monkeypatch):
    for key, value in team_env.items():
        monkeypatch.setenv(key, value)
    ops = committed(make_workspace(tmp_path / "ops", "ops"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = start_server(tmp_path / "a", [ops])
    b = _second_server(a, tmp_path / "b")
    team = Team(ops, tmp_path, team_env, tmp_path)
    try:
        assert 2 * TRIES > AUDIT_ANONYMOUS_PER_MINUTE >= TRIES
        for k in range(TRIES):  # a login without the form's CSRF cookie: refused, and audited within the budget
            for server in (a, b):
                refused = httpx.post(f"{server.url}/login", data={"username": f"mallory{k}", "password": "x"},
                                     timeout=60)
                assert refused.status_code == 403, refused.text
        rows = team.sql("SELECT time, actor, client, detail FROM polycrate_server.audit WHERE action = 'login'"
                        " AND outcome = 'refused: CSRF' ORDER BY time")
        times = [r["time"] for r in rows]
        busiest = max(sum(1 for u in times if t <= u < t + 60) for t in times)
        assert busiest <= AUDIT_ANONYMOUS_PER_MINUTE, rows  # per process it was 2 x TRIES
        assert len(rows) == AUDIT_ANONYMOUS_PER_MINUTE or times[-1] - times[0] >= 60, rows
        left_out = team.sql("SELECT count FROM polycrate_server.anonymous_left_out")[0]["count"]
        assert left_out == 2 * TRIES - len(rows)  # counted, to be said by the next row written

        # the admins' view of the audit, through either server: the same rows
        headers = {"Authorization": f"Bearer {a.tokens['admin']}"}
        seen = [httpx.get(f"{s.url}/api/v1/audit", params={"action": "login", "outcome": "refused: CSRF"},
                          headers=headers, timeout=60).json() for s in (a, b)]
        assert seen[0] == seen[1] and len(seen[0]) == len(rows)
        print(f"{2 * TRIES} refused logins over two servers: {len(rows)} audited, {left_out} counted as left out")
    finally:
        b.stop()
        a.stop()
