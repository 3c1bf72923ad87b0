"""`polycrate checksum DIR`: the real Polycrate's directory checksum (gosimple/hashdir, MD5), recomputed.

Walk the folder in lexical order (the folder itself first); at every entry the running hash becomes
md5hex(running); at every file md5hex(path) and md5hex(content) are appended; the result is md5hex of
the end. Paths are as given (joined to DIR as typed), so the same DIR spelling gives Polycrate's value.
"""
from __future__ import annotations

import hashlib
import os


def _hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _file_hex(path: str) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def directory_checksum(root: str) -> str:
    end = ""

    def walk(path: str) -> None:
        nonlocal end
        end = _hex(end.encode())
        if os.path.isdir(path) and not os.path.islink(path):
            for name in sorted(os.listdir(path)):
                walk(os.path.join(path, name))
        else:
            end += _hex(path.encode()) + _file_hex(path)

    walk(root)
    return _hex(end.encode())
