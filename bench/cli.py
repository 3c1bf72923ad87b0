"""Benchmark 1: CLI response. `polycrate workflows list` and `polycrate --help` on the example
workspace, against `ansible-playbook --version`. Target: at most 0.3x."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bench.common import ANSIBLE_PLAYBOOK, POLYCRATE, REPO, clean_env, interleave, median, run, summary

TARGET = 0.3


def bench(runs: int = 15, log=print) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="polycrate-bench-cli-"))
    try:
        ws = tmp / "acme-corp-automation"
        shutil.copytree(REPO / "examples" / "acme-corp-automation", ws,
                        ignore=shutil.ignore_patterns(".polycrate"))
        env = clean_env()
        variants = {
            "polycrate workflows list": lambda: run([POLYCRATE, "workflows", "list"], env=env, cwd=ws),
            "polycrate --help": lambda: run([POLYCRATE, "--help"], env=env, cwd=ws),
            "ansible-playbook --version": lambda: run([ANSIBLE_PLAYBOOK, "--version"], env=env, cwd=ws),
        }
        samples = interleave(variants, runs, warmup=2, log=log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = median(samples["ansible-playbook --version"])
    rows = []
    for name in ("polycrate workflows list", "polycrate --help"):
        ratio = median(samples[name]) / base
        rows.append({"name": name, **summary(samples[name]), "ratio": round(ratio, 3), "target": TARGET,
                     "met": ratio <= TARGET})
    return {"baseline": {"name": "ansible-playbook --version", **summary(samples["ansible-playbook --version"])},
            "rows": rows}
