"""A worker's own age identity: the key its runs decrypt the workspace's secrets with.

`polycrate worker keygen [--name N]` writes it (mode 0600, never over an existing one) to
``$XDG_CONFIG_HOME/polycrate/worker/N/age-identity.txt`` and prints its recipient, which the workspace lists
among ``encryption.recipients`` (then `polycrate workspace encrypt --rekey` encrypts the secrets to it too).
`polycrate worker --name N` uses that file when it exists (``--identity FILE`` names another), and then only
it: a run never falls back to whatever key the worker's user has.

Before a run's steps, ``secrets_problem`` decrypts each encrypted secret of the checkout once with that
identity: a secret the worker cannot read fails the run with one line that names the fix, nothing executed.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

from polycrate.errors import PolycrateError


def worker_key_name(name: str | None) -> str:
    """The name a worker's key is kept under: its --name, else the host's name."""
    return name or socket.gethostname()


def default_identity(name: str | None) -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "polycrate" / "worker" / worker_key_name(name) / "age-identity.txt"


def keygen(output: Path) -> str:
    """A new identity at ``output`` (0600, refusing to overwrite); its recipient (age1...)."""
    from polycrate.secrets import generate_identity

    return generate_identity(output)


def recipient_of(identity: Path) -> str:
    from polycrate.secrets import Keyring

    recipients = Keyring(identity, environ={}).recipients()
    return recipients[0] if recipients else "?"


def secrets_problem(root: Path, identity: Path | None) -> str | None:
    """Why the worker cannot decrypt the workspace's secrets at ``root`` with its identity, or None (also
    without encrypted secrets, or without an identity of its own: then the run's own lookup decides)."""
    from polycrate.secrets import AGE_SUFFIX, Keyring
    from polycrate.secrets.files import age_path, read_secret, rel_path, secret_pairs
    from polycrate.secrets.store import decrypt_bytes

    if identity is None:
        return None
    try:
        keyring = Keyring(identity, environ={})
        for plain, (has_plain, has_age) in secret_pairs(root).items():
            if has_plain or not has_age:
                continue
            rel = rel_path(root, plain) + AGE_SUFFIX
            try:
                decrypt_bytes(read_secret(age_path(plain), root), keyring, rel)
            except PolycrateError as exc:
                if "not encrypted to the key in use" not in exc.message:
                    raise
                return (f"{rel} is not encrypted to this worker's age identity ({recipient_of(identity)}, "
                        f"{identity}): add that recipient to encryption.recipients in workspace.poly, run "
                        "`polycrate workspace encrypt --rekey`, commit and push, then launch again")
    except PolycrateError as exc:
        where = f" ({exc.path})" if exc.path else ""
        return f"the workspace's secrets cannot be read on this worker: {exc.message}{where}"
    return None


__all__ = ["default_identity", "keygen", "recipient_of", "secrets_problem", "worker_key_name"]
