"""Recipients (who can decrypt): ``encryption.recipients`` of workspace.poly, checked."""
from __future__ import annotations

from pathlib import Path

from polycrate.errors import ConfigError
from polycrate.secrets.keys import pyrage_module

from polycrate.model import RECIPIENT_PREFIX  # noqa: E402,F401 (re-exported; one definition)


def workspace_recipients(root: Path) -> list[str]:
    """The ``encryption.recipients`` of ``root/workspace.poly`` (validated age public keys)."""
    from polycrate.yamlfile import load_yaml

    path = root / "workspace.poly"
    if not path.is_file():
        return []
    data = load_yaml(path)
    if not isinstance(data, dict) or data.get("encryption") is None:
        return []
    from polycrate.model import check_recipients

    pyrage = pyrage_module()
    result: list[str] = []
    eline = data.line_of("encryption") if hasattr(data, "line_of") else None
    for item in check_recipients(data, path):
        try:
            pyrage.x25519.Recipient.from_str(item)
        except pyrage.RecipientError:
            raise ConfigError(f"'encryption.recipients': malformed age public key {item!r}", path, eline) from None
        result.append(item)
    return result
