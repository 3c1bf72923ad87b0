"""`polycrate completion bash|zsh|fish`: the scripts as the shells read them, driven in a real bash."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import run_cli, write

BIN = Path(sys.executable).parent  # where `polycrate` is installed beside this Python


@pytest.fixture(scope="module")
def scripts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("completion")
    out = {}
    for shell in ("bash", "zsh", "fish"):
        result = run_cli("completion", shell)
        assert result.returncode == 0, result.output
        out[shell] = write(folder / f"polycrate.{shell}", result.stdout)
    return out


@pytest.fixture
def ws(tmp_path):
    write(tmp_path / "workspace.poly", """
        name: comp
        config: {runtime: local}
        workflows:
          - name: nightly-maintenance
            steps:
              - {name: hello, block: tools, action: hello}
        """)
    write(tmp_path / "blocks/tools/block.poly", """
        name: tools
        actions:
          - {name: hello, script: ["echo hello"]}
        """)
    return tmp_path


def complete(script: Path, cwd: Path, *words: str) -> list[str]:
    """Source the script in a real bash, set COMP_WORDS/COMP_CWORD as bash does for `polycrate WORDS`
    (the last word being typed), call the completion function bash registered, print COMPREPLY."""
    driver = (
        f"source {script}\n"
        "fn=$(complete -p polycrate | sed -n 's/.*-F \\([^ ]*\\) .*/\\1/p')\n"
        'COMP_WORDS=(polycrate "$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n'
        'COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}\n'
        '"$fn" polycrate "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", driver, "driver", *words], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


def test_bash_script_parses(scripts):
    proc = subprocess.run(["bash", "-n", str(scripts["bash"])], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_bash_completes_a_workflow_name(scripts, ws):
    assert complete(scripts["bash"], ws, "workflows", "run", "") == ["nightly-maintenance"]
    assert complete(scripts["bash"], ws, "workflows", "run", "nig") == ["nightly-maintenance"]
    assert complete(scripts["bash"], ws, "run", "tools", "") == ["hello"]
    assert complete(scripts["bash"], ws, "workflows", "run", "x") == []


def test_bash_completes_commands_and_flags(scripts, ws):
    assert complete(scripts["bash"], ws, "wor") == ["workflow", "workflows", "workspace", "worker"]
    assert complete(scripts["bash"], ws, "completion", "") == ["bash", "zsh", "fish"]
    assert complete(scripts["bash"], ws, "workflows", "run", "nightly-maintenance", "--res") == ["--resume"]
    # bash splits --output=js at '=': the script joins it back and completes the value
    assert complete(scripts["bash"], ws, "workflows", "list", "--output", "=", "js") == ["json"]


def test_bash_completes_run_ids_after_a_run(scripts, ws):
    assert complete(scripts["bash"], ws, "runs", "show", "") == []
    assert run_cli("workflows", "run", "nightly-maintenance", cwd=ws).returncode == 0
    run_id = run_cli("runs", "list", "-o", "json", cwd=ws)
    assert run_id.returncode == 0
    offered = complete(scripts["bash"], ws, "runs", "show", "")
    assert offered[0] == "latest" and len(offered) == 2
    assert offered[1] in run_id.stdout  # the run's id as the store has it
    assert complete(scripts["bash"], ws, "runs", "logs", offered[1][:8]) == [offered[1]]


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_other_shells_scripts_parse(scripts, shell):
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed on this machine (Debian package {shell}); its script is not checked")
    proc = subprocess.run([shell, "-n", str(scripts[shell])], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_fish_completes_a_workflow_name(scripts, ws):
    """fish's own `complete -C` asks the sourced script for the candidates of a command line."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", HOME=str(ws))
    proc = subprocess.run(["fish", "--no-config", "-c", f"source {scripts['fish']}; complete -C 'polycrate workflows run '"],
                          cwd=ws, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    offered = [line.split("\t")[0] for line in proc.stdout.splitlines()]
    assert "nightly-maintenance" in offered, proc.stdout
