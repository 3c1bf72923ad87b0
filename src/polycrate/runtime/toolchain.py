"""The containerised toolchain: which runtime, which engine, which image.

* ``runtime_of`` chooses between the ``local`` and the ``container`` runtime (the default, as in
  the real Polycrate): ``-l/--local``/``--runtime``, then ``config.runtime``, then ``$POLYCRATE_RUNTIME``.
* ``find_engine`` finds podman or docker (``config.engine`` names one).
* ``ensure_base_image`` makes the local base image without any registry: a
  Debian root filesystem from debootstrap with Python, ansible-core (the same
  version polycrate runs with locally), openssh-client and rclone, packed as a
  zstd tarball in the cache (``POLYCRATE_CACHE``, default ``~/.cache/polycrate``)
  and imported with ``podman import``. Air-gapped sites copy that tarball.
* ``ensure_workspace_image`` builds the workspace's ``Dockerfile.poly`` into an
  image tagged by the hash of its inputs (the Dockerfile, the files its
  COPY/ADD lines name, the IDs of its FROM images): unchanged inputs, no build.

Nothing here prints: progress goes to a ``log`` callback the caller supplies.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Callable, Iterable

from polycrate.errors import PolycrateError
from polycrate.config.model import Workspace
from polycrate.config.model import ENGINES, RUNTIMES
from polycrate.config.record import Record, record

Log = Callable[[str], None]

DOCKERFILE = "Dockerfile.poly"

BASE_REPOSITORY = "localhost/polycrate-base"
BASE_IMAGE = f"{BASE_REPOSITORY}:latest"  # what `config.image` defaults to and Dockerfile.poly starts FROM
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "openssh-client", "rclone", "ca-certificates")
BASE_RECIPE_VERSION = 1  # bump when the recipe below changes in a way the package list does not show
TOOLCHAIN_VENV = "/opt/toolchain"  # ansible-core lives in this virtualenv inside the image
BASE_ENV = {
    "PATH": f"{TOOLCHAIN_VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
LABEL_BASE = "org.polycrate.base"
LABEL_INPUTS = "org.polycrate.inputs"
LABEL_RUN = "org.polycrate.run"  # on every container polycrate starts
DEFAULT_MIRROR = "http://deb.debian.org/debian"


class EngineError(PolycrateError):
    """The container engine is missing or refused to do what we asked."""


# --------------------------------------------------------------------------- runtime and engine


DEFAULT_RUNTIME = "container"  # as in the real Polycrate: "Ansible always runs in the container"
RUNTIME_ENV = "POLYCRATE_RUNTIME"  # this machine's default when the workspace does not say


def runtime_of(ws: Workspace, override: str | None = None) -> str:
    """`-l/--local` or `--runtime` wins, then `config.runtime` (checked by the schema), then
    $POLYCRATE_RUNTIME, then `container`."""
    if override is not None:
        if override not in RUNTIMES:
            raise PolycrateError(f"unknown runtime '{override}': use one of {', '.join(RUNTIMES)}")
        return override
    if ws.toolchain.runtime:
        return ws.toolchain.runtime
    machine = os.environ.get(RUNTIME_ENV, "").strip()
    if machine:
        if machine not in RUNTIMES:
            raise PolycrateError(f"{RUNTIME_ENV}={machine!r}: use one of {', '.join(RUNTIMES)}")
        return machine
    return DEFAULT_RUNTIME


@record(frozen=True, eq=False, repr=False)
class Engine(Record):
    name: str  # "podman" | "docker"
    path: str

    def command(self, *args: str) -> list[str]:
        return [self.path, *args]

    def run(self, *args: str, check: bool = True, timeout: float | None = 120, input: bytes | None = None
            ) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(self.command(*args), capture_output=True, timeout=timeout, input=input)
        except subprocess.TimeoutExpired:
            raise EngineError(f"`{self.name} {args[0]}` did not finish in {timeout:.0f}s") from None
        if check and proc.returncode != 0:
            raise EngineError(f"`{self.name} {' '.join(args[:2])}` failed: {_last_line(proc.stderr)}")
        return proc

    def image_id(self, reference: str) -> str | None:
        """The local image's ID, or None when the engine does not have it (never pulls)."""
        proc = self.run("image", "inspect", "--format", "{{.Id}}", reference, check=False)
        return proc.stdout.decode().strip() or None if proc.returncode == 0 else None

    def version(self) -> str:
        proc = self.run("--version", check=False)
        return proc.stdout.decode().strip()


def _last_line(data: bytes | str) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def find_engine(ws: Workspace | None = None) -> Engine:
    """podman, else docker; `config.engine` names one explicitly."""
    wanted: Iterable[str] = ENGINES
    if ws is not None and ws.toolchain.engine is not None:
        wanted = (ws.toolchain.engine,)
    for name in wanted:
        path = shutil.which(name)
        if path:
            engine = Engine(name, path)
            if name == "docker":  # a client without its daemon is no engine
                proc = engine.run("version", "--format", "{{.Server.Version}}", check=False, timeout=30)
                if proc.returncode != 0:
                    raise EngineError(
                        f"docker is installed but its daemon does not answer ({_last_line(proc.stderr)}): "
                        "start it, use podman (config.engine: podman), or run with --local"
                    )
            return engine
    names = " or ".join(wanted)
    fix = "apt-get install podman" if "podman" in wanted else "install docker"
    raise EngineError(
        f"actions run in a container (the default runtime), which needs {names}, and none is installed: "
        f"install it ({fix}), or run on this machine with --local (or config.runtime: local in workspace.poly)"
    )


# --------------------------------------------------------------------------- the base image


def cache_dir() -> Path:
    env = os.environ.get("POLYCRATE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "polycrate"


def ansible_core_version() -> str:
    """The ansible-core polycrate runs with locally: the image gets the same one."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ansible-core")
    except PackageNotFoundError:
        raise PolycrateError("ansible-core is not installed beside polycrate: pip install ansible-core") from None


def base_recipe_key(ansible_version: str | None = None) -> str:
    recipe = {
        "v": BASE_RECIPE_VERSION,
        "suite": BASE_SUITE,
        "packages": sorted(BASE_PACKAGES),
        "ansible-core": ansible_version or ansible_core_version(),
        "env": BASE_ENV,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def base_image_tag(key: str | None = None) -> str:
    return f"{BASE_REPOSITORY}:{key or base_recipe_key()}"


def base_tarball(key: str | None = None) -> Path:
    return cache_dir() / "base" / f"polycrate-base-{BASE_SUITE}-{key or base_recipe_key()}.tar.zst"


def find_mirror() -> str:
    """The Debian mirror this machine's apt uses (POLYCRATE_DEBIAN_MIRROR wins)."""
    if os.environ.get("POLYCRATE_DEBIAN_MIRROR"):
        return os.environ["POLYCRATE_DEBIAN_MIRROR"].rstrip("/")
    texts = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            texts.append(path.read_text())
        except OSError:
            continue
    for text in texts:
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M):
            if "security" not in uri and uri.startswith(("http://", "https://", "file:/")):
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def _step(argv: list[str], what: str, log: Log, **kwargs) -> None:
    """Run one build step, streaming its output to `log`; a failure names the step and its last line."""
    log(f"$ {shlex.join(argv)}")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs)
    last = ""
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode("utf-8", "replace").rstrip()
        if line:
            last = line
            log(line)
    if proc.wait() != 0:
        raise PolycrateError(f"building the base image failed at {what}: {last or f'exit {proc.returncode}'}")


def build_base_tarball(target: Path, log: Log, mirror: str | None = None) -> Path:
    """debootstrap + ansible-core into a root filesystem, packed as a zstd tarball at `target`."""
    if os.geteuid() != 0:
        raise PolycrateError("building the base image needs root (debootstrap): run `polycrate toolchain build --base` as root")
    for tool in ("debootstrap", "zstd", "tar", "chroot"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise PolycrateError(f"building the base image needs {tool}: apt-get install debootstrap zstd")
    version = ansible_core_version()
    mirror = mirror or find_mirror()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="base-build-", dir=target.parent))
    root = work / "root"
    try:
        started = time.monotonic()
        _step(["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES), BASE_SUITE,
               str(root), mirror], f"debootstrap (mirror {mirror})", log)
        log(f"debootstrap took {time.monotonic() - started:.0f}s")
        # ansible-core and its dependencies: downloaded here with this machine's pip (and its index
        # settings), installed offline into a virtualenv inside the root
        wheels = root / "tmp" / "wheels"
        wheels.mkdir(parents=True)
        _step([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", "--only-binary=:all:",
               "--python-version", "3.11", "-d", str(wheels), f"ansible-core=={version}"], "pip download", log)
        _step(["chroot", str(root), "python3", "-m", "venv", TOOLCHAIN_VENV], "python3 -m venv", log)
        _step(["chroot", str(root), f"{TOOLCHAIN_VENV}/bin/pip", "install", "--disable-pip-version-check", "-q",
               "--no-index", "--find-links", "/tmp/wheels", f"ansible-core=={version}"], "pip install ansible-core", log,
              env={"PATH": BASE_ENV["PATH"], "LANG": "C.UTF-8", "HOME": "/root"})
        shutil.rmtree(wheels)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (root / junk).glob("*"):
                if entry.is_file():
                    entry.unlink()
        partial = target.with_suffix(".partial")
        with open(partial, "wb") as out:
            tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-cf", "-", "."], stdout=subprocess.PIPE)
            z = subprocess.run(["zstd", "-q", "-T0", "-3", "-c"], stdin=tar.stdout, stdout=out)
            assert tar.stdout is not None
            tar.stdout.close()
            if tar.wait() != 0 or z.returncode != 0:
                raise PolycrateError("building the base image failed at packing the root filesystem")
        os.replace(partial, target)
        log(f"base root filesystem: {target} ({target.stat().st_size // 1_000_000} MB, {time.monotonic() - started:.0f}s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def import_base_tarball(engine: Engine, tarball: Path, tag: str, log: Log) -> None:
    changes = [f"ENV {key}={value}" for key, value in BASE_ENV.items()]
    changes += [f"LABEL {LABEL_BASE}={tag.rsplit(':', 1)[1]}", "WORKDIR /workspace", 'CMD ["/bin/bash"]']
    argv = engine.command("import", *[a for c in changes for a in ("--change", c)], "-", tag)
    log(f"importing {tarball.name} as {tag}")
    with subprocess.Popen(["zstd", "-q", "-dc", str(tarball)], stdout=subprocess.PIPE) as unzip:
        proc = subprocess.run(argv, stdin=unzip.stdout, capture_output=True)
    if proc.returncode != 0 or unzip.returncode != 0:
        raise EngineError(f"`{engine.name} import {tarball}` failed: {_last_line(proc.stderr)}")
    engine.run("tag", tag, BASE_IMAGE)


def ensure_base_image(engine: Engine, log: Log, force: bool = False) -> tuple[str, bool]:
    """The base image's tag, imported from the cached tarball or built first; (tag, made now)."""
    import fcntl

    key = base_recipe_key()
    tag = base_image_tag(key)
    if not force and engine.image_id(tag):
        if engine.image_id(BASE_IMAGE) != engine.image_id(tag):
            engine.run("tag", tag, BASE_IMAGE)
        return tag, False
    tarball = base_tarball(key)
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with open(tarball.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs build once
        if force or not tarball.exists():
            build_base_tarball(tarball, log)
    import_base_tarball(engine, tarball, tag, log)
    return tag, True


# --------------------------------------------------------------------------- the workspace image


def dockerfile(ws: Workspace) -> Path | None:
    path = ws.root / DOCKERFILE
    return path if path.is_file() else None


def _instructions(text: str) -> list[tuple[str, list[str]]]:
    """(INSTRUCTION, words) for each instruction, continuation lines joined; JSON form understood."""
    result = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        flags = re.match(r"((?:--\S+\s+)*)(.*)", rest.strip())
        assert flags is not None
        words = flags.group(1).split()
        try:
            parsed = json.loads(flags.group(2)) if flags.group(2).startswith("[") else None
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            words += [str(w) for w in parsed]
        else:
            try:
                words += shlex.split(flags.group(2))
            except ValueError:
                words += flags.group(2).split()
        result.append((word.upper(), words))
    return result


def from_images(text: str) -> list[str]:
    """The images FROM lines name (not earlier stages, not scratch)."""
    images, stages = [], set()
    for instruction, words in _instructions(text):
        if instruction != "FROM":
            continue
        words = [w for w in words if not w.startswith("--")]
        if not words:
            continue
        if words[0].lower() not in stages and words[0] != "scratch":
            images.append(words[0])
        if len(words) >= 3 and words[1].lower() == "as":
            stages.add(words[2].lower())
    return images


def copy_sources(text: str) -> list[str]:
    """The context paths COPY/ADD lines read (URLs and --from copies excluded)."""
    sources: list[str] = []
    for instruction, words in _instructions(text):
        if instruction not in ("COPY", "ADD") or any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        sources += [w for w in words[:-1] if "://" not in w]
    return sources


def _hash_tree(h, root: Path, pattern: str) -> None:
    matches = sorted(root.glob(pattern.lstrip("/"))) if pattern not in (".", "./") else [root]
    h.update(f"source {pattern}\n".encode())
    for match in matches:
        files = [match] if match.is_file() else sorted(p for p in match.rglob("*") if p.is_file())
        for file in files:
            rel = file.relative_to(root).as_posix()
            if rel.startswith((".polycrate/", "artifacts/")) and pattern in (".", "./"):
                continue  # run state and outputs are no toolchain input
            h.update(f"{rel} {os.access(file, os.X_OK)}\n".encode())
            h.update(hashlib.sha256(file.read_bytes()).digest())


def input_hash(ws: Workspace, engine: Engine) -> str:
    """What decides the workspace image: Dockerfile.poly, its COPY/ADD sources, its FROM images' IDs."""
    path = ws.root / DOCKERFILE
    text = path.read_text(encoding="utf-8")
    h = hashlib.sha256()
    h.update(b"Dockerfile.poly\n" + text.encode())
    for image in from_images(text):
        h.update(f"from {image} {engine.image_id(image) or 'not-local'}\n".encode())
    for source in copy_sources(text):
        _hash_tree(h, ws.root, source)
    return h.hexdigest()


def workspace_repository(ws: Workspace) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "-", ws.name.lower()).strip("-._") or "workspace"
    return f"localhost/polycrate-ws-{name}"


@record(frozen=True, eq=False, repr=False)
class ImageBuild(Record):
    image: str
    built: bool
    seconds: float = 0.0


def ensure_workspace_image(ws: Workspace, engine: Engine, log: Log, force: bool = False) -> ImageBuild:
    """Build Dockerfile.poly unless an image for exactly these inputs exists."""
    path = ws.root / DOCKERFILE
    text = path.read_text(encoding="utf-8")
    for image in from_images(text):
        if image in (BASE_IMAGE, BASE_REPOSITORY, "polycrate-base:latest", "polycrate-base") and not engine.image_id(image):
            ensure_base_image(engine, log)
    digest = input_hash(ws, engine)
    tag = f"{workspace_repository(ws)}:{digest[:16]}"
    if not force and engine.image_id(tag):
        return ImageBuild(tag, False)
    local = all(engine.image_id(image) for image in from_images(text))
    argv = engine.command("build", "-f", str(path), "-t", tag, "--label", f"{LABEL_INPUTS}={digest}")
    if local and engine.name == "podman":
        argv.append("--pull=never")  # every FROM image is here: never reach for a registry
    argv.append(str(ws.root))
    log(f"building {DOCKERFILE} into {tag}")
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    last = ""
    assert proc.stdout is not None
    try:
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                last = line
                log(line)
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if code != 0:
        raise PolycrateError(f"building {DOCKERFILE} failed: {last} (fix it, then run: polycrate toolchain build)", path)
    return ImageBuild(tag, True, time.monotonic() - started)


# --------------------------------------------------------------------------- the image a run uses


def configured_image(ws: Workspace) -> str:
    return ws.toolchain.image or BASE_IMAGE


def _insecure(image: str) -> bool:
    """Plain HTTP for the registry of `image`: loopback, or POLYCRATE_REGISTRY_INSECURE (as for blocks)."""
    host = image.split("/", 1)[0] if "/" in image else ""
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host
    insecure = {h.strip() for h in os.environ.get("POLYCRATE_REGISTRY_INSECURE", "").split(",") if h.strip()}
    return name in ("localhost", "::1", "[::1]") or name.startswith("127.") or host in insecure or name in insecure


def pull_image(engine: Engine, image: str, log: Log) -> None:
    """-p/--pull: fetch `image` from its registry (never for localhost/ images, which no registry has)."""
    if image.startswith("localhost/") or "/" not in image:
        log(f"-p/--pull: {image} is a local image: nothing to pull")
        return
    args = ["pull", "--quiet"]
    if engine.name == "podman" and _insecure(image):
        args.append("--tls-verify=false")
    log(f"pulling {image}")
    engine.run(*args, image, timeout=1800)


def resolve_image(ws: Workspace, engine: Engine, log: Log, pull: bool = False, build: bool = False) -> str:
    """The image actions of this workspace run in, built or imported first when that is possible.
    `pull` (-p): pull config.image first; `build` (-b): build Dockerfile.poly even when up to date."""
    if dockerfile(ws):
        if pull:
            log(f"-p/--pull: the image is built from {DOCKERFILE}: nothing to pull")
        return ensure_workspace_image(ws, engine, log, force=build).image
    if build:
        log(f"-b/--build: no {DOCKERFILE} in the workspace: nothing to build")
    image = configured_image(ws)
    if pull:
        pull_image(engine, image, log)
    if engine.image_id(image):
        return image
    if image in (BASE_IMAGE, base_image_tag()):
        if base_tarball().exists():  # a cached (or copied-in) tarball: a quick import, no build
            ensure_base_image(engine, log)
            return image
        raise EngineError(
            f"image {image} does not exist yet: run `polycrate toolchain build --base` once "
            f"(as root; debootstrap from a Debian mirror) or load it with `{engine.name} load`, or run with --local"
        )
    raise EngineError(
        f"image {image} (config.image) is not in {engine.name}'s local images: "
        f"build or load it (`{engine.name} load -i FILE`), or add a {DOCKERFILE} and run `polycrate toolchain build`"
    )


@record(frozen=True, eq=False, repr=False)
class Runtime(Record):
    """Where a run's actions execute, decided once per run (pipeline.prepare): on this machine,
    or in `image` through `engine`."""

    name: str  # "local" | "container"
    engine: Engine | None = None
    image: str | None = None

    @property
    def container(self) -> bool:
        return self.name == "container"


LOCAL = Runtime("local")


def decide_runtime(ws: Workspace, override: str | None, log: Log, pull: bool = False, build: bool = False
                   ) -> Runtime:
    """The runtime of a run; for the container runtime its engine and image, built, imported or
    (-p) pulled first when needed (progress to `log`). An error says what to do."""
    if runtime_of(ws, override) != "container":
        return LOCAL
    engine = find_engine(ws)
    return Runtime("container", engine, resolve_image(ws, engine, log, pull=pull, build=build))


def image_versions(engine: Engine, image: str) -> dict[str, str]:
    """The versions of the tools inside an image (runs a throw-away container)."""
    script = (
        "echo python=$(python3 -c 'import platform; print(platform.python_version())' 2>/dev/null);"
        "echo ansible-core=$(python3 -c 'import ansible.release as r; print(r.__version__)' 2>/dev/null);"
        "echo rclone=$(rclone version 2>/dev/null | head -n1 | cut -d' ' -f2)"
    )
    proc = engine.run("run", "--rm", "--network", "none", "--label", f"{LABEL_RUN}=info", image, "sh", "-c", script,
                      check=False)
    if proc.returncode != 0:
        raise EngineError(f"could not start a container from {image}: {_last_line(proc.stderr)}")
    versions = {}
    for line in proc.stdout.decode().splitlines():
        key, _, value = line.partition("=")
        versions[key.strip()] = value.strip() or "not installed"
    return versions
