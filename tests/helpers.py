"""One CLI runner and the helpers the test modules share.

The CLI, three ways:
- ``run_cli_inprocess(*argv)``: ``polycrate.cli.main(argv)`` in this process, stdout/stderr captured,
  stdin from ``input``. Fast; for commands that need no process of their own (no run that forks,
  prompts on a terminal or signals).
- ``run_cli(*argv)``: ``python -m polycrate`` in a subprocess, for runs, signals, environment.
- ``run_cli_tty(*argv)``: a subprocess on a pseudo-terminal, answering a prompt.
All return a ``Result`` (returncode, stdout, stderr, output); ``assert_one_line_error`` checks
the house rule for bad input on any of them. ``run_cli`` and ``run_cli_inprocess`` validate what a
command prints with ``-o json`` or ``-o yaml`` against the JSON Schema its ``schema`` key names
(``validate_document``: the contract of polycrate.contract), in every test that asks for it.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def cli_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without what would leak a developer's or a run's context, plus ``env``."""
    full = dict(os.environ)
    full.pop("POLYCRATE_WORKFLOW", None)
    full.update(env or {})
    return full


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, input: str | None = None,
            timeout: float = 300) -> Result:
    """``python -m polycrate ARGS`` in a subprocess."""
    proc = subprocess.run(
        [sys.executable, "-m", "polycrate", *args],
        cwd=cwd,
        env=cli_environment(env),
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return _checked(args, Result(proc.returncode, proc.stdout, proc.stderr))


# --- the JSON contract -----------------------------------------------------------------------------


def schema_registry():
    """Every schema file of the contract (src/polycrate/contract/schemas/), by its $id, for $ref across files."""
    import json

    from referencing import Registry, Resource

    from polycrate.contract import SCHEMA_DIR

    resources = []
    for path in sorted(SCHEMA_DIR.glob("*.schema.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


def validate_document(doc, expected: str | None = None):
    """``doc`` follows the schema its ``schema`` key names (and that is ``expected``, given as NAME,
    e.g. "run"); returns ``doc``. Fails with every violation listed."""
    from jsonschema import Draft202012Validator

    from polycrate.contract import schema_id

    assert isinstance(doc, dict) and "schema" in doc, f"not a contract document (no 'schema' key): {str(doc)[:300]}"
    if expected is not None:
        assert doc["schema"] == schema_id(expected), (doc["schema"], expected)
    registry = schema_registry()
    schema = registry.contents(doc["schema"])
    validator = Draft202012Validator(schema, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors[:20])
    return doc


def _output_format(args) -> str | None:
    words = list(args)
    for i, word in enumerate(words):
        if word in ("-o", "--output") and i + 1 < len(words):
            return words[i + 1]
        if word.startswith("--output="):
            return word.split("=", 1)[1]
    return None


def _checked(args, result: Result) -> Result:
    """With -o json or -o yaml, what the command printed must be a valid contract document."""
    fmt = _output_format(args)
    if fmt in ("json", "yaml") and result.stdout.strip() and "--help" not in args:
        if fmt == "json":
            import json

            doc = json.loads(result.stdout)
        else:
            import yaml

            doc = yaml.safe_load(result.stdout)
        validate_document(doc)  # every command's document names its schema and follows it
    return result


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_cli_inprocess(*args: str, cwd: Path | None = None, env: dict | None = None,
                      input: str | None = None) -> Result:
    """``polycrate.cli.main(argv)`` in this process: same exit code and output as ``run_cli``.

    The working directory, environment, standard streams and the signal handlers main installs
    are restored afterwards."""
    from polycrate.cli import main

    out, err = io.StringIO(), io.StringIO()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    saved_stdin, saved_cwd = sys.stdin, os.getcwd()
    sys.stdin = io.StringIO(input or "")
    try:
        with _environment(cli_environment(env)), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if cwd is not None:
                os.chdir(cwd)
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse: --help, usage errors
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        os.chdir(saved_cwd)
        sys.stdin = saved_stdin
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return _checked(args, Result(int(code or 0), out.getvalue(), err.getvalue()))


def run_cli_tty(*args: str, cwd: Path, answer: str | None, timeout: float = 120) -> Result:
    """Run the CLI on a pseudo-terminal; type `answer` when it prompts."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.chdir(cwd)
        os.execv(sys.executable, [sys.executable, "-m", "polycrate", *args])
    out = b""
    answered = False
    while True:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            os.kill(pid, 9)
            raise AssertionError(f"no output for {timeout}s; got {out!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
        if answer is not None and not answered and b"[y/N]" in out:
            os.write(fd, answer.encode() + b"\n")
            answered = True
    _, status = os.waitpid(pid, 0)
    return Result(os.waitstatus_to_exitcode(status), out.decode(errors="replace"), "")


def assert_one_line_error(result, *fragments: str, code: int = 2, hidden: Iterable[str] = ()) -> None:
    """Bad input: exit ``code``, no traceback, one line ``polycrate: error: ...`` on stderr holding every
    fragment, and none of the ``hidden`` strings (secrets) anywhere in the output."""
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("polycrate: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    for secret in hidden:
        assert secret not in output


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def tree(root: Path, skip: Iterable[str] = (".git",)) -> dict[str, bytes]:
    """Every file below ``root`` with its bytes, keyed by relative path (folders named in ``skip`` left out)."""
    skipped = set(skip)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not skipped & set(p.relative_to(root).parts)}


def tree_digest(root: Path, skip: Iterable[str] = (".git",)) -> str:
    """One hash of ``tree(root)``: equal digests, equal trees."""
    digest = hashlib.sha256()
    for rel, data in tree(root, skip).items():
        digest.update(rel.encode("utf-8", "surrogateescape") + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``address`` right now (loopback only)."""
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, address: str = "127.0.0.1", timeout: float = 30.0,
                  proc: subprocess.Popen | None = None, name: str = "server") -> None:
    """Return once ``address:port`` accepts connections; fail early if ``proc`` ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            stderr = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"{name} exited {proc.returncode} before listening on {port}: {stderr}")
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{name} did not listen on {address}:{port} within {timeout}s")


def wait_for(what: Callable[[], Any], description: str, deadline: float = 180.0) -> Any:
    """Poll ``what`` until it gives something truthy and return that. The deadline only bounds a hang on a
    busy machine; it asserts nothing about speed."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = what()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {deadline:g}s: {description}")
