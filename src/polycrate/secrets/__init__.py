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

Checkpoints
    ``encrypt_workspace`` and ``decrypt_workspace`` take a ``checkpoint`` callable,
    told each step a durable write reaches: ``tempfile-written``, ``verified``,
    ``renamed``, ``source-removed``, ``gitignore-written``. Production passes none;
    the crash tests pass one that ends the process at a chosen step.

Run time
    ``open_runtime_secrets`` decrypts everything into a private folder (0700, on
    ``/dev/shm`` when usable) for the duration of a run and builds the ``Masker``
    (the rules of what is hidden: ``polycrate.secrets.masking.build_masker``).

Where things are: ``keys`` (identities), ``recipients`` (``encryption.recipients``,
checked), ``files`` (which files are secrets, durable writes), ``store`` (encrypt,
decrypt), ``git`` (.gitignore section, pre-commit hook), ``runtime`` (the per-run folder).
"""
from __future__ import annotations

from polycrate.secrets.files import (
    AGE_SUFFIX,
    SECRETS_DIR,
    SECRETS_POLY,
    TMP_SUFFIX,
    Checkpoint,
)
from polycrate.secrets.git import (
    GITIGNORE_BEGIN,
    GITIGNORE_END,
    HOOK_MARKER,
    ensure_gitignore,
    install_hook,
)
from polycrate.secrets.keys import (
    ENV_IDENTITY_FILE,
    ENV_KEY,
    IDENTITY_PREFIX,
    Keyring,
    default_identity_file,
    generate_identity,
)
from polycrate.secrets.recipients import RECIPIENT_PREFIX, workspace_recipients
from polycrate.secrets.runtime import RuntimeSecrets, open_runtime_secrets
from polycrate.secrets.store import (
    DecryptResult,
    EncryptResult,
    decrypt_workspace,
    encrypt_workspace,
)

__all__ = [
    "AGE_SUFFIX", "ENV_IDENTITY_FILE", "ENV_KEY", "GITIGNORE_BEGIN", "GITIGNORE_END", "HOOK_MARKER",
    "IDENTITY_PREFIX", "RECIPIENT_PREFIX", "SECRETS_DIR", "SECRETS_POLY", "TMP_SUFFIX", "Checkpoint",
    "DecryptResult", "EncryptResult", "Keyring", "RuntimeSecrets", "decrypt_workspace", "default_identity_file",
    "encrypt_workspace", "ensure_gitignore", "generate_identity", "install_hook", "open_runtime_secrets",
    "workspace_recipients",
]  # fmt: skip
