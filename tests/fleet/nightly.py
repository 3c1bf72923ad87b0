"""The article's whole setting, for real: two isolated Debian hosts as in the article, an S3 server
on loopback, and a copy of the example workspace whose inventory points db01 and app01 at them.
Used by the e2e tests, the demo and the benchmarks.

* hosts "systemd" (the default): the article's hosts run systemd; these boot systemd as PID 1 in
  podman (tests/fleet/systemdhost.py) and run PostgreSQL and acme-app as systemd units, in the
  machine's network namespace with addresses and ports of their own on loopback (as the debootstrap
  hosts: they reach each other and the S3 server there). The block restarts acme-app with
  ansible.builtin.systemd there.
* hosts "sysv": the debootstrap hosts of tests/fleet/debhost (SysV init scripts, the machine's network
  namespace, roots in RAM): the block's ansible.builtin.service path.
* topology "two-hosts" (the default): db01 (`db_servers`) runs PostgreSQL and keeps the backups;
  app01 (`web_servers`) runs acme-app from its local apt repository, which reaches the database on
  db01 over TCP (``db.peer_address``), and has no PostgreSQL running.
* topology "single": one host runs all of it and both inventory names point at it.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from tests.fleet.debhost import DebHost
from tests.fleet.s3 import S3Server

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "acme-corp-automation"
BLOCK_DIR = "blocks/registry.acme-corp.com/acme/infra/linux-maintenance"
DB_HOST, APP_HOST = HOSTS = ("db01.acme-corp.com", "app01.acme-corp.com")
TOPOLOGIES = ("two-hosts", "single")
HOST_KINDS = ("systemd", "sysv")
ITEMS_SQL = "SELECT coalesce(string_agg(id || ':' || v, ',' ORDER BY id), '') FROM items"


class NightlyEnv:
    """``db``: the host with PostgreSQL and the backups; ``app``: the host with acme-app (the same
    host in the single topology)."""

    def __init__(self, workdir: Path | None = None, *, topology: str = "two-hosts", s3: S3Server | None = None,
                 hosts: str = "systemd"):
        if topology not in TOPOLOGIES:
            raise ValueError(f"topology must be one of {TOPOLOGIES}, not {topology!r}")
        if hosts not in HOST_KINDS:
            raise ValueError(f"hosts must be one of {HOST_KINDS}, not {hosts!r}")
        self.topology, self.hosts = topology, hosts
        self.tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="polycrate-nightly-"))
        self._own: list = []
        try:
            self.s3 = s3 or self._keep(S3Server())
            make = self._host_factory()
            if topology == "single":
                self.db = self.app = self._keep(make("acme", ("postgresql", "ssh", "acme-app"), None)).start()
            else:
                self.db = self._keep(make("db01", ("postgresql", "ssh"), None)).start()
                self.app = self._keep(make("app01", ("ssh", "acme-app"), self.db)).start()
            self.root = self.tmp / "acme-corp-automation"
            self.reset_workspace()
        except BaseException:
            self.stop()
            raise

    def _host_factory(self):
        """(name, services, database) -> an unstarted host of the kind asked for."""
        if self.hosts == "sysv":
            return lambda name, services, database: DebHost(name=name, services=services, database=database)
        from tests.fleet.systemdhost import SystemdHost

        return lambda name, services, database: SystemdHost(name, services=services, database=database)

    def _keep(self, thing):
        self._own.append(thing)
        return thing

    # --- the workspace ------------------------------------------------------------------
    def reset_workspace(self) -> None:
        """A fresh copy of the example; only what differs on this machine is overridden."""
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.copytree(EXAMPLE, self.root, ignore=shutil.ignore_patterns(".polycrate", "artifacts"))
        (self.root / "artifacts" / "secrets").mkdir(parents=True)
        inventory = yaml.safe_load((EXAMPLE / "inventory.yml").read_text())
        for name, host in ((DB_HOST, self.db), (APP_HOST, self.app)):
            hv = host.inventory_vars()
            hv["ansible_ssh_port"] = hv["ansible_port"]
            inventory["all"]["hosts"][name] = {k: hv[k] for k in hv if k.startswith("ansible_") or k == "pg_password"}
        (self.root / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
        overrides = {}
        if self.db.pg_port != 5432:
            overrides["db_port"] = self.db.pg_port
        if self.app.app_port != 8080:
            overrides["health_url"] = f"http://localhost:{self.app.app_port}/health"
        self.set_config(**overrides)
        # the article keeps the rclone remote in rclone.conf on the db host (the one that uploads)
        self.db.exec("mkdir -p /root/.config/rclone && cat > /root/.config/rclone/rclone.conf && chmod 600 "
                     "/root/.config/rclone/rclone.conf", input=self.s3.rclone_conf(), check=True)

    def set_config(self, **values) -> None:
        """Override block config in workspace.poly (appended under the block's config, as an admin would)."""
        if not values:
            return
        poly = self.root / "workspace.poly"
        text = poly.read_text()
        for key, value in values.items():
            line = f"      {key}: {yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}\n"
            pattern = re.compile(rf"^      {re.escape(key)}:.*\n", re.M)
            if pattern.search(text):
                text = pattern.sub(lambda m, line=line: line, text, count=1)
            else:  # a new key goes after the last key of the block's config (health_url in the article)
                last = list(re.finditer(r"^      health_url:.*\n", text, re.M))[-1]
                text = text[: last.end()] + line + text[last.end() :]
        poly.write_text(text)

    def polycrate(self, *args: str, env: dict | None = None, timeout: float = 2400) -> subprocess.CompletedProcess:
        full = dict(os.environ)
        full.update(env or {})
        return subprocess.run([sys.executable, "-m", "polycrate", *args], cwd=self.root, env=full,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    # --- a restore stopped half-way --------------------------------------------------------
    GATE = "/var/lib/postgresql/restore-gate"  # while it exists, a COPY into gated waits (its CHECK calls gate())

    @contextlib.contextmanager
    def gated_backup(self):
        """A backup whose table gated has a row and a CHECK that waits while GATE exists on the db host: a restore
        of it waits in pg_restore (its COPY into gated) until GATE is removed, so a test can stop it there, before
        the application is started again. Then a row written after the backup (items 8100): the old database has
        it, the restored one not. Yields the old database's items (id:v,...); leaves no gate, table or side
        database, the application started and a backup without gated."""
        self.psql("CREATE FUNCTION gate() RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN WHILE "
                  f"(pg_stat_file('{self.GATE}', true)).size IS NOT NULL LOOP PERFORM pg_sleep(0.1); END LOOP; "
                  "RETURN true; END $$")
        self.psql("CREATE TABLE gated (id int CHECK (gate()))")
        self.superuser_sql("INSERT INTO gated VALUES (1)", database=self.db.pg_database)  # gate() reads a file
        try:
            backup = self.polycrate("run", "linux-maintenance", "backup")
            assert backup.returncode == 0, backup.stdout[-2000:]
            self.psql("INSERT INTO items VALUES (8100, 'written after the backup')")
            self.db.exec(f"touch {self.GATE}", check=True)
            yield self.psql(ITEMS_SQL)
        finally:
            self.db.exec(f"rm -f {self.GATE}")
            self.app.exec(self.start_command())
            from tests.helpers import wait_for

            wait_for(lambda: not self.restore_module_running(), "the restore module gone from the db host")
            for side in filter(None, self.side_databases().split(",")):
                self.superuser_sql(f'DROP DATABASE "{side}" WITH (FORCE)')
            self.psql("DELETE FROM items WHERE id = 8100")
            self.psql("DROP TABLE IF EXISTS gated")
            self.psql("DROP FUNCTION IF EXISTS gate()")
            assert self.polycrate("run", "linux-maintenance", "backup").returncode == 0

    def start_command(self) -> str:
        """What starts acme-app on the app host (what a stopped restore's record tells the admin to run)."""
        return "systemctl start acme-app.service" if self.hosts == "systemd" else "/etc/init.d/acme-app start"

    def app_running(self) -> bool:
        if self.hosts == "systemd":
            return self.app.exec("systemctl is-active --quiet acme-app.service").returncode == 0
        return self.app.exec(["/etc/init.d/acme-app", "status"]).returncode == 0

    def stop_restore(self, sig: int, when, marker: str, action: tuple[str, ...] = ("restore", "--force"),
                     env: dict | None = None) -> tuple[str, dict]:
        """`polycrate run linux-maintenance restore --force` (or another `action`), stopped with `sig` (as Ctrl-C,
        the web view's Stop or a timeout stop it: sent to the polycrate process) once `when()` is true; its output
        and its record (runs show -o json)."""
        from tests.helpers import wait_for

        run = subprocess.Popen([sys.executable, "-m", "polycrate", "run", "linux-maintenance", *action],
                               cwd=self.root, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})
        try:
            wait_for(lambda: when() or run.poll() is not None, marker)
            assert run.poll() is None, run.communicate()[0][-3000:]
            run.send_signal(sig)
            out = run.communicate(timeout=300)[0]
        finally:
            if run.poll() is None:
                run.kill()
                run.communicate()
        assert run.returncode != 0, out[-3000:]
        run_id = re.search(r"run (\d{8}-\d{6}-[0-9a-f]+) interrupted", out)
        assert run_id, out[-3000:]
        return out, json.loads(self.polycrate("runs", "show", run_id.group(1), "-o", "json").stdout)

    def superuser_sql(self, sql: str, database: str = "postgres") -> str:
        """SQL as postgres on the db host (sees every session's query, and the side databases)."""
        res = self.db.exec(["runuser", "-u", "postgres", "--", "psql", "-X", "-tA", "-v", "ON_ERROR_STOP=1", "-p",
                            str(self.db.pg_port), "-d", database, "-c", sql])
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    def side_databases(self) -> str:
        """The restore's side databases on the db host, comma-separated ("" when none)."""
        return self.superuser_sql("SELECT string_agg(datname, ',') FROM pg_database "
                                  "WHERE datname LIKE 'acme\\_app\\_restoring\\_%'")

    def restore_module_running(self) -> bool:
        """A module of the block still runs on the db host (pipelined: python3 under the become shell, which its
        marker names; [S]: not the shell that runs pgrep)."""
        return self.db.exec("pgrep -f 'BECOME-SUCCES[S]'").returncode == 0

    # --- looking at the host ------------------------------------------------------------
    def psql(self, sql: str) -> str:
        """Run SQL in acme_app on the db host."""
        res = self.db.exec(["psql", "-h", "localhost", "-U", self.db.pg_user, "-d", self.db.pg_database,
                            "-v", "ON_ERROR_STOP=1", "-tA", "-c", sql],
                           env={"PGPASSWORD": self.db.pg_password, "PGPORT": str(self.db.pg_port)})
        if res.returncode != 0:
            raise AssertionError(f"psql failed: {res.stderr}")
        return res.stdout.strip()

    def health(self, path: str = "/health") -> tuple[int, str]:
        """acme-app's answer on the app host (/health, or /db: the database it uses)."""
        url = self.app.health_url.removesuffix("/health") + path
        res = self.app.exec(["curl", "-s", "-o", "/dev/stdout", "-w", "\n%{http_code}", url])
        body, _, code = res.stdout.rpartition("\n")
        return int(code or 0), body

    def apt_install(self, spec: str) -> None:
        """Install a package version on the app host, as an admin would (outside the workflow)."""
        self.app.exec(f"apt-get update -q && apt-get install -y -q --allow-downgrades {spec}", check=True, timeout=900)

    def remote_objects(self) -> dict[str, dict]:
        conf = self.tmp / "rclone.conf"
        conf.write_text(self.s3.rclone_conf())
        res = self.s3.rclone("lsjson", "--hash", "--files-only", "acme-s3:acme-backups-db/postgres/", conf=conf)
        if res.returncode != 0:
            return {}
        import json

        return {o["Name"]: o for o in json.loads(res.stdout)}

    def remote_head(self, name: str) -> dict:
        """An uploaded object as the S3 server describes it (HEAD through boto3): ETag, Metadata."""
        import boto3

        from tests.fleet import s3

        client = boto3.client("s3", endpoint_url=self.s3.endpoint, aws_access_key_id=s3.ACCESS_KEY,
                              aws_secret_access_key=s3.SECRET_KEY, region_name="us-east-1")
        return client.head_object(Bucket="acme-backups-db", Key=f"postgres/{name}")

    def s3_download(self, name: str, dest: Path) -> Path:
        conf = self.tmp / "rclone.conf"
        conf.write_text(self.s3.rclone_conf())
        res = self.s3.rclone("copyto", f"acme-s3:acme-backups-db/postgres/{name}", str(dest), conf=conf)
        assert res.returncode == 0, res.stderr
        return dest

    def stop(self) -> None:
        for thing in reversed(self._own):
            try:
                thing.stop()
            except Exception:
                pass
        self._own = []

    def __enter__(self) -> NightlyEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
