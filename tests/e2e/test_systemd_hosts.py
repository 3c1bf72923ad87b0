"""The article's own update.yml and verify.yml, verbatim (ansible.builtin.systemd included), against
hosts that boot systemd as PID 1 (tests/fleet/systemdhost.py): db01 runs PostgreSQL and app01 runs
acme-app as systemd units; acme-app on app01 uses the database on db01. The workspace is the article's
workspace.poly, inventory.yml and block.poly, unchanged but for the hosts' SSH addresses.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ARTICLE_BLOCK, ARTICLE_FILES, EXAMPLE

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fleet():
    if shutil.which("podman") is None:
        pytest.skip("needs podman")
    from tests.fleet.systemdhost import SystemdFleet

    f = SystemdFleet()
    yield f
    f.stop()


@pytest.fixture
def article(tmp_path, fleet) -> Path:
    root = tmp_path / "acme-corp-automation"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("artifacts", ".polycrate", "blocks"))
    block = root / ARTICLE_BLOCK
    block.mkdir(parents=True)
    for name in ("block.poly", "backup.yml", "update.yml", "verify.yml"):
        shutil.copy(ARTICLE_FILES / name, block / name)
    shutil.copy(ARTICLE_FILES / "workspace.poly", root / "workspace.poly")
    inventory = yaml.safe_load((ARTICLE_FILES / "inventory.yml").read_text())
    for name, host in (("db01.acme-corp.com", fleet.db), ("app01.acme-corp.com", fleet.app)):
        inventory["all"]["hosts"][name] = host.inventory_vars()
    (root / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    return root


def polycrate(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polycrate", *args], cwd=root, capture_output=True, text=True,
                          timeout=2400, stdin=subprocess.DEVNULL, env=dict(os.environ))


def task_output(out: str, task: str) -> str:
    """What ansible-playbook printed for one task: from its header to the next one."""
    start = out.index(f"TASK [{task}]")
    end = out.find("TASK [", start + 1)
    return out[start:end if end > 0 else None]


def test_the_hosts_boot_systemd(fleet):
    for host in (fleet.db, fleet.app):
        assert host.exec("ps -p 1 -o comm=").stdout.strip() == "systemd"
        assert host.exec("systemctl is-system-running").stdout.strip() in ("running", "degraded")
    assert fleet.db.unit_state("postgresql") == "active" and fleet.app.unit_state("acme-app") == "active"
    assert fleet.app.unit_state("postgresql") != "active"  # app01 uses the database on db01
    assert fleet.app.exec("systemctl show -p FragmentPath --value acme-app").stdout.strip() == \
        "/etc/systemd/system/acme-app.service"  # a native unit, not the SysV script's generated one


def test_the_articles_update_and_verify_run_verbatim(fleet, article):
    for name in ("update.yml", "verify.yml", "block.poly"):
        assert (article / ARTICLE_BLOCK / name).read_text() == (ARTICLE_FILES / name).read_text()
    assert "ansible.builtin.systemd" in (article / ARTICLE_BLOCK / "update.yml").read_text()
    # the article's update looks for the backup on the web host itself
    fleet.app.exec("mkdir -p /var/backups/acme-db && tar -czf /var/backups/acme-db/latest.tar.gz -T /dev/null",
                   check=True)
    fleet.publish("1.1.0")
    before = fleet.app.exec("systemctl show -p MainPID --value acme-app").stdout.strip()

    update = polycrate(article, "run", "linux-maintenance", "update")
    out = update.stdout + update.stderr
    assert update.returncode == 0, out[-4000:]
    assert "TASK [Restart application service]" in out
    assert fleet.app.installed_version() == "1.1.0"
    assert fleet.app.unit_state("acme-app") == "active"
    assert fleet.app.exec("systemctl show -p MainPID --value acme-app").stdout.strip() != before  # restarted
    status, body = fleet.app.health()
    assert status == 200 and '"1.1.0"' in body
    assert "1.1.0" in fleet.psql("SELECT string_agg(version, ',') FROM schema_migrations")  # on db01

    verify = polycrate(article, "run", "linux-maintenance", "verify")
    assert verify.returncode == 0, (verify.stdout + verify.stderr)[-4000:]
    assert "Health-check OK: 200 OK" in verify.stdout

    # its systemd check is real: a stopped unit fails verify with the article's message
    fleet.app.exec("systemctl stop acme-app.service", check=True)
    try:
        verify = polycrate(article, "run", "linux-maintenance", "verify")
        assert verify.returncode == 1, verify.stdout[-3000:]
        assert "Service acme-app.service is not running." in verify.stdout
    finally:
        fleet.app.exec("systemctl start acme-app.service", check=True)


@pytest.fixture
def shipped(tmp_path, fleet) -> Path:
    """The example workspace with the block as it ships, on the systemd hosts; the offsite copy goes
    to a folder on db01 (rclone's local backend) instead of S3."""
    root = tmp_path / "shipped"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("artifacts", ".polycrate"))
    inventory = yaml.safe_load((EXAMPLE / "inventory.yml").read_text())
    for name, host in (("db01.acme-corp.com", fleet.db), ("app01.acme-corp.com", fleet.app)):
        inventory["all"]["hosts"][name] = host.inventory_vars()
    inventory["all"]["hosts"]["db01.acme-corp.com"]["pg_password"] = "acme"
    (root / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    poly = root / "workspace.poly"
    text = poly.read_text()
    assert '      rclone_destination: "acme-s3:acme-backups-db/postgres"\n' in text
    poly.write_text(text.replace('      rclone_destination: "acme-s3:acme-backups-db/postgres"\n',
                                 '      rclone_destination: "/var/backups/acme-db-offsite"\n', 1))
    return root


def test_the_block_updates_verifies_and_rolls_back_through_systemd(fleet, shipped):
    """Our block on systemd hosts: ansible.builtin.systemd restarts the unit and verify reads its
    ActiveState; the SysV path (ansible.builtin.service) is the one the debootstrap hosts take."""
    fleet.publish("1.2.0")
    result = polycrate(shipped, "workflows", "run", "nightly-maintenance")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]
    assert "changed: [app01.acme-corp.com]" in task_output(out, "Restart application service (systemd)")
    assert "skipping: [app01.acme-corp.com]" in task_output(out, "Restart application service (SysV init script)")
    assert "Service acme-app.service is running (systemd: active/running)" in out
    assert fleet.app.installed_version() == "1.2.0" and fleet.app.health()[0] == 200
    assert fleet.db.exec("ls /var/backups/acme-db-offsite").stdout.count(".tar.gz") >= 1  # the offsite copy

    # a broken release: the rescue stops and starts the unit through systemd, the data comes back
    fleet.psql("CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, v text)")
    fleet.psql("INSERT INTO items VALUES (1, 'kept') ON CONFLICT DO NOTHING")
    fleet.publish("1.3.0", broken="health")  # its migration empties items
    try:
        result = polycrate(shipped, "workflows", "run", "nightly-maintenance")
        out = result.stdout + result.stderr
        assert result.returncode == 1, out[-5000:]
        assert "acme-app healthy again: yes" in out and "acme-app 1.3.0 -> 1.2.0" in out, out[-3000:]
        assert "TASK [Start application service after rollback (systemd)]" in out
        assert fleet.app.installed_version() == "1.2.0" and fleet.app.unit_state("acme-app") == "active"
        assert fleet.psql("SELECT v FROM items WHERE id = 1") == "kept"
    finally:
        fleet.unpublish("1.3.0")


# ---------------------------------------------------------------- nothing left behind

REPO_ROOT = Path(__file__).resolve().parents[2]
START_ONE = """
import os, signal, sys, time
from tests.fleet.systemdhost import SystemdHost, SystemdNetwork
network = SystemdNetwork()
host = SystemdHost("leftover", network=network, services=("ssh",)).start()
print(network.name, host.container, flush=True)
how = sys.argv[1]
if how == "exit":
    sys.exit(0)  # neither stopped nor removed: atexit does it
if how == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.read()  # until the test sends SIGTERM
"""


def _exists(kind: str, name: str) -> bool:
    cmd = ["podman", "container", "exists", name] if kind == "container" else ["podman", "network", "exists", name]
    return subprocess.run(cmd, capture_output=True).returncode == 0


@pytest.mark.parametrize("how", ["exit", "sigterm"])
def test_containers_and_network_are_removed_when_the_process_ends_without_stopping_them(how):
    if shutil.which("podman") is None:
        pytest.skip("needs podman")
    proc = subprocess.Popen([sys.executable, "-c", START_ONE, how], cwd=REPO_ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    try:
        network, container = line.split()
    except ValueError:
        proc.kill()
        raise AssertionError(f"the host did not start: {line!r} {proc.communicate()[1][-3000:]}") from None
    if how == "sigterm":
        assert _exists("container", container)
        proc.terminate()
    proc.wait(timeout=900)
    assert proc.returncode == (0 if how == "exit" else -15)
    assert not _exists("container", container) and not _exists("network", network)


def test_the_next_start_removes_what_a_killed_process_left():
    if shutil.which("podman") is None:
        pytest.skip("needs podman")
    from tests.fleet.systemdhost import reap_orphans

    proc = subprocess.run([sys.executable, "-c", START_ONE, "kill"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == -9, proc.stderr[-3000:]
    network, container = proc.stdout.split()
    assert container.startswith("polycrate-sd-leftover-") and _exists("container", container)  # left running
    removed = reap_orphans()
    assert {container, network} <= set(removed)
    assert not _exists("container", container) and not _exists("network", network)
