"""A real, isolated Debian bookworm test host for end-to-end tests.

The polycrate linux-maintenance block runs ``apt upgrade`` on its targets, so
tests must never point it at the machine they run on.  This harness gives
them a throw-away Debian host instead:

* :func:`build_rootfs` debootstraps a bookworm root (openssh-server, python3,
  python3-apt, postgresql, sudo, curl, rclone, isal, acl, ...), provisions it (role
  ``acme`` + database ``acme_app``, user ``ubuntu`` with passwordless sudo,
  a local apt repository in ``/srv/repo`` with ``acme-app`` 1.0.0 installed)
  and packs it with ``tar | zstd`` into a cache file keyed by the package
  list, :data:`HARNESS_VERSION` and the harness' own files.  Later runs only
  unpack it (about a second).
* :class:`DebHost` unpacks the cached root into a temp dir and boots it with
  ``unshare --mount --pid --uts --fork`` + ``chroot``: its own /proc, /dev,
  /dev/pts, /dev/shm, /run, /tmp, its own PID 1 (``debhost-init``) which
  starts sshd, PostgreSQL and acme-app through their /etc/init.d scripts.
  ``stop()`` SIGKILLs that PID 1, so the kernel kills every process of the
  host, then removes the temp dir.

Networking: the host shares the machine's network namespace.  So

* sshd listens on ``address:ssh_port`` (a loopback address of its own,
  127.0.0.2, 127.0.0.3, ...; port 22 when free there);
* PostgreSQL listens on ``127.0.0.1:pg_port`` and on its unix socket in the
  host's own /run/postgresql.  ``pg_port`` is 5432 when free, else a free
  port; the host's /etc/environment sets ``PGPORT`` (read by pam_env on ssh
  logins, kept by sudo via env_keep, set by :meth:`DebHost.exec`) so that
  ``pg_dump -h localhost -U acme acme_app`` inside the host reaches it.  Role
  ``acme`` has password ``acme`` (``pg_password``); ~/.pgpass of root,
  ubuntu and postgres holds it too;
* acme-app listens on ``127.0.0.1:app_port`` (8080 when free, else a free
  port): its health URL inside the host (and on the machine) is
  ``http://127.0.0.1:APP_PORT/health``.

Services are plain LSB init scripts (no systemd): ``service``,
``invoke-rc.d`` and ansible.builtin.service (sysvinit backend; PID 1's comm
is "init") work, ansible.builtin.systemd does not.

The apt sources of the host list only ``deb [trusted=yes] file:/srv/repo ./``
(a flat repository indexed with ``dpkg-scanpackages -m``, so older versions
stay installable for downgrades).  :meth:`DebHost.publish` adds acme-app
versions to it (optionally broken), :meth:`DebHost.unpublish` /
:meth:`DebHost.reset_repo` remove them again.

acme-app builds: ``publish(v)`` is healthy; ``publish(v, broken=True)`` (or
"health") starts but /health answers 500; ``publish(v, broken="start")``
exits at once, so its postinst (``invoke-rc.d acme-app restart``) fails and
``apt-get install`` fails.  Package scripts do start services: the root has
a policy-rc.d that allows it and a /sbin/runlevel that answers "N 2".

Hosts are unpacked under $POLYCRATE_FLEET_TMP, else /dev/shm when it is a
roomy tmpfs without nosuid (about 1 s), else the temp dir.  Addresses and
ports are reserved with flock'ed files in /run/lock/polycrate-fleet, so
several processes can start hosts at once.  A host whose owning process was
killed (SIGKILL) is removed by the next ``DebHost.start()`` (see
:func:`reap_orphans`); normal interpreter exit stops forgotten hosts.

Only root can use this (debootstrap, unshare, chroot, mount).  The build
machine needs the apt packages debootstrap and zstd (plus util-linux, tar,
dpkg, openssh-client, which Debian has anyway; dpkg-dev's
dpkg-scanpackages is used when present, a Python equivalent otherwise).
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import inspect
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "HARNESS_VERSION",
    "PACKAGES",
    "SUITE",
    "DebHostError",
    "DebHost",
    "build_rootfs",
    "build_acme_app_deb",
    "publish",
    "publish_extra",
    "unpublish",
    "reset_repo",
    "repo_versions",
    "find_mirror",
    "default_cache_dir",
    "default_workdir_base",
    "processes_in_root",
    "reap_orphans",
]

#: bump to invalidate every cached root filesystem
HARNESS_VERSION = "1"
#: cached root filesystems kept (the newest; each about 170 MB)
KEEP_IMAGES = 3
SUITE = "bookworm"
PACKAGES: tuple[str, ...] = (
    "openssh-server",
    "python3",
    "python3-apt",
    "postgresql",
    "sudo",
    "curl",
    "ca-certificates",
    "rclone",
    "age",
    "gzip",
    "isal",  # igzip: the linux-maintenance backup compresses with it (about 4x less CPU than zlib)
    "tar",
    "acl",
    "procps",
    "iproute2",
    "less",
)
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: versions the freshly built root carries in its repository (and 1.0.0 installed)
INITIAL_VERSION = "1.0.0"
PG_ROLE = "acme"
PG_PASSWORD = "acme"
PG_DATABASE = "acme_app"
REPO_DIR = "/srv/repo"
SERVICES = ("postgresql", "ssh", "acme-app")

HERE = Path(__file__).resolve().parent
APP_SRC = HERE / "acme_app"
GUEST_INIT = HERE / "guest_init.py"
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class DebHostError(RuntimeError):
    """The Debian test host could not be built, started or used."""


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def _require_root() -> None:
    if os.geteuid() != 0:
        raise DebHostError("the Debian test host needs root (debootstrap, unshare, chroot, mount)")


def _require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise DebHostError(
            "missing tools on this machine: %s (install with: apt-get install -y %s)"
            % (", ".join(missing), " ".join(sorted({_TOOL_PACKAGES.get(t, t) for t in missing})))
        )


_TOOL_PACKAGES = {
    "debootstrap": "debootstrap",
    "zstd": "zstd",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "chroot": "coreutils",
    "tar": "tar",
    "dpkg-deb": "dpkg",
    "ssh-keygen": "openssh-client",
    "mount": "mount",
}


def _run(cmd: Sequence[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    res = subprocess.run(list(cmd), **kw)
    if res.returncode != 0:
        raise DebHostError(
            "command failed (rc=%d): %s\n--- stdout ---\n%s\n--- stderr ---\n%s"
            % (res.returncode, " ".join(map(str, cmd)), (res.stdout or "")[-4000:],
               (res.stderr or "")[-4000:])
        )
    return res


def default_cache_dir() -> Path:
    env = os.environ.get("POLYCRATE_FLEET_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "polycrate-fleet"


def find_mirror(sources: Iterable[Path] | None = None) -> str:
    """The Debian mirror of this machine's apt sources (deb822 and one-line)."""
    if sources is None:
        paths = [Path("/etc/apt/sources.list")]
        d = Path("/etc/apt/sources.list.d")
        if d.is_dir():
            paths += sorted(d.glob("*.sources")) + sorted(d.glob("*.list"))
    else:
        paths = list(sources)
    candidates: list[str] = []
    for p in paths:
        try:
            text = p.read_text()
        except OSError:
            continue
        if p.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line or line[:1].isspace():
                        continue
                    k, _, v = line.partition(":")
                    fields[k.strip().lower()] = v.strip()
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                if "deb" not in fields.get("types", "").split():
                    continue
                suites = fields.get("suites", "").split()
                for uri in fields.get("uris", "").split():
                    candidates.append((uri, suites))
        else:
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                m = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m:
                    candidates.append((m.group(1), [m.group(2)]))
    # prefer the main archive (not -security, not third-party suites)
    for uri, suites in candidates:
        if any(s == SUITE for s in suites) and "security" not in uri:
            return uri.rstrip("/")
    for uri, _suites in candidates:
        if "debian" in uri and "security" not in uri:
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def _cache_key(packages: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"v": HARNESS_VERSION, "suite": SUITE, "packages": sorted(packages),
                         "initial": INITIAL_VERSION}).encode())
    for f in sorted(APP_SRC.iterdir()) + [GUEST_INIT]:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    # the code that shapes the root (not the whole module: editing DebHost
    # itself must not force a rebuild)
    for fn in (_configure_root, _provision_script, _set_pg_port, _set_environment,
               build_acme_app_deb, _reindex):
        h.update(inspect.getsource(fn).encode())
    h.update((_POLICY_ALLOW + _POLICY_DENY + _RUNLEVEL + repr(SERVICES)).encode())
    return h.hexdigest()[:16]


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def _mount_options(path: str) -> set[str]:
    best, opts = "", set()
    try:
        with open("/proc/self/mounts") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) < 4:
                    continue
                mnt = parts[1].replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, opts = mnt, set(parts[3].split(","))
    except OSError:
        pass
    return opts


def _mem_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def default_workdir_base() -> str | None:
    """Where hosts are unpacked: $POLYCRATE_FLEET_TMP, else /dev/shm when it is
    a roomy tmpfs without nosuid/noexec (unpacking there takes ~1s instead of
    several on a busy disk; sudo inside needs setuid), else the temp dir."""
    env = os.environ.get("POLYCRATE_FLEET_TMP")
    if env:
        return env
    shm = "/dev/shm"
    try:
        st = os.statvfs(shm)
    except OSError:
        return None
    free = st.f_bavail * st.f_frsize
    opts = _mount_options(shm)
    if (free >= 4 << 30 and _mem_available() >= 4 << 30 and os.access(shm, os.W_OK)
            and not opts & {"nosuid", "noexec", "ro"}):
        return shm
    return None


def processes_in_root(root: Path) -> list[int]:
    """PIDs (machine view) whose root directory or cwd lies in ``root``."""
    root_s = str(Path(root).resolve())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        for link in ("root", "cwd"):
            try:
                target = os.readlink("/proc/%s/%s" % (entry, link))
            except OSError:
                continue
            if target == root_s or target.startswith(root_s + "/"):
                found.append(int(entry))
                break
    return found


# --------------------------------------------------------------------------
# acme-app packages and the local apt repository
# --------------------------------------------------------------------------

def _migration(version: str, mode: str) -> str:
    """Each version records itself in schema_migrations; the broken "health" build's migration
    also empties the items table (a failed migration that destroyed data), so a rollback has
    to restore the database, not only the package."""
    sql = (
        "CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, applied timestamptz DEFAULT now());\n"
        "INSERT INTO schema_migrations (version) VALUES ('%s') ON CONFLICT DO NOTHING;\n" % version
    )
    if mode == "health":
        sql += "DO $$ BEGIN IF to_regclass('items') IS NOT NULL THEN DELETE FROM items; END IF; END $$;\n"
    return sql


def build_acme_app_deb(version: str, out_dir: Path, broken: bool | str = False,
                       depends: Sequence[str] = ()) -> Path:
    """Build ``acme-app_<version>_all.deb`` into ``out_dir``.

    ``broken``: False (healthy), True or "health" (service starts, /health
    answers 500), "start" (the daemon exits at once: the service fails to
    start, so the package's postinst fails too).  ``depends``: more packages
    it depends on (e.g. one built with :func:`build_extra_deb`).
    """
    mode = {False: "ok", None: "ok", True: "health", "health": "health", "start": "start"}.get(broken)
    if mode is None:
        raise ValueError("broken must be False, True, 'health' or 'start', not %r" % (broken,))
    if not re.fullmatch(r"[0-9][A-Za-z0-9.+~-]*", version):
        raise ValueError("bad version %r" % version)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="acme-app-") as tmp:
        pkg = Path(tmp) / "pkg"
        app = (APP_SRC / "acme-app.py").read_text()
        app = app.replace("@VERSION@", version).replace("@BROKEN@", mode)
        _write(pkg / "usr/bin/acme-app", app, 0o755)
        _write(pkg / "etc/init.d/acme-app", (APP_SRC / "acme-app.init").read_text(), 0o755)
        _write(pkg / "etc/default/acme-app", (APP_SRC / "acme-app.default").read_text(), 0o644)
        _write(pkg / "usr/share/acme-app/VERSION", version + "\n")
        _write(pkg / "usr/share/acme-app/migrate.sql", _migration(version, mode))
        for script in ("postinst", "prerm", "postrm"):
            _write(pkg / "DEBIAN" / script, (APP_SRC / script).read_text(), 0o755)
        _write(pkg / "DEBIAN/conffiles", "/etc/default/acme-app\n/etc/init.d/acme-app\n")
        size_kb = sum(f.stat().st_size for f in pkg.rglob("*") if f.is_file()) // 1024 + 1
        desc = "ACME demo web application"
        if mode != "ok":
            desc += " (broken build: %s)" % mode
        _write(pkg / "DEBIAN/control", (
            "Package: acme-app\n"
            "Version: %s\n"
            "Architecture: all\n"
            "Maintainer: Polycrate Test Fleet <fleet@example.invalid>\n"
            "Depends: %s\n"
            "Section: web\n"
            "Priority: optional\n"
            "Installed-Size: %d\n"
            "Description: %s\n"
            " Tiny HTTP server with a /health endpoint, managed by /etc/init.d/acme-app.\n"
        ) % (version, ", ".join(["python3", *depends]), size_kb, desc))
        deb = out_dir / ("acme-app_%s_all.deb" % version)
        _run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(pkg), str(deb)])
    os.chmod(deb, 0o644)
    return deb


def build_extra_deb(name: str, version: str, out_dir: Path) -> Path:
    """A small package with one file (/usr/share/<name>/VERSION), for "the upgrade pulled in a new
    package" cases."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", name) or not re.fullmatch(r"[0-9][A-Za-z0-9.+~-]*", version):
        raise ValueError("bad package %r %r" % (name, version))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=name + "-") as tmp:
        pkg = Path(tmp) / "pkg"
        _write(pkg / "usr/share" / name / "VERSION", version + "\n")
        _write(pkg / "DEBIAN/control", (
            "Package: %s\nVersion: %s\nArchitecture: all\n"
            "Maintainer: Polycrate Test Fleet <fleet@example.invalid>\nSection: misc\nPriority: optional\n"
            "Installed-Size: 1\nDescription: polycrate test fleet package %s\n A file and nothing else.\n"
        ) % (name, version, name))
        deb = out_dir / ("%s_%s_all.deb" % (name, version))
        _run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(pkg), str(deb)])
    os.chmod(deb, 0o644)
    return deb


def _python_scanpackages(repo: Path) -> str:
    """Fallback for ``dpkg-scanpackages -m . /dev/null`` (all versions kept)."""
    stanzas = []
    for deb in sorted(repo.glob("*.deb")):
        control = _run(["dpkg-deb", "-f", str(deb)]).stdout.rstrip("\n")
        data = deb.read_bytes()
        stanzas.append(control + "\nFilename: ./%s\nSize: %d\nMD5sum: %s\nSHA1: %s\nSHA256: %s\n" % (
            deb.name, len(data), hashlib.md5(data).hexdigest(), hashlib.sha1(data).hexdigest(),
            hashlib.sha256(data).hexdigest()))
    return "\n".join(stanzas)


def _reindex(repo: Path) -> None:
    repo = Path(repo)
    if shutil.which("dpkg-scanpackages"):
        packages = _run(["dpkg-scanpackages", "-m", ".", "/dev/null"], cwd=str(repo)).stdout
    else:
        packages = _python_scanpackages(repo)
    (repo / "Packages").write_text(packages)
    (repo / "Packages.gz").write_bytes(gzip.compress(packages.encode(), mtime=0))
    lines = ["Origin: polycrate-fleet", "Label: polycrate-fleet",
             "Date: " + time.strftime("%a, %d %b %Y %H:%M:%S UTC", time.gmtime()),
             "SHA256:"]
    for name in ("Packages", "Packages.gz"):
        data = (repo / name).read_bytes()
        lines.append(" %s %d %s" % (hashlib.sha256(data).hexdigest(), len(data), name))
    (repo / "Release").write_text("\n".join(lines) + "\n")
    for f in repo.iterdir():
        os.chmod(f, 0o644)
    os.chmod(repo, 0o755)


def publish(root: Path, version: str, broken: bool | str = False, depends: Sequence[str] = ()) -> Path:
    """Build acme-app ``version`` into ``root``/srv/repo and re-index it.

    Replaces a package of the same version.  The host still needs
    ``apt-get update`` to see it.
    """
    repo = Path(root) / REPO_DIR.lstrip("/")
    deb = build_acme_app_deb(version, repo, broken=broken, depends=depends)
    _reindex(repo)
    return deb


def publish_extra(root: Path, name: str, version: str) -> Path:
    """Put a small package ``name`` ``version`` (see :func:`build_extra_deb`) into the repository."""
    repo = Path(root) / REPO_DIR.lstrip("/")
    deb = build_extra_deb(name, version, repo)
    _reindex(repo)
    return deb


def unpublish(root: Path, version: str, package: str = "acme-app") -> None:
    repo = Path(root) / REPO_DIR.lstrip("/")
    deb = repo / ("%s_%s_all.deb" % (package, version))
    if not deb.exists():
        raise DebHostError("%s %s is not published" % (package, version))
    deb.unlink()
    _reindex(repo)


def reset_repo(root: Path) -> None:
    """Back to the initial repository: only acme-app 1.0.0 (healthy), no other package."""
    repo = Path(root) / REPO_DIR.lstrip("/")
    for deb in repo.glob("*.deb"):
        deb.unlink()
    publish(root, INITIAL_VERSION)


def repo_versions(root: Path, package: str = "acme-app") -> list[str]:
    repo = Path(root) / REPO_DIR.lstrip("/")
    text = (repo / "Packages").read_text() if (repo / "Packages").exists() else ""
    return re.findall(r"^Package: %s\n(?:.+\n)*?Version: (\S+)" % re.escape(package), text, re.M)


# --------------------------------------------------------------------------
# the namespace that runs a root
# --------------------------------------------------------------------------

_BOOT_SCRIPT = r"""
set -e
R="$1"; HOSTNAME_="$2"; shift 2
mount --make-rprivate /
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys" || true
mount -t tmpfs -o mode=755,nosuid,size=16m tmpfs "$R/dev"
for d in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    n=${d%%:*}; r=${d#*:}; mknod -m 666 "$R/dev/$n" c ${r%%:*} ${r#*:}
done
mkdir -p "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/dev/shm"
mount -t tmpfs -o mode=755,nosuid,nodev,size=64m tmpfs "$R/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/tmp"
hostname "$HOSTNAME_"
exec chroot "$R" /usr/local/sbin/debhost-init "$@"
"""


class _Namespace:
    """A root directory running under its own PID/mount/UTS namespace."""

    def __init__(self, root: Path, hostname: str, services: Sequence[str], log_path: Path,
                 env: Mapping[str, str] | None = None):
        self.root = Path(root).resolve()
        self.hostname = hostname
        self.services = list(services)
        self.log_path = Path(log_path)
        self.env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.init_pid: int | None = None

    def start(self, timeout: float = 120.0) -> None:
        (self.root / "run").mkdir(exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--pid", "--uts", "--fork", "--kill-child",
                 "--propagation", "private", "--", "/bin/sh", "-c", _BOOT_SCRIPT, "debhost-boot",
                 str(self.root), self.hostname, *self.services],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        # find the namespace's PID 1 (the child of unshare)
        while self.init_pid is None:
            self.init_pid = self._find_child(self.proc.pid)
            if self.init_pid is None:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise DebHostError("host did not boot:\n" + self._log_tail())
                time.sleep(0.01)
        # wait until debhost-init wrote /run/debhost-ready (inside the namespace's /run tmpfs)
        ready = "/proc/%d/root/run/debhost-ready" % self.init_pid
        while True:
            if self.proc.poll() is not None:
                raise DebHostError("host died while booting:\n" + self._log_tail())
            try:
                status = Path(ready).read_text().strip()
                break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise DebHostError("host did not become ready in %.0fs:\n%s" % (timeout, self._log_tail()))
            time.sleep(0.05)
        if status != "ok":
            init_log = self.exec("cat /var/log/debhost-init.log").stdout
            raise DebHostError("host services did not start: %s\n%s" % (status, init_log[-6000:]))

    @staticmethod
    def _find_child(pid: int) -> int | None:
        try:
            kids = Path("/proc/%d/task/%d/children" % (pid, pid)).read_text().split()
            if kids:
                return int(kids[0])
        except OSError:
            pass
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path("/proc/%s/stat" % entry).read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    return int(entry)
        return None

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exec(self, cmd: str | Sequence[str], *, check: bool = False, timeout: float | None = 600,
             input: str | None = None, env: Mapping[str, str] | None = None,
             user: str | None = None) -> subprocess.CompletedProcess:
        if not self.alive() or self.init_pid is None:
            raise DebHostError("host is not running")
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        genv = {"PATH": GUEST_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb",
                "DEBIAN_FRONTEND": "noninteractive", "USER": "root", "LOGNAME": "root"}
        genv.update(self.env)
        if env:
            genv.update(env)
        if user and user != "root":
            argv = ["runuser", "-u", user, "--"] + argv
            genv["HOME"] = "/var/lib/postgresql" if user == "postgres" else "/home/" + user
            genv["USER"] = genv["LOGNAME"] = user
        full = (["nsenter", "-t", str(self.init_pid), "-m", "-u", "-p", "-r", "-w", "--",
                 "env", "-i"] + ["%s=%s" % kv for kv in genv.items()] + argv)
        res = subprocess.run(full, input=input, capture_output=True, text=True, timeout=timeout,
                             stdin=None if input is not None else subprocess.DEVNULL)
        res.args = cmd
        if check and res.returncode != 0:
            raise DebHostError("command in host failed (rc=%d): %s\n--- stdout ---\n%s\n--- stderr ---\n%s"
                               % (res.returncode, cmd, res.stdout[-4000:], res.stderr[-4000:]))
        return res

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        # SIGKILL the namespace's PID 1: the kernel then kills every process
        # of the namespace; unshare (its parent) reaps it and exits.
        if self.init_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.init_pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # unshare --kill-child: killing unshare kills its child too
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while True:
            left = processes_in_root(self.root)
            if not left:
                break
            if time.monotonic() > deadline:
                raise DebHostError("processes still running in %s after stop: %s" % (self.root, left))
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        self.proc = None
        self.init_pid = None


# --------------------------------------------------------------------------
# building the root filesystem
# --------------------------------------------------------------------------

_POLICY_ALLOW = "#!/bin/sh\n# debhost: services may be started\nexit 0\n"
_POLICY_DENY = "#!/bin/sh\n# debhost: no service starts while provisioning\nexit 101\n"
_RUNLEVEL = "#!/bin/sh\n# debhost: there is no sysvinit; answer like one in runlevel 2\necho N 2\n"


def _set_pg_port(root: Path, port: int) -> None:
    for conf in (root / "etc/postgresql").glob("*/main/postgresql.conf"):
        text = conf.read_text()
        text = re.sub(r"^#?\s*port\s*=.*$", "port = %d\t\t\t\t# set by debhost" % port, text,
                      count=1, flags=re.M)
        text = re.sub(r"^#?\s*listen_addresses\s*=.*$", "listen_addresses = '127.0.0.1'\t# set by debhost",
                      text, count=1, flags=re.M)
        conf.write_text(text)


def _listen_also_on(root: Path, address: str) -> None:
    """PostgreSQL also on the host's own loopback address, where other hosts reach it (password
    logins from 127.0.0.0/8)."""
    for conf in (root / "etc/postgresql").glob("*/main/postgresql.conf"):
        text = conf.read_text()
        text = re.sub(r"^listen_addresses\s*=.*$", "listen_addresses = '127.0.0.1,%s'\t# set by debhost" % address,
                      text, count=1, flags=re.M)
        conf.write_text(text)
    for hba in (root / "etc/postgresql").glob("*/main/pg_hba.conf"):
        text = hba.read_text()
        line = "host    all             all             127.0.0.0/8             scram-sha-256\n"
        if line not in text:
            hba.write_text(text + "# set by debhost: the other test hosts\n" + line)


def _set_environment(root: Path, pg_port: int) -> None:
    _write(root / "etc/environment", 'PGPORT="%d"\n' % pg_port)
    _write(root / "etc/profile.d/debhost.sh", "export PGPORT=%d\n" % pg_port)


def _configure_root(root: Path) -> None:
    """Static configuration of a freshly debootstrapped root."""
    _write(root / "usr/sbin/policy-rc.d", _POLICY_DENY, 0o755)
    # smaller root (unpacked per host): no docs, man pages, translations
    _write(root / "etc/dpkg/dpkg.cfg.d/90debhost-nodoc", (
        "path-exclude /usr/share/doc/*\n"
        "path-exclude /usr/share/man/*\n"
        "path-exclude /usr/share/info/*\n"
        "path-exclude /usr/share/locale/*\n"
        "path-include /usr/share/locale/locale.alias\n"
    ))
    for sub in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"):
        d = root / sub
        if d.is_dir():
            for child in d.iterdir():
                if child.name == "locale.alias":
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    _write(root / "sbin/runlevel", _RUNLEVEL, 0o755)
    _write(root / "usr/local/sbin/debhost-init", GUEST_INIT.read_text(), 0o755)
    _write(root / "etc/hostname", "debhost\n")
    _write(root / "etc/hosts", "127.0.0.1\tlocalhost\n::1\tip6-localhost ip6-loopback\n")
    _write(root / "etc/resolv.conf", "")
    # apt: only the local repository
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    for f in (root / "etc/apt/sources.list.d").glob("*"):
        f.unlink()
    _write(root / "etc/apt/sources.list.d/local.list", "deb [trusted=yes] file:%s ./\n" % REPO_DIR)
    _write(root / "etc/apt/apt.conf.d/90debhost", (
        'APT::Install-Recommends "false";\n'
        'APT::Install-Suggests "false";\n'
        'Acquire::Languages "none";\n'
        'Dpkg::Options { "--force-confdef"; "--force-confold"; };\n'
    ))
    (root / REPO_DIR.lstrip("/")).mkdir(parents=True, exist_ok=True)
    # ssh: per-instance host key and listen address are written at start
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    _write(root / "etc/ssh/sshd_config.d/00-debhost-base.conf", (
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UseDNS no\n"
        "MaxSessions 50\n"
        "MaxStartups 50:30:100\n"
        "AcceptEnv LANG LC_*\n"
    ))
    # sudo: keep PGPORT; pam_env also for sudo sessions
    _write(root / "etc/sudoers.d/debhost", (
        'Defaults env_keep += "PGPORT PGHOST"\n'
        "ubuntu ALL=(ALL:ALL) NOPASSWD: ALL\n"
    ), 0o440)
    pam_sudo = root / "etc/pam.d/sudo"
    if pam_sudo.exists() and "pam_env" not in pam_sudo.read_text():
        pam_sudo.write_text(pam_sudo.read_text() + "session    required   pam_env.so readenv=1 user_readenv=0\n")


def _provision_script(pg_port: int) -> str:
    return rf"""
set -e
id ubuntu >/dev/null 2>&1 || useradd -m -s /bin/bash -G sudo ubuntu
passwd -d ubuntu >/dev/null
for h in /root /home/ubuntu; do mkdir -p $h/.ssh; chmod 700 $h/.ssh; done
chown ubuntu:ubuntu /home/ubuntu/.ssh
runuser -u postgres -- psql -v ON_ERROR_STOP=1 -q -c "CREATE ROLE {PG_ROLE} LOGIN PASSWORD '{PG_PASSWORD}'"
runuser -u postgres -- createdb -O {PG_ROLE} {PG_DATABASE}
for h in /root /home/ubuntu /var/lib/postgresql; do
    echo '*:*:*:{PG_ROLE}:{PG_PASSWORD}' > $h/.pgpass; chmod 600 $h/.pgpass
done
chown ubuntu:ubuntu /home/ubuntu/.pgpass
chown postgres:postgres /var/lib/postgresql/.pgpass
PGPASSWORD= psql -h localhost -U {PG_ROLE} -d {PG_DATABASE} -v ON_ERROR_STOP=1 -q -c "CREATE TABLE IF NOT EXISTS app_meta (k text primary key, v text); INSERT INTO app_meta VALUES ('created_by', 'debhost') ON CONFLICT DO NOTHING"
apt-get update -q
apt-get install -y -q acme-app={INITIAL_VERSION}
update-rc.d acme-app defaults
/etc/init.d/postgresql stop
apt-get clean
rm -rf /var/lib/apt/lists/partial/* /var/cache/apt/*.bin /var/log/debhost-init.log
"""


def build_rootfs(cache_dir: Path | str | None = None, *, packages: Sequence[str] = PACKAGES,
                 mirror: str | None = None, force: bool = False, log=None) -> Path:
    """Return the cached, packed root filesystem (``.tar.zst``); build it if missing.

    The first build takes about a minute (debootstrap + provisioning); the
    cache file is keyed by the package list, :data:`HARNESS_VERSION` and the
    harness' files.  Concurrent callers serialise on a lock file.
    """
    _require_root()
    _require_tools("debootstrap", "zstd", "tar", "unshare", "nsenter", "chroot", "dpkg-deb")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = _cache_key(packages)
    target = cache_dir / ("debhost-%s-%s.tar.zst" % (SUITE, key))
    with open(cache_dir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists() and not force:
            return target
        mirror = mirror or find_mirror()
        work = Path(tempfile.mkdtemp(prefix="build-", dir=cache_dir))
        root = work / "root"
        ns = None
        try:
            t0 = time.monotonic()
            res = subprocess.run(
                ["debootstrap", "--variant=minbase", "--include=" + ",".join(packages), SUITE,
                 str(root), mirror], capture_output=True, text=True)
            if res.returncode != 0:
                raise DebHostError("debootstrap failed (mirror %s):\n%s\n%s" % (
                    mirror, res.stdout[-4000:], res.stderr[-4000:]))
            if log:
                log("debootstrap took %.1fs" % (time.monotonic() - t0))
            _configure_root(root)
            publish(root, INITIAL_VERSION)
            pg_port = _free_port("127.0.0.1", 5432 + 7000)
            _set_pg_port(root, pg_port)
            _set_environment(root, pg_port)
            ns = _Namespace(root, "debhost-build", ["postgresql"], work / "boot.log",
                            env={"PGPORT": str(pg_port)})
            ns.start()
            ns.exec(_provision_script(pg_port), check=True)
            ns.stop()
            ns = None
            _write(root / "usr/sbin/policy-rc.d", _POLICY_ALLOW, 0o755)
            tmp_target = target.with_suffix(".partial")
            t1 = time.monotonic()
            with open(tmp_target, "wb") as out:
                tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-cf", "-", "."],
                                       stdout=subprocess.PIPE)
                z = subprocess.run(["zstd", "-q", "-T0", "-3", "-c"], stdin=tar.stdout, stdout=out)
                tar.stdout.close()
                if tar.wait() != 0 or z.returncode != 0:
                    raise DebHostError("packing the root filesystem failed")
            os.replace(tmp_target, target)
            if log:
                log("packing took %.1fs" % (time.monotonic() - t1))
            # keep the newest few images, not only this one: checkouts of different harness versions
            # (worktrees, branches) on one machine would otherwise delete each other's image at every build
            def _mtime(p: Path) -> float:
                try:
                    return p.stat().st_mtime
                except OSError:
                    return 0.0

            others = sorted((p for p in cache_dir.glob("debhost-%s-*.tar.zst" % SUITE) if p != target),
                            key=_mtime, reverse=True)
            for old in others[KEEP_IMAGES - 1:]:
                old.unlink(missing_ok=True)
        finally:
            if ns is not None:
                with contextlib.suppress(Exception):
                    ns.stop()
            if not processes_in_root(root):
                shutil.rmtree(work, ignore_errors=True)
    return target


# --------------------------------------------------------------------------
# ports and addresses
# --------------------------------------------------------------------------

# Reservations: in-process sets plus flock'ed lock files, so that hosts
# started by several processes at once (pytest-xdist, parallel engineers)
# do not pick the same address or port before their daemons bind it.  A lock
# is held (fd open) for the life of the host and dies with its process.
_reserved_lock = threading.Lock()
_locks: dict[tuple[str, int], int] = {}
_LOCK_DIR = Path("/run/lock/polycrate-fleet") if Path("/run/lock").is_dir() else \
    Path(tempfile.gettempdir()) / "polycrate-fleet-locks"


def _try_lock(address: str, port: int) -> bool:
    """Reserve (address, port); port 0 reserves the address itself."""
    key = (address, port)
    if key in _locks:
        return False
    _LOCK_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(_LOCK_DIR / ("%s-%d.lock" % (address, port))), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _locks[key] = fd
    return True


def _port_free(address: str, port: int) -> bool:
    if (address, port) in _locks or ("0.0.0.0", port) in _locks:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def _free_port(address: str, preferred: int | None = None) -> int:
    with _reserved_lock:
        if preferred and _port_free(address, preferred) and _try_lock(address, preferred):
            return preferred
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((address, 0))
                port = s.getsockname()[1]
            if _try_lock(address, port):
                return port
    raise DebHostError("no free port on %s" % address)


def _release(address: str, port: int | None) -> None:
    with _reserved_lock:
        fd = _locks.pop((address, port or 0), None)
        if fd is not None:
            os.close(fd)


def _pick_address() -> str:
    with _reserved_lock:
        for i in range(2, 255):
            addr = "127.0.0.%d" % i
            if _port_free(addr, 22) and _try_lock(addr, 0):
                return addr
    raise DebHostError("no free loopback address")


# --------------------------------------------------------------------------
# the host
# --------------------------------------------------------------------------

class SSHAccess:
    """How tests and Ansible reach a test host over SSH on its loopback address: shared by DebHost and
    tests.fleet.systemdhost.SystemdHost, which set address, ssh_port, user, ssh_key_path, pg_password,
    pg_port and app_port."""

    address: str | None  # set when the host starts
    ssh_port: int
    user: str
    ssh_key_path: Path
    pg_password: str
    pg_port: int
    app_port: int

    @property
    def health_url(self) -> str:
        return "http://127.0.0.1:%d/health" % self.app_port

    def inventory_vars(self) -> dict:
        """Ansible host vars for reaching this host over ssh."""
        return {
            "ansible_host": self.address,
            "ansible_port": self.ssh_port,
            "ansible_user": self.user,
            "ansible_ssh_private_key_file": str(self.ssh_key_path),
            # no ssh_args: the SSH settings a user's inventory has, so polycrate's run-scoped connection
            # sharing (runtime/ssh_masters.py) applies, as it does for them
            "ansible_ssh_common_args": ("-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                                        "-o LogLevel=ERROR"),
            "ansible_python_interpreter": "/usr/bin/python3",
            "pg_password": self.pg_password,
            "pg_port": self.pg_port,
            "app_port": self.app_port,
            "health_url": self.health_url,
        }

    def ssh_command(self, *remote: str, user: str | None = None) -> list[str]:
        """argv for the real ssh client running ``remote`` on this host."""
        return ["ssh", "-i", str(self.ssh_key_path), "-p", str(self.ssh_port),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ControlMaster=no",
                "%s@%s" % (user or self.user, self.address), *remote]


class DebHost(SSHAccess):
    """A running Debian bookworm host (context manager).

    >>> with DebHost() as host:
    ...     host.exec("cat /etc/debian_version").stdout
    """

    _counter = 0

    def __init__(self, address: str | None = None, *, ssh_port: int | None = None,
                 pg_port: int | None = None, app_port: int | None = None,
                 user: str = "ubuntu", cache_dir: Path | str | None = None,
                 workdir: Path | str | None = None, name: str | None = None,
                 boot_timeout: float = 120.0, services: Sequence[str] = SERVICES,
                 database: DebHost | None = None):
        """``services``: the /etc/init.d services PID 1 starts (all three by default; a database
        host: postgresql and ssh; an application host: ssh and acme-app).  ``database``: a started
        host whose PostgreSQL this host's acme-app uses over TCP (its address and port go into
        /etc/default/acme-app and /etc/environment); None: its own PostgreSQL on localhost."""
        DebHost._counter += 1
        self.name = name or "debhost%d" % DebHost._counter
        self._want_address = address
        self._want_ssh_port = ssh_port
        self._want_pg_port = pg_port
        self._want_app_port = app_port
        self.user = user
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._workdir_base = str(workdir) if workdir is not None else default_workdir_base()
        self.boot_timeout = boot_timeout
        unknown = set(services) - set(SERVICES)
        if unknown:
            raise ValueError("unknown services %s (choose from %s)" % (sorted(unknown), ", ".join(SERVICES)))
        self.services = tuple(s for s in SERVICES if s in services)  # boot order stays postgresql, ssh, acme-app
        self.database = database
        self.address: str | None = None
        self.ssh_port: int | None = None
        self.pg_port: int | None = None
        self.app_port: int | None = None
        self.pg_user = PG_ROLE
        self.pg_password = PG_PASSWORD
        self.pg_database = PG_DATABASE
        self.workdir: Path | None = None
        self.root: Path | None = None
        self.ssh_key_path: Path | None = None
        self.host_key_path: Path | None = None
        self.start_seconds: float | None = None
        self._ns: _Namespace | None = None
        self._held: list[tuple[str, int]] = []
        self._finalizer = None

    # -- lifecycle ----------------------------------------------------------
    def __enter__(self) -> DebHost:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> DebHost:
        if self._ns is not None:
            raise DebHostError("host already started")
        _require_root()
        _require_tools("zstd", "tar", "unshare", "nsenter", "chroot", "ssh-keygen", "dpkg-deb")
        t0 = time.monotonic()
        image = build_rootfs(self.cache_dir)
        try:
            self._allocate()
            with contextlib.suppress(Exception):
                reap_orphans()
            self.workdir = Path(tempfile.mkdtemp(prefix="debhost-%s-" % self.name, dir=self._workdir_base))
            (self.workdir / "owner").write_text("%d %s\n" % (os.getpid(), _proc_starttime(os.getpid())))
            self._finalizer = weakref.finalize(self, _cleanup, self.workdir, None)
            self.root = self.workdir / "root"
            self.root.mkdir()
            tar = subprocess.Popen(["zstd", "-q", "-d", "-c", str(image)], stdout=subprocess.PIPE)
            res = subprocess.run(["tar", "-C", str(self.root), "--numeric-owner", "-xpf", "-"],
                                 stdin=tar.stdout, capture_output=True, text=True)
            tar.stdout.close()
            if tar.wait() != 0 or res.returncode != 0:
                raise DebHostError("unpacking %s failed: %s" % (image, res.stderr))
            self._personalise()
            self._ns = _Namespace(self.root, self.name, self.services, self.workdir / "boot.log",
                                  env={"PGPORT": str(self.pg_port)})
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, _cleanup, self.workdir, self._ns)
            self._ns.start(timeout=self.boot_timeout)
            self._wait_port(self.address, self.ssh_port)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _allocate(self) -> None:
        if self._want_address:
            self.address = self._want_address
        else:
            self.address = _pick_address()
            self._held.append((self.address, 0))
        if not self.address.startswith("127."):
            raise DebHostError("only loopback addresses (127.0.0.0/8) are allowed, not %s" % self.address)
        if self.database is not None and not self._want_pg_port:
            self._want_pg_port = self.database.pg_port  # the port of the database it uses
        for attr, addr, preferred in (("ssh_port", self.address, 22), ("pg_port", "127.0.0.1", 5432),
                                      ("app_port", "127.0.0.1", 8080)):
            wanted = getattr(self, "_want_" + attr)
            if attr == "pg_port" and "postgresql" in self.services and not wanted:
                # PostgreSQL listens on 127.0.0.1 and on the host's own address: free on both
                for _ in range(50):
                    port = _free_port("127.0.0.1", 5432 if _ == 0 else None)
                    self._held.append(("127.0.0.1", port))
                    if _port_free(self.address, port):
                        break
                self.pg_port = port
            elif wanted:
                setattr(self, attr, wanted)
            else:
                setattr(self, attr, _free_port(addr, preferred))
                self._held.append((addr, getattr(self, attr)))

    def _personalise(self) -> None:
        root = self.root
        keydir = self.workdir / "ssh"
        keydir.mkdir(mode=0o700)
        self.ssh_key_path = keydir / "id_ed25519"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "polycrate-fleet@" + self.name,
              "-f", str(self.ssh_key_path)])
        self.host_key_path = root / "etc/ssh/ssh_host_ed25519_key"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@" + self.name,
              "-f", str(self.host_key_path)])
        pub = (keydir / "id_ed25519.pub").read_text()
        for home, owner in (("root", None), ("home/ubuntu", "ubuntu")):
            ak = root / home / ".ssh/authorized_keys"
            _write(ak, pub, 0o600)
            if owner:
                st = (root / home).stat()
                os.chown(ak, st.st_uid, st.st_gid)
        _write(root / "etc/ssh/sshd_config.d/10-debhost-listen.conf", (
            "ListenAddress %s:%d\nHostKey /etc/ssh/ssh_host_ed25519_key\n" % (self.address, self.ssh_port)))
        _set_pg_port(root, self.pg_port)
        _set_environment(root, self.pg_port)
        _listen_also_on(root, self.address)
        db_host = self.database.address if self.database is not None else "localhost"
        _write(root / "etc/default/acme-app", (APP_SRC / "acme-app.default").read_text()
               .replace("ACME_APP_PORT=8080", "ACME_APP_PORT=%d" % self.app_port)
               .replace("#ACME_DB_HOST=localhost", "ACME_DB_HOST=%s" % db_host)
               .replace("#ACME_DB_PORT=5432", "ACME_DB_PORT=%d" % self.pg_port))
        _write(root / "etc/hostname", self.name + "\n")
        _write(root / "etc/hosts", "127.0.0.1\tlocalhost\n%s\t%s\n::1\tip6-localhost ip6-loopback\n"
               % (self.address, self.name))

    @staticmethod
    def _wait_port(address: str, port: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((address, port), 1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise DebHostError("nothing listens on %s:%d" % (address, port)) from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Kill every process of the host and remove its temp dir."""
        if self._ns is not None:
            try:
                self._ns.stop()
            finally:
                self._ns = None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self.workdir is not None and self.root is not None and processes_in_root(self.root):
            raise DebHostError("processes left in %s; not removing it" % self.root)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        for addr, port in self._held:
            _release(addr, port)
        self._held = []

    @property
    def running(self) -> bool:
        return self._ns is not None and self._ns.alive()

    # -- using it -----------------------------------------------------------
    def exec(self, cmd: str | Sequence[str], *, check: bool = False, timeout: float | None = 600,
             input: str | None = None, env: Mapping[str, str] | None = None,
             user: str | None = None) -> subprocess.CompletedProcess:
        """Run ``cmd`` inside the host (its namespaces + chroot) as root (or ``user``).

        A string runs through ``/bin/sh -c``.  The environment is clean:
        PATH, HOME, LANG=C.UTF-8, DEBIAN_FRONTEND=noninteractive, PGPORT.
        Returns the CompletedProcess (text); ``check=True`` raises on failure.
        """
        if self._ns is None:
            raise DebHostError("host is not running")
        return self._ns.exec(cmd, check=check, timeout=timeout, input=input, env=env, user=user)

    @property
    def pid(self) -> int | None:
        """Machine-side PID of the host's PID 1."""
        return self._ns.init_pid if self._ns else None

    @property
    def peer_address(self) -> str:
        """Where the other hosts reach this one (they share the machine's network namespace)."""
        return self.address


    # -- the local apt repository ---------------------------------------------
    def publish(self, version: str, broken: bool | str = False, depends: Sequence[str] = ()) -> Path:
        """Put acme-app ``version`` into the host's /srv/repo (run apt-get update after)."""
        return publish(self.root, version, broken=broken, depends=depends)

    def publish_extra(self, name: str, version: str) -> Path:
        """Put a small package ``name`` into the host's repository (e.g. a new dependency)."""
        return publish_extra(self.root, name, version)

    def unpublish(self, version: str, package: str = "acme-app") -> None:
        unpublish(self.root, version, package)

    def reset_repo(self) -> None:
        reset_repo(self.root)

    def repo_versions(self, package: str = "acme-app") -> list[str]:
        return repo_versions(self.root, package)

    def installed_version(self, package: str = "acme-app") -> str | None:
        res = self.exec(["dpkg-query", "-W", "-f", "${Status} ${Version}", package])
        if res.returncode != 0 or "installed" not in res.stdout.split()[:3]:
            return None
        return res.stdout.split()[-1]

    def __repr__(self) -> str:
        return "<DebHost %s %s:%s running=%s>" % (self.name, self.address, self.ssh_port, self.running)


def _proc_starttime(pid: int) -> str | None:
    try:
        return Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def reap_orphans(bases: Iterable[str | None] | None = None) -> list[Path]:
    """Kill and remove hosts whose owning process died without stopping them
    (e.g. a test run killed with SIGKILL).  Called by every DebHost.start().
    Returns the removed work dirs."""
    if bases is None:
        bases = {default_workdir_base(), tempfile.gettempdir(), "/dev/shm"}
    removed = []
    for base in bases:
        if not base or not os.path.isdir(base):
            continue
        for workdir in Path(base).glob("debhost-*"):
            owner = workdir / "owner"
            try:
                pid_s, start = owner.read_text().split()
                pid = int(pid_s)
            except (OSError, ValueError):
                continue
            if _proc_starttime(pid) == start:
                continue  # owner still alive
            root = workdir / "root"
            for _ in range(100):
                left = processes_in_root(root)
                if not left:
                    break
                for p in left:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, signal.SIGKILL)
                time.sleep(0.05)
            if not processes_in_root(root):
                shutil.rmtree(workdir, ignore_errors=True)
                removed.append(workdir)
    return removed


def _cleanup(workdir: Path, ns: _Namespace | None) -> None:
    """Finalizer for a DebHost that was never stopped (interpreter exit)."""
    if ns is not None:
        with contextlib.suppress(Exception):
            ns.stop()
    root = Path(workdir) / "root"
    if not root.exists() or not processes_in_root(root):
        shutil.rmtree(workdir, ignore_errors=True)
