"""The linux-maintenance block's archive writer and its checks (library/pg_archive.py), on a byte stream
standing in for the dump's bytes (the real pg_dump, rclone and S3 are in tests/e2e): the archive is a
plain .tar.gz (tarfile and gzip read it, with the dump and the manifest), with igzip and with zlib,
and each check refuses an archive damaged where it looks."""
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import tarfile
from functools import cache
from pathlib import Path

import pytest

from tests.block_library import load

pga = load("pg_archive", "pg_archive")
IGZIP = shutil.which("igzip")
COMPRESSORS = ["zlib", pytest.param("igzip", marks=pytest.mark.skipif(not IGZIP, reason="igzip (isal) not installed"))]


@cache
def dump_bytes(n: int = 3_000_001) -> bytes:
    """Compressible but not trivial, and a size that needs tar padding."""
    rnd = random.Random(7)
    words = [b"customer", b"order", b"Berlin", b"shipped", b"%d" % rnd.randrange(10**6), b"\n"]
    out = bytearray()
    while len(out) < n:
        out += rnd.choice(words) + bytes([rnd.randrange(256)])
    return bytes(out[:n])


def pack(tmp_path: Path, data: bytes, compressor: str) -> dict:
    def describe(size, sha256):
        return {"database": "acme_app", "dump_file": "acme_app.dump", "size": size, "sha256": sha256}

    return pga.pack_archive(str(tmp_path / "archive.tar.gz"), io.BytesIO(data), "acme_app.dump", describe,
                            level=1, igzip=IGZIP if compressor == "igzip" else None, crc_on=True)


def damage(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x55]))


@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_the_archive_is_a_plain_tar_gz_with_the_dump_and_its_manifest(tmp_path, compressor):
    data = dump_bytes()
    written = pack(tmp_path, data, compressor)
    path = written["path"]
    with tarfile.open(path, "r:gz") as tar:
        assert tar.getnames() == ["acme_app.dump", "manifest.json"]
        assert tar.extractfile("acme_app.dump").read() == data
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert manifest == written["manifest"]
    assert manifest["size"] == len(data) and manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert len(gzip.decompress(Path(path).read_bytes())) % tarfile.RECORDSIZE == 0
    for check in (pga.check_archive(path, written, IGZIP if compressor == "igzip" else None),
                  pga.check_structure(path, "acme_app.dump", written)):
        assert check["sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
        assert check["md5"] == hashlib.md5(Path(path).read_bytes()).hexdigest()
        assert check["archive_size"] == os.path.getsize(path)


@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_the_full_check_refuses_a_damaged_dump_member(tmp_path, compressor):
    written = pack(tmp_path, dump_bytes(), compressor)
    lay = written["layout"]
    damage(written["path"], (len(lay["header"]) + lay["data_end"]) // 2)  # inside the compressed dump
    with pytest.raises(pga.BackupFailed, match="does not verify"):
        pga.check_archive(written["path"], written, IGZIP if compressor == "igzip" else None)


@pytest.mark.parametrize("compressor", COMPRESSORS)
@pytest.mark.parametrize("where", ["header", "trailer", "manifest"])
def test_both_checks_refuse_a_damaged_header_trailer_or_manifest(tmp_path, compressor, where):
    written = pack(tmp_path, dump_bytes(), compressor)
    lay = written["layout"]
    offset = {"header": 30, "trailer": lay["data_end"] - 6, "manifest": lay["data_end"] + 20}[where]
    damage(written["path"], offset)
    with pytest.raises(pga.BackupFailed, match="does not verify"):
        pga.check_structure(written["path"], "acme_app.dump", written)
    with pytest.raises(pga.BackupFailed, match="does not verify"):
        pga.check_archive(written["path"], written, IGZIP if compressor == "igzip" else None)


def test_a_truncated_archive_does_not_verify(tmp_path):
    written = pack(tmp_path, dump_bytes(), "zlib")
    with open(written["path"], "r+b") as f:
        f.truncate(written["layout"]["data_end"] + 10)
    with pytest.raises(pga.BackupFailed, match="does not verify"):
        pga.check_archive(written["path"], written, None)
    if IGZIP:
        with pytest.raises(pga.BackupFailed, match="does not verify"):
            pga.check_archive(written["path"], written, IGZIP)


def test_an_empty_dump_still_makes_a_valid_archive(tmp_path):
    written = pack(tmp_path, b"", "zlib")
    with tarfile.open(written["path"], "r:gz") as tar:
        assert tar.extractfile("acme_app.dump").read() == b""
    pga.check_archive(written["path"], written, None)


def test_igzip_is_required_only_when_asked_for(monkeypatch):
    monkeypatch.setattr(pga.shutil, "which", lambda name: None)
    assert pga.find_igzip("auto") is None and pga.find_igzip("zlib") is None
    with pytest.raises(pga.BackupFailed, match="igzip is not installed.*isal"):
        pga.find_igzip("igzip")
