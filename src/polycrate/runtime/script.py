"""Script actions: the lines run in order in the block folder under `set -euo pipefail`."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from polycrate.workspace import snapshot


def build_command(request, private: Path) -> tuple[list[str], dict[str, str]]:
    from polycrate.runtime import action_environment, action_variables

    script = private / "action.sh"
    script.write_text("set -euo pipefail\n" + "\n".join(request.action.script) + "\n", encoding="utf-8")
    snap = private / "workspace.snapshot.yml"
    variables = action_variables(request)
    data = snapshot(request.ws) | {"block": variables["block"]}
    data["workspace"]["secrets"] = variables["workspace"]["secrets"]
    fd = os.open(snap, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)
    env = action_environment(request)
    env["POLYCRATE_WORKSPACE_SNAPSHOT_YAML"] = str(snap)
    return ["bash", str(script)], env
