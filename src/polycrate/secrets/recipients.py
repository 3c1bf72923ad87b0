"""Recipients (who can decrypt): ``encryption.recipients`` of workspace.poly, each a valid age key."""
from __future__ import annotations

from pathlib import Path

from polycrate.errors import ConfigError
from polycrate.config.schema import RECIPIENT_PREFIX, WORKSPACE_FILE, read_workspace_file
from polycrate.secrets.keys import pyrage_module

__all__ = ["RECIPIENT_PREFIX", "workspace_recipients"]


def workspace_recipients(root: Path) -> list[str]:
    """The ``encryption.recipients`` of ``root/workspace.poly`` (the schema checks their form; age
    checks each key here, where encryption needs it)."""
    path = root / WORKSPACE_FILE
    if not path.is_file():
        return []
    recipients = list(read_workspace_file(root).recipients)
    pyrage = pyrage_module()
    for item in recipients:
        try:
            pyrage.x25519.Recipient.from_str(item)
        except pyrage.RecipientError:
            raise ConfigError(f"'encryption.recipients': malformed age public key {item!r}", path) from None
    return recipients
