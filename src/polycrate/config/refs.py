"""Block references: `REGISTRY/PATH[:VERSION]` (a block in an OCI registry) or a block's name, parsed
in one place for the schema, the workspace loader and the registry client. Pure functions."""
from __future__ import annotations

import re

from polycrate.errors import PolycrateError
from polycrate.config.record import Record, record

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST_RE = re.compile(rf"^(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")



class BadReference(PolycrateError):
    """A block reference that is not REGISTRY/PATH[:VERSION]."""



@record(frozen=True, eq=False, repr=False)
class Reference(Record):
    registry: str  # host[:port], as written in the reference
    repository: str  # acme/infra/linux-maintenance
    tag: str | None

    @property
    def path(self) -> str:
        """registry/repository: the block's folder under blocks/."""
        return f"{self.registry}/{self.repository}"

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag)

    def __str__(self) -> str:
        return self.path + (f":{self.tag}" if self.tag else "")


def looks_like_host(component: str) -> bool:
    """The docker rule: a first path component is a registry host if it has '.' or ':' or is localhost."""
    return ("." in component or ":" in component or component == "localhost") and bool(_HOST_RE.match(component))


def parse_reference(text: str) -> Reference:
    """'registry.acme-corp.com/acme/infra/linux-maintenance:0.1.0' -> Reference; strict, or BadReference."""
    if not isinstance(text, str) or not text or "@" in text:
        raise BadReference(f"invalid block reference {text!r}: use REGISTRY/PATH[:VERSION] (digests are not supported)")
    slash, colon = text.rfind("/"), text.rfind(":")
    path, tag = (text[:colon], text[colon + 1 :]) if colon > slash else (text, None)
    if tag is not None and not _TAG_RE.match(tag):
        raise BadReference(f"invalid version tag {tag!r} in {text!r}")
    registry, _, repository = path.partition("/")
    if not repository or not looks_like_host(registry):
        raise BadReference(
            f"invalid block reference {text!r}: it must start with a registry host "
            "(e.g. registry.example.com/team/block:1.0.0), or be a short one (team/block:1.0.0) with a "
            "default registry set (registries: {default: HOST} in workspace.poly)"
        )
    if not _REPOSITORY_RE.match(repository):
        raise BadReference(
            f"invalid repository path {repository!r} in {text!r}: lowercase letters, digits and "
            "'.', '_', '-' between them, separated by '/'"
        )
    return Reference(registry, repository, tag)


def is_registry_reference(text: str) -> bool:
    try:
        parse_reference(text)
    except BadReference:
        return False
    return True


def version_key(version: str) -> tuple[tuple[int, ...], bool, str]:
    """Order versions like semver: 0.10.0 > 0.9.1; a pre-release sorts before its release."""
    core, _, pre = version.split("+", 1)[0].partition("-")
    nums = tuple(int(p) if p.isdigit() else -1 for p in core.lstrip("v").split("."))
    return (nums, pre == "", pre)


def split_reference(reference: str) -> tuple[str, str | None]:
    """'registry.acme-corp.com/acme/infra/linux-maintenance:0.1.0' -> (path, '0.1.0')."""
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        return reference[:colon], reference[colon + 1 :] or None
    return reference, None
