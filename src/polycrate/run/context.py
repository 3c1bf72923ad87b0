"""What one run carries through its phases (run/opening.py, run/drive.py, run/step.py, run/finish.py).

``RunContext`` holds the run's resources — the lock, the store and the record's id, the decrypted
secrets, the zygote, the SSH masters, the run container — and the one masking function every line,
message and notice passes through (``RunContext.mask``) before it reaches the reporter, the store, the
log or a webhook. ``close`` gives them back in reverse, also after a failure or an interrupt.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from polycrate.errors import interrupt_in, interrupt_name, interrupt_reason, stopped_by
from polycrate.states import Phase, RunState, StepState

if TYPE_CHECKING:
    from pathlib import Path

    from polycrate.config.model import Workspace
    from polycrate.history.locking import RunLock
    from polycrate.history.protocol import RunStore
    from polycrate.run.preflight import Report
    from polycrate.run.request import Reporter, RunOptions, StepResult
    from polycrate.runtime.action import ActionRequest
    from polycrate.runtime.run_container import RunContainer
    from polycrate.runtime.ssh_masters import SSHSharing
    from polycrate.runtime.toolchain import Runtime
    from polycrate.runtime.zygote import EarlyZygote, Zygote
    from polycrate.secrets.masking import Masker
    from polycrate.secrets.runtime import RuntimeSecrets


def masker_for(secrets: RuntimeSecrets | None = None) -> Masker:
    """The one masking function of a run: every value from the workspace's secrets becomes ********."""
    from polycrate.secrets.masking import Masker

    return secrets.masker if secrets is not None else Masker()


def masked(masker: Masker, data: dict[str, Any]) -> dict[str, Any]:
    """Masker.mask_data for a mapping: what it returns is a mapping again."""
    result = masker.mask_data(data)
    assert isinstance(result, dict)
    return result



class RunContext:
    """The bookkeeping of one run: store rows, logs, masking, the lock and the run's processes."""

    def __init__(self, ws: Workspace, reporter: Reporter, options: RunOptions, runtime: Runtime | None,
                 early_zygote: EarlyZygote | None = None) -> None:
        from polycrate.run.viewer import GuardedReporter

        self.ws = ws
        self.early_zygote = early_zygote  # started by the caller while the workspace was read (runtime/zygote.py)
        # a closed stdout (`| head`, a closed terminal) never changes what the run does (run/viewer.py)
        self.reporter = GuardedReporter(reporter, self.viewer_gone)
        self.options = options
        self.runtime = runtime
        self.masker = masker_for()
        self.mask = self.masker.mask
        self.secrets: RuntimeSecrets | None = None
        self.store: RunStore | None = None
        self.run_id: str | None = None
        self.lock: RunLock | None = None
        self.zygote: Zygote | None = None  # the warm process a workflow's ansible steps fork from
        self.ssh_sharing: SSHSharing | None = None  # the run's SSH masters, closed with the run
        self.container: RunContainer | None = None  # the one container of a container run
        self.preflight: Report | None = None  # the run's preflight: how many hosts each action's plays target
        self.notices: list[str] = []
        self.unrecorded: list[str] = []  # notices from before the record opened
        self.current_step: str | None = None
        # the step whose record says 'running' until record_step writes its end: (position, step)
        self.step_open: tuple[int, StepResult] | None = None
        self.where: dict[str, str | None] = {}  # run/where.py: runtime, image, image_digest
        self.timed_out: tuple[str | None] | None = None  # (what systemd says of a SIGTERM,) once asked
        self.finished = False  # the record is closed (run/finish.py); until then close() closes it

    def notice(self, message: str) -> None:
        message = self.mask(message)
        self.notices.append(message)
        self.reporter.notice(message)
        self.record_notice(message)

    def record_notice(self, message: str) -> None:
        if self.store is not None and self.run_id is not None:
            try:
                self.store.add_notice(self.run_id, message)
            except Exception:  # the store is the record, not the run: never fail a run over it
                pass
        else:
            self.unrecorded.append(message)  # recorded when the run's record opens

    def viewer_gone(self, why: str) -> None:
        """The reporter's stream went away: say so in the record (nobody is watching any more)."""
        where = f" during step {self.current_step}" if self.current_step else ""
        logs = f" (polycrate runs logs {self.run_id})" if self.run_id else ""
        message = f"{why}{where}: the run went on to its end without a viewer; its output is in the step logs{logs}"
        self.notices.append(message)
        self.record_notice(message)

    def action_request(self, block: str, action: str, workflow: str | None, step: str, *, attempt: bool = False,
                       timeout: float | None = None, events_file: Path | None = None,
                       ssh_sharing: bool = True, limit: str | None = None) -> ActionRequest:
        """The one place that says what an ActionRequest of this run carries: the workspace, the block's
        action, the step's name in a workflow, the runtime, the run's global flags (-e, -m, the SSH key,
        -f), the display environment and the run's SSH masters (``ssh_sharing=False``: not the run
        container's warm-up requests). That is what the zygote and the run container warm up with; an
        ``attempt`` of a step also gets the run's check/diff, secrets, lock, zygote, Ansible options,
        host count and container, and its ``timeout`` and ``events_file`` (``limit``: the Ansible options'
        --limit replaced, for this attempt)."""
        from polycrate.runtime.action import ActionRequest

        options = self.options
        the_block = self.ws.blocks[block]
        common: dict[str, Any] = {}
        if attempt:
            common = {"check": options.check, "diff": options.diff, "secrets": self.secrets,
                      "keep_fds": (self.lock.fd,) if self.lock is not None and self.lock.fd is not None else (),
                      "zygote": self.zygote,
                      "ansible_options": options.ansible if limit is None else replace(options.ansible, limit=limit),
                      "hosts": self.hosts_of(block, action),
                      "container": self.container}
        return ActionRequest(ws=self.ws, block=the_block, action=the_block.actions[action], workflow=workflow,
                             step=step if workflow else None, runtime=self.runtime, timeout=timeout,
                             events_file=events_file, extra_env=dict(options.display_env), env=options.env,
                             mounts=options.mounts, ssh_key=options.ssh_key, force=options.force,
                             ssh_sharing=self.ssh_sharing if ssh_sharing else None, **common)

    def hosts_of(self, block: str, action: str) -> int | None:
        """The most hosts one play of the action targets, as the preflight counted them (forks)."""
        plays = [p for p in (self.preflight.plays if self.preflight is not None else ())
                 if p.get("block") == block and p.get("action") == action]
        return max((p.get("hosts") or 0 for p in plays), default=None)

    def interrupt_message(self, exc: BaseException | None) -> str:
        """What the record says of an interrupt: who stopped the run when it is known (the interrupt
        carries it, or `runs stop` left a note beside the run's lock before its SIGTERM), else the signal."""
        reason = interrupt_reason(exc)
        if reason is None and self.lock is not None and self.run_id is not None:
            by = self.lock.stop_request(self.run_id)
            reason = stopped_by(by) if by is not None else None
        if reason is None and exc is not None and interrupt_name(exc) == "SIGTERM":
            reason = self._systemd_timeout()
        if reason is None and exc is not None:
            from polycrate.schedule.render import cron_timeout_stop

            reason = cron_timeout_stop(self.options.launched_by, interrupt_name(exc))
        if reason is not None:
            return self.mask(reason)
        return f"interrupted ({interrupt_name(exc) if exc is not None else 'SIGINT'})"

    def _systemd_timeout(self) -> str | None:
        """A timer's run stopped by its unit's TimeoutStartSec: systemd says so (asked once per run: every record
        the stop ends, the step's and the run's, says the same)."""
        if self.timed_out is None:
            from polycrate.schedule.render import systemd_timeout_stop

            self.timed_out = (systemd_timeout_stop(self.options.launched_by),)
        return self.timed_out[0]

    def close_record(self) -> None:
        """A record opened and not finished (a signal between opening it and the first step, or inside
        the finish) is finished here, as interrupted: a run is never left 'running' by a live polycrate."""
        store, run_id = self.store, self.run_id
        if store is None or run_id is None or self.finished:
            return
        import sys

        from polycrate.run.stopping import signals_deferred
        from polycrate.success import exit_code_of

        exc = sys.exc_info()[1]
        stop = interrupt_in(exc)
        why = self.interrupt_message(stop) if stop is not None or exc is None \
            else self.mask(f"stopped by an error in polycrate: {type(exc).__name__}: {exc}")
        with signals_deferred():
            try:
                for step in store.get_run(run_id).steps:
                    if step.status == StepState.RUNNING:
                        store.update_step(run_id, step.position, status=StepState.INTERRUPTED,
                                          message=why)
                    elif step.status == StepState.NOT_RUN and step.phase == Phase.MAIN:
                        store.update_step(run_id, step.position, status=StepState.SKIPPED)
                store.finish_run(run_id, status=RunState.INTERRUPTED,
                                      exit_code=exit_code_of(RunState.INTERRUPTED), message=why)
                self.finished = True
            except Exception:  # the store itself failed: the next reconcile marks the run
                pass

    def close(self) -> None:
        self.close_record()
        if self.zygote is not None:
            self.zygote.close()
            self.zygote = None
        if self.container is not None:
            self.container.close()  # gone before the run ends, also after a failure or an interrupt
            self.container = None
        if self.ssh_sharing is not None:
            try:
                self.ssh_sharing.close()  # every master of the run ends, also after a failure or an interrupt
            except Exception:
                pass
            self.ssh_sharing = None
        if self.secrets is not None:
            self.secrets.close()  # the decrypted folder goes, also after a failure or an interrupt
            self.secrets = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if self.store is not None:
            self.store.close()
            self.store = None


__all__ = ["RunContext", "masked", "masker_for"]
