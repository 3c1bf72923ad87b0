"""Fixtures of the container tests, for every module here: both engines (container_engines.py)."""
from tests.integration.container_engines import (  # noqa: F401 (fixtures)
    docker_engine,
    dockerd,
    engine,
    podman_engine,
)
