"""Benchmark 3: fleet. The nightly workflow (backup -> update -> verify) with stand-in plays over 1, 10
and 30 SSH test hosts on loopback (tests/fleet/sshd.py: a real sshd per host, 127.0.0.2 ..), against
plain `ansible-playbook` over the same hosts with the same settings: the bash chain of the three
playbooks (what the workflow replaces) and, for reference, one process running all three.
Target: no more than 1.1x plain Ansible (the bash chain) at every size. Both ANSIBLE_PIPELINING
settings are measured; forks is Ansible's default (5) for every variant."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import yaml

from bench.common import ANSIBLE_PLAYBOOK, POLYCRATE, clean_env, interleave, median, run, summary

TARGET = 1.1
SIZES = (1, 10, 30)
STEPS = ("backup", "update", "verify")
FORKS = 5

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
    inventory = fleet.inventory({"fleet": names})
    inventory["all"]["hosts"] = {n: inventory["all"]["hosts"][n] for n in names}
    (ws / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    (block / "block.poly").write_text(
        "name: nightly\nactions:\n" + "".join(f"  - {{name: {s}, type: ansible, playbook: {s}.yml}}\n" for s in STEPS)
    )
    for s in STEPS:
        (block / f"{s}.yml").write_text(PLAY.format(step=s))
    return ws


def bench(runs: int = 3, runs_large: int = 2, runs_off: int = 1, log=print) -> dict:
    """Pipelining True: every size, `runs` interleaved runs (`runs_large` at 30 hosts). Pipelining
    False (3-4x slower here): 1 and 10 hosts, `runs_off` runs."""
    from tests.fleet.sshd import SSHFleet

    tmp = Path(tempfile.mkdtemp(prefix="polycrate-bench-fleet-"))
    fleet = SSHFleet(max(SIZES))
    results = []
    try:
        for size in SIZES:
            ws = make_workspace(tmp, fleet, size)
            block = ws / "blocks" / "nightly"
            chain = " && ".join(f"{ANSIBLE_PLAYBOOK} {s}.yml" for s in STEPS)
            row = {"hosts": size, "forks": FORKS, "variants": {}}
            for pipelining in ("True", "False"):
                if pipelining == "False" and size >= 30:
                    continue
                plain = clean_env(ANSIBLE_INVENTORY=str(ws / "inventory.yml"), ANSIBLE_RETRY_FILES_ENABLED="false",
                                  ANSIBLE_PIPELINING=pipelining)
                ours = clean_env(ANSIBLE_PIPELINING=pipelining)
                variants = {
                    f"polycrate, pipelining {pipelining}":
                        lambda ours=ours, ws=ws: run([POLYCRATE, "workflows", "run", "nightly-maintenance"], env=ours, cwd=ws),
                    f"bash chain, pipelining {pipelining}":
                        lambda plain=plain, block=block: run(chain, env=plain, cwd=block),
                }
                if pipelining == "True":
                    variants["one ansible-playbook, pipelining True"] = (
                        lambda plain=plain, block=block: run([ANSIBLE_PLAYBOOK, *(f"{s}.yml" for s in STEPS)],
                                                             env=plain, cwd=block))
                n = runs_off if pipelining == "False" else (runs if size < 30 else runs_large)
                log(f" {size} host(s), pipelining {pipelining}")
                samples = interleave(variants, n, warmup=1 if pipelining == "True" else 0, log=log)
                row["variants"].update({name: summary(v) for name, v in samples.items()})
                row[f"ratio_pipelining_{pipelining}"] = round(
                    median(samples[f"polycrate, pipelining {pipelining}"]) / median(samples[f"bash chain, pipelining {pipelining}"]), 3)
                if pipelining == "True":
                    row["ratio_vs_one_process"] = round(median(samples["polycrate, pipelining True"])
                                                        / median(samples["one ansible-playbook, pipelining True"]), 3)
            row["met"] = all(row[k] <= TARGET for k in row if k.startswith("ratio_pipelining_"))
            results.append(row)
    finally:
        fleet.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"target": TARGET, "forks": FORKS, "sizes": results}
