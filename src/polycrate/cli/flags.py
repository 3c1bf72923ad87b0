"""The real Polycrate's global flags, in one place: accepted before or after the command.

    polycrate -e STAGE=prod run app deploy       polycrate run app deploy -e STAGE=prod --local

Every command takes them (as there); the ones that change how actions run (`RUN_FLAGS`) are refused
with one line by commands that run no action, instead of being silently ignored. ``run_settings``
turns them into the fields of ``engine.RunOptions``: the CLI's only way into a run is
``pipeline.RunRequest``.

The flags given before the command land on the top-level parser, those after it on the command's;
repeatable flags (`-e`, `-m`) keep both (``_BEFORE`` holds the top-level ones) and the ones after
the command win for single-valued flags.
"""
from __future__ import annotations

import argparse
from typing import Any

from polycrate.errors import PolycrateError

_BEFORE = "_before"  # suffix of the dest that collects a repeatable flag given before the command

EVENT_HANDLERS = ("workspace", "webhook")

# flag -> dest of the flags that only mean something to a command that runs actions
RUN_FLAGS = {
    "-l/--local": "local",
    "-e/--env": "env",
    "-m/--mount": "mount",
    "--snapshot": "snapshot",
    "--loglevel": "loglevel",
    "-p/--pull": "pull",
    "-b/--build": "build",
    "--auto-commit": "auto_commit",
    "--event-handler": "event_handler",
    "--event-endpoint": "event_endpoint",
}


def _loglevel(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number 0-6, not {text!r}") from None
    if not 0 <= value <= 6:
        raise argparse.ArgumentTypeError(f"expected a number 0-6, not {value}")
    return value


def add_global_flags(parser: argparse.ArgumentParser, top: bool) -> None:
    """The flags on the top-level parser (`top`: with their defaults) or on a command's (suppressed
    defaults, so a flag not repeated after the command keeps its value from before it)."""
    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    repeat = _BEFORE if top else ""
    group = parser.add_argument_group("Polycrate's global flags (before or after the command)")
    group.add_argument("-l", "--local", action="store_true", default=default(False),
                       help="run actions on this machine, not in the workspace's container (the default runtime)")
    group.add_argument("-e", "--env", action="append", metavar="KEY=value", dest="env" + repeat,
                       default=default([]) if top else argparse.SUPPRESS,
                       help="an environment variable for the actions (repeatable; both runtimes)")
    group.add_argument("-m", "--mount", action="append", metavar="/host:/container[:ro]", dest="mount" + repeat,
                       default=default([]) if top else argparse.SUPPRESS,
                       help="an extra mount for the container runtime (repeatable)")
    group.add_argument("--snapshot", action="store_true", default=default(False),
                       help="print the snapshot the run's actions would get, and run nothing")
    group.add_argument("--loglevel", type=_loglevel, metavar="N", default=default(None),
                       help="Ansible's verbosity (ANSIBLE_VERBOSITY=N, as -v x N)")
    group.add_argument("--ssh-private-key", metavar="PATH", default=default(None),
                       help="the workspace's SSH key, handed to Ansible (default: id_rsa in the workspace, when there)")
    group.add_argument("--ssh-public-key", metavar="PATH", default=default(None),
                       help="the workspace's public SSH key (default: id_rsa.pub; `create ssh-keys` writes it)")
    group.add_argument("-p", "--pull", action="store_true", default=default(False),
                       help="pull the workspace's image (config.image) before the run (container runtime)")
    group.add_argument("-b", "--build", action="store_true", default=default(False),
                       help="build Dockerfile.poly's image even when its inputs did not change (container runtime)")
    group.add_argument("--auto-commit", action="store_true", default=default(False),
                       help="commit the workspace (git) before the run, and after it with the run's id")
    group.add_argument("--event-handler", choices=EVENT_HANDLERS, default=default(None),
                       help="write each run's event to .logs/YYYY/MM/DD/RUN_ID.yml (workspace) "
                            "or POST it to --event-endpoint (webhook)")
    group.add_argument("--event-endpoint", metavar="URL", default=default(None),
                       help="the URL the webhook event handler POSTs to")


def repeated(args: argparse.Namespace, dest: str) -> list[str]:
    """A repeatable flag's values: those given before the command, then those after it."""
    return list(getattr(args, dest + _BEFORE, None) or []) + list(getattr(args, dest, None) or [])


def given_run_flags(args: argparse.Namespace) -> list[str]:
    out = []
    for flag, dest in RUN_FLAGS.items():
        value = repeated(args, dest) if dest in ("env", "mount") else getattr(args, dest, None)
        if value not in (None, False, []):
            out.append(flag)
    return out


def check_command_takes_them(args: argparse.Namespace) -> None:
    """A run flag on a command that runs no action is an error, not silently nothing."""
    if getattr(args, "runs_actions", False):
        return
    given = given_run_flags(args)
    if given:
        raise PolycrateError(f"{', '.join(given)}: only for commands that run actions "
                             "(run, workflow run, action run, install, uninstall, prune)")


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The RunOptions fields of the global flags (values checked here; paths by pipeline.prepare)."""
    from polycrate.config.action_env import parse_env
    from polycrate.runtime.container import parse_mount

    runtime = getattr(args, "runtime", None)
    if args.local:
        if runtime == "container":
            raise PolycrateError("--local and --runtime container contradict each other: give one")
        runtime = "local"
    handler, endpoint = args.event_handler, args.event_endpoint
    if handler == "webhook" and not endpoint:
        raise PolycrateError("--event-handler webhook needs --event-endpoint URL")
    if endpoint and handler is None:
        handler = "webhook"  # an endpoint alone says where the events go
    if endpoint and handler != "webhook":
        raise PolycrateError("--event-endpoint applies to --event-handler webhook")
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise PolycrateError(f"--event-endpoint must be an http:// or https:// URL, not {endpoint!r}")
    return {
        "runtime": runtime,
        "env": tuple(parse_env(value) for value in repeated(args, "env")),
        "mounts": tuple(parse_mount(value) for value in repeated(args, "mount")),
        "pull": args.pull,
        "build": args.build,
        "auto_commit": args.auto_commit,
        "event_handler": handler,
        "event_endpoint": endpoint,
        "ssh_private_key": args.ssh_private_key,
        "force": bool(getattr(args, "force", False)),
    }
