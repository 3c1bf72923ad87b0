"""The linux-maintenance block's PostgreSQL modules against a real PostgreSQL (initdb + pg_ctl on a
free port, its socket in a private folder, stopped by PID): pg_archive writes an archive whose
manifest lists every table, pg_restore_drill restores it into a scratch database and passes, and
fails on a damaged archive; neither leaves a scratch database or a work folder behind. Each module
runs as Ansible runs it: its own Python process, arguments in a JSON file, one JSON result on stdout.
"""
from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.block_library import BLOCK, load, module_command, shared
from tests.helpers import wait_for

STATS_SQL = (BLOCK / "files" / "table_stats.sql").read_text()


def pg_bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_in(base: Path):
    """A PostgreSQL of its own in `base` (data/ and run/, its socket): {"base", "sock", "port", "psql"}; stopped
    (fast shutdown, by PID) on the way out. `base` is left in place."""
    bindir = pg_bindir()
    postgres = pwd.getpwnam("postgres")
    os.chmod(base, 0o755)  # the postgres user reads dumps under it
    data, sock = base / "data", base / "run"
    sock.mkdir()
    os.chown(sock, postgres.pw_uid, postgres.pw_gid)
    port = free_port()

    def as_postgres(*argv: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, **kw)

    os.mkdir(data)
    os.chown(data, postgres.pw_uid, postgres.pw_gid)
    res = as_postgres(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    assert res.returncode == 0, res.stderr
    log = sock / "postgresql.log"  # a folder the postgres user may write to
    res = as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o",
                      f"-p {port} -k {sock} -c listen_addresses=''", "start")
    assert res.returncode == 0, res.stderr + (log.read_text() if log.exists() else "")
    pid = int((data / "postmaster.pid").read_text().split()[0])

    def psql(sql: str, db: str = "acme_app") -> str:
        res = as_postgres("psql", "-X", "-h", str(sock), "-p", str(port), "-d", db, "-v", "ON_ERROR_STOP=1",
                          "-tAc", sql)
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    try:
        yield {"base": base, "sock": str(sock), "port": port, "psql": psql}
    finally:
        os.kill(pid, signal.SIGINT)  # fast shutdown of the postmaster we started
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)


@pytest.fixture(scope="module")
def pg():
    if pg_bindir() is None or os.geteuid() != 0:
        pytest.skip("needs PostgreSQL's server binaries and root (the modules run as root, PostgreSQL as postgres)")
    base = Path(tempfile.mkdtemp(prefix="polycrate-pgmod-"))
    try:
        with postgres_in(base) as server:
            psql = server["psql"]
            psql("CREATE DATABASE acme_app", db="postgres")
            psql("CREATE TABLE items (id int PRIMARY KEY, v text)")
            psql("INSERT INTO items SELECT g, 'row-' || g FROM generate_series(1, 120) g")
            psql('CREATE SCHEMA "Odd Schema"; CREATE TABLE "Odd Schema"."T" (r int, t timestamptz, f float8)')
            psql("""INSERT INTO "Odd Schema"."T" SELECT g, 'epoch'::timestamptz + g * interval '1 day', g / 7.0
                    FROM generate_series(1, 30) g""")
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_module(name: str, args: dict, tmp: Path, check_mode: bool = False) -> dict:
    """The module as Ansible runs it: python3 <module> <args.json> (ANSIBLE_MODULE_ARGS)."""
    path = tmp / f"{name}-args.json"
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check_mode}}))
    res = subprocess.run(module_command(name, path), capture_output=True, text=True, timeout=300)
    out = res.stdout.strip().splitlines()
    assert out, res.stderr
    return json.loads(out[-1])


def backup(pg, backup_dir: Path, tmp: Path, **extra) -> dict:
    return run_module("pg_archive", {"database": "acme_app", "login_host": pg["sock"], "port": pg["port"],
                                     "login_user": "postgres", "backup_dir": str(backup_dir), "keep_local": 3,
                                     "table_stats_sql": STATS_SQL, **extra}, tmp)


def drill(pg, archive: Path, tmp: Path, check_mode: bool = False, jobs: int = 1) -> dict:
    return run_module("pg_restore_drill", {"archive": str(archive), "database": "acme_app", "host": pg["sock"],
                                           "port": pg["port"], "table_stats_sql": STATS_SQL, "jobs": jobs,
                                           "record_dir": str(archive.parent / "drills"), "metrics_file": ""},
                      tmp, check_mode)


def scratch(pg) -> list[str]:
    return pg["psql"]("SELECT datname FROM pg_database WHERE datname LIKE 'drill\\_%'", db="postgres").split()


@pytest.mark.parametrize("jobs", [1, 2], ids=["streamed", "unpacked"])
def test_backup_then_drill_passes_table_by_table(pg, tmp_path, jobs):
    """The drill passes with the dump streamed into pg_restore (jobs 1) and unpacked first (jobs 2)."""
    backup_dir = pg["base"] / f"backups-{jobs}"
    result = backup(pg, backup_dir, tmp_path)
    assert result.get("failed") is not True, result
    assert result["changed"] is True and result["tables"] == 2
    assert (backup_dir / result["archive"]).is_file()
    assert os.readlink(backup_dir / "latest.tar.gz") == result["archive"]
    manifest = json.loads((backup_dir / (result["archive"] + ".manifest.json")).read_text())
    assert manifest["tables"]["public.items"]["rows"] == 120
    assert manifest["tables"]['"Odd Schema"."T"']["rows"] == 30
    assert not [p for p in backup_dir.iterdir() if p.name.startswith(".work-")]

    passed = drill(pg, backup_dir / "latest.tar.gz", tmp_path, jobs=jobs)
    assert passed["passed"] is True, passed["differences"]
    assert passed["archive"] == result["archive"]
    assert [(t["table"], t["restored_rows"], t["result"]) for t in passed["tables"]] == [
        ('"Odd Schema"."T"', 30, "ok"), ("public.items", 120, "ok")]
    assert passed["report"][0].startswith(f"restore drill of {result['archive']} into drill_acme_app_")
    assert scratch(pg) == []
    assert not [p for p in backup_dir.iterdir() if p.name.startswith(".drill-")]
    assert json.loads((backup_dir / "drills" / "last-pass.json").read_text())["archive"] == result["archive"]


def test_check_modes_write_nothing(pg, tmp_path):
    backup_dir = pg["base"] / "check"
    result = run_module("pg_archive", {"database": "acme_app", "login_host": pg["sock"], "port": pg["port"],
                                       "login_user": "postgres", "backup_dir": str(backup_dir)}, tmp_path,
                        check_mode=True)
    assert result["changed"] is True and result["archive"].startswith("acme_app-")
    assert result["server_version"].split(".")[0].isdigit()
    assert not backup_dir.exists()
    real = backup(pg, backup_dir, tmp_path)
    listing = sorted((p.name, p.stat().st_size) for p in backup_dir.iterdir())
    untouched = backup_dir.stat().st_mtime_ns  # not even a work folder made and removed: the dump is read, not written
    checked = drill(pg, backup_dir / real["archive"], tmp_path, check_mode=True)
    assert checked["changed"] is False and checked["passed"] is True
    assert "would restore it into drill_acme_app_" in checked["report"][0]
    assert not (backup_dir / "drills").exists() and scratch(pg) == []
    assert sorted((p.name, p.stat().st_size) for p in backup_dir.iterdir()) == listing
    assert backup_dir.stat().st_mtime_ns == untouched
    # check mode still reads every byte: a changed archive fails it, naming the checksum
    (backup_dir / real["archive"]).write_bytes((backup_dir / real["archive"]).read_bytes()[:-1000])
    damaged = drill(pg, backup_dir / real["archive"], tmp_path, check_mode=True)
    assert damaged["passed"] is False and damaged["differences"][0].startswith(f"archive {real['archive']}: sha256 is ")
    assert damaged["report"][0].startswith("check mode: archive ")


def test_a_failed_backup_says_why_and_leaves_latest_alone(pg, tmp_path):
    backup_dir = pg["base"] / "failing"
    good = backup(pg, backup_dir, tmp_path)
    bad = run_module("pg_archive", {"database": "no_such_db", "login_host": pg["sock"], "port": pg["port"],
                                    "login_user": "postgres", "backup_dir": str(backup_dir),
                                    "table_stats_sql": STATS_SQL}, tmp_path)
    assert bad["failed"] is True and bad["msg"].startswith("backup failed")
    assert "no_such_db" in bad["msg"]
    assert os.readlink(backup_dir / "latest.tar.gz") == good["archive"]
    assert not [p for p in backup_dir.iterdir() if p.name.startswith(".work-")]


@contextlib.contextmanager
def migration_holding(pg, table: str):
    """A session holding `table` locked (ACCESS EXCLUSIVE, as ALTER TABLE or VACUUM FULL do) until the block
    ends. Yields its backend's pid."""
    locker = subprocess.Popen(["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-At", "-h", pg["sock"], "-p",
                               str(pg["port"]), "-d", "acme_app", "-v", "ON_ERROR_STOP=1"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        locker.stdin.write(f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; SELECT pg_backend_pid();\n")
        locker.stdin.flush()
        pid = locker.stdout.readline().strip()
        assert pid.isdigit()
        yield pid
    finally:
        locker.kill()
        locker.wait()


def test_a_backup_whose_run_was_stopped_stops_and_leaves_nothing_behind(pg, tmp_path):
    """The run that started a backup is stopped while pg_dump waits for a lock (a migration holds the table):
    ansible-playbook ends, and the pipe the module's result would go back on loses its reader. Nothing else
    tells the module. It stops: pg_dump and the table statistics cancel their queries in PostgreSQL, the work
    folder goes, nothing is published. Before, it waited for the lock, then published and pruned alone."""
    backup_dir = pg["base"] / "orphaned"
    args = tmp_path / "pg_archive-args.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {
        "database": "acme_app", "login_host": pg["sock"], "port": pg["port"], "login_user": "postgres",
        "backup_dir": str(backup_dir), "table_stats_sql": STATS_SQL, "lock_wait_timeout": "0"}}))
    with migration_holding(pg, "items") as locker:
        module = subprocess.Popen(module_command("pg_archive", args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        others = f"SELECT count(*) FROM pg_stat_activity WHERE datname = 'acme_app' AND pid NOT IN ({locker}, pg_backend_pid())"
        try:
            wait_for(lambda: pg["psql"](others + " AND wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE public.items%'")
                     == "1", "pg_dump waiting for its lock on items")
            module.stdout.close()  # the run is stopped: the pipe's reader is gone
            assert module.wait(timeout=120) != 0
            wait_for(lambda: pg["psql"](others) == "0", "pg_dump's and the statistics' sessions ended")
        finally:
            if module.poll() is None:
                module.kill()
                module.wait()
    assert sorted(p.name for p in backup_dir.iterdir()) == []  # no archive, no latest.tar.gz, no work folder


def test_a_backup_behind_a_long_lock_fails_naming_the_table_and_who_holds_it(pg, tmp_path):
    """pg_dump waits lock_wait_timeout for its lock on each table, then the backup fails, naming the table and
    the session holding it, instead of a nightly run that hangs behind a migration. Nothing is published, no
    session of the backup is left waiting in the lock's queue. A value PostgreSQL would not read is refused
    before anything runs."""
    backup_dir = pg["base"] / "locked"
    good = backup(pg, backup_dir, tmp_path)
    with migration_holding(pg, "items") as locker:
        failed = backup(pg, backup_dir, tmp_path, lock_wait_timeout="1s")
        others = f"SELECT count(*) FROM pg_stat_activity WHERE datname = 'acme_app' AND pid NOT IN ({locker}, pg_backend_pid())"
        assert pg["psql"](others) == "0"
    assert failed["failed"] is True
    assert re.match(r"^backup failed: pg_dump waited 1s for its lock on public\.items and gave up: held by "
                    rf"pid {locker} \(postgres, idle in transaction since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC: "
                    r"SELECT pg_backend_pid\(\);\); "  # the session's last statement
                    r"nothing was published or pruned$", failed["msg"]), failed["msg"]
    assert os.readlink(backup_dir / "latest.tar.gz") == good["archive"]
    assert not [p for p in backup_dir.iterdir() if p.name.startswith(".work-")]
    refused = backup(pg, backup_dir, tmp_path, lock_wait_timeout="a while")
    assert refused["msg"] == ("backup failed: lock_wait_timeout 'a while' is not a time PostgreSQL reads "
                              "(15min, 90s, 500ms; 0 waits as long as it takes)")


@pytest.mark.parametrize("compressor", ["igzip", "zlib"])
def test_a_backup_folder_that_fills_up_fails_saying_so_and_keeps_what_was_there(pg, tmp_path, compressor):
    """The backup folder's filesystem fills up while the archive is written (a real 1 MiB tmpfs): the backup
    says so in one sentence (the folder, its size, how far the archive got), removes its partial archive
    and keeps the archive that was there."""
    if compressor == "igzip" and shutil.which("igzip") is None:
        pytest.skip("igzip (package isal) is not installed")
    pg["psql"]("CREATE DATABASE filler", db="postgres")
    pg["psql"]("CREATE TABLE noise AS SELECT g, md5(g::text) || md5((g * 3)::text) AS t "
               "FROM generate_series(1, 60000) g", db="filler")
    small = pg["base"] / f"small-{compressor}"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        kept = run_module("pg_archive", {"database": "acme_app", "login_host": pg["sock"], "port": pg["port"],
                                         "login_user": "postgres", "backup_dir": str(small)}, tmp_path)
        assert kept.get("failed") is not True, kept
        before = sorted(p.name for p in small.iterdir())
        full = run_module("pg_archive", {"database": "filler", "login_host": pg["sock"], "port": pg["port"],
                                         "login_user": "postgres", "backup_dir": str(small), "compressor": compressor,
                                         "table_stats_sql": STATS_SQL}, tmp_path)
        assert full["failed"] is True
        assert re.match(rf"^backup failed: no space left on the filesystem of {re.escape(str(small))} \(1 MiB\): "
                        r"the archive had reached \d+ MiB when it filled up; the partial archive is removed, "
                        r"nothing was published or pruned$", full["msg"]), full["msg"]
        assert sorted(p.name for p in small.iterdir()) == before
        assert os.readlink(small / "latest.tar.gz") == kept["archive"]
    finally:
        subprocess.run(["umount", str(small)], check=True)
        pg["psql"]("DROP DATABASE filler", db="postgres")


def test_a_backup_that_would_not_fit_fails_before_it_dumps(pg, tmp_path):
    """A real tmpfs with room for the last archive but not for a new one of its size: the backup (and its
    check mode) fails at once, naming the free room and the last archive, before pg_dump runs, and leaves the
    folder as it was (a backup folder often shares its filesystem with PostgreSQL, which must not fill up).
    With room again, the same backup runs."""
    pg["psql"]("CREATE DATABASE roomy", db="postgres")
    pg["psql"]("CREATE TABLE noise AS SELECT g, md5(g::text) || md5((g * 3)::text) AS t "
               "FROM generate_series(1, 60000) g", db="roomy")
    folder = pg["base"] / "room"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)], check=True)
    args = {"database": "roomy", "login_host": pg["sock"], "port": pg["port"], "login_user": "postgres",
            "backup_dir": str(folder), "table_stats_sql": STATS_SQL}
    try:
        first = run_module("pg_archive", args, tmp_path)
        assert first.get("failed") is not True, first
        size = first["archive_size"]
        assert size > 1 << 20  # a test of room needs an archive of some size

        def free() -> int:
            st = os.statvfs(folder)
            return st.f_bavail * st.f_frsize

        used = os.statvfs(folder).f_blocks * os.statvfs(folder).f_frsize - free()
        subprocess.run(["mount", "-o", f"remount,size={used + size}", str(folder)], check=True)
        assert size <= free() < size * 1.1  # room for one more of that size, but not for a tenth's growth
        before = sorted(p.name for p in folder.iterdir())
        for check_mode in (True, False):
            refused = run_module("pg_archive", args, tmp_path, check_mode=check_mode)
            assert refused.get("failed") is True, (check_mode, refused)
            assert re.match(rf"^backup failed: not enough room in {re.escape(str(folder))}: \d+\.\d MiB free on its "
                            rf"filesystem, and the last archive \({re.escape(first['archive'])}\) took \d+\.\d MiB, "
                            r"so about \d+\.\d MiB are needed; nothing was dumped \(make room: keep_local prunes "
                            r"only after a backup succeeded\)$", refused["msg"]), refused["msg"]
            assert sorted(p.name for p in folder.iterdir()) == before
        subprocess.run(["mount", "-o", f"remount,size={used + 3 * size}", str(folder)], check=True)
        again = run_module("pg_archive", args, tmp_path)
        assert again.get("failed") is not True, again
    finally:
        subprocess.run(["umount", str(folder)], check=True)
        pg["psql"]("DROP DATABASE roomy", db="postgres")


def test_a_restore_or_drill_that_would_fill_postgresqls_filesystem_does_not_start(pg, tmp_path):
    """A PostgreSQL whose data directory is on a real tmpfs with less room than another copy of its database:
    the streamed restore (a side database beside the old one) and the drill (a scratch copy) refuse before they
    create anything, naming the figures, in check mode too; the database is as it was. A full data directory
    would stop PostgreSQL, every database of it. restore_jobs above 1, which restores in place, still runs; and
    with room again the drill passes. (The restore in place first refuses a dump pg_restore could not read.)"""
    base = Path(tempfile.mkdtemp(prefix="polycrate-pgroom-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(base)], check=True)
    try:
        with postgres_in(base) as small:
            small["psql"]("CREATE DATABASE acme_app", db="postgres")
            small["psql"]("CREATE TABLE noise AS SELECT g, md5(g::text) || md5((g * 3)::text) AS t "
                          "FROM generate_series(1, 150000) g")
            small["psql"]("CHECKPOINT")
            backups = tmp_path / "backups"  # on another filesystem than the data directory
            made = backup(small, backups, tmp_path)
            assert made.get("failed") is not True, made
            archive = backups / made["archive"]
            size = int(small["psql"]("SELECT pg_database_size('acme_app')"))
            st = os.statvfs(base)
            used = (st.f_blocks - st.f_bfree) * st.f_frsize
            subprocess.run(["mount", "-o", f"remount,size={used + size // 2}", str(base)], check=True)
            rows = small["psql"]("SELECT count(*) FROM noise")
            expected = (r"^not enough room for another copy of acme_app \(\d+\.\d MiB\) on the filesystem of "
                        rf"PostgreSQL's data directory {re.escape(str(base / 'data'))}: \d+\.\d MiB free, about "
                        r"\d+\.\d MiB needed: ")
            for check_mode in (True, False):
                refused = restore(small, archive, tmp_path, check_mode=check_mode)
                assert refused.get("failed") is True, (check_mode, refused)
                assert re.match(expected + r"not restoring; restore_jobs above 1 restores in place, with no second "
                                r"copy \(acme_app is dropped first, so a restore that then fails leaves it gone\)$",
                                refused["msg"]), refused["msg"]
                drilled = drill(small, archive, tmp_path, check_mode=check_mode)
                assert drilled["passed"] is False and len(drilled["differences"]) == 1, drilled
                assert re.match(expected + "the drill did not start$", drilled["differences"][0]), drilled
                assert small["psql"]("SELECT count(*) FROM noise") == rows
                assert side_databases(small) == [] and scratch(small) == []
            # restore_jobs 2 unpacks the dump beside the archive, in a folder the postgres user cannot enter
            # (pytest's, mode 0700): refused before acme_app is dropped, not after
            unreadable = restore(small, archive, tmp_path, jobs=2)
            assert unreadable.get("failed") is True and unreadable["msg"].startswith(
                "pg_restore cannot read the unpacked dump: pg_restore: error: could not open input file"), unreadable
            assert unreadable["msg"].endswith("Permission denied, not restoring"), unreadable["msg"]
            assert small["psql"]("SELECT count(*) FROM noise") == rows
            readable = pg["base"] / "room-work"
            readable.mkdir()
            # the update's preflight: check mode without reading the archive, the room only
            preflight = {"archive": str(archive), "database": "acme_app", "host": small["sock"],
                         "port": small["port"], "read_archive": False}
            short = run_module("pg_restore_archive", preflight, tmp_path, check_mode=True)
            assert short.get("failed") is True and re.match(expected + "not restoring", short["msg"]), short
            in_place = run_module("pg_restore_archive", {
                "archive": str(archive), "database": "acme_app", "host": small["sock"], "port": small["port"],
                "owner": "postgres", "jobs": 2, "work_dir": str(readable)}, tmp_path)
            assert in_place.get("failed") is not True, in_place.get("msg")
            assert small["psql"]("SELECT count(*) FROM noise") == rows
            subprocess.run(["mount", "-o", f"remount,size={used + 3 * size}", str(base)], check=True)
            passed = drill(small, archive, tmp_path)
            assert passed["passed"] is True, passed
            roomy = run_module("pg_restore_archive", preflight, tmp_path, check_mode=True)
            assert roomy.get("failed") is not True and roomy["msg"] == (
                f"acme_app could be restored from {archive}: room for it, the archive's sidecar manifest names it "
                "(the archive itself not read)"), roomy
    finally:
        subprocess.run(["umount", str(base)], check=True)
        shutil.rmtree(base, ignore_errors=True)


def test_a_pg_dump_that_fails_says_why(pg, tmp_path):
    """pg_dump's own reason is in the failure (before: "pg_dump failed with exit status 1" and nothing else)."""
    pg["psql"]("CREATE DATABASE guarded", db="postgres")
    try:
        pg["psql"]("CREATE ROLE reader LOGIN; CREATE TABLE payroll (salary int)", db="guarded")
        failed = run_module("pg_archive", {"database": "guarded", "login_host": pg["sock"], "port": pg["port"],
                                           "login_user": "reader", "backup_dir": str(pg["base"] / "guarded")},
                            tmp_path)
    finally:
        pg["psql"]("DROP DATABASE guarded", db="postgres")
        pg["psql"]("DROP ROLE IF EXISTS reader", db="postgres")
    assert failed["failed"] is True
    assert failed["msg"].startswith("backup failed: pg_dump exited with status 1: pg_dump: error: ")
    assert "permission denied for table payroll" in failed["msg"], failed["msg"]


def test_drill_of_a_damaged_archive_fails_and_drops_nothing_it_did_not_create(pg, tmp_path):
    backup_dir = pg["base"] / "damaged"
    result = backup(pg, backup_dir, tmp_path)
    archive = backup_dir / result["archive"]
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x55
    archive.write_bytes(bytes(data))
    failed = drill(pg, archive, tmp_path)
    assert failed["passed"] is False
    assert failed["differences"][0].startswith(f"archive {result['archive']}: sha256 is ")
    # written damaged (checksum taken after the damage): inflating it fails
    import hashlib

    (backup_dir / (result["archive"] + ".sha256")).write_text(
        f"{hashlib.sha256(bytes(data)).hexdigest()}  {result['archive']}\n")
    failed = drill(pg, archive, tmp_path)
    assert failed["passed"] is False and "truncated or corrupt" in failed["differences"][0], failed["differences"]
    assert scratch(pg) == []
    assert pg["psql"]("SELECT count(*) FROM items") == "120"  # the real database untouched


def drill_sql() -> str:
    return load("pg_restore_drill").LEGACY_TABLE_STATS_SQL


def stats(pg, db: str = "acme_app") -> dict:
    """The block's table statistics SQL on `db`: {table: [rows, checksum]}."""
    res = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                          "-h", pg["sock"], "-p", str(pg["port"]), "-d", db],
                         input=f"BEGIN READ ONLY;\n{STATS_SQL}\nCOMMIT;\n", capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return {line.split("|")[0]: line.split("|")[1:] for line in res.stdout.splitlines() if "|" in line}


def test_every_column_type_is_hashed_and_restores_to_the_same_checksum(pg, tmp_path):
    """The row hash (hash_record_extended over each type's own hash function, text for types without one)
    on types with and without a hash function; every kind of change changes the checksum; a restore
    gives back the same checksums (the drill passes)."""
    pg["psql"]("CREATE TYPE mood AS ENUM ('sad', 'ok'); CREATE DOMAIN positive AS int CHECK (VALUE > 0)")
    pg["psql"]("""CREATE TABLE kinds (a int, j json, jb jsonb, p point, arr int[], m mood, d positive, t text,
                  b bytea, n numeric, f float8, ts timestamptz, u uuid)""")
    pg["psql"]("""INSERT INTO kinds VALUES (1, '{"x": 1}', '{"y": [1, 2]}', '(1,2)', '{1,2}', 'ok', 5, 'Hello',
                  '\\x00ff', 1.50, 0.1, 'epoch', '00000000-0000-0000-0000-000000000001'),
                  (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)""")
    pg["psql"]("CREATE TABLE no_columns ()")
    try:
        before = stats(pg)
        assert before["public.kinds"][0] == "2" and before["public.no_columns"][0] == "0"
        for change in ("j = '{\"x\": 2}'", "jb = '{\"y\": [2, 1]}'", "p = '(1,3)'", "arr = '{2,1}'", "m = 'sad'",
                       "d = 6", "t = 'hello'", "b = '\\x00fe'", "n = 1.51", "f = 0.2", "ts = 'epoch'::timestamptz + interval '1 us'",
                       "u = '00000000-0000-0000-0000-000000000002'"):
            pg["psql"](f"UPDATE kinds SET {change} WHERE a = 1")
            assert stats(pg)["public.kinds"] != before["public.kinds"], change
            pg["psql"]("DELETE FROM kinds WHERE a = 1")
            pg["psql"]("""INSERT INTO kinds VALUES (1, '{"x": 1}', '{"y": [1, 2]}', '(1,2)', '{1,2}', 'ok', 5, 'Hello',
                          '\\x00ff', 1.50, 0.1, 'epoch', '00000000-0000-0000-0000-000000000001')""")
            assert stats(pg)["public.kinds"] == before["public.kinds"]
        backup_dir = pg["base"] / "kinds"
        result = backup(pg, backup_dir, tmp_path)
        manifest = json.loads((backup_dir / (result["archive"] + ".manifest.json")).read_text())
        assert manifest["table_checksum"] == "row-hash/2"
        assert manifest["tables"]["public.kinds"] == {"rows": 2, "checksum": before["public.kinds"][1]}
        passed = drill(pg, backup_dir / "latest.tar.gz", tmp_path)
        assert passed["passed"] is True, passed["differences"]
    finally:
        pg["psql"]("DROP TABLE kinds, no_columns; DROP TYPE mood; DROP DOMAIN positive")


def test_an_archive_from_before_the_row_hash_still_drills(pg, tmp_path):
    """A manifest that names no checksum was written with the first one (md5 of each row's text): the
    drill computes that one for it. One that names a checksum the drill does not compute fails, saying so."""
    backup_dir = pg["base"] / "legacy"
    result = backup(pg, backup_dir, tmp_path, table_stats_sql=drill_sql())
    manifest_path = backup_dir / (result["archive"] + ".manifest.json")
    assert "table_checksum" not in json.loads(manifest_path.read_text())
    passed = drill(pg, backup_dir / "latest.tar.gz", tmp_path)
    assert passed["passed"] is True, passed["differences"]

    result = backup(pg, backup_dir, tmp_path, table_stats_sql="-- table_checksum: other/9\n" + drill_sql())
    failed = drill(pg, backup_dir / "latest.tar.gz", tmp_path)
    assert failed["passed"] is False
    assert "the manifest's table checksums are other/9, this drill's table_stats_sql computes row-hash/2" in \
        failed["differences"][0]
    assert scratch(pg) == []


def restore(pg, archive: Path, tmp: Path, check_mode: bool = False, jobs: int = 1) -> dict:
    return run_module("pg_restore_archive", {"archive": str(archive), "database": "acme_app", "host": pg["sock"],
                                             "port": pg["port"], "owner": "postgres", "jobs": jobs}, tmp, check_mode)


def side_databases(pg) -> list[str]:
    return pg["psql"]("SELECT datname FROM pg_database WHERE datname LIKE 'acme\\_app\\_restoring\\_%'",
                      db="postgres").split()


@pytest.mark.parametrize("jobs", [1, 2], ids=["streamed", "unpacked"])
def test_restore_replaces_the_database_in_one_task_and_refuses_a_damaged_archive(pg, tmp_path, jobs):
    """pg_restore_archive: one read checks the archive against its .sha256 and the dump against the
    manifest; only a restore that verified everything replaces the database. jobs 1 streams the dump into
    pg_restore, loading a new database that takes the old one's name at the end; jobs 2 unpacks it first
    and restores in place. A changed archive, one written damaged (checksum taken after the damage: the
    streamed restore has loaded part of it when the stream's CRC fails) and a truncated one each fail with
    a sentence naming it, and leave the database as it was, with no side database behind."""
    backup_dir = pg["base"] / f"restore-{jobs}"
    result = backup(pg, backup_dir, tmp_path)
    latest = backup_dir / "latest.tar.gz"
    pg["psql"]("INSERT INTO items VALUES (1000, 'written after the backup')")
    checked = restore(pg, latest, tmp_path, check_mode=True, jobs=jobs)
    assert checked.get("failed") is not True, checked
    assert checked["changed"] is False and "would replace acme_app" in checked["msg"]
    assert pg["psql"]("SELECT count(*) FROM items") == "121"  # check mode drops nothing
    done = restore(pg, latest, tmp_path, jobs=jobs)
    assert done.get("failed") is not True, done
    assert done["changed"] is True and done["archive"] == str(backup_dir / result["archive"])
    assert done["database_dropped"] is True and checked["database_dropped"] is False
    assert done["created"] == json.loads((backup_dir / (result["archive"] + ".manifest.json")).read_text())["created"]
    assert pg["psql"]("SELECT count(*) FROM items") == "120"
    assert pg["psql"]("SELECT count(*) FROM items WHERE id = 1000") == "0"
    assert not [p for p in backup_dir.iterdir() if p.name.startswith(".restore-")]
    assert side_databases(pg) == []
    assert pg["psql"]("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'acme_app'",
                      db="postgres") == "postgres"  # the owner asked for
    assert done["seconds"]["total"] > 0 and ("verify_and_restore" if jobs == 1 else "verify_and_unpack") in done["seconds"]

    archive = backup_dir / result["archive"]
    good = archive.read_bytes()
    sidecar = backup_dir / (result["archive"] + ".sha256")
    good_sum = sidecar.read_text()
    pg["psql"]("INSERT INTO items VALUES (1000, 'must survive a refused restore')")
    try:
        damaged = bytearray(good)
        damaged[len(damaged) // 2] ^= 0x55
        archive.write_bytes(bytes(damaged))
        failed = restore(pg, latest, tmp_path, jobs=jobs)
        assert failed["failed"] is True and f"archive {archive}: sha256 is " in failed["msg"], failed
        assert "not restoring" in failed["msg"]
        import hashlib

        for label, data in (("written damaged", bytes(damaged)), ("truncated", good[: len(good) * 2 // 3])):
            archive.write_bytes(data)
            sidecar.write_text(f"{hashlib.sha256(data).hexdigest()}  {result['archive']}\n")
            failed = restore(pg, latest, tmp_path, jobs=jobs)
            assert failed["failed"] is True and "truncated or corrupt" in failed["msg"], (label, failed)
            assert side_databases(pg) == [], label
        sidecar.unlink()
        failed = restore(pg, latest, tmp_path, jobs=jobs)
        assert failed["failed"] is True and "no .sha256 beside it" in failed["msg"], failed
        assert failed["database_dropped"] is False  # the restore action starts the application again on it
        assert pg["psql"]("SELECT count(*) FROM items WHERE id = 1000") == "1"  # nothing was dropped
        assert not [p for p in backup_dir.iterdir() if p.name.startswith(".restore-")]
    finally:
        archive.write_bytes(good)
        sidecar.write_text(good_sum)
        pg["psql"]("DELETE FROM items WHERE id = 1000")


@pytest.mark.parametrize("jobs", [1, 2], ids=["streamed", "unpacked"])
def test_a_failed_restore_says_whether_it_dropped_the_database(pg, tmp_path, jobs):
    """The restore action starts the application it stopped again on the old database only when the restore
    failed before dropping it: the result's database_dropped says which.
    - A role to own the database that does not exist fails both forms before the drop: the database it loads is
      created (empty) beside the old one first. Before, the unpacked form dropped acme_app and then failed to
      create it again, and acme_app was gone.
    - A table in template1 that the dump also has (an admin's leftover) fails pg_restore itself: the streamed
      form in its side database (nothing dropped), the unpacked one after acme_app gave way to the empty
      database it loads (then partly restored)."""
    backup_dir = pg["base"] / f"dropped-{jobs}"
    backup(pg, backup_dir, tmp_path)
    latest = backup_dir / "latest.tar.gz"
    args = {"archive": str(latest), "database": "acme_app", "host": pg["sock"], "port": pg["port"],
            "owner": "no_such_role", "jobs": jobs}
    rows = pg["psql"]("SELECT count(*) FROM items", db="acme_app")
    failed = run_module("pg_restore_archive", args, tmp_path)
    assert failed["failed"] is True and "no_such_role" in failed["msg"], failed
    assert failed["database_dropped"] is False
    assert pg["psql"]("SELECT count(*) FROM items", db="acme_app") == rows  # the old one, as it was
    assert side_databases(pg) == []
    pg["psql"]("CREATE TABLE public.items (id int)", db="template1")
    try:
        failed = run_module("pg_restore_archive", {**args, "owner": "postgres"}, tmp_path)
        assert failed["failed"] is True and "pg_restore" in failed["msg"], failed
        assert failed["database_dropped"] is (jobs > 1)
        assert side_databases(pg) == []
        if jobs == 1:
            assert pg["psql"]("SELECT count(*) FROM items", db="acme_app") == rows
    finally:
        pg["psql"]("DROP TABLE public.items", db="template1")
        done = restore(pg, latest, tmp_path, jobs=1)  # back for the tests after this one
        assert done.get("failed") is not True, done
    assert pg["psql"]("SELECT count(*) FROM items", db="acme_app") == rows


@pytest.mark.parametrize("jobs", [1, 2], ids=["streamed", "unpacked"])
def test_an_archive_of_another_database_is_refused_unless_named(pg, tmp_path, jobs):
    """A mistyped archive name must not replace acme_app with another database's content: pg_restore_archive
    refuses an archive whose manifest names another database, before anything is dropped (from the sidecar
    manifest at once; with the sidecar gone, from the manifest inside the archive, after the load, and the
    side database is dropped). Named in from_database, the same archive restores: on purpose. A restore drill
    of it, which would record a pass for acme_app, fails the same way."""
    pg["psql"]("DROP DATABASE IF EXISTS staging_app", db="postgres")
    pg["psql"]("CREATE DATABASE staging_app", db="postgres")
    pg["psql"]("CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items VALUES (1, 'staging only')",
               db="staging_app")
    backup_dir = pg["base"] / f"other-{jobs}"
    made = run_module("pg_archive", {"database": "staging_app", "login_host": pg["sock"], "port": pg["port"],
                                     "login_user": "postgres", "backup_dir": str(backup_dir),
                                     "table_stats_sql": STATS_SQL}, tmp_path)
    assert made.get("failed") is not True, made
    archive = backup_dir / made["archive"]
    try:
        for sidecar in (True, False):
            if not sidecar:
                (backup_dir / (made["archive"] + ".manifest.json")).unlink()
            for check_mode in (True, False):
                refused = restore(pg, archive, tmp_path, check_mode=check_mode, jobs=jobs)
                assert refused.get("failed") is True, (sidecar, check_mode, refused)
                assert refused["msg"] == (
                    f"{made['archive']} is a backup of the database staging_app, not of acme_app: not restoring; "
                    "to restore it into acme_app on purpose, set from_database (block config restore_from_database) "
                    "to staging_app"), refused
                assert pg["psql"]("SELECT count(*) FROM items") == "120"  # acme_app as it was
                assert side_databases(pg) == []
                assert not [p for p in backup_dir.iterdir() if p.name.startswith(".restore-")]
            drilled = drill(pg, archive, tmp_path, jobs=jobs)  # a pass recorded for acme_app would be a lie
            assert drilled["passed"] is False and drilled["differences"] == [
                f"{made['archive']} is a backup of the database staging_app, not of acme_app: its drill would "
                "prove nothing of acme_app's backups"], drilled
            assert scratch(pg) == []
        named_wrong = run_module("pg_restore_archive", {
            "archive": str(archive), "database": "acme_app", "host": pg["sock"], "port": pg["port"],
            "owner": "postgres", "jobs": jobs, "from_database": "acme_app_old"}, tmp_path)
        assert named_wrong.get("failed") is True and named_wrong["msg"].endswith(
            "is a backup of the database staging_app, not of acme_app_old: not restoring"), named_wrong
        pg["psql"]("CREATE DATABASE acme_app_staging", db="postgres")
        on_purpose = run_module("pg_restore_archive", {
            "archive": str(archive), "database": "acme_app_staging", "host": pg["sock"], "port": pg["port"],
            "owner": "postgres", "jobs": jobs, "from_database": "staging_app"}, tmp_path)
        assert on_purpose.get("failed") is not True, on_purpose
        assert pg["psql"]("SELECT v FROM items", db="acme_app_staging") == "staging only"
        assert pg["psql"]("SELECT count(*) FROM items") == "120"
    finally:
        for db in ("staging_app", "acme_app_staging"):
            pg["psql"](f"DROP DATABASE IF EXISTS {db}", db="postgres")


def test_a_stop_never_leaves_the_database_gone(pg, tmp_path):
    """A stop (SIGTERM, as Ansible's timeout or a stopped run sends) during a streamed restore, sent for real to
    this process at two moments. While the dump streams: the restore stops, the side database is dropped and
    the old database is as it was. While the old database gives way to the new one (between its drop and the
    rename): the stop waits until the rename is done, so the database is never missing; the failure says the
    restore completed."""
    restore_mod = load("pg_restore_archive", "lm_restore_stopped")
    backup_dir = pg["base"] / "stopped"
    result = backup(pg, backup_dir, tmp_path)
    pg["psql"]("INSERT INTO items VALUES (2000, 'written after the backup')")
    params = {"database": "acme_app", "host": pg["sock"], "port": pg["port"], "os_user": "postgres",
              "from_database": ""}
    pgtools = restore_mod.Postgres(params)
    real = str(backup_dir / result["archive"])
    lm_archive = shared()  # stream_restore's own unpack: the archive's one read, feeding pg_restore
    unpack, run = lm_archive.unpack, restore_mod.Postgres.run
    previous = signal.signal(signal.SIGTERM, restore_mod.stopped)
    try:
        def stop_then_unpack(*args, **kw):  # pg_restore has started, loading the side database
            os.kill(os.getpid(), signal.SIGTERM)
            return unpack(*args, **kw)

        lm_archive.unpack = stop_then_unpack
        said: dict = {}
        with pytest.raises(restore_mod.RestoreFailed, match=r"^stopped by signal 15$"):
            restore_mod.restore_streaming(params, pgtools, real, [], said)
        lm_archive.unpack = unpack
        assert "database_dropped" not in said  # the module's result keeps its false
        assert side_databases(pg) == []
        assert pg["psql"]("SELECT count(*) FROM items") == "121"  # the old database, as it was

        def stop_after_the_drop(self, argv, what):
            run(self, argv, what)
            if argv[0] == "dropdb" and argv[-1] == "acme_app":
                os.kill(os.getpid(), signal.SIGTERM)  # the old database is gone, the new one not yet renamed

        restore_mod.Postgres.run = stop_after_the_drop
        with pytest.raises(restore_mod.RestoreFailed,
                           match=rf"^stopped by signal 15, after acme_app was restored from {result['archive']}$"):
            restore_mod.restore_streaming(params, pgtools, real, [], said)
        assert said["database_dropped"] is True
    finally:
        lm_archive.unpack, restore_mod.Postgres.run = unpack, run
        signal.signal(signal.SIGTERM, previous)
    assert pg["psql"]("SELECT count(*) FROM items") == "120"  # restored: the backup's rows
    assert side_databases(pg) == []
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == set()  # no signal left held


def stop_pending(pid: int) -> bool:
    """SIGTERM is pending for the main thread of `pid` (sent, and held back by stops_held)."""
    with open(f"/proc/{pid}/status") as f:
        pending = [int(line.split()[1], 16) for line in f if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(mask & (1 << (signal.SIGTERM - 1)) for mask in pending)


def children(pid: int, name: str) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid), "-x", name], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def test_an_in_place_restore_whose_run_was_stopped_after_the_drop_loads_the_database_to_its_end(pg, tmp_path):
    """restore_jobs above 1 restores in place: once acme_app gave way to the empty database it loads, a stop
    would leave it partly restored. The run is stopped there (the pipe the module's result would go back on
    loses its reader, as when ansible-playbook ends over SSH) while pg_restore -j loads a table whose CHECK
    waits on a gate file: the module lets pg_restore load it to its end once the gate opens, then ends, saying
    it was stopped after the restore. Before, it killed pg_restore: acme_app was left partly restored (what came
    after gated's data, its index, never made)."""
    gate_dir = Path(tempfile.mkdtemp(prefix="polycrate-gate-"))
    gate_dir.chmod(0o755)
    gate = gate_dir / "gate"
    pg["psql"](f"""CREATE FUNCTION gate() RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN
                   WHILE (pg_stat_file('{gate}', true)).size IS NOT NULL LOOP PERFORM pg_sleep(0.05); END LOOP;
                   RETURN true; END $$""")
    # its index comes after its data: what a pg_restore killed while loading gated never makes
    pg["psql"]("CREATE TABLE gated (id int CHECK (gate())); INSERT INTO gated VALUES (1); "
               "CREATE INDEX gated_id ON gated (id)")
    backup_dir = pg["base"] / "in-place-stopped"
    try:
        result = backup(pg, backup_dir, tmp_path)
        pg["psql"]("INSERT INTO items VALUES (3000, 'written after the backup')")
        gate.touch()
        args = tmp_path / "pg_restore_archive-args.json"
        args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {
            "archive": str(backup_dir / "latest.tar.gz"), "database": "acme_app", "host": pg["sock"],
            "port": pg["port"], "owner": "postgres", "jobs": 2}}))
        module = subprocess.Popen(module_command("pg_restore_archive", args), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        try:
            wait_for(lambda: pg["psql"]("SELECT count(*) FROM pg_stat_activity WHERE datname = 'acme_app' "
                                        "AND query LIKE 'COPY public.gated%'", db="postgres") == "1",
                     "pg_restore -j loading gated into acme_app, after the drop")
            module.stdout.close()  # the run is stopped: the pipe's reader is gone
            # the module took it as a stop: a SIGTERM pending (held), or (the old code) its pg_restore killed
            wait_for(lambda: stop_pending(module.pid) or not children(module.pid, "pg_restore"),
                     "the module noticing that its run is gone")
            gate.unlink()
            assert module.wait(timeout=300) != 0  # it says it was stopped, after the load
        finally:
            if module.poll() is None:
                module.kill()
                module.wait()
        assert pg["psql"]("SELECT count(*) FROM gated") == "1"
        assert pg["psql"]("SELECT count(*) FROM pg_indexes WHERE indexname = 'gated_id'") == "1"
        assert pg["psql"]("SELECT count(*) FROM items") == "120" and \
            pg["psql"]("SELECT count(*) FROM items WHERE id = 3000") == "0"  # the backup's rows, whole
        assert pg["psql"]("SELECT count(*) FROM pg_constraint WHERE conrelid = 'items'::regclass AND contype = 'p'") == "1"
        assert side_databases(pg) == [] and not any(p.name.startswith(".restore-") for p in backup_dir.iterdir())
        assert result["archive"]
    finally:
        gate.unlink(missing_ok=True)
        shutil.rmtree(gate_dir, ignore_errors=True)
        pg["psql"]("DROP TABLE IF EXISTS gated; DROP FUNCTION IF EXISTS gate()")


def test_databases_left_by_killed_restores_and_drills_are_dropped_by_the_next(pg, tmp_path):
    """A restore or drill killed by SIGKILL cannot drop its side or scratch database. The next one drops such
    leftovers of the same database, unless one is still in use (a restore or drill still loading it), and a
    side database never while the database itself is missing (it may hold the only copy)."""
    backup_dir = pg["base"] / "leftovers"
    backup(pg, backup_dir, tmp_path)
    latest = backup_dir / "latest.tar.gz"
    for name in ("acme_app_restoring_0badc0de", "acme_app_restoring_5eed5eed", "drill_acme_app_20261206T043000_0badc0de",
                 "acme_app_restoring_x", "other_restoring_0badc0de"):  # the last two: not leftovers of ours
        pg["psql"](f'CREATE DATABASE "{name}"', db="postgres")
    busy = subprocess.Popen(["runuser", "-u", "postgres", "--", "psql", "-X", "-h", pg["sock"], "-p", str(pg["port"]),
                             "-d", "acme_app_restoring_5eed5eed"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, text=True)  # a session: the restore still loading it
    try:
        busy.stdin.write("SELECT 1;\n")
        busy.stdin.flush()
        wait_for(lambda: pg["psql"]("SELECT count(*) FROM pg_stat_activity WHERE datname = 'acme_app_restoring_5eed5eed'",
                                    db="postgres") == "1", "the session in the side database")
        done = restore(pg, latest, tmp_path)
        assert done.get("failed") is not True, done
        assert done["leftovers_dropped"] == ["acme_app_restoring_0badc0de"]
        assert sorted(side_databases(pg)) == ["acme_app_restoring_5eed5eed", "acme_app_restoring_x"]
    finally:
        busy.stdin.close()
        busy.wait()
    passed = drill(pg, latest, tmp_path)
    assert passed["passed"] is True and passed["leftovers_dropped"] == ["drill_acme_app_20261206T043000_0badc0de"]
    assert passed["report"][-1] == ("dropped the scratch databases of earlier drills that were killed: "
                                    "drill_acme_app_20261206T043000_0badc0de")
    assert scratch(pg) == []
    # the database missing: its side databases stay (one may hold the only copy of the data)
    pg["psql"]("DROP DATABASE acme_app", db="postgres")
    try:
        done = restore(pg, latest, tmp_path)
        assert done.get("failed") is not True, done
        assert done["leftovers_dropped"] == [] and "acme_app_restoring_5eed5eed" in side_databases(pg)
    finally:
        for name in ("acme_app_restoring_5eed5eed", "acme_app_restoring_x", "other_restoring_0badc0de"):
            pg["psql"](f'DROP DATABASE IF EXISTS "{name}"', db="postgres")
    assert pg["psql"]("SELECT count(*) FROM items") == "120"
