"""Benchmark 3: fleet (issues 19 and 30). The nightly workflow (backup -> update -> verify) with stand-in
plays over 30 and 100 SSH test hosts on loopback (tests/fleet/sshd.py: a real sshd per host, 127.0.0.2 ..),
run by polycrate against plain `ansible-playbook` tuned the way an experienced user tunes it: the bash chain
of the three playbooks with pipelining on, Ansible's default ControlMaster=auto/ControlPersist=60s (masters
outlive each process and serve the next step) and the same forks. Each run of the baseline gets a fresh
control folder (a nightly run finds no master left from the night before); its masters are closed after
the timed run.

Variants, alternated in every round (a load spike hits all of them alike):

* polycrate with its defaults (the target: <= 0.8x the baseline);
* the baseline;
* polycrate with Mitogen's strategy (`mitogen_linear`, when `ansible_mitogen` is importable in this venv),
  an option: the user's Ansible settings ANSIBLE_STRATEGY_PLUGINS/ANSIBLE_STRATEGY, plus
  ANSIBLE_HOST_KEY_CHECKING=False (Mitogen checks host keys itself; the test hosts' keys are in no
  known_hosts) and ANSIBLE_TIMEOUT=300 (its connect timeout, 10 s, fails under this machine's load).

Where the time goes: when this runs as root with cgroup v1 `cpuacct` mounted, every timed command runs in a
cgroup of its own and the fleet's sshd processes (with every session, shell and remote Python they fork) in
another, so each run records the CPU seconds of the controller side (polycrate or ansible-playbook, their
workers, ssh clients and masters) and of the hosts' side."""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import yaml

from bench.common import ANSIBLE_PLAYBOOK, POLYCRATE, clean_env, median, run

TARGET = 0.8
SIZES = (30, 100)
STEPS = ("backup", "update", "verify")
OURS = "polycrate (defaults)"
BASELINE = "plain ansible-playbook, pipelining + ControlPersist"
MITOGEN = "polycrate + Mitogen strategy (option)"
CPUACCT = Path("/sys/fs/cgroup/cpuacct")
# The hosts' Python: the system's, as on a Debian server. The fixture's default (the first python3 on
# PATH) is a pyenv shim on this machine: a bash script that runs a dozen processes before Python, per task.
HOST_PYTHON = "/usr/bin/python3"

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
    inventory = fleet.inventory({"fleet": names}, sharing=True)
    inventory["all"]["hosts"] = {n: inventory["all"]["hosts"][n] for n in names}
    if Path(HOST_PYTHON).exists():
        for host in inventory["all"]["hosts"].values():
            host["ansible_python_interpreter"] = HOST_PYTHON
    (ws / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    (block / "block.poly").write_text(
        "name: nightly\nactions:\n" + "".join(f"  - {{name: {s}, type: ansible, playbook: {s}.yml}}\n" for s in STEPS)
    )
    for s in STEPS:
        (block / f"{s}.yml").write_text(PLAY.format(step=s))
    return ws


def mitogen_strategy_dir() -> Path | None:
    spec = importlib.util.find_spec("ansible_mitogen")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "plugins" / "strategy"


class CPU:
    """CPU seconds of the controller side and of the hosts' side (cgroup v1 cpuacct; None without it)."""

    def __init__(self) -> None:
        self.groups: dict[str, Path] = {}
        if os.geteuid() != 0 or not (CPUACCT / "cpuacct.usage").exists():
            return
        try:
            for side in ("controller", "hosts"):
                path = CPUACCT / f"pcbench-{os.getpid()}-{side}"
                path.mkdir(exist_ok=True)
                self.groups[side] = path
        except OSError:
            self.close()

    def add_hosts(self, pids: list[int]) -> None:
        if "hosts" in self.groups:
            for pid in pids:
                (self.groups["hosts"] / "cgroup.procs").write_text(str(pid))

    def enter_controller(self) -> None:
        """preexec_fn of a timed command: it and everything it forks count as the controller side."""
        if "controller" in self.groups:
            (self.groups["controller"] / "cgroup.procs").write_text(str(os.getpid()))

    def read(self) -> dict[str, float]:
        return {side: int((path / "cpuacct.usage").read_text()) / 1e9 for side, path in self.groups.items()}

    def close(self) -> None:
        for path in self.groups.values():
            try:
                path.rmdir()
            except OSError:
                pass
        self.groups = {}


def bench(runs: int = 3, runs_large: int = 3, mitogen_large: int = 1, log=print,
          sizes: tuple[int, ...] = SIZES, progress: Path | None = None) -> dict:
    """`runs` rounds at 30 hosts, `runs_large` at 100; Mitogen (when installed) in every round at 30 hosts
    and in the first `mitogen_large` rounds at 100 (a round there takes minutes on this machine)."""
    from polycrate.runtime.ansible import fleet_forks
    from polycrate.runtime.ssh_masters import close_folder
    from tests.fleet.sshd import SSHFleet

    tmp = Path(tempfile.mkdtemp(prefix="pcb-", dir="/tmp"))
    fleet = SSHFleet(max(sizes))
    cpu = CPU()
    cpu.add_hosts([h.proc.pid for h in fleet.hosts])
    strategies = mitogen_strategy_dir()
    results = []
    mitogen_failures: list[str] = []
    counter = [0]

    def timed(cmd, env: dict, cwd: Path, folder: str | None = None) -> dict:
        before, load = cpu.read(), os.getloadavg()[0]
        try:
            wall = run(cmd, env=env, cwd=cwd, preexec_fn=cpu.enter_controller if cpu.groups else None)
        finally:
            if folder:
                close_folder(folder)  # untimed: the next run starts without masters
        after = cpu.read()
        row = {"wall": round(wall, 3), "load": round(load, 2)}
        row.update({f"cpu_{k}": round(after[k] - before[k], 2) for k in after})
        return row

    def plain(ws: Path, forks: int) -> dict:
        chain = " && ".join(f"{ANSIBLE_PLAYBOOK} --forks {forks} {s}.yml" for s in STEPS)
        counter[0] += 1
        cp = str(tmp / f"cp{counter[0]}")  # Ansible's default folder is ~/.ansible/cp
        env = clean_env(ANSIBLE_INVENTORY=str(ws / "inventory.yml"), ANSIBLE_RETRY_FILES_ENABLED="false",
                        ANSIBLE_PIPELINING="True", ANSIBLE_SSH_CONTROL_PATH_DIR=cp)
        return timed(chain, env, ws / "blocks" / "nightly", cp)

    def ours(ws: Path, **extra: str) -> dict:
        return timed([POLYCRATE, "workflows", "run", "nightly-maintenance"], clean_env(**extra), ws)

    try:
        for size in sizes:
            ws = make_workspace(tmp, fleet, size)
            forks = fleet_forks(size, {"HOME": str(tmp)}, tmp) or 5
            rounds = runs if size < max(sizes) else runs_large
            with_mitogen = rounds if size < max(sizes) else mitogen_large
            log(f" {size} hosts, forks {forks}")
            samples: dict[str, list[dict]] = {OURS: [], BASELINE: []}
            for i in range(rounds):
                # alternate which goes first: the first run of a round sometimes meets a load spike alone
                order = [OURS, BASELINE] if i % 2 == 0 else [BASELINE, OURS]
                if strategies is not None and i < with_mitogen:
                    order.append(MITOGEN)
                for name in order:
                    if name == OURS:
                        row = ours(ws)
                    elif name == BASELINE:
                        row = plain(ws, forks)
                    else:
                        try:
                            row = ours(ws, ANSIBLE_STRATEGY_PLUGINS=str(strategies), ANSIBLE_STRATEGY="mitogen_linear",
                                       ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_TIMEOUT="300")
                        except RuntimeError as exc:  # an option under test: its failure is a finding, not the end
                            log(f"  {MITOGEN} failed: {str(exc)[-300:]}")
                            mitogen_failures.append(str(exc)[-300:])
                            continue
                    samples.setdefault(name, []).append(row)
                if progress is not None:  # a round at 100 hosts takes many minutes: keep what is measured
                    import json

                    progress.write_text(json.dumps({"hosts": size, "forks": forks, "samples": samples}, indent=1))
                log(f"  round {i + 1}/{rounds}: " + ", ".join(
                    f"{n} {samples[n][-1]['wall']:.1f}s (load {samples[n][-1]['load']})" for n in order if n in samples))
            out = summarize(size, forks, samples)
            results.append(out)
    finally:
        fleet.stop()
        cpu.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"target": TARGET, "mitogen": _mitogen_version(), "mitogen_failures": mitogen_failures, "sizes": results}


def summarize(size: int, forks: int, samples: dict[str, list[dict]]) -> dict:
    """Medians, ratios against the baseline's median and each round's ratio, CPU medians per variant."""
    base = median([r["wall"] for r in samples[BASELINE]])
    out: dict = {"hosts": size, "forks": forks, "variants": {}}
    for name, rows in samples.items():
        walls = [r["wall"] for r in rows]
        v: dict = {"median": round(median(walls), 3), "min": min(walls), "max": max(walls),
                   "runs": rows, "ratio": round(median(walls) / base, 3)}
        if name != BASELINE:
            paired = [r["wall"] / b["wall"] for r, b in zip(rows, samples[BASELINE], strict=False)]
            v["pair_ratio"] = round(median(paired), 3)
        for side in ("cpu_controller", "cpu_hosts"):
            if rows and side in rows[0]:
                v[side] = round(median([r[side] for r in rows]), 2)
        out["variants"][name] = v
    out["ratio"] = out["variants"][OURS]["ratio"]
    out["met"] = out["ratio"] <= TARGET
    return out


def _mitogen_version() -> str | None:
    try:
        import mitogen

        return ".".join(map(str, mitogen.__version__))
    except ImportError:
        return None


def _cpu(v: dict, side: str) -> str:
    return f"{v[side]:.1f}" if side in v else ""


def render(f: dict) -> list[str]:
    out = ["## 3. Fleet", "",
           "The nightly workflow (backup, update, verify) with stand-in plays (two SSH tasks each, no facts) over",
           "real sshd test hosts, one per address on 127.0.0.2 .. (tests/fleet/sshd.py; the hosts run Debian's",
           "/usr/bin/python3), against the bash chain of the three `ansible-playbook` runs with pipelining on,",
           "Ansible's default ControlMaster=auto/ControlPersist=60s (a fresh control folder per run) and the same",
           "`--forks` (`python -m bench fleet`, bench/fleet.py). Rounds alternate which of ours and the baseline",
           "goes first; Mitogen's strategy (an option, `mitogen` " + str(f.get("mitogen")) + ") runs last in a round.",
           "Ratio: median over the baseline's median; pair ratio: median of each round's ours / baseline. CPU:",
           "seconds of the controller side (polycrate or ansible-playbook, workers, ssh clients and masters) and",
           f"of the hosts' side (sshd, the login shell, the remote Python), medians. Measured {f.get('measured')}.",
           "", "| hosts | forks | variant | median | min | max | ratio | pair ratio | controller CPU | hosts' CPU "
           "| each run: wall (1-min load before it) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for size in f["sizes"]:
        for name, v in size["variants"].items():
            runs = ", ".join(f"{r['wall']:.1f} s ({r['load']:.1f})" for r in v["runs"])
            pair = f"{v['pair_ratio']:.2f}x" if "pair_ratio" in v else ""
            out.append(f"| {size['hosts']} | {size['forks']} | {name} | {v['median']:.1f} s | {v['min']:.1f} s | "
                       f"{v['max']:.1f} s | {v['ratio']:.2f}x | {pair} | {_cpu(v, 'cpu_controller')} | "
                       f"{_cpu(v, 'cpu_hosts')} | {runs} |")
    out.append("")
    notes = Path(__file__).resolve().parent / "FLEET.md"
    if notes.exists():
        out += [notes.read_text().rstrip(), ""]
    return out
