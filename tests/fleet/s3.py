"""A real S3-compatible server on loopback (moto's server), started and stopped by PID, and rclone config for it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.fleet.process import free_port, start_server, stop_process

ACCESS_KEY = "polycrate-test-access"
SECRET_KEY = "polycrate-test-secret-8f2c1e"


def rclone_env() -> dict[str, str]:
    """rclone's S3 backend breaks on this machine's AWS_CA_BUNDLE: run rclone without it."""
    env = dict(os.environ)
    env.pop("AWS_CA_BUNDLE", None)
    return env


class S3Server:
    def __init__(self, address: str = "127.0.0.1"):
        self.address = address
        self.port = free_port(address)
        self.dir = Path(tempfile.mkdtemp(prefix="polycrate-s3-"))
        env = rclone_env()
        env.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY})
        self.proc = start_server([sys.executable, "-m", "moto.server", "-H", address, "-p", str(self.port)],
                                 address, self.port, self.dir / "moto.log", "moto server", env=env)

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}:{self.port}"

    def rclone_conf(self, remote: str = "acme-s3") -> str:
        return (
            f"[{remote}]\ntype = s3\nprovider = Other\naccess_key_id = {ACCESS_KEY}\n"
            f"secret_access_key = {SECRET_KEY}\nendpoint = {self.endpoint}\nregion = us-east-1\n"
            "force_path_style = true\n"
        )

    def rclone(self, *args: str, conf: Path) -> subprocess.CompletedProcess:
        return subprocess.run(["rclone", "--config", str(conf), *args], capture_output=True, text=True,
                              env=rclone_env(), timeout=120)

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
