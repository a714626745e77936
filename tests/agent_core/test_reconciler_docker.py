"""The reconciler against a real dockerd (no MQTT): run, restart, adopt, replace, delete, bad images."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

import fleetproto as fp
from edge_agent.backoff import Backoff
from edge_agent.hostsfile import update_hosts_file
from edge_agent.podhosts import PodHostsFiles
from edge_agent.podspec import LABEL_NODE, LABEL_POD_UID
from edge_agent.reconciler import PodNotFound, Reconciler, ReconcilerConfig
from edge_agent.runtime import ContainerState
from edge_agent.store import PodStore
from tests.agent_core.conftest import eventually
from tests.support.docker import BUSYBOX_IMAGE

FAST = Backoff(0.2, 1.0)


def busybox(uid: str, script: str = "sleep 3600", *, policy=fp.RestartPolicy.ALWAYS, image=BUSYBOX_IMAGE, **kw):
    return fp.DesiredPod(
        uid=uid,
        namespace="default",
        name=f"pod-{uid}",
        containers=(fp.Container(name="main", image=image, command=("sh", "-c", script)),),
        restart_policy=policy,
        termination_grace_seconds=1,
        **kw,
    )


class Harness:
    def __init__(self, runtime, node, data_dir) -> None:
        self.runtime, self.node, self.data_dir = runtime, node, data_dir
        self.hosts: PodHostsFiles | None = None
        self.reports: dict[str, fp.PodStatusReport] = {}
        self.deleted: list[fp.PodDeleted] = []
        self.rec: Reconciler | None = None
        self.task: asyncio.Task | None = None

    async def start(self) -> Reconciler:
        self.rec = Reconciler(
            self.runtime,
            PodStore(self.data_dir),
            ReconcilerConfig(node=self.node, backoff=FAST, poll_seconds=0.2, default_grace_seconds=1),
            on_status=lambda r: self.reports.__setitem__(r.uid, r),
            on_deleted=self.deleted.append,
            hosts=self.hosts,
        )
        self.task = asyncio.create_task(self.rec.run())
        return self.rec

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def phase(self, uid: str) -> fp.PodPhase | None:
        report = self.reports.get(uid)
        return report.phase if report else None

    def main(self, uid: str) -> fp.ContainerStatus | None:
        return self.main_of(uid, "main")

    def main_of(self, uid: str, name: str) -> fp.ContainerStatus | None:
        report = self.reports.get(uid)
        return report.container(name) if report else None

    async def containers(self, uid: str):
        return await self.runtime.list({LABEL_NODE: self.node, LABEL_POD_UID: uid})


@pytest.fixture
async def harness(runtime, node, tmp_path):
    h = Harness(runtime, node, tmp_path)
    yield h
    if h.task is not None:
        await h.stop()


async def test_pod_runs_restarts_and_is_adopted(harness: Harness) -> None:
    rec = await harness.start()
    await rec.upsert(busybox("u1"), generation=1)
    await eventually(lambda: harness.phase("u1") is fp.PodPhase.RUNNING, what="Running")
    status = harness.main("u1")
    assert status.ready and status.restart_count == 0 and status.container_id
    report = harness.reports["u1"]
    assert report.pod_ip and report.start_time and report.condition("Ready").status is fp.ConditionStatus.TRUE

    # Killed behind the agent's back: restarted (attempt 1), the dead one kept as last state.
    await harness.runtime.stop(status.container_id, grace_seconds=0)
    await eventually(lambda: (s := harness.main("u1")) and s.restart_count == 1 and s.ready, what="restart")
    assert harness.main("u1").last_state.exit_code == 137
    assert rec.counters["container_restarts"] == 1

    # A new reconciler (agent restart) adopts the running container: no new attempt, no duplicate.
    running_id = harness.main("u1").container_id
    await harness.stop()
    harness.reports.clear()
    rec = await harness.start()
    assert rec.generation == 1 and "u1" in rec.desired
    await eventually(lambda: harness.phase("u1") is fp.PodPhase.RUNNING, what="adopted")
    await asyncio.sleep(0.6)
    assert harness.main("u1").container_id == running_id and harness.main("u1").restart_count == 1
    containers = await harness.containers("u1")
    assert sorted(c.state.value for c in containers) == ["exited", "running"]

    # Streams can find it; previous is the killed instance.
    ref = fp.PodRef(namespace="default", pod="pod-u1")
    assert (await rec.resolve(ref)).id == running_id
    assert (await rec.resolve(ref, previous=True)).state is ContainerState.EXITED
    with pytest.raises(PodNotFound, match="container 'nope' not found"):
        await rec.resolve(ref, "nope")

    await rec.delete("u1", grace_seconds=0)
    await eventually(lambda: harness.deleted, what="PodDeleted")
    assert harness.deleted[0].uid == "u1" and harness.deleted[0].name == "pod-u1"
    assert await harness.containers("u1") == []
    assert "u1" not in PodStore(harness.data_dir).load().pods


async def test_crash_loop_backs_off_and_policies(harness: Harness) -> None:
    rec = await harness.start()
    await rec.upsert(busybox("crash", "exit 3"))
    await rec.upsert(busybox("once", "exit 4", policy=fp.RestartPolicy.NEVER))
    await rec.upsert(busybox("ok", "exit 0", policy=fp.RestartPolicy.ON_FAILURE))
    await eventually(lambda: harness.phase("once") is fp.PodPhase.FAILED, what="Failed")
    assert harness.main("once").state.exit_code == 4 and harness.main("once").restart_count == 0
    await eventually(lambda: harness.phase("ok") is fp.PodPhase.SUCCEEDED, what="Succeeded")
    await eventually(lambda: (s := harness.main("crash")) and s.restart_count >= 3, timeout=20, what="3 restarts")
    crash = harness.main("crash")
    assert harness.phase("crash") is fp.PodPhase.RUNNING
    assert crash.last_state is not None and crash.last_state.exit_code == 3
    # back-off 0.2, 0.4, 0.8, 1.0 (cap): three restarts need at least 1.4 s; only two instances are kept.
    assert len(await harness.containers("crash")) <= 2


async def test_missing_image_and_spec_change(harness: Harness) -> None:
    rec = await harness.start()
    await rec.upsert(busybox("img", image="edgefleet/does-not-exist:1"))
    await eventually(
        lambda: (s := harness.main("img")) and s.state.reason in ("ErrImagePull", "ImagePullBackOff"), what="pull err"
    )
    assert "does-not-exist" in harness.main("img").state.message
    assert harness.phase("img") is fp.PodPhase.PENDING
    # Fixing the image replaces nothing (no container existed) and runs the pod.
    await rec.upsert(busybox("img"))
    await eventually(lambda: harness.phase("img") is fp.PodPhase.RUNNING, timeout=20, what="fixed image")
    first = harness.main("img").container_id
    # A changed command replaces the container (new attempt).
    await rec.upsert(busybox("img", "sleep 1000"))
    await eventually(
        lambda: (s := harness.main("img")) and s.container_id != first and s.ready, timeout=20, what="replaced"
    )
    assert harness.main("img").restart_count == 1


async def test_sync_removes_orphans(harness: Harness, runtime, node) -> None:
    rec = await harness.start()
    await rec.upsert(busybox("keep"))
    await rec.upsert(busybox("drop"))
    await eventually(lambda: harness.phase("keep") is harness.phase("drop") is fp.PodPhase.RUNNING, what="both")
    await rec.sync((busybox("keep"),), generation=5)
    await eventually(lambda: any(d.uid == "drop" for d in harness.deleted), what="drop deleted")
    assert await harness.containers("drop") == []
    assert len(await harness.containers("keep")) == 1
    assert PodStore(harness.data_dir).load().generation == 5


async def test_pod_containers_share_the_first_containers_network(harness: Harness) -> None:
    from edge_agent.podspec import LABEL_CONTAINER, LABEL_NETWORK_OF

    web = fp.DesiredPod(
        uid="duo",
        namespace="default",
        name="duo",
        containers=(
            fp.Container(
                name="web",
                image=BUSYBOX_IMAGE,
                command=("httpd", "-f", "-p", "8080", "-h", "/www"),
                volume_mounts=(fp.VolumeMount(volume="site", mount_path="/www"),),
            ),
            fp.Container(name="side", image=BUSYBOX_IMAGE, command=("sleep", "3600")),
        ),
        files={"site/x": fp.PodFile(b"shared localhost\n")},
        termination_grace_seconds=1,
    )
    rec = await harness.start()
    await rec.upsert(web)
    await eventually(lambda: harness.phase("duo") is fp.PodPhase.RUNNING, what="both running")

    async def by_name() -> dict:
        return {c.labels[LABEL_CONTAINER]: c for c in await harness.containers("duo") if c.state.value == "running"}

    running = await by_name()
    assert running["side"].labels[LABEL_NETWORK_OF] == running["web"].id
    session = await harness.runtime.exec(running["side"].id, ["wget", "-qO-", "http://127.0.0.1:8080/x"])
    out, _ = await session.read_all()
    assert out == b"shared localhost\n" and await session.wait() == 0
    await session.close()

    # The first container is replaced: the sidecar follows it into its new network namespace.
    await harness.runtime.stop(running["web"].id, grace_seconds=0)

    async def followed() -> bool:
        now = await by_name()
        if "web" not in now or "side" not in now:
            return False
        return now["side"].labels[LABEL_NETWORK_OF] == now["web"].id != running["web"].id

    await eventually(followed, timeout=30, what="sidecar follows")
    await eventually(
        lambda: harness.phase("duo") is fp.PodPhase.RUNNING and harness.main_of("duo", "side").restart_count == 1,
        what="sidecar restarted once",
    )


async def _run(runtime, cid: str, script: str) -> tuple[bytes, int]:
    session = await runtime.exec(cid, ["sh", "-c", script])
    try:
        async with asyncio.timeout(15):
            out, err = await session.read_all()
            return out + err, await session.wait()
    finally:
        await session.close()


async def test_pods_get_their_own_hosts_file_with_the_service_names(harness: Harness, tmp_path) -> None:
    """Each pod's containers share one hosts file the agent keeps: the engine's lines, the pod's address
    and name, and the Service block, rewritten in place when Services change; hostNetwork pods see the
    device's file, read-only; a deleted pod's file goes."""
    from edge_agent.podspec import LABEL_CONTAINER

    device_hosts = tmp_path / "device-hosts"
    device_hosts.write_text("127.0.0.1\tlocalhost\n")
    hosts = harness.hosts = PodHostsFiles(tmp_path / "pods", host_network_file=device_hosts)
    duo = fp.DesiredPod(
        uid="hosts-duo",
        namespace="default",
        name="duo",
        containers=(
            fp.Container(name="main", image=BUSYBOX_IMAGE, command=("sleep", "3600")),
            fp.Container(name="side", image=BUSYBOX_IMAGE, command=("sleep", "3600")),
        ),
        termination_grace_seconds=1,
    )
    rec = await harness.start()
    await rec.upsert(duo)
    await rec.upsert(busybox("hosts-net", host_network=True))
    await eventually(
        lambda: harness.phase("hosts-duo") is harness.phase("hosts-net") is fp.PodPhase.RUNNING, what="running"
    )
    pod_ip = harness.reports["hosts-duo"].pod_ip
    path = hosts.path("hosts-duo")
    await eventually(lambda: f"{pod_ip}\tduo\n" in path.read_text(), what="the pod's address line")
    inode = os.stat(path).st_ino
    running = {c.labels[LABEL_CONTAINER]: c.id for c in await harness.containers("hosts-duo")}
    for cid in running.values():
        assert await _run(harness.runtime, cid, "cat /etc/hosts") == (path.read_bytes(), 0)
        assert await _run(harness.runtime, cid, "cat /proc/sys/kernel/hostname") == (b"duo\n", 0)
    assert path.read_text().startswith("# Pod hosts file") and "127.0.0.1\tlocalhost\n" in path.read_text()

    # A Service is granted: its names resolve in the running containers (busybox ping resolves through
    # /etc/hosts; nothing answers at the address, only the resolution is checked).
    hosts.set_services(["10.96.7.7\tweb.default.svc.cluster.local web.default.svc web.default web"])
    for cid in running.values():
        out, _ = await _run(harness.runtime, cid, "ping -c1 -W1 web.default.svc.cluster.local")
        assert b"(10.96.7.7)" in out, out
    out, _ = await _run(harness.runtime, running["side"], "ping -c1 -W1 web")
    assert b"PING web (10.96.7.7)" in out, out
    # Withdrawn: the name is gone from the same file.
    hosts.set_services([])
    out, code = await _run(harness.runtime, running["main"], "ping -c1 -W1 web")
    assert code != 0 and b"bad address" in out, out
    assert os.stat(path).st_ino == inode and "web" not in path.read_text()

    # hostNetwork: the device's file, live and read-only.
    net_id = harness.main("hosts-net").container_id
    update_hosts_file(device_hosts, ["10.96.8.8\tdb.default.svc.cluster.local db"])
    assert await _run(harness.runtime, net_id, "cat /etc/hosts") == (device_hosts.read_bytes(), 0)
    _, code = await _run(harness.runtime, net_id, "echo x >> /etc/hosts")
    assert code != 0 and "x" not in device_hosts.read_text()

    # The first container is replaced: the pod's address line follows its new address.
    hosts.set_services(["10.96.7.7\tweb"])
    await harness.runtime.stop(running["main"], grace_seconds=0)
    await eventually(
        lambda: (s := harness.main_of("hosts-duo", "side")) and s.restart_count == 1 and s.ready, what="restarted"
    )
    new_ip = harness.reports["hosts-duo"].pod_ip
    await eventually(lambda: f"{new_ip}\tduo\n" in path.read_text(), what="the new address")
    assert path.read_text().count("\tduo\n") == 1 and "10.96.7.7\tweb\n" in path.read_text()

    await rec.delete("hosts-duo", grace_seconds=0)
    await eventually(lambda: any(d.uid == "hosts-duo" for d in harness.deleted), what="deleted")
    assert not path.parent.exists()
