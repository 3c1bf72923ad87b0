"""`polycrate backend init|import|status`, and the user's backend setting (team mode).

The setting is read here and nowhere else, then passed down as an argument (``open_store(backend=...)``,
``RunOptions.backend``): ``POLYCRATE_BACKEND`` (a ``postgresql://`` DSN), else the host configuration file
``/etc/polycrate/config.yml`` (``POLYCRATE_CONFIG`` names another), whose ``backend: {dsn_file: PATH}`` names a
file of its own that holds the DSN (its password stays out of the configuration and of any listing).
Without either, polycrate keeps each workspace's history in SQLite and imports nothing of PostgreSQL.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from polycrate.errors import ConfigError, PolycrateError

BACKEND_ENV = "POLYCRATE_BACKEND"
CONFIG_ENV = "POLYCRATE_CONFIG"
HOST_CONFIG = Path("/etc/polycrate/config.yml")
_SCHEMES = ("postgresql://", "postgres://")


def register(sub, shared) -> None:
    group = sub.add_parser("backend", parents=[shared], help="team mode: the PostgreSQL backend (init, import, status)")
    bsub = group.add_subparsers(dest="backend_command", metavar="COMMAND")
    bsub.required = True
    p = bsub.add_parser("init", parents=[shared], help="create or migrate the backend's schema (versioned, in order)")
    p.set_defaults(func=cmd_init)
    p = bsub.add_parser("import", parents=[shared],
                        help="copy a workspace's SQLite run history (runs, steps, host counts, logs) into the backend; "
                             "runs already there are left as they are, so it can run twice")
    p.add_argument("import_workspace", metavar="WORKSPACE", nargs="?",
                   help="the workspace folder (default: -w, or the workspace here)")
    p.set_defaults(func=cmd_import)
    p = bsub.add_parser("status", parents=[shared], help="which backend this host uses and its schema version")
    p.set_defaults(func=cmd_status)


# --- the setting ----------------------------------------------------------------------------------


def _check_dsn(dsn: str, where: str | Path | None, line: int | None = None) -> str:
    dsn = dsn.strip()
    if not dsn.startswith(_SCHEMES):
        raise ConfigError(f"the backend must be a PostgreSQL URL (postgresql://USER@HOST:PORT/DATABASE), not "
                          f"{dsn[:12]!r}...", where, line)
    return dsn


def backend_setting(environ: dict[str, str] | None = None) -> str | None:
    """The backend DSN this user set, or None (SQLite). Bad settings are one-line errors naming their file."""
    env = os.environ if environ is None else environ
    given = env.get(BACKEND_ENV, "").strip()
    if given:
        return _check_dsn(given, None if given.startswith(_SCHEMES) else BACKEND_ENV)
    path = Path(env.get(CONFIG_ENV) or HOST_CONFIG)
    if not path.exists():
        if env.get(CONFIG_ENV):
            raise ConfigError(f"no such file (named by {CONFIG_ENV})", path)
        return None
    return _from_host_config(path)


def _from_host_config(path: Path) -> str | None:
    from polycrate.config.yamlfile import load_yaml

    data = load_yaml(path)
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ConfigError("the host configuration must be a mapping (backend: {dsn_file: PATH})", path)
    unknown = sorted(set(data) - {"backend"})
    if unknown:
        raise ConfigError(f"unknown key '{unknown[0]}' (known: backend)", path, _line_of(data, unknown[0]))
    backend = data.get("backend")
    if backend is None:
        return None
    if not isinstance(backend, dict):
        raise ConfigError("'backend' must be a mapping with 'dsn_file'", path, _line_of(data, "backend"))
    unknown = sorted(set(backend) - {"dsn_file"})
    if unknown:
        raise ConfigError(f"backend: unknown key '{unknown[0]}' (known: dsn_file; the DSN itself lives in a file of "
                          "its own)", path, _line_of(backend, unknown[0]))
    dsn_file = backend.get("dsn_file")
    if not isinstance(dsn_file, str) or not dsn_file.strip():
        raise ConfigError("backend: 'dsn_file' must name the file that holds the DSN", path, _line_of(backend, "dsn_file"))
    target = Path(dsn_file)
    if not target.is_absolute():
        target = path.parent / target
    try:
        text = target.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"backend: cannot read dsn_file {target}: {exc.strerror or exc}", path,
                          _line_of(backend, "dsn_file")) from None
    lines = [x for x in text.splitlines() if x.strip() and not x.lstrip().startswith("#")]
    if len(lines) != 1:
        raise ConfigError("must hold the backend's DSN on one line (postgresql://USER@HOST:PORT/DATABASE)", target)
    return _check_dsn(lines[0], target, 1 + text.splitlines().index(lines[0]))


def _line_of(mapping: object, key: str) -> int | None:
    line_of = getattr(mapping, "line_of", None)
    return line_of(key) if callable(line_of) else None


# --- the commands ---------------------------------------------------------------------------------


def _required() -> str:
    dsn = backend_setting()
    if dsn is None:
        raise PolycrateError(f"no backend is set: set {BACKEND_ENV}=postgresql://USER@HOST:PORT/DATABASE, or "
                             f"backend.dsn_file in {HOST_CONFIG}")
    return dsn


def cmd_init(args) -> int:
    from polycrate.history.postgres import SCHEMA_VERSION, migrate, safe_dsn

    dsn = _required()
    before, after = migrate(dsn)
    if before == after:
        print(f"backend {safe_dsn(dsn)}: schema is current (version {after})")
    else:
        print(f"backend {safe_dsn(dsn)}: schema migrated from version {before} to {after}"
              + (" (new)" if before == 0 else ""))
    assert after == SCHEMA_VERSION
    return 0


def cmd_import(args) -> int:
    from polycrate import contract
    from polycrate.cli.render import emit_json
    from polycrate.config.workspace import find_root, load_workspace
    from polycrate.history import SQLiteRunStore
    from polycrate.history.postgres import PostgresRunStore, safe_dsn
    from polycrate.history.store import DB_NAME, STATE_DIR

    dsn = _required()
    folder = args.import_workspace or args.workspace
    ws = load_workspace(find_root(folder, explicit=folder is not None))
    if not (ws.root / STATE_DIR / DB_NAME).is_file():
        raise PolycrateError(f"workspace '{ws.name}' has no run history to import", ws.root / STATE_DIR / DB_NAME)
    target = PostgresRunStore(dsn, workspace=ws.name, root=ws.root)
    source = SQLiteRunStore(ws.root)
    imported = skipped = steps = log_bytes = 0
    try:
        for run, logs in source.export_runs():
            if target.import_run(run, logs):
                imported += 1
                steps += len(run.steps)
                log_bytes += sum(len(b) for b in logs.values())
            else:
                skipped += 1
    finally:
        source.close()
        target.close()
    if args.output == "json":
        emit_json(contract.document("backend-import", {
            "workspace": ws.name, "backend": safe_dsn(dsn), "imported": imported, "already_there": skipped,
            "steps": steps, "log_bytes": log_bytes}), args.format)
        return 0
    print(f"workspace {ws.name}: {imported} run(s) imported into {safe_dsn(dsn)} ({steps} steps, {log_bytes} bytes of "
          f"logs); {skipped} already there", file=sys.stdout)
    return 0


def cmd_status(args) -> int:
    from polycrate import contract
    from polycrate.cli.render import emit_json

    dsn = backend_setting()
    data: dict[str, Any]
    if dsn is None:
        data = {"backend": None, "schema_version": None, "schema_current": None}
    else:
        from polycrate.history.postgres import (
            SCHEMA_VERSION,
            connect,
            safe_dsn,
            schema_version,
        )

        db = connect(dsn)
        try:
            version = schema_version(db) or 0
        finally:
            db.close()
        data = {"backend": safe_dsn(dsn), "schema_version": version, "schema_current": version == SCHEMA_VERSION}
    if args.output == "json":
        emit_json(contract.document("backend-status", data), args.format)
    elif dsn is None:
        print("backend: none (each workspace keeps its runs in .polycrate/runs.db)")
    else:
        state = "current" if data["schema_current"] else "run `polycrate backend init`"
        print(f"backend: {data['backend']} (schema version {data['schema_version']}: {state})")
    return 0
