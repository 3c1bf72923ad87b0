"""The files of the server's launches (single-host mode), and how long each is kept: the one place for these rules.

In the state folder's ``launches/``, per run id: ``RUN.out`` (the child's output until its run is recorded),
``RUN.vars.yml`` (the launch's plain values, ``!unsafe``) and ``RUN.secret.age``: the launch's secret-typed values
sealed with age (team/values.py ``seal``, as team mode seals them) to the server's own key, ``launch-key.txt`` in
the state folder (0600, made on first use). Their plaintext exists only while a run uses it: written to the
server's private folder (``opened_folder``: 0700, on /dev/shm when usable, as secrets/scratch.py's are) under the
launch's own run id, and removed when the run ends. The run's record names that path, so a relaunch or a resume
opens the sealed values there again, for as long as the run uses them.

How long
    - a run's files go when its record goes (the history's retention, ``keep_runs``/``keep_days``): the server
      sweeps after each run it launched ends, on its start and every ``SWEEP_SECONDS``; the plaintext values of
      a run that a server before a restart launched go within ``WAITING_SECONDS`` of its end;
    - a launch that got no record (refused, failed to start) leaves none (``discard``), and a leftover one goes
      after ``GRACE_SECONDS``;
    - sealed secret values go after ``serve --keep-launch-secrets`` (default ``DEFAULT_KEEP_SECRETS``, 7 days, from
      the launch); a relaunch or a resume after that asks for them again (``SecretsGone``).

Plaintext ``RUN.secret.yml`` files that versions before this left in ``launches/`` are sealed on the server's
start and removed (``migrate``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from polycrate.errors import PolycrateError

DEFAULT_KEEP_SECRETS = 7 * 86400
GRACE_SECONDS = 3600  # a launch's files without a run record (nor a launch record) after this are leftovers
SWEEP_SECONDS = 600
WAITING_SECONDS = 5  # how often the values of a run the server did not start itself are checked (sweep_waiting)
KEY_FILE = "launch-key.txt"
SEALED = ".secret.age"
OPENED = ".secret.yml"  # the plaintext while a run uses it (and the name versions before this kept at rest)
_RUN_FILE = re.compile(r"^([0-9]{8}-[0-9]{6}-[0-9a-f]{6,64})\.(out|vars\.yml|secret\.age|secret\.yml)$")
log = logging.getLogger("polycrate.server")


class SecretsGone(PolycrateError):
    """The sealed secret values of a launch are no longer kept: they must be given again."""


def keep_words(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    return f"{days} days" if not rest and days != 1 else "1 day" if not rest else f"{seconds} seconds"


class LaunchFiles:
    def __init__(self, state_dir: Path, keep_secrets: int = DEFAULT_KEEP_SECRETS):
        self.state_dir = state_dir
        self.folder = state_dir / "launches"
        self.keep_secrets = keep_secrets
        self._held: dict[str, int] = {}  # run id -> how many of this server's children use its files
        self._guard = threading.RLock()
        self.waiting: set[str] = set()  # launches whose values a run not of this server's children uses

    def hold(self, run_id: str) -> list[str]:
        """Launch ``run_id``'s files are in use by a child of this server (until ``release``): never swept."""
        with self._guard:
            self._held[run_id] = self._held.get(run_id, 0) + 1
        return [run_id]

    def release(self, users: list[str]) -> None:
        with self._guard:
            for run_id in users:
                if self._held.get(run_id, 0) <= 1:
                    self._held.pop(run_id, None)
                else:
                    self._held[run_id] -= 1

    def finish(self, users: list[str], opened: list[Path]) -> None:
        """A child has ended: release its launches, and remove the plaintext values it used that no other child of
        this server uses now (a resume opens the values of the run it resumes at the same path, maybe while that
        run's process is still closing)."""
        with self._guard:
            self.release(users)
            self.close(p for p in opened if (m := _RUN_FILE.match(p.name)) is None or m.group(1) not in self._held)

    def held(self, run_id: str) -> bool:
        with self._guard:
            return run_id in self._held

    # --- where -------------------------------------------------------------------------------

    def opened_folder(self) -> Path:
        """The server's private folder of plaintext secret values in use (one per state folder and user)."""
        from polycrate.secrets.scratch import private_base

        digest = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:16]
        return Path(private_base() or tempfile.gettempdir()) / f"polycrate-launch-{os.getuid()}-{digest}"

    def _ensure_opened_folder(self) -> Path:
        folder = self.opened_folder()
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            info = folder.lstat()
            if info.st_uid != os.getuid() or not stat.S_ISDIR(info.st_mode):
                raise PolycrateError(f"{folder} exists and is not a folder of this user's: remove it") from None
            os.chmod(folder, stat.S_IRWXU)
        return folder

    def sealed_path(self, run_id: str) -> Path:
        return self.folder / f"{run_id}{SEALED}"

    def opened_path(self, run_id: str) -> Path:
        return self.opened_folder() / f"{run_id}{OPENED}"

    # --- the server's key --------------------------------------------------------------------

    def _key(self) -> Path:
        return self.state_dir / KEY_FILE

    def _recipient(self) -> str:
        from polycrate.secrets.keys import Keyring, generate_identity

        key = self._key()
        with self._guard:  # two first launches at once make one key
            if not key.exists():
                return generate_identity(key)
            return Keyring(key, environ={}).recipients()[0]

    # --- writing and opening ------------------------------------------------------------------

    def write_secrets(self, run_id: str, values: dict[str, Any]) -> Path:
        """The launch's secret values sealed at rest, and opened for its run; the opened file's path."""
        from polycrate.team.values import seal

        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        sealed = seal(json.dumps(values).encode(), [self._recipient()], f"the secret values of launch {run_id}")
        fd = os.open(self.sealed_path(run_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(sealed)
        return self._write_opened(self.opened_path(run_id), values)

    def _write_opened(self, path: Path, values: dict[str, Any]) -> Path:
        """The plaintext as Ansible reads it: SECRET_FILE_HEAD (the run masks each value), every text `!unsafe`."""
        from polycrate.runtime.ansible_options import SECRET_FILE_HEAD, as_unsafe, dump_unsafe_yaml

        with self._guard:  # (close removes the folder once empty)
            if path.parent == self.opened_folder():
                self._ensure_opened_folder()
            path.unlink(missing_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(SECRET_FILE_HEAD + dump_unsafe_yaml(as_unsafe(values)))
        return path

    def secrets_of(self, run_id: str, now: float | None = None) -> dict[str, Any]:
        """The secret values launch ``run_id`` was given (for a relaunch, a resume); SecretsGone past the bound."""
        from polycrate.secrets.keys import Keyring
        from polycrate.secrets.store import decrypt_bytes

        path = self.sealed_path(run_id)
        try:
            if (now or time.time()) - path.stat().st_mtime > self.keep_secrets:
                path.unlink(missing_ok=True)
                raise FileNotFoundError
            data = path.read_bytes()
        except FileNotFoundError:
            raise SecretsGone(f"the secret launch values of run {run_id} are no longer kept (this server keeps them "
                              f"{keep_words(self.keep_secrets)} after the launch: serve --keep-launch-secrets)") from None
        try:
            return json.loads(decrypt_bytes(data, Keyring(self._key(), environ={}), str(path)))
        except PolycrateError as exc:
            raise SecretsGone(f"the secret launch values of run {run_id} cannot be opened: {exc.message}") from None

    def recorded_secrets(self, recorded: str | None) -> dict[str, Any]:
        """The secret values of a launch by the file its launch record names (``RUN.secret.age``, or the plaintext
        ``RUN.secret.yml`` of a version before this, since sealed by ``migrate``); {} for none."""
        if not recorded:
            return {}
        match = _RUN_FILE.match(Path(recorded).name)
        if match is None:
            raise SecretsGone(f"the secret launch values kept at {Path(recorded).name} are no longer kept")
        return self.secrets_of(match.group(1))

    def reopen(self, paths: Iterable[str], users: list[str]) -> list[Path]:
        """For a resume: the secret values files its run's record names (``@PATH`` entries), opened there again
        from their launch's sealed values; the paths written (to close when the run ends). SecretsGone: one is not
        kept any longer (nothing is left written then)."""
        wanted = []
        for entry in paths:
            text = str(entry).strip()
            path = Path(text[1:]) if text.startswith("@") else None
            match = _RUN_FILE.match(path.name) if path is not None else None
            if path is None or match is None or match.group(2) != "secret.yml":
                continue
            if path.parent not in (self.opened_folder(), self.folder):  # not ours: the run checks it itself
                continue
            wanted.append((match.group(1), path))
        opened: list[Path] = []
        try:
            for run_id, path in wanted:
                users += self.hold(run_id)
                opened.append(self._write_opened(path, self.secrets_of(run_id)))
        except BaseException:
            self.close(opened)
            raise
        return opened

    def close(self, paths: Iterable[Path | None]) -> None:
        """Remove plaintext values a run no longer uses, and the private folder once empty."""
        with self._guard:
            for path in paths:
                if path is not None:
                    path.unlink(missing_ok=True)
            self._tidy()

    def _tidy(self) -> None:
        try:
            self.opened_folder().rmdir()
        except OSError:  # not empty, or not there
            pass

    def discard(self, run_id: str) -> None:
        """Every file of launch ``run_id`` (a launch that got no record, a run whose record was pruned)."""
        for suffix in (".out", ".vars.yml", SEALED, OPENED):
            (self.folder / f"{run_id}{suffix}").unlink(missing_ok=True)
        self.close([self.opened_path(run_id)])

    # --- the sweep -----------------------------------------------------------------------------

    def run_ids(self) -> dict[str, float]:
        """Every launch with a file here or opened: run id -> the newest of its files' times."""
        found: dict[str, float] = {}
        for folder in (self.folder, self.opened_folder()):
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            for name in names:
                match = _RUN_FILE.match(name)
                if match is None:
                    continue
                try:
                    mtime = (folder / name).stat().st_mtime
                except OSError:
                    continue
                found[match.group(1)] = max(found.get(match.group(1), 0.0), mtime)
        return found

    def migrate(self, run_state: Callable[[str], str]) -> int:
        """Seal the plaintext secret values files versions before this kept in ``launches/``, keeping their launch's
        time (the bound counts from it), and remove them: at once, or once their run ends when it is running
        (``waiting``: an older server's child may read them at its next step); how many were found."""
        from polycrate.runtime.ansible_options import _load_file

        count = 0
        try:
            names = sorted(os.listdir(self.folder))
        except OSError:
            return 0
        for name in names:
            match = _RUN_FILE.match(name)
            if match is None or match.group(2) != "secret.yml":
                continue
            path = self.folder / name
            sealed = self.sealed_path(match.group(1))
            try:
                launched = path.stat().st_mtime
                if not sealed.exists():
                    values = {k: str(v) for k, v in _load_file(path).items()}
                    self._seal_only(sealed, values)
                    os.utime(sealed, (launched, launched))
            except (OSError, PolycrateError):
                pass  # unreadable: removed all the same, a relaunch asks for the values again
            if run_state(match.group(1)) == "running":
                self.waiting.add(match.group(1))
            else:
                path.unlink(missing_ok=True)
            count += 1
        return count

    def _plaintexts(self, run_id: str) -> list[Path]:
        """Where launch ``run_id``'s values may be in plaintext: opened for a run (and, left by a version before
        this, in ``launches/``)."""
        return [self.opened_path(run_id), self.folder / f"{run_id}{OPENED}"]

    def _seal_only(self, sealed: Path, values: dict[str, Any]) -> None:
        from polycrate.team.values import seal

        blob = seal(json.dumps(values).encode(), [self._recipient()], f"the secret values of {sealed.name}")
        fd = os.open(sealed, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)

    def sweep(self, run_state: Callable[[str], str], now: float | None = None) -> dict[str, int]:
        """Remove what has outlived its use; ``run_state(run_id)`` says for each launch: "running" (its run, or
        another run of its workflow, may use its values: the lock is held), "ended" (its record is there),
        "pruned" (the server launched it, and its record is gone), "unknown" (the server has no record of the
        launch: refused, or made by another server on this state folder). Counts of what went, by kind."""
        now = now or time.time()
        counts = {"runs": 0, "opened": 0, "sealed": 0}
        waiting = set()
        for run_id, newest in self.run_ids().items():
            if self.held(run_id):
                continue
            state = run_state(run_id)
            if state == "running" and any(p.exists() for p in self._plaintexts(run_id)):
                waiting.add(run_id)  # a run no child of ours runs (the server was restarted): watched closely
            if state == "pruned" or (state == "unknown" and now - newest > GRACE_SECONDS):
                self.discard(run_id)
                counts["runs"] += 1
                continue
            if state != "running":
                opened = [p for p in self._plaintexts(run_id) if p.exists()]
                if opened:
                    self.close(opened)
                    counts["opened"] += 1
            sealed = self.sealed_path(run_id)
            try:
                expired = now - sealed.stat().st_mtime > self.keep_secrets
            except OSError:
                expired = False
            if expired:
                sealed.unlink(missing_ok=True)
                counts["sealed"] += 1
        self.waiting = waiting
        return counts

    def sweep_waiting(self, run_state: Callable[[str], str]) -> int:
        """Between sweeps: the plaintext values of runs that were running at the last sweep, removed once their
        run has ended (``waiting``); how many."""
        removed = 0
        for run_id in sorted(self.waiting):
            if self.held(run_id) or run_state(run_id) == "running":
                continue
            self.waiting.discard(run_id)
            opened = [p for p in self._plaintexts(run_id) if p.exists()]
            if opened:
                self.close(opened)
                removed += 1
        return removed


__all__ = ["DEFAULT_KEEP_SECRETS", "GRACE_SECONDS", "LaunchFiles", "SWEEP_SECONDS", "SecretsGone", "WAITING_SECONDS",
           "keep_words"]
