"""`polycrate toolchain build|info`: the container image actions run in."""
from __future__ import annotations

import sys
import time
from typing import Any

from polycrate.cli.render import emit_json, workspace_from


def register(sub, shared) -> None:
    group = sub.add_parser("toolchain", parents=[shared], help="the container image actions run in")
    tsub = group.add_subparsers(dest="toolchain_command", metavar="COMMAND")
    tsub.required = True

    p = tsub.add_parser(
        "build",
        parents=[shared],
        help="build the workspace's Dockerfile.poly (only when its inputs changed) or the base image",
    )
    p.add_argument(
        "--base",
        action="store_true",
        help="make the local base image (debootstrap + ansible-core; needs root), no workspace needed",
    )
    p.add_argument("--rebuild", action="store_true", help="build even when an image for these inputs exists")
    p.set_defaults(func=cmd_build)

    p = tsub.add_parser("info", parents=[shared], help="the runtime, engine and image, and the tool versions inside")
    p.set_defaults(func=cmd_info)


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_build(args) -> int:
    from polycrate import contract
    from polycrate.runtime import toolchain

    started = time.monotonic()
    result: dict = {"image": None, "alias": None, "built": False, "tarball": None, "reason": None}
    if args.base:
        engine = toolchain.find_engine(None if args.workspace is None else workspace_from(args))
        tag, made = toolchain.ensure_base_image(engine, _log, force=args.rebuild)
        result.update(image=tag, alias=toolchain.BASE_IMAGE, built=made, tarball=str(toolchain.base_tarball()))
    else:
        ws = workspace_from(args)
        engine = toolchain.find_engine(ws)
        if toolchain.dockerfile(ws) is None:
            image = toolchain.resolve_image(ws, engine, _log)
            result.update(image=image, built=False, reason=f"no {toolchain.DOCKERFILE} in the workspace")
        else:
            build = toolchain.ensure_workspace_image(ws, engine, _log, force=args.rebuild)
            result.update(image=build.image, built=build.built)
    result["engine"] = engine.name
    result["duration"] = round(time.monotonic() - started, 3)
    if args.output == "json":
        emit_json(contract.document("toolchain-build", result), args.format)
    else:
        state = "built" if result["built"] else "up to date"
        print(f"{state}: {result['image']} ({result['duration']:.1f}s)")
    return 0


def cmd_info(args) -> int:
    from polycrate import contract
    from polycrate.runtime import toolchain

    ws = workspace_from(args)
    runtime = toolchain.runtime_of(ws)
    engine = toolchain.find_engine(ws)
    image = toolchain.resolve_image(ws, engine, _log)
    dockerfile = toolchain.dockerfile(ws)
    info: dict[str, Any] = {
        "runtime": runtime,
        "engine": engine.name,
        "engine_version": engine.version() or None,
        "image": image,
        "image_id": (engine.image_id(image) or "")[:12] or None,
        "dockerfile": str(dockerfile) if dockerfile else None,
        "versions": toolchain.image_versions(engine, image),  # tool -> version inside the image
    }
    if args.output == "json":
        emit_json(contract.document("toolchain-info", info), args.format)
    else:
        shown = {k: v for k, v in info.items() if k != "versions"} | info["versions"]
        width = max(len(k) for k in shown)
        for key, value in shown.items():
            print(f"{key + ':':<{width + 1}} {value or '-'}")
    return 0
