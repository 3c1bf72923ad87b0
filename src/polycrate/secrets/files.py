"""Which files are secrets, and how they are written and removed durably (with an injected checkpoint)."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from polycrate.atomicfile import fsync_dir, write_atomic
from polycrate.errors import PolycrateError

SECRETS_DIR = Path("artifacts") / "secrets"
SECRETS_POLY = "secrets.poly"
AGE_SUFFIX = ".age"
TMP_SUFFIX = ".polycrate-tmp"
NOT_SECRETS = frozenset({".gitkeep", ".gitignore"})

Checkpoint = Callable[[str], None]
"""Called with the name of each step a durable write reaches (``tempfile-written``, ``verified``,
``renamed``, ``source-removed``, ``gitignore-written``): crash tests pass one that ends the process there."""


def no_checkpoint(step: str) -> None:
    """The default checkpoint: nothing happens."""


def rel_path(root: Path, path: Path) -> str:
    return str(path.relative_to(root))


def is_tmp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def walk_secret_files(root: Path) -> list[Path]:
    """Every secret-ish file (plaintext and ``.age``), sorted; stale temp files excluded."""
    files: list[Path] = []
    base = root / SECRETS_DIR
    if base.is_symlink():
        raise PolycrateError("must be a folder, not a symbolic link", rel_path(root, base))
    if base.is_dir():
        for dirpath, dirnames, filenames in os.walk(base):
            for d in list(dirnames):
                if os.path.islink(os.path.join(dirpath, d)):
                    raise PolycrateError("symbolic links are not supported in artifacts/secrets",
                                         rel_path(root, Path(dirpath) / d))
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if name in NOT_SECRETS or is_tmp_name(name):
                    continue
                if path.is_symlink():
                    raise PolycrateError("symbolic links are not supported in artifacts/secrets",
                                         rel_path(root, path))
                if not path.is_file():
                    continue
                files.append(path)
    for name in (SECRETS_POLY, SECRETS_POLY + AGE_SUFFIX):
        path = root / name
        if path.is_symlink():
            raise PolycrateError("symbolic links are not supported for secrets", name)
        if path.is_file():
            files.append(path)
        elif path.exists():  # a folder or a FIFO where the secrets belong: say so, do not run without them
            raise PolycrateError("is not a regular file: polycrate reads the workspace's secret values from it",
                                 name)
    return files


def stale_tmp_files(root: Path) -> list[Path]:
    found = [p for p in root.glob(".*" + TMP_SUFFIX) if p.is_file()]
    base = root / SECRETS_DIR
    if base.is_dir() and not base.is_symlink():
        found += [p for p in base.rglob(".*" + TMP_SUFFIX) if p.is_file()]
    return found


def read_secret(path: Path, root: Path) -> bytes:
    from polycrate.config.yamlfile import read_bytes  # regular files only, bounded, never a blocking open

    return read_bytes(path)


def write_durably(target: Path, data: bytes, mode: int, verify, checkpoint: Checkpoint | None = None) -> None:
    """``write_atomic`` with the temp file read back from disk and verified before the rename.

    ``checkpoint`` (None: no checkpoints) is told ``tempfile-written``, ``verified`` and ``renamed``."""
    def check(tmp: Path) -> None:
        if checkpoint is not None:
            checkpoint("tempfile-written")
        if tmp.read_bytes() != data:
            raise PolycrateError("verification failed: written file differs from what was written", target)
        verify(tmp.read_bytes())
        if checkpoint is not None:
            checkpoint("verified")

    # temp name ``.<name>.<random>.polycrate-tmp``: the next run removes leftovers by that suffix
    write_atomic(target, data, mode, suffix=TMP_SUFFIX, before_replace=check)
    if checkpoint is not None:
        checkpoint("renamed")


def remove_durably(path: Path, checkpoint: Checkpoint = no_checkpoint) -> None:
    path.unlink()
    fsync_dir(path.parent)
    checkpoint("source-removed")


def secret_pairs(root: Path) -> dict[Path, tuple[bool, bool]]:
    """plaintext path -> (plaintext exists, ciphertext exists)."""
    pairs: dict[Path, tuple[bool, bool]] = {}
    for path in walk_secret_files(root):
        if path.name.endswith(AGE_SUFFIX):
            plain = path.with_name(path.name[: -len(AGE_SUFFIX)])
            has_plain, _ = pairs.get(plain, (False, False))
            pairs[plain] = (has_plain, True)
        else:
            _, has_age = pairs.get(path, (False, False))
            pairs[path] = (True, has_age)
    return dict(sorted(pairs.items()))


def age_path(plain: Path) -> Path:
    return plain.with_name(plain.name + AGE_SUFFIX)
