"""End-to-end checks of the Debian test host harness (tests/fleet/debhost).

Boots real Debian bookworm hosts (debootstrap'd root, own PID/mount
namespace, chroot), reaches them with the real ssh client and Ansible, moves
acme-app through good, broken and downgraded versions from the host's local
apt repository, and checks that nothing is left behind.  Needs root and the
apt packages debootstrap, zstd (the first run builds the cached root, about
a minute; later runs unpack it in about a second).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]  # `python -c` in there imports tests.fleet

from tests.fleet.debhost import (  # noqa: E402 (REPO_ROOT first: the comment above says why)
    DebHost,
    DebHostError,
    find_mirror,
    processes_in_root,
)

pytestmark = pytest.mark.e2e

if os.geteuid() != 0:
    pytest.skip("the Debian test host needs root", allow_module_level=True)

ANSIBLE = Path(sys.executable).parent / "ansible"
if not ANSIBLE.exists():
    ANSIBLE = Path(shutil.which("ansible") or "ansible")


def _ssh_procs_to(host: DebHost) -> list[str]:
    """ssh client processes on the machine still using this host's client key."""
    out = subprocess.run(["ps", "-eo", "pid=,comm=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()
            if len(line.split()) > 2 and line.split()[1] == "ssh" and str(host.ssh_key_path) in line]


@pytest.fixture(scope="module")
def host():
    h = DebHost()
    h.start()
    try:
        yield h
    finally:
        root = h.root
        h.stop()
        assert not processes_in_root(root)


def _inventory(tmp_path: Path, *hosts: DebHost) -> Path:
    inv = {"all": {"hosts": {h.name: h.inventory_vars() for h in hosts}}}
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inv))
    return path


def _ansible(inventory: Path, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update({
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
        "ANSIBLE_CONFIG": str(tmp_path / "no-such-ansible.cfg"),
    })
    return subprocess.run([str(ANSIBLE), "all", "-i", str(inventory), *args],
                          capture_output=True, text=True, env=env, timeout=300)


def _health(host: DebHost) -> tuple[str, str]:
    """(HTTP status, body) of acme-app's /health, fetched with curl inside the host."""
    res = host.exec("curl -s -o /tmp/health.body -w '%%{http_code}' http://127.0.0.1:%d/health; "
                    "echo; cat /tmp/health.body" % host.app_port)
    code, _, body = res.stdout.partition("\n")
    return code.strip(), body


def _apt_install(host: DebHost, spec: str, *extra: str) -> subprocess.CompletedProcess:
    return host.exec("apt-get update -q && apt-get install -y -q %s %s" % (" ".join(extra), spec),
                     timeout=300)


# ---------------------------------------------------------------- basics

def test_ssh_with_real_client(host):
    res = subprocess.run(host.ssh_command("cat /etc/debian_version; hostname; id -un; sudo -n id -un"),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.split()
    assert lines[0].startswith("12."), res.stdout  # bookworm
    assert lines[1] == host.name
    assert lines[2] == "ubuntu"
    assert lines[3] == "root"
    # root login with the same key works too
    res = subprocess.run(host.ssh_command("id -u", user="root"), capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "0", res.stderr


def test_exec_runs_inside_the_host(host):
    res = host.exec("cat /etc/apt/sources.list.d/*; ls /etc/apt/sources.list 2>&1; hostname; echo $PGPORT")
    assert "deb [trusted=yes] file:/srv/repo ./" in res.stdout
    assert "No such file" in res.stdout  # no sources.list, only the local repo
    assert host.name in res.stdout
    assert str(host.pg_port) in res.stdout
    # PID 1 of the host is its own init, and it sees only its own processes
    res = host.exec(["cat", "/proc/1/comm"], check=True)
    assert res.stdout.strip() == "init"
    res = host.exec("ps -eo comm=", check=True)
    assert "sshd" in res.stdout and "postgres" in res.stdout
    assert "acme-app" in res.stdout
    assert "pytest" not in res.stdout  # the machine's processes are not visible
    assert len(res.stdout.split()) < 30
    with pytest.raises(DebHostError):
        host.exec("exit 3", check=True)
    # the tools the linux-maintenance playbooks use
    res = host.exec("rclone version && pg_dump --version && tar --version && gzip --version && "
                    "python3 -c 'import apt' && setfacl --version && sudo --version")
    assert res.returncode == 0, res.stdout + res.stderr


def test_ansible_ping_and_become(host, tmp_path):
    inv = _inventory(tmp_path, host)
    res = _ansible(inv, "-m", "ping", tmp_path=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert '"ping": "pong"' in res.stdout
    # become root, and become an unprivileged user (needs acl in the host)
    res = _ansible(inv, "-b", "-m", "command", "-a", "id -un", tmp_path=tmp_path)
    assert res.returncode == 0 and "root" in res.stdout, res.stdout + res.stderr
    res = _ansible(inv, "-b", "--become-user", "postgres", "-m", "command",
                   "-a", "pg_dump -h localhost -U acme acme_app", tmp_path=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "CREATE TABLE public.app_meta" in res.stdout
    # the ControlMaster=no / ControlPersist=no settings leave no ssh behind
    assert not _ssh_procs_to(host)


def test_ansible_service_and_apt_modules(host, tmp_path):
    inv = _inventory(tmp_path, host)
    res = _ansible(inv, "-b", "-m", "service", "-a", "name=acme-app state=restarted", tmp_path=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert _health(host)[0] == "200"
    res = _ansible(inv, "-b", "-m", "service_facts", tmp_path=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    facts = json.loads(res.stdout[res.stdout.index("{"):])["ansible_facts"]["services"]
    assert facts["acme-app"]["state"] == "running"
    assert facts["postgresql"]["state"] == "running"
    res = _ansible(inv, "-b", "-m", "apt", "-a", "update_cache=true", tmp_path=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr  # python3-apt works
    res = _ansible(inv, "-b", "-m", "apt", "-a", "name=acme-app state=present", tmp_path=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_postgres(host):
    res = host.exec("psql -h localhost -U acme -d acme_app -v ON_ERROR_STOP=1 -Atc "
                    "\"CREATE TABLE t_debhost (id int); INSERT INTO t_debhost VALUES (42); "
                    "SELECT id FROM t_debhost\"")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "42"
    res = host.exec("pg_dump -h localhost -U acme acme_app", user="postgres")
    assert res.returncode == 0, res.stderr
    assert "t_debhost" in res.stdout
    # peer auth over the host's own unix socket
    res = host.exec("psql -Atc 'select current_user'", user="postgres")
    assert res.stdout.strip() == "postgres", res.stderr


# ---------------------------------------------------------------- acme-app versions

def test_acme_app_upgrade_break_and_downgrade(host):
    assert host.installed_version() == "1.0.0"
    code, body = _health(host)
    assert code == "200" and json.loads(body) == {"status": "ok", "version": "1.0.0"}
    # the machine itself sees it too (shared network namespace)
    res = subprocess.run(["curl", "-s", host.health_url], capture_output=True, text=True, timeout=30)
    assert '"1.0.0"' in res.stdout

    # good upgrade
    host.publish("1.1.0")
    res = _apt_install(host, "acme-app")
    assert res.returncode == 0, res.stdout + res.stderr
    assert host.installed_version() == "1.1.0"
    code, body = _health(host)
    assert code == "200" and json.loads(body)["version"] == "1.1.0"
    assert host.exec("service acme-app status").returncode == 0

    # broken upgrade: service runs, /health answers 500
    host.publish("1.2.0", broken=True)
    assert host.repo_versions() == ["1.0.0", "1.1.0", "1.2.0"]
    res = _apt_install(host, "acme-app")
    assert res.returncode == 0, res.stdout + res.stderr
    assert host.installed_version() == "1.2.0"
    code, body = _health(host)
    assert code == "500" and json.loads(body)["version"] == "1.2.0"

    # rollback: downgrade to 1.1.0 (still in the repo thanks to dpkg-scanpackages -m)
    res = _apt_install(host, "acme-app=1.1.0", "--allow-downgrades")
    assert res.returncode == 0, res.stdout + res.stderr
    assert host.installed_version() == "1.1.0"
    assert _health(host)[0] == "200"

    # a build that does not even start: the package's postinst fails
    host.publish("1.3.0", broken="start")
    res = _apt_install(host, "acme-app")
    assert res.returncode != 0
    assert host.exec("/etc/init.d/acme-app status").returncode != 0
    assert _health(host)[0] == "000"  # nothing listens
    res = _apt_install(host, "acme-app=1.1.0", "--allow-downgrades")
    assert res.returncode == 0, res.stdout + res.stderr
    assert _health(host)[0] == "200"

    # unpublish / reset
    host.unpublish("1.3.0")
    assert "1.3.0" not in host.repo_versions()
    host.reset_repo()
    assert host.repo_versions() == ["1.0.0"]
    res = _apt_install(host, "acme-app=1.0.0", "--allow-downgrades")
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(_health(host)[1])["version"] == "1.0.0"


def test_build_machine_untouched():
    res = subprocess.run(["dpkg", "-l", "acme-app"], capture_output=True, text=True)
    assert res.returncode != 0
    assert "Package: acme-app\n" not in Path("/var/lib/dpkg/status").read_text()


# ---------------------------------------------------------------- lifecycle

def test_two_hosts_at_once_and_clean_stop(tmp_path):
    hosts = [DebHost(), DebHost()]
    errors = []

    def boot(h):
        try:
            h.start()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=boot, args=(h,)) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    roots = [h.root for h in hosts]
    pids = [h.pid for h in hosts]
    try:
        assert not errors, errors
        a, b = hosts
        assert a.address != b.address
        assert a.pg_port != b.pg_port and a.app_port != b.app_port
        for h in hosts:
            res = subprocess.run(h.ssh_command("hostname"), capture_output=True, text=True, timeout=60)
            assert res.returncode == 0 and res.stdout.strip() == h.name, res.stderr
            assert _health(h)[0] == "200"
        res = _ansible(_inventory(tmp_path, *hosts), "-m", "ping", tmp_path=tmp_path)
        assert res.returncode == 0 and res.stdout.count('"pong"') == 2, res.stdout + res.stderr
        assert all(processes_in_root(r) for r in roots)
    finally:
        for h in hosts:
            h.stop()
    for root, pid in zip(roots, pids, strict=False):
        assert not processes_in_root(root)
        assert not root.exists()
        assert not Path("/proc/%d" % pid).exists()
    for h in hosts:
        assert not _ssh_procs_to(h)


def test_stop_is_idempotent_and_context_manager():
    with DebHost() as h:
        root = h.root
        assert h.running
        assert h.exec("true").returncode == 0
    assert not h.running
    assert not processes_in_root(root)
    assert not root.exists()
    h.stop()
    with pytest.raises(DebHostError):
        h.exec("true")


# ---------------------------------------------------------------- helpers

def test_find_mirror_parses_deb822_and_one_line(tmp_path):
    deb822 = tmp_path / "debian.sources"
    deb822.write_text(
        "Types: deb\n# comment\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n")
    assert find_mirror([deb822]) == "http://mirror.example/debian"
    one = tmp_path / "sources.list"
    one.write_text("# x\ndeb [arch=amd64] http://other.example/debian bookworm main\n")
    assert find_mirror([one]) == "http://other.example/debian"
    assert find_mirror([tmp_path / "missing.list"]) == "http://deb.debian.org/debian"


def test_port_reservations_hold_across_processes():
    from tests.fleet.debhost import _free_port, _release

    port = _free_port("127.0.0.1", None)  # reserved here, but nothing listens on it
    try:
        code = "from tests.fleet.debhost import _free_port; print(_free_port('127.0.0.1', %d))" % port
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
        assert res.returncode == 0, res.stderr
        assert int(res.stdout) != port
    finally:
        _release("127.0.0.1", port)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert int(res.stdout) == port


def test_orphaned_host_is_reaped():
    """A host whose owning process was SIGKILLed is cleaned up by the next start."""
    from tests.fleet.debhost import reap_orphans

    code = ("import os; from tests.fleet.debhost import DebHost; "
            "h = DebHost(name='orphan'); h.start(); print(h.root, flush=True); os.kill(os.getpid(), 9)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    root = Path(res.stdout.strip())
    assert res.returncode == -9, res.stderr
    assert processes_in_root(root)  # left running by the killed owner
    assert root.parent in reap_orphans()
    assert not processes_in_root(root)
    assert not root.parent.exists()


# ---------------------------------------------------------------- the block's SysV path

def _task_output(out: str, task: str) -> str:
    """What ansible-playbook printed for one task: from its header to the next one."""
    start = out.index("TASK [%s]" % task)
    end = out.find("TASK [", start + 1)
    return out[start:end if end > 0 else None]


def test_the_block_updates_and_rolls_back_through_sysv_init_scripts(tmp_path):
    """The hosts of the demo and of the other e2e tests boot systemd; hosts without it keep working:
    the block's update restarts acme-app through ansible.builtin.service (its /etc/init.d script), its
    rescue stops and starts it the same way, and verify reads the state from service_facts."""
    from tests.fleet.nightly import NightlyEnv

    with NightlyEnv(tmp_path, hosts="sysv") as env:
        assert env.app.exec(["cat", "/proc/1/comm"]).stdout.strip() == "init"  # no systemd here
        env.psql("CREATE TABLE items (id int PRIMARY KEY, v text)")
        env.psql("INSERT INTO items VALUES (1, 'kept')")
        env.app.publish("1.1.0")
        result = env.polycrate("workflows", "run", "nightly-maintenance")
        out = result.stdout + result.stderr
        assert result.returncode == 0, out[-5000:]
        assert "changed: [app01.acme-corp.com]" in _task_output(out, "Restart application service (SysV init script)")
        assert "skipping: [app01.acme-corp.com]" in _task_output(out, "Restart application service (systemd)")
        assert "Service acme-app.service is running (running (sysv))" in out, out[-3000:]
        assert env.app.installed_version() == "1.1.0" and env.health()[0] == 200

        env.app.publish("1.2.0", broken="health")  # its migration empties items
        result = env.polycrate("workflows", "run", "nightly-maintenance")
        out = result.stdout + result.stderr
        assert result.returncode == 1, out[-5000:]
        assert "changed: [app01.acme-corp.com]" in _task_output(out, "Stop application service before restore (SysV init script)")
        # the reinstalled 1.1.0's postinst may have started it already: ok or changed, not skipped
        started = _task_output(out, "Start application service after rollback (SysV init script)")
        assert "ok: [app01.acme-corp.com]" in started or "changed: [app01.acme-corp.com]" in started, started
        assert "skipping: [app01.acme-corp.com]" in _task_output(out, "Start application service after rollback (systemd)")
        assert "acme-app healthy again: yes" in out and "acme-app 1.2.0 -> 1.1.0" in out, out[-3000:]
        assert env.app.installed_version() == "1.1.0" and env.health()[0] == 200
        assert env.psql("SELECT v FROM items WHERE id = 1") == "kept"


def test_the_restore_stops_and_starts_acme_app_through_its_sysv_init_script(tmp_path):
    """The standalone restore on hosts without systemd: acme-app is stopped through ansible.builtin.service (its
    /etc/init.d script) once the checks passed, the database restored, acme-app started again the same way and
    answering on the restored data. A restore stopped (SIGTERM) once acme-app is down leaves the old database and
    no side database, and its record tells the admin to run /etc/init.d/acme-app start there, which works."""
    import re
    import signal

    from tests.fleet.nightly import ITEMS_SQL, NightlyEnv
    from tests.helpers import wait_for

    with NightlyEnv(tmp_path, hosts="sysv") as env:
        env.psql("CREATE TABLE items (id int PRIMARY KEY, v text)")
        env.psql("INSERT INTO items VALUES (1, 'kept')")
        env.app.publish("1.1.0")
        first = env.polycrate("workflows", "run", "nightly-maintenance")  # installs and starts acme-app 1.1.0
        assert first.returncode == 0, (first.stdout + first.stderr)[-5000:]
        env.psql("INSERT INTO items VALUES (2, 'written after the backup')")

        def running() -> bool:
            return env.app.exec(["/etc/init.d/acme-app", "status"]).returncode == 0

        assert running() and env.health()[0] == 200
        result = env.polycrate("run", "linux-maintenance", "restore", "--force")
        out = result.stdout + result.stderr
        assert result.returncode == 0, out[-5000:]
        assert "changed: [app01.acme-corp.com]" in _task_output(out, "Stop application service for the restore (SysV init script)")
        assert "skipping: [app01.acme-corp.com]" in _task_output(out, "Stop application service for the restore (systemd)")
        assert "changed: [app01.acme-corp.com]" in _task_output(out, "Start application service after the restore (SysV init script)")
        assert re.search(r"Restored acme_app from /var/backups/acme-db/acme_app-\d{8}T\d{6}Z\.tar\.gz \(taken [^)]+\)\. "
                         r"acme-app\.service started again on app01\.acme-corp\.com, healthy: yes\.", out), out[-3000:]
        assert running() and env.health()[0] == 200
        assert env.psql("SELECT string_agg(v, ',' ORDER BY id) FROM items") == "kept"  # the backup's rows

        with env.gated_backup() as rows:
            _out, shown = env.stop_restore(signal.SIGTERM, lambda: not running(), "acme-app stopped on app01")
            assert shown["status"] == "interrupted" and not running()
            wait_for(lambda: not env.restore_module_running() and not env.side_databases(),
                     "the restore module gone from db01, no side database")
            env.db.exec(f"rm -f {env.GATE}", check=True)
            assert env.psql(ITEMS_SQL) == rows  # the old database
            message = shown["steps"][0]["message"]
            assert re.search(r"^interrupted \(SIGTERM\): left acme-app\.service (stopped on app01\.acme-corp\.com "
                             r"for the restore|on app01\.acme-corp\.com may be stopped \(the restore was stopping it\)) "
                             r"and (was )?not started again: start it there with `/etc/init\.d/acme-app start`",
                             message), message
            env.app.exec("/etc/init.d/acme-app start", check=True)
            assert running() and env.health()[0] == 200
