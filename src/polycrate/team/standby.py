"""A warm process for a worker's next run.

A run's own process (`polycrate worker execute`) spends most of its start importing what a run needs
(psycopg, the pipeline, the configuration's model): 1-3 s on a busy 2-core host, most of what team mode
adds to a run (bench/team.py). So a worker keeps one such process started ahead, with those imports done,
waiting on its stdin for the run it is to be (`worker execute --standby`); a job's run takes it, and the
next standby starts warming meanwhile. A standby whose worker goes away reads the end of its stdin and
exits without having done anything.
"""
from __future__ import annotations

import asyncio
import os
import sys


WARM = ("polycrate.run.engine", "polycrate.run.pipeline", "polycrate.team.execute")  # what every run imports


class Standby:
    """The worker's side: one warm process ahead (asyncio; one per life of the worker's loop)."""

    def __init__(self, worker_pid: int, extra: tuple[str, ...] = ()):
        self.worker_pid = worker_pid
        self.extra = extra  # the worker's --cache and --identity (team/source.py, team/identity.py)
        self._spare: asyncio.subprocess.Process | None = None
        self._warming: asyncio.Task[None] | None = None

    async def _spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "polycrate", "worker", "execute", "--standby", "--worker-pid", str(self.worker_pid),
            *self.extra, stdin=asyncio.subprocess.PIPE)

    async def _prepare(self) -> None:
        if self._spare is None or self._spare.returncode is not None:
            self._spare = await self._spawn()

    def prepare(self) -> None:
        """Start warming the next process (in the background of the worker's loop)."""
        if self._warming is None or self._warming.done():
            self._warming = asyncio.get_running_loop().create_task(self._prepare())

    async def start(self, run_id: str, workspace: str) -> asyncio.subprocess.Process:
        """The process of run ``run_id``: the warm one when there is one, else a fresh one."""
        if self._warming is not None:
            try:
                await self._warming
            except Exception:  # no warm process: a fresh one below
                pass
        proc, self._spare = self._spare, None
        line = f"{run_id}\t{workspace}\n".encode()
        for _ in range(2):
            if proc is None or proc.returncode is not None:
                proc = await self._spawn()
            assert proc.stdin is not None
            try:
                proc.stdin.write(line)
                await proc.stdin.drain()
                proc.stdin.close()
                break
            except (BrokenPipeError, ConnectionResetError):  # it died while it waited: a fresh one
                proc = None
        assert proc is not None
        self.prepare()
        return proc

    async def close(self) -> None:
        """End the waiting process (the end of its stdin: it exits without a run)."""
        if self._warming is not None and not self._warming.done():
            self._warming.cancel()
        spare, self._spare = self._spare, None
        if spare is not None and spare.returncode is None and spare.stdin is not None:
            spare.stdin.close()
            try:
                await asyncio.wait_for(spare.wait(), 10)
            except TimeoutError:
                spare.kill()


def wait_for_run() -> tuple[str, str] | None:
    """The run's side: import what a run needs, then wait for the worker to name the run (``RUN\\tWORKSPACE``
    on stdin); None when the worker closed stdin first. Stdin is /dev/null afterwards (the steps inherit it)."""
    import importlib

    for module in WARM:  # the reason this process exists
        importlib.import_module(module)

    line = sys.stdin.buffer.readline()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    text = line.decode("utf-8", "replace").rstrip("\n")
    if "\t" not in text:
        return None
    run_id, workspace = text.split("\t", 1)
    return run_id, workspace


__all__ = ["Standby", "wait_for_run"]
