"""Benchmark 4 (issue 29): the backup, the restore, the restore drill and the rollback of the
maintenance block, each against a bare baseline measured in the same round.

* Backup: `polycrate run linux-maintenance backup` (dump, archive with the manifest's per-table
  checksums, verification, upload to S3 on loopback, the remote check, retention) against
  `pg_dump > /dev/null` inside the db host, in pairs: each round's backup against its own pg_dump.
  Target: at most 1.5x.
* Restore: `polycrate run linux-maintenance restore --force`, which stops acme-app, restores, starts it and
  waits for its health check (the restart is in its time), against a bare `pg_restore -j 2` of the same dump
  (unpacked beforehand, untimed; dropdb and createdb included) plus a restart of acme-app.
* Drill: `polycrate run linux-maintenance restore-test`, next to the backup's time and against the bare
  `pg_restore -j 2`.
* Rollback: `polycrate run linux-maintenance update` with a broken acme-app release in the repository;
  timed from the moment the update's health check fails (its line in Ansible's log, which carries a
  timestamp) to the first 200 from acme-app on the old version (a watcher polls /health every 50 ms),
  with the data restored (a row written after the backup is gone, the broken release's migration
  too). Baseline: the bare restore plus the restart. Target: at most 1.3x.

The hosts: db01 and app01 of tests/fleet/nightly.py (real PostgreSQL in a Debian host on a free
loopback port, stopped with the host), moto S3 on loopback. A database of each size is generated
once and its PostgreSQL data folder kept (zstd) in the fleet cache; later runs unpack it (seconds).
The 1-minute load average is recorded before every timed command.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import statistics
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

BACKUP_TARGET = 1.5
ROLLBACK_TARGET = 1.3
SIZES_MB = (556, 2000)
RESULTS = Path(__file__).resolve().parent / "backup.json"
DUMP_DIR = "/var/tmp/bench-dump"  # on the db host: the bare baseline's dump, unpacked untimed
BROKEN = "9.9.0"  # the release the rollback bench publishes (its /health answers 500)

# ~realistic rows: names, addresses, statuses, JSON payloads, free text
SCHEMA = """
CREATE TABLE IF NOT EXISTS bench_customers (id bigint PRIMARY KEY, name text, email text, city text,
    street text, notes text, created timestamptz);
CREATE TABLE IF NOT EXISTS bench_orders (id bigint PRIMARY KEY, customer_id bigint, status text,
    amount numeric(12,2), payload jsonb, comment text, created timestamptz);
"""
CUSTOMERS = """
INSERT INTO bench_customers
SELECT g,
       (ARRAY['Anna','Ben','Clara','David','Eva','Felix','Greta','Hannes','Ida','Jonas'])[1 + g % 10] || ' ' ||
       (ARRAY['Schmidt','Meyer','Weber','Wagner','Becker','Hoffmann','Koch','Richter','Klein','Wolf'])[1 + (g / 10) % 10],
       'customer' || g || '@example.com',
       (ARRAY['Berlin','Hamburg','Munich','Cologne','Frankfurt','Stuttgart','Leipzig','Dresden'])[1 + g % 8],
       (g % 300) || ' ' || (ARRAY['Main Street','Station Road','Church Lane','Mill Way','Park Avenue'])[1 + g % 5],
       'Customer since ' || (2000 + g % 24) || '; prefers ' ||
       (ARRAY['email','phone','letter'])[1 + g % 3] || ' contact; ref ' || md5(g::text),
       now() - (g % 100000) * interval '1 minute'
FROM generate_series(1, 400000) g ON CONFLICT DO NOTHING;
"""
ORDERS = """
INSERT INTO bench_orders
SELECT g, 1 + g % 400000,
       (ARRAY['new','paid','shipped','delivered','returned'])[1 + g % 5],
       (g % 100000) / 100.0,
       jsonb_build_object('sku', 'SKU-' || (g % 5000), 'qty', 1 + g % 7, 'warehouse',
                          (ARRAY['north','south','east','west'])[1 + g % 4], 'tracking', md5((g * 7)::text)),
       'Order ' || g || ' for customer ' || (1 + g % 400000) || ': ' ||
       (ARRAY['deliver to the back door','call before delivery','gift wrap please','no remarks',
              'leave with the neighbour'])[1 + g % 5],
       now() - (g % 500000) * interval '1 minute'
FROM generate_series({start}, {end}) g;
"""


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


# --- the database of each size: generated once, its data folder cached ------------------------
def _pg_data(host) -> Path:
    found = sorted(host.root.glob("var/lib/postgresql/*/main"))
    if not found:
        raise RuntimeError(f"no PostgreSQL data folder under {host.root}/var/lib/postgresql")
    return found[-1]


def _pg_service(host, action: str) -> None:
    host.exec(["/etc/init.d/postgresql", action], check=True, timeout=300)


def _cache_file(host, size_mb: int) -> Path:
    from tests.fleet import debhost

    key = hashlib.sha256(json.dumps([SCHEMA, CUSTOMERS, ORDERS, size_mb, debhost._cache_key(debhost.PACKAGES),
                                     host.exec(["pg_dump", "--version"]).stdout]).encode()).hexdigest()[:16]
    return debhost.default_cache_dir() / f"bench-pgdata-{size_mb}mb-{key}.tar.zst"


def _generate(env, size_mb: int, log) -> None:
    """Rows until pg_database_size reaches size_mb (the last batch sized from the rows so far)."""
    env.psql(SCHEMA)
    env.psql(CUSTOMERS)
    start = int(env.psql("SELECT coalesce(max(id), 0) FROM bench_orders")) + 1
    target = size_mb * 10**6
    while True:
        size = int(env.psql("SELECT pg_database_size(current_database())"))
        log(f"  database size {size / 1e6:.0f} MB")
        if size >= target * 0.99:
            break
        rows = int(env.psql("SELECT count(*) FROM bench_orders")) or 1
        per_row = max(200, (size - 60 * 10**6) / rows) if rows > 1 else 260
        batch = int(min(500000, max(20000, (target - size) / per_row)))
        env.psql(ORDERS.format(start=start, end=start + batch - 1))
        start += batch
    env.psql("VACUUM ANALYZE")
    env.db.exec(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-c", "CHECKPOINT"], user="postgres",
                env={"PGPORT": str(env.db.pg_port)}, check=True)


def prepare_database(env, size_mb: int, log) -> tuple[int, str]:
    """The database of `size_mb` on db01: the cached data folder when there is one, else generated
    (and cached). Returns its size (pg_database_size) and where it came from."""
    import subprocess

    host = env.db
    cache = _cache_file(host, size_mb)
    data = _pg_data(host)
    if cache.exists():
        started = time.monotonic()
        _pg_service(host, "stop")
        shutil.rmtree(data)
        data.mkdir(mode=0o700)
        subprocess.run(f"zstd -dcq {cache} | tar -x --numeric-owner -C {data}", shell=True, check=True)
        _pg_service(host, "start")
        origin = f"cached data folder ({time.monotonic() - started:.0f} s to unpack)"
    else:
        started = time.monotonic()
        _generate(env, size_mb, log)
        origin = f"generated in {time.monotonic() - started:.0f} s"
        _pg_service(host, "stop")
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".partial")
        subprocess.run(f"tar -c --numeric-owner -C {data} . | zstd -q -1 -T2 -o {tmp}", shell=True, check=True)
        tmp.rename(cache)
        _pg_service(host, "start")
    for _ in range(100):  # the server accepts connections again
        if host.exec(["pg_isready", "-q", "-h", "localhost"]).returncode == 0:
            break
        time.sleep(0.1)
    return int(env.psql("SELECT pg_database_size(current_database())")), origin


# --- the timed commands --------------------------------------------------------------------------
class Host:
    """Timed commands on the two hosts."""

    def __init__(self, env):
        self.env, self.db, self.app = env, env.db, env.app
        self.pg = {"PGPASSWORD": self.db.pg_password, "PGPORT": str(self.db.pg_port)}

    def db_timed(self, cmd: str, user: str | None = None) -> float:
        started = time.perf_counter()
        res = self.db.exec(["bash", "-c", f"set -euo pipefail; {cmd}"], env=self.pg, timeout=3600, user=user)
        elapsed = time.perf_counter() - started
        if res.returncode != 0:
            raise RuntimeError(f"{cmd}: {res.stderr[-2000:]}")
        return elapsed

    def polycrate(self, *args: str, env: dict | None = None, expect: int = 0) -> tuple[float, str]:
        started = time.perf_counter()
        res = self.env.polycrate(*args, env=env, timeout=3600)
        elapsed = time.perf_counter() - started
        if res.returncode != expect:
            raise RuntimeError(f"polycrate {' '.join(args)} exited {res.returncode}: {res.stdout[-3000:]}{res.stderr[-2000:]}")
        return elapsed, res.stdout + res.stderr

    def health(self) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.app.health_url, timeout=2) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except OSError:
            return 0, ""

    def restart_app(self) -> float:
        """acme-app restarted on app01 until /health answers 200 (the baseline's service restart)."""
        started = time.perf_counter()
        self.app.exec(["service", "acme-app", "restart"], check=True)
        while self.health()[0] != 200:
            if time.perf_counter() - started > 120:
                raise RuntimeError("acme-app did not answer 200 within 120 s of its restart")
            time.sleep(0.05)
        return time.perf_counter() - started


def _phases(out: str) -> dict:
    m = re.search(r"seconds:\s+((?:\w+ [\d.]+(?:,\s+)?)+)", out)
    return {k: float(v) for k, v in re.findall(r"(\w+) ([\d.]+)", m.group(1))} if m else {}


def _drill_seconds(out: str) -> float | None:
    m = re.search(r"duration[^0-9]{0,20}([\d.]+) ?s", out)
    return float(m.group(1)) if m else None


def bench_backup(h: Host, rounds: int, log, warm_backup: bool = True, variants: Variants | None = None) -> dict:
    """Rounds of (pg_dump, backup) pairs; with `variants` (the block before and after a change), each
    round runs one pair per variant, the order alternating from round to round. Returns the result of
    the last variant (the block as it is) with the others under "variants"."""
    db = h.db
    dump = f"pg_dump -h localhost -U {db.pg_user} {db.pg_database}"
    names = variants.names if variants else [""]
    # untimed: the first read of freshly loaded pages and the first start of the action's Python
    h.db_timed(f"{dump} > /dev/null")
    if warm_backup:
        for name in names:
            if variants:
                variants.use(name)
            h.polycrate("run", "linux-maintenance", "backup")
    out: dict = {name: [] for name in names}
    for i in range(rounds):
        for name in (names if i % 2 == 0 else list(reversed(names))):
            if variants:
                variants.use(name)
            load_base = load1()
            base = h.db_timed(f"{dump} > /dev/null")
            load_ours = load1()
            ours, text = h.polycrate("run", "linux-maintenance", "backup")
            out[name].append({"pg_dump": round(base, 3), "backup": round(ours, 3), "ratio": round(ours / base, 3),
                              "load": [load_base, load_ours], "phases": _phases(text)})
            log(f"  backup round {i + 1}{' ' + name if name else ''}: pg_dump {base:.2f}s (load {load_base}), "
                f"backup {ours:.2f}s (load {load_ours}), {ours / base:.2f}x")
    summary = {name: _backup_summary(rows) for name, rows in out.items()}
    result = dict(summary[names[-1]])
    if variants:
        result["variants"] = summary
        result["order"] = "alternating: " + ", ".join(names) + " in odd rounds, reversed in even rounds"
    return result


def _backup_summary(out: list[dict]) -> dict:
    ratios = [r["ratio"] for r in out]
    return {"rounds": out, "ratio_median": round(median(ratios), 3), "target": BACKUP_TARGET,
            "met": median(ratios) <= BACKUP_TARGET,
            "pg_dump_median": round(median([r["pg_dump"] for r in out]), 3),
            "backup_median": round(median([r["backup"] for r in out]), 3)}


class Variants:
    """The block as of a git ref ("before") and as it is in this worktree ("after"), swapped into the
    bench workspace before each timed command, so that both are measured in the same run, on the same
    hosts and database, alternating."""

    def __init__(self, env, ref: str, tmp: Path):
        import subprocess

        from tests.fleet.nightly import BLOCK_DIR, EXAMPLE

        self.target = env.root / BLOCK_DIR
        repo = EXAMPLE.parent.parent
        block = (EXAMPLE / BLOCK_DIR).relative_to(repo)
        before = tmp / "block-before"
        before.mkdir()
        archive = subprocess.run(["git", "-C", str(repo), "archive", ref, str(block)], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(before), f"--strip-components={len(block.parts)}"],
                       input=archive.stdout, check=True)
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", ref], capture_output=True, text=True,
                                check=True).stdout.strip()
        after = tmp / "block-after"  # a copy: edits to the worktree during the run change nothing measured
        shutil.copytree(EXAMPLE / BLOCK_DIR, after)
        self.sources = {f"before ({ref} {commit})": before, "after": after}
        self.names = list(self.sources)
        self.current = ""

    def use(self, name: str) -> None:
        if name != self.current:
            shutil.rmtree(self.target)
            shutil.copytree(self.sources[name], self.target)
            self.current = name


def _unpack_dump(h: Host) -> str:
    """The latest archive's dump, unpacked on db01 for the bare baseline (untimed)."""
    h.db.exec(f"rm -rf {DUMP_DIR} && mkdir -p {DUMP_DIR} && tar -Iigzip -xf /var/backups/acme-db/latest.tar.gz -C {DUMP_DIR} "
              f"&& chown -R postgres {DUMP_DIR}", check=True, timeout=1800)
    return f"{DUMP_DIR}/{h.db.pg_database}.dump"


def bare_restore(h: Host, dump: str) -> float:
    name = h.db.pg_database
    return h.db_timed(f"dropdb --if-exists --force {name}; createdb -O {h.db.pg_user} {name}; "
                      f"pg_restore --exit-on-error -j 2 -d {name} {dump}", user="postgres")


class Watcher(threading.Thread):
    """acme-app's /health every 50 ms: (time.time(), status, version) at every change."""

    def __init__(self, h: Host):
        super().__init__(daemon=True)
        self.h, self.seen, self.stop = h, [], threading.Event()

    def run(self) -> None:
        last = None
        while not self.stop.is_set():
            status, body = self.h.health()
            try:
                version = json.loads(body).get("version", "") if body else ""
            except ValueError:
                version = ""
            if (status, version) != last:
                self.seen.append((time.time(), status, version))
                last = (status, version)
            self.stop.wait(0.05)


def rollback_once(h: Host, tmp: Path) -> dict:
    """One update that fails its health check and rolls back; see the module docstring."""
    env = h.env
    old = h.app.installed_version()
    env.psql("INSERT INTO bench_customers (id, name) VALUES (-1, 'written after the backup')")
    log_path = tmp / f"ansible-{time.time_ns()}.log"
    watcher = Watcher(h)
    watcher.start()
    try:
        # Ansible's log stamps every line; the zygote's forked steps cannot write it (its descriptor is
        # gone in the child: "Logging error ... Bad file descriptor" for every line), so this run starts
        # ansible-playbook plainly; the interval timed here (health check failed -> 200) is inside one
        # ansible-playbook either way
        _, out = h.polycrate("run", "linux-maintenance", "update", expect=1,
                             env={"ANSIBLE_LOG_PATH": str(log_path), "POLYCRATE_ZYGOTE": "0"})
    finally:
        watcher.stop.set()
        watcher.join()
    text = log_path.read_text() if log_path.exists() else ""
    # "2026-12-06 20:01:02,345 p=... | fatal: [app01...]: FAILED! ..." right after the health check's TASK line
    failed_at, task = None, None
    for m in re.finditer(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .*?\| (?:TASK \[(.+?)\].*|fatal: .*)$", text, re.M):
        if m.group(3) is not None:
            task = m.group(3)
            continue
        if task == "HTTP health-check on application":
            stamp = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
            failed_at = stamp
            break
    if failed_at is None:
        raise RuntimeError(f"no failing health check in Ansible's log {log_path}:\n{text[-3000:]}\n{out[-2000:]}")
    back = [t for t, status, version in watcher.seen if t >= failed_at and status == 200 and version == old]
    if not back:
        raise RuntimeError(f"acme-app never answered 200 on {old} after the rollback: {watcher.seen}\n{out[-3000:]}")
    if "acme-app healthy again: yes" not in out or f"database {h.db.pg_database} restored from" not in out:
        raise RuntimeError(f"the rollback did not report both outcomes: {out[-3000:]}")
    marker = env.psql("SELECT count(*) FROM bench_customers WHERE id = -1")
    migrated = env.psql(f"SELECT count(*) FROM schema_migrations WHERE version = '{BROKEN}'")
    if marker != "0" or migrated != "0" or h.app.installed_version() != old:
        raise RuntimeError(f"rollback incomplete: marker rows {marker}, {BROKEN} migrations {migrated}, "
                           f"installed {h.app.installed_version()} (was {old})")
    return {"seconds": round(back[0] - failed_at, 3), "old_version": old}


def bench_restore(h: Host, tmp: Path, rounds: int, log, variants: Variants | None = None) -> dict:
    """Rounds of (bare restore + restart, restore --force + restart, drill, rollback); with `variants`,
    one such set per variant in each round (order alternating), each against its own bare restore."""
    dump = _unpack_dump(h)
    h.app.publish(BROKEN, broken="health")
    names = variants.names if variants else [""]
    out: dict = {name: [] for name in names}
    try:
        for i in range(rounds):
            for name in (names if i % 2 == 0 else list(reversed(names))):
                if variants:
                    variants.use(name)
                # the update wants a fresh verified backup: the last one of the backup rounds (a restore or a
                # rollback does not change it; the rows written after it are what the restore takes away)
                r: dict = {"load": {}}
                r["load"]["bare"] = load1()
                r["bare_restore"] = round(bare_restore(h, dump), 3)
                r["bare_restart"] = round(h.restart_app(), 3)
                r["load"]["restore"] = load1()
                t, _ = h.polycrate("run", "linux-maintenance", "restore", "--force")
                r["restore"] = round(t, 3)
                r["restore_restart"] = 0.0  # the restore restarts acme-app itself (restore_stop_app) and checks it
                r["load"]["drill"] = load1()
                t, text = h.polycrate("run", "linux-maintenance", "restore-test")
                r["drill"] = round(t, 3)
                r["load"]["rollback"] = load1()
                rb = rollback_once(h, tmp)
                r["rollback"] = rb["seconds"]
                bare = r["bare_restore"] + r["bare_restart"]
                r["ratios"] = {"restore": round((r["restore"] + r["restore_restart"]) / bare, 3),
                               "drill": round(r["drill"] / r["bare_restore"], 3),
                               "rollback": round(r["rollback"] / bare, 3)}
                out[name].append(r)
                log(f"  restore round {i + 1}{' ' + name if name else ''}: bare pg_restore {r['bare_restore']:.2f}s + "
                    f"restart {r['bare_restart']:.2f}s (load {r['load']['bare']}); restore {r['restore']:.2f}s + restart "
                    f"{r['restore_restart']:.2f}s; drill {r['drill']:.2f}s; rollback {r['rollback']:.2f}s "
                    f"(load {r['load']['rollback']}); {r['ratios']}")
    finally:
        h.app.unpublish(BROKEN)
        h.db.exec(f"rm -rf {DUMP_DIR}")
    summary = {name: _restore_summary(rows) for name, rows in out.items()}
    result = dict(summary[names[-1]])
    if variants:
        result["variants"] = summary
    return result


def _restore_summary(out: list[dict]) -> dict:
    med = {k: round(median([r["ratios"][k] for r in out]), 3) for k in ("restore", "drill", "rollback")}
    return {"rounds": out, "ratio_median": med, "rollback_target": ROLLBACK_TARGET,
            "rollback_met": med["rollback"] <= ROLLBACK_TARGET,
            "medians": {k: round(median([r[k] for r in out]), 3)
                        for k in ("bare_restore", "bare_restart", "restore", "restore_restart", "drill", "rollback")}}


def bench(sizes: tuple[int, ...] = SIZES_MB, rounds: int = 3, restore_rounds: int = 2, log=print,
          before: str = "", backup_only: bool = False) -> dict:
    """Every size in `sizes` (MB, smallest first); merged into bench/backup.json by size."""
    from tests.fleet.nightly import NightlyEnv

    tmp = Path(tempfile.mkdtemp(prefix="polycrate-bench-backup-"))
    results: dict = {}
    # the debootstrap hosts (in RAM, /dev/shm), as every figure in bench/README.md was measured: the
    # systemd hosts' disks are podman's overlay on the disk, which would change what is compared
    env = NightlyEnv(tmp, hosts="sysv")
    try:
        env.set_config(keep_local=2, keep_remote=2)
        h = Host(env)
        variants = Variants(env, before, tmp) if before else None
        for size_mb in sorted(sizes):
            started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            log(f"== {size_mb} MB")
            db_bytes, origin = prepare_database(env, size_mb, log)
            log(f"  {db_bytes / 1e6:.0f} MB ({origin})")
            entry = {"database_bytes": db_bytes, "data": origin, "started": started,
                     "load_at_start": [round(x, 2) for x in os.getloadavg()],
                     "pg_version": env.db.exec(["pg_dump", "--version"]).stdout.strip()}
            # the warm-up backup only where it costs little: at 2 GB it is minutes on a busy machine, and
            # the untimed pg_dump before the rounds already reads the pages once
            if variants:
                entry["variants"] = variants.names
            entry["backup"] = bench_backup(h, rounds, log, warm_backup=size_mb < 1000, variants=variants)
            results = _save(size_mb, entry, partial=True)  # kept should the restore part fail
            if backup_only:
                continue
            entry["restore"] = bench_restore(h, tmp, restore_rounds, log, variants=variants)
            entry["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            results = _save(size_mb, entry)
    finally:
        env.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def _save(size_mb: int, entry: dict, partial: bool = False) -> dict:
    """Into bench/backup.json, read again first: another size may have been measured meanwhile."""
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.setdefault("sizes", {})
    results.setdefault("partial", {})
    if partial:
        results["partial"][str(size_mb)] = entry
    else:
        results["partial"].pop(str(size_mb), None)
        results["sizes"][str(size_mb)] = entry
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    return results


def _f(x: float) -> str:
    return f"{x:.2f}"


def render(results: dict) -> list[str]:
    """The README's section: every size, every round, with the load average."""
    out = ["## 4. Backup, restore, drill and rollback (issue 29)", "",
           "`python -m bench backup [--sizes 556,2000]` (bench/backup.py, results in bench/backup.json). Each round: "
           "`pg_dump > /dev/null` on db01, then `polycrate run linux-maintenance backup` (dump, archive with "
           "per-table checksums in the manifest, verification, upload to S3 on loopback, remote check, retention); "
           "the ratio is the round's own. Restore rounds: a bare `pg_restore -j 2` of the same dump (dropdb, "
           "createdb) plus an acme-app restart until /health answers 200; `restore --force` plus the same restart; "
           "the drill (`restore-test`); the rollback (a broken release fails the update's health check; timed from "
           "that failure, as Ansible's log stamps it, to acme-app's first 200 on the old version, with the data "
           "restored). Ansible reaches the hosts over SSH as it reaches a user's (polycrate's run-scoped "
           "connection sharing; until 2026-12-07 the test hosts turned it off, and every task paid a handshake). "
           "Load: the 1-minute load average before each command (2 cores, shared).", ""]
    # a size whose restore part did not finish (stopped, failed) shows its backup rounds
    sizes = {**{k: v for k, v in results.get("partial", {}).items() if k not in results.get("sizes", {})},
             **results.get("sizes", {})}
    if not sizes:
        return out + ["No results yet.", ""]
    out += ["| size | backup / pg_dump (median of rounds) | target ≤ 1.5x | restore+restart / bare | drill / bare "
            "pg_restore | rollback / bare restore+restart | target ≤ 1.3x | measured |",
            "|---|---|---|---|---|---|---|---|"]
    for key in sorted(sizes, key=int):
        s = sizes[key]
        b, r = s["backup"], s.get("restore")
        restore = (f"| {r['ratio_median']['restore']:.2f}x | {r['ratio_median']['drill']:.2f}x "
                   f"| {r['ratio_median']['rollback']:.2f}x | {'met' if r['rollback_met'] else 'not met'} ") if r else \
            "| not measured | | | "
        out.append(f"| {s['database_bytes'] / 1e6:.0f} MB | {b['ratio_median']:.2f}x | {'met' if b['met'] else 'not met'} "
                   + restore + f"| {s['started']} - {s.get('finished', '(restore part not finished)')} |")
    out.append("")
    for key in sorted(sizes, key=int):
        s = sizes[key]
        out += [f"### {s['database_bytes'] / 1e6:.0f} MB ({s['pg_version']}; data: {s['data']})", "",
                "| round | `pg_dump > /dev/null` (s) | load | backup (s) | load | ratio | dump+pack | check | upload "
                "| in the module |", "|---|---|---|---|---|---|---|---|---|---|"]
        for i, rd in enumerate(s["backup"]["rounds"], 1):
            p = rd.get("phases", {})
            out.append(f"| {i} | {_f(rd['pg_dump'])} | {rd['load'][0]} | {_f(rd['backup'])} | {rd['load'][1]} "
                       f"| {rd['ratio']:.2f}x | {p.get('dump_and_pack', '')} | {p.get('check', '')} "
                       f"| {p.get('upload', '')} | {p.get('total', '')} |")
        if "restore" not in s:
            out += ["", "Restore, drill and rollback: not measured at this size (see bench/NOTES.md).", ""]
            continue
        out += ["", "| round | bare pg_restore -j 2 | + restart | load | restore --force | + restart | load | drill "
                "| load | rollback | load | restore / bare | drill / bare | rollback / bare |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for i, rd in enumerate(s["restore"]["rounds"], 1):
            lo, ra = rd["load"], rd["ratios"]
            out.append(f"| {i} | {_f(rd['bare_restore'])} | {_f(rd['bare_restart'])} | {lo['bare']} | {_f(rd['restore'])} "
                       f"| {_f(rd['restore_restart'])} | {lo['restore']} | {_f(rd['drill'])} | {lo['drill']} "
                       f"| {_f(rd['rollback'])} | {lo['rollback']} | {ra['restore']:.2f}x | {ra['drill']:.2f}x "
                       f"| {ra['rollback']:.2f}x |")
        b = s["backup"]
        out += ["", f"Drill next to the backup: backup median {_f(b['backup_median'])} s, drill median "
                f"{_f(s['restore']['medians']['drill'])} s.", ""]
    for key in sorted(sizes, key=int):
        out += _render_variants(sizes[key])
    return out


def _render_variants(s: dict) -> list[str]:
    """Before and after a change, measured in the same run (bench --before REF), alternating."""
    bv = s["backup"].get("variants")
    if not bv:
        return []
    rv = (s.get("restore") or {}).get("variants", {})
    out = [f"### {s['database_bytes'] / 1e6:.0f} MB, before and after in the same run ({s['started']})", "",
           f"{s['backup'].get('order', '')}; each ratio against the baseline measured just before it.", "",
           "| block | backup / pg_dump (rounds) | median | restore+restart / bare (rounds) | drill / bare pg_restore "
           "| rollback / bare restore+restart | median rollback |", "|---|---|---|---|---|---|---|"]
    for name, b in bv.items():
        r = rv.get(name)
        rounds = ", ".join(f"{x['ratio']:.2f}x (load {x['load'][1]})" for x in b["rounds"])
        if r:
            rest = (" | " + ", ".join(f"{x['ratios']['restore']:.2f}x" for x in r["rounds"])
                    + " | " + ", ".join(f"{x['ratios']['drill']:.2f}x" for x in r["rounds"])
                    + " | " + ", ".join(f"{x['ratios']['rollback']:.2f}x (load {x['load']['rollback']})"
                                        for x in r["rounds"])
                    + f" | {r['ratio_median']['rollback']:.2f}x |")
        else:
            rest = " | not measured | | | |"
        out.append(f"| {name} | {rounds} | {b['ratio_median']:.2f}x" + rest)
    out.append("")
    for name, r in rv.items():
        out += [f"Seconds, {name}:", "", "| round | bare pg_restore | + restart | load | restore --force | + restart "
                "| drill | rollback | load |", "|---|---|---|---|---|---|---|---|---|"]
        for i, rd in enumerate(r["rounds"], 1):
            out.append(f"| {i} | {_f(rd['bare_restore'])} | {_f(rd['bare_restart'])} | {rd['load']['bare']} "
                       f"| {_f(rd['restore'])} | {_f(rd['restore_restart'])} | {_f(rd['drill'])} | {_f(rd['rollback'])} "
                       f"| {rd['load']['rollback']} |")
        out.append("")
    return out
