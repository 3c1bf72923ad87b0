"""Charts drawn on the server as inline SVG: no script, no style attributes (the CSP allows neither).

``durations``: a workflow's last runs as bars (height = duration, colour = outcome).
``timeline``: one run's steps laid out on its time axis, as rows of the run page.
"""
from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from polycrate.states import RunState, StepState

if TYPE_CHECKING:
    from polycrate.history import RunRecord

COLOURS: dict[str, str] = {
    RunState.SUCCEEDED: "#2e7d32",
    RunState.FAILED: "#c62828",
    RunState.INTERRUPTED: "#ef6c00",
    RunState.LOST: "#6a1b9a",  # team mode: its worker stopped heartbeating
    RunState.RUNNING: "#1565c0",
    StepState.FAILED_ALLOWED: "#f9a825",
}
GREY = "#9e9e9e"


def durations(runs: list[RunRecord], width: int = 720, height: int = 160) -> str:
    """Bars for runs (oldest first); each bar's title says id, status and duration."""
    if not runs:
        return ""
    pad_left, pad_bottom, pad_top = 48, 18, 8
    plot_w, plot_h = width - pad_left - 4, height - pad_bottom - pad_top
    longest = max((r.duration or 0) for r in runs) or 1.0
    step = plot_w / len(runs)
    bar = min(28.0, max(2.0, step * 0.7))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" aria-label="durations and outcomes of the last {len(runs)} runs">',
        f'<line x1="{pad_left}" y1="{pad_top + plot_h}" x2="{width - 4}" y2="{pad_top + plot_h}" stroke="#888"/>',
        f'<text x="{pad_left - 4}" y="{pad_top + 10}" text-anchor="end" font-size="11" fill="#555">{_secs(longest)}</text>',
        f'<text x="{pad_left - 4}" y="{pad_top + plot_h}" text-anchor="end" font-size="11" fill="#555">0</text>',
    ]
    for i, run in enumerate(runs):
        value = run.duration or 0
        h = max(2.0, plot_h * value / longest)
        x = pad_left + i * step + (step - bar) / 2
        y = pad_top + plot_h - h
        colour = COLOURS.get(run.status, GREY)
        label = escape(f"{run.id}: {run.status}, {_secs(value)}")
        parts.append(
            f'<a href="/runs/{escape(run.id)}"><rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}"'
            f' fill="{colour}" data-status="{escape(run.status)}"><title>{label}</title></rect></a>')
    parts.append("</svg>")
    return "".join(parts)


def timeline(run: RunRecord) -> list[dict]:
    """Per step: offset and width in percent of the run's span, for the run page's timeline."""
    start = run.started
    ends = [s.ended for s in run.steps if s.ended] + [run.ended or 0]
    end = max([e for e in ends if e] + [start + (run.duration or 0)])
    total = max(end - start, 0.001)
    rows = []
    for s in run.steps:
        if s.started:
            finish = s.ended or end
            left = 100 * (s.started - start) / total
            width = max(0.5, 100 * (finish - s.started) / total)
        else:
            left = width = 0.0
        rows.append({"step": s, "left": round(min(left, 99.5), 2), "width": round(min(width, 100 - left), 2),
                     "colour": COLOURS.get(s.status, GREY)})
    return rows


def timeline_svg(rows: list[dict], width: int = 720) -> str:
    height = 22 * len(rows) + 4
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{width}" height="{height}"'
             f' viewBox="0 0 {width} {height}" role="img" aria-label="steps on the run\'s time axis">']
    label_w = 160
    span = width - label_w - 4
    for i, row in enumerate(rows):
        y = 4 + 22 * i
        s = row["step"]
        parts.append(f'<text x="0" y="{y + 13}" font-size="12" fill="#333">{escape(s.name)}</text>')
        if row["width"]:
            parts.append(
                f'<rect x="{label_w + span * row["left"] / 100:.1f}" y="{y}" width="{span * row["width"] / 100:.1f}"'
                f' height="16" fill="{row["colour"]}"><title>{escape(s.name)}: {escape(s.status)},'
                f' {_secs(s.duration or 0)}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def _secs(value: float) -> str:
    if value < 60:
        return f"{value:.1f}s"
    if value < 3600:
        return f"{value / 60:.1f}m"
    return f"{value / 3600:.1f}h"
