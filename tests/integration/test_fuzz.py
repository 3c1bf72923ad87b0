"""Fuzz (issue 14): generated broken workspaces thrown at the loader and the commands.

Zero tracebacks, zero hangs (a generous timeout guards each call), and a refused input (exit 2)
is one line on stderr and changes nothing in the workspace. Most calls run in-process through
``polycrate.cli.main(argv)`` with lowered size limits (the same code paths at a fraction of the
CPU); a subprocess sample runs real-size inputs against the real limits. The counts are printed.

POLYCRATE_FUZZ_INPUTS (default 1000) and POLYCRATE_FUZZ_SEED (default: fixed) change the run.
"""
from __future__ import annotations

import collections
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from polycrate.config import yamlfile
from polycrate.errors import PolycrateError
from polycrate.config.workspace import load_workspace
from tests.integration.fuzz_workspaces import (
    BASE,
    COMMANDS,
    SMALL_LIMITS,
    Case,
    _dump,
    generate,
    run_inprocess,
    tree_digest,
)

INPUTS = int(os.environ.get("POLYCRATE_FUZZ_INPUTS", "1000"))
SEED = int(os.environ.get("POLYCRATE_FUZZ_SEED", "14000"))
TIMEOUT = 60.0  # per in-process call; the slowest refused input takes well under a second
SUBPROCESS_TIMEOUT = 300.0  # a real-size input makes PyYAML read up to the limits: seconds, more on a loaded machine
COMMANDS_PER_INPUT = 1  # plus the loader itself, called directly for every input


def _problems(outcome, argv, before: str, root: Path) -> list[str]:
    found = []
    if outcome.hung:
        found.append("hang")
    elif outcome.traceback:
        found.append(f"traceback: {outcome.escaped!r} {outcome.stderr[-600:]}")
    elif outcome.code == 2:
        lines = [line for line in outcome.stderr.splitlines() if line.strip()]
        if argv[-2:] == ["workspace", "validate"] or argv[-1:] == ["validate"]:
            # the preflight reports every finding, one line each (an error at least)
            if not lines or not all(line.startswith(("polycrate: error:", "polycrate: warning:")) for line in lines) \
                    or not any(line.startswith("polycrate: error:") for line in lines):
                found.append(f"not one line per finding: {outcome.stderr[-600:]!r}")
        elif len(lines) != 1 or not lines[0].startswith("polycrate: error:"):
            found.append(f"not one error line: {outcome.stderr[-600:]!r}")
        if tree_digest(root) != before:
            found.append("a refused input changed the workspace")
    elif outcome.code not in (0, 1, 74):
        found.append(f"exit {outcome.code}: {outcome.stderr[-300:]!r}")
    return found


@pytest.fixture
def small_limits(monkeypatch):
    for name, value in SMALL_LIMITS.items():
        monkeypatch.setattr(yamlfile, name, value)


def test_fuzz_inprocess(tmp_path, small_limits, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WORKSPACE_ENCRYPTION_KEY", raising=False)
    rng = random.Random(SEED)
    codes: collections.Counter = collections.Counter()
    per_command: collections.Counter = collections.Counter()
    failures: list[str] = []
    tracebacks = hangs = calls = loader_calls = 0
    slowest = (0.0, "")
    started = time.monotonic()
    for i in range(INPUTS):
        case = generate(SEED + i)
        root = tmp_path / f"ws{i % 2}"
        if root.exists() or root.is_symlink():
            shutil.rmtree(root)
        root.mkdir()
        case.write(root)
        loader_calls += 1
        try:  # the loader, directly: a ConfigError is the only way it may refuse
            load_workspace(root)
        except PolycrateError:
            pass
        except BaseException as exc:
            tracebacks += 1
            failures.append(f"seed {case.seed} {case.classes}: load_workspace: {exc!r}")
        # every command gets its share; the others drawn at random
        picks = [COMMANDS[i % len(COMMANDS)]] + rng.sample(COMMANDS, COMMANDS_PER_INPUT - 1)
        for command in picks:
            argv = ["-w", str(root), *command]
            before = tree_digest(root)
            outcome = run_inprocess(argv, TIMEOUT)
            calls += 1
            per_command[" ".join(command)] += 1
            codes[outcome.code if not outcome.hung else "hang"] += 1
            tracebacks += outcome.traceback
            hangs += outcome.hung
            if outcome.seconds > slowest[0]:
                slowest = (outcome.seconds, f"seed {case.seed} {command} {case.classes}")
            for problem in _problems(outcome, argv, before, root):
                failures.append(f"seed {case.seed} {case.classes} {case.specials}: {' '.join(command)}: {problem}")
    elapsed = time.monotonic() - started
    with capsys.disabled():
        print(f"\nfuzz in-process: {INPUTS} inputs (seeds {SEED}..{SEED + INPUTS - 1}), {loader_calls} loader calls, "
              f"{calls} command calls over "
              f"{len(per_command)} commands, {tracebacks} tracebacks, {hangs} hangs, {len(failures)} failures, "
              f"{elapsed:.1f} s; exit codes {dict(sorted(codes.items(), key=str))}; slowest call "
              f"{slowest[0]:.2f} s ({slowest[1][:160]})")
    assert calls >= INPUTS
    assert set(per_command) == {" ".join(c) for c in COMMANDS}
    assert not failures, "\n".join(failures[:15])
    assert tracebacks == 0 and hangs == 0


# ---- real-size inputs in real processes, real limits


RUNS = (["workflows", "run", "nightly"], ["run", "app", "hello"])


def _real_size_cases() -> list[tuple[str, Case, tuple]]:
    base = {rel: _dump(data) for rel, data in BASE.items()}
    cases = []

    def text_case(name: str, rel: str, text: str) -> None:
        c = Case(0, {k: v.encode() for k, v in base.items()}, classes=[name])
        c.texts[rel] = text.encode("utf-8")
        # secrets.poly is read by runs only; the other files by every command
        # (`workflows list` needs no host: it may not read the inventory)
        if rel == "secrets.poly":
            commands = RUNS
        elif rel == "inventory.yml":
            commands = (["workspace", "validate"], RUNS[1])
        else:
            commands = (COMMANDS[len(cases) % 8], COMMANDS[(len(cases) + 3) % 10])
        cases.append((name, c, commands))

    wp = base["workspace.poly"]
    text_case("25,000 keys", "workspace.poly", wp + "many:\n" + "".join(f"  k{i}: {i}\n" for i in range(25_000)))
    text_case("300,000-element list", "blocks/db/block.poly",
              base["blocks/db/block.poly"] + "x: [" + ",".join(["1"] * 300_000) + "]\n")
    text_case("5 MB comment", "blocks/app/block.poly", base["blocks/app/block.poly"] + "# " + "c" * 5_000_000 + "\n")
    text_case("1.5 MB value", "secrets.poly", "config:\n  cert: " + "x" * 1_500_000 + "\n")
    bomb = "a0: &a0 [" + ",".join(["lol"] * 10) + "]\n" + "".join(
        f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 10))
    text_case("alias bomb", "workspace.poly", wp + bomb)
    text_case("deep nesting", "workspace.poly", wp + "deep: " + "[" * 100_000 + "]" * 100_000 + "\n")
    text_case("5,000-digit integer", "workspace.poly", wp.replace("timeout: 30", "timeout: " + "9" * 5000))
    text_case("NUL", "inventory.yml", "all:\n  hosts:\n    a\x00b: {}\n")
    for kind, rel in (("fifo", "blocks/app/block.poly"), ("fifo", "workspace.poly"), ("devzero", "inventory.yml"),
                      ("folder", "secrets.poly"), ("file", ".polycrate")):
        c = Case(0, {k: v.encode() for k, v in base.items()}, [(rel, kind)], [f"{kind}@{rel}"])
        commands = RUNS if rel in ("secrets.poly", ".polycrate", "inventory.yml") \
            else (COMMANDS[len(cases) % 10], RUNS[0])
        cases.append((f"{kind} {rel}", c, commands))
    return cases


REAL_CASES = _real_size_cases()


def test_fuzz_real_sizes_in_subprocesses(tmp_path, capsys):
    env = {k: v for k, v in os.environ.items() if k not in ("WORKSPACE_ENCRYPTION_KEY", "POLYCRATE_WORKFLOW")}
    results, failures = [], []
    started = time.monotonic()
    for n, (name, case, commands) in enumerate(REAL_CASES):
        root = tmp_path / f"ws{n}"
        root.mkdir()
        case.write(root)
        for command in commands:
            before = tree_digest(root)
            t = time.monotonic()
            try:
                proc = subprocess.run([sys.executable, "-m", "polycrate", "-w", str(root), *command],
                                      capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, stdin=subprocess.DEVNULL,
                                      env=env, cwd=tmp_path)
            except subprocess.TimeoutExpired:
                failures.append(f"{name}: {' '.join(command)}: hang")
                continue
            seconds = time.monotonic() - t
            results.append((name, command, proc.returncode, seconds))
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            if proc.returncode != 2 or len(lines) != 1 or "Traceback" in proc.stderr:
                failures.append(f"{name}: {' '.join(command)}: exit {proc.returncode}: {proc.stderr[-500:]!r}")
            elif tree_digest(root) != before:
                failures.append(f"{name}: {' '.join(command)}: changed the workspace")
    with capsys.disabled():
        print(f"\nfuzz subprocesses: {len(REAL_CASES)} real-size inputs, {len(results)} calls, "
              f"{len(failures)} failures, {time.monotonic() - started:.1f} s; slowest "
              f"{max(r[3] for r in results):.2f} s ({max(results, key=lambda r: r[3])[0]})")
    assert not failures, "\n".join(failures)
