"""Benchmark 2: orchestration overhead. A three-step workflow of trivial local-connection plays,
against (a) the bash chain of three `ansible-playbook` calls and (b) one `ansible-playbook` process
running the three playbooks (the floor). Target: at most 0.6x the bash chain, with per-step results,
history and status kept (checked after the timed runs).

Then the same workflow with plays that run modules (issue 19): each play runs `command: "true"` and
`debug` over the local connection, so every step builds and runs an AnsiballZ module. Target: at most
1.15x one `ansible-playbook` process running the three playbooks (the floor), with the ratio to the
bash chain beside it.

With a baseline checkout (`--baseline-python PATH`, the python of another checkout's venv), its
`polycrate` runs the same workflow in its own copy of the workspace (its own run store), interleaved in the
same rounds: ours is also reported against it (bench/cli.py's against_before)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.cli import against_before
from bench.common import ANSIBLE_PLAYBOOK, POLYCRATE, clean_env, interleave, median, run, summary

TARGET = 0.6
TARGET_MODULES = 1.15  # x one ansible-playbook process running the same three playbooks
STEPS = ("one", "two", "three")
DEBUG_PLAY = "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug: {{msg: \"step {s}\"}}\n"
MODULE_PLAY = ("- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: \"true\"\n"
               "    - ansible.builtin.debug: {{msg: \"step {s}\"}}\n")


def make_workspace(root: Path, play: str = DEBUG_PLAY, name: str = "orchestration") -> Path:
    ws = root / name
    block = ws / "blocks" / "trivial"
    block.mkdir(parents=True)
    (ws / "workspace.poly").write_text(
        "name: bench-orchestration\nblocks:\n  - name: trivial\nworkflows:\n  - name: three\n    steps:\n"
        + "".join(f"      - {{name: {s}, block: trivial, action: {s}}}\n" for s in STEPS)
    )
    (ws / "inventory.yml").write_text(
        "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n"
    )
    (block / "block.poly").write_text(
        "name: trivial\nactions:\n" + "".join(f"  - {{name: {s}, type: ansible, playbook: {s}.yml}}\n" for s in STEPS)
    )
    for s in STEPS:
        (block / f"{s}.yml").write_text(play.format(s=s))
    return ws


def bench(runs: int = 10, log=print, modules_runs: int | None = None, baseline_python: str | None = None) -> dict:
    data = _bench_debug(runs, log, baseline_python)
    data["modules"] = bench_modules(modules_runs or max(3, runs // 2), log, baseline_python)
    return data


def _before_variants(ws: Path, python: str | None, zygote_off: bool) -> dict:
    """The baseline checkout's polycrate on its own copy of ``ws``, with its own venv first on PATH."""
    if not python:
        return {}
    bin_dir = Path(python).parent
    env = clean_env(PATH=f"{bin_dir}:{clean_env()['PATH']}")
    cold = dict(env, POLYCRATE_ZYGOTE="0")
    polycrate = str(bin_dir / "polycrate")
    variants = {"before: polycrate workflows run": lambda: run([polycrate, "workflows", "run", "three"], env=env, cwd=ws)}
    if zygote_off:
        variants["before: polycrate, zygote off"] = lambda: run([polycrate, "workflows", "run", "three"], env=cold,
                                                                cwd=ws)
    return variants


def _variants(ws: Path, zygote_off: bool = True) -> tuple[dict, dict]:
    block = ws / "blocks" / "trivial"
    # plain Ansible gets what polycrate sets for its plays: the workspace inventory, no retry files,
    # pipelining (irrelevant for the local connection)
    plain = clean_env(ANSIBLE_INVENTORY=str(ws / "inventory.yml"), ANSIBLE_RETRY_FILES_ENABLED="false",
                      ANSIBLE_PIPELINING="True")
    ours = clean_env()
    cold = clean_env(POLYCRATE_ZYGOTE="0")
    chain = " && ".join(f"{ANSIBLE_PLAYBOOK} {s}.yml" for s in STEPS)
    variants = {"polycrate workflows run": lambda: run([POLYCRATE, "workflows", "run", "three"], env=ours, cwd=ws)}
    if zygote_off:
        variants["polycrate, zygote off"] = lambda: run([POLYCRATE, "workflows", "run", "three"], env=cold, cwd=ws)
    variants["bash chain of 3 ansible-playbook"] = lambda: run(chain, env=plain, cwd=block)
    variants["one ansible-playbook, 3 playbooks"] = lambda: run([ANSIBLE_PLAYBOOK, *(f"{s}.yml" for s in STEPS)],
                                                                env=plain, cwd=block)
    return variants, ours


def bench_modules(runs: int = 5, log=print, baseline_python: str | None = None) -> dict:
    """Plays that run a module: against one ansible-playbook process (the floor) and the bash chain."""
    tmp = Path(tempfile.mkdtemp(prefix="polycrate-bench-orch-modules-"))
    try:
        ws = make_workspace(tmp, MODULE_PLAY, "modules")
        variants, ours = _variants(ws, zygote_off=False)
        variants.update(_before_variants(make_workspace(tmp / "before", MODULE_PLAY, "modules"), baseline_python,
                                         zygote_off=False))
        samples = interleave(variants, runs, warmup=1, log=log)
        history = _history_kept(ws, ours, ok_count=2)
        steps = _step_durations(ws, ours)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    floor = median(samples["one ansible-playbook, 3 playbooks"])
    chain = median(samples["bash chain of 3 ansible-playbook"])
    rows = []
    for name, values in samples.items():
        if name.startswith("before: "):
            continue
        row = {"name": name, **summary(values), "ratio": round(median(values) / floor, 3),
               "ratio_chain": round(median(values) / chain, 3)}
        if name == "polycrate workflows run":
            row.update(target=TARGET_MODULES, met=row["ratio"] <= TARGET_MODULES and history["ok"])
        rows.append(row)
    data = {"baseline": {"name": "one ansible-playbook, 3 playbooks", **summary(samples["one ansible-playbook, 3 playbooks"])},
            "rows": rows, "history": history, "step_durations": steps}
    if baseline_python:
        data["before"] = against_before(samples, ["polycrate workflows run"], floor, baseline_python)
    return data


def _step_durations(ws: Path, env: dict) -> list:
    """The last timed run's steps as `runs show` records them (seconds)."""
    out = subprocess.run([POLYCRATE, "runs", "show", "latest", "-o", "json"], cwd=ws, env=env,
                         capture_output=True, text=True)
    try:
        return [(s["name"], s["duration"]) for s in json.loads(out.stdout)["steps"]]
    except (ValueError, KeyError):
        return []


def _bench_debug(runs: int, log, baseline_python: str | None = None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="polycrate-bench-orch-"))
    try:
        ws = make_workspace(tmp)
        variants, ours = _variants(ws)
        variants.update(_before_variants(make_workspace(tmp / "before"), baseline_python, zygote_off=True))
        samples = interleave(variants, runs, warmup=1, log=log)
        history = _history_kept(ws, ours)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    chain_median = median(samples["bash chain of 3 ansible-playbook"])
    rows = []
    for name, values in samples.items():
        if name.startswith("before: "):
            continue
        ratio = median(values) / chain_median
        row = {"name": name, **summary(values), "ratio": round(ratio, 3)}
        if name == "polycrate workflows run":
            row.update(target=TARGET, met=ratio <= TARGET and history["ok"])
        rows.append(row)
    data = {"baseline": {"name": "bash chain of 3 ansible-playbook", **summary(samples["bash chain of 3 ansible-playbook"])},
            "rows": rows, "history": history}
    if baseline_python:
        data["before"] = against_before(samples, ["polycrate workflows run", "polycrate, zygote off"], chain_median,
                                        baseline_python)
    return data


def _history_kept(ws: Path, env: dict, ok_count: int = 1) -> dict:
    """The last timed run is in the store: succeeded, every step with its status and per-host counts."""
    out = subprocess.run([POLYCRATE, "runs", "show", "latest", "-o", "json"], cwd=ws, env=env,
                         capture_output=True, text=True)
    try:
        record = json.loads(out.stdout)
    except ValueError:
        return {"ok": False, "detail": out.stderr.strip()[-300:]}
    steps = [(s["name"], s["status"], (s.get("hosts") or {}).get("localhost", {}).get("ok")) for s in record["steps"]]
    ok = record["status"] == "succeeded" and steps == [(s, "succeeded", ok_count) for s in STEPS]
    return {"ok": ok, "run": record.get("run_id") or record.get("id"), "steps": steps}
