"""What counts as a workflow's success. Defined once; metrics, ``--resume``, webhooks and
``runs list`` all ask here.

A workflow succeeded when a run executed every step of it and succeeded: a full run, or a
``--resume`` run that finished the steps its predecessor left (it is a full run too: it plans the
whole workflow and skips only what had succeeded). A ``--step`` run and a check-mode run never
count, whatever their status: they did not do the workflow's job.
"""
from __future__ import annotations

from typing import Any
from collections.abc import Mapping

from polycrate.states import RunKind, RunState

# the same rule as SQL over the run store's `runs` table (values from states.py, no literals)
FULL_RUN_SQL = f"kind = '{RunKind.WORKFLOW.value}' AND check_mode = 0 AND only_step IS NULL"
WORKFLOW_SUCCESS_SQL = FULL_RUN_SQL + f" AND status = '{RunState.SUCCEEDED.value}'"


def is_full_run(run: Mapping[str, Any]) -> bool:
    """A run of the whole workflow for real: neither --step nor --check."""
    return run.get("kind") == RunKind.WORKFLOW and not run.get("check_mode") and not run.get("only_step")


def is_workflow_success(run: Mapping[str, Any]) -> bool:
    return is_full_run(run) and run.get("status") == RunState.SUCCEEDED
