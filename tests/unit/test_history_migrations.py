"""The versioned run store: committed stores written by earlier polycrates open with today's code, nothing lost.

Each folder tests/data/runstore-*/ holds a ``runs.db`` and its step logs (``runs/``) as a workspace's
``.polycrate/`` held them, and ``expected.json``: every run as that polycrate's ``RunStore.get_run``
returned it, with the text of each step's log (see tests/data/runstore-README.md).
"""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from polycrate.errors import PolycrateError
from polycrate.history import MIGRATIONS, SCHEMA_VERSION, open_store, store_version
from polycrate.history import SQLiteRunStore as RunStore
from polycrate.states import LEGACY_STEP_STATES, StepState
from polycrate.success import is_workflow_success

DATA = Path(__file__).resolve().parent.parent / "data"
FIXTURES = sorted(p for p in DATA.glob("runstore-*") if p.is_dir())
# keys that later versions add to a run, with the value a migrated old run must show
ADDED_RUN_KEYS = {"ansible_options": {}, "runtime": None, "image": None, "image_digest": None,  # v2; v5 (unknown: None)
                  "late_by": None, "late_reason": None,  # a scheduled team run launched late: never in runs.db
                  "git_commit": None,  # the commit a team worker ran: never in runs.db
                  "never_started": False}  # v6: a run stopped while queued (team mode)


def _workspace_with(fixture: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    state = root / ".polycrate"
    state.mkdir(parents=True)
    shutil.copy2(fixture / "runs.db", state / "runs.db")
    shutil.copytree(fixture / "runs", state / "runs")
    return root


def _raw_rows(path: Path) -> dict[str, list[dict]]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return {table: [dict(r) for r in db.execute(f"SELECT * FROM {table} ORDER BY 1, 2")]
                for table in ("runs", "steps", "step_hosts")}
    finally:
        db.close()


def _schema(path: Path) -> dict[str, list[tuple]]:
    """Each table's and index's columns (name, type, not null, default, primary key), in order."""
    db = sqlite3.connect(path)
    try:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {n: [tuple(r)[1:] for r in db.execute(f"PRAGMA table_xinfo({n})")]
                or [tuple(r) for r in db.execute(f"PRAGMA index_xinfo({n})")] for n in names}
    finally:
        db.close()


def test_there_are_fixtures_of_each_earlier_schema():
    names = [p.name for p in FIXTURES]
    assert "runstore-v0-first" in names and "runstore-v0-ansible-options" in names, names


@pytest.mark.parametrize("fixture", FIXTURES, ids=[p.name for p in FIXTURES])
def test_an_earlier_store_opens_and_migrates_without_loss(fixture, tmp_path):
    expected = json.loads((fixture / "expected.json").read_text())
    statuses = {r["status"] for r in expected}
    assert {"succeeded", "failed", "interrupted"} <= statuses
    assert any(r["resumed_from"] for r in expected) and any(r["kind"] == "action" for r in expected)

    root = _workspace_with(fixture, tmp_path)
    db_path = root / ".polycrate" / "runs.db"
    before = _raw_rows(db_path)
    assert sum(len(rows) for rows in before.values()) > 0
    assert any(r["status"] in LEGACY_STEP_STATES for r in before["steps"])  # the v3 migration has work here

    logged = 0
    store = open_store(root)
    try:
        assert store_version(store.db) == SCHEMA_VERSION
        listed = store.list_runs(limit=None)
        assert sorted(r.id for r in listed) == sorted(r["id"] for r in expected)
        for old in expected:
            run = store.get_run(old["id"]).as_dict()
            assert run.pop("current_step") is None  # a key of the typed record that get_run's dicts did not have
            logs = old.pop("logs")
            for key, default in ADDED_RUN_KEYS.items():
                if key not in old:
                    assert run[key] == default, key
                    old[key] = default
            old["workflow_success"] = is_workflow_success(old)  # derived from the row (polycrate.success)
            for step in old["steps"]:  # display wording of earlier stores reads as today's state
                step["status"] = StepState(step["status"])
            assert run == old
            run_id, texts = store.step_logs(old["id"])
            assert run_id == old["id"]
            got = {(s.name if s.phase == "main" else f"{s.phase}:{s.name}"): text for s, text in texts}
            assert got == logs
            logged += sum(1 for text in got.values() if text)
    finally:
        store.close()
    assert logged >= len(expected) // 2  # the logs are read back, not only their paths

    # below the API too: every row and every old column keeps its value
    after = _raw_rows(db_path)
    for table, rows in before.items():
        assert len(after[table]) == len(rows), table
        for old_row, new_row in zip(rows, after[table], strict=False):
            if table == "steps":  # the one value a migration rewrites: display wording to state values
                old_row = {**old_row, "status": LEGACY_STEP_STATES.get(old_row["status"], old_row["status"])}
            assert {k: new_row[k] for k in old_row} == old_row


@pytest.mark.parametrize("fixture", FIXTURES, ids=[p.name for p in FIXTURES])
def test_a_migrated_store_has_the_schema_of_a_new_one(fixture, tmp_path):
    root = _workspace_with(fixture, tmp_path)
    open_store(root).close()
    RunStore(tmp_path / "fresh").close()
    assert _schema(root / ".polycrate" / "runs.db") == _schema(tmp_path / "fresh" / ".polycrate" / "runs.db")


def test_a_new_store_carries_the_latest_version_and_reopening_changes_nothing(tmp_path):
    assert SCHEMA_VERSION == len(MIGRATIONS) >= 3
    store = RunStore(tmp_path)
    run_id = store.start_run(kind="action", name="b ok", block="b", action="ok")
    assert store_version(store.db) == SCHEMA_VERSION
    store.close()
    data = (tmp_path / ".polycrate" / "runs.db").read_bytes()
    store = open_store(tmp_path, reconcile=False)
    assert store.get_run(run_id).name == "b ok"
    store.close()
    assert (tmp_path / ".polycrate" / "runs.db").read_bytes() == data


def test_a_store_from_a_newer_polycrate_is_refused_untouched(tmp_path):
    RunStore(tmp_path).close()
    path = tmp_path / ".polycrate" / "runs.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    data = path.read_bytes()
    with pytest.raises(PolycrateError) as caught:
        RunStore(tmp_path)
    assert "newer polycrate" in str(caught.value) and str(path) == caught.value.path
    assert path.read_bytes() == data


def test_a_failing_migration_leaves_the_store_at_its_version(tmp_path, monkeypatch):
    from polycrate.history import migrations

    def broken(db):
        db.execute("ALTER TABLE runs ADD COLUMN half_done TEXT")
        raise RuntimeError("migration failed half-way")

    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, ("broken", broken)))
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(RuntimeError):
        RunStore(tmp_path)
    db = sqlite3.connect(tmp_path / ".polycrate" / "runs.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert "half_done" not in {r[1] for r in db.execute("PRAGMA table_info(runs)")}
    db.close()
