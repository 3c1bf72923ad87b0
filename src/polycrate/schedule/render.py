"""What gets written: systemd service and timer units, /etc/cron.d entries, the header that marks them ours."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from pathlib import Path

from polycrate.errors import ConfigError
from polycrate.timespec.cron import cron_to_calendar
from polycrate.schedule.spec import Schedule
from polycrate.timespec.times import ScheduleError

LOG_DIR = "/var/log/polycrate"

MARK = "# polycrate-managed: schedule"
HEADER_KEY = re.compile(r"^# (polycrate-[a-z-]+): (.*)$")


def executable_command() -> list[str]:
    """How a scheduled run calls this polycrate: POLYCRATE_EXECUTABLE, else the running script, else PATH.

    The path is made absolute but symlinks are kept: /usr/local/bin/polycrate pointing into a venv keeps
    working after an upgrade repoints the link.
    """
    override = os.environ.get("POLYCRATE_EXECUTABLE")
    if override:
        return [os.path.abspath(override)]
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 and os.path.basename(argv0) == "polycrate" and os.path.isfile(argv0):
        return [os.path.abspath(argv0)]
    found = shutil.which("polycrate")
    if found:
        return [os.path.abspath(found)]
    return [os.path.abspath(sys.executable), "-m", "polycrate"]  # `python -m polycrate` in a checkout


def unit_basename(workspace: str, workflow: str) -> str:
    """``polycrate-<workspace>-<workflow>``, with anything a unit name cannot hold replaced by '-'."""
    return re.sub(r"[^A-Za-z0-9:_.-]", "-", f"polycrate-{workspace}-{workflow}")


def cron_filename(workspace: str, workflow: str) -> str:
    """Like the unit name, but cron (run-parts rules) ignores names with anything but [A-Za-z0-9_-]."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"polycrate-{workspace}-{workflow}")


def default_log_file(workspace: str, workflow: str, root: Path | None = None, user: str | None = None) -> str:
    """Where a cron entry appends its output when the schedule names no ``log_file``: /var/log/polycrate for
    root; for another ``user``, the workspace's own state folder (the run writes its record there, so that user
    can write it), since only root may create a folder in /var/log and a line that cannot open its log never
    starts its run."""
    if user and user != "root" and root is not None:
        return f"{root}/.polycrate/logs/cron-{workflow}.log"
    return f"{LOG_DIR}/{workspace}-{workflow}.log"


def _header(root: Path, workflow: str, origin: str) -> str:
    return (
        "# Written by polycrate (polycrate schedules apply); changes here are overwritten.\n"
        f"{MARK}\n"
        f"# polycrate-workspace-root: {root}\n"
        f"# polycrate-workflow: {workflow}\n"
        f"# polycrate-origin: {origin}\n"
    )


def systemd_escape(value: str, *, word: bool = False, command: bool = False) -> str:
    """The one escaper for unit files: ``value`` as systemd will read it back, literally.

    Always: '%' doubled (every setting expands specifiers). ``command`` (a word of ``ExecStart=``):
    '$' doubled too (only command lines expand $VARIABLES) and ';' quoted (it separates commands).
    ``word`` or ``command``: quoted as one word, backslashes and quotes escaped, when it holds
    whitespace, quotes or backslashes (``ExecStart=`` and ``Environment=`` split words).
    """
    value = value.replace("%", "%%")
    if command:
        value = value.replace("$", "$$")
    if not (word or command):
        return value
    if value and not re.search(r"[\s\"'\\;]" if command else r"[\s\"'\\]", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


LAUNCHED_BY_TIMER, LAUNCHED_BY_CRON = "systemd:", "cron:"  # --launched-by of a scheduled run: the unit, the cron file


def launched_by_schedule(launched_by: str | None) -> bool:
    """Whether a run was started by a timer or cron entry schedules apply wrote: nobody watches it."""
    return bool(launched_by) and str(launched_by).startswith((LAUNCHED_BY_TIMER, LAUNCHED_BY_CRON))


# what a cron entry's `timeout` sends polycrate when the schedule's timeout runs out: a signal of its own, so that
# the record can say why (a SIGTERM is anyone's `kill`), and to polycrate alone (--foreground), which stops its
# step and records the run; KILL only if it has not ended 90 s later (systemd's TimeoutStopSec default)
CRON_TIMEOUT_SIGNAL = "SIGUSR2"
CRON_TIMEOUT = "timeout --foreground --kill-after=90s --signal=USR2"


def cron_timeout_stop(launched_by: str | None, signal_name: str) -> str | None:
    """When a cron entry's `timeout` stopped its run (CRON_TIMEOUT_SIGNAL): the record's words for it."""
    if signal_name != CRON_TIMEOUT_SIGNAL or not launched_by or not launched_by.startswith(LAUNCHED_BY_CRON):
        return None
    entry = launched_by[len(LAUNCHED_BY_CRON):]
    return f"stopped after the schedule's timeout ran out ({signal_name} from the cron entry {entry})"


def systemd_timeout_stop(launched_by: str | None) -> str | None:
    """When systemd stopped a timer's run because its unit ran past ``TimeoutStartSec`` (the schedule's
    ``timeout``): the record's words for it; None for any other stop, a run no timer started, or when systemctl
    cannot say. Asked of systemd, not guessed from the clock: on that timeout systemd sets the unit's Result to
    ``timeout`` before it sends SIGTERM, where ``systemctl stop`` leaves it ``success`` (and each start resets it)."""
    if not launched_by or not launched_by.startswith(LAUNCHED_BY_TIMER):
        return None
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return None
    import subprocess

    unit = launched_by[len(LAUNCHED_BY_TIMER):]
    try:
        shown = subprocess.run([systemctl, "show", "--property=Result", "--property=TimeoutStartUSec", "--", unit],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    properties = dict(line.split("=", 1) for line in shown.stdout.splitlines() if "=" in line)
    if shown.returncode != 0 or properties.get("Result") != "timeout":
        return None
    return (f"stopped by systemd after TimeoutStartSec={properties.get('TimeoutStartUSec') or '?'} (the schedule's "
            f"timeout) ran out: SIGTERM to {unit}")


def _run_command(root: Path, workflow: str, command: list[str], launched_by: str) -> list[str]:
    # no --force: a scheduled run must never answer prompts on the user's behalf. --launched-by: the run's record
    # (runs list's BY, runs show, the webhook and mail) names the unit or cron file that started it, as a run the
    # server launched names `web:USER`, not the Unix user, which a run typed at 02:00 would show the same
    return [*command, "--workspace", str(root), "workflows", "run", "--launched-by", launched_by, workflow]


def _path_env(command: list[str]) -> str:
    folder = os.path.dirname(command[0])
    default = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return default if folder in default.split(":") else f"{folder}:{default}"


def render_systemd(workspace: str, root: Path, schedule: Schedule, command: list[str],
                   environment: dict[str, str] | None = None) -> dict[str, str]:
    """{file name: content} of the service and timer units for one schedule."""
    if schedule.kind == "cron":
        try:
            on_calendar = cron_to_calendar(schedule.expression)
        except ScheduleError as exc:
            raise ConfigError(f"workflow '{schedule.workflow}': schedule: {exc}") from None
    else:
        on_calendar = schedule.expression
    name = unit_basename(workspace, schedule.workflow)
    header = _header(root, schedule.workflow, schedule.origin)
    argv = _run_command(root, schedule.workflow, command, f"{LAUNCHED_BY_TIMER}{name}.service")
    service = [
        header,
        "[Unit]",
        f"Description=Polycrate workflow {schedule.workflow} (workspace {workspace})",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        f"WorkingDirectory={systemd_escape(str(root))}",
        "Environment=" + systemd_escape(f"PATH={_path_env(command)}", word=True),
        *("Environment=" + systemd_escape(f"{k}={v}", word=True) for k, v in (environment or {}).items()),
        "ExecStart=" + " ".join(systemd_escape(w, command=True) for w in argv),
    ]
    if schedule.user:
        service.append(f"User={schedule.user}")
    if schedule.group:
        service.append(f"Group={schedule.group}")
    if schedule.timeout:
        service.append(f"TimeoutStartSec={schedule.timeout}")
    if schedule.log_file:
        service.append(f"StandardOutput=append:{systemd_escape(schedule.log_file)}")
        service.append("StandardError=inherit")
    timer = [
        header,
        "[Unit]",
        f"Description=Run polycrate workflow {schedule.workflow} (workspace {workspace}) on "
        + systemd_escape(schedule.expression),
        "",
        "[Timer]",
        f"OnCalendar={systemd_escape(on_calendar)}",
        # systemd's default (1min) fires a timer anywhere in the minute after its time, and an every-few-seconds
        # schedule once a minute: the run starts when plan says (RandomizedDelaySec still adds its delay)
        "AccuracySec=1s",
        f"Persistent={'true' if schedule.persistent else 'false'}",
    ]
    if schedule.randomized_delay:
        timer.append(f"RandomizedDelaySec={schedule.randomized_delay}")
    timer += ["", "[Install]", "WantedBy=timers.target"]
    return {f"{name}.service": "\n".join(service) + "\n", f"{name}.timer": "\n".join(timer) + "\n"}


def _cron_quote(word: str) -> str:
    return shlex.quote(word).replace("%", "\\%")  # an unescaped % ends a cron command


def render_cron(workspace: str, root: Path, schedule: Schedule, command: list[str],
                environment: dict[str, str] | None = None) -> dict[str, str]:
    """{file name: content} of the /etc/cron.d file for one schedule."""
    if schedule.kind != "cron":
        raise ConfigError(
            f"workflow '{schedule.workflow}': schedule: an OnCalendar expression cannot be written for cron; "
            "use a cron expression (schedule.cron) or systemd timers (without --cron)",
        )
    if schedule.group:
        raise ConfigError(
            f"workflow '{schedule.workflow}': schedule: 'group' is not available with cron "
            "(cron runs as the user's primary group); remove it or use systemd timers",
        )
    log_file = schedule.log_file or default_log_file(workspace, schedule.workflow, root, schedule.user)
    name = cron_filename(workspace, schedule.workflow)
    run = " ".join(_cron_quote(w) for w in _run_command(root, schedule.workflow, command, f"{LAUNCHED_BY_CRON}{name}"))
    if environment:  # on the command line itself: cron.d's NAME=value lines do no quoting
        run = "env " + " ".join(_cron_quote(f"{k}={v}") for k, v in environment.items()) + " " + run
    if schedule.timeout:
        run = f"{CRON_TIMEOUT} {schedule.timeout} {run}"
    parts = []
    if schedule.randomized_delay:
        parts.append(f"sleep $(shuf -i 0-{schedule.randomized_delay} -n 1)")
    parts += [
        f"mkdir -p {_cron_quote(os.path.dirname(log_file))}",
        f"cd {_cron_quote(str(root))}",
        f"{run} >> {_cron_quote(log_file)} 2>&1",
    ]
    entry = f"{schedule.expression} {schedule.user or 'root'} " + " && ".join(parts)
    content = (
        _header(root, schedule.workflow, schedule.origin)
        + "SHELL=/bin/sh\n"
        + f"PATH={_path_env(command)}\n"
        + entry
        + "\n"
    )
    return {name: content}
