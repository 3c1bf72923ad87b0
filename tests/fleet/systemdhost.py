"""Test hosts with systemd as PID 1: podman containers built from polycrate's base image.

The article's hosts run systemd (its update.yml and verify.yml use ``ansible.builtin.systemd``); this
machine's own PID 1 is not systemd. These hosts boot real systemd in podman (recipe:
/work/shared/recipes/systemd-test-host.md) and are the hosts of the demo and of the end-to-end tests
(tests/fleet/nightly.py). The debootstrap hosts of tests/fleet/debhost (SysV init scripts) remain for
the SysV path.

* The image (``localhost/polycrate-systemd-host:<key>``) is built once from ``localhost/polycrate-base``
  (made with ``polycrate toolchain build --base`` when podman lacks it) and cached by podman under a
  tag keyed by this file, acme-app's sources and the base image; later runs only start containers
  (a few seconds). It has systemd, dbus, openssh-server, PostgreSQL 15 (cluster 15/main, role
  ``acme``/``acme``, database ``acme_app``, acme-app 1.0.0's migration applied), acme-app 1.0.0 from a
  local apt repository with a native unit ``acme-app.service`` (``/etc/default/acme-app`` is its
  EnvironmentFile; a start waits until the application's port answers, as the SysV script's does),
  user ``ubuntu`` with passwordless sudo (the article's ansible_user).
* ``ssh.service``, ``postgresql.service`` and ``acme-app.service`` are disabled in the image;
  :meth:`SystemdHost.start` writes the host's own settings and enables and starts ssh and the
  ``services`` it was given (a database host: postgresql; an application host: acme-app, using the
  database of its ``database`` host).
* apt lists only ``file:/srv/repo``: the host's own folder on this machine, bind-mounted read-only,
  where :meth:`SystemdHost.publish` puts acme-app versions (built by tests/fleet/debhost).
* Network, two ways:

  - ``network=None`` (the hosts of tests/fleet/nightly.py: the demo, the e2e tests, the benchmarks):
    the machine's network namespace, as the debootstrap hosts: sshd listens on a loopback address of
    its own (127.0.0.N, port 22 when free there), PostgreSQL on 127.0.0.1 and that address at
    ``pg_port`` (5432 when free), acme-app on 127.0.0.1:``app_port`` (8080 when free); so the hosts
    reach each other and the tests' S3 server on loopback. Addresses and ports come from the
    debootstrap hosts' reservations (lock files shared by every process).
  - a :class:`SystemdNetwork`: every host has its own network namespace on a podman network of the
    fleet's own, PostgreSQL on 5432 and acme-app on 127.0.0.1:8080 inside each, as the article's
    defaults say; app01 reaches db01 by its name on that network; SSH: port 22 is published on a
    loopback address of this machine. Nothing on the machine's loopback is reachable from there.

  Every host has an SSH key of its own for root and ubuntu.
* Clean-up: every container and network is named ``polycrate-sd-...`` and labelled with the process
  that made it. ``stop()`` removes them; so do an atexit hook and SIGTERM/SIGHUP handlers (the process
  then dies of the signal as it would have); the next start removes those of a process that was killed
  with SIGKILL (:func:`reap_orphans`).

Commands run inside a host through ``nsenter`` into the container's namespaces (as the debootstrap
hosts' do; ``podman exec`` costs a few hundred milliseconds each on a busy machine).
"""
from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from tests.fleet import debhost

BASE_IMAGE = "localhost/polycrate-base"
IMAGE = "localhost/polycrate-systemd-host"
PREFIX = "polycrate-sd-"
LABEL = "polycrate.fleet=systemd-host"
OWNER_LABEL = "polycrate.owner"
#: image tags kept (the newest): checkouts of different harness versions on one machine
KEEP_IMAGES = 3
SERVICES = debhost.SERVICES  # ("postgresql", "ssh", "acme-app"): the same names as the debootstrap hosts'
PG_PORT = 5432
APP_PORT = 8080

PACKAGES = ("systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "python3-apt", "postgresql", "sudo",
            "curl", "ca-certificates", "acl", "procps", "rclone", "isal", "age", "gzip", "tar", "iproute2", "less")

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

# Type=exec and a start that waits for the port: `systemctl restart` (ansible.builtin.systemd, the
# package's postinst) fails when the application does not come up, as the SysV script's restart does.
ACME_APP_UNIT = """\
[Unit]
Description=ACME demo web application
After=network-online.target postgresql.service
Wants=network-online.target

[Service]
Type=exec
Environment=HOME=/root
EnvironmentFile=-/etc/default/acme-app
ExecStart=/usr/bin/acme-app
ExecStartPost=/usr/local/lib/polycrate-fleet/acme-app-wait-port
TimeoutStartSec=90
Restart=no

[Install]
WantedBy=multi-user.target
"""

WAIT_PORT = """\
#!/bin/sh
# ExecStartPost of acme-app.service: the start is done when the application's port answers
exec python3 - <<'EOF'
import os, socket, sys, time
address = (os.environ.get("ACME_APP_BIND") or "127.0.0.1", int(os.environ.get("ACME_APP_PORT") or 8080))
deadline = time.monotonic() + 80
while time.monotonic() < deadline:
    try:
        socket.create_connection(address, 0.5).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit("acme-app did not open %s:%d" % address)
EOF
"""

PROVISION = r"""
set -eux
# apt: only the test's own repository (bind-mounted at run time); nothing from the network
rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
mkdir -p /srv/repo
echo 'deb [trusted=yes] file:/srv/repo ./' > /etc/apt/sources.list.d/polycrate-fleet.list
cat > /etc/apt/apt.conf.d/90polycrate-fleet <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
Dpkg::Options { "--force-confdef"; "--force-confold"; };
EOF
install -D -m 644 /tmp/build/acme-app.service /etc/systemd/system/acme-app.service
install -D -m 755 /tmp/build/acme-app-wait-port /usr/local/lib/polycrate-fleet/acme-app-wait-port
# PostgreSQL: every address of the host's own network namespace, passwords over TCP
conf=/etc/postgresql/15/main
echo "listen_addresses = '*'" > $conf/conf.d/90-polycrate-fleet.conf
echo "host all all 0.0.0.0/0 scram-sha-256" >> $conf/pg_hba.conf
pg_ctlcluster 15 main start
runuser -u postgres -- psql -v ON_ERROR_STOP=1 -c "CREATE ROLE acme LOGIN PASSWORD 'acme'" \
  -c "CREATE DATABASE acme_app OWNER acme"
# the article's ansible_user, with passwordless sudo; sudo keeps PGPORT (/etc/environment, pam_env)
useradd -m -s /bin/bash ubuntu
printf 'Defaults env_keep += "PGPORT PGHOST"\nubuntu ALL=(ALL) NOPASSWD:ALL\n' > /etc/sudoers.d/ubuntu
chmod 440 /etc/sudoers.d/ubuntu
grep -q pam_env /etc/pam.d/sudo || echo 'session required pam_env.so readenv=1 user_readenv=0' >> /etc/pam.d/sudo
for home in /root /home/ubuntu /var/lib/postgresql; do
  echo '*:*:*:acme:acme' > $home/.pgpass && chmod 600 $home/.pgpass
done
chown ubuntu: /home/ubuntu/.pgpass
chown postgres: /var/lib/postgresql/.pgpass
# acme-app 1.0.0, its migration applied to this database; no service starts while the image builds
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
dpkg -i /tmp/build/acme-app_1.0.0_all.deb
rm -f /usr/sbin/policy-rc.d
pg_ctlcluster 15 main stop
# ssh: keys only; a key of the host's own is added at start
cat > /etc/ssh/sshd_config.d/00-polycrate-fleet.conf <<'EOF'
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
MaxSessions 50
MaxStartups 50:30:100
EOF
mkdir -p /root/.ssh /home/ubuntu/.ssh && chmod 700 /root/.ssh /home/ubuntu/.ssh
chown ubuntu: /home/ubuntu/.ssh
# started per host (SystemdHost.start): sshd once it knows its address (in the machine's network
# namespace it must not bind 0.0.0.0:22), PostgreSQL only on a database host, acme-app on an application host
systemctl disable ssh.service postgresql.service acme-app.service
# nothing of the machine's business, and nothing that runs apt behind a test's back
systemctl mask systemd-timesyncd.service getty@tty1.service console-getty.service apt-daily.timer \
  apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer
"""


class SystemdHostError(RuntimeError):
    pass


def _podman(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    res = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    if check and res.returncode != 0:
        raise SystemdHostError(f"podman {' '.join(args[:3])} failed: {res.stderr.strip()[-2000:]}")
    return res


# --------------------------------------------------------------------------
# clean-up: stop(), atexit, SIGTERM/SIGHUP, and the orphans of a killed process
# --------------------------------------------------------------------------

_live_lock = threading.Lock()
_live: dict[str, str] = {}  # name -> "container" | "network", made by this process and not removed yet
_handlers_installed = False


def _owner() -> str:
    return f"{os.getpid()}:{debhost._proc_starttime(os.getpid())}"


def _register(kind: str, name: str) -> None:
    global _handlers_installed
    with _live_lock:
        _live[name] = kind
        if _handlers_installed:
            return
        _handlers_installed = True
    atexit.register(remove_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous = signal.getsignal(sig)
            if previous in (signal.SIG_DFL, None) or callable(previous):
                signal.signal(sig, _on_signal)
                _previous_handlers[sig] = previous


_previous_handlers: dict[int, object] = {}


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Remove what this process made, then do what the signal would have done."""
    remove_all()
    previous = _previous_handlers.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _forget(name: str) -> None:
    with _live_lock:
        _live.pop(name, None)


def remove_all() -> None:
    """Remove every container and network this process made and did not remove yet (containers first)."""
    with _live_lock:
        items = sorted(_live.items(), key=lambda kv: kv[1] != "container")
        _live.clear()
    for name, kind in items:
        with contextlib.suppress(Exception):
            if kind == "container":
                _podman("rm", "-f", "-t", "2", name, check=False, timeout=120)
            else:
                _podman("network", "rm", "-f", name, check=False, timeout=120)


def reap_orphans() -> list[str]:
    """Remove the containers and networks of processes that are gone (killed before they could clean
    up). Returns their names."""
    removed = []
    for kind, cmd in (("container", ["ps", "-a"]), ("network", ["network", "ls"])):
        res = _podman(*cmd, "--filter", f"label={LABEL}", "--format", "json", check=False, timeout=120)
        try:
            items = json.loads(res.stdout or "[]") or []
        except json.JSONDecodeError:
            continue
        for item in items:
            names = item.get("Names") or [item.get("Name") or item.get("name") or ""]
            name = names[0] if isinstance(names, list) else names
            labels = item.get("Labels") or item.get("labels") or {}
            owner = labels.get(OWNER_LABEL, "")
            pid, _, start = owner.partition(":")
            if not name.startswith(PREFIX) or not pid.isdigit():
                continue
            if debhost._proc_starttime(int(pid)) == start:
                continue  # its owner still runs
            if kind == "container":
                _podman("rm", "-f", "-t", "0", name, check=False, timeout=120)
            else:
                _podman("network", "rm", "-f", name, check=False, timeout=120)
            removed.append(name)
    return removed


# --------------------------------------------------------------------------
# the image
# --------------------------------------------------------------------------

def image_key() -> str:
    h = hashlib.sha256()
    h.update((CONTAINERFILE + ACME_APP_UNIT + WAIT_PORT + PROVISION + " ".join(PACKAGES)).encode())
    for f in sorted(debhost.APP_SRC.iterdir()):
        h.update(f.name.encode() + f.read_bytes())
    h.update(_podman("image", "inspect", "--format", "{{.Id}}", BASE_IMAGE).stdout.encode())
    return h.hexdigest()[:16]


_image_lock = threading.Lock()
_image: str | None = None


def build_image(log=None) -> str:
    """The host image, built when podman does not have it yet (about 2 minutes; serialised across
    processes by a lock file)."""
    global _image
    if shutil.which("podman") is None:
        raise SystemdHostError("podman is not installed (scripts/setup.sh --demo installs it)")
    with _image_lock:
        if _image is not None:
            return _image
        debhost._LOCK_DIR.mkdir(parents=True, exist_ok=True)
        with open(debhost._LOCK_DIR / "systemd-host-image.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
                # the base image polycrate's container runtime uses: made (or imported) as `make demo` does
                if log:
                    log(f"making {BASE_IMAGE} (polycrate toolchain build --base)")
                res = subprocess.run([sys.executable, "-m", "polycrate", "toolchain", "build", "--base"],
                                     capture_output=True, text=True, timeout=1800, check=False,
                                     stdin=subprocess.DEVNULL)
                if res.returncode != 0:
                    raise SystemdHostError(f"{BASE_IMAGE} is missing and `polycrate toolchain build --base` failed: "
                                           f"{res.stderr.strip()[-2000:]}")
            tag = f"{IMAGE}:{image_key()}"
            if _podman("image", "exists", tag, check=False).returncode != 0:
                if log:
                    log(f"building {tag} from {BASE_IMAGE} (once; about 2 minutes)")
                with tempfile.TemporaryDirectory(prefix="polycrate-systemd-image-") as tmp:
                    ctx = Path(tmp)
                    build = ctx / "build"
                    build.mkdir()
                    debhost.build_acme_app_deb(debhost.INITIAL_VERSION, build)
                    (build / "acme-app.service").write_text(ACME_APP_UNIT)
                    (build / "acme-app-wait-port").write_text(WAIT_PORT)
                    (build / "provision.sh").write_text(PROVISION)
                    (ctx / "Containerfile").write_text(CONTAINERFILE.format(base=BASE_IMAGE,
                                                                            packages=" ".join(PACKAGES)))
                    _podman("build", "--label", LABEL, "-t", tag, str(ctx), timeout=1800)
                _prune_images(keep=tag)
        _image = tag
        return tag


def _prune_images(keep: str) -> None:
    """Keep the newest few tags (other checkouts may use theirs); podman refuses to remove one in use."""
    res = _podman("images", "--format", "json", IMAGE, check=False)
    try:
        images = json.loads(res.stdout or "[]") or []
    except json.JSONDecodeError:
        return
    tagged = sorted(((img.get("Created", 0), name) for img in images for name in img.get("Names") or []),
                    reverse=True)
    for _, name in tagged[KEEP_IMAGES:]:
        if name != keep:
            _podman("rmi", name, check=False)


# --------------------------------------------------------------------------
# the network and the hosts
# --------------------------------------------------------------------------

_reaped = False


def _reap_once() -> None:
    """reap_orphans() at the first start of this process (a few podman calls)."""
    global _reaped
    if not _reaped:
        _reaped = True
        with contextlib.suppress(Exception):
            reap_orphans()


class SystemdNetwork:
    """A podman network of its own for a fleet: its hosts reach each other by name (and nothing on the
    machine's loopback)."""

    def __init__(self) -> None:
        _reap_once()
        self.name = f"{PREFIX}net-{secrets.token_hex(4)}"
        _register("network", self.name)
        _podman("network", "create", "--label", LABEL, "--label", f"{OWNER_LABEL}={_owner()}", self.name)

    def stop(self) -> None:
        _podman("network", "rm", "-f", self.name, check=False)
        _forget(self.name)


class SystemdHost(debhost.SSHAccess):
    """A running host with systemd as PID 1 (context manager); the same interface as
    :class:`tests.fleet.debhost.DebHost` where the tests and benchmarks use it.

    ``services``: of postgresql, ssh and acme-app, the units running on it. ``database``: a started
    host whose PostgreSQL this host's acme-app uses (``peer_address``); None: its own. ``network``: None,
    the machine's network namespace; else the podman network it joins. ``volumes``: folders of this machine
    bind-mounted at the same path (``(folder, writable)``), e.g. this checkout, to run its polycrate there."""

    def __init__(self, name: str, *, network: SystemdNetwork | None = None, services: Sequence[str] = SERVICES,
                 database: SystemdHost | None = None, user: str = "ubuntu", boot_timeout: float = 300.0,
                 volumes: Sequence[tuple[Path, bool]] = ()):
        unknown = set(services) - set(SERVICES)
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)} (choose from {', '.join(SERVICES)})")
        self.name, self.network, self.database, self.user = name, network, database, user
        self.services = tuple(s for s in SERVICES if s in (*services, "ssh"))  # reached over SSH: always
        self.boot_timeout = boot_timeout
        self.volumes = tuple((Path(path), writable) for path, writable in volumes)  # (folder, writable): same path inside
        self.container = f"{PREFIX}{name}-{secrets.token_hex(4)}"
        self.address: str | None = None
        self.ssh_port: int | None = None
        self.pg_port = PG_PORT
        self.app_port = APP_PORT
        self.pg_user, self.pg_password, self.pg_database = debhost.PG_ROLE, debhost.PG_PASSWORD, debhost.PG_DATABASE
        self.ip = ""  # on the fleet's network
        self.workdir: Path | None = None
        self.root: Path | None = None  # the container's root filesystem, seen from this machine
        self.ssh_key_path: Path | None = None
        self.init_pid: int | None = None
        self.start_seconds: float | None = None
        self._held: list[tuple[str, int]] = []

    # -- lifecycle ----------------------------------------------------------
    def __enter__(self) -> SystemdHost:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> SystemdHost:
        if self.init_pid is not None:
            raise SystemdHostError("host already started")
        t0 = time.monotonic()
        image = build_image()
        _reap_once()
        try:
            self._allocate()
            self.workdir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{self.name}-"))
            debhost.publish(self.workdir, debhost.INITIAL_VERSION)  # workdir/srv/repo, as in the image
            self.ssh_key_path = self.workdir / "id_ed25519"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"polycrate-fleet@{self.name}",
                            "-f", str(self.ssh_key_path)], check=True, capture_output=True)
            if self.network is None:
                net = ["--network", "host"]
            else:
                net = ["--network", self.network.name, "-p", f"{self.address}:{self.ssh_port}:22"]
                if self.database is not None and self.database is not self:
                    net += ["--add-host", f"{self.database.name}:{self.database.ip}"]
            _register("container", self.container)
            _podman("run", "-d", "--name", self.container, "--hostname", self.name, *net, "--systemd=always",
                    "--label", LABEL, "--label", f"{OWNER_LABEL}={_owner()}",
                    "-v", f"{self.workdir / 'srv' / 'repo'}:/srv/repo:ro",
                    *(f"-v={path}:{path}:{'rw' if writable else 'ro'}" for path, writable in self.volumes),
                    image, timeout=300)
            inspect = json.loads(_podman("inspect", self.container).stdout)[0]
            self.init_pid = int(inspect["State"]["Pid"])
            self.root = Path(inspect["GraphDriver"]["Data"]["MergedDir"])
            if self.network is not None:
                self.ip = inspect["NetworkSettings"]["Networks"][self.network.name]["IPAddress"]
            self.wait_running(self.boot_timeout)
            self._personalise()
            self._wait_ssh(self.boot_timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _allocate(self) -> None:
        """A loopback address and an SSH port of its own; in the machine's network namespace also the
        ports of PostgreSQL and acme-app (the debootstrap hosts' reservations)."""
        self.address = debhost._pick_address()
        self._held.append((self.address, 0))
        self.ssh_port = debhost._free_port(self.address, 22)
        self._held.append((self.address, self.ssh_port))
        if self.network is not None:
            return  # PostgreSQL and acme-app at the article's ports, in the host's own network namespace
        if "postgresql" in self.services:
            # PostgreSQL listens on 127.0.0.1 and on the host's own address: free on both
            for attempt in range(50):
                port = debhost._free_port("127.0.0.1", PG_PORT if attempt == 0 else None)
                self._held.append(("127.0.0.1", port))
                if debhost._port_free(self.address, port):
                    break
            self.pg_port = port
        elif self.database is not None:
            self.pg_port = self.database.pg_port  # the port of the database it uses
        self.app_port = debhost._free_port("127.0.0.1", APP_PORT)
        self._held.append(("127.0.0.1", self.app_port))

    def _personalise(self) -> None:
        """This host's key, addresses and ports, the database its acme-app uses; then sshd and its units
        enabled and started."""
        pub = Path(f"{self.ssh_key_path}.pub").read_text().strip()
        if self.database is None or self.database is self:
            db = "localhost"
        else:
            db = self.database.peer_address
        default = (debhost.APP_SRC / "acme-app.default").read_text() \
            .replace("ACME_APP_PORT=8080", f"ACME_APP_PORT={self.app_port}") \
            .replace("#ACME_DB_HOST=localhost", f"ACME_DB_HOST={db}") \
            .replace("#ACME_DB_PORT=5432", f"ACME_DB_PORT={self.pg_port}") \
            .replace("sourced by /etc/init.d/acme-app", "read by acme-app.service (EnvironmentFile)")
        files = {"/etc/default/acme-app": default, "/etc/environment": f'PGPORT="{self.pg_port}"\n'}
        if self.network is None:
            # podman writes no entry for the host's name in the machine's network namespace (sudo asks)
            files["/etc/hosts"] = (f"127.0.0.1\tlocalhost\n{self.address}\t{self.name}\n"
                                   "::1\tip6-localhost ip6-loopback\n")
            files["/etc/ssh/sshd_config.d/10-polycrate-fleet-listen.conf"] = f"ListenAddress {self.address}:{self.ssh_port}\n"
            files["/etc/postgresql/15/main/conf.d/95-polycrate-fleet-host.conf"] = (
                f"port = {self.pg_port}\nlisten_addresses = '127.0.0.1,{self.address}'\n")
        units = ["ssh.service"] + [f"{s}.service" for s in self.services if s != "ssh"]
        script = (
            f"printf '%s\\n' {shlex.quote(pub)} > /root/.ssh/authorized_keys\n"
            "chmod 600 /root/.ssh/authorized_keys\n"
            "install -o ubuntu -g ubuntu -m 600 /root/.ssh/authorized_keys /home/ubuntu/.ssh/authorized_keys\n"
            + "".join(f"printf '%s' {shlex.quote(text)} > {path}\n" for path, text in files.items())
            + f"systemctl enable --now {' '.join(units)}\n"
        )
        self.exec(script, check=True, timeout=self.boot_timeout)

    def wait_running(self, timeout: float = 300.0) -> None:
        """Until systemd says the boot is over (running, or degraded: a unit failed)."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            res = self.exec("systemctl is-system-running", timeout=60)
            state = res.stdout.strip()
            if state in ("running", "degraded"):
                return
            if state in ("starting", "initializing"):
                # block until the boot's jobs are done instead of polling
                self.exec("systemctl is-system-running --wait", timeout=max(1.0, deadline - time.monotonic()))
                continue
            time.sleep(0.1)
        raise SystemdHostError(f"{self.name}: systemd did not come up in {timeout:.0f}s ({state or 'no answer'})")

    def _wait_ssh(self, timeout: float) -> None:
        """Until sshd answers with its banner on the published address."""
        deadline = time.monotonic() + timeout
        assert self.address and self.ssh_port
        while True:
            try:
                with socket.create_connection((self.address, self.ssh_port), 2) as s:
                    s.settimeout(5)
                    if s.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemdHostError(f"{self.name}: no SSH on {self.address}:{self.ssh_port}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Remove the container (idempotent), free its address and remove its folder."""
        _podman("rm", "-f", "-t", "5", self.container, check=False, timeout=300)
        _forget(self.container)
        self.init_pid = None
        for addr, port in self._held:
            debhost._release(addr, port)
        self._held = []
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    @property
    def running(self) -> bool:
        if self.init_pid is None:
            return False
        res = _podman("inspect", "--format", "{{.State.Running}}", self.container, check=False)
        return res.stdout.strip() == "true"

    @property
    def pid(self) -> int | None:
        """Machine-side PID of the host's PID 1 (systemd)."""
        return self.init_pid

    # -- using it -----------------------------------------------------------
    def exec(self, cmd: str | Sequence[str], *, check: bool = False, timeout: float | None = 600,
             input: str | None = None, env: Mapping[str, str] | None = None,
             user: str | None = None) -> subprocess.CompletedProcess:
        """Run ``cmd`` inside the host as root (or ``user``); a string runs through ``/bin/sh -c``.

        The environment is clean: PATH, HOME, LANG=C.UTF-8, DEBIAN_FRONTEND=noninteractive, PGPORT."""
        if self.init_pid is None:
            raise SystemdHostError(f"{self.name} is not running")
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        genv = {"PATH": debhost.GUEST_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb",
                "DEBIAN_FRONTEND": "noninteractive", "USER": "root", "LOGNAME": "root", "PGPORT": str(self.pg_port)}
        genv.update(env or {})
        if user and user != "root":
            argv = ["runuser", "-u", user, "--", *argv]
            genv["HOME"] = "/var/lib/postgresql" if user == "postgres" else f"/home/{user}"
            genv["USER"] = genv["LOGNAME"] = user
        full = ["nsenter", "-t", str(self.init_pid), "-m", "-u", "-i", "-n", "-p", "-r", "-w", "--",
                "env", "-i", *(f"{k}={v}" for k, v in genv.items()), *argv]
        res = subprocess.run(full, input=input, capture_output=True, text=True, timeout=timeout,
                             stdin=None if input is not None else subprocess.DEVNULL)
        res.args = cmd
        if check and res.returncode != 0:
            raise SystemdHostError(f"{self.name}: `{cmd}` failed ({res.returncode}):\n--- stdout ---\n"
                                   f"{res.stdout[-3000:]}\n--- stderr ---\n{res.stderr[-3000:]}")
        return res

    @property
    def peer_address(self) -> str:
        """Where the other hosts of the fleet reach this one: its loopback address, or its name on the
        fleet's podman network."""
        return self.name if self.network is not None else str(self.address)

    def unit_state(self, unit: str) -> str:
        return self.exec(["systemctl", "is-active", unit]).stdout.strip()

    def system_state(self) -> str:
        return self.exec(["systemctl", "is-system-running"]).stdout.strip()

    def health(self, path: str = "/health") -> tuple[int, str]:
        res = self.exec(["curl", "-s", "-o", "/dev/stdout", "-w", "\n%{http_code}",
                         f"http://127.0.0.1:{self.app_port}{path}"])
        body, _, code = res.stdout.rpartition("\n")
        return int(code or 0), body

    # -- the local apt repository ---------------------------------------------
    def _repo_root(self) -> Path:
        if self.workdir is None:
            raise SystemdHostError(f"{self.name} is not running")
        return self.workdir

    def publish(self, version: str, broken: bool | str = False, depends: Sequence[str] = ()) -> Path:
        """Put acme-app ``version`` into the host's /srv/repo (run apt-get update after)."""
        return debhost.publish(self._repo_root(), version, broken=broken, depends=depends)

    def publish_extra(self, name: str, version: str) -> Path:
        return debhost.publish_extra(self._repo_root(), name, version)

    def unpublish(self, version: str, package: str = "acme-app") -> None:
        debhost.unpublish(self._repo_root(), version, package)

    def reset_repo(self) -> None:
        debhost.reset_repo(self._repo_root())

    def repo_versions(self, package: str = "acme-app") -> list[str]:
        return debhost.repo_versions(self._repo_root(), package)

    def installed_version(self, package: str = "acme-app") -> str | None:
        res = self.exec(["dpkg-query", "-W", "-f", "${Status} ${Version}", package])
        if res.returncode != 0 or "installed" not in res.stdout.split()[:3]:
            return None
        return res.stdout.split()[-1]

    def __repr__(self) -> str:
        return f"<SystemdHost {self.name} {self.address}:{self.ssh_port} {self.container}>"


class SystemdFleet:
    """db01 (PostgreSQL) and app01 (acme-app using the database on db01), on a network of their own."""

    def __init__(self) -> None:
        self.hosts: list[SystemdHost] = []
        self.network: SystemdNetwork | None = None
        try:
            self.network = SystemdNetwork()
            self.db = self._add(SystemdHost("db01", network=self.network, services=("postgresql", "ssh")))
            self.app = self._add(SystemdHost("app01", network=self.network, services=("ssh", "acme-app"),
                                             database=self.db))
        except BaseException:
            self.stop()
            raise

    def _add(self, host: SystemdHost) -> SystemdHost:
        self.hosts.append(host)
        return host.start()

    def publish(self, version: str, broken: bool | str = False) -> None:
        self.app.publish(version, broken=broken)

    def unpublish(self, version: str) -> None:
        self.app.unpublish(version)

    def psql(self, sql: str) -> str:
        """SQL in acme_app on db01."""
        res = self.db.exec(["psql", "-h", "127.0.0.1", "-U", "acme", "-d", "acme_app", "-v", "ON_ERROR_STOP=1",
                            "-tA", "-c", sql], env={"PGPASSFILE": "/root/.pgpass"})
        if res.returncode != 0:
            raise SystemdHostError(f"psql failed: {res.stderr}")
        return res.stdout.strip()

    def stop(self) -> None:
        for host in reversed(self.hosts):
            host.stop()
        self.hosts = []
        if self.network is not None:
            self.network.stop()
            self.network = None
