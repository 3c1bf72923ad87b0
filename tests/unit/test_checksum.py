"""`polycrate checksum DIR` recomputes gosimple/hashdir's MD5 (the real Polycrate's `checksum`)."""
import hashlib

from polycrate.blocks.checksum import directory_checksum


def _md5(data: str) -> str:
    return hashlib.md5(data.encode()).hexdigest()


def test_hashdir_algorithm_by_hand(tmp_path):
    root = tmp_path / "d"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("A")
    (root / "sub" / "b.txt").write_text("B")
    r = str(root)
    end = _md5("")                                   # the folder itself
    end = _md5(end) + _md5(f"{r}/a.txt") + _md5("A")  # a.txt
    end = _md5(end)                                  # sub/
    end = _md5(end) + _md5(f"{r}/sub/b.txt") + _md5("B")
    assert directory_checksum(r) == _md5(end)


def test_content_changes_the_checksum(tmp_path):
    (tmp_path / "f").write_text("1")
    before = directory_checksum(str(tmp_path))
    (tmp_path / "f").write_text("2")
    assert directory_checksum(str(tmp_path)) != before
