"""A warm Ansible process that forks one child per workflow step.

Each `ansible-playbook` process spends ~0.4 s before its first task: importing
ansible, reading its configuration, parsing the documentation of every connection,
shell, become, callback and inventory plugin. A workflow pays that per step. The
zygote pays it once. A run (``workflows run``, ``run``) starts it before the workspace is read
(``prespawn``: it imports what no step's configuration affects, EARLY_IMPORTS); the
engine then hands it the environment and working directory of the first Ansible step
(``Zygote``; without an early one it starts one with them), and it imports and warms
ansible-core with those, then waits on a socket. The preflight's Ansible half is its
first child, with the steps' environment. For each step the engine sends the
step's argv, environment, working directory and descriptors (the output pipe, the
run's lock); the zygote forks, and the child becomes that step's ansible-playbook:

* its own session and process group (``stop_process_group`` reaches it and its workers),
  under a supervisor as every step (runtime/supervise.py: the child forks once more and stays
  as the supervisor, which gets SIGTERM when the zygote dies, ``PR_SET_PDEATHSIG``; the zygote
  itself gets SIGTERM when polycrate dies), stdin ``/dev/null``, stdout+stderr the step's pipe, the lock fd
  at its own number, no other descriptor;
* the step's environment and working directory, its own ansible local temporary folder,
  whose ``ansiballz_cache`` is the zygote's one for the step's block folder (the module
  payloads one step builds serve the next steps of that block, as the later playbooks of
  one ansible-playbook process), then ``ansible_playbook.main``.

What ansible-core reads at import time (``ansible.constants``: the environment and
the ansible.cfg it finds) is fixed in the zygote. So the child first compares the
inputs of that configuration (``fingerprint``: every ``ANSIBLE_*`` and ``PYTHON*``
variable, locale, HOME, and which ansible.cfg applies in the step's working directory,
with its size and mtime) with the zygote's; when anything differs the child
``exec``s a fresh ``python -m polycrate.runtime.ansible_playbook`` instead (same pid,
same descriptors): the result is always what a cold process would do.

The zygote reports each child's pid and, when it ends, its exit status (as
``Popen.returncode``: negative for a signal). The engine's side is ``Zygote`` and
``WarmProcess`` (``pid``, ``stdout``, ``poll``, ``wait``: what ``process.stream`` and
``stop_process_group`` use). Only the local runtime uses it; the container runtime
and script actions start a plain process as before.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from polycrate.runtime.process import ZygoteUnavailable

ENTRY = ("-m", "polycrate.runtime.ansible_playbook")
MAX_MESSAGE = 1 << 20
# environment variables besides ANSIBLE_* / PYTHON* / LC_* that ansible-core reads while importing
CONFIG_VARIABLES = ("HOME", "LANG", "LANGUAGE", "NO_COLOR", "FORCE_COLOR", "EDITOR", "PAGER", "TERM")
READY_TIMEOUT = 120.0  # seconds the first step waits for the zygote's warm-up before starting a plain process


def fingerprint(env: dict[str, str]) -> list:
    """The inputs of ansible-core's import-time configuration, in the current working directory."""
    keys = sorted(
        k for k in env if k.startswith(("ANSIBLE_", "PYTHON", "LC_")) or k in CONFIG_VARIABLES
    )
    from ansible.config.manager import find_ini_config_file

    config = find_ini_config_file()
    stat = None
    if config:
        try:
            st = os.stat(config)
            stat = [st.st_ino, st.st_size, st.st_mtime_ns]
        except OSError:
            pass
    return [[[k, env[k]] for k in keys], config, stat]


# --- the zygote process -----------------------------------------------------------------------


def _warm() -> None:
    """Import and prepare what every ansible-playbook run needs before its first task: what a cold
    process loads for a play, not every plugin there is (the inventory plugins that are not enabled
    cost CPU here, before the first step can start; a step that uses one loads it itself). Every
    connection plugin is loaded, though: ansible-playbook's PlaybookExecutor.run loads them all
    (their modules and documentation) before its first play, and each step would pay that again
    (~0.2 s of CPU per step: WinRM's imports and the YAML of their documentation)."""
    import warnings

    warnings.filterwarnings("ignore", message="AnsibleCollectionFinder has already been configured")
    import ansible.cli.playbook
    import ansible.executor.playbook_executor
    import ansible.executor.task_queue_manager
    import ansible.inventory.manager
    import ansible.vars.manager
    from ansible import constants as C
    from ansible.plugins import loader

    from polycrate.runtime import ansible_playbook  # noqa: F401

    loader.init_plugin_loader()  # the collection finder, with ansible.builtin's routing metadata
    # what PlaybookExecutor.run and the TaskQueueManager load first: the plugins' modules and their
    # configuration definitions (documentation YAML); values are still read per run
    for plugins in (loader.connection_loader, loader.shell_loader, loader.become_loader, loader.callback_loader):
        list(plugins.all(class_only=True))  # the TaskQueueManager walks every callback itself
    for name in C.INVENTORY_ENABLED or ():
        loader.inventory_loader.get(name, class_only=True)
    loader.strategy_loader.get(str(C.DEFAULT_STRATEGY or "linear"), class_only=True)
    loader.action_loader.get("ansible.builtin.normal", class_only=True)
    loader.action_loader.get("ansible.builtin.command", class_only=True)
    import ansible.executor.module_common
    import ansible.executor.process.worker
    import ansible.executor.task_executor  # noqa: F401


def _send(sock: socket.socket, data: dict, fds: list[int] | None = None) -> None:
    payload = json.dumps(data).encode()
    if fds:
        socket.send_fds(sock, [payload], fds)
    else:
        sock.send(payload)


def _child(request: dict, fds: list[int], sock: socket.socket, warm_print, zygote_tmp: str | None = None) -> None:
    """In the forked child: become the step's ansible-playbook. Never returns."""
    code = 250
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.setsid()
        from polycrate.runtime.process import die_with_parent

        parent = os.getppid()
        die_with_parent()
        if os.getppid() != parent:  # the zygote is already gone
            os._exit(143)
        sock.close()
        argv, env, targets = request["argv"], request["env"], request["keep_fds"]
        out, kept = fds[0], fds[1:]
        # descriptors at their numbers: 0 /dev/null, 1+2 the step's pipe, the kept ones as in polycrate
        import fcntl

        low = max([2, *targets]) + 1  # copies above every target number, so no dup2 below overwrites one
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, low) for fd in [out, *kept]]
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(high[0], 1)
        os.dup2(high[0], 2)
        for src, dst in zip(high[1:], targets, strict=False):
            os.dup2(src, dst, inheritable=True)
        keep = {0, 1, 2, *targets}
        _reopen_log_files()
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
        from polycrate.runtime.supervise import fork_supervised

        # this process stays as the step's supervisor (runtime/supervise.py), as a plain step's: a stop
        # leaves nothing of the step behind, not even a task's process in an Ansible worker's session
        fork_supervised(parent)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(env)
        warm = warm_print is not None and list(argv[:3]) == [sys.executable, *ENTRY] and fingerprint(env) == warm_print
        if not warm:
            os.execvpe(argv[0], argv, env)  # a cold process, exactly as without the zygote (PATH: the step's)
        sys.path[0] = os.getcwd()  # as `python -m` would have it
        _fresh_local_tmp(_shared_cache(zygote_tmp, os.getcwd()) if zygote_tmp else None)
        from polycrate.runtime import ansible_playbook

        try:
            code = ansible_playbook.main(list(argv[3:]))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except KeyboardInterrupt:
            code = 130
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            import atexit

            atexit._run_exitfuncs()  # ansible's cleanups (its local temporary folder), as at a normal exit
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)


def _reopen_log_files() -> None:
    """With ANSIBLE_LOG_PATH, ansible-core opened its log file in the zygote (logging.basicConfig at import):
    the child closes the zygote's descriptors, so each handler's file is closed here, cleanly, and opened
    again by the handler on the step's first log line (as a fresh process opens it, in append mode)."""
    import logging

    for handler in logging.root.handlers:
        if isinstance(handler, logging.FileHandler) and handler.stream is not None:
            stream, handler.stream = handler.stream, None
            stream.close()


def _fresh_local_tmp(shared: str | None = None) -> None:
    """ansible.constants made its local temporary folder (and an atexit cleanup) in the zygote; each
    child gets its own, as a fresh process would. `shared` (a folder of the zygote's, one per block
    folder) becomes the child's AnsiballZ cache: the module payloads built by one step serve the
    next steps of the same block, as they serve the later playbooks of one ansible-playbook process
    (without it every step compiles the ~50 module_utils files of `command` again: ~0.3 s)."""
    import atexit
    import tempfile

    from ansible import constants as C
    from ansible.config.manager import cleanup_tmp_file

    atexit.unregister(cleanup_tmp_file)
    base = os.path.dirname(C.DEFAULT_LOCAL_TMP)
    os.makedirs(base, mode=0o700, exist_ok=True)
    C.DEFAULT_LOCAL_TMP = tempfile.mkdtemp(prefix=f"ansible-local-{os.getpid()}", dir=base)
    atexit.register(cleanup_tmp_file, C.DEFAULT_LOCAL_TMP, warn=True)
    if shared is not None:
        try:
            os.makedirs(shared, mode=0o700, exist_ok=True)
            os.symlink(shared, os.path.join(C.DEFAULT_LOCAL_TMP, "ansiballz_cache"))  # rmtree removes the link only
        except OSError:
            pass  # the child builds its own, as a cold process does


def _shared_cache(zygote_tmp: str, cwd: str) -> str:
    """The AnsiballZ cache the steps run in `cwd` share: ansible keys a payload by the module's name
    only, and a block's own library/ or module_utils/ may give a name another content, so the
    cache is shared between the steps of one block folder only. It lives in the zygote's local
    temporary folder and goes with it."""
    import hashlib

    return os.path.join(zygote_tmp, "ansiballz-" + hashlib.sha256(os.fsencode(cwd)).hexdigest()[:16])


# Modules an Ansible run imports that read neither the environment nor the working directory while
# importing: an early zygote (``prespawn``) imports them while polycrate still reads the workspace.
EARLY_IMPORTS = ("json", "shlex", "argparse", "typing", "dataclasses", "subprocess", "multiprocessing",
                 "multiprocessing.queues", "multiprocessing.context", "concurrent.futures", "yaml", "markupsafe",
                 "jinja2", "jinja2.nativetypes", "jinja2.sandbox", "cryptography", "packaging.version",
                 "resolvelib", "ipaddress", "hashlib", "zipfile", "uuid", "getpass", "fcntl", "selectors")
# what the interpreter itself reads at start-up: an early zygote whose step environment differs in
# any of them starts afresh with that environment
STARTUP_VARIABLES = ("PYTHON", "LC_", "LANG", "LANGUAGE")


def _startup_inputs(env: dict[str, str]) -> list:
    return sorted((k, v) for k, v in env.items() if k.startswith(STARTUP_VARIABLES))


def early(fd: int) -> int:
    """An early zygote: import what does not depend on the step, wait for the environment and
    working directory of the run's first ansible step, take them, then serve as any zygote."""
    import importlib

    for name in EARLY_IMPORTS:  # as _warm's imports, with stderr at /dev/null
        try:
            importlib.import_module(name)
        except Exception:  # an optimisation only
            pass
    sock = socket.socket(fileno=fd)
    try:
        payload = sock.recv(MAX_MESSAGE)
    except OSError:
        return 0
    if not payload:
        return 0  # not needed by this run
    setup = json.loads(payload)
    env, cwd = setup["env"], setup["cwd"]
    os.chdir(cwd)
    if _startup_inputs(env) != _startup_inputs(dict(os.environ)):
        sock.set_inheritable(True)  # the interpreter must start with them: begin again, the same socket
        os.execve(sys.executable, [sys.executable, "-m", "polycrate.runtime.zygote", str(sock.detach())], env)
    os.environ.clear()
    os.environ.update(env)
    sys.path[0] = os.getcwd()  # as `python -m` started here would have it
    return serve(sock.detach())


def serve(fd: int, container: bool = False, warm: bool = True) -> int:
    """Warm up (unless `warm` is false), then fork one child per request until the engine closes its end.

    In the run's container (`container`) every step goes through here, also script steps and those
    that cannot fork warm (they exec their command): a warm-up that fails leaves a zygote that only
    execs, and after each step every process the step left in the container is killed (_sweep)."""
    sock = socket.socket(fileno=fd)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # atexit cleanups run
    warm_print: list | None = None
    zygote_tmp: str | None = None
    try:
        if warm:
            _warm()
            warm_print = fingerprint(dict(os.environ))
            from ansible import constants as C

            zygote_tmp = C.DEFAULT_LOCAL_TMP
    except BaseException as exc:  # reported: the engine starts plain processes
        if not container:
            _send(sock, {"ready": False, "error": f"{type(exc).__name__}: {exc}"})
            return 1
        warm_print = zygote_tmp = None  # every step execs its own process
    import gc

    # what the warm-up made is never freed: the children's collections need not walk it, nor touch
    # (and so copy) its pages
    gc.collect()
    gc.freeze()
    _send(sock, {"ready": True})
    while True:
        try:
            payload, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, 16)
        except OSError:
            payload, fds = b"", []
        if not payload:
            if container:
                _polycrate_gone()
            return 0  # the engine closed its end: the run is over
        request = json.loads(payload)
        pid = os.fork()
        if pid == 0:
            _child(request, fds, sock, warm_print, zygote_tmp)
        for received in fds:
            os.close(received)
        _send(sock, {"pid": pid})
        if container:
            status = _wait_or_hang_up(pid, sock)
            _sweep()
        else:
            _, status = os.waitpid(pid, 0)
        _send(sock, {"exit": os.waitstatus_to_exitcode(status)})


def _wait_or_hang_up(pid: int, sock: socket.socket) -> int:
    """The child's wait status; but when the engine's end of the socket closes meanwhile (polycrate
    ended, even by SIGKILL: nothing else tells a container), kill the step and end the container."""
    import select

    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)  # the engine sends nothing mid-step
    try:
        pidfd = os.pidfd_open(pid)
        poller.register(pidfd, select.POLLIN)
    except (AttributeError, OSError):
        pidfd = None
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            events = poller.poll(None if pidfd is not None else 100)
            if any(fd == sock.fileno() for fd, _ in events):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
                _sweep()
                _polycrate_gone()
    finally:
        if pidfd is not None:
            os.close(pidfd)


_RUN_FOLDER: list[str] = []  # the run folder as the container sees it (container_main)


def _polycrate_gone() -> None:
    """In the run's container, when polycrate's end of the connection closed without removing the
    container first (it always does on its own way out): polycrate died, even by SIGKILL. The run
    folder's contents go (the run's decrypted secrets, the steps' variables), then the container ends."""
    import shutil

    for folder in _RUN_FOLDER:
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            path = os.path.join(folder, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass
    _exit(143)


def _sweep() -> None:
    """In the run's container, after a step: kill every process but the container's init (pid 1) and
    this zygote, so no step leaves anything running into the next (a daemon it started, a double
    fork that escaped its process group). Orphans belong to init, which reaps them."""
    import time

    me = os.getpid()
    deadline = time.monotonic() + 5.0
    while True:
        left = []
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) in (1, me):
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as handle:
                    state = handle.read().rsplit(b")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state == b"Z":  # already dead, waiting for init to reap it
                continue
            left.append(int(name))
            try:
                os.kill(int(name), signal.SIGKILL)
            except OSError:
                pass
        if not left or time.monotonic() > deadline:
            return
        time.sleep(0.01)


def container_main(path: str) -> int:
    """The main process of a run's container (runtime/run_container.py): connect to the engine's socket
    at `path` (so the container ends when polycrate does, however it ends: the connection closes),
    say which Python and environment the container has, import what no step affects, take the
    first step's environment and working directory, then serve as a zygote."""
    import importlib

    _RUN_FOLDER.append(os.path.dirname(path))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(path)
        _send(sock, {"python": sys.executable, "env": dict(os.environ), "pid": os.getpid()})
    except OSError:
        return 1  # polycrate is gone already
    for name in EARLY_IMPORTS:
        try:
            importlib.import_module(name)
        except Exception:  # an optimisation only
            pass
    try:
        payload = sock.recv(MAX_MESSAGE)
    except OSError:
        payload = b""
    if not payload:
        _polycrate_gone()
    setup = json.loads(payload)
    env, cwd, warm = setup["env"], setup["cwd"], bool(setup.get("warm", True))
    os.chdir(cwd)
    if _startup_inputs(env) != _startup_inputs(dict(os.environ)):
        sock.set_inheritable(True)
        os.execve(sys.executable, [sys.executable, "-m", "polycrate.runtime.zygote", "--container-fd",
                                   str(sock.detach()), "1" if warm else "0", os.path.dirname(path)], env)
    os.environ.clear()
    os.environ.update(env)
    sys.path[0] = os.getcwd()
    return serve(sock.detach(), container=True, warm=warm)


def _exit(code: int) -> None:
    """End the zygote without tearing down its heap of Ansible objects (~0.15 s of interpreter
    shutdown the engine would wait for): the atexit cleanups (its local temporary folder, with the
    shared AnsiballZ caches) run, then the process ends."""
    import atexit

    try:
        atexit._run_exitfuncs()
    finally:
        os._exit(code)


# --- the engine's side ------------------------------------------------------------------------


class WarmProcess:
    """A step's process forked by the zygote: the part of ``subprocess.Popen`` the runtime uses."""

    def __init__(self, zygote: Zygote, pid: int, stdout):
        self._zygote = zygote
        self.pid = pid
        self.stdout = stdout
        self.returncode: int | None = None

    def _receive(self, timeout: float | None) -> None:
        message = self._zygote._receive(timeout)
        if message is _TIMEOUT:
            return
        if message is None:  # the zygote died; the child got SIGTERM (PR_SET_PDEATHSIG)
            self.returncode = -signal.SIGTERM
        else:
            self.returncode = int(message["exit"])

    def poll(self) -> int | None:
        if self.returncode is None:
            self._receive(0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._receive(timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired("ansible-playbook", timeout or 0)
        return self.returncode


_TIMEOUT = object()


class Zygote:
    """The engine's handle on a zygote process; ``spawn`` runs one step, ``close`` ends it."""

    proc: subprocess.Popen[bytes] | None  # None: a zygote in the run's container (run_container.py), or closed

    def __init__(self, env: dict[str, str], cwd: Path, early: EarlyZygote | None = None):
        from polycrate.runtime.process import die_with_parent, libc

        self.ready: bool | None = None
        self.error: str | None = None
        started = early.take() if early is not None else None
        if started is not None:  # started by prespawn while the run was prepared: it gets its environment now
            self.sock, self.proc = started
            try:
                _send(self.sock, {"env": dict(env), "cwd": str(cwd)})
                return
            except OSError:
                self.close()
                self.ready = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "polycrate.runtime.zygote", str(theirs.fileno())],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                pass_fds=(theirs.fileno(),),
                preexec_fn=die_with_parent if libc() is not None else None,
            )
        finally:
            theirs.close()

    def _receive(self, timeout: float | None):
        self.sock.settimeout(timeout)
        try:
            payload = self.sock.recv(MAX_MESSAGE)
        except (TimeoutError, BlockingIOError):
            return _TIMEOUT
        except OSError:
            return None
        finally:
            self.sock.settimeout(None)
        return json.loads(payload) if payload else None

    def _wait_ready(self) -> None:
        if self.ready is None:
            message = self._receive(READY_TIMEOUT)
            if message is _TIMEOUT or message is None or not message.get("ready"):
                self.ready = False
                self.error = (message or {}).get("error") if isinstance(message, dict) else "no answer"
                self.close()
            else:
                self.ready = True
        if not self.ready:
            raise ZygoteUnavailable(self.error or "unavailable")

    def spawn(self, argv: list[str], env: dict[str, str], cwd: Path, keep_fds: tuple[int, ...] = ()) -> WarmProcess:
        """Fork the step's process; raises ZygoteUnavailable when the caller should start a plain one."""
        self._wait_ready()
        read, write = os.pipe()
        try:
            request = {"argv": list(argv), "env": dict(env), "cwd": str(cwd), "keep_fds": list(keep_fds)}
            try:
                _send(self.sock, request, [write, *keep_fds])
            except OSError as exc:
                self.ready = False
                self.close()
                raise ZygoteUnavailable(str(exc)) from None
        finally:
            os.close(write)
        message = self._receive(None)
        if not isinstance(message, dict) or "pid" not in message:
            os.close(read)
            self.ready = False
            self.close()
            raise ZygoteUnavailable("the zygote ended")
        return WarmProcess(self, int(message["pid"]), os.fdopen(read, "rb"))

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        proc = getattr(self, "proc", None)
        if proc is None:
            return
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.proc = None



# --- an early start -----------------------------------------------------------------------------

class EarlyZygote:
    """A zygote started before the run's workspace is read (``prespawn``); the caller hands it to the run
    (``RunRequest.early_zygote``), whose ``Zygote`` takes it with the first ansible step's environment.
    One no run took ends with ``discard`` (the run's end) or at exit."""

    def __init__(self, sock: socket.socket, proc: subprocess.Popen[bytes]):
        self._started: tuple[socket.socket, subprocess.Popen[bytes]] | None = (sock, proc)
        import atexit

        atexit.register(self.discard)

    def take(self) -> tuple[socket.socket, subprocess.Popen[bytes]] | None:
        started, self._started = self._started, None
        return started

    def discard(self) -> None:
        """End it unless a run took it (it exits when its socket closes)."""
        started = self.take()
        if started is None:
            return
        sock, proc = started
        sock.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def prespawn(enabled: bool = True) -> EarlyZygote | None:
    """Start a zygote before the run's workspace is read (pipeline.prepare reads it, the engine then
    knows the first ansible step): it imports what needs no step (EARLY_IMPORTS) meanwhile, and the
    engine's ``Zygote`` hands it the step's environment. Unused (a script-only workflow, the container
    runtime), it ends when the run does. `enabled` False (POLYCRATE_ZYGOTE=0): nothing."""
    if not enabled:
        return None
    from polycrate.runtime.process import die_with_parent, libc

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # as every step's (runtime.action_environment)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "polycrate.runtime.zygote", "--early", str(theirs.fileno())],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, pass_fds=(theirs.fileno(),),
            preexec_fn=die_with_parent if libc() is not None else None,
        )
    except OSError:
        ours.close()
        return None
    finally:
        theirs.close()
    return EarlyZygote(ours, proc)


if __name__ == "__main__":
    try:
        if sys.argv[1] == "--early":
            status = early(int(sys.argv[2]))
        elif sys.argv[1] == "--container":
            status = container_main(sys.argv[2])
        elif sys.argv[1] == "--container-fd":
            _RUN_FOLDER.append(sys.argv[4])
            status = serve(int(sys.argv[2]), container=True, warm=sys.argv[3] == "1")
        else:
            status = serve(int(sys.argv[1]))
    except SystemExit as exc:  # SIGTERM
        status = exc.code if isinstance(exc.code, int) else 1
    _exit(status)
