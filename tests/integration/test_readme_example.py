"""The documentation's worked example (docs/tutorial/first-workspace.md), verbatim: its four files (the fenced
blocks after `<!-- example-file: PATH -->`) written to an empty folder, and its commands (the block after
`<!-- example-commands -->`) run there by bash. And the README's first workspace in five commands."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers import REPO, run_cli

TUTORIAL = REPO / "docs" / "tutorial" / "first-workspace.md"
FENCE = re.compile(r"<!-- (example-file: (?P<path>\S+)|example-commands) -->\n```\w*\n(?P<body>.*?)\n```", re.S)


def example() -> tuple[dict[str, str], str]:
    files, commands = {}, []
    for match in FENCE.finditer(TUTORIAL.read_text(encoding="utf-8")):
        if match["path"]:
            files[match["path"]] = match["body"] + "\n"
        else:
            commands.append(match["body"] + "\n")
    assert len(commands) == 1, "one <!-- example-commands --> block"
    return files, commands[0]


def test_the_example_is_complete():
    files, _ = example()
    assert set(files) == {"workspace.poly", "inventory.yml", "blocks/system-report/block.poly",
                          "blocks/system-report/report.yml"}
    workspace = yaml.safe_load(files["workspace.poly"])
    block = yaml.safe_load(files["blocks/system-report/block.poly"])
    assert {a["type"] for a in block["actions"]} == {"ansible", "script"}
    assert [s["block"] for s in workspace["workflows"][0]["steps"]] == [block["name"]] * 2


def test_the_readme_example_runs_verbatim(tmp_path):
    files, commands = example()
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("POLYCRATE_WORKFLOW", None)
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "workspace first-steps is valid" in proc.stdout
    assert "workflow daily-report succeeded" in proc.stdout
    assert re.search(r"free on /: \d+%", proc.stdout)  # the script step printed the report the play wrote
    report = (tmp_path / "artifacts/blocks/system-report/localhost.txt").read_text()
    assert report.startswith("host: localhost (")
    # the workspace's config won over the block's default, as the example's comment says
    block = json.loads(run_cli("blocks", "inspect", "system-report", "-o", "json", cwd=tmp_path).stdout)
    assert block["config"]["min_free_percent"] == 5


def _bash(commands: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("POLYCRATE_WORKFLOW", None)
    return subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_readme_first_workspace_runs_verbatim(tmp_path):
    """The README's "A first workspace": five commands, run as they are written, in an empty folder."""
    section = (REPO / "README.md").read_text(encoding="utf-8").split("## A first workspace", 1)[1]
    commands = re.search(r"```sh\n(.*?)\n```", section, re.S)[1]
    lines = [line for line in commands.splitlines() if line.strip()]
    assert len(lines) == 5 and all(line.startswith("polycrate ") for line in lines)
    proc = _bash(commands + "\n", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "workflow hello succeeded" in proc.stdout
    assert re.search(r"action\s+disk-report apply\s+succeeded", proc.stdout)  # `runs list` shows both runs
