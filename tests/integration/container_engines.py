"""Both container engines for the container tests: podman, and a real Docker engine (Debian's
docker.io) that the tests start themselves and stop by PID (recipe: /work/shared/recipes/docker-engine.md).

``engine`` is parametrized over both; a test gets an ``EngineUnderTest``: which engine, the
environment polycrate runs with (DOCKER_HOST for Docker) and the workspace.poly lines that choose
it (``config.engine``). An engine this machine cannot run skips with the reason.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

LABEL = "org.polycrate.run"


@dataclass
class EngineUnderTest:
    name: str  # "podman" | "docker"
    env: dict[str, str] = field(default_factory=dict)  # for polycrate and the engine's client

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([self.name, *args], capture_output=True, text=True, check=check,
                              env=dict(os.environ) | self.env)

    def containers(self, workspace_name: str | None = None) -> list[str]:
        """Our containers (the run label), running or not."""
        label = f"{LABEL}={workspace_name}" if workspace_name else LABEL
        out = self.cli("ps", "-a", "--filter", f"label={label}", "--format", "{{.Names}}").stdout
        return [line for line in out.splitlines() if line.strip()]

    def choose(self, root: Path) -> None:
        """workspace.poly says config.engine: this engine, config.runtime: container."""
        ws = yaml.safe_load((root / "workspace.poly").read_text())
        ws.setdefault("config", {}).update({"engine": self.name, "runtime": "container"})
        (root / "workspace.poly").write_text(yaml.safe_dump(ws, sort_keys=False, allow_unicode=True))


def _base_image_ready(engine_name: str, env: dict[str, str]) -> None:
    """The base image in this engine (imported from the cached tarball), or skip with the reason."""
    from polycrate.runtime import toolchain

    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        engine = toolchain.Engine(engine_name, shutil.which(engine_name) or engine_name)
        if not engine.image_id(toolchain.base_image_tag()) and not toolchain.base_tarball().exists() \
                and os.geteuid() != 0:
            pytest.skip("no polycrate base image and not root to build it (polycrate toolchain build --base)")
        started = time.monotonic()
        tag, made = toolchain.ensure_base_image(engine, lambda line: None)
        if made:
            print(f"\nbase image {tag} made in {engine_name} in {time.monotonic() - started:.1f}s", file=sys.stderr)
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Dockerd:
    """A private dockerd: its own data and exec roots, socket and pidfile; no iptables, no bridge."""

    def __init__(self) -> None:
        # short: the unix socket's path must stay under 108 bytes
        self.base = Path(tempfile.mkdtemp(prefix="pc-dockerd-", dir="/tmp"))
        self.socket = self.base / "docker.sock"
        self.log = self.base / "dockerd.log"
        self.proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        argv = ["dockerd", "--data-root", str(self.base / "data"), "--exec-root", str(self.base / "exec"),
                "-H", self.host, "--pidfile", str(self.base / "docker.pid"), "--iptables=false",
                "--ip6tables=false", "--bridge=none", "--ip-forward=false", "--ip-masq=false"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            probe = subprocess.run(["docker", "-H", self.host, "version", "--format", "{{.Server.Version}}"],
                                   capture_output=True, text=True)
            if probe.returncode == 0:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
                self.stop()
                pytest.skip(f"dockerd does not start on this machine: {' | '.join(tail) or 'no output'}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM by PID (dockerd stops its containers and its containerd), then remove its roots."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.proc = None
        # what dockerd leaves even with --bridge=none: mounts under its roots, then the roots themselves
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(self.base))]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def dockerd():
    if not shutil.which("dockerd") or not shutil.which("docker"):
        pytest.skip("no Docker engine installed (apt-get install docker.io; scripts/setup.sh does)")
    if os.geteuid() != 0:
        pytest.skip("dockerd needs root here")
    daemon = Dockerd()
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


def _podman() -> EngineUnderTest:
    if not shutil.which("podman"):
        pytest.skip("podman is not installed (apt-get install podman; scripts/setup.sh does)")
    engine = EngineUnderTest("podman")
    _base_image_ready("podman", {})
    from polycrate.runtime import toolchain

    proc = engine.cli("run", "--rm", "--network", "host", "--init", toolchain.BASE_IMAGE, "true", check=False)
    if proc.returncode != 0:
        pytest.skip(f"podman cannot run a container on this machine: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return engine


@pytest.fixture(scope="session")
def podman_engine() -> EngineUnderTest:
    return _podman()


@pytest.fixture(scope="session")
def docker_engine(dockerd) -> EngineUnderTest:
    engine = EngineUnderTest("docker", {"DOCKER_HOST": dockerd.host})
    _base_image_ready("docker", engine.env)
    return engine


@pytest.fixture(params=["podman", "docker"])
def engine(request) -> EngineUnderTest:
    """Each container test once with podman and once with a Docker engine of its own."""
    return request.getfixturevalue(f"{request.param}_engine")
