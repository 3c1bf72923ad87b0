"""`polycrate workspace encrypt|decrypt|keygen`: age encryption of workspace secrets."""
from __future__ import annotations

import argparse
from pathlib import Path

from polycrate.cli.render import emit_json


def register(wsub, shared: argparse.ArgumentParser | None = None) -> None:
    parents = [shared] if shared is not None else []

    p = wsub.add_parser(
        "encrypt", parents=parents,
        help="encrypt artifacts/secrets/** and secrets.poly to *.age (for workspace.poly encryption.recipients)")
    p.add_argument("--identity", metavar="FILE", help="age identity file (default: $WORKSPACE_ENCRYPTION_KEY, "
                   "$POLYCRATE_IDENTITY_FILE)")
    p.add_argument("--install-hook", action="store_true",
                   help="also install a git pre-commit hook that refuses plaintext secrets")
    p.add_argument("--rekey", action="store_true",
                   help="re-encrypt existing *.age files to the current recipients (after adding/removing one)")
    p.set_defaults(func=cmd_encrypt)

    p = wsub.add_parser("decrypt", parents=parents, help="decrypt *.age secrets back to plaintext files")
    p.add_argument("--identity", metavar="FILE", help="age identity file")
    p.set_defaults(func=cmd_decrypt)

    # -o/--output is the output format here as everywhere (`keygen --output json` wrote a file named
    # json); the file is --identity FILE, the option encrypt and decrypt read a key from.
    p = wsub.add_parser("keygen", parents=parents,
                        help="create an age identity file and print its public key (recipient)")
    p.add_argument("--identity", dest="identity_output", metavar="FILE",
                   help="where to write the identity (default: ~/.config/polycrate/age-identity.txt)")
    p.set_defaults(func=cmd_keygen)


def _root(args) -> Path:
    from polycrate.config.workspace import find_root

    workspace = getattr(args, "workspace", None)
    return find_root(workspace, explicit=workspace is not None)


def _json(args) -> bool:
    return getattr(args, "output", "text") == "json"


def cmd_encrypt(args) -> int:
    from polycrate import contract
    from polycrate import secrets

    root = _root(args)
    result = secrets.encrypt_workspace(root, secrets.Keyring(args.identity), rekey=args.rekey)
    hook = str(secrets.install_hook(root)) if args.install_hook else None
    if _json(args):
        emit_json(contract.document("secrets-encrypt", {
            "root": str(root),
            "encrypted": result.encrypted,
            "reencrypted": result.reencrypted,
            "plaintext_removed": result.plaintext_removed,
            "unchanged": result.unchanged,
            "recipients": result.recipients,
            "gitignore_updated": result.gitignore_updated,
            "hook": hook,
        }), args.format)
        return 0
    for rel in result.encrypted:
        print(f"encrypted    {rel} -> {rel}.age")
    for rel in result.reencrypted:
        print(f"re-encrypted {rel}.age")
    for rel in result.plaintext_removed:
        print(f"removed      {rel} (identical to {rel}.age)")
    changed = len(result.encrypted) + len(result.reencrypted) + len(result.plaintext_removed)
    if not changed:
        print(f"nothing to encrypt ({len(result.unchanged)} file(s) already encrypted)")
    else:
        print(f"{changed} file(s) encrypted for {len(result.recipients)} recipient(s)")
    if result.gitignore_updated:
        print("updated .gitignore: plaintext secrets are ignored, *.age files are not")
    if hook:
        print(f"installed pre-commit hook {hook}")
    return 0


def cmd_decrypt(args) -> int:
    from polycrate import contract
    from polycrate import secrets

    root = _root(args)
    result = secrets.decrypt_workspace(root, secrets.Keyring(args.identity))
    if _json(args):
        emit_json(contract.document("secrets-decrypt", {
            "root": str(root),
            "decrypted": result.decrypted,
            "ciphertext_removed": result.ciphertext_removed,
            "unchanged": result.unchanged,
        }), args.format)
        return 0
    for rel in result.decrypted:
        print(f"decrypted    {rel}.age -> {rel}")
    for rel in result.ciphertext_removed:
        print(f"removed      {rel}.age (identical to {rel})")
    if not (result.decrypted or result.ciphertext_removed):
        print("nothing to decrypt")
    else:
        print("plaintext secrets are on disk now; run 'polycrate workspace encrypt' before committing")
    return 0


def cmd_keygen(args) -> int:
    from polycrate import contract
    from polycrate import secrets

    output = Path(args.identity_output) if args.identity_output else secrets.default_identity_file()
    recipient = secrets.generate_identity(output)
    if _json(args):
        emit_json(contract.document("secrets-keygen", {"recipient": recipient, "identity_file": str(output)}), args.format)
        return 0
    print(recipient)
    print(f"# identity written to {output} (mode 0600; keep it secret).", flush=True)
    print("# Add the public key above to workspace.poly under encryption.recipients.")
    if output.absolute() == secrets.default_identity_file().absolute():
        print("# Every command of yours finds the key there; another user or a unit: "
              f"POLYCRATE_IDENTITY_FILE={output}.")
    else:  # a run or validate has no --identity: only encrypt and decrypt take it
        print(f"# Use the key with POLYCRATE_IDENTITY_FILE={output} (every command; "
              f"workspace encrypt and decrypt also take --identity {output}).")
    return 0
