"""The README's first command must keep working: `make demo` and `make demo-rollback` run this module."""
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("args, expected", [([], "backup, update and verify succeeded, the restore drill passed"),
                                            (["--rollback"], "the update failed and was rolled back, the restore drill passed")])
def test_demo(args, expected):
    proc = subprocess.run([sys.executable, "-m", "tests.fleet.demo", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=3600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert f"demo: as expected: {expected}" in proc.stdout
    assert "nightly-maintenance" in proc.stdout and "STATUS" in proc.stdout  # the run history is shown
    # the drill's table: the demo's table `items` restored with its 1000 rows
    assert "restore drill of acme_app-" in proc.stdout and ": PASS" in proc.stdout
    assert re.search(r"public\.items +1000 +1000 +same +ok", proc.stdout), proc.stdout[-3000:]
