"""Safe unpacking, deterministic packing, atomic install and the lock file: blockstore's rules."""
import gzip
import io
import tarfile
from pathlib import Path

import pytest

from polycrate.blocks import store as blockstore
from polycrate.blocks.store import IntegrityError, LockEntry, UnsafeArchive
from tests.conftest import write

BLOCK_POLY = "name: tool\nversion: 1.0.0\nactions:\n  - name: go\n    script: [echo go]\n"


def make_tar(path: Path, entries) -> Path:
    """entries: (name, kind, data_or_linkname); kind in file, dir, sym, hard, chr, fifo."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            payload = None
            if kind == "file":
                payload = data.encode() if isinstance(data, str) else data
                info.size = len(payload)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, data
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, data
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    path.write_bytes(buf.getvalue())
    return path


GOOD = [("block.poly", "file", BLOCK_POLY), ("tasks", "dir", None), ("tasks/a.yml", "file", "- debug: {}\n"),
        ("tasks/link.yml", "sym", "a.yml")]


def test_a_good_archive_passes(tmp_path):
    members = blockstore.check_archive(make_tar(tmp_path / "a.tgz", GOOD))
    assert [m.name for m in members] == ["block.poly", "tasks", "tasks/a.yml", "tasks/link.yml"]


@pytest.mark.parametrize(
    "entry, reason",
    [
        (("/etc/passwd", "file", "x"), "absolute path"),
        (("../evil", "file", "x"), "'..'"),
        (("tasks/../../evil", "file", "x"), "'..'"),
        (("out", "sym", "../../etc"), "outside the block"),
        (("out", "sym", "/etc/passwd"), "absolute path"),
        (("hl", "hard", "block.poly"), "hard link"),
        (("null", "chr", None), "device"),
        (("pipe", "fifo", None), "device or FIFO"),
        (("block.poly", "file", "again"), "appears twice"),
        (("tasks/link.yml/x", "file", "x"), "under a symlink"),
    ],
)
def test_unsafe_members_are_refused(tmp_path, entry, reason):
    with pytest.raises(UnsafeArchive) as err:
        blockstore.check_archive(make_tar(tmp_path / "a.tgz", [*GOOD, entry]))
    assert reason in str(err.value)


def test_size_and_garbage_limits(tmp_path):
    big = make_tar(tmp_path / "big.tgz", [("block.poly", "file", BLOCK_POLY), ("blob", "file", b"0" * 5000)])
    with pytest.raises(UnsafeArchive, match="more than 1000 bytes"):
        blockstore.check_archive(big, max_bytes=1000)
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(UnsafeArchive, match="not a valid tar.gz"):
        blockstore.check_archive(junk)


def test_refused_archive_writes_nothing(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    archive = make_tar(tmp_path / "a.tgz", [*GOOD, ("../../escaped", "file", "x")])
    with pytest.raises(UnsafeArchive):
        blockstore.install_block(root, "reg.example.com/t/tool", archive, None)
    assert list(root.iterdir()) == []
    assert not (tmp_path / "escaped").exists()


def test_pack_is_deterministic_and_round_trips(tmp_path):
    src = tmp_path / "src"
    write(src / "block.poly", BLOCK_POLY)
    write(src / "tasks/a.yml", "- debug: {}\n")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    (src / "tasks/link.yml").symlink_to("a.yml")
    d1 = blockstore.pack_block(src, tmp_path / "one.tgz")
    d2 = blockstore.pack_block(src, tmp_path / "two.tgz")
    assert d1 == d2 and (tmp_path / "one.tgz").read_bytes() == (tmp_path / "two.tgz").read_bytes()
    root = tmp_path / "ws"
    root.mkdir()
    folder = blockstore.install_block(root, "reg.example.com/t/tool", tmp_path / "one.tgz", d1)
    assert folder == root / "blocks/reg.example.com/t/tool"
    assert blockstore.content_digest(folder) == d1
    assert (folder / "run.sh").stat().st_mode & 0o111 and (folder / "tasks/link.yml").is_symlink()


def test_pack_refuses_a_link_leaving_the_block(tmp_path):
    src = tmp_path / "src"
    write(src / "block.poly", BLOCK_POLY)
    (src / "secret").symlink_to("/etc/shadow")
    with pytest.raises(UnsafeArchive, match="absolute path"):
        blockstore.pack_block(src, tmp_path / "a.tgz")


def test_failed_install_leaves_the_old_block_as_it_was(tmp_path):
    root = tmp_path / "ws"
    old = write(root / "blocks/reg.example.com/t/tool/block.poly", BLOCK_POLY)
    archive = make_tar(tmp_path / "a.tgz", [("block.poly", "file", BLOCK_POLY.replace("1.0.0", "2.0.0"))])
    with pytest.raises(IntegrityError, match="content digest mismatch"):
        blockstore.install_block(root, "reg.example.com/t/tool", archive, "sha256:" + "0" * 64)
    assert old.read_text() == BLOCK_POLY
    assert sorted(p.name for p in (root / "blocks").iterdir()) == ["reg.example.com"]  # no staging left
    # and a good one replaces it
    folder = blockstore.install_block(root, "reg.example.com/t/tool", archive, None)
    assert "2.0.0" in (folder / "block.poly").read_text()


def test_relpath_must_be_clean():
    for bad in ("/abs/path", "reg/../x", "a//b"):
        with pytest.raises(UnsafeArchive):
            blockstore.check_relpath(bad)


def test_lock_pins_digests(tmp_path):
    assert blockstore.read_lock(tmp_path) == {}
    lock = {"reg.example.com/t/tool:1.0.0": LockEntry("sha256:aaa", "sha256:ccc")}
    blockstore.write_lock(tmp_path, lock)
    assert blockstore.read_lock(tmp_path) == lock
    assert blockstore.check_pin(lock, "reg.example.com/t/tool:1.0.0", "sha256:aaa", False) is False
    assert blockstore.check_pin(lock, "reg.example.com/t/tool:2.0.0", "sha256:bbb", False) is True
    with pytest.raises(IntegrityError, match="re-pushed"):
        blockstore.check_pin(lock, "reg.example.com/t/tool:1.0.0", "sha256:bbb", False)
    assert blockstore.check_pin(lock, "reg.example.com/t/tool:1.0.0", "sha256:bbb", True) is True
