#!/usr/bin/python
# -*- coding: utf-8 -*-
# linux-maintenance block: the restore (restore action, and the update's rollback).
from __future__ import annotations

DOCUMENTATION = r"""
---
module: pg_restore_archive
short_description: Replace a PostgreSQL database with a verified linux-maintenance backup archive
description:
  - "One read of the archive (C(latest.tar.gz) may be a symbolic link): that read feeds its SHA-256, compared with the
    C(.sha256) sidecar the backup wrote, and the inflater at the same time. The dump inside is hashed on the way; its
    SHA-256 and size must equal the manifest's (C(manifest.json) inside the archive). A damaged, truncated or altered
    archive fails naming what differs, and the database is left as it was."
  - "With O(jobs=1) (the default) the dump streams from that read straight into C(pg_restore), which loads it into a
    new database beside the old one (C(<database>_restoring_<random>), owned by O(owner)). Only when the read has
    verified everything and C(pg_restore) succeeded is the old database dropped (C(dropdb --force)) and the new one
    renamed to its name. Any failure drops the new database; the old one is untouched. There is no copy of the dump
    on disk and no wait for an unpack, but the host needs room for the database twice while it restores."
  - "With O(jobs) above 1 the dump is first written into a private work folder (in O(work_dir)) and verified; only
    then (and once C(pg_restore -l) could read it as O(os_user), and an empty database owned by O(owner) could be
    created beside the old one) is the old database dropped, the empty one renamed to its name and loaded with
    C(pg_restore -j) O(jobs). A failure from then on leaves the database partly restored; a stop (SIGTERM, the run
    stopped: its SSH session gone) from then on waits until C(pg_restore) has loaded it to its end. Worth it on a host with
    many cores and many large tables. The work folder is removed whatever happens."
  - "Room first: with O(jobs=1) the filesystem of PostgreSQL's data directory must have room for another copy of
    O(database) (its size and a tenth), above 1 the work folder's for the dump (the size the sidecar manifest gives).
    Otherwise the restore does not start, naming the figures: a full data directory stops the whole server."
  - "One module call in place of a dozen tasks (stat, slurp, tar, chown, shell): the restore and the update's rollback
    cost one round trip, and the archive and the dump are each read once."
  - Runs as root on the database host; the PostgreSQL tools run as O(os_user) through the local socket.
options:
  archive:
    description: The archive to restore (a path; C(latest.tar.gz) may be a symbolic link).
    type: path
    required: true
  database:
    description: The database to replace.
    type: str
    required: true
  owner:
    description: The role that owns the database created again; empty for O(os_user).
    type: str
    default: ""
  host:
    description: Where PostgreSQL listens on this host (a socket directory or an address); empty for the default socket.
    type: str
    default: ""
  port:
    description: The PostgreSQL port on this host.
    type: int
    default: 5432
  os_user:
    description: The operating system user the PostgreSQL tools run as (a superuser through the local socket).
    type: str
    default: postgres
  jobs:
    description: C(pg_restore -j) connections. 1 streams the dump into C(pg_restore) (no copy on disk); more unpacks
      it first (C(pg_restore -j) needs a file).
    type: int
    default: 1
  work_dir:
    description: With O(jobs) above 1, where the dump is unpacked for pg_restore (a private folder is made inside);
      default the archive's folder.
    type: path
  read_archive:
    description:
      - "In check mode, V(false) skips the read of the archive and checks only what a restore checks before it reads:
        the archive is there, its sidecar manifest names the expected database, and there is room for the restore.
        The update's preflight uses it to refuse an update whose rollback could not restore the database."
    type: bool
    default: true
  from_database:
    description:
      - The database the archive must be a backup of (its manifest's C(database)); empty for O(database). An archive
        of another database is refused before anything is dropped, so that a mistyped archive name cannot replace
        production with another database's content. Name the other database here to restore it on purpose (a
        staging copy loaded from production's backup, for example).
      - The block's config key C(restore_from_database), or C(RESTORE_FROM_DATABASE) in the environment for one run.
    type: str
    default: ""
notes:
  - Check mode verifies the archive against its C(.sha256) and the dump against the manifest (the whole read) and
    drops nothing.
  - Imports the block's C(module_utils/lm_archive.py); Ansible finds it beside the block's playbooks.
author: linux-maintenance block
"""

EXAMPLES = r"""
- name: Replace acme_app with the latest backup
  pg_restore_archive:
    archive: /var/backups/acme-db/latest.tar.gz
    database: acme_app
    owner: acme
    port: 5432
    jobs: 1  # the default: the dump streams into pg_restore; 4 would unpack it first, then pg_restore -j 4
  register: restore

- name: Load production's backup into the staging database, on purpose
  pg_restore_archive:
    archive: /var/backups/acme-db/acme_app-20261206T020000Z.tar.gz
    database: acme_app_staging
    from_database: acme_app

- name: Only verify the archive a restore would use
  pg_restore_archive:
    archive: /var/backups/acme-db/acme_app-20261206T020000Z.tar.gz
    database: acme_app
  check_mode: true
"""

RETURN = r"""
database_dropped:
  description:
    - "Whether the restore got as far as dropping O(database). V(false) in a failure's result means the failure
      came before it: O(database) is the old database, as before the restore (the restore action then starts the
      application again on it). V(true) in a failure's result: O(database) may be missing (O(jobs=1): the
      restored data is then in the side database the message names) or partly restored (O(jobs) above 1)."
  returned: always
  type: bool
leftovers_dropped:
  description:
    - With O(jobs=1), the side databases (C(<database>_restoring_<hex>)) of earlier restores that were killed
      before they could drop them, dropped first. Never while O(database) itself is missing, and never one
      still in use.
  returned: when O(jobs=1)
  type: list
  elements: str
  sample: [acme_app_restoring_5f0c9a21]
archive:
  description: The archive restored (a link resolved).
  returned: always
  type: str
  sample: /var/backups/acme-db/acme_app-20261206T020000Z.tar.gz
created:
  description: When the backup was taken (the manifest's C(created)).
  returned: success
  type: str
  sample: "2026-12-06T02:00:00Z"
dump_size:
  description: Bytes of the dump restored.
  returned: success
  type: int
seconds:
  description: Seconds of each phase (O(jobs=1) verify_and_restore and total; above 1 verify_and_unpack, restore
    and total; in check mode verify_and_unpack).
  returned: success
  type: dict
"""

import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.lm_archive import (as_os_user, drop_leftovers, drop_to, on_stop, other_database,
                                            quote_literal, room_for_copy, room_for_dump, sidecar_manifest,
                                            stops_held, stream_restore, tail, unpack, verify)


class RestoreFailed(Exception):
    """The restore failed; the message names the archive and what differs."""


def not_restoring(message: str) -> RestoreFailed:
    """A failure before anything was dropped, said as every such failure of this module is."""
    return RestoreFailed(f"{message}, not restoring")


class Postgres:
    """The PostgreSQL tools as os_user (root drops to it), on the given socket/port."""

    def __init__(self, p: dict):
        self.uid, self.gid, self.env = as_os_user(p["os_user"], p["port"], p["host"])

    def run(self, argv: list[str], what: str) -> None:
        res = subprocess.run(argv, capture_output=True, text=True, env=self.env, cwd="/",
                             preexec_fn=drop_to(self.uid, self.gid))
        if res.returncode != 0:
            raise RestoreFailed(f"{what}: {tail(res.stderr)}")

    def popen(self, argv: list[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(argv, env=self.env, cwd="/", preexec_fn=drop_to(self.uid, self.gid), **kw)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def check_source(manifest: dict, p: dict, archive: str) -> None:
    """Refuses (before anything is dropped) an archive whose manifest names another database than the one
    expected: O(from_database), or O(database) itself."""
    expected = p["from_database"] or p["database"]
    source = other_database(manifest, expected)
    if not source:
        return
    how = (f"; to restore it into {p['database']} on purpose, set from_database (block config "
           f"restore_from_database) to {source}") if not p["from_database"] else ""
    raise RestoreFailed(f"{os.path.basename(archive)} is a backup of the database {source}, not of {expected}: "
                        f"not restoring{how}")


def check_room(p: dict, pg: Postgres, archive: str) -> None:
    """Refuses a restore that would fill a filesystem: with O(jobs=1) PostgreSQL's (the new database is loaded
    beside the old one), above 1 the work folder's (the dump is unpacked there)."""
    if p["jobs"] <= 1:
        why = room_for_copy(pg.env, (pg.uid, pg.gid), p["database"])
        how = (f"; restore_jobs above 1 restores in place, with no second copy ({p['database']} is dropped first, "
               "so a restore that then fails leaves it gone)")
    else:
        why = room_for_dump(archive, p["work_dir"] or os.path.dirname(archive))
        how = "; restore_jobs 1 streams the dump without unpacking it"
    if why:
        raise RestoreFailed(f"{why}: not restoring{how}")


def about(manifest: dict) -> dict:
    """What the result says of the backup restored."""
    return {"created": manifest.get("created", ""), "dump_size": int(manifest["size"])}


SIDE = "_restoring_"


def side_name(database: str) -> str:
    """<database>_restoring_<8 random hex digits>, within PostgreSQL's 63 bytes: the database a streamed
    restore loads before it takes the real one's name."""
    return _side_prefix(database) + SIDE + secrets.token_hex(4)


def _side_prefix(database: str) -> str:
    return database.encode()[: 63 - len(SIDE) - 8].decode(errors="ignore")


def restore_streaming(p: dict, pg: Postgres, real: str, owner: list[str], result: dict) -> dict:
    """jobs 1: the dump streams from the archive's one read straight into pg_restore, loading a new
    database beside the old one; only when the read has verified everything (see DOCUMENTATION) and
    pg_restore succeeded is the old database dropped and the new one renamed to its name. Any failure
    drops the new database and leaves the old one as it was. Returns the manifest; result's
    database_dropped is true from the drop on."""
    db = p["database"]
    side = side_name(db)
    pg.run(["createdb", *owner, side], f"createdb {side}")
    try:
        manifest = stream_restore(real, lambda **kw: pg.popen(["pg_restore", "--exit-on-error", "-d", side], **kw),
                                  not_restoring)
        check_source(manifest, p, real)
        replace_with(pg, side, db, result, f"the restore is in database {side}",
                     f"{db} was restored from {os.path.basename(real)}")
    finally:
        if not result.get("database_dropped"):  # from the drop on the restored data is only in the new one
            subprocess.run(["dropdb", "--if-exists", "--force", side], capture_output=True, env=pg.env, cwd="/",
                           preexec_fn=drop_to(pg.uid, pg.gid))
    return manifest


def replace_with(pg: Postgres, side: str, db: str, result: dict, where: str, done: str,
                 then: Callable[[], None] | None = None) -> None:
    """The old database gives way to ``side``, which takes its name. A stop between the drop and the rename would
    leave neither, so a stop asked for meanwhile waits until the rename is done (or failed), and its message then
    says what was done (``done``); result's database_dropped is true from the drop on. ``where``: what a failed
    rename's message says of the data. ``then`` (the in-place load of restore_jobs above 1) runs with the stops
    still held: once the old database is gone, a stop (the run stopped, its SSH session gone) would leave a
    partly restored one, so the load goes on to its end first."""
    renamed = False
    try:
        with stops_held():
            result["database_dropped"] = True
            pg.run(["dropdb", "--if-exists", "--force", db], f"dropdb {db}")
            # a session in the new database (a monitoring agent's) would make the rename fail: ended first
            pg.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-c",
                    f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {quote_literal(side)} "
                    "AND pid <> pg_backend_pid()",
                    "-c", f"ALTER DATABASE {quote_ident(side)} RENAME TO {quote_ident(db)}"],
                   f"{db} dropped, {where}, which could not be renamed to {db}")
            if then is not None:
                then()
            renamed = True
    except RestoreFailed as exc:
        if renamed:  # the stop came while the old database gave way (and the new one was loaded)
            raise RestoreFailed(f"{exc}, after {done}") from None
        raise


def stopped(signum: int, frame: object) -> None:
    raise RestoreFailed(f"stopped by signal {signum}")


def run_module() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            archive=dict(type="path", required=True),
            database=dict(type="str", required=True),
            owner=dict(type="str", default=""),
            host=dict(type="str", default=""),
            port=dict(type="int", default=5432),
            os_user=dict(type="str", default="postgres"),
            jobs=dict(type="int", default=1),
            work_dir=dict(type="path"),
            read_archive=dict(type="bool", default=True),
            from_database=dict(type="str", default=""),
        ),
        supports_check_mode=True,
    )
    p = module.params
    # a stopped run (ansible's timeout, a stopped workflow) still removes the work folder
    on_stop(stopped)
    started = time.monotonic()
    real = os.path.realpath(p["archive"])
    result: dict = {"archive": real, "database_dropped": False}
    work = ""
    owner = ["-O", p["owner"]] if p["owner"] else []
    try:
        if not os.path.isfile(real):
            raise RestoreFailed(f"no backup found at {p['archive']}: run the backup action first")
        pg = Postgres(p)
        check_source(sidecar_manifest(real), p, real)  # at once, rather than after loading it
        if module.check_mode:  # the one read a restore makes, the dump going nowhere
            check_room(p, pg, real)
            if not p["read_archive"]:
                module.exit_json(changed=False, msg=f"{p['database']} could be restored from {real}: room for it, "
                                 "the archive's sidecar manifest names it (the archive itself not read)", **result)
            manifest = verify(real, not_restoring)
            check_source(manifest, p, real)
            result.update(about(manifest), seconds={"verify_and_unpack": round(time.monotonic() - started, 2)})
            module.exit_json(changed=False, msg=f"{real} verifies against its .sha256 and manifest; would replace "
                             f"{p['database']}", **result)
        if p["jobs"] <= 1:
            # the side databases of restores killed before they could drop theirs (never while the database
            # itself is missing: one may then hold the only copy)
            result["leftovers_dropped"] = drop_leftovers(
                pg.env, (pg.uid, pg.gid), re.escape(_side_prefix(p["database"]) + SIDE) + "[0-9a-f]{8}",
                unless_missing=p["database"])
            check_room(p, pg, real)
            manifest = restore_streaming(p, pg, real, owner, result)
            took = round(time.monotonic() - started, 2)
            result.update(about(manifest), seconds={"verify_and_restore": took, "total": took})
            module.exit_json(changed=True, **result)
        check_room(p, pg, real)
        work = tempfile.mkdtemp(prefix=".restore-", dir=p["work_dir"] or os.path.dirname(real))
        root = os.geteuid() == 0
        if root:
            os.chown(work, pg.uid, pg.gid)
        manifest, dump = unpack(real, work, (pg.uid, pg.gid) if root else None, not_restoring)
        check_source(manifest, p, real)
        # pg_restore must be able to read it (a folder the os_user cannot enter) before the database is dropped
        listed = subprocess.run(["pg_restore", "-l", dump], capture_output=True, text=True, env=pg.env, cwd="/",
                                preexec_fn=drop_to(pg.uid, pg.gid))
        if listed.returncode != 0:
            raise not_restoring(f"pg_restore cannot read the unpacked dump: {tail(listed.stderr)}")
        unpacked = time.monotonic()
        result.update(about(manifest))
        db = p["database"]
        # the empty database it loads is created before the old one is dropped (and then takes its name): a
        # createdb that fails (an owner role that does not exist, template1 in use) leaves the old one as it was
        side = side_name(db)
        pg.run(["createdb", *owner, side], f"createdb {side}")
        try:
            replace_with(pg, side, db, result, f"an empty database {side}",
                         f"{db} was restored from {os.path.basename(real)}",
                         then=lambda: pg.run(["pg_restore", "--exit-on-error", "-j", str(max(1, p["jobs"])), "-d", db,
                                              dump], f"pg_restore of {real} into {db}"))
        except RestoreFailed:
            if not result.get("database_dropped"):
                subprocess.run(["dropdb", "--if-exists", "--force", side], capture_output=True, env=pg.env, cwd="/",
                               preexec_fn=drop_to(pg.uid, pg.gid))
            raise
        done = time.monotonic()
        result["seconds"] = {"verify_and_unpack": round(unpacked - started, 2), "restore": round(done - unpacked, 2),
                             "total": round(done - started, 2)}
    except RestoreFailed as exc:
        module.fail_json(msg=str(exc), **result)
    finally:
        if work:
            shutil.rmtree(work, ignore_errors=True)
    module.exit_json(changed=True, **result)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
