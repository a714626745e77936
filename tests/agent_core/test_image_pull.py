"""Image pulls from a real registry (Debian's docker-registry on loopback) through dockerd.

The pushed image carries a layer of random bytes that exists nowhere else, so
the pull really downloads it: byte progress reaches the pod status, the
container runs. Pull failures (unknown tag, nothing listening on the registry
port) end as ``ErrImagePull`` with the daemon's reason in the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import pytest

import fleetproto as fp
from edge_agent.backoff import Backoff
from edge_agent.reconciler import Reconciler, ReconcilerConfig
from edge_agent.runtime import DockerRuntime, PullPolicy, PullProgress
from edge_agent.store import PodStore
from tests.agent_core.conftest import eventually, remove_node_containers
from tests.agent_core.registry import free_port, push_unique_image, running_registry
from tests.support.docker import BUSYBOX_IMAGE

BLOB = 4_000_000
PROGRESS = re.compile(r"^pulling image (\S+): (\d+\.\d) of (\d+\.\d) MB$")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


@pytest.fixture
def pushed(registry: str, docker_host: str, node: str) -> Iterator[str]:
    """A fresh image in the registry, absent from dockerd; removed from dockerd afterwards
    (with the node's containers first: an image a container still uses would only lose
    its tag and stay behind, dangling)."""
    ref = f"{registry}/edgefleet/pulltest:{uuid.uuid4().hex[:10]}"
    push_unique_image(docker_host, BUSYBOX_IMAGE, ref, blob_bytes=BLOB)
    yield ref
    remove_node_containers(docker_host, node)
    client = docker.APIClient(base_url=docker_host, timeout=60)
    try:
        with contextlib.suppress(docker.errors.NotFound):
            client.remove_image(ref, force=True)
    finally:
        client.close()


class Recorder:
    """A reconciler on the real runtime that keeps every status report it sends."""

    def __init__(self, runtime: DockerRuntime, node: str, data_dir: Path) -> None:
        self.reports: list[fp.PodStatusReport] = []
        self.rec = Reconciler(
            runtime,
            PodStore(data_dir),
            ReconcilerConfig(node=node, backoff=Backoff(0.2, 1.0), poll_seconds=0.2, default_grace_seconds=1),
            on_status=self.reports.append,
            on_deleted=lambda _: None,
        )

    def main(self) -> fp.ContainerStatus | None:
        return self.reports[-1].container("main") if self.reports else None

    def main_ready(self) -> bool:
        status = self.main()
        return status is not None and status.ready

    def waiting(self) -> list[tuple[str, str]]:
        out = []
        for report in self.reports:
            status = report.container("main")
            if status is not None and status.state.kind is fp.StateKind.WAITING:
                out.append((status.state.reason, status.state.message))
        return out


@pytest.fixture
async def recorder(runtime: DockerRuntime, node: str, tmp_path: Path) -> AsyncIterator[Recorder]:
    recorder = Recorder(runtime, node, tmp_path)
    task = asyncio.create_task(recorder.rec.run())
    try:
        yield recorder
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def pod(image: str) -> fp.DesiredPod:
    return fp.DesiredPod(
        uid="pull1",
        namespace="default",
        name="pod-pull1",
        containers=(fp.Container(name="main", image=image, command=("sleep", "3600")),),
        termination_grace_seconds=1,
    )


async def test_runtime_pull_reports_byte_progress(runtime: DockerRuntime, pushed: str) -> None:
    events: list[PullProgress] = []
    await runtime.ensure_image(pushed, events.append)
    downloads = [e for e in events if e.status == "Downloading" and e.total]
    assert downloads, f"no byte progress among {[e.status for e in events]}"
    assert all(e.image == pushed and e.layer for e in downloads)
    assert {e.total for e in downloads} == {downloads[0].total}
    total = downloads[0].total or 0
    assert BLOB <= total <= BLOB + 100_000  # random bytes do not compress
    currents = [e.current or 0 for e in downloads]
    assert currents == sorted(currents) and currents[-1] > 0
    assert any(e.status == "Already exists" for e in events), "the busybox base layer is present locally"
    # Now present: IfNotPresent does not pull again, Always does (and finds it up to date).
    again: list[PullProgress] = []
    await runtime.ensure_image(pushed, again.append)
    assert again == []
    await runtime.ensure_image(pushed, again.append, policy=PullPolicy.ALWAYS)
    assert any("up to date" in e.status.lower() for e in again), [e.status for e in again]


async def test_pod_image_is_pulled_with_progress_and_runs(recorder: Recorder, pushed: str) -> None:
    await recorder.rec.upsert(pod(pushed), generation=1)
    await eventually(lambda: (s := recorder.main()) and s.ready, what="Running", timeout=60)
    progress = [PROGRESS.match(message) for reason, message in recorder.waiting() if reason == "ContainerCreating"]
    reported = [m for m in progress if m]
    assert reported, f"no byte progress in the pod status; waiting states were {recorder.waiting()}"
    image, done, total = reported[0].groups()
    assert image == pushed and float(done) <= float(total) and abs(float(total) - BLOB / 1e6) < 0.2
    status = recorder.main()
    assert status is not None and status.image == pushed and recorder.rec.counters["image_pull_errors"] == 0


async def test_unknown_tag_is_err_image_pull(recorder: Recorder, registry: str) -> None:
    image = f"{registry}/edgefleet/pulltest:no-such-tag"
    await recorder.rec.upsert(pod(image), generation=1)
    waiting = await eventually(
        lambda: [w for w in recorder.waiting() if w[0] == "ErrImagePull"], what="ErrImagePull", timeout=60
    )
    message = waiting[0][1]
    assert image in message and "manifest unknown" in message, message
    # ImagePullBackOff (same message) while waiting, then retried; never running.
    backoff = await eventually(
        lambda: [w for w in recorder.waiting() if w[0] == "ImagePullBackOff"], what="ImagePullBackOff"
    )
    assert backoff[0][1] == message
    await eventually(lambda: recorder.rec.counters["image_pull_errors"] >= 2, what="a retried pull")
    assert not recorder.main_ready()


async def test_unreachable_registry_port_is_err_image_pull(recorder: Recorder) -> None:
    image = f"127.0.0.1:{free_port()}/edgefleet/pulltest:test"  # nothing listens there
    await recorder.rec.upsert(pod(image), generation=1)
    waiting = await eventually(
        lambda: [w for w in recorder.waiting() if w[0] == "ErrImagePull"], what="ErrImagePull", timeout=60
    )
    message = waiting[0][1]
    assert image in message and "connection refused" in message, message
    assert not recorder.main_ready()
