"""Timing helpers shared by the benchmarks: interleaved variants, medians, the machine."""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Callable

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
POLYCRATE = str(VENV_BIN / "polycrate")
ANSIBLE_PLAYBOOK = str(VENV_BIN / "ansible-playbook")


def run(cmd, *, env=None, cwd=None, check=True, timeout=1800, quiet=True, preexec_fn=None) -> float:
    """Wall seconds of one command (stdout/stderr discarded unless it fails)."""
    started = time.perf_counter()
    res = subprocess.run(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, timeout=timeout,
                         stdout=subprocess.PIPE if quiet else None, stderr=subprocess.STDOUT if quiet else None,
                         shell=isinstance(cmd, str), executable="/bin/bash" if isinstance(cmd, str) else None,
                         preexec_fn=preexec_fn)
    elapsed = time.perf_counter() - started
    if check and res.returncode != 0:
        out = (res.stdout or b"").decode(errors="replace")[-3000:]
        raise RuntimeError(f"benchmark command failed ({res.returncode}): {cmd}\n{out}")
    return elapsed


def interleave(variants: dict[str, Callable[[], float]], runs: int, warmup: int = 1,
               log: Callable[[str], None] = print) -> dict[str, list[float]]:
    """Run every variant `runs` times, round-robin (a load spike hits all of them alike), after
    `warmup` untimed rounds; returns the samples per variant."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    for i in range(runs):
        for name, fn in variants.items():
            samples[name].append(fn())
        log(f"  round {i + 1}/{runs}: " + ", ".join(f"{n} {samples[n][-1]:.3f}s" for n in variants))
    return samples


def median(values: list[float]) -> float:
    return statistics.median(values)


def summary(values: list[float]) -> dict:
    return {"median": round(median(values), 4), "min": round(min(values), 4), "max": round(max(values), 4),
            "runs": len(values)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def machine() -> dict:
    import ansible
    import polycrate

    try:
        os_name = next(line.split("=", 1)[1].strip('"') for line in Path("/etc/os-release").read_text().splitlines()
                       if line.startswith("PRETTY_NAME="))
    except (OSError, StopIteration):
        os_name = platform.platform()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _mem_total_gib(),
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "ansible_core": ansible.__version__ if hasattr(ansible, "__version__") else _ansible_version(),
        "polycrate": polycrate.__version__,
        "loadavg_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _ansible_version() -> str:
    from ansible.release import __version__

    return __version__


def compile_bytecode() -> None:
    """Write polycrate's .pyc files, as `pip install` does for ansible-core: an editable install run with
    PYTHONDONTWRITEBYTECODE would otherwise compile polycrate's modules at every start."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "src" / "polycrate")], check=False,
                   stdout=subprocess.DEVNULL)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment every variant of a benchmark gets (the same for polycrate and plain Ansible)."""
    env = dict(os.environ)
    for key in list(env):
        if key.startswith(("ANSIBLE_", "POLYCRATE_")):
            del env[key]
    env["POLYCRATE_RUNTIME"] = "local"  # measured against plain Ansible on this machine: the local runtime
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env
