"""Benchmark 3: fleet. The nightly workflow (backup -> update -> verify) with stand-in plays over 30 and
100 SSH test hosts on loopback (tests/fleet/sshd.py: a real sshd per host, 127.0.0.2 ..), run by
polycrate with its defaults (SSH masters shared across the steps, pipelining, forks for the fleet's
size) against the bash chain of the three `ansible-playbook` runs with the same forks:

* plain Ansible with its default SSH settings (the baseline of issue 19's target, 0.8x): ControlMaster=auto,
  ControlPersist=60s, pipelining off; each run gets a fresh control folder (a nightly run finds no master
  left from the night before), its masters are closed after the timed run;
* the same with pipelining on (where polycrate's gain comes from);
* the test fixture's settings (no connection sharing, pipelining on: the previous baseline)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import yaml

from bench.common import ANSIBLE_PLAYBOOK, POLYCRATE, clean_env, interleave, median, run, summary

TARGET = 0.8
SIZES = (30, 100)
STEPS = ("backup", "update", "verify")

# stand-ins for the block's plays: the same shape (one play per action over the group, become-free,
# no facts), two tasks each that go over SSH
PLAY = """- name: {step} (stand-in)
  hosts: fleet
  gather_facts: false
  tasks:
    - name: run a command
      ansible.builtin.command: /bin/true
      changed_when: false
    - name: look at a file
      ansible.builtin.stat:
        path: /etc/hostname
"""


def make_workspace(root: Path, fleet, size: int) -> Path:
    ws = root / f"fleet-{size}"
    block = ws / "blocks" / "nightly"
    block.mkdir(parents=True)
    (ws / "workspace.poly").write_text(
        f"name: bench-fleet-{size}\nblocks:\n  - name: nightly\nworkflows:\n  - name: nightly-maintenance\n    steps:\n"
        + "".join(f"      - {{name: {s}, block: nightly, action: {s}}}\n" for s in STEPS)
    )
    names = [h.name for h in fleet.hosts[:size]]
    for sharing, file in ((True, "inventory.yml"), (False, "inventory-fixture.yml")):
        inventory = fleet.inventory({"fleet": names}, sharing=sharing)
        inventory["all"]["hosts"] = {n: inventory["all"]["hosts"][n] for n in names}
        (ws / file).write_text(yaml.safe_dump(inventory, sort_keys=False))
    (block / "block.poly").write_text(
        "name: nightly\nactions:\n" + "".join(f"  - {{name: {s}, type: ansible, playbook: {s}.yml}}\n" for s in STEPS)
    )
    for s in STEPS:
        (block / f"{s}.yml").write_text(PLAY.format(step=s))
    return ws


def bench(runs: int = 2, runs_large: int = 1, log=print) -> dict:
    """`runs` interleaved rounds at 30 hosts, `runs_large` at 100 (no warm-up round: the machine is shared and slow)."""
    from polycrate.runtime.ansible import fleet_forks
    from polycrate.runtime.ssh_masters import close_folder
    from tests.fleet.sshd import SSHFleet

    tmp = Path(tempfile.mkdtemp(prefix="pcb-", dir="/tmp"))
    fleet = SSHFleet(max(SIZES))
    results = []
    counter = [0]

    def plain(ws: Path, inventory: str, pipelining: str | None, forks: int, sharing: bool):
        chain = " && ".join(f"{ANSIBLE_PLAYBOOK} --forks {forks} {s}.yml" for s in STEPS)
        counter[0] += 1
        cp = tmp / f"cp{counter[0]}"
        extra = {"ANSIBLE_INVENTORY": str(ws / inventory), "ANSIBLE_RETRY_FILES_ENABLED": "false"}
        if pipelining is not None:
            extra["ANSIBLE_PIPELINING"] = pipelining
        if sharing:
            extra["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(cp)  # Ansible's default folder is ~/.ansible/cp
        try:
            return run(chain, env=clean_env(**extra), cwd=ws / "blocks" / "nightly")
        finally:
            close_folder(str(cp))  # untimed: the next run starts without masters

    try:
        for size in SIZES:
            ws = make_workspace(tmp, fleet, size)
            forks = fleet_forks(size, {"HOME": str(tmp)}, tmp) or 5
            variants = {
                "polycrate (defaults)": lambda ws=ws: run([POLYCRATE, "workflows", "run", "nightly-maintenance"],
                                                          env=clean_env(), cwd=ws),
                "plain, Ansible's default SSH settings": lambda ws=ws, forks=forks: plain(ws, "inventory.yml", None, forks, True),
                "plain, default SSH settings + pipelining":
                    lambda ws=ws, forks=forks: plain(ws, "inventory.yml", "True", forks, True),
                "plain, fixture settings (no sharing, pipelining)":
                    lambda ws=ws, forks=forks: plain(ws, "inventory-fixture.yml", "True", forks, False),
            }
            n = runs if size < 100 else runs_large
            log(f" {size} hosts, forks {forks}")
            loads = [" ".join(f"{x:.2f}" for x in os.getloadavg())]
            samples = interleave(variants, n, warmup=0, log=log)
            loads.append(" ".join(f"{x:.2f}" for x in os.getloadavg()))
            ours = median(samples["polycrate (defaults)"])
            row = {"hosts": size, "forks": forks, "load": loads,
                   "variants": {name: summary(v) for name, v in samples.items()},
                   "ratios": {name: round(ours / median(v), 3) for name, v in samples.items()
                              if not name.startswith("polycrate")}}
            row["met"] = row["ratios"]["plain, Ansible's default SSH settings"] <= TARGET
            results.append(row)
    finally:
        fleet.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"target": TARGET, "sizes": results}
