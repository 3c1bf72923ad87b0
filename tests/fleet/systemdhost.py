"""Test hosts with systemd as PID 1: podman containers built from polycrate's base image.

The article's hosts run systemd (its update.yml and verify.yml use ``ansible.builtin.systemd``); this
machine's own PID 1 is not systemd, so the debootstrap hosts of tests/fleet/debhost run SysV init
scripts. These hosts boot real systemd in podman (recipe: /work/shared/recipes/systemd-test-host.md):

* the image (``localhost/polycrate-systemd-host:<key>``) is built once from ``localhost/polycrate-base``
  and cached by podman under a tag keyed by this file and acme-app's sources: systemd, dbus,
  openssh-server, PostgreSQL 15 (cluster 15/main with role ``acme``/``acme`` and database ``acme_app``,
  listening on every address of the container, scram passwords), acme-app 1.0.0 installed from a
  local apt repository and run by a native unit ``acme-app.service`` (``/etc/default/acme-app`` is its
  EnvironmentFile), user ``ubuntu`` with passwordless sudo (the article's ansible_user);
* the apt sources list only ``file:/srv/repo``: the test's own folder, bind-mounted, where
  :meth:`SystemdHost.publish` puts acme-app versions (the harness of tests/fleet/debhost builds them);
* every host of a :class:`SystemdFleet` sits on a podman network the fleet creates (and removes):
  app01's acme-app reaches PostgreSQL on db01 by db01's address on that network;
* SSH: port 22 of each container is published on a loopback address of this machine (127.0.0.N, from
  the same reservations as the debootstrap hosts), with the test's key for root and ubuntu.

Stopping removes the containers (``podman rm -f``), the network and the repository folder.
"""
from __future__ import annotations

import hashlib
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Sequence

from tests.fleet import debhost

BASE_IMAGE = "localhost/polycrate-base"
IMAGE = "localhost/polycrate-systemd-host"
HERE = Path(__file__).resolve().parent

PACKAGES = ("systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "python3-apt", "postgresql", "sudo",
            "curl", "ca-certificates", "acl", "procps", "rclone", "isal", "age")

CONTAINERFILE = """\
FROM {base}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends {packages} \\
 && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY build/ /tmp/build/
RUN sh /tmp/build/provision.sh && rm -rf /tmp/build
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
"""

ACME_APP_UNIT = """\
[Unit]
Description=ACME demo web application
After=network-online.target postgresql.service
Wants=network-online.target

[Service]
Environment=HOME=/root
EnvironmentFile=-/etc/default/acme-app
ExecStart=/usr/bin/acme-app
Restart=no

[Install]
WantedBy=multi-user.target
"""

PROVISION = r"""
set -eux
# apt: only the test's own repository (bind-mounted at run time); nothing from the network
rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
mkdir -p /srv/repo
echo 'deb [trusted=yes] file:/srv/repo ./' > /etc/apt/sources.list.d/polycrate-fleet.list
cp /tmp/build/acme-app.service /etc/systemd/system/acme-app.service
# acme-app 1.0.0: installed without starting anything (no init runs while the image builds)
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
dpkg -i /tmp/build/acme-app_1.0.0_all.deb
rm -f /usr/sbin/policy-rc.d
mkdir -p /srv/repo-initial && cp /tmp/build/acme-app_1.0.0_all.deb /srv/repo-initial/
# PostgreSQL: every address of the container, passwords over TCP, role and database of the article
conf=/etc/postgresql/15/main
echo "listen_addresses = '*'" >> $conf/postgresql.conf
echo "host all all 0.0.0.0/0 scram-sha-256" >> $conf/pg_hba.conf
pg_ctlcluster 15 main start
runuser -u postgres -- psql -v ON_ERROR_STOP=1 -c "CREATE ROLE acme LOGIN PASSWORD 'acme'" \
  -c "CREATE DATABASE acme_app OWNER acme"
pg_ctlcluster 15 main stop
for home in /root /var/lib/postgresql; do
  echo '*:*:*:acme:acme' > $home/.pgpass && chmod 600 $home/.pgpass
done
chown postgres: /var/lib/postgresql/.pgpass
# the article's ansible_user, with passwordless sudo
useradd -m -s /bin/bash ubuntu
echo 'ubuntu ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/ubuntu && chmod 440 /etc/sudoers.d/ubuntu
mkdir -p /root/.ssh /home/ubuntu/.ssh && chmod 700 /root/.ssh /home/ubuntu/.ssh
chown ubuntu: /home/ubuntu/.ssh
systemctl enable ssh.service acme-app.service postgresql.service
systemctl mask systemd-timesyncd.service getty@tty1.service console-getty.service
"""


class SystemdHostError(RuntimeError):
    pass


def _podman(*args: str, check: bool = True, timeout: float = 600, input: str | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, input=input)
    if check and res.returncode != 0:
        raise SystemdHostError(f"podman {' '.join(args[:3])} failed: {res.stderr.strip()[-2000:]}")
    return res


def image_key() -> str:
    h = hashlib.sha256()
    h.update((CONTAINERFILE + ACME_APP_UNIT + PROVISION + " ".join(PACKAGES)).encode())
    for f in sorted(debhost.APP_SRC.iterdir()):
        h.update(f.name.encode() + f.read_bytes())
    h.update(_podman("image", "inspect", "--format", "{{.Id}}", BASE_IMAGE).stdout.encode())
    return h.hexdigest()[:16]


def build_image() -> str:
    """The host image, built when podman does not have it yet (about 2 minutes)."""
    if shutil.which("podman") is None:
        raise SystemdHostError("podman is not installed")
    if _podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
        # the base image polycrate's container runtime uses: made (or imported) as `make demo` does
        res = subprocess.run([sys.executable, "-m", "polycrate", "toolchain", "build", "--base"], capture_output=True,
                             text=True, timeout=1800, check=False)
        if res.returncode != 0:
            raise SystemdHostError(f"{BASE_IMAGE} is missing and `polycrate toolchain build --base` failed: "
                                   f"{res.stderr.strip()[-2000:]}")
    tag = f"{IMAGE}:{image_key()}"
    if _podman("image", "exists", tag, check=False).returncode == 0:
        return tag
    with tempfile.TemporaryDirectory(prefix="polycrate-systemd-image-") as tmp:
        ctx = Path(tmp)
        build = ctx / "build"
        build.mkdir()
        debhost.build_acme_app_deb(debhost.INITIAL_VERSION, build)
        (build / "acme-app.service").write_text(ACME_APP_UNIT)
        (build / "provision.sh").write_text(PROVISION)
        (ctx / "Containerfile").write_text(CONTAINERFILE.format(base=BASE_IMAGE, packages=" ".join(PACKAGES)))
        _podman("build", "-t", tag, str(ctx), timeout=1800)
    return tag


class SystemdHost:
    """One container; ``services`` are the units left running (others are stopped and disabled)."""

    def __init__(self, name: str, *, services: Sequence[str], network: str, key: Path, repo_root: Path,
                 image: str):
        self.name, self.services, self.network, self.key = name, tuple(services), network, key
        self.repo_root = repo_root
        self.image = image
        self.container = f"polycrate-sd-{name}-{secrets.token_hex(4)}"
        self.address = ""
        self.ssh_port = 0
        self.ip = ""  # on the fleet's network

    def start(self) -> SystemdHost:
        self.address = debhost._pick_address()
        self.ssh_port = debhost._free_port(self.address, 22)
        repo = self.repo_root / "srv" / "repo"
        _podman("run", "-d", "--name", self.container, "--hostname", self.name, "--network", self.network,
                "-p", f"{self.address}:{self.ssh_port}:22", "-v", f"{repo}:/srv/repo:ro", self.image)
        self.wait_running()
        pub = Path(str(self.key) + ".pub").read_text()
        self.exec("install -m 600 /dev/stdin /root/.ssh/authorized_keys && "
                  "install -o ubuntu -g ubuntu -m 600 /root/.ssh/authorized_keys /home/ubuntu/.ssh/authorized_keys",
                  input=pub, check=True)
        for unit in ("postgresql", "acme-app"):
            if unit not in self.services:
                self.exec(f"systemctl disable --now {unit}.service", check=True)
        self.ip = _podman("inspect", "--format", f"{{{{(index .NetworkSettings.Networks \"{self.network}\").IPAddress}}}}",
                          self.container).stdout.strip()
        debhost.DebHost._wait_port(self.address, self.ssh_port)
        return self

    def wait_running(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.exec("systemctl is-system-running").stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.3)
        raise SystemdHostError(f"{self.name}: systemd did not come up ({state or 'no answer'})")

    def exec(self, cmd: str, *, check: bool = False, input: str | None = None,
             timeout: float = 600) -> subprocess.CompletedProcess:
        res = _podman("exec", *(["-i"] if input is not None else []), self.container, "/bin/sh", "-c", cmd,
                      check=False, timeout=timeout, input=input)
        if check and res.returncode != 0:
            raise SystemdHostError(f"{self.name}: `{cmd}` failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
        return res

    def inventory_vars(self) -> dict:
        return {"ansible_host": self.address, "ansible_port": self.ssh_port, "ansible_ssh_port": self.ssh_port,
                "ansible_user": "ubuntu", "ansible_ssh_private_key_file": str(self.key),
                "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
                "ansible_python_interpreter": "/usr/bin/python3"}

    def unit_state(self, unit: str) -> str:
        return self.exec(f"systemctl is-active {unit}").stdout.strip()

    def installed_version(self, package: str = "acme-app") -> str | None:
        res = self.exec(f"dpkg-query -W -f='${{Version}} ${{db:Status-Abbrev}}' {package}")
        parts = res.stdout.split()
        return parts[0] if res.returncode == 0 and len(parts) > 1 and parts[1].startswith("ii") else None

    def health(self, path: str = "/health") -> tuple[int, str]:
        res = self.exec(f"curl -s -o /dev/stdout -w '\\n%{{http_code}}' http://127.0.0.1:8080{path}")
        body, _, code = res.stdout.rpartition("\n")
        return int(code or 0), body

    def stop(self) -> None:
        _podman("rm", "-f", "-t", "5", self.container, check=False)
        if self.address:
            debhost._release(self.address, self.ssh_port)
            debhost._release(self.address, 0)


class SystemdFleet:
    """db01 (PostgreSQL) and app01 (acme-app using the database on db01), on a network of their own."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="polycrate-systemd-fleet-"))
        self.network = f"polycrate-sd-{secrets.token_hex(4)}"
        self.hosts: list[SystemdHost] = []
        self.key = self.tmp / "id_ed25519"
        self.repo_root = self.tmp / "repo-root"
        (self.repo_root / "srv" / "repo").mkdir(parents=True)
        try:
            image = build_image()
            key = self.key
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
            debhost.publish(self.repo_root, debhost.INITIAL_VERSION)
            _podman("network", "create", self.network)
            self.db = self._add(SystemdHost("db01", services=("postgresql",), network=self.network, key=key,
                                            repo_root=self.repo_root, image=image))
            self.app = self._add(SystemdHost("app01", services=("acme-app",), network=self.network, key=key,
                                             repo_root=self.repo_root, image=image))
            # acme-app on app01 uses the database on db01, over the fleet's network
            self.app.exec(f"printf 'ACME_APP_PORT=8080\\nACME_APP_BIND=127.0.0.1\\nACME_DB_HOST={self.db.ip}\\n"
                          "ACME_DB_PORT=5432\\n' > /etc/default/acme-app && systemctl restart acme-app.service",
                          check=True)
            # as on the debootstrap hosts: the installed version's migration has run on the database
            self.app.exec(f"PGPASSFILE=/root/.pgpass psql -h {self.db.ip} -U acme -d acme_app -v ON_ERROR_STOP=1 -q "
                          "-f /usr/share/acme-app/migrate.sql", check=True)
        except BaseException:
            self.stop()
            raise

    def _add(self, host: SystemdHost) -> SystemdHost:
        self.hosts.append(host)
        return host.start()

    def publish(self, version: str, broken: bool | str = False) -> None:
        debhost.publish(self.repo_root, version, broken=broken)

    def unpublish(self, version: str) -> None:
        debhost.unpublish(self.repo_root, version)

    def psql(self, sql: str) -> str:
        """SQL in acme_app on db01."""
        res = self.db.exec(f"PGPASSFILE=/root/.pgpass psql -h 127.0.0.1 -U acme -d acme_app -v ON_ERROR_STOP=1 -tA "
                           f"-c {shlex.quote(sql)}")
        if res.returncode != 0:
            raise SystemdHostError(f"psql failed: {res.stderr}")
        return res.stdout.strip()

    def stop(self) -> None:
        for host in reversed(self.hosts):
            host.stop()
        _podman("network", "rm", "-f", self.network, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)
