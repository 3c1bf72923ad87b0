"""`polycrate version` and `polycrate checksum DIR`."""
from __future__ import annotations

from polycrate.cli.completion import DIR, names
from polycrate.cli.render import emit_json
from polycrate.errors import PolycrateError


def register(sub, shared) -> None:
    p = sub.add_parser("version", parents=[shared], help="show the version, and the ansible-core and Python it runs on")
    p.add_argument("--short", action="store_true", help="the version alone")
    p.add_argument("--latest", action="store_true", help="also the newest version the package index knows")
    p.set_defaults(func=cmd_version)
    p = sub.add_parser("checksum", parents=[shared], help="MD5 checksum of a folder, as the real Polycrate computes it")
    names(p.add_argument("dir"), DIR)
    p.set_defaults(func=cmd_checksum)


def cmd_version(args) -> int:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from polycrate import __version__

    try:  # from the metadata: importing ansible would cost what `version` should not
        ansible_core = version("ansible-core")
    except PackageNotFoundError:
        ansible_core = None
    latest = latest_version() if args.latest else None
    if args.output == "json":
        from polycrate import contract

        data: dict[str, str | None] = {"version": __version__, "ansible_core": ansible_core,
                                       "python": platform.python_version()}
        if latest is not None:
            data["latest"] = latest[0]
        emit_json(contract.document("version", data), args.format)
    elif args.short:  # Polycrate's --short: the version alone
        print(__version__)
    else:
        print(f"polycrate {__version__}")
        print(f"ansible-core {ansible_core or 'not installed'}")
        print(f"python {platform.python_version()} ({platform.python_implementation()}, {__import__('sys').executable})")
    if latest is not None and args.output != "json":
        print(f"Latest stable version: {latest[0]}" if latest[0] else f"latest version: cannot check: {latest[1]}")
    return 0


VERSION_INDEX = "https://pypi.org/pypi/polycrate/json"  # the package index our releases are published to


def latest_version(timeout: float = 5.0) -> tuple[str | None, str]:
    """(the newest release the package index lists, "") or (None, why it cannot be checked). The index is
    POLYCRATE_VERSION_INDEX when set (a mirror), else PyPI's JSON API."""
    import json
    import os
    import urllib.request

    url = os.environ.get("POLYCRATE_VERSION_INDEX") or VERSION_INDEX
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = json.load(response)
    except Exception as exc:  # offline, refused, not found, not JSON: all mean "cannot check"
        return None, f"{url}: {getattr(exc, 'reason', None) or exc}"
    from polycrate.config.refs import version_key

    releases = [v for v, files in (data.get("releases") or {}).items() if files and not any(
        c.isalpha() for c in v.split("+")[0].lstrip("v"))]
    if releases:
        return max(releases, key=version_key), ""
    version = (data.get("info") or {}).get("version")
    return (str(version), "") if version else (None, f"{url}: no version in the answer")


def cmd_checksum(args) -> int:
    import os

    from polycrate.blocks.checksum import directory_checksum

    if not os.path.exists(args.dir):
        raise PolycrateError(f"{args.dir} does not exist")
    try:
        print(directory_checksum(args.dir))
    except OSError as exc:
        raise PolycrateError(f"cannot read {exc.filename}: {exc.strerror}") from None
    return 0
