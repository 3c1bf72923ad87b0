"""Keys (age identities): where they are looked up, how they are parsed, how a new one is made."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from polycrate.errors import PolycrateError

ENV_KEY = "WORKSPACE_ENCRYPTION_KEY"
ENV_IDENTITY_FILE = "POLYCRATE_IDENTITY_FILE"
IDENTITY_PREFIX = "AGE-SECRET-KEY-1"


def pyrage_module() -> Any:
    try:
        import pyrage  # heavy native import: only in commands that need it
    except ImportError:  # pragma: no cover - dependency missing
        raise PolycrateError("workspace encryption needs the 'pyrage' package (pip install pyrage)") from None
    return pyrage


def default_identity_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "polycrate" / "age-identity.txt"


def _parse_identities(text: str, source: str, path: str | None) -> list[Any]:
    """Parse age identities (age-keygen format: comments, blank lines, one key a line).

    Errors name the source and line, never the content."""
    pyrage = pyrage_module()
    identities = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith(IDENTITY_PREFIX):
            raise PolycrateError(
                f"{source} is not an age identity (expected {IDENTITY_PREFIX}...)",
                path, number if path else None)
        try:
            identities.append(pyrage.x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise PolycrateError(f"{source} holds a malformed age identity", path,
                                 number if path else None) from None
    if not identities:
        raise PolycrateError(f"{source} holds no age identity", path)
    return identities


class Keyring:
    """The identities available to this process, loaded on first use.

    ``identity_file`` (``--identity``) overrides the environment; ``environ``
    defaults to ``os.environ``."""

    def __init__(self, identity_file: str | Path | None = None, environ: Mapping[str, str] | None = None):
        self.identity_file = Path(identity_file) if identity_file else None
        self.environ = os.environ if environ is None else environ
        self._identities: list[Any] | None = None
        self.sources: list[str] = []

    def identities(self) -> list[Any]:
        if self._identities is None:
            self._identities = self._load()
        return self._identities

    def _load(self) -> list[Any]:
        found: list[Any] = []
        if self.identity_file is not None:
            found += self._from_file(self.identity_file)
            return found
        key = self.environ.get(ENV_KEY)
        if key and key.strip():
            found += _parse_identities(key, ENV_KEY, None)
            self.sources.append(ENV_KEY)
        env_file = self.environ.get(ENV_IDENTITY_FILE)
        if env_file:
            found += self._from_file(Path(env_file))
        if not found:
            default = default_identity_file()
            if default.is_file():
                found += self._from_file(default)
        return found

    def _from_file(self, path: Path) -> list[Any]:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PolycrateError("identity file not found", path) from None
        except UnicodeDecodeError:
            raise PolycrateError("identity file is not an age identity file", path) from None
        except OSError as exc:
            raise PolycrateError(f"cannot read identity file: {exc.strerror}", path) from None
        self.sources.append(str(path))
        return _parse_identities(text, "identity file", str(path))

    def require(self, for_path: str) -> list[Any]:
        """The identities, or a one-line error naming the file that needs one."""
        identities = self.identities()
        if not identities:
            raise PolycrateError(
                f"is encrypted and no key is available: set {ENV_KEY} or {ENV_IDENTITY_FILE}, "
                "or pass --identity FILE", for_path)
        return identities

    def describe(self) -> str:
        return ", ".join(self.sources) or "no key"

    def recipients(self) -> list[str]:
        return [str(identity.to_public()) for identity in self.identities()]


def as_keyring(identity_source: Keyring | str | Path | None) -> Keyring:
    if isinstance(identity_source, Keyring):
        return identity_source
    return Keyring(identity_source)


def generate_identity(output: Path) -> str:
    """Write a new age identity to ``output`` (mode 0600, never overwriting); return its recipient."""
    pyrage = pyrage_module()
    import datetime

    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    text = (
        f"# created: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}\n"
        f"# public key: {recipient}\n{identity}\n"
    )
    output.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise PolycrateError("already exists; refusing to overwrite an identity file", output) from None
    except OSError as exc:
        raise PolycrateError(f"cannot create identity file: {exc.strerror}", output) from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    return recipient


def scheduled_identity_file(encrypted: bool, environ: Mapping[str, str] | None = None) -> Path | None:
    """The identity file a scheduled run of an encrypted workspace is to use: $POLYCRATE_IDENTITY_FILE, else
    the default identity file, as this user has it now (a timer's run has neither this shell's environment
    nor, as another user, its home). None for a workspace without encrypted secrets. A key given only as
    WORKSPACE_ENCRYPTION_KEY, or none, is refused with how to provide one: a key is never written into a unit."""
    if not encrypted:
        return None
    environ = os.environ if environ is None else environ
    given = environ.get(ENV_IDENTITY_FILE, "").strip()
    path = Path(given).expanduser() if given else default_identity_file()
    if not path.is_file():
        source = f"{ENV_IDENTITY_FILE} names {path}, which is not a file" if given else f"no identity file at {path}"
        raise PolycrateError(
            f"the workspace has encrypted secrets and its scheduled runs need their key: {source}; save the age "
            f"key to a file the schedule's user can read and set {ENV_IDENTITY_FILE}=FILE when you run schedules "
            "plan/apply (the unit gets the file's path, never the key)")
    return path.resolve()
