#!/usr/bin/python
# -*- coding: utf-8 -*-
# linux-maintenance block: the backup (backup action).
from __future__ import annotations

DOCUMENTATION = r"""
---
module: pg_archive
short_description: Back up a PostgreSQL database into a verified archive, upload it with rclone, prune old ones
description:
  - "Dump and pack, one pass: C(pg_dump) (custom format) streams through SHA-256 and one gzip pass straight into
    C(<database>-<UTC time>.tar.gz) in a private work folder inside O(backup_dir). No uncompressed dump and no
    second copy land on disk. The archive is an ordinary gzip'd tar (C(tar -xzf) reads it) holding the dump and
    C(manifest.json) (database, time, size and SHA-256 of the dump, server version and, with O(table_stats_sql),
    every table's row count and content checksum computed in the dump's own snapshot: the restore drill's reference)."
  - "Verify and upload at the same time: the upload to O(remote) starts as soon as the archive is written, while
    one read checks it end to end (O(verify)). If the check fails the upload is stopped and the remote copy deleted."
  - "Publish: only after the check passed are the archive and its sidecars (C(.sha256), C(.manifest.json)) renamed
    into O(backup_dir) and C(latest.tar.gz) moved with one rename, so it never points at a partial or unverified file."
  - "Remote check and retention: one C(rclone lsjson --hash) of the destination; the remote copy's size and MD5 must
    equal the local file's; archives beyond O(keep_remote) are deleted there with their sidecars, and locally beyond
    O(keep_local) (never the one C(latest.tar.gz) points at)."
  - "Room first: before anything runs, the newest archive of O(database) in O(backup_dir) tells how much the new one
    will need (its size, a tenth more for growth, twice that with O(recipients): the encrypted copy is written beside
    it). When the folder's filesystem has less free, the backup fails at once naming both figures, instead of filling
    a filesystem it may share with PostgreSQL itself. Without an earlier archive there is nothing to go by; a
    filesystem that fills up anyway fails the backup cleanly (the partial archive removed)."
  - "Runs as root on the database host; C(pg_dump) runs as O(owner), who owns the backups. The password comes from
    the environment (C(PGPASSWORD)) or C(~/.pgpass), never from a module option, so it is never logged."
options:
  database:
    description: The database to back up.
    type: str
    required: true
  login_host:
    description: Where C(pg_dump) connects (C(-h)).
    type: str
    default: localhost
  port:
    description: PostgreSQL port.
    type: int
    default: 5432
  login_user:
    description: The database role C(pg_dump) connects as (C(-U)).
    type: str
    required: true
  backup_dir:
    description: Archives, sidecars and C(latest.tar.gz) (created when missing).
    type: path
    required: true
  name:
    description: The archive's name without C(.tar.gz); default C(<database>-<UTC time>) by this host's clock.
    type: str
    default: ""
  inventory_host:
    description: Recorded in the manifest as the host the backup was taken on.
    type: str
    default: ""
  compressor:
    description: C(auto) uses igzip (Debian/Ubuntu package C(isal), about a quarter of zlib's CPU) when installed, else Python's zlib.
    type: str
    choices: [auto, igzip, zlib]
    default: auto
  level:
    description: gzip level of the archive (zlib 1-9, igzip 0-3).
    type: int
    default: 1
  dump_compression:
    description: C(pg_dump -Z) inside the archive (0 lets the archive's gzip compress once).
    type: int
    default: 0
  owner:
    description: The operating system user that runs C(pg_dump) and owns the backups.
    type: str
    default: postgres
  remote:
    description: rclone destination (C(remote:bucket/prefix)); empty for no upload.
    type: str
    default: ""
  rclone_config:
    description: rclone.conf to use; empty for rclone's default.
    type: path
    default: ""
  upload_cutoff:
    description:
      - S3 remotes, archives up to this size go up in one PUT, so the remote check compares the MD5 the server
        computed; larger ones go up in rclone's multipart upload. Empty for rclone's own setting.
    type: str
    default: 5G
  recipients:
    description: age recipients; when given, the uploaded copy is C(<archive>.age) (the local copy stays plain).
    type: list
    elements: str
    default: []
  keep_local:
    description: Newest archives kept in O(backup_dir) (0 keeps all).
    type: int
    default: 0
  keep_remote:
    description: Newest archives kept at O(remote) (0 keeps all).
    type: int
    default: 0
  verify:
    description:
      - C(full) inflates the whole archive (C(igzip -t) with igzip, else the inflated stream is compared with the tar
        that was written) and checks its structure; C(structure) checks checksums and the gzip/tar structure without
        inflating the dump.
    type: str
    choices: [full, structure]
    default: full
  lock_wait_timeout:
    description:
      - How long C(pg_dump) waits for its lock on each table (C(--lock-wait-timeout)), as PostgreSQL reads a time
        (C(15min), C(90s), C(500ms)). A table another session holds locked for longer (a migration, a
        C(VACUUM FULL)) fails the backup, naming the table and the session that holds it, instead of a backup
        that hangs. C(0) waits as long as it takes, as C(pg_dump) does by default.
    type: str
    default: 15min
  table_stats_sql:
    description:
      - SQL listing every table's rows and content checksum (the block's C(files/table_stats.sql)), run in the snapshot
        C(pg_dump) dumps; the result goes into the manifest under C(tables). Empty for none.
    type: str
    default: ""
notes:
  - In check mode nothing is dumped or written; the module connects (C(show server_version)) and reports the archive
    name and compressor it would use.
  - Imports the block's C(module_utils/lm_archive.py); Ansible finds it beside the block's playbooks.
author: linux-maintenance block
"""

EXAMPLES = r"""
- name: Back up acme_app, upload it to S3, keep 7 archives here and 30 there
  pg_archive:
    database: acme_app
    login_user: acme
    backup_dir: /var/backups/acme-db
    remote: "acme-s3:acme-backups-db/postgres"
    keep_local: 7
    keep_remote: 30
    table_stats_sql: "{{ lookup('ansible.builtin.file', 'table_stats.sql') }}"
  environment:
    PGPASSWORD: "{{ pg_password }}"
  register: backup

- name: Report it
  ansible.builtin.debug:
    msg: "{{ backup.archive }}: {{ backup.archive_size }} bytes, {{ backup.seconds.total }} s"
"""

RETURN = r"""
archive:
  description: The archive's file name in O(backup_dir) (C(latest.tar.gz) points at it).
  returned: always
  type: str
  sample: acme_app-20261206T020000Z.tar.gz
compressor:
  description: The compressor used (igzip or zlib).
  returned: always
  type: str
archive_size:
  description: The archive's size in bytes.
  returned: success
  type: int
sha256:
  description: The archive's SHA-256 (also in its C(.sha256)).
  returned: success
  type: str
md5:
  description: The archive's MD5 (what the remote check compares).
  returned: success
  type: str
dump_size:
  description: Bytes of the dump inside the archive.
  returned: success
  type: int
dump_sha256:
  description: SHA-256 of the dump inside the archive (also in the manifest).
  returned: success
  type: str
tables:
  description: Tables recorded in the manifest (with O(table_stats_sql)).
  returned: success
  type: int
remote:
  description: The uploaded copy as the remote lists it (name, size, md5).
  returned: when O(remote) is set
  type: dict
remote_deleted:
  description: Archives deleted at the remote by retention.
  returned: when O(remote) is set
  type: list
  elements: str
local_deleted:
  description: Archives deleted in O(backup_dir) by retention.
  returned: success
  type: list
  elements: str
seconds:
  description: Seconds per phase (dump_and_pack, check, publish, upload, ..., total).
  returned: success
  type: dict
server_version:
  description: In check mode, the server's version.
  returned: check mode
  type: str
"""

# How it works, in detail:
# The whole backup in one remote task: dump, pack, verify, upload, check the remote copy, prune.
#
# Runs on the db host as root, as one module call (one SSH round trip instead of one per task).
# pg_dump runs as the postgres user; the files it makes belong to postgres.
#
# 1. **Dump and pack, one pass.** pg_dump's output (custom format) is hashed (SHA-256 of the dump,
#    for the manifest) and gzip-compressed straight into ``<name>.tar.gz`` in a private work folder;
#    no uncompressed dump and no second copy ever lands on disk, so the extra disk a backup needs is
#    the compressed archive itself (and, with age encryption, its encrypted copy while it uploads).
#    The archive is an ordinary gzip'd tar (``tar -xzf`` reads it; members: the dump, then
#    manifest.json). A tar header carries its member's size, which a stream does not know in
#    advance: the dump's header is written first as its own *stored* gzip member (a fixed length
#    whatever its content) and rewritten in place once the dump has ended.
# 2. **Verify and upload at the same time.** The upload of the archive starts as soon as it is
#    written; meanwhile one read checks it end to end: its SHA-256 and MD5 (for the .sha256 sidecar
#    and the remote check), and its decompressed content, which must be exactly the tar we meant
#    (every gzip member's CRC-32 and length, the tar header checksums, the dump of the size we
#    wrote, the manifest byte for byte). If the check fails, the upload is stopped and the remote
#    copy deleted.
# 3. **Publish.** Only after the check passed are the archive and its sidecars (.sha256,
#    .manifest.json) renamed into the backup folder and ``latest.tar.gz`` moved with one rename, so
#    it never points at a partial or unverified file; the sidecars are uploaded.
# 4. **Remote check and retention, one listing.** One ``rclone lsjson --hash`` of the destination:
#    the remote copy's size and MD5 must equal the local file's; the same listing gives the remote
#    archives beyond ``keep_remote`` (deleted with their sidecars in one call); then local
#    retention (never the archive latest points at).
#
# Returns sizes, checksums and seconds per phase; fails with one sentence when anything fails.

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
import zlib
from types import SimpleNamespace
from typing import NoReturn

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.lm_archive import MIB, big_pipe, drop_to, free_bytes, on_stop, quote_literal, tail

CHUNK = 1 << 20
BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE


class BackupFailed(Exception):
    """The backup failed; the message says where and why."""


def gzip_member(data: bytes, level: int) -> bytes:
    comp = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: gzip wrapper
    return comp.compress(data) + comp.flush()


def tar_header(name: str, size: int, mtime: int, mode: int = 0o640) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, mode
    info.uname = info.gname = "postgres"
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    assert len(header) == BLOCK, "member names are short: one header block"
    return header


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Owner:
    """The user the database tools run as and the backups belong to (postgres)."""

    def __init__(self, name: str):
        import pwd

        entry = pwd.getpwnam(name)
        self.uid, self.gid, self.home = entry.pw_uid, entry.pw_gid, entry.pw_dir
        self.env = {**os.environ, "HOME": entry.pw_dir, "USER": name, "LOGNAME": name}

    def preexec(self):
        return drop_to(self.uid, self.gid)

    def chown(self, path: str) -> None:
        if os.geteuid() == 0:
            os.chown(path, self.uid, self.gid)


def server_version(args, owner: Owner) -> str:
    res = subprocess.run(["psql", "-h", args.host, "-p", str(args.port), "-U", args.user, "-d", args.db,
                          "-tAc", "show server_version"], capture_output=True, text=True, check=True,
                         env=owner.env, preexec_fn=owner.preexec(), cwd="/")
    return res.stdout.strip()


LOCKED = re.compile(r"(?:statement|lock) timeout.*?Query was: LOCK TABLE (\S+) IN ACCESS SHARE MODE", re.S)


def pg_dump_failed(args, owner: Owner, code: int, stderr: str, wait: str) -> str:
    """Why pg_dump failed, in one sentence: its own last lines; for a lock it waited for in vain, the
    sessions that hold it (pid, role, since when, what they run), asked of PostgreSQL then."""
    locked = LOCKED.search(stderr)
    if not locked:
        return f"backup failed: pg_dump exited with status {code}: {tail(stderr)}"
    table = locked.group(1)
    sql = ("SELECT string_agg(format('pid %s (%s, %s since %s: %s)', a.pid, a.usename, a.state, "
           "to_char(a.xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS UTC'), "
           r"left(regexp_replace(a.query, '\s+', ' ', 'g'), 80)), '; ' ORDER BY a.pid) "
           "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
           f"WHERE l.relation = {quote_literal(table)}::regclass AND l.granted "
           "AND l.mode = 'AccessExclusiveLock'")
    res = subprocess.run(psql_argv(args) + ["-c", sql], capture_output=True, text=True, env=owner.env,
                         preexec_fn=owner.preexec(), cwd="/")
    holders = res.stdout.strip() if res.returncode == 0 else ""
    return (f"backup failed: pg_dump waited {wait} for its lock on {table} and gave up: "
            + (f"held by {holders}" if holders else "another session held it (it has let go since)")
            + "; nothing was published or pruned")


def find_igzip(choice: str) -> str | None:
    """igzip (Debian/Ubuntu package isal: Intel's ISA-L deflate, about four times less CPU than zlib at
    level 1 for a smaller archive, and a standard gzip stream), or None for Python's zlib."""
    if choice == "zlib":
        return None
    path = shutil.which("igzip")
    if path is None and choice == "igzip":
        raise BackupFailed("backup failed: archive_compressor is igzip but igzip is not installed on this host "
                         "(Debian/Ubuntu package isal)")
    return path


def pack_stream(source, out, level: int, igzip: str | None, crc_on: bool) -> dict:
    """The data member: every byte read from `source` (pg_dump's stdout) hashed (SHA-256, for the
    manifest; CRC-32 when `crc_on`) and compressed into `out` as one gzip member, with the tar padding
    of the dump inside it. igzip (when given) compresses in its own process, writing straight into the
    archive's file descriptor, so hashing here and compressing there run on two cores at once."""
    dump_sha = hashlib.sha256()
    size = crc = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    read = source.readinto
    comp = proc = None
    if igzip:
        out.flush()
        start = out.seek(0, os.SEEK_END)
        proc = subprocess.Popen([igzip, f"-{max(0, min(level, 3))}", "-c", "-n"], stdin=subprocess.PIPE,
                                stdout=out.fileno(), stderr=subprocess.PIPE, cwd="/")
        big_pipe(proc.stdin)
        write = proc.stdin.write
    else:
        start = 0
        comp = zlib.compressobj(level, zlib.DEFLATED, 31)
        data_len = 0

        def write(chunk):
            nonlocal data_len
            data_len += out.write(comp.compress(chunk))
    try:
        while True:
            n = read(buf)
            if not n:
                break
            chunk = view[:n]
            dump_sha.update(chunk)
            if crc_on:
                crc = zlib.crc32(chunk, crc)
            size += n
            write(chunk)
        pad = (-size) % BLOCK
        if crc_on:
            crc = zlib.crc32(b"\0" * pad, crc)
        write(b"\0" * pad)
    except BrokenPipeError:
        pass  # the compressor died: its status says why
    finally:
        if proc is not None:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
            err = proc.stderr.read().decode(errors="replace")
            if proc.wait() != 0:
                raise BackupFailed(no_space(out.name)
                                   or f"backup failed: igzip exited with status {proc.returncode}: {tail(err)}")
    if proc is not None:
        data_len = out.seek(0, os.SEEK_END) - start
    else:
        data_len += out.write(comp.flush())
    return {"size": size, "pad": pad, "sha256": dump_sha.hexdigest(), "crc": crc, "data_len": data_len}


class Snapshot:
    """A read-only transaction held open in psql with its snapshot exported: pg_dump dumps that snapshot
    (--snapshot) and the table statistics are computed in it too, so the manifest's row counts and
    checksums describe exactly the rows in the dump, whatever is written meanwhile."""

    def __init__(self, args, owner: Owner):
        self.proc = subprocess.Popen(psql_argv(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=owner.env, preexec_fn=owner.preexec(),
                                     cwd="/")
        self.proc.stdin.write("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSELECT pg_export_snapshot();\n")
        self.proc.stdin.flush()
        self.id = self.proc.stdout.readline().strip()
        if not self.id:
            self.close()
            raise BackupFailed(f"backup failed: psql could not export a snapshot: {tail(self.proc.stderr.read())}")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("COMMIT;\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            self.proc.wait()


def psql_argv(args, database: str | None = None) -> list[str]:
    return ["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-h", args.host, "-p", str(args.port),
            "-U", args.user, "-d", database or args.db]


class TableStats(threading.Thread):
    """Every table's row count and content checksum (files/table_stats.sql), computed by PostgreSQL in
    the snapshot pg_dump dumps, while it dumps."""

    def __init__(self, args, owner: Owner, snapshot: str, sql: str):
        super().__init__(daemon=True)
        self.argv, self.owner = psql_argv(args), owner
        self.script = (f"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSET TRANSACTION SNAPSHOT '{snapshot}';\n"
                       f"{sql}\nCOMMIT;\n")
        self.tables: dict = {}
        self.error = ""
        # psql starts here, before the thread: the backup can cancel it (SIGINT) whatever the thread has reached
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=self.owner.env, preexec_fn=self.owner.preexec(), cwd="/")

    def run(self) -> None:
        out, err = self.proc.communicate(self.script)
        if self.proc.returncode != 0:
            self.error = tail(err)
            return
        for line in out.splitlines():
            name, rows, checksum = line.split("\t")
            self.tables[name] = {"rows": int(rows), "checksum": checksum}


def write_archive(args, work: str, dump_name: str, owner: Owner, crc_on: bool = False,
                  igzip: str | None = None) -> dict:
    """pg_dump (custom format) packed into the archive in the work folder (pack_archive); with
    --table-stats-sql, the manifest lists every table's rows and checksum in the dump's snapshot."""
    snapshot = Snapshot(args, owner) if args.table_stats_sql else None
    try:
        return _write_archive(args, work, dump_name, owner, crc_on, igzip, snapshot)
    finally:
        if snapshot is not None:
            snapshot.close()


def _write_archive(args, work: str, dump_name: str, owner: Owner, crc_on: bool, igzip: str | None,
                   snapshot: Snapshot | None) -> dict:
    wait = args.lock_wait_timeout  # "": as long as it takes, pg_dump's own default
    cmd = ["pg_dump", "-h", args.host, "-p", str(args.port), "-U", args.user, "-F", "c",
           "-Z", str(args.dump_compression), *([f"--snapshot={snapshot.id}"] if snapshot else []),
           *([f"--lock-wait-timeout={wait}"] if wait else []), args.db]
    errors = tempfile.TemporaryFile()  # closed with the function's frame: pg_dump's reason, when it fails
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, bufsize=0, env=owner.env,
                            preexec_fn=owner.preexec(), cwd="/")
    stats = None
    if snapshot is not None:
        stats = TableStats(args, owner, snapshot.id, args.table_stats_sql)
        stats.start()

    def describe(size: int, sha256: str) -> dict:
        proc.stdout.close()
        code = proc.wait()
        if code != 0:
            errors.seek(0)
            raise BackupFailed(pg_dump_failed(args, owner, code, errors.read().decode(errors="replace"), wait))
        extra = {}
        if stats is not None:
            stats.join()
            if stats.error:
                raise BackupFailed(f"backup failed: the table statistics: {stats.error}")
            extra = {"tables": stats.tables}
            kind = re.match(r"^--\s*table_checksum:\s*(\S+)", args.table_stats_sql.lstrip())
            if kind:  # which checksum the drill must compute (none named: the first one, md5 of each row's text)
                extra["table_checksum"] = kind.group(1)
        return {
            "database": args.db,
            "name": args.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": args.inventory_host,
            "format": "pg_dump custom",
            "dump_file": dump_name,
            "size": size,
            "sha256": sha256,
            "server_version": server_version(args, owner),
            **extra,
        }

    big_pipe(proc.stdout)
    try:
        return pack_archive(os.path.join(work, "archive.tar.gz"), proc.stdout, dump_name, describe,
                            level=args.level, igzip=igzip, crc_on=crc_on)
    finally:
        # still running: the backup failed or was stopped. SIGINT makes pg_dump and psql cancel their query
        # in PostgreSQL (a query waiting for a lock would wait on without its client), then exit
        for tool in (proc, stats.proc if stats is not None else None):
            if tool is not None and tool.poll() is None:
                tool.send_signal(signal.SIGINT)
        if proc.poll() is None or not proc.stdout.closed:
            proc.stdout.close()
            proc.wait()
        if stats is not None:
            stats.join()


def pack_archive(path: str, source, dump_name: str, describe, level: int = 1, igzip: str | None = None,
                 crc_on: bool = False) -> dict:
    """The archive at `path`: the dump read from `source` and the manifest `describe(size, sha256)`
    returns once the dump has ended. Returns the manifest and where the archive's gzip members lie
    (with the CRC-32 of the data member's input when `crc_on`, for check_structure)."""
    try:
        return _pack_archive(path, source, dump_name, describe, level, igzip, crc_on)
    except OSError as exc:  # zlib's writes here (igzip's are its own: pack_stream)
        if exc.errno != errno.ENOSPC:
            raise
        raise BackupFailed(no_space(path) or f"backup failed: writing {path}: {exc.strerror}") from None


def room_needed(backup_dir: str, db: str, encrypted: bool) -> tuple[str, int, int]:
    """The newest archive of `db` in `backup_dir`, its size, and the bytes a new backup is expected to need beside
    it: that size and a tenth for growth (twice that when an encrypted copy is written too); ('', 0, 0) without
    one."""
    try:
        names = local_archives(backup_dir, db)
    except OSError:
        return "", 0, 0
    for name in names:
        try:
            size = os.path.getsize(os.path.join(backup_dir, name))
        except OSError:
            continue
        return name, size, int(size * 1.1) * (2 if encrypted else 1)
    return "", 0, 0


def check_room(backup_dir: str, db: str, encrypted: bool) -> None:
    """Fails the backup before anything runs when the filesystem of `backup_dir` has less room than
    room_needed() expects."""
    last, size, need = room_needed(backup_dir, db, encrypted)
    free = free_bytes(backup_dir)
    if not need or free is None or free >= need:
        return
    raise BackupFailed(
        f"backup failed: not enough room in {backup_dir}: {free / MIB:.1f} MiB free on its filesystem, and the last "
        f"archive ({last}) took {size / MIB:.1f} MiB" + (", twice that with the encrypted copy" if encrypted else "")
        + f", so about {need / MIB:.1f} MiB are needed; nothing was dumped (make room: keep_local prunes only after "
        "a backup succeeded)")


def no_space(path: str) -> str:
    """The failure, when writing `path` (the archive in its work folder) failed because its filesystem is
    full; else ''. The work folder is removed afterwards, so the backup folder has the space it had."""
    try:
        st = os.statvfs(path)
        written = os.path.getsize(path)
    except OSError:
        return ""
    if st.f_bavail * st.f_frsize >= 4 * CHUNK:
        return ""
    mib = 1 << 20
    return (f"backup failed: no space left on the filesystem of {os.path.dirname(os.path.dirname(path))} "
            f"({st.f_blocks * st.f_frsize // mib} MiB): the archive had reached {written // mib} MiB when it filled "
            "up; the partial archive is removed, nothing was published or pruned")


def _pack_archive(path: str, source, dump_name: str, describe, level: int, igzip: str | None, crc_on: bool) -> dict:
    started = int(time.time())
    with open(path, "xb") as out:
        placeholder = gzip_member(tar_header(dump_name, 0, started), 0)
        out.write(placeholder)
        packed = pack_stream(source, out, level, igzip, crc_on)
        size, pad = packed["size"], packed["pad"]
        manifest = describe(size, packed["sha256"])
        text = (json.dumps(manifest, indent=4) + "\n").encode()
        tail_ = tar_header("manifest.json", len(text), int(time.time())) + text + b"\0" * ((-len(text)) % BLOCK)
        tail_ += b"\0" * (2 * BLOCK)  # end of archive
        total = BLOCK + size + pad + len(tail_)  # the uncompressed tar, padded to whole records
        tail_ += b"\0" * ((-total) % RECORD)
        out.write(gzip_member(tail_, min(max(level, 1), 9)))
        # the dump's real header, in place of the placeholder: same length (stored deflate block)
        tar_head = tar_header(dump_name, size, started)
        header = gzip_member(tar_head, 0)
        if len(header) != len(placeholder):
            raise BackupFailed("internal error: the tar header member changed length")
        out.seek(0)
        out.write(header)
        out.flush()
        os.fsync(out.fileno())
    return {"path": path, "manifest": manifest, "text": text,
            "layout": {"header": header, "tar_header": tar_head, "data_end": len(header) + packed["data_len"],
                       "crc": packed["crc"], "isize": (size + pad) & 0xFFFFFFFF, "pad": pad, "tail": tail_}}


def check_structure(path: str, dump_name: str, written: dict) -> dict:
    """The cheaper check (verify: structure): the archive's SHA-256 and MD5 (one read, two threads),
    and its structure without inflating the dump: the first gzip member is the dump's tar header (its
    checksum, name and size), the data member ends where we wrote it and its gzip trailer carries the
    CRC-32 and length of exactly the bytes we fed the compressor (computed independently while
    writing), and the last member inflates to the manifest and the end of the tar, byte for byte.
    Not checked here: that the deflate stream of the dump decodes (the restore inflates it and checks
    the dump's SHA-256 before it drops anything)."""
    import struct
    import threading

    lay = written["layout"]
    sums: dict = {}
    hasher = threading.Thread(target=_hash_file, args=(path, sums))
    hasher.start()
    try:
        with open(path, "rb") as f:
            head = f.read(len(lay["header"]))
            f.seek(lay["data_end"] - 8)
            trailer = f.read(8)
            rest = f.read()
        try:
            info = tarfile.TarInfo.frombuf(zlib.decompress(head, 31), "utf-8", "surrogateescape")
            tail = zlib.decompressobj(31)
            tail_data = tail.decompress(rest)
        except (zlib.error, tarfile.TarError) as exc:
            raise BackupFailed(f"the archive does not verify: {exc}") from None
        size = int(written["manifest"]["size"])
        if info.name != dump_name or info.size != size:
            raise BackupFailed(f"the archive does not verify: its first member is {info.name} of {info.size} bytes")
        if struct.unpack("<II", trailer) != (lay["crc"], lay["isize"]):
            raise BackupFailed("the archive does not verify: the dump's gzip trailer (CRC-32, length) does not match "
                             "what was written")
        if tail_data != lay["tail"] or not tail.eof or tail.unused_data:
            raise BackupFailed("the archive does not verify: the manifest member does not match what was written")
    finally:
        hasher.join()
    return {**sums, "archive_size": os.path.getsize(path)}


def _hash_file(path: str, out: dict) -> None:
    """The file's SHA-256 and MD5, each read by its own thread: hashlib lets go of the GIL, so on two cores
    the two hashes take the time of the slower one (MD5) instead of their sum."""

    def one(name: str, h) -> None:
        with open(path, "rb", buffering=0) as f:
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while n := f.readinto(buf):
                h.update(view[:n])
        out[name] = h.hexdigest()

    other = threading.Thread(target=one, args=("md5", hashlib.md5()))
    other.start()
    try:
        one("sha256", hashlib.sha256())
    finally:
        other.join()
    if "md5" not in out:
        raise BackupFailed(f"the archive could not be read back: {path}")


class Expected:
    """The uncompressed tar the archive must be, compared as it streams by: exactly the dump's tar
    header, then `size` bytes whose SHA-256 must be the manifest's, then exactly the padding, the
    manifest member and the end of the tar; nothing more."""

    def __init__(self, head: bytes, size: int, after: bytes):
        self.head, self.size, self.after = head, size, after
        self.pos = 0
        self.sha = hashlib.sha256()

    def feed(self, data) -> None:
        data = memoryview(data)
        head, size = len(self.head), len(self.head) + self.size
        while len(data):
            if self.pos < head:
                take = min(head - self.pos, len(data))
                if data[:take] != self.head[self.pos:self.pos + take]:
                    raise BackupFailed("the archive does not verify: the dump's tar header differs from what was written")
            elif self.pos < size:
                take = min(size - self.pos, len(data))
                self.sha.update(data[:take])
            else:
                at = self.pos - size
                take = len(data)
                if data[:take] != self.after[at:at + take]:
                    raise BackupFailed("the archive does not verify: the manifest member or the end of the tar differs "
                                     "from what was written")
            self.pos += take
            data = data[take:]

    def finish(self, sha256: str) -> None:
        if self.pos != len(self.head) + self.size + len(self.after):
            raise BackupFailed(f"the archive does not verify: it holds {self.pos} bytes of tar, "
                             f"{len(self.head) + self.size + len(self.after)} were written")
        if self.sha.hexdigest() != sha256:
            raise BackupFailed("the archive does not verify: the dump in it does not have the manifest's SHA-256")


def check_archive(path: str, written: dict, igzip: str | None = None) -> dict:
    """The archive as it is on disk (verify: full), the whole gzip stream inflated.

    With igzip: ``igzip -t`` inflates every gzip member and checks its CRC-32 and length, while
    check_structure (same time, its own threads) checks the SHA-256/MD5, the header and manifest
    members byte for byte, and that the dump member's trailer carries the CRC-32 and length computed
    here over pg_dump's own bytes: together, the dump member inflates to exactly the bytes pg_dump
    wrote (to CRC-32's certainty; the restore checks the dump's SHA-256 before it drops anything).
    Without igzip: zlib inflates member by member (each CRC-32 and length) and the stream is compared
    with the tar we meant, the dump's SHA-256 against the manifest's included."""
    if igzip:
        test = subprocess.Popen([igzip, "-t", path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/")
        try:
            checked = check_structure(path, written["manifest"]["dump_file"], written)
        finally:
            _, err = test.communicate()
        if test.returncode != 0:
            raise BackupFailed(f"the archive does not verify: igzip -t: {tail(err.decode(errors='replace'))}")
        return checked
    lay, manifest = written["layout"], written["manifest"]
    expect = Expected(lay["tar_header"], int(manifest["size"]), b"\0" * lay["pad"] + lay["tail"])
    sums: dict = {}
    hasher = threading.Thread(target=_hash_file, args=(path, sums))
    hasher.start()
    try:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        try:
            with open(path, "rb", buffering=0) as f:
                inflate = None  # the current gzip member's decompressor; None between members
                while n := f.readinto(buf):
                    chunk = bytes(view[:n])
                    while chunk:
                        if inflate is None:
                            inflate = zlib.decompressobj(31)
                        expect.feed(inflate.decompress(chunk))
                        chunk = b""
                        if inflate.eof:  # the member ended (CRC-32 and length checked); the next starts in the rest
                            chunk = inflate.unused_data
                            inflate = None
                if inflate is not None:
                    raise BackupFailed("the archive does not verify: the gzip stream is truncated")
        except zlib.error as exc:
            raise BackupFailed(f"the archive does not verify: {exc}") from None
        expect.finish(manifest["sha256"])
    finally:
        hasher.join()
    return {**sums, "archive_size": os.path.getsize(path)}


def fail(message: str) -> NoReturn:
    raise BackupFailed(f"backup failed: {message}")


class Remote:
    """rclone against ``dest`` (remote:bucket/prefix), without this machine's AWS_CA_BUNDLE."""

    def __init__(self, dest: str, config: str):
        self.dest = dest.rstrip("/") + "/"
        self.base = ["rclone"] + (["--config", config] if config else [])
        self.env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}

    def popen(self, *args: str, **kw) -> subprocess.Popen:
        return subprocess.Popen([*self.base, *args], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, **kw)

    def run(self, *args: str, input: str | None = None) -> str:
        res = subprocess.run([*self.base, *args], env=self.env, capture_output=True, text=True, input=input)
        if res.returncode != 0:
            fail(f"rclone {args[0]} {self.dest}: {tail(res.stderr)}")
        return res.stdout


class Upload(threading.Thread):
    """Encrypt (age, when recipients are given) and upload the archive while it is being checked."""

    def __init__(self, remote: Remote, path: str, final: str, recipients: list[str], cutoff: str = ""):
        super().__init__(daemon=True)
        self.remote, self.path, self.final, self.recipients = remote, path, final, recipients
        # S3: one PUT up to `cutoff`, so the remote's MD5 (the ETag) is the server's own, computed over
        # the bytes it received; no HEAD after the upload: the remote check below lists the copy anyway
        self.flags = ["--s3-no-head"] + (["--s3-upload-cutoff", cutoff] if cutoff else [])
        self.error = ""
        self.proc: subprocess.Popen | None = None
        self.stopped = False
        self.uploaded = final + (".age" if recipients else "")
        self.local = path + ".age" if recipients else path  # the file whose bytes go to the remote
        self.md5 = ""
        self.seconds = 0.0

    def run(self) -> None:
        started = time.monotonic()
        try:
            if self.recipients:
                res = subprocess.run(["age", *(f"--recipient={r}" for r in self.recipients), "-o", self.local, self.path],
                                     capture_output=True, text=True)
                if res.returncode != 0:
                    self.error = f"age: {tail(res.stderr)}"
                    return
                sums: dict = {}
                _hash_file(self.local, sums)
                self.md5 = sums["md5"]
            if self.stopped:
                return
            self.proc = self.remote.popen("copyto", *self.flags, self.local, self.remote.dest + self.uploaded)
            _, err = self.proc.communicate()
            if self.proc.returncode != 0 and not self.stopped:
                self.error = f"rclone copyto: {tail(err)}"
        except OSError as exc:
            self.error = str(exc)
        finally:
            self.seconds = time.monotonic() - started

    def stop(self) -> None:
        self.stopped = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
        self.join()


ARCHIVE_RE = r"-[0-9TZ]+\.tar\.gz"


def remote_retention(remote: Remote, listing: list[dict], db: str, keep: int) -> list[str]:
    import re

    pattern = re.compile("^" + re.escape(db) + ARCHIVE_RE + "(\\.age)?$")
    names = sorted((o["Name"] for o in listing if pattern.match(o["Name"])), reverse=True)
    doomed = names[keep:] if keep > 0 else []
    present = {o["Name"] for o in listing}
    files = []
    for n in doomed:
        base = n[:-4] if n.endswith(".age") else n
        files += [f for f in (n, base + ".sha256", base + ".manifest.json") if f in present]
    if files:
        remote.run("delete", remote.dest, "--files-from-raw", "-", input="".join(f + "\n" for f in files))
    return doomed


def local_archives(backup_dir: str, db: str) -> list[str]:
    """The names of the archives of `db` in `backup_dir`, newest first (their names carry their UTC time)."""
    pattern = re.compile("^" + re.escape(db) + ARCHIVE_RE + "$")
    return sorted((n for n in os.listdir(backup_dir) if pattern.match(n)), reverse=True)


def local_retention(backup_dir: str, db: str, keep: int) -> list[str]:
    try:
        latest = os.readlink(os.path.join(backup_dir, "latest.tar.gz"))
    except OSError:
        latest = ""
    names = local_archives(backup_dir, db)
    deleted = []
    for n in names[keep:] if keep > 0 else []:
        if n == latest:
            continue
        for f in (n, n + ".sha256", n + ".manifest.json"):
            try:
                os.unlink(os.path.join(backup_dir, f))
            except FileNotFoundError:
                pass
        deleted.append(n)
    return deleted


def backup(args: SimpleNamespace) -> dict:
    """The whole backup (see DOCUMENTATION); raises BackupFailed with one sentence."""
    os.umask(0o027)
    # stopped (a stop signal, or the run that started it is gone): clean up like any failure
    on_stop(stopped)
    t = {"start": time.monotonic()}
    owner = Owner(args.owner)
    backup_dir = args.backup_dir
    if not os.path.isdir(backup_dir):
        os.makedirs(backup_dir, 0o750)
        owner.chown(backup_dir)
    check_room(backup_dir, args.db, bool(args.remote and args.recipient))
    work = os.path.join(backup_dir, f".work-{args.name}")
    os.mkdir(work, 0o700)
    owner.chown(work)
    dump_name = f"{args.db}.dump"
    final = f"{args.name}.tar.gz"
    remote = Remote(args.remote, args.rclone_config) if args.remote else None
    upload = None
    igzip = find_igzip(args.compressor)
    result: dict = {"archive": final, "compressor": "igzip" if igzip else "zlib"}
    try:
        written = write_archive(args, work, dump_name, owner, crc_on=igzip is not None or args.verify == "structure",
                                igzip=igzip)
        t["dump_and_pack"] = time.monotonic()
        if remote is not None:
            # a second name for the archive in the work folder: the upload reads it while the
            # archive itself is renamed into place
            source = os.path.join(work, "upload.tar.gz")
            os.link(written["path"], source)
            upload = Upload(remote, source, final, args.recipient, args.upload_cutoff)
            upload.start()
        try:
            if args.verify == "structure":
                checked = check_structure(written["path"], dump_name, written)
            else:
                checked = check_archive(written["path"], written, igzip)
        except BackupFailed:
            if upload is not None:
                upload.stop()
                subprocess.run([*remote.base, "deletefile", remote.dest + upload.uploaded], env=remote.env,
                               capture_output=True)
            raise
        t["check"] = time.monotonic()
        with open(os.path.join(work, "archive.sha256"), "w") as f:
            f.write(f"{checked['sha256']}  {final}\n")
        with open(os.path.join(work, "archive.manifest.json"), "wb") as f:
            f.write(written["text"])
        for name in ("archive.sha256", "archive.manifest.json", "archive.tar.gz"):
            owner.chown(os.path.join(work, name))
        for name in ("archive.sha256", "archive.manifest.json"):
            fsync_path(os.path.join(work, name))
        # into place: renames within one filesystem, the archive last of the three
        os.rename(os.path.join(work, "archive.sha256"), os.path.join(backup_dir, final + ".sha256"))
        os.rename(os.path.join(work, "archive.manifest.json"), os.path.join(backup_dir, final + ".manifest.json"))
        os.rename(written["path"], os.path.join(backup_dir, final))
        fsync_path(backup_dir)
        # latest.tar.gz: one rename of a fresh link, only now that the archive verified
        tmp_link = os.path.join(backup_dir, f".latest-{args.name}.tmp")
        os.symlink(final, tmp_link)
        if os.geteuid() == 0:
            os.lchown(tmp_link, owner.uid, owner.gid)
        os.rename(tmp_link, os.path.join(backup_dir, "latest.tar.gz"))
        fsync_path(backup_dir)
        t["publish"] = time.monotonic()
        result.update({"dump_size": written["manifest"]["size"], "dump_sha256": written["manifest"]["sha256"],
                       "tables": len(written["manifest"].get("tables", {})), **checked})
        if remote is not None:
            # the sidecars go up beside the rest of the archive's upload
            sidecars = remote.popen("copy", backup_dir, remote.dest, "--files-from-raw", "-", stdin=subprocess.PIPE)
            sidecars.stdin.write(f"{final}.sha256\n{final}.manifest.json\n")  # small: the pipe takes it at once
            upload.join()
            t["upload_rest"] = time.monotonic()
            _, side_err = sidecars.communicate()  # closes its stdin, waits
            if upload.error:  # no sidecars without their archive at the remote
                subprocess.run([*remote.base, "delete", remote.dest, "--files-from-raw", "-"], env=remote.env,
                               input=f"{final}.sha256\n{final}.manifest.json\n", capture_output=True, text=True)
                fail(f"the upload to {remote.dest} failed: {upload.error} (the local archive is verified; "
                     "latest.tar.gz points at it)")
            if sidecars.returncode != 0:
                fail(f"rclone copy {remote.dest}: {tail(side_err)}")
            t["upload_sidecars"] = time.monotonic()
            listing = json.loads(remote.run("lsjson", "--hash", "--files-only", remote.dest) or "[]")
            mine = [o for o in listing if o.get("Name") == upload.uploaded]
            size = os.path.getsize(upload.local)
            md5 = upload.md5 or checked["md5"]
            remote_md5 = (mine[0].get("Hashes") or {}).get("md5", "") if mine else ""
            if not mine or mine[0].get("Size") != size or (remote_md5 and remote_md5 != md5):
                fail(f"the remote copy at {remote.dest}{upload.uploaded} does not match the local archive "
                     f"(local {size} bytes md5 {md5}; remote "
                     + (f"{mine[0].get('Size')} bytes md5 {remote_md5 or '(none)'}" if mine else "missing") + ")")
            result["remote"] = {"name": upload.uploaded, "size": mine[0]["Size"], "md5": remote_md5 or None}
            t["remote_check"] = time.monotonic()
            result["remote_deleted"] = remote_retention(remote, listing, args.db, args.keep_remote)
            t["remote_retention"] = time.monotonic()
        result["local_deleted"] = local_retention(backup_dir, args.db, args.keep_local)
        t["local_retention"] = time.monotonic()
    finally:
        if upload is not None and upload.is_alive():
            upload.stop()
        shutil.rmtree(work, ignore_errors=True)  # with the upload's link and the encrypted copy
    marks = list(t.items())
    result["seconds"] = {name: round(at - marks[i - 1][1], 2) for i, (name, at) in enumerate(marks) if i}
    # the upload ran beside the check (and the publishing): its own duration
    result["seconds"]["upload"] = round(upload.seconds, 2) if upload is not None else 0
    result["seconds"]["total"] = round(marks[-1][1] - t["start"], 2)
    return result


def stopped(signum: int, frame: object) -> None:
    raise BackupFailed(f"stopped by signal {signum}")


def run_module() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            database=dict(type="str", required=True),
            login_host=dict(type="str", default="localhost"),
            port=dict(type="int", default=5432),
            login_user=dict(type="str", required=True),
            backup_dir=dict(type="path", required=True),
            name=dict(type="str", default=""),
            inventory_host=dict(type="str", default=""),
            compressor=dict(type="str", choices=["auto", "igzip", "zlib"], default="auto"),
            level=dict(type="int", default=1),
            dump_compression=dict(type="int", default=0),
            owner=dict(type="str", default="postgres"),
            remote=dict(type="str", default=""),
            rclone_config=dict(type="path", default=""),
            upload_cutoff=dict(type="str", default="5G"),
            recipients=dict(type="list", elements="str", default=[]),
            keep_local=dict(type="int", default=0),
            keep_remote=dict(type="int", default=0),
            verify=dict(type="str", choices=["full", "structure"], default="full"),
            lock_wait_timeout=dict(type="str", default="15min"),
            table_stats_sql=dict(type="str", default=""),
        ),
        supports_check_mode=True,
    )
    p = module.params
    args = SimpleNamespace(
        db=p["database"], host=p["login_host"], port=str(p["port"]), user=p["login_user"], backup_dir=p["backup_dir"],
        name=p["name"], inventory_host=p["inventory_host"], compressor=p["compressor"], level=p["level"],
        dump_compression=p["dump_compression"], owner=p["owner"], remote=p["remote"],
        rclone_config=p["rclone_config"] or "", upload_cutoff=p["upload_cutoff"], recipient=p["recipients"],
        keep_local=p["keep_local"], keep_remote=p["keep_remote"], verify=p["verify"],
        table_stats_sql=p["table_stats_sql"], lock_wait_timeout=p["lock_wait_timeout"].strip())
    wait = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(?:us|ms|s|min|h|d)?", args.lock_wait_timeout)
    if wait is None:
        module.fail_json(msg=f"backup failed: lock_wait_timeout {args.lock_wait_timeout!r} is not a time PostgreSQL "
                             "reads (15min, 90s, 500ms; 0 waits as long as it takes)")
    if float(wait.group(1)) == 0:  # 0 (in any unit): as long as it takes
        args.lock_wait_timeout = ""
    if not args.name:  # named by the db host's clock, once
        args.name = f"{args.db}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    try:
        if module.check_mode:
            owner = Owner(args.owner)
            igzip = find_igzip(args.compressor)
            version = server_version(args, owner)
            check_room(args.backup_dir, args.db, bool(args.remote and args.recipient))  # no folder yet: no archive
            module.exit_json(changed=True, archive=f"{args.name}.tar.gz", compressor="igzip" if igzip else "zlib",
                             server_version=version)
        result = backup(args)
    except BackupFailed as exc:
        module.fail_json(msg=str(exc) if str(exc).startswith("backup failed") else f"backup failed: {exc}")
    except subprocess.CalledProcessError as exc:
        module.fail_json(msg=f"backup failed: {exc.cmd[0]} exited with status {exc.returncode}: "
                             f"{tail(exc.stderr or '')}")
    except OSError as exc:  # one line, not a module traceback: "[Errno 28] No space left on device: 'PATH'"
        module.fail_json(msg=f"backup failed: {exc}")
    module.exit_json(changed=True, **result)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
