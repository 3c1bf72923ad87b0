"""Installing schedules: what is installed (files with our header), the plan, apply, the one-off form."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from polycrate.atomicfile import write_atomic
from polycrate.errors import ConfigError, PolycrateError
from polycrate.schedule.render import (
    HEADER_KEY,
    executable_command,
    render_cron,
    render_systemd,
)
from polycrate.schedule.unattended import VALUE, unattended_refusal
from polycrate.schedule.spec import (
    ORIGIN_ONE_OFF,
    ORIGIN_WORKSPACE,
    Schedule,
    has_control,
    next_runs,
    parse_schedule,
    prompts_of,
    workspace_schedules,
)

SYSTEMD_DEST = Path("/etc/systemd/system")
CRON_DEST = Path("/etc/cron.d")


@dataclass(frozen=True)
class Installed:
    """A file in a destination folder that carries our header."""

    path: Path
    workspace_root: str
    workflow: str
    origin: str
    expression: str | None  # OnCalendar= of a timer, the time fields of a cron entry

    @property
    def kind(self) -> str:
        if self.path.suffix == ".service":
            return "service"
        if self.path.suffix == ".timer":
            return "timer"
        return "cron"


def read_marker(path: Path) -> Installed | None:
    """Our header of ``path`` (None when the file is not ours or cannot be read)."""
    try:
        if path.is_symlink() or not path.is_file():
            return None
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return marker_of(path, text)


def marker_of(path: Path, text: str) -> Installed | None:
    """Our header in ``text``, the content of a file named ``path`` (None when it is not ours)."""
    keys: dict[str, str] = {}
    lines = text.splitlines()
    for line in lines:
        if not line.startswith("#"):
            break
        match = HEADER_KEY.match(line)
        if match:
            keys[match.group(1)] = match.group(2)
    if keys.get("polycrate-managed") != "schedule" or "polycrate-workspace-root" not in keys:
        return None
    expression = None
    for line in lines:
        if line.startswith("OnCalendar="):
            expression = line.split("=", 1)[1].replace("%%", "%")
        elif path.suffix or not line.strip() or line.startswith("#"):
            continue
        elif "=" not in line.split(" ", 1)[0]:  # a cron entry, not a VARIABLE=value line
            fields = line.split()
            expression = fields[0] if fields[0].startswith("@") else " ".join(fields[:5])
    return Installed(
        path=path,
        workspace_root=keys["polycrate-workspace-root"],
        workflow=keys.get("polycrate-workflow", ""),
        origin=keys.get("polycrate-origin", ORIGIN_WORKSPACE),
        expression=expression,
    )


def installed(dest: Path) -> list[Installed]:
    """Every file of ours in ``dest`` (only names starting with ``polycrate-`` are read)."""
    if not dest.is_dir():
        return []
    found = []
    for path in sorted(dest.glob("polycrate-*")):
        marker = read_marker(path)
        if marker is not None:
            found.append(marker)
    return found


def listed_dests(dest: Path | None = None, cron: bool = False) -> tuple[Path, ...]:
    """Where the installed schedules are looked for, by `schedules list` and the web view alike: ``dest`` when
    given (``--dest DIR``); with ``--cron`` the cron folder; else every folder `schedules apply` writes to without
    ``--dest`` (/etc/systemd/system, and /etc/cron.d with ``--cron``), so a schedule applied either way is found."""
    if dest is not None:
        return (Path(dest),)
    return (CRON_DEST,) if cron else (SYSTEMD_DEST, CRON_DEST)


def installed_in(dests: tuple[Path, ...] | list[Path]) -> list[Installed]:
    """Every file of ours in each of ``dests``, in that order (a folder that cannot be read holds none)."""
    found: list[Installed] = []
    for dest in dests:
        try:
            found += installed(Path(dest))
        except OSError:
            continue
    return found


def applied_state(ws_name: str, root: Path, schedule: Schedule, found: list[Installed]) -> tuple[str, Path | None]:
    """Whether ``schedule`` is installed, by the markers ``installed`` found (in any destination): "applied" (a
    timer or cron entry of this workspace and workflow with the expression apply would write), "differs" (one
    with another expression: apply again) or "not applied"; and the file that says so."""
    root = Path(root).resolve()
    mine = [m for m in found if m.workspace_root == str(root) and m.workflow == schedule.workflow
            and m.kind in ("timer", "cron")]
    if not mine:
        return "not applied", None
    for marker in mine:
        render = render_cron if marker.kind == "cron" else render_systemd
        try:
            files = render(ws_name, root, schedule, ["polycrate"], {})
        except ConfigError:
            continue
        for name, content in files.items():
            expected = marker_of(Path(name), content)
            if expected is not None and Path(name).suffix == marker.path.suffix \
                    and expected.expression == marker.expression:
                return "applied", marker.path
    return "differs", mine[0].path


@dataclass(frozen=True)
class InstalledState:
    """Whether an installed schedule is still what its workspace declares (``schedules list``)."""

    state: str  # "applied" | "differs" | "stale" | "one-off" | "unknown"
    reason: str | None = None  # what is wrong and what to run; None when applied


def _dest_flag(marker: Installed) -> str:
    """` --dest DIR` when ``marker``'s file is not in the default folder of its kind, else nothing."""
    import shlex

    folder = marker.path.parent
    return "" if folder == default_dest(marker.kind == "cron") else f" --dest {shlex.quote(str(folder))}"


def _where(marker: Installed) -> str:
    """The flags with which `schedules apply` writes (and removes) ``marker``'s file: `--cron` for a cron
    entry, `--dest DIR` outside the default folder. Without them apply looks in /etc/systemd/system, and
    the advice left a cron entry, or a unit written with --dest, as it was."""
    return (" --cron" if marker.kind == "cron" else "") + _dest_flag(marker)


def installed_states(found: list[Installed], loaded: dict[str, Any] | None = None) -> dict[tuple[str, str], InstalledState]:
    """(workspace root, workflow) -> its state, for every schedule in ``found``: each workspace is read again,
    since a timer whose workflow was renamed or removed keeps firing until apply runs there (and the run of a
    workflow that is gone fails). ``loaded``: workspaces the caller has just loaded, by resolved root (the
    server's), read instead of loading them again. The one rule for ``schedules list`` and the web view."""
    from polycrate.config.schema import WORKSPACE_FILE
    from polycrate.config.workspace import load_workspace

    workspaces: dict[str, Any] = dict(loaded or {})
    states: dict[tuple[str, str], InstalledState] = {}
    for marker in found:
        key = (marker.workspace_root, marker.workflow)
        if key in states:
            continue
        root = Path(marker.workspace_root)
        poly = root / WORKSPACE_FILE
        if marker.workspace_root not in workspaces:
            try:
                workspaces[marker.workspace_root] = load_workspace(root) if poly.is_file() else None
            except PolycrateError as exc:
                workspaces[marker.workspace_root] = exc
            except OSError as exc:  # another user's workspace, which whoever lists may not read: its rows say so
                workspaces[marker.workspace_root] = exc
        ws = workspaces[marker.workspace_root]
        files = [m for m in found if (m.workspace_root, m.workflow) == key]
        timers = [m.path.name for m in files if m.kind == "timer"]
        remove = " ".join(["rm", *(str(m.path) for m in files)])
        if timers:
            remove = f"systemctl disable --now {' '.join(timers)} && {remove} && systemctl daemon-reload"
        if ws is None:
            states[key] = InstalledState("stale", f"{poly} no longer exists: each run fails; remove it: {remove}")
        elif isinstance(ws, PolycrateError):
            states[key] = InstalledState("unknown", f"{poly} does not load ({ws.message}): its runs fail too")
        elif isinstance(ws, OSError):
            states[key] = InstalledState("unknown", f"{poly} cannot be read here ({ws.strerror or ws}): "
                                                    "list as the schedule's user (or root) to see its state")
        elif marker.workflow not in ws.workflows:
            undo = (f"polycrate -w {root} workflows schedule {marker.workflow} --remove{_dest_flag(marker)}"
                    if marker.origin == ORIGIN_ONE_OFF else f"polycrate -w {root} schedules apply{_where(marker)}")
            states[key] = InstalledState("stale", f"workflow '{marker.workflow}' is no longer in {poly}: each run "
                                                  f"fails; `{undo}` removes it")
        elif marker.origin == ORIGIN_ONE_OFF:
            states[key] = InstalledState("one-off")
        else:
            declared = ws.workflows[marker.workflow].timer
            if declared is None:
                states[key] = InstalledState("stale", f"workflow '{marker.workflow}' is no longer scheduled in "
                                                      f"{poly}; `polycrate -w {root} schedules apply{_where(marker)}` removes it")
            elif applied_state(ws.name, root, declared, found)[0] == "applied":
                states[key] = InstalledState("applied")
            else:
                states[key] = InstalledState("differs", f"{poly} says {declared.expression}; "
                                                        f"`polycrate -w {root} schedules apply{_where(marker)}` writes it")
    return states


# --- plan and apply -------------------------------------------------------------------------


@dataclass
class FileChange:
    path: Path
    status: str  # "create" | "update" | "unchanged" | "remove" | "keep" (a one-off we leave alone)
    content: str | None = None
    workflow: str = ""


@dataclass
class ScheduleEntry:
    schedule: Schedule
    next_runs: list[datetime]
    files: dict[str, str]
    notes: list[str] = field(default_factory=list)


@dataclass
class SchedulePlan:
    workspace: str
    root: Path
    dest: Path
    mode: str  # "systemd" | "cron"
    entries: list[ScheduleEntry]
    changes: list[FileChange]
    removes_all_others: bool = True  # False for the one-off form: it only touches its own workflow

    @property
    def timers(self) -> list[str]:
        return [p for e in self.entries for p in e.files if p.endswith(".timer")]

    @property
    def removed_timers(self) -> list[str]:
        return [c.path.name for c in self.changes if c.status == "remove" and c.path.suffix == ".timer"]

    def enable_command(self) -> str | None:
        if self.mode != "systemd":
            return None
        if self.timers:
            return "systemctl daemon-reload && systemctl enable --now " + " ".join(self.timers)
        if self.removed_timers:
            return "systemctl daemon-reload"
        return None

    def stop_command(self) -> str | None:
        if self.mode == "systemd" and self.removed_timers:
            return "systemctl stop " + " ".join(self.removed_timers)
        return None


def default_dest(cron: bool) -> Path:
    return CRON_DEST if cron else SYSTEMD_DEST


def plan_schedules(
    ws,
    dest: Path | None = None,
    cron: bool = False,
    now: datetime | None = None,
    command: list[str] | None = None,
    schedules: list[Schedule] | None = None,
    only_workflow: str | None = None,
    environment: dict[str, str] | None = None,
) -> SchedulePlan:
    """What apply would write and remove. Validates every schedule first; writes nothing.

    ``schedules``/``only_workflow`` serve the one-off form (``workflows schedule NAME``): only that
    workflow's files are touched and nothing else is removed.
    """
    root = Path(ws.root).resolve()
    if has_control(str(root)):
        raise ConfigError("the workspace path contains control characters; cannot schedule it", root)
    dest = Path(dest) if dest is not None else default_dest(cron)
    mode = "cron" if cron else "systemd"
    if schedules is None:
        schedules = workspace_schedules(ws)
    command = command or executable_command()
    render = render_cron if cron else render_systemd

    for schedule in schedules:  # a value nobody types at night: refused before anything is rendered or written
        refusal = unattended_refusal(ws, schedule.workflow, (VALUE,), "nothing was written") \
            if schedule.workflow in ws.workflows else None
        if refusal is not None:
            raise refusal
    entries: list[ScheduleEntry] = []
    wanted: dict[str, tuple[str, str]] = {}  # file name -> (content, workflow)
    for schedule in schedules:
        try:
            files = render(ws.name, root, schedule, command, environment or {})
        except ConfigError as exc:
            raise ConfigError(exc.message, ws.file, schedule.line) from None
        for name, content in files.items():
            if name in wanted:
                raise ConfigError(
                    f"workflows '{wanted[name][1]}' and '{schedule.workflow}' both map to the file name "
                    f"'{name}'; rename one of them",
                    ws.file,
                    schedule.line,
                )
            wanted[name] = (content, schedule.workflow)
        notes = []
        prompts = prompts_of(ws, schedule.workflow) if schedule.workflow in ws.workflows else []
        if prompts:
            notes.append("a scheduled run never answers prompts, so it will fail: " + "; ".join(prompts))
        if cron and schedule.persistent_set and schedule.persistent:
            notes.append("'persistent' has no effect with cron: a run missed while the machine was off is skipped")
        entries.append(ScheduleEntry(schedule, next_runs(schedule, now), files, notes))

    ours = {m.path.name: m for m in installed(dest)}
    changes: list[FileChange] = []
    for name, (content, workflow) in wanted.items():
        path = dest / name
        marker = ours.get(name)
        if path.exists() or path.is_symlink():
            if marker is None:
                raise PolycrateError(f"{path} exists and was not written by polycrate; refusing to overwrite it")
            if marker.workspace_root != str(root):
                raise PolycrateError(
                    f"{path} belongs to the workspace at {marker.workspace_root}; a workspace named "
                    f"'{ws.name}' there and here cannot both schedule '{workflow}' (rename one)"
                )
            try:
                same = path.read_bytes() == content.encode("utf-8")
            except OSError as exc:
                raise PolycrateError(f"cannot read {path}: {exc.strerror}") from None
            changes.append(FileChange(path, "unchanged" if same else "update", content, workflow))
        else:
            changes.append(FileChange(path, "create", content, workflow))
    for name, marker in ours.items():
        if name in wanted or marker.workspace_root != str(root):
            continue
        if only_workflow is not None:
            continue  # the one-off form never removes anything else
        status = "keep" if marker.origin == ORIGIN_ONE_OFF else "remove"
        changes.append(FileChange(marker.path, status, None, marker.workflow))
    return SchedulePlan(ws.name, root, dest, mode, entries, changes, only_workflow is None)


def apply_plan(plan: SchedulePlan) -> SchedulePlan:
    """Write what changed (atomically: temp file + rename) and remove what is no longer declared."""
    if any(c.status in ("create", "update") for c in plan.changes) and not plan.dest.is_dir():
        raise PolycrateError(
            "destination folder does not exist" + (" (is cron installed?)" if plan.mode == "cron" else ""),
            plan.dest,
        )
    for change in plan.changes:
        if change.status in ("create", "update"):
            assert change.content is not None
            try:
                # the dot-prefix keeps systemd and cron from reading the file half-written
                write_atomic(change.path, change.content, prefix=".polycrate-")
            except OSError as exc:
                raise PolycrateError(f"cannot write {change.path}: {exc.strerror}") from None
    for change in plan.changes:
        if change.status == "remove":
            _remove_ours(change.path)
    return plan


def remove_one_off(ws, workflow: str, dest: Path | None = None, cron: bool = False) -> list[Path]:
    """Remove a workflow's files of this workspace from ``dest`` (``workflows schedule NAME --remove``)."""
    root = str(Path(ws.root).resolve())
    dest = Path(dest) if dest is not None else default_dest(cron)
    removed = []
    for marker in installed(dest):
        if marker.workspace_root == root and marker.workflow == workflow:
            _remove_ours(marker.path)
            removed.append(marker.path)
    return removed


def _remove_ours(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise PolycrateError(f"cannot remove {path}: {exc.strerror}") from None
    # `systemctl enable` linked the timer into timers.target.wants; a link to the file we removed dangles
    link = path.parent / "timers.target.wants" / path.name
    if path.suffix == ".timer" and link.is_symlink():
        target = Path(os.readlink(link))
        if not target.is_absolute():
            target = link.parent / target
        if os.path.normpath(target) == os.path.normpath(path):
            link.unlink()


def one_off_schedule(ws, workflow: str, on_calendar: str | None, cron: str | None, **options: Any) -> Schedule:
    """The Schedule of ``workflows schedule NAME --on-calendar SPEC | --cron SPEC``, validated."""
    if workflow not in ws.workflows:
        from polycrate.config.workspace import get_workflow

        get_workflow(ws, workflow)  # raises NotFoundError with a suggestion
    raw: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
    if on_calendar is not None:
        raw["on_calendar"] = on_calendar
    if cron is not None:
        raw["cron"] = cron
    try:
        schedule = parse_schedule(raw, workflow, None, None, origin=ORIGIN_ONE_OFF)
    except ConfigError as exc:
        raise ConfigError(exc.message) from None
    assert schedule is not None
    return schedule
