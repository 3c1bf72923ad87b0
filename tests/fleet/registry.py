"""A real OCI registry on loopback: Debian's docker-registry (distribution 2.8), started and stopped by PID.

Plain HTTP on 127.0.0.1:<free port>, storage in a temporary folder; optionally htpasswd
(bcrypt) basic auth. Tests reach it directly (``127.0.0.1:PORT/...``) or as a mirror of the
article's ``registry.acme-corp.com`` (``POLYCRATE_REGISTRY_MIRRORS``).
"""
from __future__ import annotations

import shutil
import tempfile
import urllib.request
import warnings
from pathlib import Path

from tests.fleet.process import free_port, start_server, stop_process

DOCKER_REGISTRY = shutil.which("docker-registry") or "/usr/bin/docker-registry"


def bcrypt_hash(password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # glibc's libxcrypt does bcrypt ($2b$); the registry accepts only bcrypt

    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))


class LocalRegistry:
    def __init__(self, users: dict[str, str] | None = None, address: str = "127.0.0.1"):
        self.address = address
        self.port = free_port(address)
        self.dir = Path(tempfile.mkdtemp(prefix="polycrate-registry-"))
        self.storage = self.dir / "storage"
        self.storage.mkdir()
        auth = ""
        if users:
            htpasswd = self.dir / "htpasswd"
            htpasswd.write_text("".join(f"{u}:{bcrypt_hash(p)}\n" for u, p in users.items()))
            auth = f"auth:\n  htpasswd:\n    realm: polycrate-test\n    path: {htpasswd}\n"
        config = self.dir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {address}:{self.port}\n" + auth
        )
        self.log = self.dir / "registry.log"
        self.proc = start_server([DOCKER_REGISTRY, "serve", str(config)], address, self.port, self.log,
                                 "docker-registry", timeout=20)

    @property
    def host(self) -> str:
        return f"{self.address}:{self.port}"

    def blob_file(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob: for tests that tamper with stored content."""
        algo, hexdigest = digest.split(":", 1)
        return self.storage / "docker/registry/v2/blobs" / algo / hexdigest[:2] / hexdigest / "data"

    def manifest(self, repository: str, tag: str, auth: str | None = None) -> dict:
        import json

        req = urllib.request.Request(
            f"http://{self.host}/v2/{repository}/manifests/{tag}",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)
