"""The README's demo: the article's nightly workflow against a local, self-contained test host.

Run with `make demo`. It copies examples/acme-corp-automation to .demo/, points the
article's inventory at SSH test hosts on loopback, and runs
`polycrate workflows run nightly-maintenance` there.

STAND-IN NOTICE: until the real linux-maintenance block and its isolated Debian
test host land, the three playbooks are replaced by stand-in plays that only
report what they were given (targets, merged config). The workspace.poly and
block.poly are the article's, unchanged.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ARTICLE_BLOCK, EXAMPLE, RECORDER_PLAY, article_inventory
from tests.fleet.sshd import SSHFleet

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / ".demo" / "acme-corp-automation"


def main(argv: list[str]) -> int:
    print("demo: STAND-IN plays (the real backup/update/verify block is not in this build yet)", flush=True)
    shutil.rmtree(DEMO, ignore_errors=True)
    shutil.copytree(EXAMPLE, DEMO)
    with SSHFleet(2, names=["db01.acme-corp.com", "app01.acme-corp.com"]) as fleet:
        for action, key in (("backup", "hosts"), ("update", "web_hosts"), ("verify", "web_hosts")):
            (DEMO / ARTICLE_BLOCK / f"{action}.yml").write_text(RECORDER_PLAY.format(action=action, hosts_key=key))
        (DEMO / "inventory.yml").write_text(yaml.safe_dump(article_inventory(fleet), sort_keys=False))
        print(f"demo: workspace {DEMO}; SSH test hosts " + ", ".join(f"{h.name}={h.address}:{h.port}" for h in fleet.hosts))
        cmd = [sys.executable, "-m", "polycrate", "workflows", "run", "nightly-maintenance"]
        print("demo: $ polycrate workflows run nightly-maintenance", flush=True)
        code = subprocess.call(cmd, cwd=DEMO)
    print(f"demo: exit status {code}; what each stand-in play received is in {DEMO / 'records.jsonl'}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
