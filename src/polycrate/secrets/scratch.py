"""Private folders that hold a run's decrypted secrets (``polycrate-secrets-*``, and a container run's folder
``polycrate-container-*`` that holds them for the container), and the sweep of those a killed run left.

A run removes its folder when it ends, also on exceptions and at interpreter exit; a run killed with SIGKILL
(or a power cut of a tmpfs-less machine) cannot. So each folder's name says which process owns it (its pid and
that process's start time, which tells a reused pid apart), and every new one first removes this user's
folders whose owner is gone: decrypted secrets outlive their run only until the next run on the host.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

PREFIXES = ("polycrate-secrets-", "polycrate-container-")
_OWNED = re.compile(r"^polycrate-(?:secrets|container)-(\d+)\.(\d+)-")


def private_base() -> str | None:
    """/dev/shm when usable (memory, never disk), else None: the system's temporary folder."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


def start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, /proc/PID/stat field 22); None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    try:  # the command name (field 2) may hold spaces and parentheses: count from its last ')'
        return int(text[text.rindex(")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def owner_alive(name: str) -> bool | None:
    """Whether the process a folder's name says owns it still runs; None for a name that says no owner."""
    match = _OWNED.match(name)
    if match is None:
        return None
    pid, ticks = int(match.group(1)), int(match.group(2))
    return start_ticks(pid) == ticks


def sweep(base: str | None = None) -> list[str]:
    """Remove this user's private folders under ``base`` whose owning process is gone; the removed paths.

    Folders whose name names no owner (made by a version before this) are left alone: whose they are cannot
    be told."""
    folder = base or tempfile.gettempdir()
    removed: list[str] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    uid = os.getuid()
    for name in names:
        if not name.startswith(PREFIXES) or owner_alive(name) is not False:
            continue
        path = os.path.join(folder, name)
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if info.st_uid != uid or not stat.S_ISDIR(info.st_mode):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def make_private_folder(prefix: str, folder: str | Path | None = None) -> Path:
    """A new 0700 folder named for this process, under ``folder`` or the private base (swept first)."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown private folder prefix {prefix!r}")
    base = str(folder) if folder is not None else private_base()
    if folder is None:
        sweep(base)
    pid = os.getpid()
    ticks = start_ticks(pid)
    owner = f"{pid}.{ticks}-" if ticks is not None else ""
    path = Path(tempfile.mkdtemp(prefix=prefix + owner, dir=base))
    os.chmod(path, stat.S_IRWXU)
    return path
