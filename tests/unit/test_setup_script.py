"""scripts/setup.sh installs what its purpose needs: read from its own package lists (`--list`, which
installs nothing), without arguments no browser, no registry and no database server."""
from __future__ import annotations

import subprocess

from tests.helpers import REPO

BROWSER = {"chromium", "chromium-driver"}
REGISTRY = {"docker-registry"}
DATABASE_SERVER = {"postgresql"}
TEST_ONLY_PYTHON = {"requirements/test.txt", "requirements/demo.txt", "requirements/docs.txt"}


def packages(*options: str) -> tuple[set[str], list[str]]:
    proc = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), *options, "--list"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    apt = {line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("apt ")}
    pip = [line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("pip ")]
    return apt, pip


def test_without_arguments_polycrate_and_its_container_runtime_only():
    apt, pip = packages()
    assert apt & (BROWSER | REGISTRY | DATABASE_SERVER) == set()
    assert {"python3-venv", "openssh-client", "podman", "debootstrap"} <= apt  # to run, and the container runtime
    assert not {"openssh-server", "zsh", "fish", "age", "kubernetes-client"} & apt
    assert pip == ["-e", ".[web]"] and not TEST_ONLY_PYTHON & set(pip)


def test_the_demo_adds_its_hosts_and_s3_but_no_browser():
    base, _ = packages()
    apt, pip = packages("--demo")
    assert base < apt and {"openssh-server", "postgresql", "rclone"} <= apt
    assert apt & (BROWSER | REGISTRY) == set()
    assert "requirements/demo.txt" in pip and "requirements/test.txt" not in pip


def test_the_tests_add_everything_they_use():
    demo, _ = packages("--demo")
    apt, pip = packages("--test")
    assert demo < apt and (BROWSER | REGISTRY | DATABASE_SERVER | {"age", "zsh", "fish"}) <= apt
    assert {"requirements/test.txt", "requirements/docs.txt"} <= set(pip)


def test_the_test_requirements_are_not_a_published_extra():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "test" not in project.get("optional-dependencies", {})
    test_requirements = (REPO / "requirements" / "test.txt").read_text()
    assert "pytest" in test_requirements and "selenium" in test_requirements


def test_an_unknown_option_is_refused():
    proc = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), "--tests"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "unknown option --tests" in proc.stderr and proc.stdout == ""
