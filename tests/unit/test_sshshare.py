"""The rule for the user's SSH settings (runtime/sshshare.py): what polycrate sets, what it leaves to the
user's environment and ansible.cfg; the run's folder is private and short."""
import os
import stat

import pytest

from polycrate.runtime import ssh_masters as sshshare


@pytest.fixture
def sharing(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    s = sshshare.SSHSharing()
    yield s
    s.close()


def test_the_folder_is_private_short_and_removed(sharing):
    assert stat.S_IMODE(os.stat(sharing.dir).st_mode) == 0o700
    assert len(sharing.dir) <= sshshare.MAX_DIR_LENGTH
    assert os.path.basename(sharing.dir).startswith(f"pcssh-{os.getpid()}-")
    sharing.close()
    assert not os.path.exists(sharing.dir)


def test_nothing_set_by_the_user_gets_polycrates_defaults(sharing, tmp_path):
    env = sharing.environment({"HOME": str(tmp_path / "home")}, tmp_path)
    assert env["ANSIBLE_SSH_ARGS"] == "-C -o ControlMaster=auto -o ControlPersist=600s"
    assert env["ANSIBLE_SSH_CONTROL_PATH_DIR"] == sharing.dir


def test_the_users_environment_wins(sharing, tmp_path):
    given = {"HOME": str(tmp_path), "ANSIBLE_SSH_ARGS": "", "ANSIBLE_SSH_CONTROL_PATH": "/x/%%h"}
    assert sharing.environment(given, tmp_path) == given
    only_args = sharing.environment({"HOME": str(tmp_path), "ANSIBLE_SSH_ARGS": "-o ControlPersist=5s"}, tmp_path)
    assert only_args["ANSIBLE_SSH_ARGS"] == "-o ControlPersist=5s"
    assert only_args["ANSIBLE_SSH_CONTROL_PATH_DIR"] == sharing.dir  # their masters end with the run


@pytest.mark.parametrize("where", ["cwd", "home", "ANSIBLE_CONFIG"])
def test_the_users_ansible_cfg_wins(sharing, tmp_path, where):
    cfg = "[ssh_connection]\nssh_args = -o ControlMaster=no\ncontrol_path_dir = /var/tmp/mine\n"
    cwd, home = tmp_path / "block", tmp_path / "home"
    cwd.mkdir()
    home.mkdir(exist_ok=True)
    env = {"HOME": str(home)}
    if where == "cwd":
        (cwd / "ansible.cfg").write_text(cfg)
    elif where == "home":
        (home / ".ansible.cfg").write_text(cfg)
    else:
        (tmp_path / "elsewhere.cfg").write_text(cfg)
        env["ANSIBLE_CONFIG"] = str(tmp_path / "elsewhere.cfg")
    assert sharing.environment(env, cwd) == env


def test_an_ansible_cfg_without_ssh_settings_changes_nothing(sharing, tmp_path):
    (tmp_path / "ansible.cfg").write_text("[defaults]\nforks = 7\n[ssh_connection]\npipelining = true\n")
    env = sharing.environment({"HOME": str(tmp_path / "home")}, tmp_path)
    assert env["ANSIBLE_SSH_CONTROL_PATH_DIR"] == sharing.dir and "ControlPersist" in env["ANSIBLE_SSH_ARGS"]


def test_a_world_writable_folders_ansible_cfg_is_ignored_as_ansible_does(sharing, tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    (open_dir / "ansible.cfg").write_text("[ssh_connection]\nssh_args = -o ControlMaster=no\n")
    env = sharing.environment({"HOME": str(tmp_path / "home")}, open_dir)
    assert "ControlPersist" in env["ANSIBLE_SSH_ARGS"]


def test_a_dead_runs_folder_is_swept_and_a_live_ones_kept(tmp_path):
    dead = tmp_path / "pcssh-999999999-abc"
    live = tmp_path / f"pcssh-{os.getpid()}-abc"
    other = tmp_path / "pcssh-notapid"
    for d in (dead, live, other):
        d.mkdir()
    sshshare.sweep_stale(str(tmp_path))
    assert not dead.exists() and live.exists() and other.exists()


def test_off_switch(monkeypatch):
    monkeypatch.setenv("POLYCRATE_SSH_SHARING", "0")
    assert sshshare.start() is None
