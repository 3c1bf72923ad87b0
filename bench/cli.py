"""Benchmark 1: CLI response. `polycrate workflows list` and `polycrate --help` on the example
workspace, against `ansible-playbook --version`. Target: at most 0.3x.

With a baseline checkout (`--baseline-python PATH`, the python of another checkout's venv), its
`polycrate` runs the same two commands in its own copy of the workspace, interleaved in the same
rounds: each of ours is also reported against it (medians, and the median of the rounds' ratios)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bench.common import ANSIBLE_PLAYBOOK, POLYCRATE, REPO, clean_env, interleave, median, run, summary

TARGET = 0.3
COMMANDS = {"polycrate workflows list": ["workflows", "list"], "polycrate --help": ["--help"]}


def bench(runs: int = 15, log=print, baseline_python: str | None = None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="polycrate-bench-cli-"))
    try:
        ws = tmp / "acme-corp-automation"
        shutil.copytree(REPO / "examples" / "acme-corp-automation", ws,
                        ignore=shutil.ignore_patterns(".polycrate"))
        env = clean_env()
        variants = {name: (lambda argv=argv: run([POLYCRATE, *argv], env=env, cwd=ws)) for name, argv in COMMANDS.items()}
        if baseline_python:
            before_ws = tmp / "before" / "acme-corp-automation"
            shutil.copytree(ws, before_ws)
            before = str(Path(baseline_python).parent / "polycrate")
            variants.update({f"before: {name}": (lambda argv=argv: run([before, *argv], env=env, cwd=before_ws))
                             for name, argv in COMMANDS.items()})
        variants["ansible-playbook --version"] = lambda: run([ANSIBLE_PLAYBOOK, "--version"], env=env, cwd=ws)
        samples = interleave(variants, runs, warmup=2, log=log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = median(samples["ansible-playbook --version"])
    rows = []
    for name in COMMANDS:
        ratio = median(samples[name]) / base
        rows.append({"name": name, **summary(samples[name]), "ratio": round(ratio, 3), "target": TARGET,
                     "met": ratio <= TARGET})
    data = {"baseline": {"name": "ansible-playbook --version", **summary(samples["ansible-playbook --version"])},
            "rows": rows}
    if baseline_python:
        data["before"] = against_before(samples, list(COMMANDS), base, baseline_python)
    return data


def against_before(samples: dict[str, list[float]], names: list[str], yardstick: float, python: str) -> dict:
    """Each of ours against the baseline checkout's same variant: both against the yardstick, and ours over
    theirs (medians, and the median of the rounds' ratios: a round runs both within seconds)."""
    rows = []
    for name in names:
        ours, theirs = samples[name], samples[f"before: {name}"]
        rows.append({"name": name, "before": summary(theirs), "ratio_before": round(median(theirs) / yardstick, 3),
                     "ratio_ours": round(median(ours) / yardstick, 3),
                     "ours_over_before": round(median(ours) / median(theirs), 3),
                     "ours_over_before_rounds": round(median([a / b for a, b in zip(ours, theirs, strict=True)]), 3)})
    return {"python": python, "rows": rows}
