"""A team run's launch values, carried in PostgreSQL with the run (``team_run_values``), never in a file of the
launching host: a worker on another host, with a state folder and a home of its own, gets them from there.

What travels
    ``data``: the values of a launch over HTTP (declared launch variables, an admin's free-form extra vars), as
    JSON; the worker writes them as YAML with every text tagged ``!unsafe`` (as the server's own files were), so
    they reach Ansible as data, never templated.
    ``file``: the text of an ``--extra-vars @FILE`` given to `workflows run` at the terminal, verbatim (there the
    file keeps Ansible's own meaning: whoever types it is a user of the host already).
    Each takes the place of its ``@file`` among the run's ``--extra-vars`` (``REF`` + its position), so Ansible's
    order of precedence is the one given at the launch.

Secret values
    A secret-typed launch variable (one row per variable), or a file that starts with ``SECRET_FILE_HEAD``, is
    sealed with age to the workspace's ``encryption.recipients`` (each worker's `polycrate worker keygen`
    recipient is among them) before it leaves the launching process: its plaintext never sits in the database,
    the run record, the API, a log or the audit. The worker opens it with its own identity into a private
    folder of this process (secrets/scratch.py: 0700, on /dev/shm when usable, swept when its owner is gone)
    which it removes when the run ends; the file starts with ``SECRET_FILE_HEAD``, so the run masks each value.
    A worker that cannot open them fails the run with one line, nothing executed.

A relaunch from the server copies a run's sealed values as they are (``sealed_secrets``): the server never
decrypts them, and the operator who relaunches need not know them. The run's record names its opened values by
links under a name of the run's own (``_links``), so that a `--resume` of it, on any worker, opens them again
under the names its record keeps (run/opening.py reuses a resumed run's recorded --extra-vars).
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polycrate.errors import PolycrateError
from polycrate.history.postgres import Connection

LINKS = "polycrate-values-"  # + a run id: the names a run's record keeps for its opened values (``_links``)
REF = "@polycrate-launch-values:"  # an --extra-vars entry whose values are the run's row at this position
FILE_MAX = 1024 * 1024  # an --extra-vars file that travels with the run: at most this many bytes
_scratch: list[Path] = []  # this process's opened values, removed when the run ends (and at exit)


class ValuesRefused(PolycrateError):
    """The launch's values cannot travel with the run (no recipients for a secret, an unreadable file)."""


@dataclass(frozen=True)
class LaunchValue:
    """One set of a run's launch values, at its place among the run's --extra-vars."""

    kind: str  # "data" (JSON values from the web, !unsafe) or "file" (a terminal's --extra-vars @FILE, verbatim)
    names: tuple[str, ...] = ()  # the variables' names (for people: never a value)
    value: Any = None  # data, not secret: the values
    text: str | None = None  # file, not secret: its text
    sealed: bytes | None = None  # secret: the age ciphertext of the values' JSON, or of the file's text
    origin: str | None = None  # file: its path on the launching host

    @property
    def secret(self) -> bool:
        return self.sealed is not None


def seal(plain: bytes, recipients: list[str], what: str) -> bytes:
    """``plain`` encrypted with age to ``recipients`` (``what``: whose values, for the refusal)."""
    from polycrate.secrets.keys import pyrage_module

    if not recipients:
        raise ValuesRefused(f"{what}: secret values travel to a worker encrypted to the workspace's "
                            "encryption.recipients, and workspace.poly lists none: add each worker's recipient "
                            "(polycrate worker keygen), commit, and launch again; nothing was queued")
    pyrage = pyrage_module()
    return bytes(pyrage.encrypt(plain, [pyrage.x25519.Recipient.from_str(r) for r in recipients]))


def web_values(plain: dict[str, Any], secret: dict[str, Any], recipients: list[str]) -> list[LaunchValue]:
    """A launch over HTTP: its plain values as one set, each secret one sealed in a set of its own (so that a
    relaunch can take exactly the secrets the workflow still declares)."""
    values = [LaunchValue("data", tuple(sorted(plain)), value=plain)] if plain else []
    for name, value in sorted(secret.items()):
        values.append(LaunchValue("data", (name,), sealed=seal(json.dumps({name: value}).encode(), recipients,
                                                              f"launch variable {name}")))
    return values


def terminal_values(extra_vars: tuple[str, ...], recipients: list[str]) -> tuple[tuple[str, ...], list[LaunchValue]]:
    """A terminal's --extra-vars (already checked, @files absolute): each @FILE's text taken along (sealed when
    it starts with SECRET_FILE_HEAD), its place in the list a reference to it; the other forms stay as given."""
    from polycrate.runtime.ansible_options import SECRET_FILE_HEAD, _load_file

    given: list[str] = []
    values: list[LaunchValue] = []
    for entry in extra_vars:
        text = entry.strip()
        if not text.startswith("@"):
            given.append(entry)
            continue
        path = Path(text[1:])
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValuesRefused(f"--extra-vars: cannot read {path}: {exc.strerror}; nothing was queued") from None
        if len(data) > FILE_MAX:
            raise ValuesRefused(f"--extra-vars: {path} has {len(data)} bytes, a launch through the queue takes at "
                                f"most {FILE_MAX}; nothing was queued")
        try:
            content = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValuesRefused(f"--extra-vars: {path} is not UTF-8 text; nothing was queued") from None
        names = tuple(sorted(str(k) for k in _load_file(path)))
        if content.startswith(SECRET_FILE_HEAD):
            value = LaunchValue("file", names, sealed=seal(data, recipients, f"--extra-vars @{path}"), origin=str(path))
        else:
            value = LaunchValue("file", names, text=content, origin=str(path))
        given.append(f"{REF}{len(values)}")
        values.append(value)
    return tuple(given), values


def refs(values: list[LaunchValue]) -> tuple[str, ...]:
    """The --extra-vars entries of ``values`` in order (a launch over HTTP has no other)."""
    return tuple(f"{REF}{n}" for n in range(len(values)))


def save(db: Connection, workspace: str, run_id: str, values: list[LaunchValue]) -> None:
    """The run's values, in the caller's transaction (team/launch.py ``defer``)."""
    for position, value in enumerate(values):
        db.execute("INSERT INTO team_run_values (workspace, id, position, kind, names, value, text, sealed, origin)"
                   " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                   (workspace, run_id, position, value.kind, json.dumps(list(value.names)),
                    None if value.value is None else json.dumps(value.value), value.text, value.sealed, value.origin))


def load(db: Connection, workspace: str, run_id: str) -> list[LaunchValue]:
    rows = db.execute("SELECT * FROM team_run_values WHERE workspace = %s AND id = %s ORDER BY position",
                      (workspace, run_id)).fetchall()
    return [LaunchValue(r["kind"], tuple(r["names"] or ()), value=r["value"], text=r["text"],
                        sealed=None if r["sealed"] is None else bytes(r["sealed"]), origin=r["origin"]) for r in rows]


def sealed_secrets(db: Connection, workspace: str, run_id: str) -> dict[str, bytes]:
    """The secret launch variables of a run launched over HTTP, sealed as they were: name -> ciphertext."""
    return {v.names[0]: v.sealed for v in load(db, workspace, run_id)
            if v.kind == "data" and v.sealed is not None and len(v.names) == 1}


def _opened(value: LaunchValue, keyring: Any, identity: Path | None) -> bytes:
    from polycrate.secrets.store import decrypt_bytes

    assert value.sealed is not None
    what = ("the launch's secret value " + ", ".join(value.names) if value.kind == "data"
            else f"the launch's secret --extra-vars file {value.origin}")
    try:
        return decrypt_bytes(value.sealed, keyring, what)
    except PolycrateError as exc:
        if "not encrypted to the key in use" in exc.message:
            from polycrate.team.identity import recipient_of

            mine = f"{recipient_of(identity)}, {identity}" if identity is not None else keyring.describe()
            raise ValuesRefused(f"{what} is not encrypted to this worker's age identity ({mine}): add that "
                                "recipient to encryption.recipients in workspace.poly, commit and push, then launch "
                                "again") from None
        if "no key is available" in exc.message:
            raise ValuesRefused(f"{what} needs this worker's age identity and it has none: `polycrate worker keygen` "
                                "on this host, add its recipient to encryption.recipients in workspace.poly, then "
                                "launch again") from None
        raise ValuesRefused(f"{what}: {exc.message}") from None


def _texts(values: list[LaunchValue], keyring: Any, identity: Path | None) -> list[str]:
    """Each value set as the file Ansible reads (ValuesRefused: one that this worker cannot open)."""
    from polycrate.runtime.ansible_options import SECRET_FILE_HEAD, as_unsafe, dump_unsafe_yaml

    texts = []
    for value in values:
        if value.kind == "file":
            texts.append(value.text or "" if value.sealed is None else _opened(value, keyring, identity).decode("utf-8"))
        else:
            data = value.value if value.sealed is None else json.loads(_opened(value, keyring, identity))
            texts.append((SECRET_FILE_HEAD if value.sealed is not None else "") + dump_unsafe_yaml(as_unsafe(data)))
    return texts


def _links(run_id: str) -> Path:
    """Where a run's opened values are named (symbolic links into the private folder of the process that opened
    them): the run's record keeps these names, so that a --resume of it, on any worker, finds its values again
    under the same names, made anew there."""
    from polycrate.secrets.scratch import private_base

    return Path(private_base() or tempfile.gettempdir()) / f"{LINKS}{run_id}"


def _link_folder(run_id: str) -> Path | None:
    """The run's folder of links, made for this process: a stale one of ours (its process gone: every link
    dangles) is replaced; one of another user's is refused. None: the run's own process has it (this is a
    slice of its step, which records nothing: the files' own names do)."""
    folder = _links(run_id)
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        info = folder.lstat()
        if info.st_uid != os.getuid() or not folder.is_dir() or folder.is_symlink():
            raise ValuesRefused(f"{folder} exists and is not a folder of this user's: remove it") from None
        if any(p.exists() for p in folder.iterdir()):
            return None
        shutil.rmtree(folder)
        folder.mkdir(mode=0o700)
    _scratch.append(folder)
    return folder


def _resumed(db: Connection, row: dict[str, Any]) -> list[tuple[str, int, Path]]:
    """A --resume run reuses the Ansible options its previous run recorded (run/opening.py): the values among
    them that were opened under a run's link names, (run id, position, link)."""
    from polycrate.success import FULL_RUN_SQL

    found = db.execute(f"SELECT ansible_options FROM runs WHERE workspace = %s AND {FULL_RUN_SQL} AND name = %s"
                       " AND status != 'running' ORDER BY started DESC, id DESC LIMIT 1",
                       (row["workspace"], row["workflow"])).fetchone()
    wanted = []
    for entry in ((found or {}).get("ansible_options") or {}).get("extra_vars") or ():
        link = Path(str(entry).strip()[1:])
        if str(entry).strip().startswith("@") and link.parent.name.startswith(LINKS) and "-" in link.name:
            position = link.name.split("-", 1)[0]
            if position.isdigit():
                wanted.append((link.parent.name[len(LINKS):], int(position), link))
    return wanted


def open_values(db: Connection, row: dict[str, Any], identity: Path | None) -> str | None:
    """The run's launch values (or, for a --resume, those its previous run had) as files in a private folder of
    this process, named by links (``_links``), ``row["options"]`` made to name them (in place); why they cannot be
    opened (nothing left written then), or None. ``identity``: the worker's own (team/identity.py), else the
    usual key lookup of this user."""
    from polycrate.secrets.keys import Keyring
    from polycrate.secrets.scratch import make_private_folder

    options = dict(row["options"] or {})
    ansible = dict(options.get("ansible") or {})
    given = list(ansible.get("extra_vars") or ())
    wanted: list[tuple[str, int, Path | None]] = [(row["id"], int(str(e)[len(REF):]), None)
                                                  for e in given if str(e).startswith(REF)]
    if not wanted and options.get("resume"):
        wanted = list(_resumed(db, row))
    if not wanted:
        return None
    keyring = Keyring(identity, environ={}) if identity is not None else Keyring()
    try:
        opened: dict[tuple[str, int], Path] = {}
        folder = make_private_folder("polycrate-secrets-")
        _scratch.append(folder)
        if len(_scratch) == 1:
            atexit.register(remove_opened)
        for run_id in dict.fromkeys(w[0] for w in wanted):
            values = load(db, row["workspace"], run_id)
            links = _link_folder(run_id)
            for position, (value, text) in enumerate(zip(values, _texts(values, keyring, identity), strict=True)):
                name = f"{position}-" + (Path(value.origin).name if value.origin else
                                         ("secret" if value.secret else "vars") + ".yml")
                path = folder / f"{run_id}-{name}"
                with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w",
                               encoding="utf-8") as handle:
                    handle.write(text)
                if links is not None:
                    (links / name).symlink_to(path)
                opened[(run_id, position)] = path if links is None else links / name
        # a resumed run's values must be where its previous run's record says (a slice's need not: see _link_folder)
        missing = [w for w in wanted if (w[0], w[1]) not in opened or (
            w[2] is not None and opened[w[:2]].parent.name.startswith(LINKS) and w[2] != opened[w[:2]])]
        if missing:
            raise ValuesRefused(f"the launch values of run {missing[0][0]} cannot be found again (value set "
                                f"{missing[0][1]} at {missing[0][2] or 'its place'}): launch it anew")
    except ValuesRefused as exc:
        remove_opened()
        return exc.message
    resolved = [f"@{opened[(row['id'], int(str(e)[len(REF):]))]}" if str(e).startswith(REF) else e for e in given]
    row["options"] = options | {"ansible": ansible | {"extra_vars": resolved}}
    return None


def remove_opened() -> None:
    """Remove this process's opened values and their links (the run has ended)."""
    while _scratch:
        shutil.rmtree(_scratch.pop(), ignore_errors=True)


def with_sealed(values: list[LaunchValue], sealed: dict[str, bytes]) -> list[LaunchValue]:
    """``values`` and the sealed secrets of an earlier launch (a relaunch), as they are."""
    return values + [LaunchValue("data", (name,), sealed=blob) for name, blob in sorted(sealed.items())]


__all__ = ["FILE_MAX", "REF", "LaunchValue", "ValuesRefused", "load", "open_values", "refs", "remove_opened",
           "save", "seal", "sealed_secrets", "terminal_values", "web_values", "with_sealed"]
