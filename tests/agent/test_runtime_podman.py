"""DockerRuntime against Podman's Docker-compatible API (a private ``podman system service``)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edge_agent.runtime import ContainerSpec, DockerConfig, DockerRuntime
from tests.agent.conftest import RUN_LABEL
from tests.agent.contract import Kit, RuntimeContract
from tests.agent.podman import PodmanService, podman_service


@pytest.fixture(scope="module")
def podman() -> Iterator[PodmanService]:
    with podman_service() as service:
        service.import_test_image()
        yield service


@pytest.fixture
async def podman_runtime(podman: PodmanService) -> AsyncIterator[DockerRuntime]:
    run = uuid.uuid4().hex[:12]
    runtime = DockerRuntime(DockerConfig(base_url=podman.url, timeout=30))
    runtime.test_labels = {RUN_LABEL: run}  # type: ignore[attr-defined]
    try:
        yield runtime
    finally:
        await runtime.aclose()
        podman.remove_labelled(RUN_LABEL, run)


@pytest.fixture
async def kit(podman_runtime: DockerRuntime) -> AsyncIterator[Kit]:
    yield Kit(
        rt=podman_runtime,
        image="edgefleet/busybox:test",
        labels=podman_runtime.test_labels,  # type: ignore[attr-defined]
        root="",
        workdir="/srv/work",
        has_network_stats=True,
        subsecond_log_timestamps=False,  # podman 4.3 formats log times with time.RFC3339
        missing_images=["edgefleet/does-not-exist:1", "registry.invalid/edgefleet/nothing:latest"],
    )


class TestPodmanContract(RuntimeContract):
    pass


async def test_version_reports_podman(podman_runtime: DockerRuntime) -> None:
    version = await podman_runtime.version()
    assert version.name == "podman"
    assert version.version.startswith("4.") and version.api_version >= "1.40"


async def test_podman_leaves_nothing_behind() -> None:
    """Stopping the service ends every process it started and removes its bridge."""
    with podman_service() as service:
        service.import_test_image()
        runtime = DockerRuntime(DockerConfig(base_url=service.url, timeout=30))
        try:
            cid = await runtime.create(
                ContainerSpec(name="leftover", image="edgefleet/busybox:test", command=["sleep", "60"])
            )
            await runtime.start(cid)
            session = await runtime.exec(cid, ["sleep", "60"])
            assert service._leftover_pids(), "the running container's conmon should name the service directory"
            assert Path(f"/sys/class/net/{service.bridge}").exists()
            await session.close()
        finally:
            await runtime.aclose()
    assert service._leftover_pids() == []
    assert not Path(f"/sys/class/net/{service.bridge}").exists()
