"""Atomic file writes: a reader sees the old file or the new one, never half of one.

The rule, in one place: write to a temporary file in the target's folder (same
filesystem, so the rename is atomic) whose name starts with a dot (so neither
systemd, cron, node_exporter nor our own scanners pick it up half-written),
set its mode, fsync it, let the caller check it, ``os.replace`` it over the
target, then fsync the folder so the rename itself survives a crash. When
anything fails before the rename, the temporary file is removed and the target
is left as it was. Errors are raised as they come (``OSError`` or whatever
``before_replace`` raises); callers turn them into their own messages.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(
    path: Path,
    data: bytes | str,
    mode: int = 0o644,
    *,
    prefix: str | None = None,
    suffix: str = ".tmp",
    before_replace: Callable[[Path], None] | None = None,
) -> None:
    """Replace ``path`` with ``data`` (``str`` is written as UTF-8) atomically and durably.

    The temporary file is ``<prefix><random><suffix>`` in ``path``'s folder; ``prefix``
    defaults to ``.<name>.`` and must start with a dot. ``before_replace(tmp)`` runs once
    the temporary file is complete (written, ``mode`` set, fsynced), just before the
    rename: raise there to abandon the write.
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    if prefix is None:
        prefix = f".{path.name}."
    if not prefix.startswith("."):
        raise ValueError(f"the temporary file must be a dot-file, got prefix {prefix!r}")
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)  # created 0600
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)  # before the fsync, so the mode is durable too
            os.fsync(handle.fileno())
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make the entries of folder ``path`` (a rename, an unlink) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
