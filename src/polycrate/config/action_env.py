"""What the real Polycrate puts in an action's environment, and which of it we adopt (one place).

Polycrate (cmd/workspace.go, bootstrapEnvVars and registerCurrent*) sets these for every action;
docs/reference/action-environment.md ("The real Polycrate's variables") has the table with the reasons:

adopted, same meaning:
    POLYCRATE_WORKSPACE, POLYCRATE_BLOCK, POLYCRATE_ACTION, POLYCRATE_WORKFLOW, POLYCRATE_STEP,
    POLYCRATE_WORKSPACE_SNAPSHOT_YAML (now for ansible actions too), POLYCRATE_BLOCK_WORKDIR,
    POLYCRATE_RUNTIME_SCRIPT_PATH (script actions), POLYCRATE_VERSION, POLYCRATE_CLI_VERSION,
    POLYCRATE_FORCE (1 with -f), IN_CONTAINER (1 in the container runtime),
    POLYCRATE_IMAGE_REFERENCE/POLYCRATE_IMAGE_VERSION (the run's image; empty when local),
    ANSIBLE_PRIVATE_KEY_FILE and ANSIBLE_SSH_PRIVATE_KEY_FILE (the workspace's key, when there is one),
    ANSIBLE_VERBOSITY (--loglevel, only when given), ANSIBLE_INVENTORY, and -e KEY=value last.
not adopted: ANSIBLE_HOST_KEY_CHECKING=False, the *_WARNINGS=False, DISPLAY_*_HOSTS,
    STDOUT_CALLBACK, CALLBACK_RESULT_FORMAT, INVENTORY_ENABLED, the vars-plugin settings,
    ANSIBLE_DEBUG, IN_CI=true, TERM=xterm-256color.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Protocol

from polycrate.errors import PolycrateError

WORKSPACE_PRIVATE_KEY = "id_rsa"  # the real Polycrate's workspace key pair, in the workspace root
WORKSPACE_PUBLIC_KEY = "id_rsa.pub"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class RuntimeInfo(Protocol):
    """What the variables need of runtime.toolchain.Runtime (a higher layer this one may not import)."""

    @property
    def container(self) -> bool: ...

    @property
    def image(self) -> str | None: ...


def parse_env(text: str) -> tuple[str, str]:
    """One -e KEY=value: the value is everything after the first '=' (it may hold '=' itself)."""
    key, sep, value = text.partition("=")
    if not sep or not _NAME.match(key):
        raise PolycrateError(f"-e/--env: expected KEY=value with KEY a variable name, not {text!r}")
    if "\0" in value:
        raise PolycrateError(f"-e/--env {key}: the value holds a NUL byte")
    return key, value


def workspace_key(root: Path, given: str | None, which: str = WORKSPACE_PRIVATE_KEY) -> Path | None:
    """The workspace's SSH key: `given` (relative to the workspace root; it must exist), else
    id_rsa (id_rsa.pub) in the root when it exists, else None."""
    if given:
        path = Path(os.path.expanduser(given))
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            flag = "--ssh-private-key" if which == WORKSPACE_PRIVATE_KEY else "--ssh-public-key"
            raise PolycrateError(f"{flag}: no such file: {path}")
        return path
    default = root / which
    return default if default.is_file() else None


def polycrate_variables(*, runtime: RuntimeInfo | None, force: bool, ssh_key: Path | None) -> dict[str, str]:
    """The Polycrate variables that do not depend on the block or action (see the module's list)."""
    container = runtime is not None and runtime.container
    image = (runtime.image or "") if runtime is not None and container else ""
    reference, version = image, ""
    from polycrate import __version__  # the package metadata, read when a run needs it (not on `workflows list`)

    if ":" in image.rsplit("/", 1)[-1]:
        reference, _, version = image.rpartition(":")
    env = {
        "POLYCRATE_VERSION": __version__,
        "POLYCRATE_CLI_VERSION": __version__,
        "POLYCRATE_FORCE": "1" if force else "0",
        "IN_CONTAINER": "1" if container else "0",
        "POLYCRATE_IMAGE_REFERENCE": reference,
        "POLYCRATE_IMAGE_VERSION": version,
    }
    if ssh_key is not None:
        env["ANSIBLE_PRIVATE_KEY_FILE"] = env["ANSIBLE_SSH_PRIVATE_KEY_FILE"] = str(ssh_key)
    return env
