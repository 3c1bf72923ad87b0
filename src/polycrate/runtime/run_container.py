"""One container for a whole run of the container runtime; every step runs inside it.

A run that uses the container runtime starts one container (``RunContainer.start``, as early as
the run knows its steps) instead of one per step. It has what the per-step containers had
(runtime/container.py): the workspace at ``/workspace``, polycrate's package read-only on
``PYTHONPATH``, host networking, the SSH keys the steps' inventories name, the SSH agent socket,
the run's ``-m`` mounts; and one run folder (``folder``, a private host folder mounted at
``/run/polycrate-run``) where the run's decrypted secrets, each step's private files (variables,
snapshot, script) and event streams live.

Its main process is a zygote (``python3 -m polycrate.runtime.zygote --container SOCKET``) that
connects to a socket polycrate listens on in the run folder. Its lifetime is that connection's:
when polycrate closes it (the run ends, however it ends) or dies (even by SIGKILL, the kernel
closes it), the zygote exits, the container's init ends what is left and the engine removes the
container (``--rm``); on a normal end polycrate also removes it itself and waits for that.

Each step is sent to that zygote as a local step is sent to the local one (runtime/zygote.py):
its argv, environment and working directory as the container sees them, and its output pipe.
An Ansible step whose configuration matches the warm-up forks warm (one AnsiballZ cache per block
folder); any other step (a script, another ansible.cfg) execs its own command in a fresh child.
Each child is its own session and process group; its timeout and stop reach that group from
here (its pid translated to this side's pid namespace); after each step the zygote kills every
process the step left in the container, so nothing runs on into the next step.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import polycrate
from polycrate.errors import PolycrateError
from polycrate.runtime import toolchain
from polycrate.runtime.container import (
    LIB_MOUNT,
    SSH_AGENT_MOUNT,
    WORKSPACE_MOUNT,
    PathMap,
    _inventory_keys,
    _rewrite_private_files,
    inner_environment,
)
from polycrate.runtime.process import ZygoteUnavailable
from polycrate.secrets.scratch import make_private_folder
from polycrate.runtime.zygote import WarmProcess, Zygote

RUN_FOLDER_MOUNT = "/run/polycrate-run"
SOCKET_NAME = "zygote.sock"
CONNECT_TIMEOUT = 120.0  # seconds for the container to start and its zygote to connect
# the environment the container's zygote starts with (beside the image's): what every step gets too,
# so the interpreter's start-up inputs match and it does not start again
KEEPER_ENV = {"PYTHONPATH": LIB_MOUNT, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
              "HOME": "/root", "LANG": "C.UTF-8"}


def _host_pid(keeper: int, inner: int) -> int | None:
    """The pid (in our pid namespace) of the keeper's child that is `inner` in the container's."""
    def inner_pid(pid: int) -> int | None:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
                for line in handle:
                    if line.startswith("NSpid:"):
                        return int(line.split()[-1])
        except (OSError, ValueError):
            return None
        return None

    with contextlib.suppress(OSError, ValueError):
        with open(f"/proc/{keeper}/task/{keeper}/children", encoding="ascii") as handle:
            for pid in (int(p) for p in handle.read().split()):
                if inner_pid(pid) == inner:
                    return pid
    return None


class ContainerZygote(Zygote):
    """The engine's handle on the zygote inside the run's container (an accepted connection)."""

    def __init__(self, sock: socket.socket, keeper_pid: int):
        self.ready = None
        self.error = None
        self.sock = sock
        self.proc = None
        self.keeper_pid = keeper_pid

    def spawn(self, argv: list[str], env: dict[str, str], cwd: Path, keep_fds: tuple[int, ...] = ()) -> WarmProcess:
        try:
            proc = super().spawn(argv, env, cwd, keep_fds)
        except ZygoteUnavailable as exc:  # never a plain process on this machine instead
            raise PolycrateError(f"the run's container does not answer any more ({exc})") from None
        host = _host_pid(self.keeper_pid, proc.pid)
        proc.pid = host if host is not None else -1  # -1: it ended already, nothing to stop
        return proc


class RunContainer:
    """The container of one run: ``start``, then ``command`` and ``zygote`` per step, ``close`` at the end."""

    def __init__(self, ws, runtime, *, blocks: list, key_files: set[str], mounts: tuple = ()):
        self.ws = ws
        self.engine: toolchain.Engine = runtime.engine
        self.image: str = runtime.image
        self.folder = make_private_folder("polycrate-container-")  # 0700: it holds the run's decrypted secrets
        self.name = f"polycrate-{ws.name.lower()[:30]}-{secrets.token_hex(4)}"
        package = str(Path(polycrate.__file__).resolve().parent)
        self.paths = PathMap({str(ws.root): WORKSPACE_MOUNT, str(self.folder): RUN_FOLDER_MOUNT,
                              package: f"{LIB_MOUNT}/polycrate"})
        volumes = [(str(ws.root), WORKSPACE_MOUNT, "rw"), (str(self.folder), RUN_FOLDER_MOUNT, "rw"),
                   (package, f"{LIB_MOUNT}/polycrate", "ro")]
        keys = set(key_files)
        from polycrate.config.action_view import block_inventory

        for block in blocks:
            inventory = block_inventory(ws, block)
            if inventory is not None:
                keys |= _inventory_keys(inventory)
        for key in sorted(keys):
            if os.path.isfile(key) and self.paths.path(key) == key:  # keys inside the workspace come with it
                volumes.append((key, key, "ro"))
        self.agent = os.environ.get("SSH_AUTH_SOCK")
        if self.agent and os.path.exists(self.agent):
            volumes.append((self.agent, SSH_AGENT_MOUNT, "rw"))
        else:
            self.agent = None
        for extra in mounts:  # -m/--mount, as given
            volumes.append((extra.host, extra.container, extra.mode))
        self.volumes = volumes
        self.listener: socket.socket | None = None
        self.starter: subprocess.Popen | None = None
        self.zygote_handle: ContainerZygote | None = None
        self.hello: dict = {}
        self.error: str | None = None
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._setup: tuple | None = None
        self._setup_ready = threading.Event()

    # --- the container's life ---------------------------------------------------------------

    def start(self) -> None:
        """Listen, start the container (``run -d``, not waited for); its zygote connects back."""
        path = self.folder / SOCKET_NAME
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(str(path))
        os.chmod(path, 0o600)
        self.listener.listen(1)
        # --log-driver none: the zygote's own output is not the steps' (theirs go through their pipes), and
        # podman creates the container ~0.2 s sooner without its log file
        run = self.engine.command("run", "-d", "--rm", "--name", self.name, "--network", "host", "--init",
                                  "--log-driver", "none",
                                  "--label", f"{toolchain.LABEL_RUN}={self.ws.name}", "--workdir", WORKSPACE_MOUNT)
        if self.engine.name == "podman" and os.geteuid() != 0:
            run.append("--userns=keep-id")  # rootless: files the steps write in the workspace stay the user's
        for host, inside, mode in self.volumes:
            run += ["--volume", f"{host}:{inside}:{mode}"]
        for key, value in KEEPER_ENV.items():
            run += ["--env", f"{key}={value}"]
        run += [self.image, "python3", "-m", "polycrate.runtime.zygote", "--container",
                f"{RUN_FOLDER_MOUNT}/{SOCKET_NAME}"]
        self.starter = subprocess.Popen(run, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, start_new_session=True)
        self._thread = threading.Thread(target=self._connect, daemon=True)
        self._thread.start()

    def _connect(self) -> None:
        """In a thread: wait for the container's zygote, hear which Python it has, hand it the setup."""
        assert self.listener is not None and self.starter is not None
        try:
            deadline = time.monotonic() + CONNECT_TIMEOUT
            self.listener.settimeout(0.2)
            while True:
                try:
                    conn, _ = self.listener.accept()
                    break
                except TimeoutError:
                    code = self.starter.poll()
                    if code not in (None, 0):
                        err = self.starter.stderr.read().decode("utf-8", "replace") if self.starter.stderr else ""
                        last = [line for line in err.splitlines() if line.strip()]
                        self.error = f"`{self.engine.name} run` failed: {last[-1] if last else f'exit {code}'}"
                        return
                    if time.monotonic() > deadline:
                        self.error = f"the run's container did not start in {CONNECT_TIMEOUT:.0f}s"
                        return
            conn.settimeout(None)
            pid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
            import json

            payload = conn.recv(1 << 20)
            if not payload:
                self.error = "the run's container ended at its start"
                conn.close()
                return
            self.hello = json.loads(payload)
            self.zygote_handle = ContainerZygote(conn, pid)
        except OSError as exc:
            self.error = f"the run's container: {exc}"
        finally:
            self._connected.set()
        self._setup_ready.wait()
        if self._setup is not None and self.zygote_handle is not None:
            from polycrate.runtime.zygote import _send

            env, cwd = self._setup
            base = self.hello.get("env", {})
            message = ({"env": base | env, "cwd": cwd, "warm": True} if env is not None
                       else {"env": base, "cwd": WORKSPACE_MOUNT, "warm": False})
            with contextlib.suppress(OSError):
                _send(self.zygote_handle.sock, message)

    def connected(self) -> ContainerZygote:
        """The zygote, once it connected (raises PolycrateError when the container could not start)."""
        while not self._connected.wait(0.5):  # short waits: Ctrl-C gets through
            pass
        if self.zygote_handle is None:
            raise PolycrateError(self.error or "the run's container did not start")
        return self.zygote_handle

    def setup(self, env: dict[str, str] | None, cwd: str | None) -> None:
        """The environment and working directory the zygote warms up with (those of the run's first
        Ansible step, as the container sees them), or None: a run without Ansible steps, no warm-up.
        `env` is the step's own variables; the container's own are added once it said what they are."""
        self._setup = (env, cwd)
        self._setup_ready.set()

    def close(self) -> None:
        """End the container and wait until the engine removed it; remove the run folder.

        Removed first, then the connection closed: an end of the zygote first would start the engine's
        own `--rm` removal, and `rm -f` during it returns before the container is gone."""
        self._setup_ready.set()
        if self.starter is not None:
            try:
                self.starter.wait(60)
            except subprocess.TimeoutExpired:
                self.starter.kill()
                self.starter.wait()
            self.starter = None
            self._remove()
        if self.zygote_handle is not None:
            with contextlib.suppress(OSError):
                self.zygote_handle.sock.close()
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _remove(self) -> None:
        args = ["rm", "-f", self.name]
        if self.engine.name == "podman":
            args[2:2] = ["--time", "0", "--ignore"]  # kill at once
        deadline = time.monotonic() + 30
        while True:
            try:
                if subprocess.run(self.engine.command(*args), capture_output=True, timeout=60).returncode == 0:
                    return  # removed, and the engine waited for that
            except (OSError, subprocess.TimeoutExpired):
                pass
            # (rarely) still being removed by the engine's own --rm: ask until it is gone
            probe = subprocess.run(self.engine.command("container", "inspect", "--format", "{{.Id}}", self.name),
                                   capture_output=True)
            if probe.returncode != 0 or time.monotonic() > deadline:
                return
            time.sleep(0.1)

    # --- each step ----------------------------------------------------------------------------

    def environment(self, request, env: dict[str, str]) -> dict[str, str]:
        """The step's variables as the container sees them (without the container's own)."""
        inner = inner_environment(request, env, self.paths)
        inner.update(KEEPER_ENV)
        if self.agent is not None and env.get("SSH_AUTH_SOCK"):
            inner["SSH_AUTH_SOCK"] = SSH_AGENT_MOUNT
        return inner

    def process(self, request, argv: list[str], env: dict[str, str], cwd: Path
                ) -> tuple[list[str], dict[str, str], Path]:
        """A command made for this machine (our Python's, host paths) as the container runs it."""
        self.connected()
        command = [self.paths.text(a) for a in argv]
        if argv and argv[0] == sys.executable:
            command[0] = self.hello.get("python", "python3")  # the image's Python; the zygote forks warm for it
        full = dict(self.hello.get("env", {})) | self.environment(request, env)
        return command, full, Path(self.paths.path(str(cwd)))

    def host_paths(self, data: Any) -> Any:
        """Container paths in `data` (strings, lists, dicts; also inside messages) as this machine's."""
        if isinstance(data, str):
            for inside, host in sorted(((i, h) for h, i in self.paths.pairs), key=lambda p: len(p[0]), reverse=True):
                data = re.sub(re.escape(inside) + r"(?=/|\b|$)", host.replace("\\", "\\\\"), data)  # host literally
            return data
        if isinstance(data, dict):
            return {k: self.host_paths(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.host_paths(v) for v in data]
        return data

    def command(self, request, argv: list[str], env: dict[str, str], private: Path
                ) -> tuple[list[str], dict[str, str], Path]:
        """(argv, env, cwd) of a step inside the container; the private files get container paths."""
        _rewrite_private_files(private, self.paths)
        if request.action.type == "script" and any("{{" in line for line in request.action.script):
            from dataclasses import replace

            from polycrate.runtime.script import rendered_script, script_text, snapshot_data

            lines = rendered_script(replace(request, script=None), self.paths.data(snapshot_data(request)))
            (private / "action.sh").write_text(script_text(lines), encoding="utf-8")
        return self.process(request, argv, env, request.block.folder)


def start_run_container(ws, runtime, requests: list[Any], mounts: tuple = (), warm: bool = True) -> RunContainer:
    """Start the container for a run whose steps are `requests` (ActionRequests, first to last);
    the first Ansible one's environment is what its zygote warms up with (`warm` False, as with
    POLYCRATE_ZYGOTE=0: no warm-up, every step execs its own process)."""
    from polycrate.runtime.action import action_environment

    key_files: set[str] = set()
    for request in requests[:1]:
        key = action_environment(request).get("ANSIBLE_PRIVATE_KEY_FILE", "")
        if key.startswith("/"):
            key_files.add(key)
    blocks = list({id(r.block): r.block for r in requests}.values())
    container = RunContainer(ws, runtime, blocks=blocks, key_files=key_files, mounts=mounts)
    try:
        container.start()
        first = next((r for r in requests if r.action.type == "ansible"), None)
        if first is None or not warm:
            container.setup(None, None)
        else:
            from polycrate.runtime.action import event_environment
            from polycrate.runtime.ansible import ansible_environment

            env = event_environment(ansible_environment(first), container.folder / "events.jsonl")
            container.setup(container.environment(first, env), container.paths.path(str(first.block.folder)))
    except BaseException:
        container.close()
        raise
    return container
