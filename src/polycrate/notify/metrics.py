"""Prometheus textfile (node_exporter textfile-collector format) with each workflow's last run.

Written after every workflow run from the run store, atomically (temporary file
in the same folder, then rename), so the collector never reads half a file.
Alert example: ``time() - polycrate_workflow_last_success_timestamp_seconds{workflow="nightly-maintenance"} > 26*3600``.
"""
from __future__ import annotations

import os
from pathlib import Path

from polycrate.atomicfile import write_atomic
from polycrate.states import RunState

DEFAULT_PATH = Path(".polycrate") / "metrics" / "polycrate.prom"
STATUSES = tuple(s for s in RunState if s.finished)

METRICS = (
    ("polycrate_workflow_last_run_timestamp_seconds", "Unix time the last run of the workflow ended."),
    ("polycrate_workflow_last_success_timestamp_seconds", "Unix time the last successful run of the workflow ended (0: never)."),
    ("polycrate_workflow_last_duration_seconds", "Duration of the last run of the workflow."),
    ("polycrate_workflow_last_exit_code", "Exit code of the last run of the workflow."),
    ("polycrate_workflow_last_status", "Status of the last run of the workflow: 1 for the status it ended with."),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(workspace: str, rows: list[dict]) -> str:
    lines: list[str] = []
    for metric, help_text in METRICS:
        lines.append(f"# HELP {metric} {help_text}")
        lines.append(f"# TYPE {metric} gauge")
        for row in rows:
            labels = f'workspace="{_label(workspace)}",workflow="{_label(row["workflow"])}"'
            if metric.endswith("last_run_timestamp_seconds"):
                lines.append(f"{metric}{{{labels}}} {row['last_run']:.3f}")
            elif metric.endswith("last_success_timestamp_seconds"):
                lines.append(f"{metric}{{{labels}}} {(row['last_success'] or 0):.3f}")
            elif metric.endswith("last_duration_seconds"):
                lines.append(f"{metric}{{{labels}}} {row['last_duration']:.3f}")
            elif metric.endswith("last_exit_code"):
                code = row["last_exit_code"]
                lines.append(f"{metric}{{{labels}}} {code if code is not None else -1}")
            else:
                for status in STATUSES:
                    value = 1 if row["last_status"] == status else 0
                    lines.append(f'{metric}{{{labels},status="{status}"}} {value}')
    return "\n".join(lines) + "\n"


def metrics_path(root: Path, configured: str | None) -> Path:
    if not configured:
        return root / DEFAULT_PATH
    path = Path(os.path.expanduser(configured))
    return path if path.is_absolute() else root / path


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # 0644: node_exporter usually runs as another user; the collector reads only ``*.prom``
    write_atomic(path, text, 0o644, prefix=".polycrate-", suffix=".prom.tmp")
