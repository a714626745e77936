"""DockerRuntime against the real dockerd of hack/dockerd.sh (started by the fixture if needed)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from edge_agent.runtime import (
    DockerConfig,
    DockerRuntime,
    ImageNotFound,
    PortSpec,
    PullPolicy,
    PullProgress,
    Resources,
    RuntimeUnavailable,
)
from tests.agent.contract import Kit, RuntimeContract, lines
from tests.support.docker import BUSYBOX_IMAGE


@pytest.fixture
async def kit(docker_runtime: DockerRuntime, run_labels: dict[str, str], docker_has_bridge: bool) -> AsyncIterator[Kit]:
    yield Kit(
        rt=docker_runtime,
        image=BUSYBOX_IMAGE,
        labels=run_labels,
        root="",
        workdir="/srv/work",
        has_network_stats=docker_has_bridge,
        missing_images=["edgefleet/does-not-exist:1", "registry.invalid/edgefleet/nothing:latest"],
    )


class TestDockerContract(RuntimeContract):
    pass


async def test_version_reports_docker(docker_runtime: DockerRuntime) -> None:
    version = await docker_runtime.version()
    assert version.name == "docker"
    assert version.api_version >= "1.41"


async def test_unreachable_engine_is_typed(tmp_path) -> None:
    runtime = DockerRuntime(DockerConfig(base_url=f"unix://{tmp_path}/no-such.sock", timeout=5))
    try:
        with pytest.raises(RuntimeUnavailable):
            await runtime.version()
    finally:
        await runtime.aclose()


async def test_pull_policy(docker_runtime: DockerRuntime) -> None:
    reports: list[PullProgress] = []
    # Present + IfNotPresent: nothing is pulled, so nothing is reported.
    await docker_runtime.ensure_image(BUSYBOX_IMAGE, reports.append)
    assert reports == []
    with pytest.raises(ImageNotFound, match="Never"):
        await docker_runtime.ensure_image("edgefleet/absent:1", policy=PullPolicy.NEVER)
    # Always pulls; there is no registry here, so even a present image fails clearly.
    with pytest.raises(ImageNotFound, match="pull failed"):
        async with asyncio.timeout(60):
            await docker_runtime.ensure_image(BUSYBOX_IMAGE, reports.append, policy=PullPolicy.ALWAYS)


async def test_published_port_reaches_container(kit: Kit, docker_has_bridge: bool) -> None:
    assert docker_has_bridge, (
        "the engine has no bridge network (hack/dockerd.sh chose EDGEFLEET_DOCKER_NET=none), "
        "so ports cannot be published"
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        host_port = probe.getsockname()[1]
    cid = await kit.run(
        "echo hello-from-container > /tmp/index.html; exec httpd -f -p 8080 -h /tmp",
        ports=[PortSpec(8080, host_port=host_port, host_ip="127.0.0.1")],
    )
    body = b""
    async with asyncio.timeout(20):
        while b"hello-from-container" not in body:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", host_port)
                writer.write(b"GET /index.html HTTP/1.0\r\n\r\n")
                body = await reader.read()
                writer.close()
            except OSError:
                await asyncio.sleep(0.1)
    assert (await kit.rt.inspect(cid)).state.value == "running"


async def test_resource_limits_reach_the_cgroup(kit: Kit) -> None:
    # cgroup v1 files first, v2 as the fallback.
    script = (
        "cd /sys/fs/cgroup; "
        "cat memory/memory.limit_in_bytes 2>/dev/null || cat memory.max; "
        "cat cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 cpu.max"
    )
    cid = await kit.run(script, resources=Resources(memory_limit_bytes=64 * 1024 * 1024, cpu_limit=0.5))
    status = await kit.wait_exit(cid)
    assert status.exit_code == 0
    assert lines(await kit.logs(cid)) == [str(64 * 1024 * 1024).encode(), b"50000"]
    stats = await kit.rt.stats(cid)
    assert stats.cpu_usage_ns >= 0


async def test_tty_container_logs_are_raw(kit: Kit) -> None:
    cid = await kit.run("echo one; echo two >&2", tty=True)
    await kit.wait_exit(cid)
    chunks = await kit.logs(cid)
    data = b"".join(c.data for c in chunks)
    assert b"one\r\n" in data and b"two\r\n" in data  # a TTY turns \n into \r\n, one stream
