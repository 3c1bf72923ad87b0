"""Benchmark 5: the preflight. What `workspace validate` and the check before step 1 of a run cost,
on the example workspace (its own playbooks, its two-host inventory) and on the same workspace with
a fleet inventory of 100,000 hosts, beside Ansible's own costs on the same files:

* `ansible-playbook --syntax-check`, once per playbook (what validate would cost done by subprocesses;
  it checks less: no hosts patterns, no scripts);
* `ansible-inventory --list` on the 100,000-host file (Ansible's own inventory loading, plus its JSON);
* the run-time check: the three-step orchestration workflow with and without `--no-preflight`
  (small inventory), and `preflight.check` for the nightly workflow's steps on the fleet inventory
  (what a run adds before step 1; nothing contacts a host);
* `workflows list` with the fleet inventory (it must not read it).
"""
from __future__ import annotations

import resource
import shutil
import sys
import tempfile
from pathlib import Path

from bench.common import POLYCRATE, REPO, VENV_BIN, clean_env, interleave, median, run, summary

EXAMPLE = REPO / "examples" / "acme-corp-automation"
FLEET_HOSTS = 100_000
CHECK_STEPS = """
import sys, time
from polycrate.run import preflight
from polycrate.config.workspace import find_root, load_workspace
ws = load_workspace(find_root(sys.argv[1], explicit=True))
steps = [(s.block, s.action, s.allow_no_hosts) for s in ws.workflows["nightly-maintenance"].steps]
report = preflight.check(ws, preflight.step_targets(ws, steps), settings=False)
assert report.ok, [str(f) for f in report.findings]
print(report.inventory_hosts)
"""


def fleet_inventory(path: Path, hosts: int = FLEET_HOSTS) -> None:
    """The example's groups (db_servers, web_servers), each host named once in `all`."""
    with open(path, "w", encoding="utf-8") as out:
        out.write("all:\n  vars:\n    ansible_user: ubuntu\n  hosts:\n")
        out.writelines(f"    host{i:06d}.fleet.example: {{}}\n" for i in range(hosts))
        out.write("  children:\n    db_servers:\n      hosts:\n")
        out.writelines(f"        host{i:06d}.fleet.example:\n" for i in range(0, hosts, 10))
        out.write("    web_servers:\n      hosts:\n")
        out.writelines(f"        host{i:06d}.fleet.example:\n" for i in range(1, hosts, 10))


CPU: dict[str, list[float]] = {}  # CPU seconds (user + system) of each variant's processes, beside the wall time


def _cpu_of(name: str, fn):
    """`fn` timed as usual (wall seconds), its children's CPU seconds kept in CPU: on a shared machine the
    CPU time says what the work costs, the wall time what waiting for it costs."""
    def timed() -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = fn()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        CPU.setdefault(name, []).append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        return wall
    return timed


def bench(runs: int = 5, runs_fleet: int = 1, log=print) -> dict:
    from bench import orchestration

    tmp = Path(tempfile.mkdtemp(prefix="polycrate-bench-preflight-"))
    env = clean_env()
    try:
        small = tmp / "example"
        shutil.copytree(EXAMPLE, small, ignore=shutil.ignore_patterns("artifacts", ".polycrate"))
        block = next(p.parent for p in (small / "blocks").rglob("block.poly"))
        playbooks = sorted(block.glob("*.yml"))  # the actions' playbooks (task files live in tasks/)
        syntax = " && ".join(
            f"{VENV_BIN / 'ansible-playbook'} -i {small / 'inventory.yml'} --syntax-check {p.name}"
            " -e '{\"block\": {\"config\": {\"hosts\": \"db_servers\", \"web_hosts\": \"web_servers\"}}}'"
            for p in playbooks)
        orch = orchestration.make_workspace(tmp)
        variants = {
            "workspace validate, example": lambda: run([POLYCRATE, "workspace", "validate"], env=env, cwd=small),
            f"ansible-playbook --syntax-check x{len(playbooks)}, example": lambda: run(syntax, env=env, cwd=block),
            "three-step workflow": lambda: run([POLYCRATE, "workflows", "run", "three"], env=env, cwd=orch),
            "three-step workflow --no-preflight": lambda: run(
                [POLYCRATE, "workflows", "run", "three", "--no-preflight"], env=env, cwd=orch),
        }
        samples = interleave({n: _cpu_of(n, f) for n, f in variants.items()}, runs, warmup=1, log=log)

        fleet = tmp / "fleet"
        shutil.copytree(small, fleet)
        fleet_inventory(fleet / "inventory.yml")
        inventory = fleet / "inventory.yml"
        fleet_variants = {
            f"ansible-inventory --list, {FLEET_HOSTS} hosts": lambda: run(
                [str(VENV_BIN / "ansible-inventory"), "-i", str(inventory), "--list", "--output", str(tmp / "inv.json")],
                env=env, cwd=fleet),
            f"workspace validate, {FLEET_HOSTS} hosts": lambda: run([POLYCRATE, "workspace", "validate"], env=env,
                                                                   cwd=fleet),
            f"run-time check (nightly's 3 steps), {FLEET_HOSTS} hosts": lambda: run(
                [sys.executable, "-c", CHECK_STEPS, str(fleet)], env=env, cwd=fleet),
            f"workflows list, {FLEET_HOSTS} hosts": lambda: run([POLYCRATE, "workflows", "list"], env=env, cwd=fleet),
        }
        samples.update(interleave({n: _cpu_of(n, f) for n, f in fleet_variants.items()}, runs_fleet, warmup=0,
                                  log=log))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [{"name": name, **summary(values), "cpu_median": round(median(CPU[name][-len(values):]), 3)}
            for name, values in samples.items()]
    m = {name: median(values) for name, values in samples.items()}
    inv = m[f"ansible-inventory --list, {FLEET_HOSTS} hosts"]
    return {
        "rows": rows,
        "ratios": {
            "validate / syntax-check subprocesses (example)": round(
                m["workspace validate, example"] / m[next(n for n in m if n.startswith("ansible-playbook --syntax"))], 3),
            "run-time check added to the three-step workflow (s)": round(
                m["three-step workflow"] - m["three-step workflow --no-preflight"], 3),
            "three-step workflow with / without preflight": round(
                m["three-step workflow"] / m["three-step workflow --no-preflight"], 3),
            "validate / ansible-inventory --list (fleet)": round(m[f"workspace validate, {FLEET_HOSTS} hosts"] / inv, 3),
            "run-time check / ansible-inventory --list (fleet)": round(
                m[f"run-time check (nightly's 3 steps), {FLEET_HOSTS} hosts"] / inv, 3),
        },
    }


def render(p: dict) -> list[str]:
    out = ["## 5. Preflight", "",
           "`workspace validate` and the check before step 1 of every run (src/polycrate/run/preflight.py),",
           "on a copy of examples/acme-corp-automation (2 hosts) and on the same workspace with a",
           f"{FLEET_HOSTS:,}-host inventory; Ansible's own tools on the same files beside them. "
           f"Measured {p['measured']}.", "",
           "| variant | median (wall) | min | max | CPU (median) | runs |", "|---|---|---|---|---|---|"]
    for row in p["rows"]:
        out.append(f"| {row['name']} | {row['median']:.3f} s | {row['min']:.3f} s | {row['max']:.3f} s "
                   f"| {row['cpu_median']:.3f} s | {row['runs']} |")
    out += ["", "| ratio | value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in p["ratios"].items()]
    out.append("")
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(bench(runs=int(sys.argv[1]) if len(sys.argv) > 1 else 3), indent=1))
