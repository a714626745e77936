"""Fixtures for the agent-core tests: a real dockerd, unique node names, cleanup by label.

Every container the agent creates carries ``org.edgefleet.node=<node>``; each
test gets its own node name and teardown removes every container with it
through the docker SDK directly, so a broken agent cannot leave containers
behind.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import docker
import pytest

from edge_agent.podspec import LABEL_NODE
from edge_agent.runtime import DockerConfig, DockerRuntime


def remove_node_containers(docker_host: str, node: str) -> int:
    api = docker.APIClient(base_url=docker_host, timeout=60)
    try:
        items = api.containers(all=True, filters={"label": [f"{LABEL_NODE}={node}"]})
        for item in items:
            api.remove_container(item["Id"], force=True, v=True)
        return len(items)
    finally:
        api.close()


@pytest.fixture
def node(docker_host: str) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    yield name
    # A runtime call cancelled at teardown may still complete in its thread (a late create):
    # sweep until a round finds nothing.
    for _ in range(5):
        if not remove_node_containers(docker_host, name):
            break
        time.sleep(1)


@pytest.fixture
async def runtime(docker_host: str) -> AsyncIterator[DockerRuntime]:
    rt = DockerRuntime(DockerConfig(base_url=docker_host, timeout=30))
    try:
        yield rt
    finally:
        await rt.aclose()


async def eventually(probe, *, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    """Poll ``probe`` (sync or async) until it returns a truthy value; bounded."""
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while True:
        last = probe()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value {last!r}")
        await asyncio.sleep(interval)
