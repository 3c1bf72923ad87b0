#!/usr/bin/env python3
"""Stream pg_dump into a verified <name>.tar.gz in one pass, then publish it atomically.

Runs on the db host as the postgres user (the backup action copies it there). One write of the
data: pg_dump's output (custom format) is hashed (SHA-256 of the dump, for the manifest) and
gzip-compressed straight into the archive; no uncompressed dump and no second copy ever lands on
disk, so the extra disk a backup needs is the compressed archive itself.

The archive is an ordinary gzip'd tar (``tar -xzf`` reads it; members: the dump, then
manifest.json). A tar header carries its member's size, which a stream does not know in advance:
the dump's header is written first as its own *stored* gzip member (a fixed length whatever its
content) and rewritten in place once the dump has ended. gzip files may consist of several
members; gzip, tar and Python read them as one stream.

Then the archive is checked end to end in one read: its SHA-256 and MD5 (for the .sha256 sidecar
and the remote check), and its decompressed content, which must be exactly the tar we meant: the
dump with the SHA-256 we computed while writing, and the manifest. Only then are the archive and
its sidecars (.sha256, .manifest.json) renamed into the backup folder and ``latest.tar.gz`` moved
with one rename. The result is printed as JSON.
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


def server_version(args) -> str:
    res = subprocess.run(["psql", "-h", args.host, "-p", str(args.port), "-U", args.user, "-d", args.db,
                          "-tAc", "show server_version"], capture_output=True, text=True, check=True)
    return res.stdout.strip()


def write_archive(args, work: str, dump_name: str) -> dict:
    """The archive in the work folder; returns the dump's size and SHA-256."""
    path = os.path.join(work, "archive.tar.gz")
    cmd = ["pg_dump", "-h", args.host, "-p", str(args.port), "-U", args.user, "-F", "c",
           "-Z", str(args.dump_compression), args.db]
    started = int(time.time())
    dump_sha = hashlib.sha256()
    size = 0
    with open(path, "xb") as out:
        placeholder = gzip_member(tar_header(dump_name, 0, started), 0)
        out.write(placeholder)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, bufsize=0)
        comp = zlib.compressobj(args.level, zlib.DEFLATED, 31)
        try:
            read = proc.stdout.readinto
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while True:
                n = read(buf)
                if not n:
                    break
                chunk = view[:n]
                dump_sha.update(chunk)
                size += n
                out.write(comp.compress(chunk))
            pad = (-size) % BLOCK
            out.write(comp.compress(b"\0" * pad))
            out.write(comp.flush())
        finally:
            proc.stdout.close()
            code = proc.wait()
        if code != 0:
            raise SystemExit(f"pg_dump failed with exit status {code}")
        manifest = {
            "database": args.db,
            "name": args.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": args.inventory_host,
            "format": "pg_dump custom",
            "dump_file": dump_name,
            "size": size,
            "sha256": dump_sha.hexdigest(),
            "server_version": server_version(args),
        }
        text = (json.dumps(manifest, indent=4) + "\n").encode()
        tail = tar_header("manifest.json", len(text), int(time.time())) + text + b"\0" * ((-len(text)) % BLOCK)
        tail += b"\0" * (2 * BLOCK)  # end of archive
        total = BLOCK + size + pad + len(tail)  # the uncompressed tar, padded to whole records
        tail += b"\0" * ((-total) % RECORD)
        out.write(gzip_member(tail, args.level))
        # the dump's real header, in place of the placeholder: same length (stored deflate block)
        header = gzip_member(tar_header(dump_name, size, started), 0)
        if len(header) != len(placeholder):
            raise SystemExit("internal error: the tar header member changed length")
        out.seek(0)
        out.write(header)
        out.flush()
        os.fsync(out.fileno())
    return {"path": path, "manifest": manifest, "text": text}


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


class TarWalk:
    """The members of a tar stream fed in pieces: name -> (size, bytes seen, content if kept)."""

    def __init__(self, keep: set[str]):
        self.keep, self.members, self.ended = keep, {}, False
        self.header = bytearray()
        self.current = None  # [name, size, remaining incl. padding, seen, content]

    def feed(self, data) -> None:
        data = memoryview(data)
        while len(data):
            if self.current is not None:
                name, size, remaining, seen, content = self.current
                take = min(remaining, len(data))
                part = data[:take]
                data = data[take:]
                data_left = max(0, size - seen)
                used = min(take, data_left)
                if content is not None and used:
                    content += part[:used]
                seen += used
                remaining -= take
                if remaining == 0:
                    self.members[name] = (size, seen, bytes(content) if content is not None else None)
                    self.current = None
                else:
                    self.current = [name, size, remaining, seen, content]
                continue
            if self.ended:  # after the end marker: only zero padding
                if any(data):
                    raise SystemExit("the archive does not verify: data after the end of the tar")
                return
            need = BLOCK - len(self.header)
            self.header += data[:need]
            data = data[need:]
            if len(self.header) < BLOCK:
                return
            block, self.header = bytes(self.header), bytearray()
            if block == bytes(BLOCK):
                self.ended = True
                continue
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")  # checks the header checksum
            if info.size == 0:
                self.members[info.name] = (0, 0, b"" if info.name in self.keep else None)
                continue
            padded = info.size + (-info.size) % BLOCK
            self.current = [info.name, info.size, padded, 0, bytearray() if info.name in self.keep else None]


def check_archive(path: str, dump_name: str, manifest: dict, text: bytes) -> dict:
    """The archive as it is on disk: its SHA-256 and MD5 (sidecar, remote check) in one thread; in this
    one, the whole gzip stream inflated member by member (zlib checks each member's CRC-32 and length)
    and walked as a tar (header checksums): exactly the dump, of the size we wrote, and the manifest,
    byte for byte. zlib and hashlib release the GIL: the two reads use both cores."""
    import threading

    sums: dict = {}
    hasher = threading.Thread(target=_hash_file, args=(path, sums))
    hasher.start()
    walk = TarWalk({"manifest.json"})
    try:
        with open(path, "rb", buffering=0) as f:
            inflate = None  # the current gzip member's decompressor; None between members
            while True:
                chunk = f.read(CHUNK)
                if not chunk:
                    break
                while chunk:
                    if inflate is None:
                        inflate = zlib.decompressobj(31)
                    walk.feed(inflate.decompress(chunk))
                    chunk = b""
                    if inflate.eof:  # the member ended (CRC-32 and length checked); the next starts in the rest
                        chunk = inflate.unused_data
                        inflate = None
            if inflate is not None:
                raise SystemExit("the archive does not verify: the gzip stream is truncated")
    except zlib.error as exc:
        raise SystemExit(f"the archive does not verify: {exc}") from None
    finally:
        hasher.join()
    size = int(manifest["size"])
    expected = {dump_name: (size, size, None), "manifest.json": (len(text), len(text), text)}
    if walk.members != expected or not walk.ended or walk.current is not None:
        raise SystemExit(f"the archive does not verify: members {sorted(walk.members)} do not match what was written")
    return {**sums, "archive_size": os.path.getsize(path)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", default="5432")
    parser.add_argument("--user", required=True)
    parser.add_argument("--backup-dir", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--inventory-host", default="")
    parser.add_argument("--level", type=int, default=1, help="gzip level of the archive")
    parser.add_argument("--dump-compression", type=int, default=0, help="pg_dump -Z inside the archive")
    args = parser.parse_args()

    os.umask(0o027)
    # stopped (ansible's timeout, a stopped run): clean up like any failure (pg_dump ends with its pipe)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    backup_dir = args.backup_dir
    work = os.path.join(backup_dir, f".work-{args.name}")
    os.mkdir(work, 0o700)
    dump_name = f"{args.db}.dump"
    final = f"{args.name}.tar.gz"
    try:
        t0 = time.monotonic()
        written = write_archive(args, work, dump_name)
        t1 = time.monotonic()
        checked = check_archive(written["path"], dump_name, written["manifest"], written["text"])
        t2 = time.monotonic()
        with open(os.path.join(work, "archive.sha256"), "w") as f:
            f.write(f"{checked['sha256']}  {final}\n")
        with open(os.path.join(work, "archive.manifest.json"), "wb") as f:
            f.write(written["text"])
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
        os.rename(tmp_link, os.path.join(backup_dir, "latest.tar.gz"))
        fsync_path(backup_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"archive": final, "dump_size": written["manifest"]["size"],
                      "dump_sha256": written["manifest"]["sha256"], **checked,
                      "seconds": {"dump_and_pack": round(t1 - t0, 2), "check": round(t2 - t1, 2)}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
