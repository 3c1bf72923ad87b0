# Reading the archives the linux-maintenance block's backup writes (library/pg_archive.py), for the
# restore (library/pg_restore_archive.py) and the restore drill (library/pg_restore_drill.py); and what
# all three share. Ansible finds this folder beside the block's playbooks and sends this file with each
# module that imports it (as ansible.module_utils.lm_archive).
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Callable

CHUNK = 1 << 20

# what stops a module: a stopped run or Ansible's timeout (SIGTERM), a lost terminal (SIGHUP), Ctrl-C (SIGINT)
STOPS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def on_stop(handler: Callable[[int, object], None]) -> None:
    """`handler` for every stop signal: the module's handler raises its failure, so its clean-up runs. And
    the module stops the same way when whoever started it is gone (stop_with_controller)."""
    for sig in STOPS:
        signal.signal(sig, handler)
    stop_with_controller()


_watching: list[int] = []


def stop_with_controller(fd: int = 1) -> None:
    """Stop this module, as SIGTERM would, once nobody reads its standard output any more.

    A stopped run (the web view's Stop, Ctrl-C, a step's timeout) ends ansible-playbook and with it the SSH
    session the module runs in, but nothing signals the module: it would carry on alone, and a backup
    would publish and prune, a restore replace the database, after the run was recorded as stopped. The
    pipe (or socket) its result goes back on breaks when its reader is gone: a thread waits for that in
    poll(), then sends the main thread SIGTERM, which stops_held holds back like any other. A file or
    /dev/null (a module run by hand) never breaks; a terminal breaks when it hangs up."""
    if fd in _watching:
        return
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
        return
    main = threading.main_thread().ident
    assert main is not None

    def watch() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)  # a stop signal sent to the process goes to the main thread
        poller = select.poll()
        poller.register(fd, 0)  # no event asked for: poll() returns on a hang-up or an error only
        while True:
            events = [ev for _, ev in poller.poll()]
            if any(ev & select.POLLNVAL for ev in events):
                return  # the descriptor was closed here: the module is ending
            if any(ev & (select.POLLERR | select.POLLHUP) for ev in events):
                signal.pthread_kill(main, signal.SIGTERM)
                return

    _watching.append(fd)
    threading.Thread(target=watch, name="stop-with-controller", daemon=True).start()


@contextlib.contextmanager
def stops_held():
    """The stop signals held back (the tools started meanwhile inherit it): a stop asked for in the block
    takes effect when it ends."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)


def quote_literal(text: str) -> str:
    """`text` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def other_database(manifest: dict, expected: str) -> str:
    """The database `manifest` says its archive is a backup of, when that is not `expected`; else '' (also for a
    manifest that names none: the sidecar missing)."""
    source = manifest.get("database")
    return source if source is not None and source != expected else ""


def sidecar_manifest(archive: str) -> dict:
    """The manifest the backup wrote beside the archive (<archive>.manifest.json), or {}. The one inside the
    archive is the one that counts; this one lets a wrong archive be refused before it is read."""
    try:
        with open(archive + ".manifest.json", encoding="utf-8") as f:
            found = json.load(f)
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def tail(text: str) -> str:
    """The last two non-empty lines of a tool's output, for a one-line failure."""
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return " / ".join(lines[-2:])[-400:] or "no output"


def drop_to(uid: int, gid: int):
    """A preexec_fn that runs the child as uid/gid (the postgres user) when this runs as root; else None."""
    if os.geteuid() != 0 or os.geteuid() == uid:
        return None

    def drop():
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    return drop


def as_os_user(os_user: str, port: int, host: str = "") -> tuple[int, int, dict]:
    """uid, gid and environment for the PostgreSQL tools run as `os_user` (root drops to it; peer
    authentication as that user) on `host` (a socket folder or address; "" for the default) and `port`.
    PGHOST, PGDATABASE and PGUSER of this process's environment do not leak into them."""
    import pwd

    entry = pwd.getpwnam(os_user)
    env = {k: v for k, v in os.environ.items() if k not in ("PGHOST", "PGDATABASE", "PGUSER")}
    env.update(HOME=entry.pw_dir, USER=os_user, LOGNAME=os_user, PGPORT=str(port))
    if host:
        env["PGHOST"] = host
    return entry.pw_uid, entry.pw_gid, env


def drop_leftovers(env: dict, ids: tuple[int, int], pattern: str, unless_missing: str = "") -> list[str]:
    """The databases whose whole name matches `pattern`, left by a restore or drill that was killed before
    it could drop its own (SIGKILL, a reboot), dropped; the tools run as `ids` with `env`. One still in
    use (its restore or drill still running) is left alone: no --force. With `unless_missing`, nothing is
    dropped while that database does not exist (a leftover may then hold the only copy). Their names."""
    def tool(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), capture_output=True, text=True, env=env, cwd="/",
                              preexec_fn=drop_to(*ids))

    listed = tool("psql", "-X", "-q", "-At", "-d", "postgres", "-c", "SELECT datname FROM pg_database")
    names = listed.stdout.splitlines() if listed.returncode == 0 else []
    if unless_missing and unless_missing not in names:
        return []
    return [name for name in names if re.fullmatch(pattern, name) and tool("dropdb", name).returncode == 0]


MIB = 1 << 20


def free_bytes(path: str) -> int | None:
    """The room left to an unprivileged writer on the filesystem of `path`; None when it cannot be told."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def room_for_copy(env: dict, ids: tuple[int, int], database: str) -> str:
    """'' when the filesystem of PostgreSQL's data directory has room for another copy of `database` (its
    current size and a tenth): a restore's side database or a drill's scratch database. Else why not, in one
    sentence. Also '' when it cannot be told: `database` missing, the data directory unreadable or not on
    this host. A full data directory stops PostgreSQL itself, every database of it, not only this one."""
    res = subprocess.run(
        ["psql", "-X", "-q", "-At", "-F", "\t", "-d", "postgres", "-c",
         "SELECT current_setting('data_directory'), pg_database_size(datname) FROM pg_database "
         f"WHERE datname = {quote_literal(database)}"],
        capture_output=True, text=True, env=env, cwd="/", preexec_fn=drop_to(*ids))
    row = res.stdout.strip().split("\t") if res.returncode == 0 else []
    if len(row) != 2:
        return ""
    data_dir, size = row[0], int(row[1])
    free = free_bytes(data_dir)
    need = int(size * 1.1)
    if free is None or free >= need:
        return ""
    return (f"not enough room for another copy of {database} ({size / MIB:.1f} MiB) on the filesystem of PostgreSQL's "
            f"data directory {data_dir}: {free / MIB:.1f} MiB free, about {need / MIB:.1f} MiB needed")


def room_for_dump(archive: str, work_dir: str) -> str:
    """'' when `work_dir`'s filesystem has room for the dump inside `archive` (the size its sidecar manifest
    gives), else why not; '' when it cannot be told."""
    size = sidecar_manifest(archive).get("size")
    free = free_bytes(work_dir)
    if not isinstance(size, int) or free is None or free >= size:
        return ""
    return (f"not enough room in {work_dir} to unpack the dump ({size / MIB:.1f} MiB): {free / MIB:.1f} MiB free")


def big_pipe(fileobj) -> None:
    """A 1 MiB pipe buffer: fewer wake-ups between this process and the tool at the pipe's other end
    (pg_dump, the compressor, the inflater)."""
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


def _copy_dump(src, size: int, out, where: str, failed: Callable[[str], Exception]) -> str:
    """`size` bytes of `src` into `out` (a file, or the pipe into pg_restore) in 1 MiB reads; their SHA-256.
    When a pipe's reader stops (pg_restore failed: its status says why), the rest is still read and hashed."""
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        while size:
            n = src.readinto(view[:min(CHUNK, size)])
            if not n:
                raise tarfile.ReadError("unexpected end of data")
            h.update(view[:n])
            written = 0
            while out is not None and written < n:
                try:
                    written += out.write(view[written:n])
                except BrokenPipeError:
                    out = None
            size -= n
    except OSError as exc:  # the disk, not the archive
        raise failed(f"could not write the dump to {where}: {exc}") from None
    return h.hexdigest()


def _dump_file(work: str, name: str, ids: tuple[int, int] | None, failed: Callable[[str], Exception]):
    """A new file for the dump in `work`, owned by `ids` (uid and gid: pg_restore runs as the postgres user)."""
    path = os.path.join(work, name)
    try:
        out = open(path, "xb", buffering=0)
        if ids is not None:
            os.fchown(out.fileno(), *ids)
    except OSError as exc:
        raise failed(f"could not write the dump to {work}: {exc}") from None
    return out, path


def read_members(stream, work: str, ids: tuple[int, int] | None, failed: Callable[[str], Exception],
                 sink=None) -> tuple[dict | None, str, str, int]:
    """The manifest, the dump's path in `work`, its SHA-256 and size, from the inflated tar `stream`, read to its
    end (so that the inflater checks the last CRC-32). The backup writes the dump as the first member: its bytes
    are copied straight from the stream in 1 MiB reads (tarfile's stream reads 10 KB at a time, three times the
    CPU); what follows it (manifest.json and the end of the tar, a few KB) goes through tarfile. A tar laid out
    otherwise goes through tarfile whole. A damaged stream raises tarfile.TarError, EOFError or ValueError.
    With `sink` (a pipe), the dump's bytes go there instead of into a file, and its path is "-"."""

    def copy(src, name: str, size: int) -> tuple[str, str]:
        if sink is not None:
            return "-", _copy_dump(src, size, sink, "pg_restore", failed)
        out, path = _dump_file(work, name, ids, failed)
        with out:
            return path, _copy_dump(src, size, out, work, failed)

    manifest, dump_path, dump_sha, dump_size = None, "", "", 0
    head = stream.read(tarfile.BLOCKSIZE)
    try:
        first = tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape") if len(head) == tarfile.BLOCKSIZE else None
    except tarfile.HeaderError:
        first = None  # tarfile reads it again below and says what is wrong with it
    rest = stream
    if first is not None and first.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and _is_dump(first):
        (dump_path, dump_sha), dump_size = copy(stream, first.name, first.size), first.size
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
                dump_path, dump_sha = copy(tar.extractfile(member), member.name, member.size)
                dump_size = member.size
        while rest.read(CHUNK):  # the tar's end
            pass
    return manifest, dump_path, dump_sha, dump_size


def unpack(real: str, work: str, ids: tuple[int, int] | None, failed: Callable[[str], Exception],
           name: str = "", sink=None) -> tuple[dict, str]:
    """One read of the archive at `real`: its SHA-256 (against the .sha256 beside it) and the inflater are
    fed from the same read; the dump goes into `work` (owned by `ids`), or into `sink` (the pipe into
    pg_restore; its path is then "-"), hashed on the way, and is checked against the manifest read from
    inside the archive. Returns the manifest and the dump's path. Every
    failure is `failed(sentence)` about the archive called `name` (default: its path): a changed archive
    names its checksum; a truncated or corrupt gzip or tar stream (the checksum taken after the damage)
    names the stream."""
    name = name or real
    try:
        with open(real + ".sha256") as f:
            want = (f.read().split() or [""])[0]
    except FileNotFoundError:
        raise failed(f"archive {name}: no .sha256 beside it") from None
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
        manifest, dump_path, dump_sha, dump_size = read_members(inflate.stdout, work, ids, failed, sink)
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
        raise failed(f"archive {name}: could not be read ({feeder.error})")
    got = feeder.sha.hexdigest()
    if got != want:
        raise failed(f"archive {name}: sha256 is {got}, its .sha256 records {want} (changed or damaged after the backup)")
    if code != 0 and not broken:
        broken = tail(err)
    if broken:
        raise failed(f"archive {name}: its gzip or tar stream is truncated or corrupt ({broken})")
    if manifest is None:
        raise failed(f"archive {name}: no manifest.json inside (truncated?)")
    if not dump_path:
        raise failed(f"archive {name}: no dump inside")
    if dump_sha != manifest.get("sha256") or dump_size != int(manifest.get("size", -1)):
        raise failed(f"archive {name}: the dump inside has sha256 {dump_sha} ({dump_size} bytes), the manifest "
                     f"records {manifest.get('sha256')} ({manifest.get('size')} bytes)")
    return manifest, dump_path


def verify(real: str, failed: Callable[[str], Exception], name: str = "") -> dict:
    """Check mode's read: every check of unpack, the dump read and hashed but written nowhere. The manifest."""
    with open(os.devnull, "wb", buffering=0) as nowhere:
        manifest, _ = unpack(real, "", None, failed, name, sink=nowhere)
    return manifest


def stream_restore(real: str, start: Callable[..., subprocess.Popen], failed: Callable[[str], Exception],
                   name: str = "") -> dict:
    """The archive's one read (unpack), the dump going straight into the pg_restore that `start(stdin=,
    stdout=, stderr=)` starts (reading the dump from its stdin, into a database of the caller's). Every
    check of unpack is made; a failed one, or a failed pg_restore, raises `failed(sentence)`. The caller
    drops what pg_restore loaded when this raises. Returns the manifest."""
    with tempfile.TemporaryFile() as err:
        # stdout too: a module's own stdout carries its result to Ansible
        loader = start(stdin=subprocess.PIPE, stdout=err, stderr=err)
        big_pipe(loader.stdin)
        clean = False
        try:
            manifest, _ = unpack(real, "", None, failed, name, sink=loader.stdin)
            clean = True
        finally:
            try:
                loader.stdin.close()
            except BrokenPipeError:
                pass
            if not clean:
                loader.kill()
            code = loader.wait()
        if code != 0:
            err.seek(0)
            raise failed(f"pg_restore of {name or real}: {tail(err.read().decode(errors='replace'))}")
    return manifest
