"""Benchmark 6 (issue 30): each target against its baseline in the same run, in pairs (A then B, the
pair's load average recorded), medians of the pairs.

- the three-step module workflow in the container (the default runtime) against the same with
  --local, on podman and on a Docker engine this bench starts itself (private roots, no iptables,
  no bridge; stopped by PID and removed afterwards); target <= 1.2x;
- the same workflow with --local against one `ansible-playbook` running the three playbooks
  (target <= 1.1x), in the existing form (orchestration.py: the baseline gets the inventory,
  retry files off and pipelining, as polycrate sets them) and the held-out form (plays with
  several module tasks, an inventory that sets ansible_python_interpreter to the venv's Python,
  nothing else tuned: the baseline is `ansible-playbook -i inventory.yml`);
- `polycrate workflows list` against `ansible-playbook --version` (target <= 0.3x)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Callable

from bench.common import ANSIBLE_PLAYBOOK, POLYCRATE, REPO, clean_env, median, run
from bench.orchestration import MODULE_PLAY, STEPS, make_workspace

TARGET_CONTAINER = 1.2
TARGET_LOCAL = 1.1
TARGET_CLI = 0.3
HELD_OUT_PLAY = ("- name: step {s}\n  hosts: localhost\n  gather_facts: false\n  tasks:\n"
                 "    - ansible.builtin.command: \"true\"\n"
                 "    - ansible.builtin.stat: {{path: /etc/hostname}}\n"
                 "    - ansible.builtin.file: {{path: /tmp, state: directory}}\n"
                 "    - ansible.builtin.debug: {{msg: \"step {s}\"}}\n")


def pairs(a: Callable[[], float], b: Callable[[], float], runs: int, warmup: int = 1,
          log: Callable[[str], None] = print, label: str = "") -> dict:
    """A then B, `runs` times after `warmup` untimed pairs; each pair with the 1-minute load average
    read before it. The ratio is the median of A over the median of B (and the median of the pairs'
    own ratios beside it)."""
    for _ in range(warmup):
        a()
        b()
    rows = []
    for i in range(runs):
        load = os.getloadavg()[0]
        ta, tb = a(), b()
        rows.append({"a": round(ta, 4), "b": round(tb, 4), "load": round(load, 2)})
        log(f"  {label} pair {i + 1}/{runs}: {ta:.3f}s / {tb:.3f}s = {ta / tb:.2f}x (load {load:.2f})")
    ma, mb = median([r["a"] for r in rows]), median([r["b"] for r in rows])
    return {"a": round(ma, 4), "b": round(mb, 4), "ratio": round(ma / mb, 3),
            "pair_ratio": round(median([r["a"] / r["b"] for r in rows]), 3), "runs": rows}


class Dockerd:
    """A Docker engine for this bench only (recipe: Debian's docker.io, dockerd started by hand)."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="pc-bench-dockerd-", dir="/tmp"))
        self.host = f"unix://{self.base / 'docker.sock'}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        argv = ["dockerd", "--data-root", str(self.base / "data"), "--exec-root", str(self.base / "exec"),
                "-H", self.host, "--pidfile", str(self.base / "docker.pid"), "--iptables=false",
                "--ip6tables=false", "--bridge=none", "--ip-forward=false", "--ip-masq=false"]
        with open(self.base / "dockerd.log", "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "-H", self.host, "version"], capture_output=True).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start: {(self.base / 'dockerd.log').read_text()[-500:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(self.base))]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


def _engine_workspace(tmp: Path, engine: str) -> Path:
    ws = make_workspace(tmp, MODULE_PLAY, f"container-{engine}")
    text = (ws / "workspace.poly").read_text()
    (ws / "workspace.poly").write_text(text.replace("name: bench-orchestration\n",
                                                    f"name: bench-container-{engine}\nconfig:\n  engine: {engine}\n"))
    # the container's Python, not this venv's: the same setting for both runtimes
    (ws / "inventory.yml").write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                                      "      ansible_python_interpreter: \"{{ ansible_playbook_python }}\"\n")
    return ws


def bench_container(runs: int, log=print) -> list[dict]:
    """Container against --local, each engine this machine has."""
    out = []
    tmp = Path(tempfile.mkdtemp(prefix="polycrate-bench-container-"))
    dockerd = None
    try:
        for engine in ("podman", "docker"):
            if not shutil.which(engine) or (engine == "docker" and not shutil.which("dockerd")):
                out.append({"engine": engine, "skipped": f"{engine} is not installed"})
                continue
            env = clean_env(POLYCRATE_RUNTIME="")  # the workspace decides: the container, the default
            if engine == "docker":
                dockerd = Dockerd()
                dockerd.start()
                env["DOCKER_HOST"] = dockerd.host
            ws = _engine_workspace(tmp, engine)
            def container(env: dict = env, ws: Path = ws) -> float:
                return run([POLYCRATE, "workflows", "run", "three"], env=env, cwd=ws)

            def local(env: dict = env, ws: Path = ws) -> float:
                return run([POLYCRATE, "workflows", "run", "three", "--local"], env=env, cwd=ws)

            container()  # the image imported into a fresh engine: not timed
            result = pairs(container, local, runs, log=log, label=engine)
            out.append({"engine": engine, "target": TARGET_CONTAINER, **result})
            if dockerd is not None:
                dockerd.stop()
                dockerd = None
    finally:
        if dockerd is not None:
            dockerd.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def bench_local(runs: int, log=print) -> list[dict]:
    """--local against one ansible-playbook running the three playbooks: existing and held-out forms."""
    out = []
    tmp = Path(tempfile.mkdtemp(prefix="polycrate-bench-local-"))
    try:
        ws = make_workspace(tmp, MODULE_PLAY, "existing")
        block = ws / "blocks" / "trivial"
        plain = clean_env(ANSIBLE_INVENTORY=str(ws / "inventory.yml"), ANSIBLE_RETRY_FILES_ENABLED="false",
                          ANSIBLE_PIPELINING="True")
        ours = clean_env()
        result = pairs(lambda: run([POLYCRATE, "workflows", "run", "three", "--local"], env=ours, cwd=ws),
                       lambda: run([ANSIBLE_PLAYBOOK, *(f"{s}.yml" for s in STEPS)], env=plain, cwd=block),
                       runs, log=log, label="existing")
        out.append({"form": "existing", "target": TARGET_LOCAL, **result})

        ws = make_workspace(tmp, HELD_OUT_PLAY, "held-out")
        block = ws / "blocks" / "trivial"
        untuned = clean_env()
        result = pairs(lambda: run([POLYCRATE, "workflows", "run", "three", "--local"], env=ours, cwd=ws),
                       lambda: run([ANSIBLE_PLAYBOOK, "-i", str(ws / "inventory.yml"),
                                    *(f"{s}.yml" for s in STEPS)], env=untuned, cwd=block),
                       runs, log=log, label="held-out")
        out.append({"form": "held-out", "target": TARGET_LOCAL, **result})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def bench_cli(runs: int, log=print) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="polycrate-bench-cli30-"))
    try:
        ws = tmp / "acme-corp-automation"
        shutil.copytree(REPO / "examples" / "acme-corp-automation", ws, ignore=shutil.ignore_patterns(".polycrate"))
        env = clean_env()
        result = pairs(lambda: run([POLYCRATE, "workflows", "list"], env=env, cwd=ws),
                       lambda: run([ANSIBLE_PLAYBOOK, "--version"], env=env, cwd=ws), runs, warmup=2, log=log,
                       label="cli")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"target": TARGET_CLI, **result}


def bench(runs: int = 7, log=print, only: tuple[str, ...] = ("container", "local", "cli")) -> dict:
    data: dict = {"python": sys.version.split()[0]}
    if "cli" in only:
        data["cli"] = bench_cli(max(runs, 9), log)
    if "local" in only:
        data["local"] = bench_local(runs, log)
    if "container" in only:
        data["container"] = bench_container(runs, log)
    return data
