#!/usr/bin/python
# -*- coding: utf-8 -*-
# linux-maintenance block: the restore (restore action, and the update's rollback).
from __future__ import annotations

DOCUMENTATION = r"""
---
module: pg_restore_archive
short_description: Replace a PostgreSQL database with a verified linux-maintenance backup archive
description:
  - "Verify and unpack, one read of the archive: the archive (C(latest.tar.gz) may be a symbolic link) is read once;
    that read feeds its SHA-256, compared with the C(.sha256) sidecar the backup wrote, and the inflater at the same
    time. The dump is written into a private work folder and hashed on the way; its SHA-256 and size must equal the
    manifest's (C(manifest.json) inside the archive). A damaged, truncated or altered archive fails here, naming what
    differs, and nothing is dropped."
  - "Restore: only then is the database dropped (C(dropdb --force)), created again (owned by O(owner)) and loaded with
    C(pg_restore -j) O(jobs). The work folder is removed whatever happens."
  - "One module call in place of a dozen tasks (stat, slurp, tar, chown, shell): the restore and the update's rollback
    cost one round trip, and the archive and the dump are each read once."
  - Runs as root on the database host; the PostgreSQL tools run as O(os_user) through the local socket.
options:
  archive:
    description: The archive to restore (a path; C(latest.tar.gz) may be a symbolic link).
    type: path
    required: true
  database:
    description: The database to replace.
    type: str
    required: true
  owner:
    description: The role that owns the database created again; empty for O(os_user).
    type: str
    default: ""
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
    description: C(pg_restore -j) connections.
    type: int
    default: 2
  work_dir:
    description: Where the dump is unpacked for pg_restore (a private folder is made inside); default the archive's folder.
    type: path
notes:
  - Check mode verifies the archive against its C(.sha256) and the dump against the manifest (the whole read) and
    drops nothing.
author: linux-maintenance block
"""

EXAMPLES = r"""
- name: Replace acme_app with the latest backup
  pg_restore_archive:
    archive: /var/backups/acme-db/latest.tar.gz
    database: acme_app
    owner: acme
    port: 5432
    jobs: 2
  register: restore

- name: Only verify the archive a restore would use
  pg_restore_archive:
    archive: /var/backups/acme-db/acme_app-20261206T020000Z.tar.gz
    database: acme_app
  check_mode: true
"""

RETURN = r"""
archive:
  description: The archive restored (a link resolved).
  returned: always
  type: str
  sample: /var/backups/acme-db/acme_app-20261206T020000Z.tar.gz
created:
  description: When the backup was taken (the manifest's C(created)).
  returned: success
  type: str
  sample: "2026-12-06T02:00:00Z"
dump_size:
  description: Bytes of the dump restored.
  returned: success
  type: int
seconds:
  description: Seconds of each phase (verify_and_unpack, restore, total).
  returned: success
  type: dict
"""

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable

from ansible.module_utils.basic import AnsibleModule

CHUNK = 1 << 20


class RestoreFailed(Exception):
    """The restore failed; the message names the archive and what differs."""


def tail(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return " / ".join(lines[-2:])[-400:] or "no output"


def big_pipe(fileobj) -> None:
    """A 1 MiB pipe buffer: fewer wake-ups between this process and the inflater (both ways)."""
    import fcntl

    try:
        fcntl.fcntl(fileobj.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except OSError:
        pass


class Feeder(threading.Thread):
    """Reads the archive once: every chunk into its SHA-256 and into the inflater's stdin (hashlib and
    the pipe write let go of the GIL, so this runs beside the main thread's tar reading). When the
    inflater stops early (a corrupt stream), the rest is still hashed: a changed archive is then named
    by its checksum, the more precise of the two findings."""

    def __init__(self, path: str, sink):
        super().__init__(daemon=True)
        self.path, self.sink = path, sink
        self.sha = hashlib.sha256()
        self.size = 0
        self.error = ""

    def run(self) -> None:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        sink = self.sink
        try:
            with open(self.path, "rb", buffering=0) as f:
                while n := f.readinto(buf):
                    chunk = view[:n]
                    self.sha.update(chunk)
                    self.size += n
                    if sink is not None:
                        try:
                            sink.write(chunk)
                        except BrokenPipeError:
                            sink = None  # the inflater stopped: its status, or the tar reader, says why
        except OSError as exc:
            self.error = str(exc)
        finally:
            try:
                self.sink.close()
            except BrokenPipeError:
                pass


class _Prefixed(io.RawIOBase):
    """`head` (bytes already read from `stream`), then the rest of `stream`: tarfile reads the whole tar."""

    def __init__(self, head: bytes, stream):
        self.head, self.stream = memoryview(head), stream

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if len(self.head):
            n = min(len(b), len(self.head))
            b[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        return self.stream.readinto(b)


def _is_dump(info: tarfile.TarInfo) -> bool:
    return info.isfile() and "/" not in info.name and info.name.endswith(".dump")


def _copy_dump(src, size: int, path: str, ids: tuple[int, int] | None, failed: Callable[[str], Exception]) -> str:
    """`size` bytes of `src` into a new file at `path` (owned by `ids`, uid and gid), in 1 MiB reads; their SHA-256."""
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        with open(path, "xb", buffering=0) as out:
            while size:
                n = src.readinto(view[:min(CHUNK, size)])
                if not n:
                    raise tarfile.ReadError("unexpected end of data")
                h.update(view[:n])
                written = 0
                while written < n:
                    written += out.write(view[written:n])
                size -= n
            if ids is not None:  # pg_restore runs as the postgres user
                os.fchown(out.fileno(), *ids)
    except OSError as exc:  # the disk, not the archive
        raise failed(f"could not write the dump to {os.path.dirname(path)}: {exc}") from None
    return h.hexdigest()


def read_members(stream, work: str, ids: tuple[int, int] | None,
                 failed: Callable[[str], Exception]) -> tuple[dict | None, str, str, int]:
    """The manifest, the dump's path in `work`, its SHA-256 and size, from the inflated tar `stream`, read to its
    end (so that the inflater checks the last CRC-32). The backup writes the dump as the first member: its bytes
    are copied straight from the stream in 1 MiB reads (tarfile's stream reads 10 KB at a time, three times the
    CPU); what follows it (manifest.json and the end of the tar, a few KB) goes through tarfile. A tar laid out
    otherwise goes through tarfile whole. A damaged stream raises tarfile.TarError, EOFError or ValueError."""
    manifest, dump_path, dump_sha, dump_size = None, "", "", 0
    head = stream.read(tarfile.BLOCKSIZE)
    try:
        first = tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape") if len(head) == tarfile.BLOCKSIZE else None
    except tarfile.HeaderError:
        first = None  # tarfile reads it again below and says what is wrong with it
    rest = stream
    if first is not None and first.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and _is_dump(first):
        dump_path = os.path.join(work, first.name)
        dump_sha, dump_size = _copy_dump(stream, first.size, dump_path, ids, failed), first.size
        pad = -first.size % tarfile.BLOCKSIZE
        if len(stream.read(pad)) != pad:
            raise tarfile.ReadError("unexpected end of data")
    else:
        rest = io.BufferedReader(_Prefixed(head, stream), CHUNK)
    with tarfile.open(fileobj=rest, mode="r|", bufsize=CHUNK) as tar:
        for member in tar:
            if member.name == "manifest.json":
                manifest = json.loads(tar.extractfile(member).read())
            elif _is_dump(member) and not dump_path:
                dump_path = os.path.join(work, member.name)
                dump_sha = _copy_dump(tar.extractfile(member), member.size, dump_path, ids, failed)
                dump_size = member.size
        while rest.read(CHUNK):  # the tar's end
            pass
    return manifest, dump_path, dump_sha, dump_size


def not_restoring(message: str) -> RestoreFailed:
    """A failure before anything was dropped, said as every such failure of this module is."""
    return RestoreFailed(f"{message}, not restoring")


def recorded_sha256(real: str) -> str:
    try:
        with open(real + ".sha256") as f:
            return (f.read().split() or [""])[0]
    except FileNotFoundError:
        raise RestoreFailed(f"archive {real}: no .sha256 beside it, not restoring") from None


def unpack(real: str, work: str, ids: tuple[int, int] | None) -> tuple[dict, str]:
    """The archive checked against its .sha256 and its dump against the manifest, in one read (see
    DOCUMENTATION). Returns the manifest and the dump's path in `work`."""
    name = real
    want = recorded_sha256(real)
    igzip = shutil.which("igzip")  # package isal: inflates in about half of gzip's time
    inflate = subprocess.Popen([igzip or "gzip", "-dc"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd="/")
    big_pipe(inflate.stdin)
    big_pipe(inflate.stdout)  # 1 MiB: with the default 64 KiB, the unpack took twice as long
    feeder = Feeder(real, inflate.stdin)
    feeder.start()
    manifest, dump_path, dump_sha, dump_size = None, "", "", 0
    broken = ""
    clean = False
    try:
        manifest, dump_path, dump_sha, dump_size = read_members(inflate.stdout, work, ids, not_restoring)
        clean = True
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        broken = str(exc)
    finally:
        inflate.stdout.close()
        if not clean and inflate.poll() is None:
            inflate.kill()  # stopped early: the feeder hashes the rest alone
        feeder.join()
        err = inflate.stderr.read().decode(errors="replace")
        code = inflate.wait()
    if feeder.error:
        raise RestoreFailed(f"archive {name}: could not be read ({feeder.error}), not restoring")
    got = feeder.sha.hexdigest()
    if got != want:
        raise RestoreFailed(f"archive {name}: sha256 is {got}, its .sha256 records {want} (changed or damaged after "
                            "the backup), not restoring")
    if code != 0 and not broken:
        broken = tail(err)
    if broken:
        raise RestoreFailed(f"archive {name}: its gzip or tar stream is truncated or corrupt ({broken}), not restoring")
    if manifest is None:
        raise RestoreFailed(f"archive {name}: no manifest.json inside (truncated?), not restoring")
    if not dump_path:
        raise RestoreFailed(f"archive {name}: no dump inside, not restoring")
    if dump_sha != manifest.get("sha256") or dump_size != int(manifest.get("size", -1)):
        raise RestoreFailed(f"archive {name}: the dump inside has sha256 {dump_sha} ({dump_size} bytes), the manifest "
                            f"records {manifest.get('sha256')} ({manifest.get('size')} bytes), not restoring")
    return manifest, dump_path


class Postgres:
    """The PostgreSQL tools as os_user (root drops to it), on the given socket/port."""

    def __init__(self, p: dict):
        import pwd

        entry = pwd.getpwnam(p["os_user"])
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        self.env = {**os.environ, "HOME": entry.pw_dir, "USER": p["os_user"], "LOGNAME": p["os_user"],
                    "PGPORT": str(p["port"])}
        for name in ("PGHOST", "PGDATABASE", "PGUSER"):
            self.env.pop(name, None)
        if p["host"]:
            self.env["PGHOST"] = p["host"]

    def _drop(self):
        if os.geteuid() != 0 or os.geteuid() == self.uid:
            return None

        def drop():
            os.setgroups([])
            os.setgid(self.gid)
            os.setuid(self.uid)
        return drop

    def run(self, argv: list[str], what: str) -> None:
        res = subprocess.run(argv, capture_output=True, text=True, env=self.env, cwd="/", preexec_fn=self._drop())
        if res.returncode != 0:
            raise RestoreFailed(f"{what}: {tail(res.stderr)}")


def stopped(signum: int, frame: object) -> None:
    raise RestoreFailed(f"stopped by signal {signum}")


def run_module() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            archive=dict(type="path", required=True),
            database=dict(type="str", required=True),
            owner=dict(type="str", default=""),
            host=dict(type="str", default=""),
            port=dict(type="int", default=5432),
            os_user=dict(type="str", default="postgres"),
            jobs=dict(type="int", default=2),
            work_dir=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    # a stopped run (ansible's timeout, a stopped workflow) still removes the work folder
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, stopped)
    started = time.monotonic()
    real = os.path.realpath(p["archive"])
    result: dict = {"archive": real}
    work = ""
    try:
        if not os.path.isfile(real):
            raise RestoreFailed(f"no backup found at {p['archive']}: run the backup action first")
        pg = Postgres(p)
        work = tempfile.mkdtemp(prefix=".restore-", dir=p["work_dir"] or os.path.dirname(real))
        root = os.geteuid() == 0
        if root:
            os.chown(work, pg.uid, pg.gid)
        manifest, dump = unpack(real, work, (pg.uid, pg.gid) if root else None)
        unpacked = time.monotonic()
        result.update(created=manifest.get("created", ""), dump_size=int(manifest["size"]))
        if module.check_mode:
            result["seconds"] = {"verify_and_unpack": round(unpacked - started, 2)}
            module.exit_json(changed=False, msg=f"{real} verifies against its .sha256 and manifest; would replace "
                             f"{p['database']}", **result)
        db = p["database"]
        pg.run(["dropdb", "--if-exists", "--force", db], f"dropdb {db}")
        pg.run(["createdb", *(["-O", p["owner"]] if p["owner"] else []), db], f"createdb {db}")
        pg.run(["pg_restore", "--exit-on-error", "-j", str(max(1, p["jobs"])), "-d", db, dump],
               f"pg_restore of {real} into {db}")
        done = time.monotonic()
        result["seconds"] = {"verify_and_unpack": round(unpacked - started, 2), "restore": round(done - unpacked, 2),
                             "total": round(done - started, 2)}
    except RestoreFailed as exc:
        module.fail_json(msg=str(exc), **result)
    finally:
        if work:
            shutil.rmtree(work, ignore_errors=True)
    module.exit_json(changed=True, **result)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
