"""polycrate: operations automation as code."""
from __future__ import annotations


def __getattr__(name: str) -> str:
    """`polycrate.__version__`: the installed package's version. pyproject.toml is the one place it is
    written; it is read from the package metadata on first use (not at import: `--help` stays instant)."""
    if name != "__version__":
        raise AttributeError(f"module 'polycrate' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("polycrate")
    except PackageNotFoundError:  # run from a source tree that was never installed (PYTHONPATH=src)
        found = "0+unknown"
    globals()["__version__"] = found
    return found
