"""Sharing blocks through OCI registries: references, transport, credentials, push and pull.

A block is one OCI artifact: an image manifest whose config blob (media type
``application/vnd.polycrate.block.config.v1+json``) holds the block's name and version and
whose single layer is the deterministic tar.gz of the block folder (``blockstore.pack_block``).
Manifest annotations carry name, version and the content digest. The HTTP work goes through
oras-py (``oras.provider.Registry``); oras is imported lazily, only by commands that talk to a
registry.

Transport: HTTPS, except plain HTTP for loopback registries (localhost, 127.0.0.0/8, ::1) and
registries marked insecure (``POLYCRATE_REGISTRY_INSECURE`` or ``registries:`` in
workspace.poly). A registry name can be served from another address (a mirror), which is how
``registry.acme-corp.com/...`` references resolve to a test or in-house registry.

Credentials: ``POLYCRATE_REGISTRY_USERNAME``/``POLYCRATE_REGISTRY_PASSWORD``, else the
``auths`` of the Docker config file (``$DOCKER_CONFIG/config.json``, default
``~/.docker/config.json``), which ``polycrate registry login`` writes. They are never printed.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Mapping

from polycrate.blocks import store as blockstore
from polycrate.atomicfile import write_atomic
from polycrate.config.refs import BadReference, Reference, parse_reference, version_key
from polycrate.errors import PolycrateError

if TYPE_CHECKING:
    from polycrate.config.model import Registries

CONFIG_MEDIA_TYPE = "application/vnd.polycrate.block.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.polycrate.block.v1.tar+gzip"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
ANN_NAME = "io.polycrate.block.name"
ANN_VERSION = "io.polycrate.block.version"
ANN_CONTENT = "io.polycrate.block.content-digest"
ANN_TITLE = "org.opencontainers.image.title"
ANN_OCI_VERSION = "org.opencontainers.image.version"

class RegistryError(PolycrateError):
    """A registry could not be reached, refused us, or does not have what we asked for."""


# --- transport --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transport:
    """Where each registry name is served and which may use plain HTTP."""

    mirrors: Mapping[str, str] = field(default_factory=dict)
    insecure: frozenset[str] = frozenset()
    timeout: float = 30.0  # seconds per HTTP request (POLYCRATE_REGISTRY_TIMEOUT)
    max_block_bytes: int = blockstore.MAX_BLOCK_BYTES  # a pulled block's archive (POLYCRATE_BLOCK_MAX_BYTES)

    def endpoint(self, registry: str) -> tuple[str, str]:
        """(host[:port] to contact, 'https' or 'http')."""
        host = self.mirrors.get(registry, registry)
        plain = is_loopback(host) or host in self.insecure or registry in self.insecure
        return host, "http" if plain else "https"


def _host_only(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.index("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    name = _host_only(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _strip_scheme(value: str) -> str:
    for prefix in ("https://", "http://"):
        if value.startswith(prefix):
            value = value[len(prefix) :]
    return value.rstrip("/")


def transport_settings(registries: Registries | None = None, env: Mapping[str, str] | None = None) -> Transport:
    """From POLYCRATE_REGISTRY_MIRRORS ('name=host:port,...'), POLYCRATE_REGISTRY_INSECURE ('host,...')
    and workspace.poly's ``registries:`` (checked by the schema); the environment wins."""
    env = os.environ if env is None else env
    mirrors = {name: _strip_scheme(host) for name, host in (registries.mirrors if registries else ())}
    insecure: set[str] = set(registries.insecure if registries else ())
    for item in filter(None, (x.strip() for x in env.get("POLYCRATE_REGISTRY_MIRRORS", "").split(","))):
        name, sep, host = item.partition("=")
        if not sep or not name or not host:
            raise PolycrateError(f"POLYCRATE_REGISTRY_MIRRORS: expected NAME=HOST[:PORT], got {item!r}")
        mirrors[name.strip()] = _strip_scheme(host.strip())
    insecure.update(x.strip() for x in env.get("POLYCRATE_REGISTRY_INSECURE", "").split(",") if x.strip())
    timeout = _positive(env, "POLYCRATE_REGISTRY_TIMEOUT", 30.0, float)
    max_bytes = int(_positive(env, "POLYCRATE_BLOCK_MAX_BYTES", blockstore.MAX_BLOCK_BYTES, int))
    return Transport(mirrors, frozenset(insecure), timeout, max_bytes)


def _positive(env: Mapping[str, str], name: str, default: float, kind: type) -> float:
    """A positive number from the user's environment, or a one-line error naming the variable."""
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise PolycrateError(f"{name}: expected a positive number, got {text!r}")
    return value


# --- credentials ------------------------------------------------------------------------------


def docker_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return Path(base) / "config.json"


def find_credentials(host: str, env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    env = os.environ if env is None else env
    user, password = env.get("POLYCRATE_REGISTRY_USERNAME"), env.get("POLYCRATE_REGISTRY_PASSWORD")
    if user and password:
        return user, password
    path = docker_config_path(env)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        raise PolycrateError("cannot read the Docker config file", path) from None
    auths = config.get("auths") or {}
    for key in (host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"):
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                decoded = base64.b64decode(entry["auth"]).decode("utf-8")
            except ValueError:
                raise PolycrateError(f"the Docker config's auth entry for {host} is not valid base64", path) from None
            user, sep, password = decoded.partition(":")
            if sep:
                return user, password
        if entry.get("username") and entry.get("password"):
            return entry["username"], entry["password"]
    return None


def store_credentials(host: str, username: str, password: str, env: Mapping[str, str] | None = None) -> Path:
    """Write the credentials to the Docker config's auths (mode 0600), keeping everything else."""
    path = docker_config_path(env)
    config: dict[str, Any] = {}
    if path.exists():
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            raise PolycrateError("cannot read the Docker config file", path) from None
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    config.setdefault("auths", {})[host] = {"auth": auth}
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, json.dumps(config, indent=2) + "\n", 0o600)
    return path


# --- the client -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteManifest:
    digest: str
    manifest: dict

    @property
    def annotations(self) -> dict:
        return self.manifest.get("annotations") or {}


def _reason(exc: BaseException) -> str:
    """A short cause for a requests exception (its text would carry whole URLs and object reprs)."""
    kind, text = exc.__class__.__name__, str(exc)
    if "refused" in text:
        return "connection refused"
    if "Timeout" in kind:
        return "timed out"
    if "NameResolution" in text or "Name or service not known" in text or "nodename nor servname" in text:
        return "unknown host"
    return kind


class RegistryClient:
    """One registry, reached over oras-py, with polycrate's transport and credential rules."""

    def __init__(self, registry: str, transport: Transport | None = None, credentials: tuple[str, str] | None = None,
                 use_stored_credentials: bool = True):
        self.name = registry
        transport = transport or Transport()
        self.host, self.scheme = transport.endpoint(registry)
        self.timeout = transport.timeout
        self._credentials = credentials
        self._use_stored = use_stored_credentials
        self._oras = None

    @property
    def where(self) -> str:
        shown = f"{self.scheme}://{self.host}"
        return self.name if self.host == self.name and self.scheme == "https" else f"{self.name} ({shown})"

    def connect(self):
        """Probe /v2/, choose the auth scheme, check the credentials. Returns the oras Registry."""
        if self._oras is not None:
            return self._oras
        import requests
        import oras.provider
        from http.cookiejar import DefaultCookiePolicy

        timeout = self.timeout

        class _Session(requests.Session):
            def request(self, *args, **kwargs):  # oras sets no timeout; an unreachable registry must not hang
                kwargs.setdefault("timeout", timeout)
                return super().request(*args, **kwargs)

        class _Registry(oras.provider.Registry):
            # oras retries every failure five times with growing sleeps (minutes in all): we want one
            # clear error at once, so use the undecorated request function.
            do_request = oras.provider.Registry.do_request.__wrapped__

        session = _Session()
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        creds = self._credentials
        if creds is None and self._use_stored:
            creds = find_credentials(self.host) or (find_credentials(self.name) if self.name != self.host else None)
        url = f"{self.scheme}://{self.host}/v2/"
        try:
            probe = session.get(url)
        except requests.exceptions.SSLError:
            raise RegistryError(
                f"TLS with registry {self.where} failed; if it serves plain HTTP, mark it insecure "
                "(POLYCRATE_REGISTRY_INSECURE or registries: in workspace.poly)"
            ) from None
        except requests.exceptions.RequestException as exc:
            raise RegistryError(f"registry {self.where} is unreachable ({_reason(exc)})") from None
        backend = "basic"
        if probe.status_code == 401:
            challenge = probe.headers.get("Www-Authenticate", "")
            if challenge.lower().startswith("bearer"):
                backend = "token"
            elif creds is None:
                raise RegistryError(
                    f"registry {self.where} requires credentials: run `polycrate registry login {self.name} "
                    "--username USER --password-stdin`"
                )
            else:
                check = session.get(url, auth=creds)
                if check.status_code in (401, 403):
                    raise RegistryError(f"authentication to registry {self.where} failed: wrong username or password")
        elif probe.status_code != 200:
            raise RegistryError(f"{self.where} does not answer like an OCI registry (HTTP {probe.status_code} on /v2/)")
        reg = _Registry(hostname=self.host, insecure=self.scheme == "http", auth_backend=backend)
        reg.session = session
        reg.auth.session = session
        if creds is not None:
            reg.auth.set_basic_auth(*creds)
        elif backend == "basic":
            reg.auth._basic_auth = None
        self._oras = reg
        return reg

    def _request(self, url: str, method: str = "GET", what: str = "", **kwargs):
        import requests

        reg = self.connect()
        try:
            response = reg.do_request(url, method, **kwargs)
        except requests.exceptions.RequestException as exc:
            raise RegistryError(f"registry {self.where} failed during {what or method} ({_reason(exc)})") from None
        except ValueError:  # oras: "Cannot respond to request for authentication."
            raise RegistryError(f"authentication to registry {self.where} failed: wrong or missing credentials") from None
        if response.status_code in (401, 403):
            raise RegistryError(
                f"registry {self.where} refused {what or method} (HTTP {response.status_code}): wrong or missing "
                f"credentials (see `polycrate registry login {self.name}`)"
            )
        return response

    def _container(self, ref: Reference):
        import oras.container

        return oras.container.Container(f"{self.host}/{ref.repository}:{ref.tag or 'latest'}")

    def manifest(self, ref: Reference) -> RemoteManifest | None:
        """The manifest under ref's tag, or None when the tag (or repository) does not exist."""
        url = f"{self.scheme}://{self.host}/v2/{ref.repository}/manifests/{ref.tag}"
        response = self._request(url, "GET", what=f"reading {ref}", headers={"Accept": MANIFEST_MEDIA_TYPE})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RegistryError(f"registry {self.where} answered HTTP {response.status_code} for {ref}")
        digest = "sha256:" + hashlib.sha256(response.content).hexdigest()
        claimed = response.headers.get("Docker-Content-Digest")
        if claimed and claimed != digest:
            raise blockstore.IntegrityError(f"{ref}: the manifest's bytes do not match the digest the registry names")
        try:
            manifest = json.loads(response.content)
        except ValueError:
            raise RegistryError(f"{ref}: the registry returned a manifest that is not JSON") from None
        return RemoteManifest(digest, manifest)

    def tags(self, ref: Reference) -> list[str]:
        url = f"{self.scheme}://{self.host}/v2/{ref.repository}/tags/list"
        response = self._request(url, "GET", what=f"listing tags of {ref.path}")
        if response.status_code == 404:
            return []
        if response.status_code != 200:
            raise RegistryError(f"registry {self.where} answered HTTP {response.status_code} listing tags of {ref.path}")
        return list(response.json().get("tags") or [])

    def fetch_blob(self, ref: Reference, digest: str, size: int, dest: Path, limit: int) -> None:
        """Stream a blob to `dest`, refusing more than `limit` bytes and any digest mismatch."""
        if size > limit:
            raise blockstore.UnsafeArchive(f"{ref}: the block archive is {size} bytes, more than the limit of {limit}")
        url = f"{self.scheme}://{self.host}/v2/{ref.repository}/blobs/{digest}"
        response = self._request(url, "GET", what=f"downloading {ref}", stream=True)
        if response.status_code != 200:
            raise RegistryError(f"registry {self.where} answered HTTP {response.status_code} for a blob of {ref}")
        h = hashlib.sha256()
        total = 0
        with open(dest, "wb") as out:
            for chunk in response.iter_content(chunk_size=1 << 16):
                total += len(chunk)
                if total > limit:
                    raise blockstore.UnsafeArchive(f"{ref}: the block archive is larger than the limit of {limit} bytes")
                h.update(chunk)
                out.write(chunk)
        actual = "sha256:" + h.hexdigest()
        if actual != digest or total != size:
            raise blockstore.IntegrityError(
                f"{ref}: the downloaded archive has digest {actual}, the manifest says {digest} "
                "(tampered or corrupted artifact); nothing was installed"
            )

    def upload_blob(self, ref: Reference, path: Path, media_type: str) -> dict:
        import requests

        reg = self.connect()
        descriptor = {"mediaType": media_type, "digest": blockstore.file_digest(path), "size": path.stat().st_size}
        try:
            response = reg.upload_blob(str(path), self._container(ref), dict(descriptor))
        except requests.exceptions.RequestException as exc:
            raise RegistryError(f"registry {self.where} failed during upload ({_reason(exc)})") from None
        except ValueError as exc:
            raise RegistryError(f"upload to registry {self.where} failed: {exc}") from None
        if response.status_code not in (200, 201, 202):
            raise RegistryError(f"registry {self.where} refused the upload of {ref} (HTTP {response.status_code})")
        return descriptor

    def put_manifest(self, ref: Reference, body: bytes) -> str:
        url = f"{self.scheme}://{self.host}/v2/{ref.repository}/manifests/{ref.tag}"
        response = self._request(
            url, "PUT", what=f"pushing {ref}", data=body, headers={"Content-Type": MANIFEST_MEDIA_TYPE}
        )
        if response.status_code not in (200, 201, 202):
            detail = ""
            try:
                errors = response.json().get("errors") or []
                detail = f": {errors[0].get('message')}" if errors else ""
            except ValueError:
                pass
            raise RegistryError(f"registry {self.where} refused the manifest of {ref} (HTTP {response.status_code}{detail})")
        return "sha256:" + hashlib.sha256(body).hexdigest()


# --- push and pull ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PushResult:
    reference: Reference
    digest: str
    content: str
    size: int
    replaced: str | None  # digest of the manifest the tag pointed to before (--force)


@dataclass(frozen=True)
class PullResult:
    reference: Reference
    digest: str
    folder: Path
    previous_version: str | None
    lock_written: bool
    blocks_root: str = blockstore.BLOCKS_DIR

    def describe(self) -> str:
        was = ""
        if self.previous_version and self.previous_version != self.reference.tag:
            was = f" (was {self.previous_version})"
        return f"pulled {self.reference} {self.digest} into {self.blocks_root}/{self.reference.path}{was}"


def default_reference(relpath: str) -> Reference | None:
    """The reference a block folder's registry-shaped path implies (blocks/REGISTRY/PATH)."""
    try:
        return parse_reference(relpath)
    except BadReference:
        return None


def push_block(definition, reference: Reference, transport: Transport, force: bool = False) -> PushResult:
    """Pack the block folder and push it as `reference` (whose tag must be the block's version)."""
    if reference.tag is None:
        reference = reference.with_tag(definition.version)
    if reference.tag != definition.version:
        raise RegistryError(
            f"tag {reference.tag!r} differs from block '{definition.name}' version {definition.version!r} "
            "(blocks are tagged with the version in block.poly)"
        )
    client = RegistryClient(reference.registry, transport)
    existing = client.manifest(reference)
    if existing is not None and not force:
        raise RegistryError(
            f"{reference} already exists in the registry ({existing.digest}): bump 'version' in block.poly, "
            "or push with --force to replace it (consumers with a lock file will refuse the new digest)"
        )
    with tempfile.TemporaryDirectory(prefix="polycrate-push-") as tmp:
        archive = Path(tmp) / "block.tar.gz"
        content = blockstore.pack_block(definition.folder, archive)
        config_file = Path(tmp) / "config.json"
        config_file.write_bytes(
            json.dumps(
                {"name": definition.name, "version": definition.version, "kind": definition.kind,
                 "description": definition.description},
                sort_keys=True, separators=(",", ":"),
            ).encode()
        )
        config = client.upload_blob(reference, config_file, CONFIG_MEDIA_TYPE)
        layer = client.upload_blob(reference, archive, LAYER_MEDIA_TYPE)
        layer["annotations"] = {ANN_TITLE: "block.tar.gz"}
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": config,
            "layers": [layer],
            "annotations": {
                ANN_NAME: definition.name,
                ANN_VERSION: definition.version,
                ANN_CONTENT: content,
                ANN_TITLE: definition.name,
                ANN_OCI_VERSION: definition.version,
            },
        }
        body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        digest = client.put_manifest(reference, body)
        return PushResult(reference, digest, content, layer["size"], existing.digest if existing else None)


def resolve_tag(client: RegistryClient, reference: Reference) -> Reference:
    """A reference without a version means the highest version tag in the repository."""
    if reference.tag:
        return reference
    tags = client.tags(reference)
    if not tags:
        raise RegistryError(f"{reference.path} has no tags in registry {client.where}")
    return reference.with_tag(max(tags, key=version_key))


def pull_block(root: Path, reference: Reference, transport: Transport, update_lock: bool = False,
               blocks_root: str = blockstore.BLOCKS_DIR) -> PullResult:
    """Install `reference` as blocks/REGISTRY/PATH (under workspace.poly's `config.blocksroot` when
    set), atomically, verified, pinned in blocks.lock."""
    from polycrate.config.schema import block_version, read_block_file

    blockstore.check_relpath(reference.path)
    client = RegistryClient(reference.registry, transport)
    reference = resolve_tag(client, reference)
    remote = client.manifest(reference)
    if remote is None:
        raise RegistryError(f"{reference}: no such version in registry {client.where}")
    manifest = remote.manifest
    layers = manifest.get("layers") or []
    config_type = (manifest.get("config") or {}).get("mediaType")
    if config_type != CONFIG_MEDIA_TYPE or len(layers) != 1 or layers[0].get("mediaType") != LAYER_MEDIA_TYPE:
        raise RegistryError(f"{reference} is not a polycrate block (unexpected artifact type {config_type!r})")
    content = remote.annotations.get(ANN_CONTENT)
    if not content:
        raise blockstore.IntegrityError(f"{reference} carries no content digest annotation ({ANN_CONTENT})")

    lock = blockstore.read_lock(root)
    pin = blockstore.check_pin(lock, str(reference), remote.digest, update_lock)  # before any download

    previous = None
    existing = root / blocks_root / reference.path / "block.poly"
    if existing.is_file():
        try:
            previous = block_version(existing)
        except PolycrateError:
            previous = None

    def validate(folder: Path) -> None:
        definition = read_block_file(folder / "block.poly", folder.parent)
        if definition.version != reference.tag:
            raise blockstore.IntegrityError(
                f"{reference}: the artifact's block.poly says version {definition.version}, not {reference.tag}"
            )
        expected_name = remote.annotations.get(ANN_NAME)
        if expected_name and definition.name != expected_name:
            raise blockstore.IntegrityError(
                f"{reference}: the artifact's block.poly names '{definition.name}', the manifest '{expected_name}'"
            )

    with tempfile.TemporaryDirectory(prefix="polycrate-pull-") as tmp:
        archive = Path(tmp) / "block.tar.gz"
        layer = layers[0]
        client.fetch_blob(reference, layer["digest"], int(layer.get("size", 0)), archive, transport.max_block_bytes)
        folder = blockstore.install_block(root, reference.path, archive, content, validate, transport.max_block_bytes,
                                          blocks_root)
    if pin:
        lock[str(reference)] = blockstore.LockEntry(remote.digest, content)
        blockstore.write_lock(root, lock)
    return PullResult(reference, remote.digest, folder, previous, pin, blocks_root)


def login(registry: str, username: str, password: str, transport: Transport) -> Path:
    """Check the credentials against the registry, then store them in the Docker config file."""
    client = RegistryClient(registry, transport, credentials=(username, password))
    client.connect()
    return store_credentials(client.host, username, password)
