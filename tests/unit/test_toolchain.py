"""Pure rules of the containerised toolchain: Dockerfile.poly inputs, path mapping, runtime choice."""
from __future__ import annotations

from pathlib import Path

import pytest

from polycrate.runtime import toolchain
from polycrate.errors import ConfigError, PolycrateError
from polycrate.runtime.container import PathMap
from tests.conftest import write


def test_from_images_skips_stages_and_scratch():
    text = """
    # comment
    FROM --platform=linux/amd64 localhost/polycrate-base:latest AS tools
    RUN echo hi
    FROM tools
    FROM scratch
    FROM docker.io/library/debian:bookworm
    """
    assert toolchain.from_images(text) == ["localhost/polycrate-base:latest", "docker.io/library/debian:bookworm"]


def test_copy_sources_are_context_paths_only():
    text = """
    FROM base
    COPY --chown=0:0 files/a.txt files/b/ /etc/
    ADD https://example.org/x.tar.gz /opt/
    COPY --from=tools /usr/bin/x /usr/bin/x
    COPY ["requirements.txt", "/tmp/"]
    RUN pip install -r /tmp/requirements.txt \\
        && echo done
    """
    assert toolchain.copy_sources(text) == ["files/a.txt", "files/b/", "requirements.txt"]


def test_path_map_maps_workspace_paths_and_nothing_else():
    paths = PathMap({"/srv/ws": "/workspace", "/tmp/polycrate-run-x": "/run/polycrate"})
    assert paths.path("/srv/ws") == "/workspace"
    assert paths.path("/srv/ws/blocks/a") == "/workspace/blocks/a"
    assert paths.path("/srv/wsx/blocks") == "/srv/wsx/blocks"
    assert paths.text("@/tmp/polycrate-run-x/vars.json") == "@/run/polycrate/vars.json"
    assert paths.text("/srv/ws/a:/usr/lib/b") == "/workspace/a:/usr/lib/b"
    assert paths.data({"root": "/srv/ws", "list": ["/srv/ws/x", 3], "name": "srv/ws"}) == {
        "root": "/workspace", "list": ["/workspace/x", 3], "name": "srv/ws"}


def _workspace(tmp_path: Path, config: str = ""):
    from polycrate.config.workspace import load_workspace

    write(tmp_path / "workspace.poly", f"name: demo\n{config}")
    return load_workspace(tmp_path)


def test_runtime_choice(tmp_path, monkeypatch):
    monkeypatch.delenv("POLYCRATE_RUNTIME")  # conftest's "local" for the tests
    assert toolchain.runtime_of(_workspace(tmp_path)) == "container"  # the default, as in Polycrate
    assert toolchain.runtime_of(_workspace(tmp_path), "local") == "local"  # -l/--local
    assert toolchain.runtime_of(_workspace(tmp_path, "config:\n  runtime: local\n")) == "local"
    monkeypatch.setenv("POLYCRATE_RUNTIME", "local")  # this machine's default
    assert toolchain.runtime_of(_workspace(tmp_path)) == "local"
    assert toolchain.runtime_of(_workspace(tmp_path), "container") == "container"
    ws = _workspace(tmp_path, "config:\n  runtime: container\n")
    assert toolchain.runtime_of(ws) == "container"  # the workspace's word beats the machine's
    assert toolchain.runtime_of(ws, "local") == "local"
    monkeypatch.setenv("POLYCRATE_RUNTIME", "vm")
    with pytest.raises(PolycrateError, match="POLYCRATE_RUNTIME='vm'"):
        toolchain.runtime_of(_workspace(tmp_path))
    monkeypatch.setenv("POLYCRATE_RUNTIME", "local")
    with pytest.raises(ConfigError) as exc:
        toolchain.runtime_of(_workspace(tmp_path, "config:\n  runtime: cloud\n"))
    assert exc.value.line == 3 and "config.runtime must be one of local, container" in str(exc.value)
    with pytest.raises(PolycrateError):
        toolchain.runtime_of(ws, "vm")


def test_input_hash_follows_dockerfile_and_copied_files_only(tmp_path):
    class NoImages:
        name = "podman"

        def image_id(self, reference):
            return None

    write(tmp_path / "Dockerfile.poly", "FROM localhost/polycrate-base:latest\nCOPY files/ /opt/files/\n")
    write(tmp_path / "files" / "a.txt", "a\n")
    ws = _workspace(tmp_path)
    first = toolchain.input_hash(ws, NoImages())
    assert toolchain.input_hash(ws, NoImages()) == first
    write(tmp_path / "other.txt", "not copied\n")
    assert toolchain.input_hash(ws, NoImages()) == first
    write(tmp_path / "files" / "a.txt", "changed\n")
    second = toolchain.input_hash(ws, NoImages())
    assert second != first
    write(tmp_path / "Dockerfile.poly", "FROM localhost/polycrate-base:latest\nCOPY files/ /opt/files/\nRUN true\n")
    assert toolchain.input_hash(ws, NoImages()) not in (first, second)
