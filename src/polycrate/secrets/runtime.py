"""The per-run folder: secrets decrypted for one run into a private folder, with the run's Masker."""
from __future__ import annotations

import atexit
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from polycrate.secrets.masking import Masker, build_masker
from polycrate.secrets.files import (
    AGE_SUFFIX,
    SECRETS_DIR,
    SECRETS_POLY,
    age_path,
    read_secret,
    rel_path,
    secret_pairs,
)
from polycrate.secrets.keys import Keyring, as_keyring
from polycrate.secrets.scratch import make_private_folder
from polycrate.secrets.store import decrypt_bytes


class RuntimeSecrets:
    """Secrets decrypted for one run: files in a private folder, values, and a Masker.

    Use as a context manager; the folder is removed on exit, also on exceptions
    (and, as a last resort, at interpreter exit)."""

    def __init__(self) -> None:
        self.dir: Path | None = None
        self.files: dict[str, str] = {}  # path relative to artifacts/secrets -> absolute path
        self.block_names: set[str] = set()
        self.values: dict[str, Any] = {}  # secrets.poly as plain data: every value is masked
        self.poly: Any = None  # schema.SecretsFile: what merges over workspace.poly; None without secrets.poly
        self.masker = Masker()

    @property
    def workspace_files(self) -> dict[str, str]:
        """Files not inside a block's folder, keyed by path relative to artifacts/secrets."""
        return {k: v for k, v in self.files.items() if k.split("/", 1)[0] not in self.block_names or "/" not in k}

    def block_files(self, block_name: str) -> dict[str, str]:
        """Files under artifacts/secrets/<block_name>/, keyed by path relative to that folder."""
        prefix = block_name + "/"
        return {k[len(prefix):]: v for k, v in self.files.items() if k.startswith(prefix)}

    def close(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            atexit.unregister(self.close)
            self.dir = None

    def __enter__(self) -> RuntimeSecrets:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_runtime_secrets(root: Path, block_names: Iterable[str],
                         identity_source: Keyring | str | Path | None = None,
                         folder: str | Path | None = None) -> RuntimeSecrets:
    """Decrypt the workspace's secrets into a private temp folder for one run.

    Plaintext files are copied in as they are (an unencrypted workspace needs no key).
    Raises PolycrateError (and leaves nothing behind) on no/wrong key or a damaged file. `folder`:
    where the private folder goes (the run container's folder, which the container sees); /dev/shm
    when usable otherwise."""
    from polycrate.config.schema import parse_secrets
    from polycrate.config.yamlfile import decode_text

    root = Path(root)
    keyring = as_keyring(identity_source)
    secrets = RuntimeSecrets()
    secrets.block_names = set(block_names)
    base = root / SECRETS_DIR
    contents: list[bytes] = []
    poly_text: tuple[str, str] | None = None
    try:
        for plain_path, (has_plain, _has_age) in secret_pairs(root).items():
            rel_root = rel_path(root, plain_path)
            if has_plain:
                data = read_secret(plain_path, root)
            else:
                data = decrypt_bytes(read_secret(age_path(plain_path), root), keyring, rel_root + AGE_SUFFIX)
            if plain_path.parent == root and plain_path.name == SECRETS_POLY:
                where = rel_root if has_plain else rel_root + AGE_SUFFIX
                poly_text = (decode_text(data, where), where)
                continue
            contents.append(data)
            if secrets.dir is None:
                secrets.dir = make_private_folder("polycrate-secrets-", folder)
                atexit.register(secrets.close)
            rel = plain_path.relative_to(base)
            target = secrets.dir / rel
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            secrets.files[rel.as_posix()] = str(target)
        if poly_text is not None:
            secrets.poly = parse_secrets(poly_text[0], poly_text[1])
            secrets.values = secrets.poly.values
        secrets.masker = build_masker(secrets.values, contents)
    except BaseException:
        secrets.close()
        raise
    return secrets
