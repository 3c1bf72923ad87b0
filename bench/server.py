"""`python -m bench.server [--quick]`: `polycrate serve` over 10 workspaces with 10,000 runs each.

Measures, against a real `polycrate serve` on loopback (HTTP, bearer token), the latency of the
overview page, `GET /api/v1/runs` (all workspaces, and filtered by status) and `GET /api/v1/overview`:
median and p95 over N requests each, interleaved. Next to them, the same listing through the CLI:
`polycrate runs list -o json` for one workspace, and for all ten one after the other. Then the
store queries the server makes, with and without the indexes `polycrate serve` added, on copies of
one store. Results go to bench/server.json and bench/SERVER.md.

The stores are written directly with the run store's schema (10,000 runs with two steps each per
workspace): the point is the reading side at scale, and 100,000 real runs would take hours.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKSPACES = 10
RUNS = 10_000

WORKSPACE = """name: {name}
blocks:
  - name: sh
workflows:
  - name: nightly-maintenance
    schedule: "*-*-* 02:00:00"
    steps:
      - {{name: backup, block: sh, action: ok}}
      - {{name: verify, block: sh, action: ok}}
  - name: hourly-check
    schedule: "*-*-* *:15:00"
    steps:
      - {{name: check, block: sh, action: ok}}
  - name: deploy
    steps:
      - {{name: deploy, block: sh, action: ok}}
"""
BLOCK = """name: sh
version: 1.0.0
actions:
  - name: ok
    script: ["true"]
"""


def make_store(root: Path, seed: int) -> None:
    from polycrate.history import SQLiteRunStore

    store = SQLiteRunStore(root)  # the schema (and indexes) exactly as the store writes them
    rng = random.Random(seed)
    now = time.time()
    runs, steps = [], []
    names = ["nightly-maintenance"] * 3 + ["hourly-check"] * 6 + ["deploy"]
    for i in range(RUNS):
        started = now - (RUNS - i) * 3600 + rng.random() * 60
        duration = rng.uniform(20, 900)
        status = rng.choices(["succeeded", "failed", "interrupted"], [85, 12, 3])[0]
        run_id = time.strftime("%Y%m%d-%H%M%S", time.localtime(started)) + f"-{rng.getrandbits(24):06x}"
        name = rng.choice(names)
        runs.append((run_id, "workflow", name, name, None, None, None, "root", socket.gethostname(), 1000 + i,
                     f"workflow-{name}", started, started + duration, status, 0 if status == "succeeded" else 1,
                     0, 0, None, "verify" if status == "failed" else None, None, None, None, "[]"))
        for pos, step in enumerate(("backup", "verify"), 1):
            steps.append((run_id, pos, step, "sh", "ok", "main",
                          "failed" if status == "failed" and pos == 2 else "succeeded", 0, 1,
                          started, started + duration / 2, duration / 2))
    with store.db:
        store.db.execute("BEGIN")
        store.db.executemany(
            "INSERT INTO runs (id, kind, name, workflow, block, action, only_step, user, host, pid, lock_key, started,"
            " ended, status, exit_code, check_mode, diff_mode, resumed_from, failed_step, failed_task, failed_host,"
            " message, notices) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", runs)
        store.db.executemany(
            "INSERT INTO steps (run_id, position, name, block, action, phase, status, exit_code, attempts, started,"
            " ended, duration) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", steps)
    store.db.execute("ANALYZE")
    store.close()


def make_workspaces(base: Path) -> list[Path]:
    roots = []
    for i in range(WORKSPACES):
        root = base / f"site{i:02d}"
        (root / "blocks" / "sh").mkdir(parents=True)
        (root / "workspace.poly").write_text(WORKSPACE.format(name=f"site{i:02d}"))
        (root / "blocks" / "sh" / "block.poly").write_text(BLOCK)
        (root / "inventory.yml").write_text("all:\n  hosts:\n    localhost: {}\n")
        make_store(root, i)
        roots.append(root)
    return roots


def stats(samples: list[float]) -> dict:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"median": round(statistics.median(ordered), 6), "p95": round(p95, 6), "n": len(ordered)}


def serve(base: Path, roots: list[Path]) -> tuple[subprocess.Popen, str, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = base / "state"
    token = subprocess.run([sys.executable, "-m", "polycrate", "server", "token", "add", "bench", "--role", "viewer",
                            "--state", str(state)], capture_output=True, text=True, check=True).stdout.split()[-1]
    argv = [sys.executable, "-m", "polycrate", "serve", "--listen", f"127.0.0.1:{port}", "--state", str(state)]
    for root in roots:
        argv += ["-w", str(root)]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"http://127.0.0.1:{port}", token
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("polycrate serve did not start")


def http_bench(url: str, token: str, requests: int) -> dict:
    import httpx

    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    targets = {"overview page (/)": "/", "GET /api/v1/runs": "/api/v1/runs",
               "GET /api/v1/runs?status=failed": "/api/v1/runs?status=failed",
               "GET /api/v1/overview": "/api/v1/overview"}
    samples: dict[str, list[float]] = {name: [] for name in targets}
    for path in targets.values():  # warm: the workspaces load once, then stay cached
        assert client.get(path).status_code == 200
    for _ in range(requests):
        for name, path in targets.items():
            started = time.perf_counter()
            r = client.get(path)
            samples[name].append(time.perf_counter() - started)
            assert r.status_code == 200, (path, r.status_code)
    check = client.get("/api/v1/runs").json()["runs"]
    assert len(check) == 50 and len({r["workspace"] for r in client.get("/api/v1/runs?limit=1000").json()["runs"]}) == WORKSPACES
    return {name: stats(values) for name, values in samples.items()}


def cli_bench(roots: list[Path], runs: int) -> dict:
    def once(root_list):
        started = time.perf_counter()
        for root in root_list:
            subprocess.run([sys.executable, "-m", "polycrate", "-w", str(root), "runs", "list", "-o", "json",
                            "--limit", "50"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        return time.perf_counter() - started

    one, ten = [], []
    once(roots[:1])
    for _ in range(runs):
        one.append(once(roots[:1]))
        ten.append(once(roots))
    return {"runs list -o json (1 workspace)": stats(one), "runs list -o json (10 workspaces, one after the other)":
            stats(ten)}


QUERIES = {
    "newest 50 runs": ("SELECT * FROM runs ORDER BY started DESC, id DESC LIMIT 50", ()),
    "newest 50 failed": ("SELECT * FROM runs WHERE status = ? ORDER BY started DESC, id DESC LIMIT 50", ("failed",)),
    "running rows (reconcile)": ("SELECT * FROM runs WHERE status = ?", ("running",)),
    "last success of a workflow": ("SELECT MAX(ended) FROM runs WHERE kind = 'workflow' AND name = ? AND status = ?"
                                   " AND check_mode = 0", ("nightly-maintenance", "succeeded")),
}


def index_bench(root: Path, base: Path, runs: int) -> dict:
    """The server's store queries on one store, with the indexes and on a copy without them."""
    bare = base / "bare.db"
    shutil.copy(root / ".polycrate" / "runs.db", bare)
    db = sqlite3.connect(bare)
    for name in ("runs_by_started", "runs_by_status", "runs_by_outcome"):
        db.execute(f"DROP INDEX IF EXISTS {name}")
    db.commit()
    db.close()
    out = {}
    for label, path in (("with", root / ".polycrate" / "runs.db"), ("without", bare)):
        db = sqlite3.connect(path)
        for query, (sql, args) in QUERIES.items():
            samples = []
            for _ in range(runs):
                started = time.perf_counter()
                db.execute(sql, args).fetchall()
                samples.append(time.perf_counter() - started)
            out.setdefault(query, {})[label] = stats(samples)
        db.close()
    return out


def render(data: dict) -> str:
    lines = [
        "# `polycrate serve` at scale",
        "",
        f"Measured {data['measured']} by `python -m bench.server` on {data['machine']}: "
        f"{WORKSPACES} workspaces x {RUNS:,} runs (two steps each), a real `polycrate serve` on loopback, "
        f"{data['requests']} requests per target, interleaved, over one keep-alive connection.",
        "",
        "| what | median | p95 |",
        "| --- | --- | --- |",
    ]
    for name, s in {**data["http"], **data["cli"]}.items():
        lines.append(f"| {name} | {s['median'] * 1000:.1f} ms | {s['p95'] * 1000:.1f} ms |")
    api = data["http"]["GET /api/v1/runs"]["median"]
    ten = data["cli"]["runs list -o json (10 workspaces, one after the other)"]["median"]
    one = data["cli"]["runs list -o json (1 workspace)"]["median"]
    lines += [
        "",
        f"`GET /api/v1/runs` over all ten workspaces takes {api / one:.2f}x the time of one "
        f"`polycrate runs list -o json` of one workspace and {api / ten:.3f}x that of the same listing "
        "through the CLI for all ten (the CLI pays Python's start per call; the server is already running).",
        "",
        "Store queries on one store of 10,000 runs, with the indexes `polycrate serve` added "
        "(`runs_by_started`, `runs_by_status`, `runs_by_outcome`) and on a copy without them:",
        "",
        "| query | with indexes (median) | without (median) | ratio |",
        "| --- | --- | --- | --- |",
    ]
    for query, s in data["indexes"].items():
        w, wo = s["with"]["median"], s["without"]["median"]
        lines.append(f"| {query} | {w * 1e6:.0f} µs | {wo * 1e6:.0f} µs | {(wo / w if w else float('nan')):.1f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.server")
    parser.add_argument("--quick", action="store_true", help="fewer requests (a look, not the table's numbers)")
    args = parser.parse_args(argv)
    requests = 10 if args.quick else 40
    base = Path(tempfile.mkdtemp(prefix="polycrate-bench-serve-"))
    try:
        print(f"writing {WORKSPACES} stores of {RUNS:,} runs ...", flush=True)
        roots = make_workspaces(base)
        proc, url, token = serve(base, roots)
        try:
            http = http_bench(url, token, requests)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
        cli = cli_bench(roots, 5 if args.quick else 10)
        indexes = index_bench(roots[0], base, 50 if args.quick else 200)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    data = {"measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "requests": requests,
            "machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}", "http": http, "cli": cli,
            "indexes": indexes}
    (HERE / "server.json").write_text(json.dumps(data, indent=1) + "\n")
    (HERE / "SERVER.md").write_text(render(data))
    print(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
