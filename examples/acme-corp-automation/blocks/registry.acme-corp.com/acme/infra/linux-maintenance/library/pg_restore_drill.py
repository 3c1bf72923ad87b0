#!/usr/bin/python
# -*- coding: utf-8 -*-
# linux-maintenance block: the restore drill (restore-test action).
from __future__ import annotations

DOCUMENTATION = r"""
---
module: pg_restore_drill
short_description: Prove a backup archive restores, table by table
description:
  - Restores a linux-maintenance backup archive (C(<db>-<time>.tar.gz)) into a scratch database on this
    host, compares every table's row count and content checksum with the manifest the backup wrote in
    the dump's own snapshot, and drops the scratch database again, whatever happened.
  - One read of the archive feeds both its SHA-256 (against the C(.sha256) sidecar) and the inflater; the dump
    inside is hashed on the way and must match the manifest's SHA-256. A changed archive fails naming its checksum,
    a truncated or corrupt one naming its gzip or tar stream. With O(jobs=1) (the default) the dump streams from
    that read straight into C(pg_restore) (no copy on disk), and the tables are compared only when every check
    passed; with more, it is unpacked into a work folder first and nothing is restored before both match.
  - The scratch database is named C(drill_<db>_<UTC time>_<random>) and created by this module; only a
    database this module created is ever dropped.
  - "Refused before anything is created: an archive whose manifest names another database than O(database) (its pass
    would be recorded for O(database)), and a drill that would fill a filesystem: the scratch database needs room
    for a copy of O(database) (its size and a tenth) beside PostgreSQL's data directory, an unpacked dump room in
    the work folder."
  - Records the result (pass or fail, archive, duration, every table) as JSON in O(record_dir) (C(last.json),
    C(last-pass.json) when it passed, one line per drill in C(history.jsonl); RV(report) included) and, when O(metrics_file) is
    set, as a Prometheus textfile for node_exporter's textfile collector.
  - The module itself does not fail when the drill fails; it returns RV(passed) and RV(differences), so
    the play can print the table before it fails.
options:
  archive:
    description: The archive to restore (a path; C(latest.tar.gz) may be a symbolic link).
    type: path
    required: true
  database:
    description: The database the archive was taken of (names the scratch database and the metrics).
    type: str
    required: true
  host:
    description: Where PostgreSQL listens on this host (a socket directory or an address); empty for the default socket.
    type: str
    default: ""
  port:
    description: The PostgreSQL port on this host.
    type: int
    default: 5432
  os_user:
    description: The operating system user the PostgreSQL tools run as (a superuser through the local socket).
    type: str
    default: postgres
  jobs:
    description: C(pg_restore -j) connections. 1 streams the dump into C(pg_restore); more unpacks it first
      (C(pg_restore -j) needs a file).
    type: int
    default: 1
  table_stats_sql:
    description:
      - The SQL that lists every table's rows and checksum (the block's C(files/table_stats.sql)); the same
        SQL the backup ran for the manifest.
    type: str
    required: true
  record_dir:
    description: Where the drill records go (created when missing).
    type: path
    required: true
  metrics_file:
    description: Prometheus textfile written after the drill; empty for none.
    type: path
    default: ""
  work_dir:
    description: With O(jobs) above 1, where the dump is unpacked for pg_restore (a private folder is made inside);
      default the archive's folder.
    type: path
notes:
  - Check mode verifies the archive's checksum and manifest and reports the scratch database it would use;
    it restores nothing and records nothing.
  - Imports the block's C(module_utils/lm_archive.py); Ansible finds it beside the block's playbooks.
author: linux-maintenance block
"""

EXAMPLES = r"""
- name: Restore the latest backup into a scratch database and compare it with its manifest
  pg_restore_drill:
    archive: /var/backups/acme-db/latest.tar.gz
    database: acme_app
    port: 5432
    table_stats_sql: "{{ lookup('ansible.builtin.file', 'table_stats.sql') }}"
    record_dir: /var/backups/acme-db/drills
    metrics_file: /var/lib/prometheus/node-exporter/linux_maintenance_drill.prom
  register: drill

- name: Fail when the drill found a difference
  ansible.builtin.fail:
    msg: "{{ drill.differences | join('; ') }}"
  when: not drill.passed
"""

RETURN = r"""
leftovers_dropped:
  description: Scratch databases of earlier drills that were killed before they could drop them, dropped
    first (never one still in use).
  returned: not in check mode
  type: list
  elements: str
  sample: [drill_acme_app_20261206T043000_5f0c9a21]
passed:
  description: Whether the archive restored and every table matched the manifest.
  returned: always
  type: bool
archive:
  description: The archive's file name (a link resolved).
  returned: always
  type: str
  sample: acme_app-20261206T020000Z.tar.gz
scratch_database:
  description: The scratch database the archive was restored into (dropped again).
  returned: always
  type: str
  sample: drill_acme_app_20261206T030000_3fa9c2d1
duration_seconds:
  description: Seconds from start to the scratch database dropped.
  returned: always
  type: float
tables:
  description: One entry per table of the manifest or the restore.
  returned: always
  type: list
  elements: dict
  sample: [{"table": "public.items", "manifest_rows": 50, "restored_rows": 50, "checksum": "same", "result": "ok"}]
differences:
  description: What differs, one sentence each (empty when the drill passed).
  returned: always
  type: list
  elements: str
report:
  description: The table as lines of text, for a debug task.
  returned: always
  type: list
  elements: str
"""

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.lm_archive import (as_os_user, drop_leftovers, drop_to, on_stop, other_database,
                                            room_for_copy, room_for_dump, sidecar_manifest, stream_restore, tail,
                                            unpack, verify)

# The first line of table_stats_sql names its checksum ("-- table_checksum: row-hash/2"); the backup records
# that name in the manifest. Manifests from before the name was recorded hold the first checksum (the md5 of
# every row's text), which this SQL computes, so that their archives still drill.
CHECKSUM_RE = r"^--\s*table_checksum:\s*(\S+)"
LEGACY_CHECKSUM = "md5-row-text/1"
LEGACY_TABLE_STATS_SQL = r"""-- Every table's row count and content checksum, computed by PostgreSQL in one statement (no function is
-- created: it runs inside a read-only transaction, in the snapshot pg_dump dumps). One line per table:
-- schema.table <TAB> rows <TAB> checksum. The checksum is the md5 of the sum of the first 64 bits of the
-- md5 of each row's text form: it does not depend on row order, and a changed, added or lost row changes
-- it. The settings make the text form of dates, times, floats and bytea the same in every session.
SET LOCAL DateStyle = 'ISO, MDY';
SET LOCAL TimeZone = 'UTC';
SET LOCAL IntervalStyle = 'postgres';
SET LOCAL extra_float_digits = 3;
SET LOCAL bytea_output = 'hex';
WITH tables AS (
    SELECT n.nspname, c.relname
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r'
      AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
      -- tables of extensions: pg_dump does not dump their rows
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
), measured AS (
    SELECT nspname, relname, query_to_xml(format(
        'SELECT count(*) AS n, md5(coalesce(sum((''x'' || left(md5(ROW(r.*)::text), 16))::bit(64)::bigint::numeric), 0)::text) AS s FROM %I.%I r',
        nspname, relname), false, true, '') AS x
    FROM tables
)
SELECT format('%I.%I', nspname, relname),
       (xpath('/row/n/text()', x))[1]::text,
       (xpath('/row/s/text()', x))[1]::text
FROM measured
ORDER BY 1;
"""


def checksum_kind(sql: str) -> str:
    """The checksum a table statistics SQL computes (its first line names it; none: the first one)."""
    import re

    m = re.match(CHECKSUM_RE, sql.lstrip())
    return m.group(1) if m else LEGACY_CHECKSUM


class DrillFailed(Exception):
    """A step of the drill failed; the message names what differs."""


def check_source(manifest: dict, p: dict, archive: str) -> None:
    """A drill of another database's archive would record a pass for O(database) that proves nothing of its
    backups: refused."""
    source = other_database(manifest, p["database"])
    if source:
        raise DrillFailed(f"{os.path.basename(archive)} is a backup of the database {source}, not of "
                          f"{p['database']}: its drill would prove nothing of {p['database']}'s backups")


def check_room(p: dict, drill: Drill, archive: str) -> None:
    """Refuses a drill that would fill a filesystem: PostgreSQL's (the scratch database is a copy of
    O(database)), and above O(jobs=1) the work folder's (the dump is unpacked there)."""
    why = room_for_copy(drill.env, (drill.uid, drill.gid), p["database"])
    if not why and p["jobs"] > 1:
        why = room_for_dump(archive, p["work_dir"] or os.path.dirname(archive))
    if why:
        raise DrillFailed(f"{why}: the drill did not start")


def scratch_name(database: str, now: float) -> str:
    """drill_<db>_<UTC time>_<8 random hex digits>, within PostgreSQL's 63 bytes: the time and the random
    part make a collision with another drill or a real database practically impossible, and CREATE
    DATABASE fails rather than reuse a name that exists."""
    return _scratch_prefix(database) + "_" + time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + "_" + secrets.token_hex(4)


SCRATCH_SUFFIX = r"_\d{8}T\d{6}_[0-9a-f]{8}"  # what scratch_name adds to the prefix: 25 characters


def _scratch_prefix(database: str) -> str:
    base = "".join(c if c.isalnum() or c == "_" else "_" for c in database.lower())
    return "drill_" + base[: 63 - len("drill_") - 25]


def compare(manifest: dict, restored: dict) -> tuple[list[dict], list[str]]:
    """Table by table: rows and checksum in the manifest against the restored database."""
    rows, differences = [], []
    for name in sorted(set(manifest) | set(restored)):
        want, got = manifest.get(name), restored.get(name)
        entry = {"table": name, "manifest_rows": want["rows"] if want else None,
                 "restored_rows": got["rows"] if got else None, "checksum": "", "result": "ok"}
        if want is None:
            entry.update(checksum="-", result="not in the manifest")
            differences.append(f"table {name} is in the restore but not in the manifest")
        elif got is None:
            entry.update(checksum="-", result="missing")
            differences.append(f"table {name} ({want['rows']} rows in the manifest) is missing from the restore")
        else:
            same = want["checksum"] == got["checksum"]
            entry["checksum"] = "same" if same else "differs"
            if want["rows"] != got["rows"]:
                entry["result"] = "rows differ"
                differences.append(f"table {name}: {got['rows']} rows restored, {want['rows']} in the manifest")
            elif not same:
                entry["result"] = "content differs"
                differences.append(f"table {name}: same row count ({got['rows']}) but its content checksum differs "
                                   f"({got['checksum']}, manifest {want['checksum']})")
        rows.append(entry)
    return rows, differences


def render(result: dict) -> list[str]:
    head = (f"restore drill of {result['archive'] or '?'} into {result['scratch_database']}: "
            f"{'PASS' if result['passed'] else 'FAIL'} ({result['duration_seconds']:.1f} s)")
    table = [("table", "rows (manifest)", "rows (restored)", "checksum", "result")]
    for t in result["tables"]:
        table.append((t["table"], "-" if t["manifest_rows"] is None else str(t["manifest_rows"]),
                      "-" if t["restored_rows"] is None else str(t["restored_rows"]), t["checksum"], t["result"]))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = [head]
    if result["tables"]:
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    lines += [f"differs: {d}" for d in result["differences"]]
    if result.get("leftovers_dropped"):
        lines.append("dropped the scratch databases of earlier drills that were killed: "
                     + ", ".join(result["leftovers_dropped"]))
    return lines


class Drill:
    def __init__(self, module: AnsibleModule):
        self.module = module
        p = module.params
        self.p = p
        self.uid, self.gid, self.env = as_os_user(p["os_user"], p["port"], p["host"])

    def pg(self, argv: list[str], what: str, input: str | None = None) -> str:
        res = subprocess.run(argv, input=input, capture_output=True, text=True, env=self.env, cwd="/",
                             preexec_fn=drop_to(self.uid, self.gid))
        if res.returncode != 0:
            raise DrillFailed(f"{what}: {tail(res.stderr)}")
        return res.stdout

    def stats_sql(self, manifest: dict) -> str:
        """The SQL that computes the checksum the manifest holds: the given one, or the first checksum's
        for a manifest that names none (taken before backups recorded it)."""
        want = manifest.get("table_checksum", LEGACY_CHECKSUM)
        if checksum_kind(self.p["table_stats_sql"]) == want:
            return self.p["table_stats_sql"]
        if want == LEGACY_CHECKSUM:
            return LEGACY_TABLE_STATS_SQL
        raise DrillFailed(f"the manifest's table checksums are {want}, this drill's table_stats_sql computes "
                          f"{checksum_kind(self.p['table_stats_sql'])}: use the block's files/table_stats.sql")

    def table_stats(self, database: str, sql: str | None = None) -> dict:
        out = self.pg(["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-d", database],
                      "the table statistics of the restore",
                      input=f"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n{sql or self.p['table_stats_sql']}\nCOMMIT;\n")
        stats = {}
        for line in out.splitlines():
            name, rows, checksum = line.split("\t")
            stats[name] = {"rows": int(rows), "checksum": checksum}
        return stats

    def unpack(self, real: str, work: str) -> tuple[dict, str]:
        """The archive verified and its dump unpacked into `work` (module_utils/lm_archive.py's unpack),
        and a manifest that lists the tables the drill compares."""
        name = os.path.basename(real)
        manifest, dump_path = unpack(real, work, (self.uid, self.gid) if os.geteuid() == 0 else None, DrillFailed,
                                     name)
        return self.with_tables(manifest, name), dump_path

    def verify(self, real: str) -> dict:
        """The archive verified as unpack does, its dump read and checked but written nowhere (check mode)."""
        name = os.path.basename(real)
        return self.with_tables(verify(real, DrillFailed, name), name)

    def stream(self, real: str, scratch: str) -> dict:
        """The archive verified while its dump streams into pg_restore, loading `scratch` (module_utils/
        lm_archive.py's stream_restore); the manifest."""
        name = os.path.basename(real)
        argv = ["pg_restore", "--exit-on-error", "-d", scratch]
        manifest = stream_restore(real, lambda **kw: subprocess.Popen(argv, env=self.env, cwd="/",
                                                                      preexec_fn=drop_to(self.uid, self.gid), **kw),
                                  DrillFailed, name)
        return self.with_tables(manifest, name)

    @staticmethod
    def with_tables(manifest: dict, name: str) -> dict:
        if "tables" not in manifest:
            raise DrillFailed(f"archive {name}: its manifest lists no tables (taken before the block recorded "
                              "them): run the backup action, then the drill")
        return manifest


def record(p: dict, result: dict) -> None:
    os.makedirs(p["record_dir"], mode=0o750, exist_ok=True)

    def write(path: str, text: str, mode: int) -> None:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".drill-")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)

    text = json.dumps(result, indent=2) + "\n"
    write(os.path.join(p["record_dir"], "last.json"), text, 0o640)
    if result["passed"]:
        write(os.path.join(p["record_dir"], "last-pass.json"), text, 0o640)
    with open(os.path.join(p["record_dir"], "history.jsonl"), "a") as f:
        f.write(json.dumps({k: result[k] for k in ("archive", "passed", "started", "finished_epoch",
                                                    "duration_seconds", "differences")}) + "\n")
    if p["metrics_file"]:
        last_pass = result["finished_epoch"] if result["passed"] else 0.0
        if not result["passed"]:
            try:
                with open(os.path.join(p["record_dir"], "last-pass.json")) as f:
                    last_pass = float(json.load(f)["finished_epoch"])
            except (OSError, ValueError, KeyError):
                pass
        label = '{database="%s"}' % p["database"].replace("\\", "\\\\").replace('"', '\\"')
        metrics = [
            ("last_run_timestamp_seconds", "Unix time the last restore drill ended.", result["finished_epoch"]),
            ("last_success_timestamp_seconds", "Unix time the last passing restore drill ended (0: never).", last_pass),
            ("last_passed", "1 when the last restore drill passed, else 0.", 1 if result["passed"] else 0),
            ("last_duration_seconds", "Duration of the last restore drill.", result["duration_seconds"]),
            ("last_tables", "Tables compared by the last restore drill.", len(result["tables"])),
        ]
        lines = []
        for name, help_text, value in metrics:
            metric = f"linux_maintenance_restore_drill_{name}"
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge", f"{metric}{label} {value}"]
        os.makedirs(os.path.dirname(p["metrics_file"]), mode=0o755, exist_ok=True)
        write(p["metrics_file"], "\n".join(lines) + "\n", 0o644)


def stopped(signum: int, frame: object) -> None:
    raise DrillFailed(f"stopped by signal {signum}")


def run_module() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            archive=dict(type="path", required=True),
            database=dict(type="str", required=True),
            host=dict(type="str", default=""),
            port=dict(type="int", default=5432),
            os_user=dict(type="str", default="postgres"),
            jobs=dict(type="int", default=1),
            table_stats_sql=dict(type="str", required=True),
            record_dir=dict(type="path", required=True),
            metrics_file=dict(type="path", default=""),
            work_dir=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    # a stopped run (ansible's timeout, a stopped workflow) still drops the scratch database
    on_stop(stopped)
    started = time.time()
    drill = Drill(module)
    scratch = scratch_name(p["database"], started)
    real = os.path.realpath(p["archive"])
    result = {"archive": os.path.basename(real), "archive_path": real, "database": p["database"],
              "scratch_database": scratch, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
              "passed": False, "tables": [], "differences": []}
    created = False
    work = ""
    manifest = None
    try:
        if not os.path.isfile(real):
            raise DrillFailed(f"no archive at {p['archive']}: run the backup action first")
        check_source(sidecar_manifest(real), p, real)  # at once, rather than after restoring it
        if module.check_mode:  # the one read a drill makes, every check, the dump going nowhere
            check_room(p, drill, real)
            manifest = drill.verify(real)
            check_source(manifest, p, real)
        else:
            # the scratch databases of drills killed before they could drop theirs
            result["leftovers_dropped"] = drop_leftovers(drill.env, (drill.uid, drill.gid),
                                                         re.escape(_scratch_prefix(p["database"])) + SCRATCH_SUFFIX)
            check_room(p, drill, real)
            if p["jobs"] <= 1:  # the dump streams from the archive's one read into pg_restore
                drill.pg(["createdb", "-T", "template0", scratch], f"createdb {scratch}")
                created = True
                manifest = drill.stream(real, scratch)
            else:  # pg_restore -j reads a file: the dump is unpacked, and verified, before anything is restored
                work = tempfile.mkdtemp(prefix=".drill-", dir=p["work_dir"] or os.path.dirname(real))
                if os.geteuid() == 0:
                    os.chown(work, drill.uid, drill.gid)
                manifest, dump = drill.unpack(real, work)
                drill.pg(["createdb", "-T", "template0", scratch], f"createdb {scratch}")
                created = True
                drill.pg(["pg_restore", "--exit-on-error", "-j", str(p["jobs"]), "-d", scratch, dump],
                         f"pg_restore of {result['archive']} into {scratch}")
            check_source(manifest, p, real)
            tables, differences = compare(manifest["tables"], drill.table_stats(scratch, drill.stats_sql(manifest)))
            result.update(tables=tables, differences=differences)
    except DrillFailed as exc:
        result["differences"].append(str(exc))
    finally:
        if work:
            shutil.rmtree(work, ignore_errors=True)
        if created:
            try:
                drill.pg(["dropdb", "--if-exists", "--force", scratch], f"dropdb {scratch}")
            except DrillFailed as exc:
                result["differences"].append(f"{exc} (drop it by hand)")
    if manifest is not None:
        result["manifest_created"] = manifest.get("created")
    finished = time.time()
    result.update(passed=not result["differences"], finished_epoch=round(finished, 3),
                  duration_seconds=round(finished - started, 2))
    if module.check_mode:
        result["report"] = [f"check mode: {result['archive']} verifies against its .sha256 and manifest; would restore "
                            f"it into {scratch}" if result["passed"] else f"check mode: {'; '.join(result['differences'])}"]
        module.exit_json(changed=False, **result)
    result["report"] = render(result)
    record(p, result)
    module.exit_json(changed=True, **result)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
