"""The restore drill (linux-maintenance restore-test), for real, on the article's db host.

The backup writes every table's rows and content checksum (computed by PostgreSQL in the dump's
snapshot) into the manifest; the drill restores the archive into a scratch database on db01, compares
table by table, drops the scratch database whatever happens and records the result where `verify`
(drill_max_age_hours) and node_exporter (drill_metrics_file) find it. Each broken archive fails the
drill with a message naming what differs.
"""
import json
import re

import pytest

from tests.fleet.nightly import NightlyEnv

pytestmark = pytest.mark.e2e

BACKUPS = "/var/backups/acme-db"
DRILLS = f"{BACKUPS}/drills"
METRICS = "/var/lib/prometheus/node-exporter/linux_maintenance_drill.prom"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = NightlyEnv(tmp_path_factory.mktemp("drill"))
    e.psql("CREATE TABLE items (id int PRIMARY KEY, v text)")
    e.psql("INSERT INTO items SELECT g, 'row-' || g FROM generate_series(1, 50) g")
    e.psql("CREATE TABLE orders (id bigint PRIMARY KEY, item int REFERENCES items, placed timestamptz, "
           "amount numeric(10,2), weight float8, note bytea)")
    e.psql("INSERT INTO orders SELECT g, 1 + g % 50, timestamptz '2026-01-01 00:00+00' + g * interval '1 hour', "
           "g * 1.25, g / 3.0, decode(md5(g::text), 'hex') FROM generate_series(1, 200) g")
    yield e
    e.stop()


def run(env, *args: str):
    return env.polycrate(*args)


def backup(env) -> str:
    result = run(env, "run", "linux-maintenance", "backup")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    return env.db.exec(f"readlink {BACKUPS}/latest.tar.gz").stdout.strip()


def scratch_databases(env) -> list[str]:
    return env.psql("SELECT datname FROM pg_database WHERE datname LIKE 'drill\\_%'").split()


def record(env, name: str = "last.json") -> dict:
    res = env.db.exec(f"cat {DRILLS}/{name}")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def metric(env, name: str) -> float:
    text = env.db.exec(f"cat {METRICS}").stdout
    m = re.search(rf"^linux_maintenance_restore_drill_{name}\{{database=\"acme_app\"\}} (\S+)$", text, re.M)
    assert m, text
    return float(m.group(1))


def drill_fails(env, *expected: str) -> str:
    result = run(env, "run", "linux-maintenance", "restore-test")
    out = result.stdout + result.stderr
    assert result.returncode == 1, out[-3000:]
    assert "FAILED" in out, out[-3000:]
    for text in expected:
        assert text in out, (text, out[-3000:])
    assert scratch_databases(env) == []  # dropped although the drill failed
    last = record(env)
    assert last["passed"] is False and last["differences"]
    assert metric(env, "last_passed") == 0
    return out


def test_the_manifest_lists_every_table_with_rows_and_a_checksum(env):
    name = backup(env)
    manifest = json.loads(env.db.exec(f"cat {BACKUPS}/{name}.manifest.json").stdout)
    # ours and acme-app's own (schema_migrations, ...)
    assert {"public.items", "public.orders", "public.schema_migrations"} <= set(manifest["tables"])
    assert manifest["tables"]["public.items"]["rows"] == 50
    assert manifest["tables"]["public.orders"]["rows"] == 200
    assert re.fullmatch(r"[0-9a-f]{32}", manifest["tables"]["public.orders"]["checksum"])
    # the checksum is PostgreSQL's, over the rows' content: changing one value changes it
    before = manifest["tables"]["public.items"]["checksum"]
    env.psql("UPDATE items SET v = 'changed' WHERE id = 7")
    try:
        changed = json.loads(env.db.exec(f"cat {BACKUPS}/{backup(env)}.manifest.json").stdout)
        assert changed["tables"]["public.items"]["checksum"] != before
        assert changed["tables"]["public.orders"] == manifest["tables"]["public.orders"]
    finally:
        env.psql("UPDATE items SET v = 'row-7' WHERE id = 7")


def test_drill_passes_table_by_table_and_verify_finds_it(env):
    name = backup(env)
    result = run(env, "run", "linux-maintenance", "restore-test")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert re.search(rf"restore drill of {re.escape(name)} into drill_acme_app_\d{{8}}T\d{{6}}_[0-9a-f]{{8}}: PASS", out)
    assert re.search(r"public\.items +50 +50 +same +ok", out), out[-3000:]
    assert re.search(r"public\.orders +200 +200 +same +ok", out), out[-3000:]
    assert scratch_databases(env) == []

    last = record(env)
    assert last["passed"] is True and last["archive"] == name and last["differences"] == []
    assert last["duration_seconds"] > 0 and last["scratch_database"].startswith("drill_acme_app_")
    manifest = json.loads(env.db.exec(f"cat {BACKUPS}/{name}.manifest.json").stdout)
    assert [t["table"] for t in last["tables"]] == sorted(manifest["tables"])
    assert all(t["result"] == "ok" for t in last["tables"])
    assert record(env, "last-pass.json")["finished_epoch"] == last["finished_epoch"]
    assert metric(env, "last_passed") == 1
    assert metric(env, "last_success_timestamp_seconds") == pytest.approx(last["finished_epoch"])
    assert metric(env, "last_tables") == len(manifest["tables"])

    # verify: the rule is off by default (0); on, it passes after this drill ...
    env.set_config(drill_max_age_hours=192)
    try:
        verify = run(env, "run", "linux-maintenance", "verify")
        assert verify.returncode == 0, verify.stdout[-3000:]
        # ... fails when the last passing drill is older than the limit ...
        old = dict(last, finished_epoch=last["finished_epoch"] - 200 * 3600)
        env.db.exec(f"cat > {DRILLS}/last-pass.json", input=json.dumps(old), check=True)
        verify = run(env, "run", "linux-maintenance", "verify")
        assert verify.returncode == 1, verify.stdout[-3000:]
        assert f"The last passing restore drill ({name}" in verify.stdout and "(limit 192 h)" in verify.stdout
        # ... and when none ever passed
        env.db.exec(f"rm {DRILLS}/last-pass.json", check=True)
        verify = run(env, "run", "linux-maintenance", "verify")
        assert verify.returncode == 1 and "No restore drill has passed" in verify.stdout, verify.stdout[-3000:]
    finally:
        env.db.exec(f"cat > {DRILLS}/last-pass.json", input=json.dumps(last), check=True)
        env.reset_workspace()


def test_drill_of_a_corrupted_archive_fails(env):
    passed_at = metric(env, "last_success_timestamp_seconds") if env.db.exec(f"test -e {METRICS}").returncode == 0 else 0
    name = backup(env)
    path = f"{BACKUPS}/{name}"
    size = int(env.db.exec(f"stat -c %s {path}").stdout)
    # bytes in the middle of the compressed dump changed after the backup: its .sha256 says so
    env.db.exec(f"printf 'XXXXXXXX' | dd of={path} bs=1 seek={size // 2} conv=notrunc status=none", check=True)
    drill_fails(env, f"archive {name}: sha256 is ", "its .sha256 records")
    assert metric(env, "last_success_timestamp_seconds") == pytest.approx(passed_at)  # unchanged by a failure
    # the same damage done before the checksum was taken (as if written corrupt): inflating it fails
    env.db.exec(f"cd {BACKUPS} && sha256sum {name} > {name}.sha256", check=True)
    out = drill_fails(env, f"archive {name}: its ")
    assert "truncated or corrupt" in out


def test_drill_of_a_truncated_archive_fails(env):
    name = backup(env)
    env.db.exec(f"cd {BACKUPS} && truncate -s $(( $(stat -c %s {name}) * 2 / 3 )) {name} && "
                f"sha256sum {name} > {name}.sha256", check=True)
    drill_fails(env, f"archive {name}: its ", "truncated or corrupt")


def test_drill_fails_naming_a_table_emptied_after_the_manifest(env):
    """An archive whose dump lost a table's rows after the manifest counted them (and one whose rows
    changed): the dump matches the manifest's SHA-256, so only the table comparison can see it."""
    name = backup(env)
    manifest = json.loads(env.db.exec(f"cat {BACKUPS}/{name}.manifest.json").stdout)

    def doctored(label: str, sql: str) -> str:
        """A copy of the backup with the given change in its dump and the original table statistics."""
        fake = name.replace(".tar.gz", "") + f"-{label}.tar.gz"
        rows = env.psql("SELECT coalesce(string_agg(id || ':' || v, ','), '') FROM items")
        env.psql(f"BEGIN; {sql}; COMMIT")
        try:
            script = f"""set -e
            work=$(mktemp -d) && cd $work
            pg_dump -h localhost -U acme -Fc -Z0 acme_app > acme_app.dump
            python3 - <<'EOF'
import hashlib, json, os
m = json.loads({json.dumps(json.dumps(manifest))})
m["sha256"] = hashlib.sha256(open("acme_app.dump", "rb").read()).hexdigest()
m["size"] = os.path.getsize("acme_app.dump")
open("manifest.json", "w").write(json.dumps(m))
EOF
            tar -czf {BACKUPS}/{fake} acme_app.dump manifest.json
            cd {BACKUPS} && sha256sum {fake} > {fake}.sha256 && rm -rf $work"""
            env.db.exec(script, check=True, env={"PGPASSWORD": env.db.pg_password, "PGPORT": str(env.db.pg_port)})
        finally:
            env.psql("BEGIN; DELETE FROM orders; DELETE FROM items; COMMIT")
            env.psql("INSERT INTO items SELECT split_part(x, ':', 1)::int, split_part(x, ':', 2) "
                     f"FROM unnest(string_to_array('{rows}', ',')) x")
            env.psql("INSERT INTO orders SELECT g, 1 + g % 50, timestamptz '2026-01-01 00:00+00' + g * interval '1 hour', "
                     "g * 1.25, g / 3.0, decode(md5(g::text), 'hex') FROM generate_series(1, 200) g")
        return fake

    emptied = doctored("emptied", "DELETE FROM orders")
    changed = doctored("changed", "UPDATE items SET v = 'tampered' WHERE id = 3")
    try:
        env.set_config(drill_backup=emptied)
        out = drill_fails(env, "table public.orders: 0 rows restored, 200 in the manifest")
        assert re.search(r"public\.orders +200 +0 +differs +rows differ", out), out[-3000:]
        assert re.search(r"public\.items +50 +50 +same +ok", out), out[-3000:]
        assert record(env)["archive"] == emptied

        env.set_config(drill_backup=changed)
        drill_fails(env, "table public.items: same row count (50) but its content checksum differs")
    finally:
        env.reset_workspace()
    # the named drills restored the named archives; the latest is still the real backup, and it passes
    result = run(env, "run", "linux-maintenance", "restore-test")
    assert result.returncode == 0, result.stdout[-3000:]
    assert record(env)["archive"] == name
