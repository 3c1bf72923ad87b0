"""server/launch_files.py: the rules of how long a launch's files are kept, with real age sealing."""
from __future__ import annotations

import os
import shutil
import time

import pytest

from polycrate.server.launch_files import GRACE_SECONDS, LaunchFiles, SecretsGone

RUN = "20261208-010101-aaaaaa"
OTHER = "20261208-010102-bbbbbb"


@pytest.fixture
def files(tmp_path):
    found = LaunchFiles(tmp_path / "state", keep_secrets=100)
    yield found
    shutil.rmtree(found.opened_folder(), ignore_errors=True)


def launched(files: LaunchFiles, run_id: str, secret: str) -> None:
    files.folder.mkdir(parents=True, exist_ok=True)
    (files.folder / f"{run_id}.out").write_text("output\n")
    (files.folder / f"{run_id}.vars.yml").write_text("note: x\n")
    files.write_secrets(run_id, {"password": secret})


def test_secret_values_are_sealed_at_rest_and_opened_for_the_run_only(files):
    launched(files, RUN, "s3cret-value")
    opened = files.opened_path(RUN)
    assert "s3cret-value" in opened.read_text() and oct(opened.stat().st_mode & 0o777) == "0o600"
    assert oct(opened.parent.stat().st_mode & 0o777) == "0o700"
    assert b"s3cret-value" not in files.sealed_path(RUN).read_bytes()
    assert files.secrets_of(RUN) == {"password": "s3cret-value"}
    files.close([opened])
    assert files.reopen([f"@{opened}", "@/etc/elsewhere/20261208-010101-aaaaaa.secret.yml", "k=v"], []) == [opened]
    assert files.secrets_of(RUN) == {"password": "s3cret-value"} and opened.is_file()


def test_past_the_bound_the_sealed_values_are_gone_and_said_so(files):
    launched(files, RUN, "s3cret-value")
    files.close([files.opened_path(RUN)])
    with pytest.raises(SecretsGone, match="no longer kept .this server keeps them 100 seconds after the launch"):
        files.secrets_of(RUN, now=time.time() + 101)
    assert not files.sealed_path(RUN).exists()
    with pytest.raises(SecretsGone):
        files.reopen([f"@{files.opened_path(RUN)}"], [])
    assert not files.opened_path(RUN).exists()


def test_the_sweep_follows_each_launchs_state(files):
    launched(files, RUN, "one")
    launched(files, OTHER, "two")
    states = {RUN: "ended", OTHER: "pruned"}
    assert files.sweep(states.__getitem__) == {"runs": 1, "opened": 1, "sealed": 0}
    assert sorted(os.listdir(files.folder)) == [f"{RUN}.out", f"{RUN}.secret.age", f"{RUN}.vars.yml"]
    assert not files.opened_path(RUN).exists()
    assert files.sweep(lambda _: "ended", now=time.time() + 101) == {"runs": 0, "opened": 0, "sealed": 1}
    assert files.sweep(lambda _: "unknown") == {"runs": 0, "opened": 0, "sealed": 0}  # maybe still launching
    assert files.sweep(lambda _: "unknown", now=time.time() + GRACE_SECONDS + 1)["runs"] == 1
    assert os.listdir(files.folder) == []


def test_a_launch_in_use_by_a_child_is_never_swept(files):
    launched(files, RUN, "one")
    users = files.hold(RUN)
    assert files.sweep(lambda _: "pruned") == {"runs": 0, "opened": 0, "sealed": 0}
    second = files.hold(RUN)  # a resume reopened it while the first child was closing
    files.finish(users, [files.opened_path(RUN)])
    assert files.opened_path(RUN).exists()
    files.finish(second, [files.opened_path(RUN)])
    assert not files.opened_path(RUN).exists()


def test_plaintext_of_an_older_version_is_sealed_and_removed(files):
    from polycrate.runtime.ansible_options import SECRET_FILE_HEAD

    files.folder.mkdir(parents=True)
    old = files.folder / f"{RUN}.secret.yml"
    old.write_text(f"{SECRET_FILE_HEAD}password: !unsafe 'older'\n")
    os.utime(old, (time.time() - 50, time.time() - 50))
    assert files.migrate(lambda _: "ended") == 1 and not old.exists()
    assert files.recorded_secrets(str(old)) == {"password": "older"}  # its launch record names the old file
    assert files.sweep(lambda _: "ended", now=time.time() + 51)["sealed"] == 1  # the bound counts from the launch


def test_plaintext_of_an_older_version_that_a_running_run_reads_goes_when_the_run_ends(files):
    from polycrate.runtime.ansible_options import SECRET_FILE_HEAD

    files.folder.mkdir(parents=True)
    old = files.folder / f"{RUN}.secret.yml"
    old.write_text(f"{SECRET_FILE_HEAD}password: !unsafe 'older'\n")
    assert files.migrate(lambda _: "running") == 1
    assert old.exists() and files.sealed_path(RUN).exists() and files.waiting == {RUN}
    assert files.sweep_waiting(lambda _: "ended") == 1 and not old.exists()
    assert files.secrets_of(RUN) == {"password": "older"}


def test_a_private_folder_that_is_not_the_servers_own_is_refused(files, tmp_path):
    from polycrate.errors import PolycrateError

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    files.opened_folder().symlink_to(elsewhere)
    try:
        with pytest.raises(PolycrateError, match="exists and is not a folder of this user's: remove it"):
            files.write_secrets(RUN, {"password": "never-written"})
        assert os.listdir(elsewhere) == []
    finally:
        files.opened_folder().unlink()


def test_values_of_a_run_the_server_did_not_start_go_once_it_ends(files):
    launched(files, RUN, "one")
    states = {RUN: "running"}
    files.sweep(states.__getitem__)
    assert files.waiting == {RUN} and files.opened_path(RUN).exists()
    assert files.sweep_waiting(states.__getitem__) == 0 and files.opened_path(RUN).exists()
    states[RUN] = "ended"
    assert files.sweep_waiting(states.__getitem__) == 1 and files.waiting == set()
    assert not files.opened_path(RUN).exists() and files.sealed_path(RUN).exists()
