"""Hub-style block references, as the real Polycrate reads them (cmd/utils.go, mapDockerTag): a reference
whose first path component is not a registry host, such as `ayedo/k8s/harbor:0.1.0`, names a block of the
default registry. The default registry is workspace.poly's `registries: {default: HOST}`, else the host's
`~/.polycrate/polycrate.yml` (`registry: {url: HOST}`, the real Polycrate's own file); with neither, a
short reference is refused (saying how to set one) rather than sent to a registry we guessed.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from polycrate.config.refs import looks_like_host
from polycrate.errors import ConfigError

HOST_CONFIG = "~/.polycrate/polycrate.yml"


def is_short(reference: str) -> bool:
    """`ayedo/k8s/harbor[:VERSION]`: a path of several components without a registry host in front."""
    path = reference.rsplit(":", 1)[0] if reference.rfind(":") > reference.rfind("/") else reference
    first, slash, _ = path.partition("/")
    return bool(slash) and not looks_like_host(first)


def host_default_registry(home: str | None = None) -> str | None:
    """`registry.url` of ~/.polycrate/polycrate.yml (its scheme dropped), None when not set."""
    from polycrate.config.yamlfile import load_yaml

    path = Path(os.path.expanduser(HOST_CONFIG) if home is None else Path(home) / ".polycrate" / "polycrate.yml")
    if not path.is_file():
        return None
    data = load_yaml(path)
    registry = data.get("registry") if isinstance(data, dict) else None
    url = registry.get("url") if isinstance(registry, dict) else None
    if url is None:
        return None
    host = str(url).strip().removeprefix("https://").removeprefix("http://").rstrip("/")
    if not looks_like_host(host.split("/")[0]):
        raise ConfigError(f"registry.url must be a registry host such as cargo.ayedo.cloud, not {url!r}", path)
    return host


def expand(reference: str, default: str | None | Callable[[], str | None], what: str,
           path: Path | str | None = None, line: int | None = None) -> str:
    """`reference` in full: a short one with the default registry in front; any other unchanged."""
    if not is_short(reference):
        return reference
    registry = default() if callable(default) else default
    if not registry:
        raise ConfigError(f"{what}: {reference!r} names no registry host and no default registry is set: write "
                          f"the full reference (REGISTRY/{reference}), or set one in workspace.poly "
                          f"(registries: {{default: cargo.ayedo.cloud}}) or in {HOST_CONFIG} "
                          "(registry: {url: cargo.ayedo.cloud})", path, line)
    return f"{registry}/{reference}"
