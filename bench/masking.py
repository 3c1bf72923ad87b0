"""`python -m bench.masking`: the cost of secret masking per MB of output.

Kept apart from the other benchmarks (its own file, its own results in bench/masking.json).
One MB of Ansible-like output lines is masked line by line, as the engine does, with
several secret sets. The baseline, measured in the same run and interleaved: the cheapest
mask there is for one secret, ``str.replace`` on every line (C, one literal). The ratio says
what the automaton costs over that floor; the seconds per MB what a run pays.
"""
from __future__ import annotations

import json
import random
import string
import sys
import time
from pathlib import Path

from bench import common
from polycrate.secrets.masking import Masker

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "masking.json"
ALPHABET = string.ascii_letters + string.digits


def _token(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(ALPHABET, k=n))


def _output(rng: random.Random, secret: str, size: int = 1_000_000) -> list[str]:
    """About `size` characters of output lines, one line in 50 carrying the secret."""
    words = ["ok:", "changed:", "[host-01]", "TASK", "=>", "{\"msg\":", "apt", "pg_dump", "done", "skipping"]
    lines, total, i = [], 0, 0
    while total < size:
        line = " ".join(rng.choices(words, k=10)) + " " + _token(rng, 12)
        if i % 50 == 0:
            line += " token=" + secret[:200]  # long secrets appear in part in real output too
            if len(secret) <= 200:
                line += " end"
        lines.append(line + "\n")
        total += len(lines[-1])
        i += 1
    return lines


def bench(runs: int = 5) -> dict:
    rng = random.Random(5)
    cases = {
        "10 secrets of 32 chars": [_token(rng, 32) for _ in range(10)],
        "10,000 secrets of 8-40 chars": [_token(rng, rng.randint(8, 40)) for _ in range(10_000)],
        "one secret of 100 KB": [_token(rng, 100_000)],
    }
    rows = []
    for name, secrets in cases.items():
        lines = _output(rng, secrets[0])
        mb = sum(len(line) for line in lines) / 1e6
        started = time.perf_counter()
        masker = Masker(secrets)
        masker.mask("warm")  # builds the automaton
        build = time.perf_counter() - started
        first = secrets[0]

        def ours(lines: list[str] = lines, masker=masker) -> float:
            t = time.perf_counter()
            for line in lines:
                masker.mask(line)
            return time.perf_counter() - t

        def baseline(lines: list[str] = lines, first: str = first) -> float:
            t = time.perf_counter()
            for line in lines:
                line.replace(first, "********")
            return time.perf_counter() - t

        samples = common.interleave({"ours": ours, "baseline": baseline}, runs=runs, log=lambda _m: None)
        o, b = common.median(samples["ours"]), common.median(samples["baseline"])
        rows.append({"case": name, "secrets": len(secrets), "mb": round(mb, 2), "lines": len(lines),
                     "build_s": round(build, 4), "ours_s_per_mb": round(o / mb, 4),
                     "baseline_s_per_mb": round(b / mb, 4), "ratio": round(o / b, 2) if b else None})
    return {"runs": runs, "cases": rows}


def main(argv: list[str] | None = None) -> int:
    runs = 2 if "--quick" in (argv or sys.argv[1:]) else 5
    data = bench(runs)
    data["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    data["machine"] = common.machine()
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")
    print("| case | build | masking s/MB | baseline s/MB (`str.replace`, one secret) | ratio |")
    print("|---|---|---|---|---|")
    for r in data["cases"]:
        print(f"| {r['case']} | {r['build_s']:.3f} s | {r['ours_s_per_mb']:.3f} | {r['baseline_s_per_mb']:.4f} | {r['ratio']}x |")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
