"""The article's nightly workflow, for real, against the article's two hosts.

backup (pg_dump -> archive -> S3, on db01) -> update (apt on app01, with a real rollback that
restores the database on db01) -> verify, run by `polycrate workflows run nightly-maintenance` on
the example workspace, whose workspace.poly is the article's (only ports that differ on this
machine are overridden). db01 and app01 are isolated Debian hosts (tests/fleet/nightly.py): db01
runs PostgreSQL and keeps the backups, app01 runs acme-app, which uses the database on db01 over TCP.
"""
import hashlib
import json
import re
import signal
import subprocess
import sys

import pytest

from tests.fleet.nightly import NightlyEnv
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

ROWS_SQL = "SELECT coalesce(string_agg(id || ':' || v, ',' ORDER BY id), '') FROM items"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = NightlyEnv(tmp_path_factory.mktemp("nightly"))
    e.psql("CREATE TABLE items (id int PRIMARY KEY, v text)")
    e.psql("INSERT INTO items SELECT g, 'row-' || g FROM generate_series(1, 50) g")
    yield e
    e.stop()


def workflow_output(result) -> str:
    return result.stdout + result.stderr


def backup_dir_listing(env) -> list[str]:
    return env.db.exec("ls -1 /var/backups/acme-db").stdout.split()


def latest_archive(env) -> str:
    return env.db.exec("readlink /var/backups/acme-db/latest.tar.gz").stdout.strip()


def app_pid(env) -> str:
    """acme-app.service's main PID on app01 ("0": not running)."""
    return env.app.exec("systemctl show -p MainPID --value acme-app.service", check=True).stdout.strip()


def task_output(out: str, task: str) -> str:
    """What ansible-playbook printed for one task: from its header to the next one ("" if it did not run)."""
    start = out.find(f"TASK [{task}]")
    if start < 0:
        return ""
    end = out.find("TASK [", start + 1)
    return out[start:end if end > 0 else None]


@pytest.fixture(scope="module", autouse=True)
def first_night(env):
    """The first nightly run (acme-app 1.1.0 published), which test_happy_path checks. Every other test starts
    from the state it leaves (1.1.0 installed and healthy, a verified backup), so each runs alone too (-k)."""
    env.app.publish("1.1.0")
    rows_at_backup = env.psql(ROWS_SQL)
    return env.polycrate("workflows", "run", "nightly-maintenance"), rows_at_backup


def test_happy_path(env, first_night, tmp_path):
    result, rows_at_backup = first_night
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "reserved name" not in result.stdout + result.stderr

    # the archive: complete, checksummed, with a manifest; latest points at it
    name = latest_archive(env)
    assert name.startswith("acme_app-") and name.endswith(".tar.gz")
    listing = backup_dir_listing(env)
    assert {name, name + ".sha256", name + ".manifest.json"} <= set(listing)
    assert not [n for n in listing if n.startswith(".work-")]
    manifest = json.loads(env.db.exec(f"cat /var/backups/acme-db/{name}.manifest.json").stdout)
    assert manifest["database"] == "acme_app" and manifest["server_version"].startswith("15")
    assert int(manifest["size"]) > 0 and len(manifest["sha256"]) == 64

    # the S3 copy exists and matches the recorded checksum
    objects = env.remote_objects()
    assert {name, name + ".sha256", name + ".manifest.json"} <= set(objects)
    downloaded = env.s3_download(name, tmp_path / name)
    recorded = env.db.exec(f"cat /var/backups/acme-db/{name}.sha256").stdout.split()[0]
    assert hashlib.sha256(downloaded.read_bytes()).hexdigest() == recorded

    # the update moved acme-app to the new good version, its migration ran, the data is intact
    assert env.app.installed_version() == "1.1.0"
    assert env.health()[0] == 200 and '"1.1.0"' in env.health()[1]
    assert "1.1.0" in env.psql("SELECT string_agg(version, ',') FROM schema_migrations")
    assert env.psql(ROWS_SQL) == rows_at_backup

    # the two hosts of the article: the database and its backups on db01 only; app01 runs the
    # application, which reaches the database on db01 over TCP
    assert env.db is not env.app and env.db.address != env.app.address
    assert env.app.exec("test -e /var/backups/acme-db").returncode != 0
    assert env.app.exec("pgrep -x postgres").returncode != 0  # no PostgreSQL on app01
    status, body = env.health("/db")
    assert status == 200 and json.loads(body)["database"] == f"{env.db.peer_address}:{env.db.pg_port}"
    assert "1.1.0" in json.loads(body)["migrations"]

    # verify alone passes
    verify = env.polycrate("run", "linux-maintenance", "verify")
    assert verify.returncode == 0, verify.stdout[-2000:]


def test_every_action_runs_in_check_mode_and_changes_nothing(env):
    """`polycrate run --check` of each action of the block: exit 0, a report of what it would do (the
    backup) or of what it checked (verify), and no file, object, row or package changed."""
    state_sql = "SELECT datname FROM pg_database ORDER BY 1"

    def state():
        files = env.db.exec("find /var/backups /var/lib/prometheus -printf '%p %s %T@\\n' 2>/dev/null | sort").stdout
        return (files, env.remote_objects(), env.psql(ROWS_SQL), env.psql(state_sql), env.app.installed_version(),
                app_pid(env))

    before = state()
    outputs = {}
    for action in ("backup", "verify", "update", "restore", "restore-test", "backups"):
        result = env.polycrate("run", "--check", "-f", "linux-maintenance", action)
        outputs[action] = out = workflow_output(result)
        assert result.returncode == 0, f"{action} --check: {out[-3000:]}"
        assert "Traceback" not in out
    assert re.search(r"Check mode: a backup would dump acme_app \(PostgreSQL 15.*?\) into /var/backups/acme-db/"
                     r"acme_app-\d{8}T\d{6}Z\.tar\.gz", outputs["backup"]), outputs["backup"][-2000:]
    assert "nothing was dumped, written or uploaded" in outputs["backup"]
    assert "Health-check OK: 200" in outputs["verify"], outputs["verify"][-2000:]
    assert "would replace acme_app" in outputs["restore"] and "nothing was restored" in outputs["restore"]
    assert "Restored acme_app" not in outputs["restore"], outputs["restore"][-2000:]
    # what the restore would stop (and nothing stopped: acme-app's main PID is in the state compared below)
    assert ("Check mode: would stop acme-app.service on app01.acme-corp.com (it runs) for the restore, then start it "
            "again and check http://localhost:" in outputs["restore"]), outputs["restore"][-3000:]
    assert "Would stop acme-app.service on app01.acme-corp.com for the restore and start it again." in outputs["restore"]
    assert "verifies against its .sha256 and manifest; would restore it into drill_acme_app_" in outputs["restore-test"]
    after = state()
    changed = set(after[0].splitlines()) ^ set(before[0].splitlines())
    assert not changed, f"files changed in check mode: {sorted(changed)}"
    assert after[1:] == before[1:]


def test_rollback_on_app01_restores_the_database_on_db01_and_removes_new_packages(env):
    # the broken release pulls in a package that was never on the host
    env.app.publish_extra("acme-app-extras", "1.0.0")
    env.app.publish("1.2.0", broken="health", depends=["acme-app-extras"])  # its migration empties `items`
    env.psql("INSERT INTO items VALUES (1001, 'written-before-the-night')")
    result = env.polycrate("workflows", "run", "nightly-maintenance")
    out = workflow_output(result)
    assert result.returncode == 1, out[-3000:]
    assert "failed: step update" in result.stdout and re.search(r"^  verify +skipped", result.stdout, re.M)

    backup_name = latest_archive(env)
    # one message with every outcome
    assert f"database acme_app restored from /var/backups/acme-db/{backup_name}" in out
    assert "packages: 1 of 1 back at their previous versions (acme-app 1.2.0 -> 1.1.0)" in out, out[-6000:]
    assert "newly installed packages removed: acme-app-extras 1.0.0" in out
    assert "acme-app healthy again: yes" in out
    # the restore ran on db01, delegated from app01's rescue (app01 has no PostgreSQL and no backups)
    delegated = re.findall(r"^TASK \[Restore the database on the database host from the backup taken before the "
                           r"update\].*\n+\w+: \[app01\.acme-corp\.com -> ([^\]]+)\]", out, re.M)
    assert delegated == [f"db01.acme-corp.com({env.db.address})"], out[-4000:]
    # packages back, the new one gone, database exactly as at backup time (the row written before the
    # night included), on db01
    assert env.app.installed_version() == "1.1.0"
    assert env.app.installed_version("acme-app-extras") is None
    assert env.app.exec("test -e /usr/share/acme-app-extras/VERSION").returncode != 0
    rows = env.psql(ROWS_SQL)
    assert "1001:written-before-the-night" in rows and rows.count(",") == 50
    assert "1.2.0" not in env.psql("SELECT string_agg(version, ',') FROM schema_migrations")
    assert env.health()[0] == 200
    verify = env.polycrate("run", "linux-maintenance", "verify")
    assert verify.returncode == 0, verify.stdout[-2000:]
    env.app.unpublish("1.2.0")
    env.app.unpublish("1.0.0", package="acme-app-extras")


def test_an_update_that_changed_nothing_rolls_back_nothing(env):
    """The repository is unreachable at night, so the update fails at its first step, having changed
    nothing. Its rescue restored the database anyway, losing every row written since the backup, and
    stopped the application meanwhile. Now it finds that no package changed, and leaves the database,
    the packages and the running application alone; its message says so."""
    env.psql("INSERT INTO items VALUES (1002, 'written-after-the-backup')")
    pid = env.app.exec("systemctl show -p MainPID --value acme-app.service", check=True).stdout.strip()
    unreachable = "/etc/apt/sources.list.d/unreachable.list"
    env.app.exec(f"echo 'deb [trusted=yes] http://127.0.0.9:9/ nowhere main' > {unreachable}", check=True)
    try:
        result = env.polycrate("run", "linux-maintenance", "update")
    finally:
        env.app.exec(f"rm -f {unreachable}", check=True)
    out = workflow_output(result)
    assert result.returncode != 0, out[-3000:]
    assert re.search(r"UPDATE FAILED, nothing to roll back: update failed at 'Update apt cache': .*\. No package had "
                     r"changed, so the database acme_app and the packages were left as they were \(nothing restored\); "
                     r"acme-app healthy again: yes\.", out), out[-4000:]
    assert "ROLLBACK:" not in out
    # apt's own reason (the apt module's message has none)
    assert "(W: Failed to fetch http://127.0.0.9:9/dists/nowhere/InRelease  Could not connect to 127.0.0.9:9" in out
    try:
        assert "1002:written-after-the-backup" in env.psql(ROWS_SQL)
        assert env.app.exec("systemctl show -p MainPID --value acme-app.service").stdout.strip() == pid != "0"
    finally:
        env.psql("DELETE FROM items WHERE id = 1002")


def test_rollback_restores_the_database_when_the_previous_version_is_gone(env):
    """The worst case of a rollback: the broken release emptied a table and its predecessor is no
    longer in the repository. The data comes back anyway; the message says what did not."""
    env.app.publish("1.2.0", broken="health")
    env.app.unpublish("1.1.0")  # installed now, but the repository no longer has it
    env.psql("INSERT INTO items VALUES (1002, 'written-before-the-second-night')")
    rows_before = env.psql(ROWS_SQL)  # what the backup step of the run takes
    try:
        result = env.polycrate("workflows", "run", "nightly-maintenance")
        out = workflow_output(result)
        assert result.returncode == 1, out[-3000:]
        assert env.psql(ROWS_SQL) == rows_before  # restored exactly, although the package stayed broken
        backup_name = latest_archive(env)
        assert (f"database acme_app restored from /var/backups/acme-db/{backup_name}" in out
                and ": yes; packages:" in out), out[-3000:]
        assert "packages: 0 of 1 back at their previous versions, `acme-app 1.1.0` not in the repository" in out
        assert "acme-app healthy again: no (HTTP 500)" in out
        # the step and the workflow fail with that message
        assert "failed: step update" in result.stdout and "not in the repository" in result.stdout
        assert env.app.installed_version() == "1.2.0"  # could not go back
        assert "1.2.0" not in env.psql("SELECT string_agg(version, ',') FROM schema_migrations")
    finally:
        env.app.publish("1.1.0")
        env.apt_install("acme-app=1.1.0")
        env.app.unpublish("1.2.0")
    assert env.health()[0] == 200


def test_restore_from_s3_after_local_backups_are_gone(env):
    backup = env.polycrate("run", "linux-maintenance", "backup")
    assert backup.returncode == 0, backup.stdout[-2000:]
    rows_at_backup = env.psql(ROWS_SQL)
    env.db.exec("rm -rf /var/backups/acme-db", check=True)
    env.psql("DELETE FROM items WHERE id > 10")
    env.psql("INSERT INTO items VALUES (5000, 'after-backup')")
    assert env.psql(ROWS_SQL) != rows_at_backup

    refused = env.polycrate("run", "linux-maintenance", "restore")  # it asks first; no terminal here
    assert refused.returncode == 2 and "--force" in refused.stderr
    restore = env.polycrate("run", "linux-maintenance", "restore", "--force")
    assert restore.returncode == 0, restore.stdout[-3000:]
    assert env.psql(ROWS_SQL) == rows_at_backup
    assert latest_archive(env)  # the downloaded archive is the new local anchor


def test_a_restore_of_another_databases_archive_is_refused_unless_named(env):
    """RESTORE_BACKUP naming an archive of another database (a staging copy beside production's in the
    backup folder) must not replace acme_app: refused from its manifest, nothing dropped.
    RESTORE_FROM_DATABASE names the database the archive must come from, and is checked too."""
    assert env.polycrate("run", "linux-maintenance", "backup").returncode == 0
    folder = "/var/backups/acme-db"
    real = latest_archive(env)
    other = "staging_app-20260101T000000Z.tar.gz"
    env.db.exec(f"cd {folder} && cp {real} {other} && sed 's/{real}/{other}/' {real}.sha256 > {other}.sha256 && "
                f"sed 's/\"database\": \"acme_app\"/\"database\": \"staging_app\"/' {real}.manifest.json "
                f"> {other}.manifest.json", check=True)
    env.psql("INSERT INTO items VALUES (7000, 'written after the backup')")
    rows = env.psql(ROWS_SQL)
    try:
        refused = env.polycrate("run", "linux-maintenance", "restore", "--force", env={"RESTORE_BACKUP": other})
        assert refused.returncode == 1, refused.stdout[-3000:]
        assert (f"{other} is a backup of the database staging_app, not of acme_app: not restoring; to restore it "
                "into acme_app on purpose, set from_database (block config restore_from_database) to staging_app"
                in refused.stdout + refused.stderr), refused.stdout[-3000:]
        assert env.psql(ROWS_SQL) == rows
        # named on purpose, but the archive itself (its manifest inside) is acme_app's: refused again
        named = env.polycrate("run", "linux-maintenance", "restore", "--force",
                              env={"RESTORE_BACKUP": other, "RESTORE_FROM_DATABASE": "staging_app"})
        assert named.returncode == 1, named.stdout[-3000:]
        assert (f"{other} is a backup of the database acme_app, not of staging_app: not restoring"
                in named.stdout + named.stderr), named.stdout[-3000:]
        assert env.psql(ROWS_SQL) == rows
        # that one is found only in the archive's own manifest, read while the restore loads it, after acme-app
        # was stopped: started again on the old database, and the failure says so
        assert re.search(r"RESTORE FAILED: .*not restoring\. acme_app on db01\.acme-corp\.com is the old database, as "
                         r"before the restore; acme-app\.service started again on app01\.acme-corp\.com, healthy: yes\.",
                         named.stdout), named.stdout[-3000:]
        assert env.health()[0] == 200
    finally:
        env.psql("DELETE FROM items WHERE id = 7000")
        env.db.exec(f"rm -f {folder}/{other} {folder}/{other}.sha256 {folder}/{other}.manifest.json", check=True)


def test_a_restore_stops_acme_app_restores_and_starts_it_again(env):
    """The standalone restore replaced acme_app under a running acme-app (the rollback stopped it, the
    restore did not). Now it stops acme-app on app01 once every check that could refuse the restore passed,
    restores on db01, starts acme-app again and checks that it answers, on the restored data."""
    backup = env.polycrate("run", "linux-maintenance", "backup")
    assert backup.returncode == 0, backup.stdout[-2000:]
    rows_at_backup = env.psql(ROWS_SQL)
    env.psql("INSERT INTO items VALUES (8000, 'written after the backup')")
    env.psql("INSERT INTO schema_migrations (version) VALUES ('9.9.9-after-the-backup')")
    pid = app_pid(env)
    assert pid != "0" and env.health()[0] == 200

    result = env.polycrate("run", "linux-maintenance", "restore", "--force")
    out = workflow_output(result)
    assert result.returncode == 0, out[-4000:]
    # stopped on app01 after the checks, then the restore on db01, then started again on app01
    stop = out.index("TASK [Stop application service for the restore (systemd)]")
    assert out.index("TASK [The archive matches its .sha256]") < stop
    assert out.index("TASK [Verify the archive and its dump, then replace the database with it]") > stop
    assert "changed: [app01.acme-corp.com]" in task_output(out, "Stop application service for the restore (systemd)")
    assert "changed: [app01.acme-corp.com]" in task_output(out, "Start application service after the restore (systemd)")
    assert "skipping: [app01.acme-corp.com]" in task_output(out, "Stop application service for the restore (SysV init "
                                                                 "script)")
    assert re.search(r"Restored acme_app from /var/backups/acme-db/acme_app-\d{8}T\d{6}Z\.tar\.gz \(taken [^)]+\)\. "
                     r"acme-app\.service started again on app01\.acme-corp\.com, healthy: yes\.", out), out[-3000:]
    new_pid = app_pid(env)
    assert new_pid not in ("0", pid)  # a new process: it was stopped and started
    # it answers, from the restored database
    assert env.health()[0] == 200
    status, body = env.health("/db")
    assert status == 200 and "9.9.9-after-the-backup" not in json.loads(body)["migrations"]
    assert "1.1.0" in json.loads(body)["migrations"]
    assert env.psql(ROWS_SQL) == rows_at_backup


def test_a_restore_says_when_acme_app_does_not_come_back(env):
    """The database is restored but acme-app's health check fails afterwards (here: health_body_pattern that its
    answer does not match): the restore fails, saying the database was restored and the application is not back."""
    assert env.polycrate("run", "linux-maintenance", "backup").returncode == 0
    rows_at_backup = env.psql(ROWS_SQL)
    env.psql("INSERT INTO items VALUES (8001, 'written after the backup')")
    env.set_config(health_body_pattern="no-such-text")
    try:
        result = env.polycrate("run", "linux-maintenance", "restore", "--force")
        out = workflow_output(result)
        assert result.returncode == 1, out[-3000:]
        assert re.search(r"RESTORED, BUT THE APPLICATION IS NOT BACK: acme_app restored from /var/backups/acme-db/"
                         r"acme_app-\d{8}T\d{6}Z\.tar\.gz \(taken [^)]+\); acme-app\.service started again on "
                         r"app01\.acme-corp\.com, healthy: no \(the health response does not match no-such-text\)\.",
                         out), out[-3000:]
        assert env.psql(ROWS_SQL) == rows_at_backup
        assert app_pid(env) != "0"
    finally:
        env.reset_workspace()


def test_a_restore_that_failed_after_dropping_the_database_leaves_acme_app_stopped(env):
    """restore_jobs 2 restores in place: the old database gives way to an empty one before pg_restore loads it.
    When pg_restore then fails (here: a table in template1 that the dump also has, an admin's leftover), acme_app
    is partly restored: acme-app is not started on it, and the failure says so. Restoring again brings the
    database back; acme-app is then started by hand. A createdb that fails (db_user naming no role) comes
    before the drop: before, it left acme_app gone; now it is refused with the old database, and acme-app
    runs again on it."""
    assert env.polycrate("run", "linux-maintenance", "backup").returncode == 0
    rows_at_backup = env.psql(ROWS_SQL)

    def template1(sql: str) -> None:
        env.db.exec(["runuser", "-u", "postgres", "--", "psql", "-X", "-v", "ON_ERROR_STOP=1", "-d", "template1",
                     "-c", sql], check=True)

    env.set_config(restore_jobs=2, db_user="no_such_role")
    try:
        result = env.polycrate("run", "linux-maintenance", "restore", "--force")
        out = workflow_output(result)
        assert result.returncode == 1, out[-3000:]
        assert "no_such_role" in out and "acme-app.service started again on app01.acme-corp.com" in out, out[-3000:]
        assert "was dropped before the restore failed" not in out, out[-3000:]
        assert env.psql(ROWS_SQL) == rows_at_backup and env.health()[0] == 200
        env.reset_workspace()
        env.set_config(restore_jobs=2)
        template1("CREATE TABLE public.items (id int)")
        result = env.polycrate("run", "linux-maintenance", "restore", "--force")
        out = workflow_output(result)
        assert result.returncode == 1, out[-3000:]
        assert re.search(r"RESTORE FAILED: pg_restore of .* into acme_app: .*\. acme_app on db01\.acme-corp\.com was "
                         r"dropped before the restore failed \(it is missing or partly restored\): restore again; "
                         r"acme-app\.service left stopped on app01\.acme-corp\.com \(start it once acme_app is back\)\.",
                         out), out[-3000:]
        assert app_pid(env) == "0"
    finally:
        template1("DROP TABLE IF EXISTS public.items")
        env.reset_workspace()
        again = env.polycrate("run", "linux-maintenance", "restore", "--force")
        assert again.returncode == 0, workflow_output(again)[-3000:]
        env.app.exec("systemctl start acme-app.service", check=True)
    assert "acme-app.service was not running on app01.acme-corp.com: left stopped." in workflow_output(again)
    assert env.psql(ROWS_SQL) == rows_at_backup and env.health()[0] == 200


def test_a_refused_restore_leaves_acme_app_running_untouched(env):
    """A restore refused before anything is dropped (an archive of another database, one that does not match its
    .sha256) never stops acme-app: the same process runs on, and the database is as it was."""
    assert env.polycrate("run", "linux-maintenance", "backup").returncode == 0
    folder = "/var/backups/acme-db"
    real = latest_archive(env)
    other = "staging_app-20260101T000000Z.tar.gz"
    damaged = "acme_app-20260101T000000Z.tar.gz"
    env.db.exec(f"cd {folder} && cp {real} {other} && sed 's/{real}/{other}/' {real}.sha256 > {other}.sha256 && "
                f"sed 's/\"database\": \"acme_app\"/\"database\": \"staging_app\"/' {real}.manifest.json "
                f"> {other}.manifest.json && "
                f"cp {real} {damaged} && printf x >> {damaged} && sed 's/{real}/{damaged}/' {real}.sha256 > {damaged}.sha256 "
                f"&& cp {real}.manifest.json {damaged}.manifest.json", check=True)
    rows, pid = env.psql(ROWS_SQL), app_pid(env)
    assert pid != "0"
    try:
        for archive, expected in ((other, f"{other} is a backup of the database staging_app, not of acme_app: not "
                                          "restoring"),
                                  (damaged, f"Backup {folder}/{damaged} does not verify: sha256 is ")):
            refused = env.polycrate("run", "linux-maintenance", "restore", "--force", env={"RESTORE_BACKUP": archive})
            out = workflow_output(refused)
            assert refused.returncode == 1, out[-3000:]
            assert expected in out, out[-3000:]
            assert "TASK [Stop application service for the restore" not in out, out[-3000:]
            assert app_pid(env) == pid  # the same process, never stopped
            assert env.health()[0] == 200 and env.psql(ROWS_SQL) == rows
    finally:
        env.db.exec(f"cd {folder} && rm -f {other} {other}.sha256 {other}.manifest.json {damaged} {damaged}.sha256 "
                    f"{damaged}.manifest.json", check=True)


def test_restore_stop_app_false_leaves_acme_app_alone(env):
    """restore_stop_app: false (a database no service of web_hosts uses): the restore as before, nothing stopped."""
    assert env.polycrate("run", "linux-maintenance", "backup").returncode == 0
    pid = app_pid(env)
    env.set_config(restore_stop_app=False)
    try:
        result = env.polycrate("run", "linux-maintenance", "restore", "--force")
        out = workflow_output(result)
        assert result.returncode == 0, out[-3000:]
        assert "Restored acme_app from" in out and "started again" not in out, out[-3000:]
        assert "changed: [app01" not in out
        assert app_pid(env) == pid
    finally:
        env.reset_workspace()


def test_update_refuses_without_a_usable_backup(env):
    env.app.publish("1.3.0")

    def refused(expect: str):
        result = env.polycrate("run", "linux-maintenance", "update")
        assert result.returncode == 1, result.stdout[-2000:]
        assert expect in result.stdout + result.stderr
        assert env.app.installed_version() == "1.1.0"  # nothing was upgraded

    assert env.polycrate("run", "linux-maintenance", "backup").returncode == 0
    real = "/var/backups/acme-db/" + latest_archive(env)

    env.db.exec(f"printf x >> {real}", check=True)  # corrupted after it was written
    refused("does not verify")

    assert env.polycrate("run", "linux-maintenance", "backup").returncode == 0
    real = "/var/backups/acme-db/" + latest_archive(env)
    env.db.exec(f"touch -d '3 days ago' {real}", check=True)
    refused("hours old")

    env.db.exec("rm -rf /var/backups/acme-db", check=True)
    refused("No backup found")
    env.app.unpublish("1.3.0")


def test_backups_lists_local_and_remote(env):
    assert env.polycrate("run", "linux-maintenance", "backup").returncode == 0
    result = env.polycrate("run", "linux-maintenance", "backups")
    assert result.returncode == 0, result.stdout[-2000:]
    name = latest_archive(env)
    assert f"{name} " in result.stdout and "verified (latest)" in result.stdout
    assert result.stdout.count(".tar.gz") >= 2  # local and remote entries


def test_the_article_sample_playbooks_are_not_what_ships():
    from tests.conftest import ARTICLE_BLOCK, ARTICLE_FILES, EXAMPLE

    for name in ("backup.yml", "update.yml", "verify.yml"):
        assert (EXAMPLE / ARTICLE_BLOCK / name).read_text() != (ARTICLE_FILES / name).read_text()
    update = (EXAMPLE / ARTICLE_BLOCK / "update.yml").read_text()
    assert 'dest: "/"' not in update  # the article's "rollback" unpacked a SQL dump into /
    # systemd hosts through ansible.builtin.systemd (as in the article), the others through service
    for name in ("update.yml", "verify.yml"):
        playbook = (EXAMPLE / ARTICLE_BLOCK / name).read_text()
        assert "ansible.builtin.systemd:" in playbook and "ansible.builtin.service" in playbook, name


def test_backup_with_the_rclone_config_from_encrypted_workspace_secrets(env):
    import subprocess

    out = subprocess.run(["age-keygen"], capture_output=True, text=True, check=True).stdout
    key = next(line for line in out.splitlines() if line.startswith("AGE-SECRET-KEY-"))
    (env.root / "artifacts" / "secrets" / "rclone.conf").write_text(env.s3.rclone_conf())
    enc = env.polycrate("workspace", "encrypt", env={"WORKSPACE_ENCRYPTION_KEY": key})
    assert enc.returncode == 0, enc.stderr
    env.db.exec("rm -f /root/.config/rclone/rclone.conf", check=True)  # only the workspace secret is left
    try:
        before = set(env.remote_objects())
        result = env.polycrate("run", "linux-maintenance", "backup", env={"WORKSPACE_ENCRYPTION_KEY": key})
        assert result.returncode == 0, result.stdout[-3000:]
        assert set(env.remote_objects()) - before  # uploaded with the secret's credentials
        from tests.fleet.s3 import SECRET_KEY

        assert SECRET_KEY not in result.stdout + result.stderr
        # the copy on the host lived only for the play
        assert env.db.exec("test -e /var/backups/acme-db/.rclone.conf").returncode != 0
    finally:
        env.reset_workspace()


def test_a_backup_stopped_while_it_holds_the_secret_rclone_conf_says_where_it_left_it(env):
    """The rclone.conf from the workspace secrets is copied to the db host for the play and removed at its end, in
    an `always` that a stop never reaches (ansible-playbook ends at once). A backup stopped while pg_dump waits for
    a lock says in its record where the credentials were left and how to remove them; never their content."""
    from tests.fleet.s3 import SECRET_KEY

    out = subprocess.run(["age-keygen"], capture_output=True, text=True, check=True).stdout
    key = {"WORKSPACE_ENCRYPTION_KEY": next(line for line in out.splitlines() if line.startswith("AGE-SECRET-KEY-"))}
    (env.root / "artifacts" / "secrets" / "rclone.conf").write_text(env.s3.rclone_conf())
    assert env.polycrate("workspace", "encrypt", env=key).returncode == 0
    env.db.exec("rm -f /root/.config/rclone/rclone.conf", check=True)  # only the workspace secret is left
    # a session that holds items: pg_dump waits for it (--lock-wait-timeout is minutes)
    env.db.exec(f"nohup runuser -u postgres -- psql -X -q -p {env.db.pg_port} -d acme_app -c "
                "'BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(900)' >/dev/null 2>&1 &", check=True)
    waiting = "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = 'acme_app' AND wait_event_type = 'Lock'"
    try:
        out, shown = env.stop_restore(signal.SIGTERM, lambda: env.superuser_sql(waiting) == "t",
                                      "pg_dump on db01 waiting for its lock", action=("backup",), env=key)
        assert shown["status"] == "interrupted"
        message = shown["steps"][0]["message"]
        assert message.startswith("interrupted (SIGTERM): left "), message
        assert ("the remote's credentials (rclone.conf from the workspace secrets) in /var/backups/acme-db/.rclone.conf"
                " on db01.acme-corp.com until this block's next backup, restore or listing there: remove it with "
                "`rm -f /var/backups/acme-db/.rclone.conf`") in message, message
        assert shown["message"] == message
        assert SECRET_KEY not in out + json.dumps(shown)
        assert env.db.exec("test -e /var/backups/acme-db/.rclone.conf").returncode == 0  # as the record says
        # the next backup takes the copy again and removes it at its end
        env.superuser_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(900)%'"
                          " AND pid <> pg_backend_pid()")
        result = env.polycrate("run", "linux-maintenance", "backup", env=key)
        assert result.returncode == 0, result.stdout[-3000:]
        assert env.db.exec("test -e /var/backups/acme-db/.rclone.conf").returncode != 0
    finally:
        env.superuser_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(900)%'"
                          " AND pid <> pg_backend_pid()")
        env.db.exec("mkdir -p /root/.config/rclone && cat > /root/.config/rclone/rclone.conf && chmod 600 "
                    "/root/.config/rclone/rclone.conf", input=env.s3.rclone_conf(), check=True)
        env.reset_workspace()


def test_retention_keeps_the_newest_archives_locally_and_remotely(env):
    env.set_config(keep_local=2, keep_remote=2)
    try:
        for _ in range(3):
            result = env.polycrate("run", "linux-maintenance", "backup")
            assert result.returncode == 0, result.stdout[-2000:]
        local = sorted(n for n in backup_dir_listing(env) if n.endswith(".tar.gz") and n.startswith("acme_app-"))
        remote = sorted(n for n in env.remote_objects() if n.endswith(".tar.gz"))
        assert len(local) == 2 and len(remote) == 2
        assert local == remote  # the same newest two, here and there
        assert latest_archive(env) == local[-1]
        # sidecars of removed archives went with them
        assert len([n for n in backup_dir_listing(env) if n.endswith(".sha256")]) == 2
        assert len([n for n in env.remote_objects() if n.endswith(".sha256")]) == 2
    finally:
        env.reset_workspace()


def test_encrypted_upload_and_restore_from_it(env, tmp_path):
    import subprocess

    identity = tmp_path / "age.key"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(identity)], check=True, capture_output=True,
                               text=True).stdout.strip()
    env.db.exec("cat > /root/age.key && chmod 600 /root/age.key", input=identity.read_text(), check=True)
    env.set_config(encrypt_recipients=[recipient], age_identity_file="/root/age.key")
    try:
        result = env.polycrate("run", "linux-maintenance", "backup")
        assert result.returncode == 0, result.stdout[-3000:]
        name = latest_archive(env)
        objects = env.remote_objects()
        assert name + ".age" in objects and name not in objects  # only ciphertext left the host
        encrypted = env.s3_download(name + ".age", tmp_path / (name + ".age"))
        plain = subprocess.run(["age", "-d", "-i", str(identity), str(encrypted)], check=True,
                               capture_output=True).stdout
        recorded = env.db.exec(f"cat /var/backups/acme-db/{name}.sha256").stdout.split()[0]
        assert hashlib.sha256(plain).hexdigest() == recorded

        rows_at_backup = env.psql(ROWS_SQL)
        env.db.exec("rm -rf /var/backups/acme-db", check=True)
        env.psql("DELETE FROM items WHERE id > 5")
        restore = env.polycrate("run", "linux-maintenance", "restore", "--force")
        assert restore.returncode == 0, restore.stdout[-3000:]
        assert env.psql(ROWS_SQL) == rows_at_backup
    finally:
        env.reset_workspace()


def test_the_archive_goes_up_in_one_put_and_the_remote_check_uses_the_servers_md5(env):
    """Up to upload_cutoff (5G) the archive is one PUT: its ETag is the MD5 the server computed over the
    bytes it received, and that is what the remote check compares. Above it, rclone's multipart upload
    (here forced with upload_cutoff 0) still passes the remote check, with rclone's MD5 as metadata."""
    result = env.polycrate("run", "linux-maintenance", "backup")
    assert result.returncode == 0, result.stdout[-2000:]
    name = latest_archive(env)
    local_md5 = env.db.exec(f"md5sum /var/backups/acme-db/{name}").stdout.split()[0]
    head = env.remote_head(name)
    assert head["ETag"].strip('"') == local_md5  # one part: the server's MD5 of what it received
    assert "md5chksum" not in head.get("Metadata", {})
    env.set_config(upload_cutoff="0")
    try:
        result = env.polycrate("run", "linux-maintenance", "backup")
        assert result.returncode == 0, result.stdout[-2000:]
        name = latest_archive(env)
        head = env.remote_head(name)
        assert head["ETag"].strip('"').endswith("-1")  # multipart: an ETag that is not an MD5
        assert env.remote_objects()[name]["Hashes"]["md5"] == env.db.exec(
            f"md5sum /var/backups/acme-db/{name}").stdout.split()[0]
    finally:
        env.reset_workspace()


def test_a_stopped_backup_stops_on_db01_too(env):
    """A backup waits for its lock on a table that a migration holds, and its run is stopped (SIGTERM, as
    the web view's Stop, Ctrl-C or a step's timeout stop it). The run is recorded as interrupted, and on db01
    the backup stops too: no pg_dump, no session of it in PostgreSQL, no work folder; once the lock is gone,
    nothing is published or pruned. Before, the module carried on alone over the SSH session's end: it
    waited for the lock, then published latest.tar.gz and pruned, after its run said it was stopped."""
    def listing() -> list[str]:  # with the work folders (.work-NAME)
        return env.db.exec("ls -1A /var/backups/acme-db").stdout.split()

    before, latest = listing(), latest_archive(env)
    env.db.exec(f"setsid -f psql -h localhost -U {env.db.pg_user} -d {env.db.pg_database} -c "
                "'BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(3600)' >/dev/null 2>&1",
                env={"PGPASSWORD": env.db.pg_password, "PGPORT": str(env.db.pg_port)}, check=True)
    locker = "query LIKE 'BEGIN; LOCK TABLE items%'"  # not like these queries: they begin with SELECT
    try:
        wait_for(lambda: env.psql(f"SELECT count(*) FROM pg_stat_activity WHERE {locker} AND state = 'active'") == "1",
                 "the migration holding items")
        run = subprocess.Popen([sys.executable, "-m", "polycrate", "run", "linux-maintenance", "backup"], cwd=env.root,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for(lambda: env.psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                      "AND query LIKE 'LOCK TABLE public.items%'") == "1",
                     "pg_dump on db01 waiting for its lock on items")
            run.send_signal(signal.SIGTERM)
            out = run.communicate(timeout=180)[0]
        finally:
            if run.poll() is None:
                run.kill()
                run.communicate()
        assert run.returncode != 0
        run_id = re.search(r"run (\d{8}-\d{6}-[0-9a-f]+) interrupted", out)
        assert run_id, out[-3000:]
        shown = json.loads(env.polycrate("runs", "show", run_id.group(1), "-o", "json").stdout)
        assert shown["status"] == "interrupted"
        mine = ("SELECT count(*) FROM pg_stat_activity WHERE application_name IN ('pg_dump', 'psql') "
                f"AND NOT ({locker}) AND pid <> pg_backend_pid()")
        wait_for(lambda: env.db.exec("pgrep -x pg_dump").returncode == 1 and env.psql(mine) == "0",
                 "the backup stopped on db01: no pg_dump, no session of it")
    finally:
        env.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {locker}")
    assert listing() == before and latest_archive(env) == latest



@pytest.fixture
def gated_backup(env):
    with env.gated_backup() as rows:
        yield rows


def test_a_restore_stopped_during_pg_restore_leaves_the_old_database_and_says_acme_app_is_stopped(env, gated_backup):
    """The restore is stopped (Ctrl-C: SIGINT) while pg_restore loads the side database on db01: acme-app was
    stopped on app01 and nothing started it again (ansible-playbook ends at once). On db01 the module notices that
    its run is gone and drops its side database: pg_restore does not go on once the gate opens, and acme_app is the
    old database (the row written after the backup still there). The record says so, with the command that starts
    acme-app again, not only 'interrupted (SIGINT)'."""
    loading = ("SELECT count(*) FROM pg_stat_activity WHERE datname LIKE 'acme\\_app\\_restoring\\_%' "
               "AND query LIKE 'COPY public.gated%'")
    out, shown = env.stop_restore(signal.SIGINT, lambda: env.superuser_sql(loading) == "1",
                                  "pg_restore on db01 loading gated into the side database")
    assert shown["status"] == "interrupted"
    assert not env.app_running()
    # the module on db01 undoes its part: no pg_restore, no side database, even once the gate opens
    wait_for(lambda: env.db.exec("pgrep -x pg_restore").returncode == 1 and not env.side_databases(),
             "the restore stopped on db01: no pg_restore, no side database")
    env.db.exec(f"rm -f {env.GATE}", check=True)
    assert not env.restore_module_running()
    assert not env.side_databases()
    assert env.psql(ROWS_SQL) == gated_backup  # the old database, with the row written after the backup
    message = shown["steps"][0]["message"]
    assert message.startswith("interrupted (SIGINT): left "), message
    assert shown["message"] == message  # the run's (runs show, the web view's run page)
    assert "polycrate: step restore stopped: left acme-app.service stopped on app01.acme-corp.com" in out, out[-3000:]
    assert ("acme-app.service stopped on app01.acme-corp.com for the restore and not started again: start it there "
            "with `systemctl start acme-app.service`") in message, message
    assert "acme_app on db01.acme-corp.com was being replaced: it is the old database, as before the restore, or the " \
           "restored one" in message, message
    env.app.exec("systemctl start acme-app.service", check=True)  # what the record says to run
    assert env.health()[0] == 200


def test_a_restore_stopped_right_after_acme_app_was_stopped_says_so(env, gated_backup):
    """The restore is stopped (SIGTERM: the web view's Stop, a schedule's timeout) as soon as acme-app is down on
    app01. Its record says acme-app is left stopped there and how to start it, and what became of acme_app on db01;
    acme_app is the old database (the restore could not have got further: the gate holds pg_restore), and no side
    database is left once the module on db01 is gone."""
    out, shown = env.stop_restore(signal.SIGTERM, lambda: not env.app_running(), "acme-app stopped on app01")
    assert shown["status"] == "interrupted"
    assert not env.app_running()
    wait_for(lambda: not env.restore_module_running() and not env.side_databases(),
             "the restore module gone from db01, no side database")
    env.db.exec(f"rm -f {env.GATE}", check=True)
    assert env.psql(ROWS_SQL) == gated_backup
    message = shown["steps"][0]["message"]
    assert message.startswith("interrupted (SIGTERM): left "), message
    assert re.search(r"acme-app\.service (stopped on app01\.acme-corp\.com for the restore|on app01\.acme-corp\.com "
                     r"may be stopped \(the restore was stopping it\)) and (was )?not started again: start it there "
                     r"with `systemctl start acme-app\.service`", message), message
