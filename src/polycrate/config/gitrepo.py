"""The workspace's git, through the git CLI: what --auto-commit and `polycrate git ...` need."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from polycrate.errors import PolycrateError


def _git() -> str:
    git = shutil.which("git")
    if git is None:
        raise PolycrateError("git is not installed: apt-get install git")
    return git


def git(root: Path, *args: str, capture: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_git(), "-C", str(root), *args], capture_output=capture, text=True)


def is_repo(root: Path) -> bool:
    proc = git(root, "rev-parse", "--show-toplevel")
    return proc.returncode == 0


def config_value(root: Path, key: str) -> str:
    proc = git(root, "config", "--get", key)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def head(root: Path) -> str:
    proc = git(root, "rev-parse", "HEAD")
    return proc.stdout.strip() if proc.returncode == 0 else ""


def commit_all(root: Path, message: str, exclude: list[str] | tuple[str, ...] = ()) -> str | None:
    """`git add -A` and commit the workspace folder; the new commit's id, or None when nothing changed.
    `exclude`: paths (relative to the root) that are neither added nor committed."""
    if not is_repo(root):
        raise PolycrateError(f"{root} is not in a git repository (git init, or drop --auto-commit)")
    skip = [f":(exclude,literal){path}" for path in exclude]
    add = git(root, "add", "-A", "--", ".", *skip)
    if add.returncode != 0:
        raise PolycrateError(f"git add failed: {add.stderr.strip().splitlines()[-1] if add.stderr.strip() else add.returncode}")
    if git(root, "diff", "--cached", "--quiet", "--", ".").returncode == 0:
        return None
    proc = git(root, "commit", "-q", "-m", message, "--", ".", *skip)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise PolycrateError(f"git commit failed: {lines[-1] if lines else proc.returncode}")
    return head(root)


def untracked_or_changed(root: Path, paths: list[str]) -> bool:
    """Whether any of `paths` has something git would commit (untracked and not ignored, or changed)."""
    proc = git(root, "status", "--porcelain", "--", *[f":(literal){p}" for p in paths])
    return bool(proc.stdout.strip())
