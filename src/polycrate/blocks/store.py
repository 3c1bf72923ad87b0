"""Blocks on disk: packing, safe unpacking, atomic install and uninstall, the lock file.

Nothing here talks to a registry (that is ``registry.py``). The rules:

* A block travels as one deterministic ``tar.gz`` of its folder (sorted entries, mtime 0,
  owner 0, modes reduced to 755/644), so the same folder always gives the same digest.
* The *content digest* is a sha256 over a canonical listing of the folder (path, type, mode,
  file sha256 or link target). Push stores it as an annotation; pull recomputes it from the
  unpacked folder, so a tampered archive is caught even when its blob digest was forged.
* Unpacking checks the whole archive first (``check_archive``) and writes nothing when any
  member is unsafe: absolute paths, ``..``, links leaving the block, hard links, devices,
  FIFOs, duplicates, too many members or too many bytes.
* Install stages into ``blocks/.polycrate-staging-*`` (ignored by discovery), verifies,
  then swaps with ``os.rename``: the old block stays as it was until the new one is complete.
* ``blocks.lock`` in the workspace root pins the manifest digest of every pulled
  ``registry/path:version``.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from polycrate.atomicfile import write_atomic
from polycrate.errors import PolycrateError

LOCK_FILE = "blocks.lock"
BLOCKS_DIR = "blocks"
MAX_BLOCK_BYTES = 100 * 1024 * 1024  # a block archive's size limit (POLYCRATE_BLOCK_MAX_BYTES: registry.transport_settings)
MAX_MEMBERS = 10_000
_PACK_SKIP = {".git", "__pycache__", ".polycrate"}


class UnsafeArchive(PolycrateError):
    """An archive that would write outside its folder, or is otherwise unfit to unpack."""


class IntegrityError(PolycrateError):
    """Content that does not match its digest or its lock entry."""


# --- packing and the content digest -------------------------------------------------------


def _walk(folder: Path) -> Iterator[tuple[str, Path]]:
    """(posix relative path, absolute path) of everything a block is made of, sorted."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in _PACK_SKIP and not d.startswith(".polycrate-"))
        base = Path(dirpath)
        for name in sorted([*dirnames, *filenames]):
            if name in filenames and name.endswith(".pyc"):
                continue
            path = base / name
            yield path.relative_to(folder).as_posix(), path


def _mode(st_mode: int) -> int:
    if stat.S_ISDIR(st_mode):
        return 0o755
    return 0o755 if st_mode & 0o111 else 0o644


def content_digest(folder: Path) -> str:
    """sha256 over the canonical listing of a block folder (see module docstring)."""
    h = hashlib.sha256()
    for rel, path in sorted(_walk(folder)):
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            entry = f"l {rel} {os.readlink(path)}"
        elif stat.S_ISDIR(st.st_mode):
            entry = f"d {rel}"
        elif stat.S_ISREG(st.st_mode):
            entry = f"f {rel} {_mode(st.st_mode):o} {_file_sha256(path)}"
        else:
            raise UnsafeArchive(f"{path}: not a regular file, folder or symlink")
        h.update(entry.encode() + b"\n")
    return "sha256:" + h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: Path) -> str:
    return "sha256:" + _file_sha256(path)


def pack_block(folder: Path, dest: Path) -> str:
    """Write the block folder as a deterministic tar.gz to `dest`; return its content digest.

    Links that leave the folder are refused here too: what we would not unpack we do not push.
    """
    folder = folder.resolve()
    with open(dest, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for rel, path in _walk(folder):
                st = os.lstat(path)
                info = tarfile.TarInfo(rel)
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if stat.S_ISLNK(st.st_mode):
                    target = os.readlink(path)
                    _check_link(rel, target)
                    info.type = tarfile.SYMTYPE
                    info.linkname = target
                    info.mode = 0o777
                    tar.addfile(info)
                elif stat.S_ISDIR(st.st_mode):
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
                elif stat.S_ISREG(st.st_mode):
                    info.size = st.st_size
                    info.mode = _mode(st.st_mode)
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    raise UnsafeArchive(f"{path}: not a regular file, folder or symlink; cannot push it")
    return content_digest(folder)


# --- safe unpacking ---------------------------------------------------------------------------


def _check_name(name: str) -> str:
    if not name or "\x00" in name or "\\" in name:
        raise UnsafeArchive(f"archive member {name!r} has an invalid name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"archive member {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"archive member {name!r} contains '..'")
    if not parts:
        raise UnsafeArchive(f"archive member {name!r} has an empty path")
    return "/".join(parts)


def _check_link(name: str, target: str) -> None:
    if not target or target.startswith("/"):
        raise UnsafeArchive(f"archive member {name!r} is a link to an absolute path ({target!r})")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
        raise UnsafeArchive(f"archive member {name!r} is a link pointing outside the block ({target!r})")


@dataclass(frozen=True)
class Member:
    name: str  # normalized
    info: tarfile.TarInfo


def check_archive(archive: Path, max_bytes: int = MAX_BLOCK_BYTES, max_members: int = MAX_MEMBERS) -> list[Member]:
    """Every member of the tar.gz, checked; raises UnsafeArchive on the first unsafe one."""
    members: list[Member] = []
    seen: set[str] = set()
    links: set[str] = set()
    total = 0
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for info in tar:
                name = _check_name(info.name)
                if name in seen:
                    raise UnsafeArchive(f"archive member {name!r} appears twice")
                parents = name.split("/")[:-1]
                for i in range(1, len(parents) + 1):
                    if "/".join(parents[:i]) in links:
                        raise UnsafeArchive(f"archive member {name!r} lies under a symlink")
                if info.issym():
                    _check_link(name, info.linkname)
                    links.add(name)
                elif info.islnk():
                    raise UnsafeArchive(f"archive member {name!r} is a hard link")
                elif info.isdev() or info.isfifo():
                    raise UnsafeArchive(f"archive member {name!r} is a device or FIFO")
                elif not (info.isreg() or info.isdir()):
                    raise UnsafeArchive(f"archive member {name!r} has an unsupported type")
                total += max(info.size, 0)
                if total > max_bytes:
                    raise UnsafeArchive(f"archive unpacks to more than {max_bytes} bytes")
                if len(members) >= max_members:
                    raise UnsafeArchive(f"archive has more than {max_members} members")
                seen.add(name)
                members.append(Member(name, info))
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
        raise UnsafeArchive(f"archive is not a valid tar.gz ({exc})") from None
    if not members:
        raise UnsafeArchive("archive is empty")
    return members


def extract_checked(archive: Path, members: list[Member], dest: Path) -> None:
    """Unpack members that ``check_archive`` accepted into the empty folder `dest`."""
    with tarfile.open(archive, mode="r:gz") as tar:
        by_name = {m.info.name: m for m in members}
        for info in tar:
            member = by_name[info.name]
            target = dest / member.name
            if info.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if info.issym():
                os.symlink(info.linkname, target)
                continue
            source = tar.extractfile(info)
            assert source is not None
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out, source:
                shutil.copyfileobj(source, out)
            os.chmod(target, 0o755 if info.mode & 0o111 else 0o644)


# --- install / uninstall ----------------------------------------------------------------------


def check_relpath(relpath: str) -> str:
    """A registry path used as a folder under blocks/: no absolute paths, no '..'."""
    clean = _check_name(relpath)
    if clean != relpath:
        raise UnsafeArchive(f"block path {relpath!r} is not a clean relative path")
    return clean


def install_block(
    root: Path,
    relpath: str,
    archive: Path,
    expected_content: str | None,
    validate=None,
    max_bytes: int = MAX_BLOCK_BYTES,
    blocks_root: str = BLOCKS_DIR,
) -> Path:
    """Unpack `archive` as blocks/<relpath>, replacing what is there only when all checks pass.

    `validate(folder)` (optional) inspects the staged block (e.g. parses block.poly and
    compares the version); it raises to refuse. Returns the installed folder.
    """
    relpath = check_relpath(relpath)
    members = check_archive(archive, max_bytes)  # before anything is written
    blocks_dir = root / blocks_root
    created_blocks_dir = not blocks_dir.exists()
    blocks_dir.mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".polycrate-staging-", dir=blocks_dir))
    target = blocks_dir / relpath
    created_parents: list[Path] = []
    try:
        unpacked = staging / "block"
        unpacked.mkdir()
        extract_checked(archive, members, unpacked)
        if not (unpacked / "block.poly").is_file():
            raise UnsafeArchive("archive has no block.poly at its top level")
        if expected_content:
            actual = content_digest(unpacked)
            if actual != expected_content:
                raise IntegrityError(
                    f"content digest mismatch: the archive unpacks to {actual}, the manifest says "
                    f"{expected_content} (tampered or corrupted artifact)"
                )
        if validate is not None:
            validate(unpacked)
        for parent in reversed(target.parents):
            if parent == blocks_dir or blocks_dir not in parent.parents:
                continue
            if not parent.exists():
                parent.mkdir()
                created_parents.append(parent)
        old = None
        if target.exists() or target.is_symlink():
            old = staging / "old"
            os.rename(target, old)
        try:
            os.rename(unpacked, target)
        except OSError:
            if old is not None:
                os.rename(old, target)
            raise
    except BaseException:
        for parent in reversed(created_parents):
            try:
                parent.rmdir()
            except OSError:
                pass
        shutil.rmtree(staging, ignore_errors=True)
        if created_blocks_dir:
            try:
                blocks_dir.rmdir()
            except OSError:
                pass
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return target


def uninstall_block(root: Path, folder: Path) -> None:
    """Remove an installed block folder and the registry-path folders it leaves empty."""
    blocks_dir = (root / BLOCKS_DIR).resolve()
    folder = folder.resolve()
    if blocks_dir not in folder.parents:
        raise PolycrateError(f"{folder} is not under {blocks_dir}")
    # move aside first, so a half-deleted block is never discovered
    trash = Path(tempfile.mkdtemp(prefix=".polycrate-trash-", dir=blocks_dir))
    os.rename(folder, trash / "block")
    shutil.rmtree(trash)
    parent = folder.parent
    while parent != blocks_dir:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent


# --- the lock file ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LockEntry:
    digest: str  # manifest digest
    content: str | None = None  # content digest


def read_lock(root: Path) -> dict[str, LockEntry]:
    from polycrate.config.yamlfile import load_yaml

    path = root / LOCK_FILE
    if not path.exists() and not path.is_symlink():
        return {}
    data = load_yaml(path) or {}  # bounded, UTF-8, a FIFO or a folder refused: one line naming the file
    blocks = data.get("blocks") if isinstance(data, dict) else None
    if blocks is None:
        return {}
    if not isinstance(blocks, dict):
        raise PolycrateError("'blocks' must be a mapping of reference -> digest", path)
    result: dict[str, LockEntry] = {}
    for ref, entry in blocks.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
            raise PolycrateError(f"entry {ref!r} needs a 'digest'", path)
        result[str(ref)] = LockEntry(entry["digest"], entry.get("content"))
    return result


def check_pin(lock: dict[str, LockEntry], reference: str, digest: str, update_lock: bool) -> bool:
    """True when `reference` must be (re)written to the lock; raises when the pin differs."""
    pinned = lock.get(reference)
    if pinned is None:
        return True
    if pinned.digest == digest:
        return False
    if update_lock:
        return True
    raise IntegrityError(
        f"{reference} now has digest {digest} but {LOCK_FILE} pins {pinned.digest}: the tag was re-pushed "
        "with different content; check with the block's publisher, then pull with --update-lock to accept it"
    )


def write_lock(root: Path, lock: dict[str, LockEntry]) -> None:
    import yaml

    data = {
        "blocks": {
            ref: {"digest": e.digest, **({"content": e.content} if e.content else {})}
            for ref, e in sorted(lock.items())
        }
    }
    text = (
        "# Written by `polycrate blocks pull`: the digest of every pulled block version.\n"
        "# Commit it. A pull whose digest differs from the pin is refused (see --update-lock).\n"
        + yaml.safe_dump(data, sort_keys=False)
    )
    write_atomic(root / LOCK_FILE, text, 0o644)  # committed with the workspace, like workspace.poly

