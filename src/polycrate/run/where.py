"""Where a run's actions run, as its header says it and its record keeps it: the runtime (local:
this machine; container: the toolchain image through podman or Docker), the image and its ID.

A workspace without ``config.runtime`` runs in the container by default; without this line the only
clue was a `/opt/toolchain/...` path in a warning and "command not found" for the host's tools.
"""
from __future__ import annotations

from typing import Any


def runtime_fields(runtime: Any) -> dict[str, str | None]:
    """{"runtime", "image", "image_digest"} of a run, for its record (RunStore.start_run)."""
    if runtime is None or not getattr(runtime, "container", False):
        return {"runtime": "local", "image": None, "image_digest": None}
    digest = None
    try:
        digest = runtime.engine.image_id(runtime.image) if runtime.engine is not None else None
    except Exception:  # the header is information: an engine that does not answer fails the step, not this
        digest = None
    if digest and ":" not in digest:  # podman prints the bare hex, Docker "sha256:..."
        digest = f"sha256:{digest}"
    return {"runtime": "container", "image": runtime.image, "image_digest": digest}


def header(fields: dict[str, str | None], engine: str | None = None) -> str:
    """The run header's line: 'runtime: local (this machine)' or 'runtime: container (podman), image X, ...'."""
    if fields.get("runtime") != "container":
        return "runtime: local (this machine)"
    text = f"runtime: container ({engine})" if engine else "runtime: container"
    text += f", image {fields.get('image')}"
    digest = fields.get("image_digest")
    if digest:
        text += f" ({digest[:19]})"  # sha256: and 12 hex digits, as `podman images` shows
    return text + "; the steps see the container, not this machine (--local runs them here)"


__all__ = ["header", "runtime_fields"]
