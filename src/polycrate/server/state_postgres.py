"""The server's state in the team backend's PostgreSQL: every ``polycrate serve`` (and every `polycrate server
user|token|grant|team|audit` command) on the same backend reads and writes the same users, tokens, sessions,
grants, teams, launches and audit, so a session made by one server holds on any other, a logout ends it on all.

The tables are those of SQLite's ``SCHEMA``, in the PostgreSQL schema ``polycrate_server`` (made by the backend's
migrations, ``history/postgres.py``); this connection's ``search_path`` is that schema alone, so the rules of
``StateStore`` run here as written: only the placeholders, the quoting of the column ``user`` (a reserved word
in PostgreSQL) and a literal ``%`` are translated.

psycopg is imported here only: nothing imports this module without a backend setting.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from polycrate.history.postgres import Connection, _check_schema, connect, safe_dsn
from polycrate.server.state import StateStore

SCHEMA = "polycrate_server"
# the one advisory lock key of the login count (two servers counting one try at once would let a sixth through)
LOGIN_LOCK = 0x706F6C6C  # "poll"
ANONYMOUS_LOCK = 0x616E6F6E  # "anon": the anonymous audit budget, taken by one server at a time
_USER = re.compile(r"\buser\b")


def translated(sql: str) -> str:
    """SQLite's statement as PostgreSQL takes it from psycopg."""
    return _USER.sub('"user"', sql.replace("%", "%%").replace("?", "%s"))


class PostgresServerState(StateStore):
    def __init__(self, dsn: str):
        super().__init__()
        self.dsn = dsn
        self.where = safe_dsn(dsn)
        self.db = self._connect()
        self._lock = threading.RLock()  # the server's worker threads share the connection: one statement at a time

    def _connect(self) -> Connection:
        db = connect(self.dsn)
        try:
            _check_schema(db, self.dsn)
            db.execute(f"SET search_path TO {SCHEMA}")
        except BaseException:
            db.close()
            raise
        return db

    def _usable(self) -> Connection:
        """The connection, made anew when the last one broke (the backend restarted): the request that met the
        break failed; the server goes on with the next one, never repeating a statement that may have applied."""
        if self.db.broken or self.db.closed:
            self.db = self._connect()
        return self.db

    def __repr__(self) -> str:
        return f"PostgresServerState({self.where!r})"

    def _sql(self, sql: str, args: tuple = ()) -> Any:
        with self._lock:
            return self._usable().execute(translated(sql), args)

    def _serialized(self) -> AbstractContextManager[object]:
        return self._login_transaction()

    @contextmanager
    def _login_transaction(self) -> Iterator[None]:
        # one transaction holding a lock every server on this backend waits for: the count and the new row
        # are one step, whichever server the tries reach
        with self._lock, self._usable().transaction():
            self.db.execute("SELECT pg_advisory_xact_lock(%s)", (LOGIN_LOCK,))
            yield

    def _anonymous_budget(self, client: str | None, now: float) -> int | None:
        # one budget for every server on the backend: counted and taken in one transaction under a lock all of
        # them wait for (two servers each allowing the whole budget would double it)
        from polycrate.server.state import AUDIT_ANONYMOUS_PER_MINUTE, AUDIT_ANONYMOUS_TOTAL_PER_MINUTE

        with self._lock, self._usable().transaction():
            db = self.db
            db.execute("SELECT pg_advisory_xact_lock(%s)", (ANONYMOUS_LOCK,))
            db.execute("DELETE FROM anonymous_audit WHERE time <= %s", (now - 60,))
            row = db.execute("SELECT count(*) AS total, count(*) FILTER (WHERE client IS NOT DISTINCT FROM %s) AS mine"
                             " FROM anonymous_audit", (client,)).fetchone()
            assert row is not None
            if row["mine"] >= AUDIT_ANONYMOUS_PER_MINUTE or row["total"] >= AUDIT_ANONYMOUS_TOTAL_PER_MINUTE:
                db.execute("UPDATE anonymous_left_out SET count = count + 1")
                return None
            db.execute("INSERT INTO anonymous_audit (time, client) VALUES (%s, %s)", (now, client))
            left = db.execute("UPDATE anonymous_left_out x SET count = 0 FROM (SELECT count AS was FROM"
                              " anonymous_left_out) o RETURNING o.was").fetchone()
            return int(left["was"]) if left is not None else 0

    def close(self) -> None:
        self.db.close()


__all__ = ["SCHEMA", "PostgresServerState", "translated"]
