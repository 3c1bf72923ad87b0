"""Recipients (who can decrypt): ``encryption.recipients`` of workspace.poly, checked."""
from __future__ import annotations

from pathlib import Path

from polycrate.errors import ConfigError
from polycrate.secrets.keys import pyrage_module

RECIPIENT_PREFIX = "age1"


def workspace_recipients(root: Path) -> list[str]:
    """The ``encryption.recipients`` of ``root/workspace.poly`` (validated age public keys)."""
    from polycrate.yamlfile import load_yaml

    path = root / "workspace.poly"
    if not path.is_file():
        return []
    data = load_yaml(path)
    if not isinstance(data, dict) or data.get("encryption") is None:
        return []
    encryption = data["encryption"]
    line_of = getattr(data, "line_of", lambda key: None)
    if not isinstance(encryption, dict):
        raise ConfigError("'encryption' must be a mapping with 'recipients'", path, line_of("encryption"))
    recipients = encryption.get("recipients") or []
    eline = getattr(encryption, "line_of", lambda key: None)("recipients")
    if not isinstance(recipients, list):
        raise ConfigError("'encryption.recipients' must be a list of age public keys", path, eline)
    pyrage = pyrage_module()
    result: list[str] = []
    for item in recipients:
        if not isinstance(item, str) or not item.strip().startswith(RECIPIENT_PREFIX):
            if isinstance(item, str) and item.strip().startswith("AGE-SECRET-KEY"):
                raise ConfigError("'encryption.recipients' holds a SECRET key; list public keys (age1...) only",
                                  path, eline)
            raise ConfigError("'encryption.recipients' entries must be age public keys (age1...)", path, eline)
        try:
            pyrage.x25519.Recipient.from_str(item.strip())
        except pyrage.RecipientError:
            raise ConfigError(f"'encryption.recipients': malformed age public key {item.strip()!r}",
                              path, eline) from None
        if item.strip() not in result:
            result.append(item.strip())
    return result
