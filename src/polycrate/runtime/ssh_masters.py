"""SSH connection sharing for one run: ControlPersist masters that outlive a step's process.

Ansible's ssh connection opens one SSH master per host and keeps it for ``ControlPersist``
(60 s by default) in ``~/.ansible/cp``, shared by every process of the user and left behind when
the play ends. A run of polycrate instead gets its own private folder (``pcssh-<pid>-<random>``
in the temporary folder, mode 0700, short enough for the unix socket limit of 108 bytes): step 2
reuses the masters step 1 opened (no new TCP connection, key exchange or authentication), and when
the run ends, however it ends (success, failure, interrupt), ``close`` ends every master in the
folder (``ssh -O exit``, then SIGTERM/SIGKILL to any that is still there) and removes it. A run
killed with SIGKILL cannot do that: its masters end after ``ControlPersist`` idle time, and the
next run sweeps the folders of dead runs (``sweep_stale``).

The rule for the user's settings (each checked in the environment and in the ansible.cfg the step
will read; host and group variables always beat both, as Ansible's precedence says):

* ``ssh_args`` (ANSIBLE_SSH_ARGS, ``[ssh_connection] ssh_args``, ``ansible_ssh_args``): set by the
  user, it wins whole. Otherwise polycrate sets Ansible's default with a longer persistence:
  ``-C -o ControlMaster=auto -o ControlPersist=600s`` (the run closes the masters itself; 600 s
  bounds what a killed run leaves).
* the socket location (ANSIBLE_SSH_CONTROL_PATH(_DIR), ``control_path``, ``control_path_dir``,
  ``ansible_control_path(_dir)``): set by the user, it wins and polycrate neither uses nor closes
  those sockets. Otherwise it is the run's folder, and whatever masters the user's ssh_args start
  there end with the run.
* ``POLYCRATE_SSH_SHARING=0`` turns all of this off (Ansible's own defaults apply).

The container runtime does not get it (the folder is not inside the container).
"""
from __future__ import annotations

import configparser
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

PREFIX = "pcssh-"
CONTROL_PERSIST = "600s"
SSH_ARGS = f"-C -o ControlMaster=auto -o ControlPersist={CONTROL_PERSIST}"
MAX_DIR_LENGTH = 60  # + "/" + 10-character hash + ssh's 17-character temporary suffix < 108
OFF = ("0", "false", "no", "off")


def enabled(environ=os.environ) -> bool:
    return environ.get("POLYCRATE_SSH_SHARING", "1").strip().lower() not in OFF


def ansible_config_file(env: dict[str, str], cwd: Path) -> Path | None:
    """The ansible.cfg Ansible would read in `cwd` (ANSIBLE_CONFIG, ./ansible.cfg, ~/.ansible.cfg,
    /etc/ansible/ansible.cfg; ./ansible.cfg is skipped in a world-writable folder, as Ansible does)."""
    given = env.get("ANSIBLE_CONFIG")
    candidates: list[Path] = []
    if given:
        path = Path(os.path.expanduser(given))
        candidates.append(path / "ansible.cfg" if path.is_dir() else path)
    try:
        if not os.stat(cwd).st_mode & stat.S_IWOTH:
            candidates.append(Path(cwd) / "ansible.cfg")
    except OSError:
        pass
    home = env.get("HOME") or os.path.expanduser("~")
    candidates += [Path(home) / ".ansible.cfg", Path("/etc/ansible/ansible.cfg")]
    for path in candidates:
        if path.is_file():
            return path
    return None


def config_keys(path: Path | None, section: str = "ssh_connection") -> set[str]:
    """The keys set in `section` of the ansible.cfg `path` (lower case); empty when unreadable."""
    if path is None:
        return set()
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read(path)
    except (configparser.Error, OSError, UnicodeDecodeError):
        return set()
    if not parser.has_section(section):
        return set()
    return {key.lower() for key in parser.options(section)}


def _short_tmp() -> str:
    tmp = tempfile.gettempdir()
    return tmp if len(tmp) <= MAX_DIR_LENGTH - 30 else "/tmp"


def _masters(folder: str) -> list[int]:
    """PIDs of the ssh masters whose socket is in `folder` (their title is "ssh: <socket> [mux]")."""
    mark = f"ssh: {folder}/".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read(4096)
        except OSError:
            continue
        if cmdline.startswith(mark):
            found.append(int(entry))
    return found


def close_folder(folder: str, grace: float = 2.0) -> None:
    """End every master with its socket in `folder`, then remove the folder."""
    sockets = []
    try:
        sockets = [e.path for e in os.scandir(folder)
                   if stat.S_ISSOCK(e.stat(follow_symlinks=False).st_mode)]
    except OSError:
        pass
    exits = []
    for sock in sockets:
        try:
            exits.append(subprocess.Popen(
                ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "polycrate-ssh-master"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        except OSError:
            break
    deadline = time.monotonic() + 5.0
    for proc in exits:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for sig, wait in ((None, grace), (signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        pids = _masters(folder)
        if not pids:
            break
        if sig is not None:
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        end = time.monotonic() + wait
        while time.monotonic() < end and _masters(folder):
            time.sleep(0.02)
    shutil.rmtree(folder, ignore_errors=True)


def sweep_stale(tmp: str | None = None) -> None:
    """Close the folders of runs that died without closing theirs (their pid no longer exists)."""
    tmp = tmp or _short_tmp()
    try:
        entries = list(os.scandir(tmp))
    except OSError:
        return
    uid = os.getuid()
    for entry in entries:
        if not entry.name.startswith(PREFIX):
            continue
        try:
            pid = int(entry.name[len(PREFIX):].split("-", 1)[0])
            if entry.stat(follow_symlinks=False).st_uid != uid or not entry.is_dir(follow_symlinks=False):
                continue
        except (ValueError, OSError):
            continue
        try:
            os.kill(pid, 0)
            continue  # its run is alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        close_folder(entry.path)


class SSHSharing:
    """The run's private ControlPath folder and the settings that put the masters there."""

    def __init__(self):
        sweep_stale()
        self.dir = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=_short_tmp())  # mode 0700
        self.closed = False

    def environment(self, env: dict[str, str], cwd: Path) -> dict[str, str]:
        """`env` with the settings the user did not set (the rule in the module's docstring)."""
        keys = config_keys(ansible_config_file(env, cwd))
        out = dict(env)
        if "ANSIBLE_SSH_ARGS" not in env and "ssh_args" not in keys:
            out["ANSIBLE_SSH_ARGS"] = SSH_ARGS
        if not ({"ANSIBLE_SSH_CONTROL_PATH", "ANSIBLE_SSH_CONTROL_PATH_DIR"} & env.keys()
                or {"control_path", "control_path_dir"} & keys):
            out["ANSIBLE_SSH_CONTROL_PATH_DIR"] = self.dir
        return out

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            close_folder(self.dir)


def start() -> SSHSharing | None:
    """The run's sharing, or None when POLYCRATE_SSH_SHARING turns it off or no folder can be made."""
    if not enabled():
        return None
    try:
        return SSHSharing()
    except OSError:
        return None
