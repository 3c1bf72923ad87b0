"""Where a worker gets the workspace it runs: the launched commit, fetched from the workspace repository's git
remote into a cache of its own.

At the launch (``workspace_source``) the remote is chosen on the launching host, in this order: the one
workspace.poly names (``team: {remote: NAME-or-URL}``: a remote of the repository, resolved to its URL, or a
URL or path as written), else the remote of the checked-out branch's upstream, else the repository's only
remote. Its URL and the workspace's folder inside the repository are recorded with the run (``team_run_sources``).
A password in the URL is not recorded (the worker fetches with its own credentials). A repository without any
remote records none: its runs are run from the same folder on the worker's host, as a
one-host setup has it (execute.workspace_problem).

On the worker (``checkout``) the cache is ``CACHE/<hash of the URL>/``: ``mirror.git``, a bare repository that
fetches the remote's branches and tags, and ``checkouts/<commit>/``, one detached worktree per commit, made once
and reused by the later runs of that commit. An ``flock`` on ``CACHE/<hash>/lock`` lets one run at a time fetch
and check out, so the runs of one worker (or of several workers sharing a cache) never collide. A run holds a
shared ``flock`` on its checkout's ``checkouts/<commit>.lock`` for its life; the checkouts beyond the
``KEEP_CHECKOUTS`` most recently used that no run holds are removed. A commit the
remote does not have (not pushed) or a remote that cannot be reached is ``SourceUnavailable``: one line, and
the run fails with nothing executed.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from polycrate.errors import PolycrateError

FETCH_TIMEOUT = 600.0  # seconds a fetch may take before the run fails
COMPLETE = ".polycrate-checkout"  # written into a checkout once it is whole: a half-made one is made again
KEEP_CHECKOUTS = 10  # checkouts kept per remote beyond those in use (the most recently used)


class SourceUnavailable(PolycrateError):
    """The worker cannot get the launched commit (not on the remote, remote unreachable, cache unusable)."""


@dataclass(frozen=True)
class WorkspaceSource:
    """Where the launched commit comes from: the remote's URL, and the workspace's folder in the repository
    ("" at its top)."""

    remote: str
    subdir: str = ""


def _password_replaced(url: str, shown: str | None) -> str:
    """``url`` with its password (if any) replaced by ``shown``, or dropped with its colon for None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:{shown}" if shown is not None else parts.username
    return urlunsplit(parts._replace(netloc=f"{user}@{host}" if user else host))


def shown_url(url: str) -> str:
    """``url`` for people and logs: a password in it (https://user:token@host/...) is never shown."""
    return _password_replaced(url, "***")


def without_password(url: str) -> str:
    """``url`` as it is recorded with a launch: a password or token in it stays on the launching host (the worker
    fetches with its own credentials)."""
    return _password_replaced(url, None)


def _git(*argv: str, cwd: Path | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    # never a prompt for credentials on a worker that nobody watches: a remote that needs one fails
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true", SSH_ASKPASS="true")
    try:
        return subprocess.run(["git", *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise PolycrateError("git is not installed: apt-get install git") from None
    except subprocess.TimeoutExpired:
        raise SourceUnavailable(f"git {argv[0]} took longer than {timeout:g}s") from None


def _last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line.strip() for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {proc.returncode}"


# --- the launching side ----------------------------------------------------------------------------


def declared_remote(root: Path) -> str | None:
    """``team.remote`` of the workspace's workspace.poly (checked by the schema when the workspace loaded)."""
    from polycrate.config.yamlfile import load_yaml

    raw = load_yaml(root / "workspace.poly")
    team = raw.get("team") if isinstance(raw, dict) else None
    remote = team.get("remote") if isinstance(team, dict) else None
    return str(remote).strip() or None if remote is not None else None


def _remote_url(repo: Path, name: str) -> str | None:
    got = _git("remote", "get-url", "--", name, cwd=repo)
    return got.stdout.strip() if got.returncode == 0 and got.stdout.strip() else None


def workspace_source(root: Path) -> WorkspaceSource | None:
    """The remote a worker fetches the workspace's commit from (see the module's docstring); None for a
    repository without remotes."""
    top = _git("rev-parse", "--show-toplevel", cwd=root)
    if top.returncode != 0:
        raise PolycrateError(f"team mode runs a committed workspace: {root} is not in a git repository")
    repo = Path(top.stdout.strip())
    subdir = Path(os.path.relpath(root.resolve(), repo.resolve())).as_posix()
    subdir = "" if subdir == "." else subdir
    declared = declared_remote(root)
    if declared is not None:
        url = _remote_url(repo, declared)
        if url is None:  # not a remote's name: a URL, or a path (made absolute: the worker has another cwd)
            local = (root / declared) if not declared.startswith(("/", "~")) and "://" not in declared else None
            url = str(local.resolve()) if local is not None and local.exists() else declared
        return WorkspaceSource(without_password(url), subdir)
    upstream = _git("rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{upstream}", cwd=repo)
    if upstream.returncode == 0 and "/" in upstream.stdout:
        branch = _git("symbolic-ref", "-q", "HEAD", cwd=repo).stdout.strip().removeprefix("refs/heads/")
        name = _git("config", "--get", f"branch.{branch}.remote", cwd=repo).stdout.strip()
        url = _remote_url(repo, name) if name and name != "." else None
        if url is not None:
            return WorkspaceSource(without_password(url), subdir)
    remotes = _git("remote", cwd=repo).stdout.split()
    if len(remotes) == 1:
        url = _remote_url(repo, remotes[0])
        if url is not None:
            return WorkspaceSource(without_password(url), subdir)
    if remotes:
        raise PolycrateError(f"the workspace's repository has {len(remotes)} remotes ({', '.join(remotes)}) and its "
                             "branch has no upstream: name the one workers fetch from in workspace.poly "
                             "(team: {remote: NAME}) or set an upstream (git push -u REMOTE BRANCH); nothing was "
                             "queued", root / "workspace.poly")
    return None


def pushed(root: Path, commit: str) -> bool:
    """Whether a remote-tracking branch of the repository has ``commit`` (as far as this clone knows; a
    repository that tracks no remote branch at all is not judged)."""
    tracked = _git("for-each-ref", "--count=1", "refs/remotes", cwd=root)
    if tracked.returncode != 0 or not tracked.stdout.strip():
        return True
    return bool(_git("for-each-ref", "--count=1", "--contains", commit, "refs/remotes", cwd=root).stdout.strip())


# --- the worker's side -----------------------------------------------------------------------------


def default_cache(name: str) -> Path:
    """A worker's cache of fetched workspaces: $XDG_CACHE_HOME/polycrate/worker/NAME."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "polycrate" / "worker" / name


def repo_cache(cache: Path, remote: str) -> Path:
    return cache / hashlib.sha256(remote.encode()).hexdigest()[:16]


@dataclass
class Checkout:
    """A checked-out commit in a worker's cache, in use: a shared lock on it keeps it from being pruned until
    ``release`` (or the end of the process that holds it)."""

    root: Path  # the workspace folder in the checkout
    _fd: int | None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def checkout(cache: Path, source: WorkspaceSource, commit: str, keep: int = KEEP_CHECKOUTS) -> Checkout:
    """The workspace folder of ``commit`` from ``source``, fetched and checked out in ``cache`` if it is not
    there yet (see the module's docstring), held until released; SourceUnavailable says why it cannot be had.
    Checkouts beyond the ``keep`` most recently used that no run holds are removed."""
    import fcntl

    if len(commit) != 40 or any(c not in "0123456789abcdef" for c in commit):
        raise SourceUnavailable(f"the launch recorded {commit!r}, which is not a commit id")
    home = repo_cache(cache, source.remote)
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        (home / "checkouts").mkdir(exist_ok=True)
        lock = os.open(home / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise SourceUnavailable(f"cannot use the worker's cache {home}: {exc.strerror}") from None
    tree = home / "checkouts" / commit
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one run at a time fetches, checks out and prunes
        if not (tree / COMPLETE).is_file():
            mirror = _mirror(home, source.remote)
            _fetch(mirror, source.remote, commit)
            _worktree(mirror, tree, commit)
        os.utime(tree / COMPLETE)  # used now: the last to be pruned
        held = os.open(home / "checkouts" / f"{commit}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(held, fcntl.LOCK_SH)  # taken before the cache's lock is let go: nobody prunes it in between
        _prune(home, keep)
    finally:
        os.close(lock)
    root = tree / source.subdir if source.subdir else tree
    if not (root / "workspace.poly").is_file():
        os.close(held)
        raise SourceUnavailable(f"commit {commit[:12]} of {shown_url(source.remote)} has no workspace.poly in "
                                f"{source.subdir or 'its top folder'}")
    return Checkout(root, held)


def _prune(home: Path, keep: int) -> None:
    """Remove the checkouts beyond the ``keep`` most recently used that no run holds (under the cache's lock)."""
    import fcntl

    made = sorted((p for p in (home / "checkouts").iterdir() if (p / COMPLETE).is_file()),
                  key=lambda p: (p / COMPLETE).stat().st_mtime, reverse=True)
    removed = False
    for tree in made[keep:]:
        fd = os.open(tree.with_name(tree.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a run uses it
            (tree / COMPLETE).unlink()  # first: a half-removed checkout is made again, never used as it is
            shutil.rmtree(tree, ignore_errors=True)
            tree.with_name(tree.name + ".lock").unlink()  # safe: holders take it under the cache's lock only
            removed = True
        finally:
            os.close(fd)
    if removed and (home / "mirror.git").is_dir():
        _git("--git-dir", str(home / "mirror.git"), "worktree", "prune")


def _mirror(home: Path, remote: str) -> Path:
    mirror = home / "mirror.git"
    if not (mirror / "HEAD").is_file():
        shutil.rmtree(mirror, ignore_errors=True)
        made = _git("init", "-q", "--bare", str(mirror))
        if made.returncode != 0:
            raise SourceUnavailable(f"cannot make the worker's mirror {mirror}: {_last_line(made)}")
    (home / "remote").write_text(shown_url(remote) + "\n")  # for people who look into the cache
    return mirror


def _has_commit(mirror: Path, commit: str) -> bool:
    return _git("--git-dir", str(mirror), "cat-file", "-e", f"{commit}^{{commit}}").returncode == 0


def _fetch(mirror: Path, remote: str, commit: str) -> None:
    if _has_commit(mirror, commit):
        return
    # the remote's branches and tags: a commit they do not reach was not pushed, and no worker can run it
    fetched = _git("--git-dir", str(mirror), "fetch", "--quiet", "--prune", "--no-tags", "--", remote,
                   "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*", timeout=FETCH_TIMEOUT)
    if fetched.returncode != 0:
        raise SourceUnavailable(f"cannot fetch from {shown_url(remote)}: {_last_line(fetched)}")
    if not _has_commit(mirror, commit):
        raise SourceUnavailable(f"commit {commit[:12]} is not on the remote {shown_url(remote)} (no branch or tag "
                                "there has it): push it, then launch again")


def _worktree(mirror: Path, tree: Path, commit: str) -> None:
    if tree.exists():  # a checkout that a killed run left half-made
        shutil.rmtree(tree, ignore_errors=True)
    _git("--git-dir", str(mirror), "worktree", "prune")
    tree.parent.mkdir(parents=True, exist_ok=True)
    added = _git("--git-dir", str(mirror), "worktree", "add", "--force", "--detach", "--quiet", str(tree), commit,
                 timeout=FETCH_TIMEOUT)
    if added.returncode != 0:
        raise SourceUnavailable(f"cannot check out commit {commit[:12]} in {tree}: {_last_line(added)}")
    (tree / COMPLETE).write_text(commit + "\n")
    exclude = mirror / "info" / "exclude"  # the marker is ours, not a change of the workspace
    exclude.parent.mkdir(parents=True, exist_ok=True)
    if COMPLETE not in (exclude.read_text() if exclude.is_file() else ""):
        with exclude.open("a") as fh:
            fh.write(f"/{COMPLETE}\n")


__all__ = ["Checkout", "SourceUnavailable", "WorkspaceSource", "checkout", "default_cache", "declared_remote", "pushed",
           "shown_url", "workspace_source"]
