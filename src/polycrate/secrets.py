"""Workspace secrets: age encryption of ``artifacts/secrets/`` and ``secrets.poly``.

What is a secret
    Every regular file under ``artifacts/secrets/`` (recursively; workspace-wide
    files at the top, block-specific ones under ``artifacts/secrets/<block>/``)
    and ``secrets.poly`` at the workspace root. Encrypted, each ``<file>`` is
    replaced by ``<file>.age`` in the standard age format (the ``age`` CLI reads
    what we write and we read what it writes). ``.gitkeep``/``.gitignore`` files
    are not secrets; symbolic links are refused.

Recipients (who can decrypt)
    The public keys listed in ``workspace.poly``::

        encryption:
          recipients:
            - age1...   # alice
            - age1...   # bob

    plus the public key of whatever identity is in use (so you can always read
    what you wrote). Removing a recipient and running ``encrypt --rekey``
    (or ``decrypt`` + ``encrypt``) locks them out of the new ciphertexts.

Keys (identities) - looked up in this order
    1. ``--identity FILE`` (only that file when given);
    2. else ``WORKSPACE_ENCRYPTION_KEY`` (an ``AGE-SECRET-KEY-1...`` string) and/or
       ``POLYCRATE_IDENTITY_FILE`` (an age identity file), all that are set;
    3. else ``$XDG_CONFIG_HOME/polycrate/age-identity.txt`` (where ``keygen``
       writes by default) if it exists.
    Keys are loaded lazily: a workspace without ``.age`` files needs none.

Safety (nothing lost, nothing leaked)
    Every command first *plans*: it reads and, where needed, decrypts every file
    in memory; any error (no key, wrong key, corrupted or truncated file, bad key
    format, bad recipient) is raised before any file is touched. Then each file is
    written to a temporary file in the same folder (``.<name>.<random>.polycrate-tmp``),
    fsynced, read back from disk and verified (decrypted and compared byte for
    byte), renamed into place, the folder fsynced, and only then the source removed.
    A crash at any point leaves the source, or a complete target, or both; stale
    temporary files are never the only copy and are removed by the next run.
    When no identity is available but recipients are (encrypting for others),
    verification uses a one-time identity generated for this run, added as an extra
    recipient and then forgotten - so every ciphertext is decrypted once before the
    plaintext goes.

Both ``x`` and ``x.age`` present
    encrypt: identical content -> the plaintext is removed, the ciphertext kept
    untouched; different (or no key to compare) -> the plaintext wins, ``x.age`` is
    re-encrypted from it (the plaintext is the user's newest edit; the old
    ciphertext remains in git history). decrypt: identical -> ``x.age`` removed;
    different -> error, nothing changed (we never throw away a ciphertext we have
    not restored). At run time the plaintext wins, like encrypt.

Test hook
    ``POLYCRATE_TEST_CRASH_AFTER=STEP[:N]`` calls ``os._exit(99)`` after the N-th
    (default first) time STEP is reached. Steps: ``tempfile-written``, ``verified``,
    ``renamed``, ``source-removed`` (encrypt and decrypt), ``gitignore-written``.

Run time
    ``open_runtime_secrets`` decrypts everything into a private folder (0700, on
    ``/dev/shm`` when usable) for the duration of a run and builds the ``Masker``.
"""
from __future__ import annotations

import atexit
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polycrate.atomicfile import fsync_dir, write_atomic
from polycrate.errors import ConfigError, PolycrateError
from polycrate.masking import Masker

SECRETS_DIR = Path("artifacts") / "secrets"
SECRETS_POLY = "secrets.poly"
AGE_SUFFIX = ".age"
AGE_HEADER = b"age-encryption.org/v1\n"
AGE_ARMOR_HEADER = b"-----BEGIN AGE ENCRYPTED FILE-----"  # `age --armor`; read, never written
TMP_SUFFIX = ".polycrate-tmp"
ENV_KEY = "WORKSPACE_ENCRYPTION_KEY"
ENV_IDENTITY_FILE = "POLYCRATE_IDENTITY_FILE"
ENV_CRASH = "POLYCRATE_TEST_CRASH_AFTER"
NOT_SECRETS = frozenset({".gitkeep", ".gitignore"})
IDENTITY_PREFIX = "AGE-SECRET-KEY-1"
RECIPIENT_PREFIX = "age1"

GITIGNORE_BEGIN = "# >>> polycrate secrets (managed by `polycrate workspace encrypt`) >>>"
GITIGNORE_END = "# <<< polycrate secrets <<<"
GITIGNORE_BODY = [
    "/artifacts/secrets/**",
    "!/artifacts/secrets/**/",
    "!/artifacts/secrets/**/*.age",
    "!/artifacts/secrets/**/.gitkeep",
    "/secrets.poly",
    f"*{TMP_SUFFIX}",
]
HOOK_MARKER = "# polycrate-secrets-hook"

# Masking thresholds (see build_masker).
MIN_VALUE_LEN = 4  # values in secrets.poly
MIN_LINE_LEN = 6  # lines (and key=value values) of secret files
TRIVIAL_WORDS = frozenset(
    {"true", "false", "enabled", "disabled", "localhost", "default", "password", "username",
     "secret", "region", "endpoint", "provider", "private", "public"}
)


# --------------------------------------------------------------------------- test hook

_crash_counts: dict[str, int] = {}


def _checkpoint(step: str) -> None:
    spec = os.environ.get(ENV_CRASH)
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != step:
        return
    _crash_counts[step] = _crash_counts.get(step, 0) + 1
    if _crash_counts[step] >= (int(nth) if nth.isdigit() else 1):
        os._exit(99)


# --------------------------------------------------------------------------- keys


def _pyrage() -> Any:
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
    pyrage = _pyrage()
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


def _as_keyring(identity_source: Keyring | str | Path | None) -> Keyring:
    if isinstance(identity_source, Keyring):
        return identity_source
    return Keyring(identity_source)


def generate_identity(output: Path) -> str:
    """Write a new age identity to ``output`` (mode 0600, never overwriting); return its recipient."""
    pyrage = _pyrage()
    import datetime

    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    text = (
        f"# created: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}\n"
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


# --------------------------------------------------------------------------- recipients


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
    pyrage = _pyrage()
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


# --------------------------------------------------------------------------- files


def _rel(root: Path, path: Path) -> str:
    return str(path.relative_to(root))


def _is_tmp(name: str) -> bool:
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def _walk_secret_files(root: Path) -> list[Path]:
    """Every secret-ish file (plaintext and ``.age``), sorted; stale temp files excluded."""
    files: list[Path] = []
    base = root / SECRETS_DIR
    if base.is_symlink():
        raise PolycrateError("must be a folder, not a symbolic link", _rel(root, base))
    if base.is_dir():
        for dirpath, dirnames, filenames in os.walk(base):
            for d in list(dirnames):
                if os.path.islink(os.path.join(dirpath, d)):
                    raise PolycrateError("symbolic links are not supported in artifacts/secrets",
                                         _rel(root, Path(dirpath) / d))
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if name in NOT_SECRETS or _is_tmp(name):
                    continue
                if path.is_symlink():
                    raise PolycrateError("symbolic links are not supported in artifacts/secrets",
                                         _rel(root, path))
                if not path.is_file():
                    continue
                files.append(path)
    for name in (SECRETS_POLY, SECRETS_POLY + AGE_SUFFIX):
        path = root / name
        if path.is_symlink():
            raise PolycrateError("symbolic links are not supported for secrets", name)
        if path.is_file():
            files.append(path)
    return files


def _stale_tmp_files(root: Path) -> list[Path]:
    found = [p for p in root.glob(".*" + TMP_SUFFIX) if p.is_file()]
    base = root / SECRETS_DIR
    if base.is_dir() and not base.is_symlink():
        found += [p for p in base.rglob(".*" + TMP_SUFFIX) if p.is_file()]
    return found


def _read(path: Path, root: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PolycrateError(f"cannot read: {exc.strerror}", _rel(root, path)) from None


def _decrypt_bytes(data: bytes, keyring: Keyring, rel: str) -> bytes:
    pyrage = _pyrage()
    if not data.startswith(AGE_HEADER) and not data.lstrip().startswith(AGE_ARMOR_HEADER):
        raise PolycrateError("is not an age file (missing age header): corrupted?", rel)
    identities = keyring.require(rel)
    try:
        return bytes(pyrage.decrypt(data, identities))
    except pyrage.DecryptError as exc:
        if "no matching keys" in str(exc).lower():
            raise PolycrateError(f"cannot decrypt: not encrypted to the key in use ({keyring.describe()})",
                                 rel) from None
        raise PolycrateError("cannot decrypt: the file is corrupted or truncated", rel) from None


def _write_durably(target: Path, data: bytes, mode: int, verify, checkpoints: bool = True) -> None:
    """``write_atomic`` with the temp file read back from disk and verified before the rename."""
    def check(tmp: Path) -> None:
        if checkpoints:
            _checkpoint("tempfile-written")
        if tmp.read_bytes() != data:
            raise PolycrateError("verification failed: written file differs from what was written", target)
        verify(tmp.read_bytes())
        if checkpoints:
            _checkpoint("verified")

    # temp name ``.<name>.<random>.polycrate-tmp``: the next run removes leftovers by that suffix
    write_atomic(target, data, mode, suffix=TMP_SUFFIX, before_replace=check)
    if checkpoints:
        _checkpoint("renamed")


def _remove_durably(path: Path) -> None:
    path.unlink()
    fsync_dir(path.parent)
    _checkpoint("source-removed")


@dataclass
class EncryptResult:
    encrypted: list[str] = field(default_factory=list)  # plaintext -> new .age
    reencrypted: list[str] = field(default_factory=list)  # plaintext differed from existing .age / rekey
    plaintext_removed: list[str] = field(default_factory=list)  # plaintext equal to existing .age
    unchanged: list[str] = field(default_factory=list)  # already encrypted
    recipients: list[str] = field(default_factory=list)
    gitignore_updated: bool = False
    stale_removed: list[str] = field(default_factory=list)


@dataclass
class DecryptResult:
    decrypted: list[str] = field(default_factory=list)
    ciphertext_removed: list[str] = field(default_factory=list)  # plaintext already equal
    unchanged: list[str] = field(default_factory=list)  # plaintext without .age
    stale_removed: list[str] = field(default_factory=list)


def _pairs(root: Path) -> dict[Path, tuple[bool, bool]]:
    """plaintext path -> (plaintext exists, ciphertext exists)."""
    pairs: dict[Path, tuple[bool, bool]] = {}
    for path in _walk_secret_files(root):
        if path.name.endswith(AGE_SUFFIX):
            plain = path.with_name(path.name[: -len(AGE_SUFFIX)])
            has_plain, _ = pairs.get(plain, (False, False))
            pairs[plain] = (has_plain, True)
        else:
            _, has_age = pairs.get(path, (False, False))
            pairs[path] = (True, has_age)
    return dict(sorted(pairs.items()))


def _age_path(plain: Path) -> Path:
    return plain.with_name(plain.name + AGE_SUFFIX)


def encrypt_workspace(root: Path, identity_source: Keyring | str | Path | None = None,
                      rekey: bool = False, update_gitignore: bool = True) -> EncryptResult:
    """Encrypt every plaintext secret of the workspace at ``root`` (see module docstring)."""
    pyrage = _pyrage()
    root = Path(root)
    keyring = _as_keyring(identity_source)
    result = EncryptResult()
    # ---- plan: everything that can fail does so here, before any file changes
    recipients = workspace_recipients(root)
    own = keyring.recipients()
    for r in own:
        if r not in recipients:
            recipients.append(r)
    pairs = _pairs(root)
    # (plaintext path, bytes, kind) for each file to write
    work: list[tuple[Path, bytes, str]] = []
    drop_plain: list[Path] = []
    for plain, (has_plain, has_age) in pairs.items():
        rel = _rel(root, plain)
        if has_plain:
            data = _read(plain, root)
            if has_age:
                current = None
                if keyring.identities():
                    current = _decrypt_bytes(_read(_age_path(plain), root), keyring, rel + AGE_SUFFIX)
                if current == data and not rekey:
                    drop_plain.append(plain)
                    continue
                work.append((plain, data, "reencrypted"))
            else:
                work.append((plain, data, "encrypted"))
        elif rekey:
            rel_age = rel + AGE_SUFFIX
            data = _decrypt_bytes(_read(_age_path(plain), root), keyring, rel_age)
            work.append((plain, data, "reencrypted"))
        else:
            result.unchanged.append(rel + AGE_SUFFIX)
    if (work or drop_plain) and not recipients:
        raise PolycrateError(
            f"no recipients: list age public keys under 'encryption.recipients' in workspace.poly "
            f"or set {ENV_KEY} / {ENV_IDENTITY_FILE} / --identity", "workspace.poly")
    result.recipients = list(recipients)
    # ---- act
    if update_gitignore:
        result.gitignore_updated = ensure_gitignore(root)
    for tmp in _stale_tmp_files(root):
        tmp.unlink(missing_ok=True)
        result.stale_removed.append(_rel(root, tmp))
    if work:
        verify_identities = list(keyring.identities())
        extra: list[Any] = []
        if not verify_identities:
            one_time = pyrage.x25519.Identity.generate()
            verify_identities = [one_time]
            extra = [one_time.to_public()]
        recipient_objs = [pyrage.x25519.Recipient.from_str(r) for r in recipients] + extra
        for plain, data, kind in work:
            rel = _rel(root, plain)
            ciphertext = bytes(pyrage.encrypt(data, recipient_objs))

            def verify(written: bytes, data: bytes = data, rel: str = rel) -> None:
                try:
                    back = bytes(pyrage.decrypt(written, verify_identities))
                except pyrage.DecryptError:
                    raise PolycrateError("verification failed: the new ciphertext does not decrypt; "
                                         "plaintext kept", rel) from None
                if back != data:
                    raise PolycrateError("verification failed: ciphertext decrypts to different bytes; "
                                         "plaintext kept", rel)

            _write_durably(_age_path(plain), ciphertext, 0o644, verify)
            if plain.exists():
                _remove_durably(plain)
            getattr(result, kind).append(rel)
    for plain in drop_plain:
        _remove_durably(plain)
        result.plaintext_removed.append(_rel(root, plain))
    return result


def decrypt_workspace(root: Path, identity_source: Keyring | str | Path | None = None) -> DecryptResult:
    """Decrypt every ``.age`` secret of the workspace back to plaintext (see module docstring)."""
    root = Path(root)
    keyring = _as_keyring(identity_source)
    result = DecryptResult()
    work: list[tuple[Path, bytes]] = []
    drop_age: list[Path] = []
    for plain, (has_plain, has_age) in _pairs(root).items():
        rel = _rel(root, plain)
        if not has_age:
            result.unchanged.append(rel)
            continue
        data = _decrypt_bytes(_read(_age_path(plain), root), keyring, rel + AGE_SUFFIX)
        if has_plain:
            if _read(plain, root) != data:
                raise PolycrateError(
                    f"both {rel} and {rel}{AGE_SUFFIX} exist and differ; remove or encrypt one first", rel)
            drop_age.append(_age_path(plain))
        else:
            work.append((plain, data))
    for tmp in _stale_tmp_files(root):
        tmp.unlink(missing_ok=True)
        result.stale_removed.append(_rel(root, tmp))
    for plain, data in work:
        def verify(written: bytes, data: bytes = data) -> None:
            if written != data:  # pragma: no cover - _write_durably already compared
                raise PolycrateError("verification failed", plain)

        _write_durably(plain, data, 0o600, verify)
        _remove_durably(_age_path(plain))
        result.decrypted.append(_rel(root, plain))
    for age in drop_age:
        _remove_durably(age)
        result.ciphertext_removed.append(_rel(root, age))
    return result


# --------------------------------------------------------------------------- git


def ensure_gitignore(root: Path) -> bool:
    """Add (or refresh) the marked polycrate section in ``root/.gitignore``. True if it changed."""
    path = root / ".gitignore"
    try:
        old = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise PolycrateError(f"cannot read: {exc}", ".gitignore") from None
    block = "\n".join([GITIGNORE_BEGIN, *GITIGNORE_BODY, GITIGNORE_END]) + "\n"
    lines = old.splitlines(keepends=True)
    begin = next((i for i, l in enumerate(lines) if l.rstrip("\n") == GITIGNORE_BEGIN), None)
    end = None
    if begin is not None:
        end = next((i for i in range(begin, len(lines)) if lines[i].rstrip("\n") == GITIGNORE_END), None)
    if begin is not None and end is not None:
        new = "".join(lines[:begin]) + block + "".join(lines[end + 1:])
    else:
        sep = "" if not old or old.endswith("\n\n") else ("\n" if old.endswith("\n") else "\n\n")
        new = old + sep + block
    if new == old:
        return False
    _write_durably(path, new.encode("utf-8"), 0o644, lambda _b: None, checkpoints=False)
    _checkpoint("gitignore-written")
    return True


_HOOK_TEMPLATE = """#!/bin/sh
{marker}
# Installed by `polycrate workspace encrypt --install-hook`: refuses commits that
# stage plaintext workspace secrets (anything under artifacts/secrets/ that is not an
# age file, or secrets.poly). Bypass deliberately with `git commit --no-verify`.
prefix='{prefix}'
status=0
tab=$(printf '\\t')
git -c core.quotePath=false diff --cached --name-only --diff-filter=ACMR | {{
  while IFS= read -r path; do
    rel="${{path#"$prefix"}}"
    [ -n "$prefix" ] && [ "$rel" = "$path" ] && continue
    case "$rel" in
      secrets.poly) ;;
      artifacts/secrets/*)
        case "$rel" in
          */.gitkeep|*/.gitignore) continue ;;
          *.age)
            head=$(git show ":$path" 2>/dev/null | head -c 34)
            case "$head" in
              "age-encryption.org/v1"*|"-----BEGIN AGE ENCRYPTED FILE-----") continue ;;
            esac ;;
        esac ;;
      *) continue ;;
    esac
    echo "polycrate: refusing to commit plaintext secret: $path (run 'polycrate workspace encrypt')" >&2
    status=1
  done
  exit $status
}}
"""


def install_hook(root: Path) -> Path:
    """Write the pre-commit hook of the git repository holding ``root``. Returns its path.

    Refuses (one-line error) to replace a pre-commit hook that is not ours."""
    root = Path(root).resolve()

    def git(*args: str) -> str:
        try:
            proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        except FileNotFoundError:
            raise PolycrateError("--install-hook needs git on PATH") from None
        if proc.returncode != 0:
            raise PolycrateError("--install-hook: not inside a git repository", root)
        return proc.stdout.strip()

    toplevel = Path(git("rev-parse", "--show-toplevel")).resolve()
    hooks = Path(git("rev-parse", "--git-path", "hooks"))
    if not hooks.is_absolute():
        hooks = root / hooks
    prefix = root.relative_to(toplevel).as_posix()
    prefix = "" if prefix == "." else prefix + "/"
    hook = hooks / "pre-commit"
    if hook.exists() or hook.is_symlink():
        try:
            existing = hook.read_text(encoding="utf-8", errors="replace")
        except OSError:
            existing = ""
        if HOOK_MARKER not in existing:
            raise PolycrateError(
                "a pre-commit hook that polycrate did not write exists; not replacing it "
                "(remove it, or merge polycrate's check into it by hand)", hook)
    hooks.mkdir(parents=True, exist_ok=True)
    text = _HOOK_TEMPLATE.format(marker=HOOK_MARKER, prefix=prefix.replace("'", "'\\''"))
    _write_durably(hook, text.encode("utf-8"), 0o755, lambda _b: None, checkpoints=False)
    return hook


# --------------------------------------------------------------------------- run time


def _private_tmp_base() -> str | None:
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return None


def _file_lines(data: bytes) -> list[str]:
    """Non-trivial lines of a secret file, and the value part of ``key = value`` lines."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return []
    found: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]") and "=" not in line:
            continue  # an INI section header such as `[acme-s3]` names, it does not hide
        candidates = [line]
        for sep in ("=", ":"):
            if sep in line:
                key, _, value = line.partition(sep)
                value_has_text = any(ch.isalnum() for ch in value)  # not base64 padding `xyz==`
                if key.strip() and " " not in key.strip() and not key.strip().startswith("-") and value_has_text:
                    # `key = value`: the value is the secret; the line as a whole is not
                    # (masking `type = s3` would only blot harmless output)
                    candidates = [value.strip().strip("'\"")]
                break
        found += [c for c in candidates if _non_trivial(c, MIN_LINE_LEN)]
    return found


def _non_trivial(text: str, min_len: int) -> bool:
    if len(text) < min_len:
        return False
    if not any(ch.isalnum() for ch in text):
        return False
    return text.lower() not in TRIVIAL_WORDS


def _values_of(data: Any) -> Iterable[str]:
    if isinstance(data, dict):
        for value in data.values():
            yield from _values_of(value)
    elif isinstance(data, (list, tuple)):
        for value in data:
            yield from _values_of(value)
    elif data is None or isinstance(data, bool):
        return
    else:
        text = str(data)
        if len(text) >= MIN_VALUE_LEN:
            yield text
        if "\n" in text:
            yield from (line.strip() for line in text.splitlines() if _non_trivial(line.strip(), MIN_LINE_LEN))


def build_masker(values: Any, file_contents: Iterable[bytes]) -> Masker:
    """The Masker for a run: every value in secrets.poly (scalars of >= MIN_VALUE_LEN
    characters; booleans and nulls skipped) and every non-trivial line of each secret file
    (>= MIN_LINE_LEN characters, some alphanumerics, not a TRIVIAL_WORD, not an INI
    ``[section]`` header); for ``key = value`` / ``key: value`` lines only the value counts.
    Binary (non-UTF-8) files contribute nothing: they are not printed as text."""
    masker = Masker()
    masker.update(_values_of(values))
    for data in file_contents:
        masker.update(_file_lines(data))
    return masker


class RuntimeSecrets:
    """Secrets decrypted for one run: files in a private folder, values, and a Masker.

    Use as a context manager; the folder is removed on exit, also on exceptions
    (and, as a last resort, at interpreter exit)."""

    def __init__(self) -> None:
        self.dir: Path | None = None
        self.files: dict[str, str] = {}  # path relative to artifacts/secrets -> absolute path
        self.block_names: set[str] = set()
        self.values: dict[str, Any] = {}
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
                         identity_source: Keyring | str | Path | None = None) -> RuntimeSecrets:
    """Decrypt the workspace's secrets into a private temp folder for one run.

    Plaintext files are copied in as they are (an unencrypted workspace needs no key).
    Raises PolycrateError (and leaves nothing behind) on no/wrong key or a damaged file."""
    from polycrate.yamlfile import parse_yaml, plain

    root = Path(root)
    keyring = _as_keyring(identity_source)
    secrets = RuntimeSecrets()
    secrets.block_names = set(block_names)
    base = root / SECRETS_DIR
    contents: list[bytes] = []
    poly_text: tuple[str, str] | None = None
    try:
        for plain_path, (has_plain, has_age) in _pairs(root).items():
            rel_root = _rel(root, plain_path)
            if has_plain:
                data = _read(plain_path, root)
            else:
                data = _decrypt_bytes(_read(_age_path(plain_path), root), keyring, rel_root + AGE_SUFFIX)
            if plain_path.parent == root and plain_path.name == SECRETS_POLY:
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    raise ConfigError("not UTF-8 text", rel_root if has_plain else rel_root + AGE_SUFFIX) from None
                poly_text = (text, rel_root if has_plain else rel_root + AGE_SUFFIX)
                continue
            contents.append(data)
            if secrets.dir is None:
                secrets.dir = Path(tempfile.mkdtemp(prefix="polycrate-secrets-", dir=_private_tmp_base()))
                atexit.register(secrets.close)
                os.chmod(secrets.dir, stat.S_IRWXU)
            rel = plain_path.relative_to(base)
            target = secrets.dir / rel
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            secrets.files[rel.as_posix()] = str(target)
        if poly_text is not None:
            parsed = parse_yaml(poly_text[0], poly_text[1])
            if parsed is None:
                parsed = {}
            if not isinstance(parsed, dict):
                raise ConfigError("secrets.poly must be a mapping", poly_text[1])
            secrets.values = plain(parsed)
        secrets.masker = build_masker(secrets.values, contents)
    except BaseException:
        secrets.close()
        raise
    return secrets
