"""The encrypted store: encrypt and decrypt every secret of a workspace, planned first, written durably."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polycrate.errors import PolycrateError
from polycrate.secrets.files import (
    AGE_SUFFIX,
    Checkpoint,
    age_path,
    no_checkpoint,
    read_secret,
    rel_path,
    remove_durably,
    secret_pairs,
    stale_tmp_files,
    write_durably,
)
from polycrate.secrets.git import ensure_gitignore
from polycrate.secrets.keys import (
    ENV_IDENTITY_FILE,
    ENV_KEY,
    Keyring,
    as_keyring,
    pyrage_module,
)
from polycrate.secrets.recipients import workspace_recipients
from polycrate.config.record import MutableRecord
from polycrate.config.schema import WORKSPACE_FILE

AGE_HEADER = b"age-encryption.org/v1\n"
AGE_ARMOR_HEADER = b"-----BEGIN AGE ENCRYPTED FILE-----"  # `age --armor`; read, never written


def decrypt_bytes(data: bytes, keyring: Keyring, rel: str) -> bytes:
    pyrage = pyrage_module()
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


@dataclass(eq=False, repr=False)
class EncryptResult(MutableRecord):
    encrypted: list[str] = field(default_factory=list)  # plaintext -> new .age
    reencrypted: list[str] = field(default_factory=list)  # plaintext differed from existing .age / rekey
    plaintext_removed: list[str] = field(default_factory=list)  # plaintext equal to existing .age
    unchanged: list[str] = field(default_factory=list)  # already encrypted
    recipients: list[str] = field(default_factory=list)
    gitignore_updated: bool = False
    stale_removed: list[str] = field(default_factory=list)


@dataclass(eq=False, repr=False)
class DecryptResult(MutableRecord):
    decrypted: list[str] = field(default_factory=list)
    ciphertext_removed: list[str] = field(default_factory=list)  # plaintext already equal
    unchanged: list[str] = field(default_factory=list)  # plaintext without .age
    stale_removed: list[str] = field(default_factory=list)


def encrypt_workspace(root: Path, identity_source: Keyring | str | Path | None = None,
                      rekey: bool = False, update_gitignore: bool = True,
                      checkpoint: Checkpoint = no_checkpoint) -> EncryptResult:
    """Encrypt every plaintext secret of the workspace at ``root`` (see the package docstring).

    ``checkpoint`` is told each step of each durable write (crash tests end the process there)."""
    pyrage = pyrage_module()
    root = Path(root)
    keyring = as_keyring(identity_source)
    result = EncryptResult()
    # ---- plan: everything that can fail does so here, before any file changes
    recipients = workspace_recipients(root)
    own = keyring.recipients()
    for r in own:
        if r not in recipients:
            recipients.append(r)
    pairs = secret_pairs(root)
    # (plaintext path, bytes, kind) for each file to write
    work: list[tuple[Path, bytes, str]] = []
    drop_plain: list[Path] = []
    for plain, (has_plain, has_age) in pairs.items():
        rel = rel_path(root, plain)
        if has_plain:
            data = read_secret(plain, root)
            if has_age:
                current = None
                if keyring.identities():
                    current = decrypt_bytes(read_secret(age_path(plain), root), keyring, rel + AGE_SUFFIX)
                if current == data and not rekey:
                    drop_plain.append(plain)
                    continue
                work.append((plain, data, "reencrypted"))
            else:
                work.append((plain, data, "encrypted"))
        elif rekey:
            rel_age = rel + AGE_SUFFIX
            data = decrypt_bytes(read_secret(age_path(plain), root), keyring, rel_age)
            work.append((plain, data, "reencrypted"))
        else:
            result.unchanged.append(rel + AGE_SUFFIX)
    if (work or drop_plain) and not recipients:
        raise PolycrateError(  # the workspace's file itself, wherever the command was typed (-w elsewhere)
            f"no recipients: list age public keys under 'encryption.recipients' here "
            f"or set {ENV_KEY} / {ENV_IDENTITY_FILE} / --identity", root.resolve() / WORKSPACE_FILE)
    result.recipients = list(recipients)
    # ---- act
    if update_gitignore:
        result.gitignore_updated = ensure_gitignore(root, checkpoint)
    for tmp in stale_tmp_files(root):
        tmp.unlink(missing_ok=True)
        result.stale_removed.append(rel_path(root, tmp))
    if work:
        verify_identities = list(keyring.identities())
        extra: list[Any] = []
        if not verify_identities:
            one_time = pyrage.x25519.Identity.generate()
            verify_identities = [one_time]
            extra = [one_time.to_public()]
        recipient_objs = [pyrage.x25519.Recipient.from_str(r) for r in recipients] + extra
        for plain, data, kind in work:
            rel = rel_path(root, plain)
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

            write_durably(age_path(plain), ciphertext, 0o644, verify, checkpoint)
            if plain.exists():
                remove_durably(plain, checkpoint)
            getattr(result, kind).append(rel)
    for plain in drop_plain:
        remove_durably(plain, checkpoint)
        result.plaintext_removed.append(rel_path(root, plain))
    return result


def decrypt_workspace(root: Path, identity_source: Keyring | str | Path | None = None,
                      checkpoint: Checkpoint = no_checkpoint) -> DecryptResult:
    """Decrypt every ``.age`` secret of the workspace back to plaintext (see the package docstring)."""
    root = Path(root)
    keyring = as_keyring(identity_source)
    result = DecryptResult()
    work: list[tuple[Path, bytes]] = []
    drop_age: list[Path] = []
    for plain, (has_plain, has_age) in secret_pairs(root).items():
        rel = rel_path(root, plain)
        if not has_age:
            result.unchanged.append(rel)
            continue
        data = decrypt_bytes(read_secret(age_path(plain), root), keyring, rel + AGE_SUFFIX)
        if has_plain:
            if read_secret(plain, root) != data:
                raise PolycrateError(
                    f"both {rel} and {rel}{AGE_SUFFIX} exist and differ; remove or encrypt one first", rel)
            drop_age.append(age_path(plain))
        else:
            work.append((plain, data))
    for tmp in stale_tmp_files(root):
        tmp.unlink(missing_ok=True)
        result.stale_removed.append(rel_path(root, tmp))
    for plain, data in work:
        def verify(written: bytes, data: bytes = data, plain: Path = plain) -> None:
            if written != data:  # pragma: no cover - write_durably already compared
                raise PolycrateError("verification failed", plain)

        write_durably(plain, data, 0o600, verify, checkpoint)
        remove_durably(age_path(plain), checkpoint)
        result.decrypted.append(rel_path(root, plain))
    for age in drop_age:
        remove_durably(age, checkpoint)
        result.ciphertext_removed.append(rel_path(root, age))
    return result
