"""Servers the tests start themselves: start, wait until the port answers, stop by PID."""
from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.helpers import free_port  # noqa: F401  (the fleet's servers take their ports from here)


def start_server(argv: list[str], address: str, port: int, log: Path, name: str, timeout: float = 30.0,
                 env: dict | None = None) -> subprocess.Popen:
    """Start `argv` with its output in `log`; return once address:port accepts connections."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex((address, port)) == 0:
                return proc
        time.sleep(0.05)
    stop_process(proc)
    raise RuntimeError(f"{name} did not start listening on {address}:{port} within {timeout:g}s")


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
