"""
The bastion end to end on Docker discovery: a stand-in Docker Engine API on a
unix socket (the real paths and JSON shapes, exec with the hijacked
multiplexed stream) in front of real sshd targets; the scenarios are
L{tests.bastion_scenarios}'.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted

from tests.bastion_scenarios import BastionScenarios, World, buildWorld, reactor
from tests.fakes.docker import FakeDockerEngine

pytestmark = pytest.mark.interop


@pytest_twisted.async_yield_fixture(scope="module")
async def world(tmp_path_factory: Any) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("bastion-docker")
    docker = await FakeDockerEngine(reactor, tmp / "docker.sock").start()
    w = await buildWorld(
        tmp,
        docker,
        {"SSH_CONTAINER_ENGINE": "docker", "DOCKER_HOST": f"unix://{docker.socketPath}"},
        listCount=lambda: docker.count("/containers/json"),
        execCommands=lambda: docker.execCommands,
    )
    try:
        yield w
    finally:
        await w.close()
        await docker.stop()


class TestDocker(BastionScenarios):
    pass
