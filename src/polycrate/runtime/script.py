"""Script actions: the lines run in order in the block folder under `set -euo pipefail`.

Each line is shown as it starts (``+ line``, as written, like ``set -x`` without the expanded
internals), and a failing line is recorded for the failure report: a small prelude installs a
DEBUG trap that prints the line, an ERR trap that appends ``{"event": "script_failed", "line":
N, "status": S}`` to the step's events file (``POLYCRATE_EVENTS_FILE``), and an EXIT trap that
records the last line started when the script ends non-zero otherwise (``exit 3``). ``script_line`` maps a
line of the generated file back to the action's script line.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

# One line each, so a line number of the generated file maps back with one subtraction (PRELUDE_LINES).
# The traps use only builtins; bash does not run the DEBUG trap inside a trap, so they print nothing else.
PRELUDE = (
    "set -Eeuo pipefail",
    'mapfile -t __polycrate_src < "${BASH_SOURCE[0]}"; __polycrate_at=0',
    "__polycrate_trace() { if (( $1 > %(first)d && $1 != __polycrate_at )); then __polycrate_at=$1;"
    " printf '+ %%s\\n' \"${__polycrate_src[$1-1]}\"; fi; }",
    "__polycrate_failed() { local s=$?; if [[ -n ${POLYCRATE_EVENTS_FILE:-} ]]; then"
    " printf '{\"event\": \"script_failed\", \"line\": %%d, \"status\": %%d}\\n' \"$1\" \"$s\""
    ' >> "$POLYCRATE_EVENTS_FILE"; fi; }'
    "; __polycrate_exit() { local s=$?; if (( s != 0 )) && [[ -n ${POLYCRATE_EVENTS_FILE:-} ]]; then"
    " printf '{\"event\": \"script_exit\", \"line\": %%d, \"status\": %%d}\\n' \"$__polycrate_at\" \"$s\""
    ' >> "$POLYCRATE_EVENTS_FILE"; fi; }',
    "trap '__polycrate_trace \"$LINENO\"' DEBUG; trap '__polycrate_failed \"$LINENO\"' ERR; trap __polycrate_exit EXIT",
)
PRELUDE_LINES = len(PRELUDE)


def script_text(lines: tuple[str, ...] | list[str]) -> str:
    """The file bash runs: the prelude, then the action's lines as written."""
    prelude = "\n".join(PRELUDE) % {"first": PRELUDE_LINES}
    return prelude + "\n" + "\n".join(lines) + "\n"


def script_line(lines: tuple[str, ...] | list[str], file_line: int) -> tuple[int, str] | None:
    """(1-based index of the script entry, the physical line) for a line of the generated file."""
    at = file_line - PRELUDE_LINES
    if at < 1:
        return None
    for index, entry in enumerate(lines, 1):
        physical = entry.split("\n")
        if at <= len(physical):
            return index, physical[at - 1]
        at -= len(physical)
    return None


def snapshot_data(request) -> dict:
    """What a script action reads from POLYCRATE_WORKSPACE_SNAPSHOT_YAML, and what its lines are
    templated over: Polycrate's snapshot (action.action_variables)."""
    from polycrate.runtime.action import action_variables

    return action_variables(request)


def rendered_script(request, data: dict | None = None) -> tuple[str, ...]:
    """The action's lines with their Go templates filled in over the snapshot (as Polycrate does:
    `{{ .block.config.db_name }}`, see gotemplate.py). A template that cannot be evaluated is a
    ConfigError naming the block.poly line."""
    if request.script is not None:
        return request.script
    lines = request.action.script
    if not any("{{" in line for line in lines):
        return tuple(lines)
    from polycrate.errors import ConfigError
    from polycrate.config.gotemplate import TemplateError, render
    from polycrate.config.gotemplate import template_message

    action = request.action
    data = data if data is not None else snapshot_data(request)
    out = []
    for index, line in enumerate(lines, 1):
        try:
            out.append(render(line, data))
        except TemplateError as exc:
            at = action.script_lines[index - 1] if index <= len(action.script_lines) else action.line
            raise ConfigError(template_message(f"block '{request.block.name}', action '{action.name}', "
                                               f"script line {index}", exc),
                              action.file or request.block.definition.file, at) from None
    return tuple(out)


def write_snapshot(request, private: Path, data: dict | None = None) -> Path:
    """snapshot_data as YAML, readable by us only: POLYCRATE_WORKSPACE_SNAPSHOT_YAML of script and
    ansible actions (Polycrate gives it to both)."""
    snap = private / "workspace.snapshot.yml"
    fd = os.open(snap, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(data if data is not None else snapshot_data(request), handle, sort_keys=False)
    return snap


def build_command(request, private: Path) -> tuple[list[str], dict[str, str]]:
    from polycrate.runtime.action import action_environment, vars_plugin_environment
    from polycrate.runtime.events import EVENTS_FILE_ENV

    data = snapshot_data(request)
    script = private / "action.sh"
    script.write_text(script_text(rendered_script(request, data)), encoding="utf-8")
    env = vars_plugin_environment(action_environment(request))
    env["POLYCRATE_WORKSPACE_SNAPSHOT_YAML"] = str(write_snapshot(request, private, data))
    env["POLYCRATE_RUNTIME_SCRIPT_PATH"] = str(script)
    env.pop(EVENTS_FILE_ENV, None)
    if request.events_file is not None:
        env[EVENTS_FILE_ENV] = str(request.events_file)
    return ["bash", str(script)], env
