"""The note a form's change leaves for the page it redirects to (Post/Redirect/Get).

A successful form POST answers 303 See Other to its page, so a refresh does not send the form again; what
the page then says ("user carol added", a new API token shown once) travels in a short-lived cookie. The
cookie is signed with the session's own secret (the session id or API token, known to the server and that
browser only): a cookie planted by someone else, or read back in another session, is ignored. It is
HttpOnly, SameSite=Strict, limited to the page's path, and removed by the page that shows it.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

COOKIE = "pc_flash"
MAX_AGE = 120  # seconds: the redirect follows at once
TEXT_MAX = 1000  # characters of a note


def encode(key: str, note: dict[str, Any]) -> str:
    """The cookie's value: the note as JSON (texts bounded), base64url, a dot, its HMAC-SHA256 under `key`."""
    bounded = {k: v[:TEXT_MAX] if isinstance(v, str) else v for k, v in note.items()}
    payload = base64.urlsafe_b64encode(json.dumps(bounded).encode()).decode().rstrip("=")
    return f"{payload}.{_signature(key, payload)}"


def decode(key: str, value: str | None) -> dict[str, Any] | None:
    """The note of a cookie signed under `key`; None for no cookie, a wrong signature or a malformed one."""
    if not value or "." not in value or len(value) > 8 * TEXT_MAX:
        return None
    payload, _, signature = value.rpartition(".")
    if not hmac.compare_digest(signature.encode(), _signature(key, payload).encode()):
        return None
    try:
        note = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, TypeError):
        return None
    if not isinstance(note, dict):
        return None
    return {k: v for k, v in note.items() if isinstance(k, str) and (v is None or isinstance(v, str))}


def _signature(key: str, payload: str) -> str:
    return hmac.new(key.encode(), b"flash:" + payload.encode(), hashlib.sha256).hexdigest()
