"""The wheel an admin installs: built by `python -m build` (the sdist, then the wheel from it), installed
into a fresh virtualenv outside the repository, it runs `workspace init` and the sample workflow, and
says its version (the one of pyproject.toml, read from the package metadata)."""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.helpers import REPO

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def _run(argv: list, cwd: Path, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{argv}: {proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtualenv holding only the wheel and its dependencies: its bin folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "build", "--outdir", tmp / "dist", REPO], cwd=tmp)
    wheels = sorted((tmp / "dist").glob("polycrate-*.whl"))
    assert [w.name for w in wheels] == [f"polycrate-{VERSION}-py3-none-any.whl"]
    _run([sys.executable, "-m", "venv", tmp / "venv"], cwd=tmp)
    _run([tmp / "venv/bin/pip", "install", "-q", "--disable-pip-version-check", wheels[0]], cwd=tmp)
    return tmp / "venv" / "bin"


def _env(bin_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLYCRATE_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}/usr/bin:/bin"
    return env


def test_the_wheel_is_what_runs(installed):
    proc = _run([installed / "python", "-c", "import polycrate; print(polycrate.__file__)"], cwd=installed.parent.parent,
                env=_env(installed))
    assert Path(proc.stdout.strip()).is_relative_to(installed.parent)  # not the clone's src/
    assert not Path(proc.stdout.strip()).is_relative_to(REPO)


def test_version_from_the_metadata(installed):
    lines = _run([installed / "polycrate", "version"], cwd=installed.parent.parent, env=_env(installed)).stdout.splitlines()
    assert lines[0] == f"polycrate {VERSION}"
    assert lines[1].startswith("ansible-core 2.19.")
    assert lines[2].startswith(f"python {sys.version_info.major}.{sys.version_info.minor}.")


def test_workspace_init_and_the_sample_workflow(installed, tmp_path):
    env = _env(installed)
    _run(["polycrate", "workspace", "init", "ops"], cwd=tmp_path, env=env)
    assert (tmp_path / "ops" / "workspace.poly").is_file() and (tmp_path / "ops" / "blocks" / "hello").is_dir()
    proc = _run(["polycrate", "workflows", "run", "hello"], cwd=tmp_path / "ops", env=env, timeout=300)
    assert "workflow hello succeeded" in proc.stdout
    assert "ok=2" in proc.stdout  # the Ansible step ran, with the callback plugin the wheel ships
    shown = _run(["polycrate", "runs", "show", "latest", "-o", "json"], cwd=tmp_path / "ops", env=env).stdout
    assert '"status": "succeeded"' in shown
