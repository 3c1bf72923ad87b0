"""Benchmark 4: backup throughput. The maintenance block's `backup` action (dump, archive, checksum,
verification, upload to S3 and the remote check, retention, all included) on PostgreSQL databases of
about 500 MB and 2 GB, against `pg_dump` of the same database to /dev/null inside the host, and
against the article's pipeline (plain dump to a file, then tar.gz, then rclone copy to the same S3).
Target: at most 2.0x `pg_dump` alone, and peak extra disk during the backup no more than the
compressed archive. Also: restore time for the same backup (`restore --force`), and where the time
goes inside the action (the phases pg_archive.py reports).

Runs against db01 of the two test hosts and a moto S3 server on loopback (tests/fleet/nightly.py).
BENCH_DB_MB="500 2000" (the default) sets the sizes, smallest first (the database grows between them).
After each size's database is generated: a CHECKPOINT, then one untimed `pg_dump` and one untimed backup.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import interleave, median, summary

TARGET = 2.0
SIZES_MB = [int(x) for x in os.environ.get("BENCH_DB_MB", "500 2000").split()]  # smaller for a quick look
BACKUP_DIR = "var/backups/acme-db"
ARTICLE_DIR = "var/backups/article-pipeline"

# ~realistic rows: names, addresses, statuses, JSON payloads, free text; batches until the database
# reaches TARGET_MB (pg_database_size, indexes included)
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


def _dir_bytes(path: Path, seen: set | None = None) -> int:
    """Allocated bytes under path; a file with several names (hard links) counts once."""
    total = 0
    seen = set() if seen is None else seen
    try:
        for entry in os.scandir(path):
            try:
                if entry.is_dir(follow_symlinks=False):
                    total += _dir_bytes(Path(entry.path), seen)
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    if (st.st_dev, st.st_ino) not in seen:
                        seen.add((st.st_dev, st.st_ino))
                        total += st.st_blocks * 512
            except FileNotFoundError:
                continue
    except FileNotFoundError:
        pass
    return total


class DiskPoller:
    """Peak growth of a folder tree (allocated bytes) while a command runs, polled every 0.05 s."""

    def __init__(self, path: Path, interval: float = 0.05):
        self.path, self.interval = path, interval
        self.start = _dir_bytes(path)
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _dir_bytes(self.path))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _dir_bytes(self.path))

    @property
    def extra(self) -> int:
        return self.peak - self.start


def _shared_ssh_workspace(root: Path, dest: Path) -> Path:
    """A copy of the workspace whose inventory keeps Ansible's default SSH settings (ControlMaster=auto,
    ControlPersist=60s: one connection per host, reused by every task); the test fixture turns
    connection sharing off so that no ssh master outlives a test. The masters end with the host."""
    import yaml

    shutil.copytree(root, dest, ignore=shutil.ignore_patterns(".polycrate"))
    inventory = yaml.safe_load((dest / "inventory.yml").read_text())
    for hv in inventory["all"]["hosts"].values():
        hv.pop("ansible_ssh_args", None)
        args = [a for a in hv.get("ansible_ssh_common_args", "").split("-o") if a.strip()]
        hv["ansible_ssh_common_args"] = " ".join(f"-o {a.strip()}" for a in args
                                                 if not a.strip().startswith(("ControlMaster", "ControlPersist", "ControlPath")))
    (dest / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    return dest


def _generate(env, log, target_mb: int) -> int:
    env.psql(SCHEMA)
    env.psql(CUSTOMERS)
    start, batch = int(env.psql("SELECT coalesce(max(id), 0) FROM bench_orders")) + 1, 250000
    while True:
        size = int(env.psql("SELECT pg_database_size(current_database())"))
        log(f"  database size {size / 1e6:.0f} MB")
        if size >= target_mb * 10**6:
            break
        env.psql(ORDERS.format(start=start, end=start + batch - 1))
        start += batch
    env.psql("VACUUM ANALYZE")
    # the bulk load's dirty pages written now, not during the first timed round (as the superuser)
    env.db.exec(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-c", "CHECKPOINT"], user="postgres",
                env={"PGPORT": str(env.db.pg_port)}, check=True)
    return int(env.psql("SELECT pg_database_size(current_database())"))


def bench(runs: int = 3, restores: int = 2, log=print) -> dict:
    """The first size's figures at the top level (as before), every size under "sizes"."""
    from tests.fleet.nightly import NightlyEnv

    tmp = Path(tempfile.mkdtemp(prefix="polycrate-bench-backup-"))
    env = NightlyEnv(tmp)
    load_before = os.getloadavg()
    results = []
    try:
        # retention small: every run keeps ~150 MB archives locally (RAM-backed host) and in moto's memory
        env.set_config(keep_local=2, keep_remote=2)
        shared = _shared_ssh_workspace(env.root, tmp / "shared-ssh")
        structure = tmp / "verify-structure"  # the same workspace, backup_verify: structure
        shutil.copytree(env.root, structure, ignore=shutil.ignore_patterns(".polycrate"))
        poly = structure / "workspace.poly"
        poly.write_text(re.sub(r"^(      health_url:.*\n)", r"\1      backup_verify: structure\n", poly.read_text(),
                               count=1, flags=re.M))
        for i, target_mb in enumerate(SIZES_MB):
            # the larger sizes: fewer rounds, no ControlPersist or article rows (minutes each)
            results.append(_bench_size(env, shared, structure, target_mb, runs if i == 0 else max(1, runs - 1),
                                       restores if i == 0 else 1, full=i == 0, log=log))
    finally:
        env.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    first = dict(results[0])
    first["sizes"] = results
    first["load_average"] = {"before": [round(x, 2) for x in load_before],
                             "after": [round(x, 2) for x in os.getloadavg()]}
    return first


PHASES = ("dump_and_pack", "check", "publish", "upload_rest", "upload_sidecars", "remote_check",
          "remote_retention", "local_retention", "upload", "total")


def _bench_size(env, shared: Path, structure: Path, target_mb: int, runs: int, restores: int, full: bool, log) -> dict:
    host = env.db  # the database and its backups (two-host topology: db01)
    log(f"  generating the database ({target_mb} MB)")
    t0 = time.monotonic()
    db_size = _generate(env, log, target_mb)
    log(f"  {db_size / 1e6:.0f} MB in {time.monotonic() - t0:.0f}s")
    pg = {"PGPASSWORD": host.pg_password, "PGPORT": str(host.pg_port)}
    dump = f"pg_dump -h localhost -U {host.pg_user} {host.pg_database}"
    host.exec(f"mkdir -p /{ARTICLE_DIR} && chown postgres /{ARTICLE_DIR}", check=True)
    backup_root = host.root / BACKUP_DIR
    article_root = host.root / ARTICLE_DIR
    disk: dict[str, list[tuple[int, int]]] = {"ours": [], "article": []}
    ours_logs: list[str] = []
    loads: list[float] = []  # the 1-minute load average as each of our runs starts

    def exec_timed(cmd: str) -> float:
        started = time.perf_counter()
        res = host.exec(["bash", "-c", cmd], env=pg, timeout=1800)
        elapsed = time.perf_counter() - started
        if res.returncode != 0:
            raise RuntimeError(f"{cmd}: {res.stderr[-2000:]}")
        return elapsed

    def ours() -> float:
        loads.append(round(os.getloadavg()[0], 2))
        with DiskPoller(backup_root) as poll:
            started = time.perf_counter()
            res = env.polycrate("run", "linux-maintenance", "backup", timeout=1800)
            elapsed = time.perf_counter() - started
        if res.returncode != 0:
            raise RuntimeError(f"backup failed: {res.stdout[-3000:]}{res.stderr[-2000:]}")
        latest = (backup_root / "latest.tar.gz").resolve()
        # what the backup publishes: the archive and its two sidecars (.sha256, .manifest.json)
        published = sum(p.stat().st_blocks * 512 for p in (latest, Path(f"{latest}.sha256"),
                                                           Path(f"{latest}.manifest.json")))
        disk["ours"].append((poll.extra, latest.stat().st_blocks * 512, published))
        ours_logs.append(res.stdout)
        return elapsed

    def ours_in(workspace: Path) -> float:
        full = dict(os.environ)
        started = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "polycrate", "run", "linux-maintenance", "backup"], cwd=workspace,
                             env=full, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
        elapsed = time.perf_counter() - started
        if res.returncode != 0:
            raise RuntimeError(f"backup failed: {res.stdout[-3000:]}{res.stderr[-2000:]}")
        return elapsed

    def article() -> float:
        cmd = (f"set -euo pipefail; unset AWS_CA_BUNDLE; cd /{ARTICLE_DIR}; {dump} -F p -f acme_app.sql; "
               "tar -czf acme_app.tar.gz acme_app.sql; "
               "rclone copy acme_app.tar.gz acme-s3:acme-backups-db/article-pipeline/")
        with DiskPoller(article_root) as poll:
            elapsed = exec_timed(cmd)
        size = (article_root / "acme_app.tar.gz").stat().st_blocks * 512
        disk["article"].append((poll.extra, size, size))
        host.exec(f"rm -f /{ARTICLE_DIR}/acme_app.sql /{ARTICLE_DIR}/acme_app.tar.gz")
        return elapsed

    variants = {
        "pg_dump > /dev/null": lambda: exec_timed(f"{dump} > /dev/null"),
        "pg_dump -Fc -Z0 > /dev/null": lambda: exec_timed(f"{dump} -F c -Z 0 > /dev/null"),
        "polycrate run linux-maintenance backup": ours,
        "the same, backup_verify: structure": lambda: ours_in(structure),
    }
    if full:
        variants["the same, Ansible's default SSH settings (ControlPersist)"] = lambda: ours_in(shared)
        variants["article pipeline (dump file, tar.gz, rclone copy)"] = article
    # one untimed round of the baseline and of our backup: the first read of freshly loaded pages and
    # the first start of the action's Python (cold .pyc, page cache) belong to neither variant
    variants["pg_dump > /dev/null"]()
    ours_in(env.root)
    samples = interleave(variants, runs, warmup=0, log=log)
    restore_times = []
    for _ in range(restores):
        started = time.perf_counter()
        res = env.polycrate("run", "linux-maintenance", "restore", "--force", timeout=3600)
        restore_times.append(time.perf_counter() - started)
        if res.returncode != 0:
            raise RuntimeError(f"restore failed: {res.stdout[-3000:]}{res.stderr[-2000:]}")
        log(f"  restore {restore_times[-1]:.2f}s")
    rows_after = env.psql("SELECT (SELECT count(*) FROM bench_customers) + (SELECT count(*) FROM bench_orders)")
    pg_version = host.exec(["pg_dump", "--version"]).stdout.strip()
    # the phases pg_archive.py reports ("seconds: dump_and_pack 2.61, check 0.98, ...")
    timings = []
    for log_ in ours_logs:
        m = re.search(r"seconds:\s+((?:\w+ [\d.]+(?:,\s+)?)+)", log_)
        if m:
            timings.append({k: float(v) for k, v in re.findall(r"(\w+) ([\d.]+)", m.group(1))})

    base = median(samples["pg_dump > /dev/null"])
    ours_median = median(samples["polycrate run linux-maintenance backup"])
    ratio = ours_median / base
    peak_extra = max(e for e, _, _ in disk["ours"])
    archive = max(a for _, a, _ in disk["ours"])
    published = max(p for _, _, p in disk["ours"])
    rows = [{"name": name, **summary(values), "ratio": round(median(values) / base, 3)}
            for name, values in samples.items()]
    return {
        "database_bytes": db_size,
        "pg_dump_version": pg_version,
        "baseline": {"name": "pg_dump > /dev/null", **summary(samples["pg_dump > /dev/null"])},
        "rows": rows,
        "ratio": round(ratio, 3),
        "target": TARGET,
        "met_time": ratio <= TARGET,
        "disk": {
            "ours_peak_extra_bytes": peak_extra,
            "ours_archive_bytes": archive,
            "ours_published_bytes": published,
            "met_disk": peak_extra <= published,
            "article_peak_extra_bytes": max((e for e, _, _ in disk["article"]), default=0),
            "article_archive_bytes": max((a for _, a, _ in disk["article"]), default=0),
        },
        "inside_the_action": timings,
        "breakdown": {k: round(median([t[k] for t in timings if k in t]), 2) for k in PHASES
                      if any(k in t for t in timings)},
        "outside_the_action": round(ours_median - median([t["total"] for t in timings]), 2) if timings else None,
        "restore": {**summary(restore_times), "rows_after_restore": int(rows_after)},
        "load_at_our_runs": loads,
        "ratios_per_round": [round(o / b, 2) for o, b in zip(samples["polycrate run linux-maintenance backup"],
                                                              samples["pg_dump > /dev/null"], strict=False)],
        "compressor": (re.search(r"bytes; (igzip|zlib); seconds", ours_logs[-1]) or [None, ""])[1] if ours_logs else "",
    }
