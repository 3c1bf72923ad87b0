"""`polycrate version` and `polycrate checksum DIR`."""
from __future__ import annotations

from polycrate.cli.completion import DIR, names
from polycrate.cli.render import emit_json
from polycrate.errors import PolycrateError


def register(sub, shared) -> None:
    p = sub.add_parser("version", parents=[shared], help="show the version, and the ansible-core and Python it runs on")
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
    if args.output == "json":
        from polycrate import contract

        emit_json(contract.document("version", {"version": __version__, "ansible_core": ansible_core,
                                                "python": platform.python_version()}), args.format)
    else:
        print(f"polycrate {__version__}")
        print(f"ansible-core {ansible_core or 'not installed'}")
        print(f"python {platform.python_version()} ({platform.python_implementation()}, {__import__('sys').executable})")
    return 0


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
