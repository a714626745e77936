"""Fixtures for the runtime tests: a real dockerd (started if needed), runtimes that clean up.

Every container a test creates carries the run label ``org.edgefleet.test-run``;
teardown removes all containers with that label through the docker SDK
directly (not through the runtime under test), so a broken runtime cannot
leave containers behind.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import pytest

from edge_agent.runtime import DockerConfig, DockerRuntime, ProcessRuntime, ProcessRuntimeConfig

RUN_LABEL = "org.edgefleet.test-run"


@pytest.fixture(scope="session")
def docker_has_bridge(docker_host: str) -> bool:
    """Whether containers get a bridge network (hack/dockerd.sh falls back to none)."""
    api = docker.APIClient(base_url=docker_host, timeout=30)
    try:
        return bool(api.networks(names=["bridge"]))
    finally:
        api.close()


@pytest.fixture
def run_labels() -> dict[str, str]:
    return {RUN_LABEL: uuid.uuid4().hex[:12]}


@pytest.fixture
async def docker_runtime(docker_host: str, run_labels: dict[str, str]) -> AsyncIterator[DockerRuntime]:
    runtime = DockerRuntime(DockerConfig(base_url=docker_host, timeout=30))
    try:
        yield runtime
    finally:
        await runtime.aclose()
        await asyncio.to_thread(_remove_labelled, docker_host, run_labels)


def _remove_labelled(docker_host: str, labels: dict[str, str]) -> None:
    api = docker.APIClient(base_url=docker_host, timeout=60)
    try:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        for item in api.containers(all=True, filters=filters):
            api.remove_container(item["Id"], force=True, v=True)
    finally:
        api.close()


@pytest.fixture
async def process_runtime(tmp_path: Path) -> AsyncIterator[ProcessRuntime]:
    runtime = ProcessRuntime(ProcessRuntimeConfig(data_dir=tmp_path / "process-runtime"))
    try:
        yield runtime
    finally:
        pids = [s.pid for s in await runtime.list() if s.pid]
        await runtime.aclose()
        leaked = [pid for pid in pids if Path(f"/proc/{pid}").exists() and _not_zombie(pid)]
        assert not leaked, f"process runtime left container processes running: {leaked}"
        tasks = [
            t.get_name()
            for t in asyncio.all_tasks()
            if t is not asyncio.current_task() and t.get_name().startswith("process-")
        ]
        assert not tasks, f"process runtime left tasks pending: {tasks}"


def _not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"
