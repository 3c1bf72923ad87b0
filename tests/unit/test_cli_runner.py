"""The two CLI runners of tests/helpers.py give the same exit code and output."""
from __future__ import annotations

import os
import signal

from tests.helpers import assert_one_line_error, run_cli, run_cli_inprocess, write


def test_in_process_and_subprocess_agree(tmp_path):
    write(tmp_path / "workspace.poly", "name: ws\nblocks:\n  - name: b\nworkflows:\n  - name: w\n    steps:\n"
                                       "      - {name: one, block: b, action: hello}\n")
    write(tmp_path / "blocks/b/block.poly", "name: b\nactions:\n  - {name: hello, script: [\"echo hi\"]}\n")
    for argv in (["--help"], ["workflows", "list", "-o", "json"], ["workflows", "inspect", "nope"]):
        inside, outside = run_cli_inprocess(*argv, cwd=tmp_path), run_cli(*argv, cwd=tmp_path)
        assert (inside.returncode, inside.stdout, inside.stderr) == (outside.returncode, outside.stdout, outside.stderr)
    assert_one_line_error(run_cli_inprocess("workflows", "inspect", "nope", cwd=tmp_path), "nope")


def test_in_process_restores_what_main_changes(tmp_path):
    cwd, env, handler = os.getcwd(), dict(os.environ), signal.getsignal(signal.SIGTERM)
    result = run_cli_inprocess("workflows", "list", cwd=tmp_path, env={"POLYCRATE_RUNNER_PROBE": "1"})
    assert result.returncode == 2  # no workspace here
    assert (os.getcwd(), dict(os.environ), signal.getsignal(signal.SIGTERM)) == (cwd, env, handler)
