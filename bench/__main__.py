"""`python -m bench [cli] [orchestration] [fleet] [backup] [team] [--quick]`: run benchmarks, write bench/README.md.

Results of each benchmark are kept in bench/results.json, so running one benchmark updates its
section of the table and keeps the others' latest results.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench import common

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
README = HERE / "README.md"
ALL = ("cli", "orchestration", "fleet", "backup", "preflight", "targets", "team")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(ALL)} (default: all but team)")
    parser.add_argument("--quick", action="store_true", help="fewer runs (a look, not the table's numbers)")
    parser.add_argument("--no-readme", action="store_true", help="print results only")
    parser.add_argument("--sizes", default="556,2000",
                        help="backup: database sizes in MB, comma-separated (default 556,2000)")
    parser.add_argument("--restore-rounds", type=int, default=2,
                        help="backup: rounds of restore, drill and rollback per size (default 2)")
    parser.add_argument("--before", default="",
                        help="backup: also measure the block as of this git ref (e.g. main), alternating with the "
                             "block as it is, each against its own baseline")
    parser.add_argument("--backup-only", action="store_true",
                        help="backup: the backup rounds only (no restore, drill or rollback)")
    parser.add_argument("--baseline-python", metavar="PATH",
                        help="cli, orchestration: also run another checkout's polycrate (the bin/ of this python) in "
                        "the same rounds and report ours against it (e.g. ../before/.venv/bin/python)")
    args = parser.parse_args(argv)
    if args.baseline_python and not (Path(args.baseline_python).parent / "polycrate").exists():
        parser.error(f"--baseline-python: no polycrate beside {args.baseline_python}")
    # team mode's bench needs polycrate[team] (scripts/setup.sh --test): by name only
    names = args.names or [n for n in ALL if n != "team"]
    unknown = [n for n in names if n not in ALL]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}: choose from {', '.join(ALL)}")
    common.compile_bytecode()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["machine"] = common.machine()
    for name in names:
        print(f"== {name}", flush=True)
        started = time.monotonic()
        if name == "cli":
            from bench import cli

            data = cli.bench(runs=5 if args.quick else 15, baseline_python=args.baseline_python)
        elif name == "orchestration":
            from bench import orchestration

            data = orchestration.bench(runs=3 if args.quick else 10, baseline_python=args.baseline_python)
        elif name == "fleet":
            from bench import fleet

            data = fleet.bench(runs=1 if args.quick else 3, runs_large=1 if args.quick else 3)
        elif name == "targets":
            from bench import targets

            data = targets.bench(runs=3 if args.quick else 7)
        elif name == "preflight":
            from bench import preflight

            data = preflight.bench(runs=2 if args.quick else 5, runs_fleet=1)
        elif name == "team":
            from bench import team

            data = team.bench(runs=40 if args.quick else 200, pairs=3 if args.quick else 9)
        else:
            from bench import backup

            try:
                sizes = tuple(int(x) for x in args.sizes.split(",") if x.strip())
            except ValueError:
                parser.error(f"--sizes: a comma-separated list of sizes in MB, not {args.sizes!r}")
            data = backup.bench(sizes=sizes, rounds=1 if args.quick else 3,
                                restore_rounds=1 if args.quick else args.restore_rounds, before=args.before,
                                backup_only=args.backup_only)
        data["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        data["seconds"] = round(time.monotonic() - started, 1)
        data["machine"] = results["machine"]
        if name == "team":  # its own file (bench/team.json), beside the others' results.json
            from bench import team

            team.save(data)
        else:
            results[name] = data
            RESULTS.write_text(json.dumps(results, indent=1) + "\n")
        print(json.dumps(data, indent=1), flush=True)
    if not args.no_readme:
        README.write_text(render(results))
        print(f"wrote {README}")
    return 0


PHASES_SHOWN = ("dump_and_pack", "check", "upload", "upload_rest", "publish", "upload_sidecars", "remote_check",
                "remote_retention", "local_retention", "total")


def _s(x: float) -> str:
    return f"{x:.3f} s" if x < 10 else f"{x:.1f} s"


def _mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB"


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _loads(rows: list) -> str:
    return " ".join(f"{x['load']:.1f}" for x in rows)


def _render_targets(t: dict) -> list[str]:
    """Issue 30's targets: each pair of runs (A, then its baseline B) with the load average before it."""
    out = ["## Targets of issue 30", "",
           "Each figure against its baseline in the same run: A then B, in pairs, medians of the pairs "
           "(`python -m bench targets`, bench/targets.py). Load: the 1-minute load average before each pair, in order.",
           "", "| target | ours (median) | baseline (median) | ratio | median of pair ratios | target | | "
           "load average of each run |", "|---|---|---|---|---|---|---|---|"]
    for row in t.get("container", []):
        if "skipped" in row:
            out.append(f"| three-step module workflow in the container, {row['engine']} | skipped: {row['skipped']} "
                       "| | | | | | |")
            continue
        out.append(f"| three-step module workflow in the container, {row['engine']} | {_s(row['a'])} | {_s(row['b'])} "
                   f"(the same with `--local`) | {row['ratio']:.2f}x | {row['pair_ratio']:.2f}x | ≤ {row['target']}x | "
                   f"{_met(row['ratio'] <= row['target'])} | {_loads(row['runs'])} |")
    for row in t.get("local", []):
        base = ("one `ansible-playbook`, 3 playbooks, polycrate's settings" if row["form"] == "existing"
                else "one `ansible-playbook -i inventory.yml`, 3 playbooks, nothing tuned")
        out.append(f"| three-step module workflow `--local`, {row['form']} form | {_s(row['a'])} | {_s(row['b'])} "
                   f"({base}) | {row['ratio']:.2f}x | {row['pair_ratio']:.2f}x | ≤ {row['target']}x | "
                   f"{_met(row['ratio'] <= row['target'])} | {_loads(row['runs'])} |")
    if "cli" in t:
        c = t["cli"]
        out.append(f"| `polycrate workflows list` | {_s(c['a'])} | {_s(c['b'])} (`ansible-playbook --version`) | "
                   f"{c['ratio']:.2f}x | {c['pair_ratio']:.2f}x | ≤ {c['target']}x | {_met(c['ratio'] <= c['target'])} "
                   f"| {_loads(c['runs'])} |")
    parts = t.get("parts_measured", {})
    if parts:
        out += ["", "Measured: " + ", ".join(f"{k} {v}" for k, v in parts.items()) + "."]
    out += ["", *TARGET_NOTES]
    return out + [""]


# Where the time goes, measured in the session of the figures above (2026-12-06, load 10-16 on 2 shared cores).
TARGET_NOTES = [
    "What changed: a container run starts one container for the whole run, whose main process is a zygote "
    "(runtime/run_container.py); the preflight's Ansible half and every step fork from it (warm where the "
    "Ansible configuration matches) instead of one `podman run` and a cold `ansible-playbook` per step. The "
    "zygote now also loads every connection plugin while warming up: `PlaybookExecutor.run` loads them all "
    "before the first play, and each warm step paid WinRM's imports and the plugins' documentation YAML again "
    "(0.69 s of a profiled 4.8 s step, 0.05 s after). `--version` reads the package metadata only when asked "
    "(importlib.metadata with email, zipfile and csv were a third of `workflows list`'s start-up).",
    "",
    "Two runs of this benchmark on 2026-12-06 (the table shows the second): the first at load 10-16 "
    "(container parts 16:58-17:05 UTC, before `--log-driver none`): podman 1.27x (not met), Docker 1.15x; "
    "`--local` 0.93x existing form, 1.02x held-out; `workflows list` 0.28x (pair median 0.23x). The second "
    "at load 5-10 (17:17-17:24 UTC): the table. The `--local` figures sit at the target (1.10x existing "
    "form by the medians, 1.07x by the pairs) and move by +-0.15x between runs on this shared machine.",
    "",
    "Where the container's time goes (what a container run adds to a local one), measured at load 11 on "
    "this machine: `podman run -d` 0.80-1.07 s (0.45-0.74 s with `--log-driver none`) before the container's "
    "zygote can connect (the preflight waits for it; a local run prespawns its zygote when the CLI starts, "
    "before the workspace is read, so that start overlaps the reading), `podman rm -f --time 0` 0.39-0.61 s "
    "at the end (the run waits until the container is gone), `podman image inspect` 0.22 s while the run is "
    "prepared. The steps themselves take what they take locally (a warm fork each). Docker's daemon answers "
    "the same calls faster. Not done: starting the container before the workspace's runtime is decided, or "
    "removing it after polycrate exits (both would change what a run guarantees).",
    "",
    "Rows 4 (issue 29), 2026-12-07 09:54-10:02 UTC, quiet (load 1.2-1.9): the block at 99ee836, whose "
    "restore, rollback and drill stream the dump from the archive into pg_restore (bench/NOTES.md, issue "
    "29, part five). The rollback target is met in every round: 1.23x, 1.23x (551 MB), 1.06x, 1.11x (2 GB); "
    "the run before (09:41-09:53, f97c3c7) gave 1.29x, 1.23x, 1.06x, 1.11x. The backup target is not: "
    "2.18x, 2.21x, 2.03x (551 MB), 1.64x, 1.73x, 1.83x (2 GB). This VM ran faster than the day before "
    "(`pg_dump` of 2 GB 10.0-10.1 s, against 10.2-18.8 s), so the tool's fixed costs weigh more in each ratio.",
]


def render(r: dict) -> str:
    m = r.get("machine", {})
    out = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench`); numbers from `bench/results.json`. Every benchmark",
        "measures its baseline in the same run, interleaving the variants round-robin (a load spike hits",
        "all of them alike), and reports the median of several runs. Nothing here is part of the test suite.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in (
            ("CPU", m.get("cpu")), ("cores", m.get("cores")), ("memory", f"{m.get('memory_gib')} GiB"),
            ("OS", m.get("os")), ("kernel", m.get("kernel")), ("Python", m.get("python")),
            ("ansible-core", m.get("ansible_core")), ("polycrate", m.get("polycrate")),
            ("load average at start", m.get("loadavg_at_start")))) + ".",
        "The machine is shared (2 cores, other work running): absolute times move between runs, the",
        "ratios much less.",
        "",
        "## Summary",
        "",
        "| benchmark | ours (median) | baseline (median) | ratio | target | |",
        "|---|---|---|---|---|---|",
    ]
    if "cli" in r:
        c = r["cli"]
        for row in c["rows"]:
            out.append(f"| 1. CLI: `{row['name']}` | {_s(row['median'])} | {_s(c['baseline']['median'])} "
                       f"(`ansible-playbook --version`) | {row['ratio']:.2f}x | ≤ {row['target']}x | {_met(row['met'])} |")
    if "orchestration" in r:
        o = r["orchestration"]
        row = next(x for x in o["rows"] if x["name"] == "polycrate workflows run")
        out.append(f"| 2. three-step workflow, trivial local plays | {_s(row['median'])} | {_s(o['baseline']['median'])} "
                   f"(bash chain of 3 `ansible-playbook`) | {row['ratio']:.2f}x | ≤ {row['target']}x | {_met(row['met'])} |")
        if "modules" in o:
            m = o["modules"]
            row = next(x for x in m["rows"] if x["name"] == "polycrate workflows run")
            chain = next(x for x in m["rows"] if x["name"].startswith("bash chain"))
            out.append(f"| 2. three-step workflow, plays that run modules | {_s(row['median'])} | "
                       f"{_s(m['baseline']['median'])} (one `ansible-playbook`, 3 playbooks) | {row['ratio']:.2f}x | "
                       f"≤ {row['target']}x | {_met(row['met'])} |")
            out.append(f"| 2. the same against the bash chain | {_s(row['median'])} | {_s(chain['median'])} "
                       f"(bash chain of 3 `ansible-playbook`) | {row['ratio_chain']:.2f}x | | |")
    if "fleet" in r:
        from bench import fleet

        f = r["fleet"]
        for size in f["sizes"]:
            ours, base = size["variants"][fleet.OURS], size["variants"][fleet.BASELINE]
            out.append(f"| 3. nightly workflow (stand-in plays), {size['hosts']} SSH hosts, forks {size['forks']} "
                       f"| {_s(ours['median'])} | {_s(base['median'])} (bash chain, pipelining + ControlPersist) "
                       f"| {size['ratio']:.2f}x | ≤ {f['target']}x | {_met(size['met'])} |")
    if "backup" in r and "sizes" in r["backup"] and isinstance(r["backup"]["sizes"], dict):
        every = {**r["backup"].get("partial", {}), **r["backup"]["sizes"]}
        for key in sorted(every, key=int):
            size = every[key]
            b, rs = size["backup"], size.get("restore")
            out.append(f"| 4. backup action ({_mb(size['database_bytes'])} database, upload and checks included) "
                       f"| {_s(b['backup_median'])} | {_s(b['pg_dump_median'])} (`pg_dump > /dev/null`) "
                       f"| {b['ratio_median']:.2f}x | ≤ {b['target']}x | {_met(b['met'])} |")
            if rs is None:
                continue
            bare = rs["medians"]["bare_restore"] + rs["medians"]["bare_restart"]
            out.append(f"| 4. rollback to 200 on the old version, data restored ({_mb(size['database_bytes'])}) "
                       f"| {_s(rs['medians']['rollback'])} | {_s(bare)} (bare `pg_restore -j 2` + restart) "
                       f"| {rs['ratio_median']['rollback']:.2f}x | ≤ {rs['rollback_target']}x | {_met(rs['rollback_met'])} |")
    out.append("")
    if "targets" in r:
        out += _render_targets(r["targets"])

    if "cli" in r:
        c = r["cli"]
        out += ["## 1. CLI response", "",
                "`polycrate workflows list` and `polycrate --help` in a copy of examples/acme-corp-automation,",
                "against `ansible-playbook --version` (same venv). "
                f"{c['baseline']['runs']} runs each after 2 warm-up rounds; measured {c['measured']}.", "",
                "| command | median | min | max | ratio |", "|---|---|---|---|---|"]
        for row in [c["baseline"], *c["rows"]]:
            out.append(f"| `{row['name']}` | {_s(row['median'])} | {_s(row['min'])} | {_s(row['max'])} "
                       f"| {row.get('ratio', 1.0):.2f}x |")
        out += ["", "What made it: the engine, the runtime and their imports (subprocess, threading, ctypes) are",
                "no longer imported by commands that do not run anything; libc is loaded on first use without",
                "`ctypes.util.find_library` (which runs `ldconfig`); polycrate's bytecode is compiled (the bench",
                "runs `compileall` first, as `pip install` does for ansible-core; with PYTHONDONTWRITEBYTECODE",
                "an editable install recompiles every module at every start).", ""]
    if "orchestration" in r:
        o = r["orchestration"]
        out += ["## 2. Orchestration overhead", "",
                "A workflow of three steps, each a play with one `debug` task on localhost (local connection),",
                "against the same three playbooks run by plain `ansible-playbook` with the same inventory and",
                f"settings. {o['baseline']['runs']} interleaved runs; measured {o['measured']}.", "",
                "| variant | median | min | max | vs bash chain |", "|---|---|---|---|---|"]
        for row in o["rows"]:
            out.append(f"| {row['name']} | {_s(row['median'])} | {_s(row['min'])} | {_s(row['max'])} | {row['ratio']:.2f}x |")
        h = o["history"]
        out += ["", f"History kept: {'yes' if h['ok'] else 'NO'} (run {h.get('run')}: "
                + ", ".join(f"{n} {s}, ok={k}" for n, s, k in h.get("steps", [])) + ").", "",
                "What made it: the zygote (src/polycrate/runtime/zygote.py). A workflow run with two or more",
                "ansible steps starts one warm process that imports ansible-core and loads the plugins' modules",
                "and configuration definitions once; each step is a child forked from it, with its own session,",
                "environment, working directory, output pipe, lock descriptor and PR_SET_PDEATHSIG, so the",
                "engine streams, times out, interrupts and records it exactly like a plain process. When the",
                "inputs of ansible's import-time configuration differ from the zygote's (ANSIBLE_*/PYTHON*",
                "variables, locale, the ansible.cfg that applies), the child execs a fresh process instead.",
                "`POLYCRATE_ZYGOTE=0` turns it off (the \"zygote off\" row). `workflows run` starts the zygote",
                "before it reads the workspace (it imports what no step's configuration affects meanwhile); the",
                "preflight before step 1 is its first child (with the steps' environment, so it forks warm); the",
                "steps of one block folder share an AnsiballZ cache (as the playbooks of one `ansible-playbook`",
                "do); the zygote warms only what a local or SSH play loads, is gc-frozen, and ends without",
                "interpreter teardown; the run store syncs once per step (the step's end) instead of four times.",
                ""]
        if "modules" in o:
            m = o["modules"]
            out += ["Plays that run modules (issue 19): the same workflow, each play running `command: \"true\"` and",
                    "`debug` over the local connection, against one `ansible-playbook` process running the three",
                    f"playbooks (the floor) and the bash chain. {m['baseline']['runs']} interleaved runs.", "",
                    "| variant | median | min | max | vs one process | vs bash chain |", "|---|---|---|---|---|---|"]
            for row in m["rows"]:
                out.append(f"| {row['name']} | {_s(row['median'])} | {_s(row['min'])} | {_s(row['max'])} "
                           f"| {row['ratio']:.2f}x | {row['ratio_chain']:.2f}x |")
            h = m["history"]
            out += ["", f"History kept: {'yes' if h['ok'] else 'NO'} (run {h.get('run')}: "
                    + ", ".join(f"{n} {s}, ok={k}" for n, s, k in h.get("steps", [])) + "); step durations as "
                    "`runs show` records them: " + ", ".join(f"{n} {d:.3f} s" for n, d in m.get("step_durations", []))
                    + ".", ""]
    if "fleet" in r:
        from bench import fleet

        out += fleet.render(r["fleet"])
    if "backup" in r and isinstance(r["backup"].get("sizes"), dict):
        from bench import backup

        out += backup.render(r["backup"])
    if "preflight" in r:
        from bench import preflight

        out += preflight.render(r["preflight"])
    team_results = HERE / "team.json"
    if team_results.exists():
        from bench import team

        out += team.render(json.loads(team_results.read_text()))
    notes = HERE / "NOTES.md"
    if notes.exists():
        out += [notes.read_text().rstrip(), ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
