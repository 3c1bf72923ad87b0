#!/usr/bin/env python3
"""The whole backup in one remote task: dump, pack, verify, upload, check the remote copy, prune.

Runs on the db host as root, as one Ansible module call (the backup action passes this file on
stdin to ``python3 -``: one SSH round trip instead of one per task). pg_dump runs as the postgres
user; the files it makes belong to postgres.

1. **Dump and pack, one pass.** pg_dump's output (custom format) is hashed (SHA-256 of the dump,
   for the manifest) and gzip-compressed straight into ``<name>.tar.gz`` in a private work folder;
   no uncompressed dump and no second copy ever lands on disk, so the extra disk a backup needs is
   the compressed archive itself (and, with age encryption, its encrypted copy while it uploads).
   The archive is an ordinary gzip'd tar (``tar -xzf`` reads it; members: the dump, then
   manifest.json). A tar header carries its member's size, which a stream does not know in
   advance: the dump's header is written first as its own *stored* gzip member (a fixed length
   whatever its content) and rewritten in place once the dump has ended.
2. **Verify and upload at the same time.** The upload of the archive starts as soon as it is
   written; meanwhile one read checks it end to end: its SHA-256 and MD5 (for the .sha256 sidecar
   and the remote check), and its decompressed content, which must be exactly the tar we meant
   (every gzip member's CRC-32 and length, the tar header checksums, the dump of the size we
   wrote, the manifest byte for byte). If the check fails, the upload is stopped and the remote
   copy deleted.
3. **Publish.** Only after the check passed are the archive and its sidecars (.sha256,
   .manifest.json) renamed into the backup folder and ``latest.tar.gz`` moved with one rename, so
   it never points at a partial or unverified file; the sidecars are uploaded.
4. **Remote check and retention, one listing.** One ``rclone lsjson --hash`` of the destination:
   the remote copy's size and MD5 must equal the local file's; the same listing gives the remote
   archives beyond ``--keep-remote`` (deleted with their sidecars in one call); then local
   retention (never the archive latest points at).

Prints the result as JSON (sizes, checksums, seconds per phase); exits non-zero with one line on
stderr when anything fails.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zlib

CHUNK = 1 << 20
BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE


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
        if os.geteuid() != 0 or os.geteuid() == self.uid:
            return None

        def drop():
            os.setgroups([])
            os.setgid(self.gid)
            os.setuid(self.uid)
        return drop

    def chown(self, path: str) -> None:
        if os.geteuid() == 0:
            os.chown(path, self.uid, self.gid)


def server_version(args, owner: Owner) -> str:
    res = subprocess.run(["psql", "-h", args.host, "-p", str(args.port), "-U", args.user, "-d", args.db,
                          "-tAc", "show server_version"], capture_output=True, text=True, check=True,
                         env=owner.env, preexec_fn=owner.preexec(), cwd="/")
    return res.stdout.strip()


def find_igzip(choice: str) -> str | None:
    """igzip (Debian/Ubuntu package isal: Intel's ISA-L deflate, about four times less CPU than zlib at
    level 1 for a smaller archive, and a standard gzip stream), or None for Python's zlib."""
    if choice == "zlib":
        return None
    path = shutil.which("igzip")
    if path is None and choice == "igzip":
        raise SystemExit("backup failed: archive_compressor is igzip but igzip is not installed on this host "
                         "(Debian/Ubuntu package isal)")
    return path


def big_pipe(fileobj) -> None:
    """A 1 MiB pipe buffer: fewer wake-ups between pg_dump, this process and the compressor."""
    import fcntl

    try:
        fcntl.fcntl(fileobj.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except OSError:
        pass


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
                raise SystemExit(f"backup failed: igzip exited with status {proc.returncode}: {tail(err)}")
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
            raise SystemExit(f"backup failed: psql could not export a snapshot: {tail(self.proc.stderr.read())}")

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

    def run(self) -> None:
        res = subprocess.run(self.argv, input=self.script, capture_output=True, text=True, env=self.owner.env,
                             preexec_fn=self.owner.preexec(), cwd="/")
        if res.returncode != 0:
            self.error = tail(res.stderr)
            return
        for line in res.stdout.splitlines():
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
    cmd = ["pg_dump", "-h", args.host, "-p", str(args.port), "-U", args.user, "-F", "c",
           "-Z", str(args.dump_compression), *([f"--snapshot={snapshot.id}"] if snapshot else []), args.db]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, bufsize=0, env=owner.env, preexec_fn=owner.preexec(), cwd="/")
    stats = None
    if snapshot is not None:
        stats = TableStats(args, owner, snapshot.id, args.table_stats_sql)
        stats.start()

    def describe(size: int, sha256: str) -> dict:
        proc.stdout.close()
        code = proc.wait()
        if code != 0:
            raise SystemExit(f"pg_dump failed with exit status {code}")
        extra = {}
        if stats is not None:
            stats.join()
            if stats.error:
                raise SystemExit(f"backup failed: the table statistics: {stats.error}")
            extra = {"tables": stats.tables}
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
        if proc.poll() is None:
            proc.stdout.close()
            proc.wait()


def pack_archive(path: str, source, dump_name: str, describe, level: int = 1, igzip: str | None = None,
                 crc_on: bool = False) -> dict:
    """The archive at `path`: the dump read from `source` and the manifest `describe(size, sha256)`
    returns once the dump has ended. Returns the manifest and where the archive's gzip members lie
    (with the CRC-32 of the data member's input when `crc_on`, for check_structure)."""
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
            raise SystemExit("internal error: the tar header member changed length")
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
            raise SystemExit(f"the archive does not verify: {exc}") from None
        size = int(written["manifest"]["size"])
        if info.name != dump_name or info.size != size:
            raise SystemExit(f"the archive does not verify: its first member is {info.name} of {info.size} bytes")
        if struct.unpack("<II", trailer) != (lay["crc"], lay["isize"]):
            raise SystemExit("the archive does not verify: the dump's gzip trailer (CRC-32, length) does not match "
                             "what was written")
        if tail_data != lay["tail"] or not tail.eof or tail.unused_data:
            raise SystemExit("the archive does not verify: the manifest member does not match what was written")
    finally:
        hasher.join()
    return {**sums, "archive_size": os.path.getsize(path)}


def _hash_file(path: str, out: dict) -> None:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while True:
            n = f.readinto(buf)
            if not n:
                break
            sha.update(view[:n])
            md5.update(view[:n])
    out.update(sha256=sha.hexdigest(), md5=md5.hexdigest())


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
                    raise SystemExit("the archive does not verify: the dump's tar header differs from what was written")
            elif self.pos < size:
                take = min(size - self.pos, len(data))
                self.sha.update(data[:take])
            else:
                at = self.pos - size
                take = len(data)
                if data[:take] != self.after[at:at + take]:
                    raise SystemExit("the archive does not verify: the manifest member or the end of the tar differs "
                                     "from what was written")
            self.pos += take
            data = data[take:]

    def finish(self, sha256: str) -> None:
        if self.pos != len(self.head) + self.size + len(self.after):
            raise SystemExit(f"the archive does not verify: it holds {self.pos} bytes of tar, "
                             f"{len(self.head) + self.size + len(self.after)} were written")
        if self.sha.hexdigest() != sha256:
            raise SystemExit("the archive does not verify: the dump in it does not have the manifest's SHA-256")


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
            raise SystemExit(f"the archive does not verify: igzip -t: {tail(err.decode(errors='replace'))}")
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
                    raise SystemExit("the archive does not verify: the gzip stream is truncated")
        except zlib.error as exc:
            raise SystemExit(f"the archive does not verify: {exc}") from None
        expect.finish(manifest["sha256"])
    finally:
        hasher.join()
    return {**sums, "archive_size": os.path.getsize(path)}


def fail(message: str) -> "NoReturn":
    raise SystemExit(f"backup failed: {message}")


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


def tail(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return " / ".join(lines[-2:])[-400:] or "no output"


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


def local_retention(backup_dir: str, db: str, keep: int) -> list[str]:
    import re

    pattern = re.compile("^" + re.escape(db) + ARCHIVE_RE + "$")
    try:
        latest = os.readlink(os.path.join(backup_dir, "latest.tar.gz"))
    except OSError:
        latest = ""
    names = sorted((n for n in os.listdir(backup_dir) if pattern.match(n)), reverse=True)
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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", default="5432")
    parser.add_argument("--user", required=True)
    parser.add_argument("--backup-dir", required=True)
    parser.add_argument("--name", default="", help="the archive's name without .tar.gz (default: DB-<UTC time>)")
    parser.add_argument("--inventory-host", default="")
    parser.add_argument("--level", type=int, default=1, help="gzip level of the archive (igzip: 0-3)")
    parser.add_argument("--compressor", choices=("auto", "igzip", "zlib"), default="auto",
                        help="auto: igzip when installed (package isal), else Python's zlib")
    parser.add_argument("--dump-compression", type=int, default=0, help="pg_dump -Z inside the archive")
    parser.add_argument("--owner", default="postgres", help="runs pg_dump and owns the backups")
    parser.add_argument("--remote", default="", help="rclone destination (remote:bucket/prefix); empty: no upload")
    parser.add_argument("--rclone-config", default="")
    parser.add_argument("--upload-cutoff", default="5G",
                        help="S3: archives up to this size go up in one PUT (server-side MD5); larger: multipart; "
                             "empty: rclone's setting")
    parser.add_argument("--recipient", action="append", default=[], help="age recipient of the uploaded copy")
    parser.add_argument("--keep-local", type=int, default=0)
    parser.add_argument("--keep-remote", type=int, default=0)
    parser.add_argument("--table-stats-sql", default="",
                        help="SQL giving every table's rows and checksum (files/table_stats.sql): run in the dump's "
                             "snapshot, its result goes into the manifest for the restore drill; empty: none")
    parser.add_argument("--verify", choices=("full", "structure"), default="full",
                        help="full: inflate and walk the whole archive; structure: checksums and gzip/tar structure")
    args = parser.parse_args()
    if not args.name:  # named by the db host's clock, once
        args.name = f"{args.db}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"

    os.umask(0o027)
    # stopped (ansible's timeout, a stopped run): clean up like any failure (pg_dump ends with its pipe)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    t = {"start": time.monotonic()}
    owner = Owner(args.owner)
    backup_dir = args.backup_dir
    if not os.path.isdir(backup_dir):
        os.makedirs(backup_dir, 0o750)
        owner.chown(backup_dir)
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
        except SystemExit:
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
                       **checked})
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
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
