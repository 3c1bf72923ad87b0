import os
import stat

import pytest

from polycrate.atomicfile import fsync_dir, write_atomic


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_content_and_mode(tmp_path):
    target = tmp_path / "unit.timer"
    write_atomic(target, "[Timer]\nOnCalendar=daily\n")
    assert target.read_text(encoding="utf-8") == "[Timer]\nOnCalendar=daily\n"
    assert _mode(target) == 0o644
    assert os.listdir(tmp_path) == ["unit.timer"]


def test_bytes_and_mode_replace_an_existing_file(tmp_path):
    target = tmp_path / "config.json"
    target.write_text("old")
    os.chmod(target, 0o644)
    write_atomic(target, b"\x00new\xff", 0o600)
    assert target.read_bytes() == b"\x00new\xff"
    assert _mode(target) == 0o600
    assert os.listdir(tmp_path) == ["config.json"]


def test_str_is_written_as_utf8(tmp_path):
    target = tmp_path / "t"
    write_atomic(target, "grüße")
    assert target.read_bytes() == "grüße".encode()


def test_before_replace_sees_a_complete_dot_temp_file_in_the_same_folder(tmp_path):
    target = tmp_path / "secret"
    seen = []

    def check(tmp):
        seen.append((tmp.parent, tmp.name, tmp.read_bytes(), _mode(tmp), target.exists()))

    write_atomic(target, b"data", 0o600, suffix=".polycrate-tmp", before_replace=check)
    [(folder, name, content, mode, target_existed)] = seen
    assert folder == tmp_path
    assert name.startswith(".secret.") and name.endswith(".polycrate-tmp")
    assert (content, mode, target_existed) == (b"data", 0o600, False)


def test_prefix_and_suffix_name_the_temp_file(tmp_path):
    names = []
    write_atomic(tmp_path / "x.prom", "1\n", prefix=".polycrate-", suffix=".prom.tmp",
                 before_replace=lambda tmp: names.append(tmp.name))
    assert names[0].startswith(".polycrate-") and names[0].endswith(".prom.tmp")


def test_prefix_must_make_a_dot_file(tmp_path):
    with pytest.raises(ValueError, match="dot-file"):
        write_atomic(tmp_path / "x", "1", prefix="polycrate-")
    assert os.listdir(tmp_path) == []


def test_failing_before_replace_keeps_the_old_content_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "blocks.lock"
    target.write_text("old\n")

    def refuse(tmp):
        raise RuntimeError("verification failed")

    with pytest.raises(RuntimeError, match="verification failed"):
        write_atomic(target, "new\n", before_replace=refuse)
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["blocks.lock"]


def test_failing_before_replace_creates_nothing_when_there_was_no_file(tmp_path):
    def refuse(tmp):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "new", "x", before_replace=refuse)
    assert os.listdir(tmp_path) == []


def test_failing_rename_keeps_the_old_content_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "occupied"
    target.mkdir()  # os.replace of a file over a folder fails
    (target / "inside").write_text("old")
    with pytest.raises(OSError):
        write_atomic(target, "new")
    assert (target / "inside").read_text() == "old"
    assert os.listdir(tmp_path) == ["occupied"]


def test_missing_folder_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "nope" / "file", "x")


def test_fsync_dir(tmp_path):
    fsync_dir(tmp_path)
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "nope")
