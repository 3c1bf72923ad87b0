"""polycrate: operations automation as code."""
from __future__ import annotations


def __getattr__(name: str) -> str:
    """`polycrate.__version__`: the installed package's version. pyproject.toml is the one place it is
    written; it is read from the package metadata on first use (not at import: `--help` stays instant)."""
    if name != "__version__":
        raise AttributeError(f"module 'polycrate' has no attribute {name!r}")
    found = _dist_info_version()
    if found is None:  # not a plain dist-info on the path (an egg, a zip): the standard lookup
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("polycrate")
        except PackageNotFoundError:  # run from a source tree that was never installed (PYTHONPATH=src)
            found = "0+unknown"
    globals()["__version__"] = found
    return found


def _dist_info_version() -> str | None:
    """The `Version:` of the first polycrate-*.dist-info on sys.path, the file importlib.metadata reads.
    Read directly because every run needs it (POLYCRATE_VERSION of an action) and importlib.metadata
    first indexes every distribution on the path and parses the file as a mail message (with its
    imports about 60 ms of CPU, in a venv with Ansible)."""
    import os
    import sys

    for entry in sys.path:
        try:
            names = sorted(n for n in os.listdir(entry or ".") if n.startswith("polycrate-") and n.endswith(".dist-info"))
        except OSError:
            continue
        for name in names:
            try:
                with open(os.path.join(entry or ".", name, "METADATA"), encoding="utf-8") as fh:
                    for line in fh:
                        if not line.strip():  # the headers end here; the description follows
                            break
                        if line.startswith("Version:"):
                            return line[len("Version:"):].strip()
            except OSError:
                continue
    return None
