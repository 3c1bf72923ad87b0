"""`python -m bench team`: team mode's queue and workers against a real PostgreSQL (issue 25).

Two parts, each against a baseline measured in the same run:

1. Throughput: 200 one-step runs enqueued at once (200 workflows of one workspace: one run per workflow is
   enforced, a second launch of a queued workflow is refused), taken by 1 and then by 2 real `polycrate
   worker` processes (concurrency 1 each). Per run, from the database's own times: enqueue to the worker
   taking its job (procrastinate's `started` event), enqueue to the run's process holding its fence
   (team_runs.started: the run has started) and to its record opening (runs.started); p50 and p95; runs per
   minute from the first enqueue to the last end.
2. Added time of one run: `polycrate workflows run one --wait` with a backend and one idle worker against
   the same `polycrate workflows run one` run locally (no backend), in alternated pairs; the median of the
   pairs' differences against the target (<= 0.3 s), with the load average before each pair.

Results go to bench/team.json and a section of bench/README.md (written by `python -m bench`). The
PostgreSQL is Debian's, started here (initdb, pg_ctl on a free loopback port) and stopped by its PID.
"""
from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import POLYCRATE, REPO, clean_env

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "team.json"
TARGET_ADDED = 0.3  # seconds the team mode may add to one run (issue 25)


def load() -> float:
    return round(os.getloadavg()[0], 2)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q * 100) - 1]


def write_workspace(root: Path, workflows: int) -> None:
    root.mkdir(parents=True)
    lines = ["name: teambench", "blocks:", "  - name: b", "workflows:",
             "  - name: one", "    steps:", "      - {name: hello, block: b, action: hello}"]
    for i in range(workflows):
        lines += [f"  - name: w{i:03d}", "    steps:", "      - {name: hello, block: b, action: hello}"]
    (root / "workspace.poly").write_text("\n".join(lines) + "\n")
    (root / "blocks/b").mkdir(parents=True)
    (root / "blocks/b/block.poly").write_text("name: b\nactions:\n  - name: hello\n    script:\n"
                                              "      - echo hello\n")
    (root / "inventory.yml").write_text("all:\n  hosts:\n    localhost: {}\n")
    (root / ".gitignore").write_text(".polycrate/\nartifacts/\n")
    for argv in (["init", "-q"], ["add", "-A"],
                 ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "commit", "-q", "-m", "bench"]):
        subprocess.run(["git", *argv], cwd=root, check=True, capture_output=True)


class Cluster:
    """One PostgreSQL for the bench (tests/postgres_server.py's: the tests' own), a database per part."""

    def __init__(self, base: Path):
        sys.path.insert(0, str(REPO))
        from tests.postgres_server import start_postgres

        self.server = start_postgres(base / "cluster")

    def database(self, name: str) -> str:
        from polycrate.history.postgres import migrate

        subprocess.run([str(self.server.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.server.port), "-U",
                        "postgres", "-v", "ON_ERROR_STOP=1", "-c", f"CREATE DATABASE {name} OWNER polycrate"],
                       check=True, capture_output=True)
        dsn = f"postgresql://polycrate@127.0.0.1:{self.server.port}/{name}"
        migrate(dsn)
        return dsn

    def stop(self) -> None:
        self.server.stop()


def sql(dsn: str, query: str, *args: Any) -> list[dict[str, Any]]:
    from polycrate.history.postgres import connect

    db = connect(dsn)
    try:
        return list(db.execute(query, args).fetchall())
    finally:
        db.close()


def team_env(dsn: str, host_config: Path) -> dict[str, str]:
    return clean_env(POLYCRATE_BACKEND=dsn, POLYCRATE_CONFIG=str(host_config))


def start_workers(dsn: str, count: int, env: dict[str, str], logs: Path, tag: str) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(count):
        out = open(logs / f"worker-{tag}-{i}.log", "wb")
        procs.append(subprocess.Popen([POLYCRATE, "worker", "--name", f"{tag}-{i}", "--heartbeat", "2",
                                       "--lost-after", "60"], env=env, cwd=logs, stdin=subprocess.DEVNULL,
                                      stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        out.close()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if sql(dsn, "SELECT count(*) AS n FROM team_workers WHERE stopped IS NULL")[0]["n"] >= count:
            return procs
        time.sleep(0.2)
    stop_workers(procs)
    raise RuntimeError(f"{count} workers did not register within 120 s (see {logs})")


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def throughput(cluster: Cluster, ws: Path, workers: int, runs: int, tmp: Path) -> dict[str, Any]:
    """``runs`` one-step runs enqueued at once, taken by ``workers`` workers; figures from the database."""
    from polycrate.team.launch import Launch, checked_commit, enqueue

    dsn = cluster.database(f"bench_{workers}w")
    env = team_env(dsn, tmp / "host-config.yml")
    procs = start_workers(dsn, workers, env, tmp, f"w{workers}")
    load_before = load()
    commit = checked_commit(ws)
    try:
        began = time.time()
        for i in range(runs):
            enqueue(dsn, Launch(workspace="teambench", root=ws, workflow=f"w{i:03d}", queue="default",
                                git_commit=commit, launched_by="bench"))
        enqueued = time.time() - began
        deadline = time.monotonic() + 3600
        while sql(dsn, "SELECT count(*) AS n FROM team_runs WHERE state <> 'done'")[0]["n"]:
            if time.monotonic() > deadline:
                raise RuntimeError("the runs did not end within an hour")
            time.sleep(0.5)
    finally:
        load_after = load()
        stop_workers(procs)
    rows = sql(dsn, """
        SELECT t.id, t.worker, t.launched, t.started AS fenced, r.started AS opened, r.ended, r.status,
               (SELECT EXTRACT(EPOCH FROM e.at) FROM procrastinate_events e
                 WHERE e.job_id = t.job_id AND e.type = 'started' ORDER BY e.at LIMIT 1) AS taken
          FROM team_runs t JOIN runs r ON r.workspace = t.workspace AND r.id = t.id""")
    if len(rows) != runs or any(r["status"] != "succeeded" for r in rows):
        bad = [(r["id"], r["status"]) for r in rows if r["status"] != "succeeded"][:5]
        raise RuntimeError(f"{len(rows)} of {runs} runs recorded; not succeeded: {bad}")

    def spread(values: list[float]) -> dict[str, float]:
        return {"p50": round(quantile(values, 0.5), 3), "p95": round(quantile(values, 0.95), 3)}

    first, last = min(r["launched"] for r in rows), max(r["ended"] for r in rows)
    per_run = [r["ended"] - r["opened"] for r in rows]
    by_worker: dict[str, int] = {}
    for r in rows:
        by_worker[r["worker"]] = by_worker.get(r["worker"], 0) + 1
    # what a worker spends per run between taking its job and the run's record: the run's own process
    spawn = [r["opened"] - float(r["taken"]) for r in rows]
    return {"workers": workers, "runs": runs, "enqueue_seconds": round(enqueued, 2),
            "enqueue_to_taken": spread([float(r["taken"]) - r["launched"] for r in rows]),
            "enqueue_to_start": spread([r["fenced"] - r["launched"] for r in rows]),
            "enqueue_to_record": spread([r["opened"] - r["launched"] for r in rows]),
            "taken_to_record": spread(spawn), "run_seconds": spread(per_run),
            "wall_seconds": round(last - first, 1), "runs_per_minute": round(runs / (last - first) * 60, 1),
            "runs_by_worker": by_worker, "load_before": load_before, "load_after": load_after}


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, timeout=600)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return elapsed


def added_time(cluster: Cluster, ws: Path, pairs: int, tmp: Path) -> dict[str, Any]:
    """One run through the queue (`--wait`, one idle worker) against the same run launched locally."""
    dsn = cluster.database("bench_added")
    env = team_env(dsn, tmp / "host-config.yml")
    local = clean_env(POLYCRATE_BACKEND="", POLYCRATE_CONFIG=str(tmp / "host-config.yml"))
    procs = start_workers(dsn, 1, env, tmp, "added")
    argv_team = [POLYCRATE, "workflows", "run", "one", "--wait"]
    argv_local = [POLYCRATE, "workflows", "run", "one"]
    rows = []
    try:
        for _ in range(2):  # warm-up: the page cache, the worker's connections
            timed(argv_team, env, ws)
            timed(argv_local, local, ws)
        for i in range(pairs):
            before = load()
            if i % 2 == 0:  # alternate which goes first: a load spike hits both sides alike
                team, here = timed(argv_team, env, ws), timed(argv_local, local, ws)
            else:
                here, team = timed(argv_local, local, ws), timed(argv_team, env, ws)
            rows.append({"team": round(team, 3), "local": round(here, 3), "added": round(team - here, 3),
                         "load": before})
            print(f"  pair {i + 1}/{pairs}: team {team:.3f}s, local {here:.3f}s, added {team - here:+.3f}s "
                  f"(load {before})", flush=True)
    finally:
        stop_workers(procs)
    parts = sql(dsn, """
        SELECT t.launched, t.started AS fenced, r.started AS opened, r.ended,
               (SELECT EXTRACT(EPOCH FROM e.at) FROM procrastinate_events e
                 WHERE e.job_id = t.job_id AND e.type = 'started' ORDER BY e.at LIMIT 1) AS taken
          FROM team_runs t JOIN runs r ON r.workspace = t.workspace AND r.id = t.id ORDER BY t.launched""")[2:]
    added = statistics.median(r["added"] for r in rows)
    return {"pairs": rows, "team_median": round(statistics.median(r["team"] for r in rows), 3),
            "local_median": round(statistics.median(r["local"] for r in rows), 3), "added_median": round(added, 3),
            "target": TARGET_ADDED, "met": added <= TARGET_ADDED,
            # where a queued run's time goes, medians over the measured team runs (the database's times)
            "parts": {"enqueue_to_taken": round(statistics.median(float(r["taken"]) - r["launched"] for r in parts), 3),
                      "taken_to_fence": round(statistics.median(r["fenced"] - float(r["taken"]) for r in parts), 3),
                      "fence_to_record": round(statistics.median(r["opened"] - r["fenced"] for r in parts), 3),
                      "record_to_end": round(statistics.median(r["ended"] - r["opened"] for r in parts), 3)}}


def bench(runs: int = 200, pairs: int = 9) -> dict[str, Any]:
    import importlib.util

    missing = [m for m in ("psycopg", "procrastinate") if importlib.util.find_spec(m) is None]
    if missing:  # `make bench` installs the demo's packages; team mode's come with `make setup-test`
        raise SystemExit(f"bench team: {', '.join(missing)} not installed: scripts/setup.sh --test (polycrate[team])")
    tmp = Path(tempfile.mkdtemp(prefix="polycrate-bench-team-"))
    os.chmod(tmp, 0o755)
    (tmp / "host-config.yml").write_text("# the bench's host configuration: the backend comes from the environment\n")
    ws = tmp / "ws"
    write_workspace(ws, runs)
    cluster = Cluster(tmp / "pg")
    try:
        data: dict[str, Any] = {"throughput": []}
        data["added"] = added_time(cluster, ws, pairs, tmp)
        for workers in (1, 2):
            print(f"  {runs} runs, {workers} worker(s)", flush=True)
            row = throughput(cluster, ws, workers, runs, tmp)
            print("  " + json.dumps(row), flush=True)
            data["throughput"].append(row)
        from procrastinate.worker import Worker

        defaults = Worker.__init__.__kwdefaults__ or {}
        data["procrastinate"] = {"listen_notify": defaults.get("listen_notify"),
                                 "fetch_job_polling_interval_polycrate": 2.0}
        return data
    finally:
        cluster.stop()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def render(t: dict[str, Any]) -> list[str]:
    out = ["## Team mode (issue 25)", "",
           f"`python -m bench team` (bench/team.py), measured {t.get('measured', '?')}. A real PostgreSQL (Debian's, "
           "on loopback) and real `polycrate worker` processes (concurrency 1 each); times from the database's "
           "own records. Load: the 1-minute load average.", ""]
    a = t.get("added")
    if a:
        out += ["One one-step run (`echo hello`): `workflows run one --wait` through the queue with one idle worker "
                "against the same `workflows run one` launched locally (no backend), alternated pairs "
                f"({len(a['pairs'])}), medians.", "",
                "| through the queue | local | added (median of pairs) | target | | load average of each pair |",
                "|---|---|---|---|---|---|",
                f"| {a['team_median']:.3f} s | {a['local_median']:.3f} s | {a['added_median']:+.3f} s | "
                f"≤ {a['target']} s | {'**met**' if a['met'] else '**not met**'} | "
                + " ".join(f"{p['load']:.1f}" for p in a["pairs"]) + " |", "",
                "Where a queued run's time goes (medians): enqueue to a worker taking its job "
                f"{a['parts']['enqueue_to_taken']:.3f} s, job taken to the run's process holding its fence "
                f"{a['parts']['taken_to_fence']:.3f} s, fence to the run's record "
                f"{a['parts']['fence_to_record']:.3f} s, record to its end {a['parts']['record_to_end']:.3f} s.", ""]
    rows = t.get("throughput", [])
    if rows:
        out += [f"{rows[0]['runs']} one-step runs of 200 workflows enqueued at once (one process, "
                "`team.launch.enqueue` each):", "",
                "| workers | enqueue to job taken p50 / p95 | enqueue to start p50 / p95 | enqueue to record p50 / p95 "
                "| job taken to record p50 | runs per minute | wall | runs by worker | load before / after |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            out.append(
                f"| {r['workers']} | {r['enqueue_to_taken']['p50']:.2f} / {r['enqueue_to_taken']['p95']:.2f} s "
                f"| {r['enqueue_to_start']['p50']:.2f} / {r['enqueue_to_start']['p95']:.2f} s "
                f"| {r['enqueue_to_record']['p50']:.2f} / {r['enqueue_to_record']['p95']:.2f} s "
                f"| {r['taken_to_record']['p50']:.3f} s | {r['runs_per_minute']:.1f} | {r['wall_seconds']:.0f} s "
                f"| {', '.join(f'{k} {v}' for k, v in sorted(r['runs_by_worker'].items()))} "
                f"| {r['load_before']:.1f} / {r['load_after']:.1f} |")
        out.append("")
    notes = t.get("notes")
    if notes:
        out += [*notes, ""]
    return out


def save(data: dict[str, Any]) -> None:
    """bench/team.json, keeping the notes written there by hand (what the figures mean)."""
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if "notes" in previous:
        data["notes"] = previous["notes"]
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")
