"""Workspace encryption with age: real `age` CLI, real pyrage, real git, the real polycrate CLI."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from polycrate import secrets
from polycrate.errors import PolycrateError
from polycrate.secrets.masking import build_masker
from tests.helpers import Result, run_cli, tree
from tests.helpers import assert_one_line_error as shared_assert_one_line_error

pytestmark = pytest.mark.skipif(shutil.which("age") is None or shutil.which("age-keygen") is None,
                                reason="needs the age CLI (Debian package age)")

SECRET_VALUE = "hunter2-db-password"
S3_SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
BINARY = bytes(range(256)) * 40 + b"\x00\xff tail"
FILES = {
    "artifacts/secrets/rclone.conf": (
        f"[acme-s3]\ntype = s3\nprovider = Minio\naccess_key_id = ACMEACCESS01\nsecret_access_key = {S3_SECRET}\n"
    ).encode(),
    "artifacts/secrets/linux-maintenance/id_ed25519": b"-----BEGIN OPENSSH PRIVATE KEY-----\n"
    b"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    b"-----END OPENSSH PRIVATE KEY-----\n",
    "artifacts/secrets/linux-maintenance/blob.bin": BINARY,
    "secrets.poly": f"db_password: {SECRET_VALUE}\nbackup:\n  s3_key: {S3_SECRET}\n  port: 5432\n".encode(),
}


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def env(tmp_path):
    """A clean environment: no keys leaking in from the developer's shell or ~/.config."""
    e = {k: v for k, v in os.environ.items()
         if k not in (secrets.ENV_KEY, secrets.ENV_IDENTITY_FILE)}
    e["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    e["GIT_AUTHOR_NAME"] = e["GIT_COMMITTER_NAME"] = "Test"
    e["GIT_AUTHOR_EMAIL"] = e["GIT_COMMITTER_EMAIL"] = "test@example.invalid"
    return e


@pytest.fixture(autouse=True)
def _isolated_process_env(monkeypatch, tmp_path):
    for key in (secrets.ENV_KEY, secrets.ENV_IDENTITY_FILE):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def polycrate(*args, cwd, env, extra=None) -> Result:
    return run_cli(*args, cwd=cwd, env={**env, **(extra or {})}, timeout=120)


def keypair(tmp_path: Path, name: str) -> tuple[Path, str]:
    """A key made by the real age-keygen: (identity file, recipient)."""
    path = tmp_path / f"{name}.key"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True,
                               text=True).stdout.strip()
    return path, recipient


def secret_key_of(identity_file: Path) -> str:
    return next(line.strip() for line in identity_file.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-"))


def make_workspace(tmp_path: Path, recipients: list[str] | None = None, name: str = "ws") -> Path:
    root = tmp_path / name
    root.mkdir()
    poly = "name: acme-corp-automation\nblocks: []\nworkflows: []\n"
    if recipients:
        poly += "encryption:\n  recipients:\n" + "".join(f"    - {r}\n" for r in recipients)
    (root / "workspace.poly").write_text(poly)
    for rel, data in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "artifacts/secrets/.gitkeep").write_bytes(b"")
    return root


def age_decrypt(path: Path, identity: Path) -> bytes:
    return subprocess.run(["age", "-d", "-i", str(identity), str(path)], check=True, capture_output=True).stdout


def assert_one_line_error(result, *must_contain: str):
    shared_assert_one_line_error(result, *must_contain, hidden=(SECRET_VALUE, S3_SECRET))


# --------------------------------------------------------------------------- round trip


def test_round_trip_text_and_binary(tmp_path, env):
    identity, _ = keypair(tmp_path, "alice")
    root = make_workspace(tmp_path)

    r = polycrate("workspace", "encrypt", "--identity", str(identity), cwd=root, env=env)
    assert r.returncode == 0, r.stderr
    files = tree(root)
    for rel, data in FILES.items():
        assert rel not in files
        assert files[rel + ".age"].startswith(b"age-encryption.org/v1\n")
        assert data not in files[rel + ".age"]
    assert "artifacts/secrets/.gitkeep" in files  # not a secret
    assert not [p for p in files if p.endswith(".polycrate-tmp")]

    # encrypting twice changes nothing (not one byte, not one mtime)
    before = tree(root)
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    r = polycrate("workspace", "encrypt", "--identity", str(identity), cwd=root, env=env)
    assert r.returncode == 0, r.stderr
    assert "nothing to encrypt" in r.stdout
    assert tree(root) == before
    assert mtimes == {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}

    r = polycrate("workspace", "decrypt", cwd=root, env=env, extra={secrets.ENV_IDENTITY_FILE: str(identity)})
    assert r.returncode == 0, r.stderr
    files = tree(root)
    for rel, data in FILES.items():
        assert files[rel] == data
        assert rel + ".age" not in files
        assert stat.S_IMODE((root / rel).stat().st_mode) == 0o600


def test_key_from_workspace_encryption_key_env_and_json_output(tmp_path, env):
    identity, recipient = keypair(tmp_path, "alice")
    root = make_workspace(tmp_path)
    key_env = {secrets.ENV_KEY: secret_key_of(identity)}
    r = polycrate("-o", "json", "workspace", "encrypt", cwd=root, env=env, extra=key_env)
    assert r.returncode == 0, r.stderr
    import json

    data = json.loads(r.stdout)
    assert sorted(data["encrypted"]) == sorted(FILES)
    assert data["recipients"] == [recipient]
    r = polycrate("workspace", "decrypt", cwd=root, env=env, extra=key_env)
    assert r.returncode == 0, r.stderr
    assert {rel: tree(root)[rel] for rel in FILES} == FILES


# --------------------------------------------------------------------------- age CLI interop


def test_age_cli_decrypts_what_we_write(tmp_path, env):
    identity, _ = keypair(tmp_path, "alice")
    root = make_workspace(tmp_path)
    assert polycrate("workspace", "encrypt", "--identity", str(identity), cwd=root, env=env).returncode == 0
    for rel, data in FILES.items():
        assert age_decrypt(root / (rel + ".age"), identity) == data


@pytest.mark.parametrize("armor", [False, True])
def test_we_decrypt_what_age_cli_writes(tmp_path, env, armor):
    identity, recipient = keypair(tmp_path, "alice")
    root = make_workspace(tmp_path)
    for rel in FILES:
        cmd = ["age", "-r", recipient, "-o", str(root / (rel + ".age"))] + (["-a"] if armor else [])
        subprocess.run(cmd + [str(root / rel)], check=True)
        (root / rel).unlink()
    r = polycrate("workspace", "decrypt", "--identity", str(identity), cwd=root, env=env)
    assert r.returncode == 0, r.stderr
    assert {rel: tree(root)[rel] for rel in FILES} == FILES


# --------------------------------------------------------------------------- recipients


def test_two_recipients_each_decrypt_alone_and_rekey_locks_one_out(tmp_path, env):
    alice, alice_pub = keypair(tmp_path, "alice")
    bob, bob_pub = keypair(tmp_path, "bob")
    root = make_workspace(tmp_path, recipients=[alice_pub, bob_pub])

    # no key of our own: encrypting for others is possible (verified with a one-time key)
    r = polycrate("workspace", "encrypt", cwd=root, env=env)
    assert r.returncode == 0, r.stderr
    for rel, data in FILES.items():
        assert age_decrypt(root / (rel + ".age"), alice) == data
        assert age_decrypt(root / (rel + ".age"), bob) == data

    for who in (alice, bob):  # each alone, through polycrate, on its own copy
        copy = tmp_path / f"copy-{who.stem}"
        shutil.copytree(root, copy)
        r = polycrate("workspace", "decrypt", "--identity", str(who), cwd=copy, env=env)
        assert r.returncode == 0, r.stderr
        assert {rel: tree(copy)[rel] for rel in FILES} == FILES

    # remove bob, re-encrypt: bob is locked out, alice is not
    (root / "workspace.poly").write_text(
        "name: acme-corp-automation\nblocks: []\nworkflows: []\nencryption:\n  recipients:\n"
        f"    - {alice_pub}\n")
    r = polycrate("workspace", "encrypt", "--rekey", "--identity", str(alice), cwd=root, env=env)
    assert r.returncode == 0, r.stderr
    rel = "artifacts/secrets/rclone.conf.age"
    assert age_decrypt(root / rel, alice) == FILES["artifacts/secrets/rclone.conf"]
    denied = subprocess.run(["age", "-d", "-i", str(bob), str(root / rel)], capture_output=True)
    assert denied.returncode != 0


def test_bad_recipient_in_workspace_poly_is_one_line_error(tmp_path, env):
    identity, _ = keypair(tmp_path, "alice")
    root = make_workspace(tmp_path, recipients=["age1notakey"])
    before = tree(root)
    r = polycrate("workspace", "encrypt", "--identity", str(identity), cwd=root, env=env)
    assert_one_line_error(r, "workspace.poly")
    assert tree(root) == before

    root2 = make_workspace(tmp_path, recipients=[secret_key_of(identity)], name="ws2")
    before = tree(root2)
    r = polycrate("workspace", "encrypt", cwd=root2, env=env)
    assert_one_line_error(r, "workspace.poly", "SECRET key")
    assert tree(root2) == before


def test_no_recipients_and_no_key_names_the_workspace_file_itself(tmp_path, env):
    """Encrypting with no recipients and no WORKSPACE_ENCRYPTION_KEY named the bare 'workspace.poly', also to
    `polycrate -w ROOT` typed elsewhere (another folder's workspace.poly, or none): now the workspace's file."""
    root = make_workspace(tmp_path)
    before = tree(root)
    r = polycrate("-w", str(root), "workspace", "encrypt", cwd=tmp_path, env=env)
    assert_one_line_error(r, "error: ws/workspace.poly: no recipients: list age public keys under "
                             f"'encryption.recipients' here or set {secrets.ENV_KEY}")  # as every path: from here
    assert tree(root) == before


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def encrypted(tmp_path, env):
    identity, _ = keypair(tmp_path, "alice")
    root = make_workspace(tmp_path)
    assert polycrate("workspace", "encrypt", "--identity", str(identity), cwd=root, env=env).returncode == 0
    return root, identity


def test_wrong_key_changes_nothing(tmp_path, env, encrypted):
    root, _ = encrypted
    other, _ = keypair(tmp_path, "mallory")
    (root / "secrets.poly").write_bytes(b"db_password: changed-locally\n")  # a pending plaintext edit
    before = tree(root)
    for command in (["decrypt"], ["encrypt", "--rekey"]):
        r = polycrate("workspace", *command, "--identity", str(other), cwd=root, env=env)
        assert_one_line_error(r, ".age", "cannot decrypt")
        assert tree(root) == before


def test_no_key_names_the_file(env, encrypted):
    root, _ = encrypted
    before = tree(root)
    r = polycrate("workspace", "decrypt", cwd=root, env=env)
    assert_one_line_error(r, ".age", "no key")
    assert tree(root) == before


@pytest.mark.parametrize("bad_key", ["not-a-key", "AGE-SECRET-KEY-1QQQQQQQQ", "age1qqqqqqqq"])
def test_key_in_wrong_format(env, encrypted, bad_key):
    root, _ = encrypted
    before = tree(root)
    r = polycrate("workspace", "decrypt", cwd=root, env=env, extra={secrets.ENV_KEY: bad_key})
    assert_one_line_error(r, secrets.ENV_KEY)
    assert bad_key not in r.stderr
    assert tree(root) == before


def test_identity_file_in_wrong_format(tmp_path, env, encrypted):
    root, identity = encrypted
    bad = tmp_path / "bad.key"
    bad.write_text("# comment\n" + secret_key_of(identity)[:-5] + "\n")
    before = tree(root)
    r = polycrate("workspace", "decrypt", "--identity", str(bad), cwd=root, env=env)
    assert_one_line_error(r, "bad.key:2")
    assert tree(root) == before


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage"])
def test_corrupted_or_truncated_file(env, encrypted, damage):
    root, identity = encrypted
    target = root / "artifacts/secrets/linux-maintenance/blob.bin.age"
    data = target.read_bytes()
    damaged = {
        "truncate": data[: len(data) - 100],
        "flip": data[:-50] + bytes([data[-50] ^ 0x01]) + data[-49:],
        "empty": b"",
        "garbage": b"this is not age\n",
    }[damage]
    target.write_bytes(damaged)
    before = tree(root)
    r = polycrate("workspace", "decrypt", "--identity", str(identity), cwd=root, env=env)
    assert_one_line_error(r, "artifacts/secrets/linux-maintenance/blob.bin.age")
    assert tree(root) == before  # nothing decrypted, not even the intact files


def test_both_plaintext_and_ciphertext(env, encrypted):
    root, identity = encrypted
    rel = "artifacts/secrets/rclone.conf"
    # identical plaintext appears again (e.g. restored from a backup): dropped, ciphertext untouched
    cipher = (root / (rel + ".age")).read_bytes()
    (root / rel).write_bytes(FILES[rel])
    r = polycrate("workspace", "encrypt", "--identity", str(identity), cwd=root, env=env)
    assert r.returncode == 0, r.stderr
    assert not (root / rel).exists() and (root / (rel + ".age")).read_bytes() == cipher
    # an edited plaintext wins: re-encrypted
    (root / rel).write_bytes(b"edited = yes-indeed\n")
    r = polycrate("workspace", "encrypt", "--identity", str(identity), cwd=root, env=env)
    assert r.returncode == 0, r.stderr
    assert not (root / rel).exists()
    assert age_decrypt(root / (rel + ".age"), identity) == b"edited = yes-indeed\n"
    # decrypt refuses to drop a ciphertext that differs from the plaintext
    (root / rel).write_bytes(b"something else\n")
    before = tree(root)
    r = polycrate("workspace", "decrypt", "--identity", str(identity), cwd=root, env=env)
    assert_one_line_error(r, rel, "differ")
    assert tree(root) == before


# --------------------------------------------------------------------------- crash safety


# Runs encrypt or decrypt in a process of its own with a checkpoint that ends it (exit 99) the N-th
# (default first) time it reaches STEP: argv = encrypt|decrypt ROOT IDENTITY STEP[:N].
CRASH_DRIVER = """
import os, sys
from polycrate import secrets
command, root, identity, step = sys.argv[1:]
name, _, nth = step.partition(":")
reached = []
def crash_at(step):
    if step == name:
        reached.append(step)
        if len(reached) >= (int(nth) if nth else 1):
            os._exit(99)
run = secrets.encrypt_workspace if command == "encrypt" else secrets.decrypt_workspace
run(root, secrets.Keyring(identity), checkpoint=crash_at)
"""


def crash_during(command: str, root: Path, identity: Path, step: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CRASH_DRIVER, command, str(root), str(identity), step],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def _assert_recoverable(root: Path, identity: Path) -> None:
    for rel, data in FILES.items():
        plain, cipher = root / rel, root / (rel + ".age")
        ok_plain = plain.exists() and plain.read_bytes() == data
        ok_cipher = cipher.exists() and age_decrypt(cipher, identity) == data
        assert ok_plain or ok_cipher, f"{rel} lost"


@pytest.mark.parametrize("crash", ["tempfile-written", "verified", "renamed", "source-removed",
                                   "tempfile-written:3", "renamed:2", "source-removed:4"])
def test_killed_in_the_middle_of_encrypt_loses_nothing(tmp_path, env, crash):
    identity, _ = keypair(tmp_path, "alice")
    root = make_workspace(tmp_path)
    r = crash_during("encrypt", root, identity, crash, env)
    assert r.returncode == 99, (r.returncode, r.stderr)
    _assert_recoverable(root, identity)
    # the next run finishes the job and cleans up stale temporary files
    r = polycrate("workspace", "encrypt", "--identity", str(identity), cwd=root, env=env)
    assert r.returncode == 0, r.stderr
    files = tree(root)
    assert not [p for p in files if p.endswith(".polycrate-tmp")]
    for rel, data in FILES.items():
        assert rel not in files
        assert age_decrypt(root / (rel + ".age"), identity) == data


@pytest.mark.parametrize("crash", ["tempfile-written:2", "renamed:3", "source-removed"])
def test_killed_in_the_middle_of_decrypt_loses_nothing(env, encrypted, crash):
    root, identity = encrypted
    r = crash_during("decrypt", root, identity, crash, env)
    assert r.returncode == 99, (r.returncode, r.stderr)
    _assert_recoverable(root, identity)
    r = polycrate("workspace", "decrypt", "--identity", str(identity), cwd=root, env=env)
    assert r.returncode == 0, r.stderr
    files = tree(root)
    assert not [p for p in files if p.endswith(".polycrate-tmp")]
    assert {rel: files[rel] for rel in FILES} == FILES


# --------------------------------------------------------------------------- git


def git(root: Path, *args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, env=env, capture_output=True, text=True, check=check)


@pytest.mark.parametrize("subdir", [False, True])
def test_gitignore_and_hook_stop_plaintext_commits(tmp_path, env, subdir):
    identity, _ = keypair(tmp_path, "alice")
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", env=env)
    root = repo
    if subdir:  # the workspace is a folder inside a larger repository
        root = repo / "ops"
        root.mkdir()
    ws = make_workspace(root, name="ws")
    r = polycrate("workspace", "encrypt", "--install-hook", "--identity", str(identity), cwd=ws, env=env)
    assert r.returncode == 0, r.stderr
    assert "pre-commit" in r.stdout

    # a new plaintext secret appears after encrypting
    (ws / "artifacts/secrets/new-token").write_text("token = abcdef123456\n")
    (ws / "secrets.poly").write_text("db_password: fresh-one\n")
    git(ws, "add", "-A", env=env)
    staged = git(repo, "diff", "--cached", "--name-only", env=env).stdout.split()
    prefix = "ops/ws/" if subdir else "ws/"
    assert prefix + "artifacts/secrets/rclone.conf.age" in staged
    assert prefix + "secrets.poly.age" in staged
    assert prefix + "artifacts/secrets/.gitkeep" in staged
    assert not [p for p in staged if p.startswith(prefix + "artifacts/secrets/") and not p.endswith((".age", ".gitkeep"))]
    assert prefix + "secrets.poly" not in staged
    assert git(repo, "commit", "-q", "-m", "encrypted secrets", env=env, check=False).returncode == 0

    # forcing a plaintext secret past .gitignore: the hook refuses the commit
    for forced in ("artifacts/secrets/new-token", "secrets.poly"):
        git(ws, "add", "-f", forced, env=env)
        c = git(repo, "commit", "-q", "-m", "oops", env=env, check=False)
        assert c.returncode != 0
        assert "refusing to commit plaintext secret" in c.stderr and forced in c.stderr
        git(ws, "reset", "-q", "--", forced, env=env)
    # plaintext renamed to *.age is caught by its header
    (ws / "artifacts/secrets/fake.age").write_text("plain text pretending\n")
    git(ws, "add", "artifacts/secrets/fake.age", env=env)
    c = git(repo, "commit", "-q", "-m", "oops", env=env, check=False)
    assert c.returncode != 0 and "fake.age" in c.stderr


def test_install_hook_does_not_clobber_a_foreign_hook(tmp_path, env):
    identity, _ = keypair(tmp_path, "alice")
    root = make_workspace(tmp_path)
    git(root, "init", "-q", env=env)
    hook = root / ".git/hooks/pre-commit"
    hook.write_text("#!/bin/sh\necho mine\n")
    r = polycrate("workspace", "encrypt", "--install-hook", "--identity", str(identity), cwd=root, env=env)
    assert_one_line_error(r, "pre-commit", "not replacing")
    assert hook.read_text() == "#!/bin/sh\necho mine\n"
    # our own hook is refreshed without complaint
    hook.unlink()
    for _ in range(2):
        r = polycrate("workspace", "encrypt", "--install-hook", "--identity", str(identity), cwd=root, env=env)
        assert r.returncode == 0, r.stderr
    assert secrets.HOOK_MARKER in hook.read_text()


def test_gitignore_section_is_idempotent_and_keeps_user_lines(tmp_path):
    root = tmp_path
    (root / ".gitignore").write_text("*.log\n")
    assert secrets.ensure_gitignore(root) is True
    first = (root / ".gitignore").read_text()
    assert first.startswith("*.log\n") and first.count(secrets.GITIGNORE_BEGIN) == 1
    assert secrets.ensure_gitignore(root) is False
    assert (root / ".gitignore").read_text() == first
    # a stale managed section is replaced in place, user lines after it survive
    (root / ".gitignore").write_text(first.replace("/secrets.poly\n", "") + "build/\n")
    assert secrets.ensure_gitignore(root) is True
    text = (root / ".gitignore").read_text()
    assert text == first + "build/\n"


# --------------------------------------------------------------------------- keygen


def test_keygen(tmp_path, env):
    out = tmp_path / "keys" / "me.txt"
    r = polycrate("workspace", "keygen", "--identity", str(out), cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    recipient = r.stdout.splitlines()[0]
    assert recipient.startswith("age1")
    assert "AGE-SECRET-KEY" not in r.stdout + r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    # the age CLI agrees on the public key and can use the identity
    assert subprocess.run(["age-keygen", "-y", str(out)], capture_output=True, text=True).stdout.strip() == recipient
    enc = subprocess.run(["age", "-r", recipient], input=b"x", capture_output=True, check=True).stdout
    assert subprocess.run(["age", "-d", "-i", str(out)], input=enc, capture_output=True, check=True).stdout == b"x"
    # never overwrites
    before = out.read_bytes()
    r = polycrate("workspace", "keygen", "--identity", str(out), cwd=tmp_path, env=env)
    assert_one_line_error(r, "me.txt", "refusing to overwrite")
    assert out.read_bytes() == before
    # default location under XDG_CONFIG_HOME, used as a fallback key
    r = polycrate("workspace", "keygen", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert (Path(env["XDG_CONFIG_HOME"]) / "polycrate/age-identity.txt").is_file()


def test_keygen_says_how_each_command_finds_the_key(tmp_path, env):
    """keygen said to use the key 'with --identity FILE or POLYCRATE_IDENTITY_FILE=FILE', but a run and
    `workspace validate` take no --identity (refused: unrecognized arguments): only encrypt and decrypt do.
    Now it says POLYCRATE_IDENTITY_FILE for every command and --identity for encrypt and decrypt, and of a
    key in the default place that every command finds it. The way it names works for a run's validate."""
    import re
    import shlex

    root = make_workspace(tmp_path, name="plain")
    out = tmp_path / "keys" / "me.txt"
    made = polycrate("workspace", "keygen", "--identity", str(out), cwd=root, env=env)
    assert made.returncode == 0, made.stderr
    recipient = made.stdout.splitlines()[0]
    hint = made.stdout.split("\n", 2)[2]
    assert f"POLYCRATE_IDENTITY_FILE={out} (every command; workspace encrypt and decrypt also take --identity {out})" \
        in hint, hint
    (root / "workspace.poly").write_text((root / "workspace.poly").read_text()
                                         + f"encryption:\n  recipients: [{recipient}]\n")
    assert polycrate("workspace", "encrypt", "--identity", str(out), cwd=root, env=env).returncode == 0
    name, value = re.search(r"(POLYCRATE_IDENTITY_FILE)=(\S+?) ", hint).groups()
    validate = polycrate("workspace", "validate", cwd=root, env=env, extra={name: value})
    assert validate.returncode == 0, validate.stderr
    refused = polycrate("workspace", "validate", "--identity", str(out), cwd=root, env=env)
    assert refused.returncode == 2 and "unrecognized arguments: --identity" in refused.stderr  # as keygen no longer says

    default = polycrate("workspace", "keygen", cwd=root, env=env)
    assert default.returncode == 0, default.stderr
    path = Path(env["XDG_CONFIG_HOME"]) / "polycrate" / "age-identity.txt"
    assert f"# Every command of yours finds the key there; another user or a unit: POLYCRATE_IDENTITY_FILE={path}." \
        in default.stdout
    assert "--identity" not in default.stdout and shlex.quote(str(path)) == str(path)


# --------------------------------------------------------------------------- run time


def _leftover_dirs() -> set[str]:
    found = set()
    for base in ("/dev/shm", "/tmp"):
        if os.path.isdir(base):
            found |= {str(p) for p in Path(base).glob("polycrate-secrets-*")}
    return found


def test_runtime_secrets_private_dir_files_values_masker(encrypted):
    root, identity = encrypted
    with secrets.open_runtime_secrets(root, ["linux-maintenance"], secrets.Keyring(identity)) as s:
        assert s.dir is not None
        assert stat.S_IMODE(s.dir.stat().st_mode) == 0o700
        if os.access("/dev/shm", os.W_OK):
            assert str(s.dir).startswith("/dev/shm/")
        assert set(s.workspace_files) == {"rclone.conf"}
        assert Path(s.workspace_files["rclone.conf"]).read_bytes() == FILES["artifacts/secrets/rclone.conf"]
        block = s.block_files("linux-maintenance")
        assert set(block) == {"id_ed25519", "blob.bin"}
        assert Path(block["blob.bin"]).read_bytes() == BINARY
        assert stat.S_IMODE(Path(block["id_ed25519"]).stat().st_mode) == 0o600
        assert s.block_files("other") == {}
        assert s.values == {"db_password": SECRET_VALUE, "backup": {"s3_key": S3_SECRET, "port": 5432}}
        line = f"TASK [x] ok: pw={SECRET_VALUE}; aws {S3_SECRET}; ssh b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"
        masked = s.masker.mask(line)
        assert SECRET_VALUE not in masked and S3_SECRET not in masked and "b3BlbnNz" not in masked
        assert s.masker.mask("type = s3 ok changed=1") == "type = s3 ok changed=1"  # trivial lines stay

        folder = s.dir
    assert not folder.exists()
    assert s.dir is None


def test_masker_from_secret_files_thresholds():
    m = build_masker(
        {"pw": "abc", "token": "longer-token", "flag": True, "none": None, "multi": "line-one-xx\nline-two-yy\n"},
        [b"[remote]\ntype = s3\nsecret_access_key = AKIA-1234-SECRET\nenv_auth = false\n",
         b"-----BEGIN KEY-----\nQUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\n-----END KEY-----\n",
         b"only-a-raw-token-line\n#!\n----\n", BINARY])
    masked = m.mask("abc longer-token line-one-xx line-two-yy AKIA-1234-SECRET QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo= "
                    "only-a-raw-token-line type = s3 env_auth = false [remote]")
    assert masked == ("abc ******** ******** ******** ******** ******** ******** type = s3 env_auth = false [remote]")


def test_runtime_secrets_removed_on_exception(encrypted):
    root, identity = encrypted
    with pytest.raises(RuntimeError):
        with secrets.open_runtime_secrets(root, ["linux-maintenance"], identity) as s:
            folder = s.dir
            assert folder.exists()
            raise RuntimeError("action failed")
    assert not folder.exists()


def test_runtime_secrets_wrong_key_leaves_nothing(tmp_path, encrypted):
    root, _ = encrypted
    other, _ = keypair(tmp_path, "mallory")
    before_dirs, before = _leftover_dirs(), tree(root)
    with pytest.raises(PolycrateError) as info:
        secrets.open_runtime_secrets(root, ["linux-maintenance"], other)
    assert ".age" in str(info.value) and "\n" not in str(info.value)
    assert _leftover_dirs() == before_dirs
    assert tree(root) == before
    with pytest.raises(PolycrateError, match="no key"):
        secrets.open_runtime_secrets(root, [], None)
    assert _leftover_dirs() == before_dirs


def test_runtime_secrets_unencrypted_workspace_needs_no_key(tmp_path):
    root = make_workspace(tmp_path)
    with secrets.open_runtime_secrets(root, ["linux-maintenance"], None) as s:
        assert Path(s.workspace_files["rclone.conf"]).read_bytes() == FILES["artifacts/secrets/rclone.conf"]
        assert s.values["db_password"] == SECRET_VALUE
        assert s.masker.mask(SECRET_VALUE) == "********"
        folder = s.dir
    assert not folder.exists()
    # and no secrets at all: no folder, nothing to mask
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "workspace.poly").write_text("name: e\n")
    with secrets.open_runtime_secrets(empty, [], None) as s:
        assert s.dir is None and s.workspace_files == {} and s.values == {} and s.masker.count == 0


def test_runtime_secrets_bad_secrets_poly(tmp_path):
    root = make_workspace(tmp_path)
    (root / "secrets.poly").write_text("- just\n- a list\n")
    before_dirs = _leftover_dirs()
    with pytest.raises(PolycrateError, match="mapping"):
        secrets.open_runtime_secrets(root, [], None)
    assert _leftover_dirs() == before_dirs


def test_a_killed_run_s_decrypted_secrets_are_swept_by_the_next_run(tmp_path, env, encrypted):
    """SIGKILL leaves no chance to clean up: the folder a killed process decrypted into names its owner, and
    the next run on the host removes it; a folder of a process that still runs stays."""
    root, identity = encrypted
    script = (
        "import os, signal, sys\n"
        "from polycrate import secrets\n"
        f"s = secrets.open_runtime_secrets({str(root)!r}, ['linux-maintenance'], secrets.Keyring({str(identity)!r}))\n"
        "print(s.dir, flush=True)\n"
        "if sys.argv[1] == 'die':\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "sys.stdin.read()\n"  # the live one: holds its folder until the test closes its stdin
    )
    killed = subprocess.run([sys.executable, "-c", script, "die"], capture_output=True, text=True, env=env, timeout=120)
    assert killed.returncode == -9, killed.stderr
    left = Path(killed.stdout.strip())
    assert (left / "rclone.conf").is_file()  # what SIGKILL leaves: the decrypted secrets
    live = subprocess.Popen([sys.executable, "-c", script, "live"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        held = Path(live.stdout.readline().strip())
        assert held.is_dir() and held != left
        with secrets.open_runtime_secrets(root, ["linux-maintenance"], secrets.Keyring(identity)) as s:
            assert s.dir is not None and s.dir.is_dir()
        assert not left.exists()
        assert held.is_dir()  # its owner still runs
    finally:
        live.stdin.close()
        live.wait(timeout=60)
    assert not held.exists()  # it cleaned up after itself


def test_an_owner_is_told_by_pid_and_start_time(tmp_path):
    from polycrate.secrets import scratch

    me = os.getpid()
    ticks = scratch.start_ticks(me)
    assert ticks is not None
    assert scratch.owner_alive(f"polycrate-secrets-{me}.{ticks}-abc") is True
    assert scratch.owner_alive(f"polycrate-secrets-{me}.{ticks + 1}-abc") is False  # the pid, reused
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert scratch.owner_alive(f"polycrate-container-{gone.stdout.strip()}.{ticks}-abc") is False
    assert scratch.owner_alive("polycrate-secrets-x1y2z3") is None  # an older version's name: left alone
    for name in (f"polycrate-secrets-{me}.{ticks + 1}-a", "polycrate-secrets-x1y2z3", "other-folder"):
        (tmp_path / name).mkdir()
    assert scratch.sweep(str(tmp_path)) == [str(tmp_path / f"polycrate-secrets-{me}.{ticks + 1}-a")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other-folder", "polycrate-secrets-x1y2z3"]


# --------------------------------------------------------------------------- validate sees what a run sees


def test_validate_checks_a_script_with_the_secret_config_a_run_gets(tmp_path, env):
    """`workspace validate` filled a script's `{{ .block.config.token }}` from workspace.poly alone: a token that
    secrets.poly gives read `<no value>`, and `echo $(echo <no value> | rev)` failed bash -n, so validate said the
    workspace was broken while its run succeeded. Now validate opens the secrets as a run does (encrypted too)."""
    root = tmp_path / "ws"
    (root / "blocks" / "app").mkdir(parents=True)
    (root / "blocks" / "app" / "block.poly").write_text(
        "name: app\nactions:\n  - name: use\n    script:\n"
        "      - 'echo \"reversed: $(echo {{ .block.config.token }} | rev)\" > used.txt'\n")
    (root / "workspace.poly").write_text("name: ws\nconfig: {runtime: local}\nblocks:\n  - name: app\n"
                                         "workflows:\n  - name: use\n    steps:\n      - {name: use, block: app, action: use}\n")
    (root / "secrets.poly").write_text(f"blocks:\n  - name: app\n    config:\n      token: {SECRET_VALUE}\n")
    valid = polycrate("workspace", "validate", cwd=root, env=env)
    assert valid.returncode == 0, valid.output
    assert "is valid" in valid.stdout and "<no value>" not in valid.output and SECRET_VALUE not in valid.output
    ran = polycrate("workflows", "run", "use", cwd=root, env=env)  # what validate says, the run does
    assert ran.returncode == 0, ran.output
    assert (root / "blocks" / "app" / "used.txt").read_text().strip() == f"reversed: {SECRET_VALUE[::-1]}"

    identity, recipient = keypair(tmp_path, "ops")  # encrypted: validate opens it with the key a run uses
    poly = root / "workspace.poly"
    poly.write_text(poly.read_text() + f"encryption:\n  recipients:\n    - {recipient}\n")
    key = {secrets.ENV_KEY: secret_key_of(identity)}
    assert polycrate("workspace", "encrypt", cwd=root, env=env, extra=key).returncode == 0
    assert not (root / "secrets.poly").exists()
    valid = polycrate("workspace", "validate", cwd=root, env=env, extra=key)
    assert valid.returncode == 0 and "<no value>" not in valid.output, valid.output
    without = polycrate("workspace", "validate", cwd=root, env=env)  # no key: that is what it says
    assert without.returncode == 2 and SECRET_VALUE not in without.output, without.output
