"""The commands that must stay instant import none of the heavy modules (checked in a fresh interpreter)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import write

HEAVY = ("ansible", "oras", "pyrage", "psycopg", "polycrate.history.postgres", "polycrate.run.engine",
         "polycrate.run.opening", "polycrate.run.drive", "polycrate.run.step", "polycrate.run.finish",
         "polycrate.run.pipeline", "polycrate.runtime.action", "polycrate.runtime.process",
         "polycrate.runtime.ansible", "polycrate.runtime.container", "polycrate.runtime.zygote",
         "polycrate.runtime.script", "starlette", "uvicorn", "procrastinate", "polycrate.team",
         # the package metadata's reader (with email, zipfile, csv): polycrate.__version__ reads the file itself
         "importlib.metadata", "email")

# Runs main(argv) and prints the modules loaded by then (main's exit, --help's SystemExit included).
PROBE = """
import json, sys
from polycrate.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _loaded(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env=env)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    return report["code"], report["modules"]


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


@pytest.fixture
def workspace(tmp_path):
    write(tmp_path / "workspace.poly", """
        name: lazy
        blocks:
          - name: b
        workflows:
          - name: nightly
            steps:
              - {name: one, block: b, action: hello}
              - {name: two, block: b, action: play}
            schedule: "*-*-* 02:00:00"
        encryption:
          recipients: []
        """)
    write(tmp_path / "blocks/b/block.poly", """
        name: b
        actions:
          - {name: hello, script: ["echo hello"]}
          - {name: play, playbook: play.yml}
        """)
    write(tmp_path / "blocks/b/play.yml", "- hosts: localhost\n  tasks: []\n")
    write(tmp_path / "inventory.yml", "all:\n  hosts:\n    localhost: {}\n")
    return tmp_path


@pytest.mark.parametrize("argv", [["--help"], ["workflows", "list"], ["workflows", "list", "-o", "json"],
                                  ["__complete", "bash", "workflows", "run", ""],
                                  ["__complete", "bash", "runs", "show", ""], ["completion", "bash"]],
                         ids=" ".join)
def test_instant_commands_import_nothing_heavy(workspace, argv):
    code, modules = _loaded(argv, workspace)
    assert code == 0
    assert "polycrate.cli" in modules  # the probe saw the CLI load
    assert _heavy(modules) == []


# Not needed to show a list: other commands' modules (a command line gets the parser of its own
# command only: cli.COMMAND_MODULE), the run store, the event stream, installing schedules (checking
# one, as every load does, is schedule.cron/oncalendar/times: systemd-analyze, so subprocess).
# importlib.metadata (the version, with email, zipfile and csv) and a launch declaration's checks: only when used.
NOT_FOR_LISTS = ("polycrate.history", "polycrate.runtime.events", "polycrate.ansi", "polycrate.contract",
                 "polycrate.schedule.install", "polycrate.schedule.render", "importlib.metadata",
                 "polycrate.config.launch_params",
                 "polycrate.cli.serve", "polycrate.cli.runs", "polycrate.cli.ssh", "polycrate.cli.kubectl")
# --help builds every command's parser, and reads no workspace and runs nothing
NOT_FOR_HELP = ("subprocess", "polycrate.history", "polycrate.runtime.events", "polycrate.ansi", "polycrate.contract",
                "polycrate.schedule", "yaml", "polycrate.config.workspace", "polycrate.config.schema", "polycrate.config.model",
                "polycrate.config.yamlfile")


def _among(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == n or m.startswith(n + ".") for n in names)]


@pytest.mark.parametrize("argv, unwanted", [
    (["--help"], NOT_FOR_HELP),
    (["workflows", "list"], NOT_FOR_LISTS),
    # -o json: the document is built by polycrate.contract, which a text listing does without
    (["workflows", "list", "-o", "json"], tuple(n for n in NOT_FOR_LISTS if n != "polycrate.contract")),
], ids=lambda v: " ".join(v) if isinstance(v[0], str) and v[0] in ("--help", "workflows") else "")
def test_instant_commands_load_only_what_they_show(workspace, argv, unwanted):
    code, modules = _loaded(argv, workspace)
    assert code == 0
    assert _among(modules, unwanted) == []
    if argv[0] == "workflows":
        assert "polycrate.config.workspace" in modules  # the probe saw the workspace load


def test_the_probe_sees_a_heavy_import(workspace):
    # the same probe on a command that needs the engine: proves the check above can fail
    _code, modules = _loaded(["workflows", "run", "nightly", "--step", "one"], workspace)
    assert "polycrate.run.engine" in _heavy(modules)
    assert "polycrate.history" in _among(modules, NOT_FOR_LISTS)


# team mode's PostgreSQL backend: nothing of it without a backend setting
TEAM = ("psycopg", "polycrate.history.postgres", "procrastinate", "polycrate.team")


def _without_backend(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "POLYCRATE_BACKEND"}
    (tmp_path / "host-config.yml").write_text("# no backend here\n")
    env["POLYCRATE_CONFIG"] = str(tmp_path / "host-config.yml")  # not /etc/polycrate/config.yml of this machine
    return env


@pytest.mark.parametrize("argv", [["runs", "list"], ["workflows", "run", "nightly", "--step", "one"],
                                  ["backend", "status"]], ids=" ".join)
def test_without_a_backend_nothing_of_postgresql_is_imported(workspace, tmp_path, argv):
    code, modules = _loaded(argv, workspace, _without_backend(tmp_path))
    assert code == 0
    assert "polycrate.history" in modules or argv[0] == "backend"  # the probe saw the command work
    assert _among(modules, TEAM) == []


def test_with_a_backend_the_probe_sees_postgresql(workspace, tmp_path):
    # the same probe with a backend set (a closed loopback port: the connection fails, one line, exit 74)
    env = _without_backend(tmp_path) | {"POLYCRATE_BACKEND": f"postgresql://nobody@127.0.0.1:{_closed_port()}/x"}
    code, modules = _loaded(["runs", "list"], workspace, env)
    assert code == 74
    assert "psycopg" in modules and "polycrate.history.postgres" in modules


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when we return: nothing listens there
