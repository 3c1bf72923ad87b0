"""Keeping plaintext secrets out of git: the managed .gitignore section and the pre-commit hook."""
from __future__ import annotations

import subprocess
from pathlib import Path

from polycrate.errors import PolycrateError
from polycrate.secrets.files import TMP_SUFFIX, Checkpoint, no_checkpoint, write_durably

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


def ensure_gitignore(root: Path, checkpoint: Checkpoint = no_checkpoint) -> bool:
    """Add (or refresh) the marked polycrate section in ``root/.gitignore``. True if it changed."""
    path = root / ".gitignore"
    try:
        old = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise PolycrateError(f"cannot read: {exc}", ".gitignore") from None
    block = "\n".join([GITIGNORE_BEGIN, *GITIGNORE_BODY, GITIGNORE_END]) + "\n"
    lines = old.splitlines(keepends=True)
    begin = next((i for i, text in enumerate(lines) if text.rstrip("\n") == GITIGNORE_BEGIN), None)
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
    write_durably(path, new.encode("utf-8"), 0o644, lambda _b: None)
    checkpoint("gitignore-written")
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
    write_durably(hook, text.encode("utf-8"), 0o755, lambda _b: None)
    return hook
