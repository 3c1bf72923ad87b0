"""Dockerfile.poly with real podman and a real Docker engine: changed inputs build once, unchanged inputs never."""
from __future__ import annotations

import json
import secrets

import pytest

from tests.conftest import run_cli, write
from tests.integration.container_engines import EngineUnderTest

pytestmark = pytest.mark.container


@pytest.fixture
def toolchain_workspace(tmp_path, engine):
    name = f"toolchain-{secrets.token_hex(3)}"
    root = tmp_path / name
    write(
        root / "workspace.poly",
        f"""
        name: {name}
        config:
          runtime: container
          engine: {engine.name}
        """,
    )
    write(
        root / "blocks" / "tools" / "block.poly",
        """
        name: tools
        version: 1.0.0
        actions:
          - name: show
            script:
              - cat /etc/polycrate-test /etc/hello
        """,
    )
    write(root / "files" / "hello.txt", "hello one\n")
    write(
        root / "Dockerfile.poly",
        """
        FROM localhost/polycrate-base:latest
        RUN echo "marker one" > /etc/polycrate-test
        COPY files/hello.txt /etc/hello
        """,
    )
    yield root
    repository = f"localhost/polycrate-ws-{name}"
    images = engine.cli("images", "-q", repository, check=False).stdout.split()
    if images:
        engine.cli("rmi", "-f", *set(images), check=False)


def build(root, engine: EngineUnderTest) -> dict:
    result = run_cli("toolchain", "build", "-o", "json", cwd=root, env=engine.env)
    assert result.returncode == 0, result.output
    return json.loads(result.stdout)


def images_of(root, engine: EngineUnderTest) -> list[str]:
    out = engine.cli("images", "--format", "{{.Tag}}", f"localhost/polycrate-ws-{root.name}").stdout
    return sorted(line for line in out.split() if line)


def test_dockerfile_changes_rebuild_once_and_unchanged_inputs_never(toolchain_workspace, engine):
    root = toolchain_workspace
    first = build(root, engine)
    assert first["built"] is True, first
    assert first["image"].startswith(f"localhost/polycrate-ws-{root.name}:")
    again = build(root, engine)
    assert again == again | {"built": False, "image": first["image"]}

    run = run_cli("run", "tools", "show", cwd=root, env=engine.env)  # unchanged inputs: runs without building
    assert run.returncode == 0, run.output
    assert "marker one" in run.stdout and "hello one" in run.stdout
    assert "building Dockerfile.poly" not in run.output

    # a changed Dockerfile.poly: the next run builds once, then nothing builds again
    dockerfile = root / "Dockerfile.poly"
    dockerfile.write_text(dockerfile.read_text().replace("marker one", "marker two"))
    run = run_cli("run", "tools", "show", cwd=root, env=engine.env)
    assert run.returncode == 0, run.output
    assert run.stderr.count("building Dockerfile.poly into") == 1, run.stderr
    assert "marker two" in run.stdout
    second = build(root, engine)
    assert second["built"] is False and second["image"] != first["image"]
    run = run_cli("run", "tools", "show", cwd=root, env=engine.env)
    assert "building Dockerfile.poly" not in run.output

    # a file a COPY line reads is an input too
    (root / "files" / "hello.txt").write_text("hello two\n")
    third = build(root, engine)
    assert third["built"] is True and third["image"] not in (first["image"], second["image"])
    assert build(root, engine)["built"] is False
    run = run_cli("run", "tools", "show", cwd=root, env=engine.env)
    assert "hello two" in run.stdout and "building" not in run.output

    # files no COPY line names are not inputs
    write(root / "notes.txt", "not an input\n")
    assert build(root, engine)["built"] is False
    assert len(images_of(root, engine)) == 3  # one image per distinct set of inputs, no more
    assert engine.containers(root.name) == []


def test_toolchain_info_names_image_engine_and_versions(toolchain_workspace, engine):
    from importlib.metadata import version

    result = run_cli("toolchain", "info", "-o", "json", cwd=toolchain_workspace, env=engine.env)
    assert result.returncode == 0, result.output
    info = json.loads(result.stdout)
    assert info["runtime"] == "container"
    assert info["engine"] == engine.name
    assert info["image"].startswith(f"localhost/polycrate-ws-{toolchain_workspace.name}:")
    assert info["versions"]["ansible-core"] == version("ansible-core")  # the same Ansible as the local runtime
    assert info["versions"]["python"].startswith("3.")
    assert info["versions"]["rclone"].startswith("v")
    text = run_cli("toolchain", "info", cwd=toolchain_workspace, env=engine.env)
    assert text.returncode == 0 and "ansible-core:" in text.stdout
