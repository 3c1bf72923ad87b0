"""The command line: parse, call the core, render. Nothing else lives here.

One handler (``main``) turns every PolycrateError into a one-line message and
its exit code; no traceback reaches the user for bad input.
"""
from __future__ import annotations

import argparse
import errno
import os
import signal
import sys

from polycrate.errors import (
    CLI,
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_SYSTEM,
    WEB,
    PolycrateError,
    describe_os_error,
    interrupt_in,
)


class _VersionAction(argparse.Action):
    """argparse's "version" action, reading the version only when asked: polycrate.__version__ comes
    from the package metadata (importlib.metadata, with email, zipfile and csv: a third of the start-up
    of `workflows list`)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from polycrate import __version__

        sys.stdout.write(f"polycrate {__version__}\n")
        parser.exit()


def common_options(workspace_default=argparse.SUPPRESS) -> argparse.ArgumentParser:
    """Options accepted before and after the command (`polycrate -w X run ...`, `polycrate run ... -w X`)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-w", "--workspace", metavar="PATH", default=workspace_default, help="workspace root")
    common.add_argument(
        "-o",
        "--output",
        "--output-format",  # the real Polycrate's long name of -o
        dest="output",
        choices=("text", "json", "yaml"),
        default=argparse.SUPPRESS if workspace_default is argparse.SUPPRESS else "text",
        help="output format of list and inspect commands",
    )
    common.add_argument(
        "-f",
        "--force",
        action="store_true",
        default=argparse.SUPPRESS if workspace_default is argparse.SUPPRESS else False,
        help="answer yes to every prompt",
    )
    from polycrate.cli.flags import add_global_flags

    add_global_flags(common, top=workspace_default is not argparse.SUPPRESS)
    return common


class _Parser(argparse.ArgumentParser):
    words: tuple[str, ...] = ()  # the root parser's command line (set by main), for the hint below

    def format_help(self) -> str:
        """A command's help lists only what it takes: the run flags (cli/flags.py) on the commands that run
        actions and on `polycrate` itself (before any command), not on `workspace encrypt`."""
        if self.get_default("runs_actions") or self.prog == "polycrate":
            return super().format_help()
        from polycrate.cli.flags import RUN_FLAGS

        taken = set(RUN_FLAGS.values())
        saved = [(group, group._group_actions) for group in self._action_groups]
        actions = self._actions
        try:
            for group, grouped in saved:
                group._group_actions = [a for a in grouped if a.dest not in taken]
            self._actions = [a for a in actions if a.dest not in taken]
            return super().format_help()
        finally:
            for group, grouped in saved:
                group._group_actions = grouped
            self._actions = actions

    def error(self, message: str):  # one line, exit 2, like every other bad input
        command = self.prog.removeprefix("polycrate").strip()  # main's handler already says "polycrate: error:"
        hint = _limit_hint(self.words, message)
        if self.prog.endswith(" keygen") and message.startswith("argument -o/--output") and "invalid choice" in message:
            hint = "; -o/--output is the output format, the identity file is --identity FILE"
        raise PolycrateError(f"{command + ': ' if command else ''}{message}{hint} (see --help)")


def _limit_hint(words: tuple[str, ...], message: str) -> str:
    """`-l HOST`, typed as ansible-playbook's --limit: -l is Polycrate's --local and takes no value."""
    extra = message.removeprefix("unrecognized arguments: ").split()
    if message.startswith("unrecognized arguments: ") and extra:
        for i, word in enumerate(words[:-1]):
            if word == "-l" and words[i + 1] == extra[0]:
                return f"; -l is --local (as in Polycrate), to run on {extra[0]} only say --limit {extra[0]}"
    return ""


# The modules that register the commands, in the order `--help` lists them.
COMMAND_MODULES = ("run", "workflows", "actions", "blocks", "workspace", "schedules", "runs", "notify", "registry",
                   "toolchain", "serve", "backend", "lifecycle", "ssh", "git", "kubectl", "tools", "completion",
                   "worker")
# Which module registers each top-level command word (tests/unit/test_cli_parser.py keeps it true):
# a command line that names one gets a parser with that module's commands only. Building all of
# them (~70 subparsers, ~250 options) is a third of what `workflows list` costs.
COMMAND_MODULE = {
    "run": "run", "workflow": "workflows", "workflows": "workflows", "action": "actions", "actions": "actions",
    "block": "blocks", "blocks": "blocks", "workspace": "workspace", "schedules": "schedules", "runs": "runs",
    "notify": "notify", "registry": "registry", "toolchain": "toolchain", "serve": "serve", "server": "serve",
    "install": "lifecycle", "uninstall": "lifecycle", "prune": "lifecycle", "pull": "lifecycle",
    "push": "lifecycle", "init": "lifecycle", "ssh": "ssh", "create": "ssh", "git": "git", "k": "kubectl",
    "version": "tools", "checksum": "tools", "completion": "completion", "backend": "backend",
    "worker": "worker",
}


def command_module(words: list[str] | None, with_value: set[str] | frozenset = frozenset()) -> str | None:
    """The module of the command `words` names (after the global options; `with_value`: those that
    take a value), or None: then every command is registered (`--help`, no command, a misspelt one:
    its error lists them all)."""
    if words is None:
        return None
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in with_value:
            skip = True
        elif word in ("-h", "--help", "--version", "--"):
            return None
        elif not word.startswith("-"):
            return COMMAND_MODULE.get(word)
    return None


def build_parser(words: list[str] | None = None) -> _Parser:
    """The command line's parser; with `words`, only the commands they need (see COMMAND_MODULE)."""
    import importlib

    parser = _Parser(
        prog="polycrate",
        description="Operations automation as code: blocks, actions and workflows that run Ansible.",
        parents=[common_options(workspace_default=None)],
    )
    parser.add_argument("--version", action=_VersionAction, nargs=0, help="show program's version number and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    shared = common_options()
    with_value = {flag for action in parser._actions if action.nargs != 0 for flag in action.option_strings}
    only = command_module(words, with_value)
    for name in (only,) if only else COMMAND_MODULES:  # git .. tools: the real Polycrate's other commands
        importlib.import_module(f"polycrate.cli.{name}").register(sub, shared)
    return parser


def _kubectl_words(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
    """`polycrate k -n kube-system get pods`: as in the real Polycrate, every word after `k` is kubectl's
    (its flags too), except a leading --block NAME of ours; a `--` is put before them."""
    with_value = {flag for action in parser._actions if action.nargs != 0 for flag in action.option_strings}
    skip = False
    for index, word in enumerate(words):
        if skip:
            skip = False
        elif word in with_value:
            skip = True
        elif word == "--" or (not word.startswith("-") and word != "k"):
            return words
        elif word == "k":
            head, rest = words[: index + 1], words[index + 1:]
            while rest[:1] == ["--block"] and len(rest) > 1 or rest[:1] and rest[0].startswith("--block="):
                take = 1 if rest[0].startswith("--block=") else 2
                head, rest = head + rest[:take], rest[take:]
            return head + ["--"] + (rest[1:] if rest[:1] == ["--"] else rest)
    return words


_STOPPING: list[float] = []  # when this command got its first stop signal (time.monotonic)
SECOND_SIGNAL_AFTER = 20.0  # seconds: a stop takes at most the step's grace (10 s) and the record


def _terminate(signum, frame):  # SIGINT, SIGTERM and SIGHUP: stop the running step, record, exit 130
    """The first stop signal interrupts; one more while polycrate stops is held, so that the stop (bounded)
    runs to its end and the exit is 130, not a death by the second signal half-way through the record
    (found by the signal stress test). Only after SECOND_SIGNAL_AFTER seconds does another one interrupt.
    A first one after the run's outcome was recorded interrupts nothing: polycrate ends as recorded."""
    import time

    from polycrate.errors import Interrupted

    now = time.monotonic()
    if _STOPPING and now - _STOPPING[0] < SECOND_SIGNAL_AFTER:
        return
    first = not _STOPPING
    _STOPPING[:] = [now]
    stopping = sys.modules.get("polycrate.run.stopping")  # not loaded: no run, nothing recorded
    if first and stopping is not None and stopping.stop_after_settled(signum):
        return  # the record says how the run ended: the exit follows it (run/stopping.py)
    raise Interrupted(signal.Signals(signum).name)


def _ignore_stop_signals() -> None:
    """The last thing before the interpreter ends: Python's finalization puts every handled signal back
    to its default (death), so a second stop signal in those last milliseconds killed a polycrate whose
    record was closed, and its exit was -SIG instead of 130 (found by the signal stress test under load).
    By now nothing is left to stop."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)


def take_stop_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP stop polycrate the same way: the step is stopped, the run recorded as
    interrupted, exit 130. SIGINT also when polycrate was started with it ignored, as every background
    job of a non-interactive shell is (`make test &`, CI steps): such a polycrate ignored `kill -INT`
    and ran on to its end. SIGHUP stays ignored under nohup, which asks for exactly that."""
    import atexit

    _STOPPING.clear()
    if "polycrate.run.stopping" in sys.modules:  # main again in one process (the tests): a new command
        sys.modules["polycrate.run.stopping"].unsettle()
    atexit.unregister(_ignore_stop_signals)  # once, also when main runs again in one process (the tests)
    atexit.register(_ignore_stop_signals)  # after the threads are joined: a hang there stays stoppable
    signal.signal(signal.SIGINT, _terminate)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGUSR2, _terminate)  # a cron entry's `timeout` when the schedule's timeout ran out
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
        signal.signal(signal.SIGHUP, _terminate)  # the terminal closed: the run is recorded, not left 'running'


def _interrupted() -> int:
    try:
        print("polycrate: interrupted", file=sys.stderr)
    except (OSError, ValueError):  # the terminal that would read it is gone
        pass
    return EXIT_INTERRUPTED


def _front_end(words) -> str:
    """Who reads this command's error: the web view for the server's own child (server/launch.py starts it with
    --launched-by web:NAME, and shows its error line on the page), else the person at the terminal."""
    words = list(words)
    for i, word in enumerate(words):
        value = word.partition("=")[2] if word.startswith("--launched-by=") else \
            (words[i + 1] if word == "--launched-by" and i + 1 < len(words) else None)
        if value is not None:
            return WEB if value.startswith("web:") else CLI
    return CLI


def main(argv: list[str] | None = None) -> int:
    take_stop_signals()
    words = sys.argv[1:] if argv is None else argv
    if words[:1] == ["__complete"]:  # the shell completion scripts' question (hidden; never fails)
        from polycrate.cli.completion import complete_main

        return complete_main(words[1:], build_parser)
    try:
        parser = build_parser(words)
        argv = words = _kubectl_words(parser, list(words))
        parser.words = tuple(words)  # unrecognized arguments are refused by the root parser
        if not words:  # `polycrate` alone: the help, as a question answered, not an error
            parser.print_help()
            return 0
        args = parser.parse_args(argv)
        from polycrate.cli.flags import check_command_takes_them

        check_command_takes_them(args)
        args.argv = list(words)  # the command line as given, for the run's event

        args.format = "json"  # how a contract document is spelled (render.emit_json)
        if getattr(args, "output", None) == "yaml":  # the same data as -o json, spelled as YAML (Polycrate's -o yaml)
            args.format, args.output = "yaml", "json"
        return int(args.func(args) or 0)
    except PolycrateError as exc:
        if interrupt_in(exc) is not None:  # raised while a stop signal unwound the run: it was stopped
            return _interrupted()
        print(f"polycrate: error: {exc.said_to(_front_end(words))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return _interrupted()
    except BrokenPipeError:
        from polycrate.cli.live import drop_closed_streams

        drop_closed_streams()
        return EXIT_BAD_INPUT
    except OSError as exc:  # a full disk, a read-only workspace, a file where a folder belongs
        if interrupt_in(exc) is not None:
            return _interrupted()
        hint = " (free some space and run again; what was recorded before is kept)" \
            if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        print(f"polycrate: error: {describe_os_error(exc)}{hint}", file=sys.stderr)
        bad_input = isinstance(exc, (NotADirectoryError, IsADirectoryError, FileExistsError, FileNotFoundError)) \
            or exc.errno in (errno.ENAMETOOLONG, errno.ELOOP, errno.E2BIG)
        return EXIT_BAD_INPUT if bad_input else EXIT_SYSTEM
    except Exception as exc:
        if interrupt_in(exc) is not None:  # a stop signal that Python wrapped (errors.interrupt_in says where)
            return _interrupted()
        if type(exc).__module__ == "sqlite3":  # full, read-only or unreadable: the store is left as it is
            print(f"polycrate: error: the run store (.polycrate/runs.db): {exc} (full disk or read-only "
                  "workspace? what was recorded before is kept)", file=sys.stderr)
            return EXIT_SYSTEM
        if os.environ.get("POLYCRATE_DEBUG"):
            raise
        print(f"polycrate: internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]} "
              "(a bug in polycrate; POLYCRATE_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
