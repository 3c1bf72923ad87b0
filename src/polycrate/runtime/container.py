"""The container runtime: one action's command, run inside the workspace's image.

``wrap`` turns the command a builder made for the local runtime (argv, env,
working directory, files in the run's private folder) into a ``podman run``
(or ``docker run``) of the same command:

* the workspace is mounted at ``/workspace`` and the block folder is the working
  directory; every workspace path in the arguments, the environment and the
  variable/snapshot files becomes its ``/workspace/...`` path, so ``block.path``,
  ``workspace.root``, ``POLYCRATE_*`` and ``ANSIBLE_INVENTORY`` are paths that
  exist in the container;
* the run's private folder (variables, snapshot, script) is mounted read-only at
  ``/run/polycrate``; polycrate's own package read-only at ``/opt/polycrate/lib``
  (``PYTHONPATH``), so the image needs Python and ansible-core, not polycrate;
* SSH private keys the inventory or ``ANSIBLE_PRIVATE_KEY_FILE`` names, the SSH
  agent socket and folders of decrypted secrets the action is given are mounted
  read-only at their own paths, for this run only;
* host networking, so hosts reachable from the machine are reachable from the action;
* the container is named and labelled; ``--rm`` removes it when it ends, and
  the cleanup (always called, also after Ctrl-C/SIGTERM) kills and removes it
  if the engine client was stopped before it could.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Iterator

import polycrate
from polycrate.runtime import toolchain
from polycrate.errors import CLI, WEB, PolycrateError
from polycrate.runtime.events import EVENTS_FILE_ENV
from polycrate.config.record import MutableRecord, Record, record

WORKSPACE_MOUNT = "/workspace"
RUN_MOUNT = "/run/polycrate"
LIB_MOUNT = "/opt/polycrate/lib"
SSH_AGENT_MOUNT = "/run/polycrate-ssh-agent.sock"
EVENTS_MOUNT = "/run/polycrate-events"
KEY_VARIABLES = ("ansible_ssh_private_key_file", "ansible_private_key_file")
# variables of the host's environment an action in a container also gets
PASSED_PREFIXES = ("POLYCRATE_", "ANSIBLE_")
NOT_PASSED = frozenset({"POLYCRATE_IDENTITY_FILE", "WORKSPACE_ENCRYPTION_KEY", "POLYCRATE_CACHE", "POLYCRATE_RUNTIME"})


@record(frozen=True, eq=False, repr=False)
class Mount(Record):
    """-m/--mount HOST:CONTAINER[:ro|rw] of a run (the real Polycrate's --mount, plus the mode)."""

    host: str
    container: str
    mode: str = "rw"
    file: str | None = None  # the workspace file of an `extramounts:` entry; None: a -m/--mount of the command line

    def check(self) -> None:
        """Before the run: the host path exists, the container path is none of ours."""
        if not os.path.exists(self.host):
            raise _mount_error(f"no such file or folder on this machine: {self.host}", self.file, _MISSING_HINTS)
        for ours in (WORKSPACE_MOUNT, RUN_MOUNT, LIB_MOUNT, EVENTS_MOUNT):
            if self.container == ours or self.container.startswith(ours + "/") or ours.startswith(self.container + "/"):
                raise _mount_error(f"{self.container} is where polycrate mounts {ours}; choose another container "
                                   "path", self.file)


# What to do about an `extramounts:` entry whose folder is missing, by who is told (errors.PolycrateError.hints): the
# web view's and a schedule's runs never had a -m/--mount to change, and run on the server's or the timer's machine
_MISSING_HINTS = {CLI: "create it, or remove the entry",
                  WEB: "create it on the server's machine, where the web view's runs run, or remove the entry"}


def _mount_error(message: str, file: str | None, hints: dict[str, str] | None = None) -> PolycrateError:
    """A mount refused, named as it was given: workspace.poly's `extramounts:` (its file; hints by front end,
    none of which names a flag) or the command line's -m/--mount (only a terminal gives those)."""
    if file is not None:
        return PolycrateError(f"extramounts: {message}", file, hints=hints)
    return PolycrateError(f"-m/--mount: {message}")


def parse_mount(text: str, file: str | None = None) -> Mount:
    """`/host:/container` or `/host:/container:ro`; a relative host path is taken from the current folder.
    ``file``: the workspace file of an `extramounts:` entry (its errors name it, not -m/--mount)."""
    parts = text.split(":")
    mode = "rw"
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        mode = parts.pop()
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise _mount_error(f"expected /host:/container[:ro], not {text!r}", file)
    host, inside = parts
    if not inside.startswith("/"):
        raise _mount_error(f"the container path must be absolute, not {inside!r}", file)
    if "," in text:
        raise _mount_error(f"a comma is not allowed in {text!r}", file)
    return Mount(os.path.abspath(os.path.expanduser(host)), os.path.normpath(inside), mode, file)


@dataclass(eq=False, repr=False)
class ContainerCommand(MutableRecord):
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    name: str
    engine: toolchain.Engine

    def cleanup(self) -> None:
        """Kill and remove the container if it is still there (quiet when `--rm` already did)."""
        args = ["rm", "-f", self.name]
        if self.engine.name == "podman":
            args[2:2] = ["--time", "0", "--ignore"]  # kill at once; no error when `--rm` was first
        with contextlib.suppress(Exception):
            subprocess.run(self.engine.command(*args), capture_output=True, timeout=60)


class PathMap:
    """Host paths -> container paths, longest prefix first."""

    def __init__(self, pairs: dict[str, str]):
        self.pairs = sorted(pairs.items(), key=lambda kv: len(kv[0]), reverse=True)

    def path(self, value: str) -> str:
        for host, inside in self.pairs:
            if value == host or value.startswith(host + "/"):
                return inside + value[len(host):]
        return value

    def text(self, value: str) -> str:
        """A path, a list of paths (a:b), or a path after `@` (ansible's -e @file)."""
        if value.startswith("@"):
            return "@" + self.path(value[1:])
        return os.pathsep.join(self.path(part) for part in value.split(os.pathsep))

    def data(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.path(value)
        if isinstance(value, dict):  # a snapshot's `localpath` is this machine's path by definition
            return {k: (v if k == "localpath" else self.data(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.data(v) for v in value]
        return value


def _rewrite_private_files(private: Path, paths: PathMap) -> None:
    """The variables and snapshot files the builders wrote, with container paths."""
    import yaml

    for file in private.iterdir():
        if file.suffix == ".json":
            data = json.loads(file.read_text(encoding="utf-8"))
            file.write_text(json.dumps(paths.data(data)), encoding="utf-8")
        elif file.suffix in (".yml", ".yaml"):
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
            file.write_text(yaml.safe_dump(paths.data(data), sort_keys=False), encoding="utf-8")


def _inventory_keys(inventory: Path) -> set[str]:
    """Absolute private-key paths the inventory names (any group, any host)."""
    import yaml

    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in KEY_VARIABLES and isinstance(value, str):
                    found.add(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    with contextlib.suppress(OSError, yaml.YAMLError):
        walk(yaml.safe_load(inventory.read_text(encoding="utf-8")))
    return {k for k in found if k.startswith("/") and "{{" not in k}


def _secret_folders(values: Iterable[str]) -> set[str]:
    """Folders of secrets decrypted for this run (polycrate-secrets-*) that the action's environment names."""
    folders = set()
    for value in values:
        if not value.startswith("/"):
            continue
        parts = Path(value).parts
        for i, part in enumerate(parts):
            if part.startswith("polycrate-secrets-"):
                folder = str(Path(*parts[: i + 1]))
                if os.path.isdir(folder):
                    folders.add(folder)
                break
    return folders


def inner_environment(request, env: dict[str, str], paths: PathMap) -> dict[str, str]:
    """The action's environment in a container: what the builders set (it differs from ours) and the
    POLYCRATE_/ANSIBLE_ settings, with container paths; -e KEY=value always."""
    inner = {
        key: paths.text(value)
        for key, value in env.items()
        if key not in NOT_PASSED and (key.startswith(PASSED_PREFIXES) or os.environ.get(key) != value)
    }
    inner.update({key: env[key] for key, _ in request.env if key in env})  # -e: always, even when unchanged
    return inner


def wrap(request, argv: list[str], env: dict[str, str], private: Path) -> ContainerCommand:
    """The `podman run` of the command a builder made for the local runtime."""
    ws, block = request.ws, request.block
    engine, image = request.runtime.engine, request.runtime.image  # decided once for the run
    root = str(ws.root)
    package = str(Path(polycrate.__file__).resolve().parent)
    folders = {root: WORKSPACE_MOUNT, str(private): RUN_MOUNT, package: f"{LIB_MOUNT}/polycrate"}
    events = env.get(EVENTS_FILE_ENV)
    if events:  # the event stream of our callback plugin: written inside, read by the engine outside
        folders[str(Path(events).parent)] = EVENTS_MOUNT
    paths = PathMap(folders)
    _rewrite_private_files(private, paths)
    if request.action.type == "script" and any("{{" in line for line in request.action.script):
        # its Go templates filled in with the paths as the container sees them (the snapshot's, above)
        from dataclasses import replace

        from polycrate.runtime.script import rendered_script, script_text, snapshot_data

        lines = rendered_script(replace(request, script=None), paths.data(snapshot_data(request)))
        (private / "action.sh").write_text(script_text(lines), encoding="utf-8")

    inner = inner_environment(request, env, paths)
    inner.update({"PYTHONPATH": LIB_MOUNT, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
                  "HOME": "/root", "LANG": "C.UTF-8"})

    mounts: list[tuple[str, str, str]] = [
        (root, WORKSPACE_MOUNT, "rw"),
        (str(private), RUN_MOUNT, "ro"),
        (package, f"{LIB_MOUNT}/polycrate", "ro"),
    ]
    if events:
        mounts.append((str(Path(events).parent), EVENTS_MOUNT, "rw"))
    from polycrate.config.action_view import block_inventory

    inventory = block_inventory(ws, block)  # the one ANSIBLE_INVENTORY names
    keys = _inventory_keys(inventory) if inventory is not None else set()
    if env.get("ANSIBLE_PRIVATE_KEY_FILE", "").startswith("/"):
        keys.add(env["ANSIBLE_PRIVATE_KEY_FILE"])
    for key in sorted(keys):
        if os.path.isfile(key) and paths.path(key) == key:  # keys inside the workspace come with it
            mounts.append((key, key, "ro"))
    agent = env.get("SSH_AUTH_SOCK")
    if agent and os.path.exists(agent):
        mounts.append((agent, SSH_AGENT_MOUNT, "rw"))
        inner["SSH_AUTH_SOCK"] = SSH_AGENT_MOUNT
    for folder in sorted(_secret_folders(list(env.values()) + list(request.extra_env.values()))):
        mounts.append((folder, folder, "ro"))
    for extra in request.mounts:  # -m/--mount, as given
        mounts.append((extra.host, extra.container, extra.mode))

    command = list(argv)
    if command and command[0] == sys.executable:
        command[0] = "python3"  # the image's Python (the toolchain venv comes first on its PATH)
    command = [paths.text(a) for a in command]

    name = f"polycrate-{ws.name.lower()[:30]}-{secrets.token_hex(4)}"
    run = engine.command("run", "--rm", "--name", name, "--network", "host", "--init",
                         "--label", f"{toolchain.LABEL_RUN}={ws.name}", "--workdir", paths.path(str(block.folder)))
    if engine.name == "podman" and os.geteuid() != 0:
        run.append("--userns=keep-id")  # rootless: files the action writes in the workspace stay the user's
    for host, inside, mode in mounts:
        run += ["--volume", f"{host}:{inside}:{mode}"]
    for key in sorted(inner):
        run += ["--env", key]  # the value comes from the engine client's environment: never on a command line
    run += [image, *command]
    client_env = dict(os.environ) | inner
    return ContainerCommand(run, client_env, block.folder, name, engine)


@contextlib.contextmanager
def command_for(request, argv: list[str], env: dict[str, str], private: Path
                ) -> Iterator[tuple[list[str], dict[str, str], Path]]:
    """(argv, env, cwd) to run: unchanged for the local runtime, a container run for `container`.

    The container is stopped and removed when the block is left, however it is left."""
    if request.runtime is None or not request.runtime.container:
        yield argv, env, request.block.folder
        return
    wrapped = wrap(request, argv, env, private)
    try:
        yield wrapped.argv, wrapped.env, wrapped.cwd
    finally:
        wrapped.cleanup()
