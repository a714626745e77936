"""The edge agent end to end: real mosquitto, real dockerd, the test playing the cloud with fleetproto.

Each test gets its own broker, node name and data dir; containers are removed
by node label afterwards (``conftest.node``). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re

import docker
import pytest

import fleetproto as fp
from edge_agent.config import RuntimeSettings
from edge_agent.podspec import LABEL_NODE, LABEL_POD_UID
from seqstream import StreamResetError
from tests.agent_core.agents import AgentProcess, agent_config, running_agent
from tests.agent_core.cloud import ControlPeer, exec_in, expect_reset, fake_cloud, read_exec
from tests.agent_core.conftest import eventually
from tests.support.brokers import Broker
from tests.support.docker import BUSYBOX_IMAGE

pytestmark = pytest.mark.broker

RFC3339 = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z ")


@pytest.fixture
def broker():
    with Broker("mosquitto") as b:
        yield b


def pod(uid: str, script: str = "sleep 3600", **kw) -> fp.DesiredPod:
    containers = kw.pop("containers", None) or (
        fp.Container(name="main", image=kw.pop("image", BUSYBOX_IMAGE), command=("sh", "-c", script)),
    )
    return fp.DesiredPod(
        uid=uid,
        namespace="default",
        name=f"pod-{uid}",
        containers=containers,
        termination_grace_seconds=1,
        **kw,
    )


def ref(uid: str) -> fp.PodRef:
    return fp.PodRef(namespace="default", pod=f"pod-{uid}")


def running(report: fp.PodStatusReport) -> bool:
    return report.phase is fp.PodPhase.RUNNING and all(c.ready for c in report.container_statuses)


def docker_containers(docker_host: str, node: str, uid: str) -> list[dict]:
    api = docker.APIClient(base_url=docker_host, timeout=30)
    try:
        filters = {"label": [f"{LABEL_NODE}={node}", f"{LABEL_POD_UID}={uid}"]}
        return api.containers(all=True, filters=filters)
    finally:
        api.close()


async def start_pod(control: ControlPeer, p: fp.DesiredPod, generation: int = 1) -> fp.PodStatusReport:
    control.send(fp.PodUpsert(pod=p, generation=generation))
    return await control.status(p.uid, running, what=f"{p.uid} Running")


# ------------------------------------------------------------------ hello, status, lifecycle


async def test_hello_heartbeat_and_pod_lifecycle(broker, node, tmp_path, docker_host) -> None:
    config = agent_config(broker, node, tmp_path / "agent", docker_host, host_exec=True)
    async with fake_cloud(broker) as cloud, running_agent(config):
        control = await cloud.control()
        hello = await control.wait_for(lambda m: isinstance(m, fp.NodeHello), what="NodeHello")
        info = hello.node
        assert hello.protocol_version == fp.PROTOCOL_VERSION and hello.generation == 0 and hello.pods == ()
        assert info.os == "linux" and info.arch and info.kernel and info.hostname
        assert info.cpus >= 1 and info.memory_bytes > 64 << 20 and info.disk_bytes > 0
        assert info.runtime.name == "docker" and info.runtime.version
        assert info.features == ("host_exec",) and info.agent_version
        assert any(a.type == "InternalIP" for a in info.addresses)
        assert control.messages[0] is hello, "NodeHello comes first"

        status = await control.wait_for(lambda m: isinstance(m, fp.NodeStatus), what="NodeStatus")
        assert status.condition("Ready").status is fp.ConditionStatus.TRUE
        assert status.capacity.cpu_millis >= 1000 and status.capacity.pods == 110

        report = await start_pod(control, pod("life"))
        main = report.container("main")
        assert main.state.kind is fp.StateKind.RUNNING and main.restart_count == 0 and main.image == BUSYBOX_IMAGE
        assert report.pod_ip and report.host_ip and report.start_time
        assert report.condition("Ready").status is fp.ConditionStatus.TRUE
        assert len(docker_containers(docker_host, node, "life")) == 1

        control.send(fp.PodDelete(uid="life", grace_seconds=0, generation=2))
        deleted = await control.wait_for(lambda m: isinstance(m, fp.PodDeleted), what="PodDeleted")
        assert (deleted.uid, deleted.name) == ("life", "pod-life")
        assert docker_containers(docker_host, node, "life") == []


# ------------------------------------------------------------------ exec, logs, port-forward, stats


async def test_exec_non_tty_and_tty_with_resize(broker, node, tmp_path, docker_host) -> None:
    config = agent_config(broker, node, tmp_path / "agent", docker_host)
    async with fake_cloud(broker) as cloud, running_agent(config):
        control = await cloud.control()
        await start_pod(control, pod("ex"))

        script = "echo out; echo err >&2; cat; exit 7"
        request = fp.ExecOpen(ref=ref("ex"), command=("sh", "-c", script), stdin=True)
        result = await exec_in(cloud, node, request, stdin=b"from stdin\n")
        assert result.stdout == b"out\nfrom stdin\n" and result.stderr == b"err\n"
        assert result.status == fp.ExitStatus(exit_code=7)

        # stdin EOF by an empty stdin frame (the stream stays open for resize)
        stream = await cloud.open(node, fp.ExecOpen(ref=ref("ex"), command=("wc", "-c"), stdin=True))
        stream.write(fp.encode_frame(fp.Channel.STDIN, b"12345") + fp.encode_frame(fp.Channel.STDIN))
        result = await read_exec(stream)
        assert result.stdout.strip() == b"5" and result.status.exit_code == 0
        stream.write_eof()

        stream = await cloud.open(node, fp.ExecOpen(ref=ref("ex"), command=("sh",), tty=True, stdin=True))
        stream.write(fp.resize_frame(100, 30))
        await asyncio.sleep(0.3)
        stream.write(fp.encode_frame(fp.Channel.STDIN, b"stty size; exit 3\n"))
        result = await read_exec(stream)
        stream.write_eof()
        assert b"30 100" in result.stdout and result.stderr == b""
        assert result.status.exit_code == 3


async def test_exec_falls_back_when_the_polled_view_is_stale(broker, node, tmp_path, docker_host) -> None:
    """An exec starts from the last poll's container id (no list call); when that container is
    gone meanwhile, the agent looks again and execs into the one that runs."""
    config = agent_config(broker, node, tmp_path / "agent", docker_host)
    config = dataclasses.replace(config, pods=dataclasses.replace(config.pods, poll_seconds=60))  # no refresh
    async with fake_cloud(broker) as cloud, running_agent(config) as agent:
        control = await cloud.control()
        p = pod("stale")
        await start_pod(control, p)
        rec = agent.reconciler
        assert rec is not None
        (current,) = await rec.instances(p, "main")
        rec._observed[p.uid] = [dataclasses.replace(current, id="f" * 64)]  # a container that no longer exists
        assert rec.running_hint(ref("stale")) == "f" * 64
        result = await exec_in(cloud, node, fp.ExecOpen(ref=ref("stale"), command=("echo", "hi")))
        assert result.stdout == b"hi\n" and result.status == fp.ExitStatus(exit_code=0)


async def test_attach_to_the_main_process(broker, node, tmp_path, docker_host) -> None:
    config = agent_config(broker, node, tmp_path / "agent", docker_host)
    cat = pod(
        "att",
        containers=(fp.Container(name="main", image=BUSYBOX_IMAGE, command=("cat",), stdin=True, stdin_once=True),),
        restart_policy=fp.RestartPolicy.ON_FAILURE,
    )
    async with fake_cloud(broker) as cloud, running_agent(config):
        control = await cloud.control()
        await start_pod(control, cat)
        stream = await cloud.open(node, fp.AttachOpen(ref=ref("att"), stdin=True))
        stream.write(fp.encode_frame(fp.Channel.STDIN, b"ping\n"))
        await asyncio.sleep(0.5)
        stream.write(fp.encode_frame(fp.Channel.STDIN))  # stdin EOF: with stdin_once, cat sees EOF and exits 0
        result = await read_exec(stream)
        stream.write_eof()
        assert result.stdout == b"ping\n" and result.status == fp.ExitStatus(exit_code=0)
        await control.status("att", lambda r: r.phase is fp.PodPhase.SUCCEEDED, what="Succeeded")

        gone = await cloud.open(node, fp.AttachOpen(ref=ref("att")))
        error = await expect_reset(gone)
        assert error.code == fp.AppError.CONFLICT and "not running" in error.reason


async def test_logs_tail_timestamps_follow_limit(broker, node, tmp_path, docker_host) -> None:
    config = agent_config(broker, node, tmp_path / "agent", docker_host)
    script = "for i in 1 2 3 4 5; do echo line$i; done; i=0; while true; do i=$((i+1)); echo tick$i; sleep 0.2; done"
    async with fake_cloud(broker) as cloud, running_agent(config):
        control = await cloud.control()
        await start_pod(control, pod("logs", script))
        await asyncio.sleep(0.5)

        async def fetch(**kw) -> bytes:
            stream = await cloud.open(node, fp.LogsOpen(ref=ref("logs"), **kw))
            stream.write_eof()
            async with asyncio.timeout(30):
                return await stream.readall()

        everything = await fetch()
        assert everything.startswith(b"line1\nline2\nline3\nline4\nline5\ntick1\n")
        tail = (await fetch(tail_lines=2)).splitlines()
        assert len(tail) == 2 and all(line.startswith(b"tick") for line in tail)
        stamped = (await fetch(tail_lines=3, timestamps=True)).splitlines()
        assert len(stamped) == 3 and all(RFC3339.match(line) for line in stamped)
        assert await fetch(limit_bytes=8) == b"line1\nli"

        # follow: new lines keep arriving until the cloud resets the stream
        stream = await cloud.open(node, fp.LogsOpen(ref=ref("logs"), follow=True, tail_lines=0))
        stream.write_eof()
        seen = b""
        async with asyncio.timeout(30):
            while seen.count(b"\n") < 3:
                seen += await stream.read()
        assert all(line.startswith(b"tick") for line in seen.splitlines())
        stream.reset(fp.AppError.BAD_REQUEST, "done")

        missing = await cloud.open(node, fp.LogsOpen(ref=ref("logs"), previous=True))
        error = await expect_reset(missing)
        assert error.code == fp.AppError.NOT_FOUND and "previous terminated container" in error.reason


async def test_port_forward_into_the_pod(broker, node, tmp_path, docker_host) -> None:
    config = agent_config(broker, node, tmp_path / "agent", docker_host)
    page = b"<h1>hello from the pod</h1>\n"
    web = pod(
        "web",
        containers=(
            fp.Container(
                name="httpd",
                image=BUSYBOX_IMAGE,
                command=("httpd", "-f", "-p", "8080", "-h", "/www"),
                volume_mounts=(fp.VolumeMount(volume="site", mount_path="/www"),),
            ),
        ),
        files={"site/index.html": fp.PodFile(page, 0o644)},
    )
    async with fake_cloud(broker) as cloud, running_agent(config):
        control = await cloud.control()
        await start_pod(control, web)

        async def get() -> bytes:
            stream = await cloud.open(node, fp.PortForwardOpen(ref=ref("web"), port=8080))
            stream.write(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
            stream.write_eof()
            async with asyncio.timeout(30):
                return await stream.readall()

        responses = await asyncio.gather(*(get() for _ in range(3)))
        for response in responses:
            assert response.startswith(b"HTTP/1.") and b" 200 " in response.split(b"\r\n")[0]
            assert response.endswith(page)

        refused = await cloud.open(node, fp.PortForwardOpen(ref=ref("web"), port=9))
        error = await expect_reset(refused)
        assert error.code == fp.AppError.BAD_GATEWAY and "port 9" in error.reason

        forbidden = await cloud.open(node, fp.PortForwardOpen(host=True, port=22))
        assert (await expect_reset(forbidden)).code == fp.AppError.FORBIDDEN


async def test_stats_and_hostexec(broker, node, tmp_path, docker_host) -> None:
    config = agent_config(broker, node, tmp_path / "agent", docker_host, host_exec=True)
    async with fake_cloud(broker) as cloud, running_agent(config):
        control = await cloud.control()
        await start_pod(control, pod("st"))
        stream = await cloud.open(node, fp.StatsOpen())
        stream.write_eof()
        async with asyncio.timeout(30):
            data = await stream.readall()
        decoder = fp.MessageDecoder()
        decoder.feed(data)
        summary = fp.decode(decoder.next_message(), sender="device")
        assert isinstance(summary, fp.StatsSummary) and summary.node.memory_available_bytes > 0
        (usage,) = [p for p in summary.pods if p.uid == "st"]
        assert usage.containers[0].name == "main" and usage.containers[0].memory_working_set_bytes > 0

        result = await exec_in(cloud, node, fp.HostExecOpen(command=("sh", "-c", "echo host $((6*7))")))
        assert result.stdout == b"host 42\n" and result.status.exit_code == 0


async def test_hostexec_refused_unless_allowed(broker, node, tmp_path, docker_host) -> None:
    config = agent_config(broker, node, tmp_path / "agent", docker_host)
    async with fake_cloud(broker) as cloud, running_agent(config):
        await cloud.control()
        stream = await cloud.open(node, fp.HostExecOpen(command=("id",)))
        error = await expect_reset(stream)
        assert error.code == fp.AppError.FORBIDDEN and "host_exec" in error.reason


# ------------------------------------------------------------------ bad input


async def test_bad_input_is_answered_and_survived(broker, node, tmp_path, docker_host) -> None:
    config = agent_config(broker, node, tmp_path / "agent", docker_host)
    async with fake_cloud(broker) as cloud, running_agent(config) as agent:
        control = await cloud.control()
        await control.wait_for(lambda m: isinstance(m, fp.NodeHello))

        # A missing image: ErrImagePull-style status, the pod stays Pending.
        control.send(fp.PodUpsert(pod=pod("noimg", image="edgefleet/does-not-exist:1")))
        report = await control.status(
            "noimg", lambda r: r.container("main").state.reason in ("ErrImagePull", "ImagePullBackOff"), what="pull"
        )
        assert report.phase is fp.PodPhase.PENDING and "does-not-exist" in report.container("main").state.message

        # Streams into things that do not exist: 0x404 with a reason naming them.
        stream = await cloud.open(node, fp.ExecOpen(ref=ref("ghost"), command=("true",)))
        error = await expect_reset(stream)
        assert error.code == fp.AppError.NOT_FOUND and "pod default/pod-ghost not found" in error.reason
        await start_pod(control, pod("real"))
        stream = await cloud.open(node, fp.ExecOpen(ref=ref("real"), container="nope", command=("true",)))
        error = await expect_reset(stream)
        assert (
            error.code == fp.AppError.NOT_FOUND and "container 'nope' not found in pod default/pod-real" in error.reason
        )
        stream = await cloud.endpoint.open_stream({"kind": "exec", "v": 1, "namespace": "default"}, peer=node)
        error = await expect_reset(stream)
        assert error.code == fp.AppError.BAD_REQUEST and "pod: is required" in error.reason
        stream = await cloud.endpoint.open_stream({"kind": "teleport"}, peer=node)
        assert (await expect_reset(stream)).code == fp.AppError.BAD_REQUEST

        # Unknown pod fields: the pod runs, the status says what was ignored.
        upsert = fp.encode(fp.PodUpsert(pod=pod("odd")))
        upsert["pod"]["securityContext"] = {"runAsUser": 1000}
        upsert["pod"]["containers"][0]["livenessProbe"] = {"exec": {"command": ["true"]}}
        control.send_raw(fp.encode_message(upsert))
        report = await control.status("odd", running, what="odd Running")
        condition = report.condition("UnsupportedFields")
        assert condition.status is fp.ConditionStatus.TRUE
        assert "pod.securityContext" in condition.message and "livenessProbe" in condition.message

        # Well-framed garbage: an Error back (and InvalidSpec for a pod with a uid); the stream goes on.
        control.send_raw(fp.encode_message({"type": "Teleport"}))
        control.send_raw(fp.encode_message({"type": "PodUpsert", "pod": {"uid": "bad1", "namespace": "default"}}))
        control.send_raw(b"\x00\x00\x00\x03\xc1\xc1\xc1")  # not msgpack
        errors = [
            await control.wait_for(lambda m: isinstance(m, fp.Error) and "Teleport" in m.message, what="Error"),
            await control.wait_for(lambda m: isinstance(m, fp.Error) and m.about == "PodUpsert", what="Error 2"),
            await control.wait_for(lambda m: isinstance(m, fp.Error) and "msgpack" in m.message, what="Error 3"),
        ]
        assert all(e.code == fp.AppError.BAD_REQUEST for e in errors)
        invalid = await control.status("bad1", lambda r: r.reason == "InvalidSpec", what="InvalidSpec")
        assert invalid.phase is fp.PodPhase.FAILED and "containers" in invalid.message

        # Broken framing: the agent resets that control stream and opens a new one (hello + resync).
        control.send_raw(b"\xff\xff\xff\xff garbage")
        async with asyncio.timeout(30):
            while control.ended is None:
                await asyncio.sleep(0.05)
        assert isinstance(control.ended, StreamResetError) and control.ended.code == fp.AppError.BAD_REQUEST
        again = await cloud.control()
        hello = await again.wait_for(lambda m: isinstance(m, fp.NodeHello), what="second NodeHello")
        assert {"real", "odd", "noimg"} <= set(hello.pods) and hello.generation == 1
        await again.status("real", running, what="resync of real")
        status = await again.wait_for(
            lambda m: isinstance(m, fp.NodeStatus) and m.counters.get("control_framing_errors") == 1, what="counters"
        )
        assert status.counters["control_bad_messages"] == 3
        assert agent.counters["control_framing_errors"] == 1

        # ... and everything still works.
        result = await exec_in(cloud, node, fp.ExecOpen(ref=ref("real"), command=("echo", "alive")))
        assert result.stdout == b"alive\n" and result.status.exit_code == 0


# ------------------------------------------------------------------ autonomy and restarts


async def test_offline_autonomy_and_resync(broker, node, tmp_path, docker_host) -> None:
    config = agent_config(broker, node, tmp_path / "agent", docker_host)
    async with fake_cloud(broker) as cloud, running_agent(config) as agent:
        control = await cloud.control()
        first = await start_pod(control, pod("auto"))
        old_id = first.container("main").container_id

        await asyncio.to_thread(broker.stop)
        await eventually(lambda: not agent.endpoint.link.connected.is_set(), what="agent sees the broker gone")
        api = docker.APIClient(base_url=docker_host, timeout=30)
        try:
            await asyncio.to_thread(api.kill, old_id)
        finally:
            api.close()

        def restarted() -> bool:
            running_now = [c for c in docker_containers(docker_host, node, "auto") if c["State"] == "running"]
            return bool(running_now) and running_now[0]["Id"] != old_id

        await eventually(lambda: asyncio.to_thread(restarted), timeout=30, what="restart while offline")
        assert not agent.endpoint.link.connected.is_set(), "the restart happened while offline"

        await asyncio.to_thread(broker.start)
        report = await control.status(
            "auto", lambda r: running(r) and r.container("main").restart_count == 1, timeout=60, what="resynced status"
        )
        assert report.container("main").last_state.exit_code == 137
        assert report.container("main").container_id != old_id
        assert len(docker_containers(docker_host, node, "auto")) == 2  # current + previous, nothing more


async def test_agent_restart_adopts_containers(broker, node, tmp_path, docker_host) -> None:
    config = agent_config(broker, node, tmp_path / "agent", docker_host)
    async with fake_cloud(broker) as cloud:
        process = AgentProcess(config, tmp_path).start()
        try:
            control = await cloud.control(timeout=60)
            hello = await control.wait_for(lambda m: isinstance(m, fp.NodeHello))
            epoch_before = cloud.endpoint.session(node).core.peer_epoch
            first = await start_pod(control, pod("adopt"), generation=4)
            container_id = first.container("main").container_id
            assert process.stop() == 0, process.log.read_text()[-3000:]
            assert docker_containers(docker_host, node, "adopt")[0]["State"] == "running", "still running"

            process.start()
            control = await cloud.control(timeout=60)
            hello = await control.wait_for(lambda m: isinstance(m, fp.NodeHello))
            assert hello.generation == 4 and hello.pods == ("adopt",)
            assert cloud.endpoint.session(node).core.peer_epoch > epoch_before
            report = await control.status("adopt", running, what="adopted Running")
            await asyncio.sleep(1.5)  # a few poll rounds: nothing may be recreated
            report = [m for m in control.messages if isinstance(m, fp.PodStatusReport) and m.uid == "adopt"][-1]
            assert report.container("main").container_id == container_id
            assert report.container("main").restart_count == 0
            assert len(docker_containers(docker_host, node, "adopt")) == 1
        finally:
            code = process.stop()
        assert code == 0, process.log.read_text()[-3000:]


async def test_cloud_restart_reopens_control_and_resyncs(broker, node, tmp_path, docker_host) -> None:
    config = agent_config(broker, node, tmp_path / "agent", docker_host)
    async with running_agent(config) as agent:
        async with fake_cloud(broker) as cloud:
            control = await cloud.control()
            await start_pod(control, pod("a"), generation=1)
        # A new cloud incarnation (bridge restart): the device opens a new control stream to it.
        async with fake_cloud(broker) as cloud:
            control = await cloud.control(timeout=60)
            hello = await control.wait_for(lambda m: isinstance(m, fp.NodeHello))
            assert hello.generation == 1 and hello.pods == ("a",)
            await control.status("a", running, what="resync after cloud restart")
            control.send(fp.Sync(generation=2, pods=(pod("b"),)))
            deleted = await control.wait_for(lambda m: isinstance(m, fp.PodDeleted), what="a deleted by Sync")
            assert deleted.uid == "a"
            await control.status("b", running, what="b from Sync")
            assert docker_containers(docker_host, node, "a") == []
        assert agent.counters["control_streams"] >= 2


async def test_process_runtime(broker, node, tmp_path, docker_host) -> None:
    """The same agent on a device without a container engine: pods are host processes."""
    base = agent_config(broker, node, tmp_path / "agent", docker_host)
    config = dataclasses.replace(base, runtime=RuntimeSettings(kind="process"))
    proc_pod = pod(
        "proc",
        containers=(fp.Container(name="main", image="host", command=("sh", "-c", "echo started; exec sleep 3600")),),
    )
    async with fake_cloud(broker) as cloud, running_agent(config):
        control = await cloud.control()
        hello = await control.wait_for(lambda m: isinstance(m, fp.NodeHello))
        assert hello.node.runtime.name == "process"
        report = await start_pod(control, proc_pod)
        assert report.pod_ip == report.host_ip, "host processes share the host's network"
        result = await exec_in(cloud, node, fp.ExecOpen(ref=ref("proc"), command=("sh", "-c", "echo $((1+1))")))
        assert result.stdout == b"2\n" and result.status.exit_code == 0
        stream = await cloud.open(node, fp.LogsOpen(ref=ref("proc")))
        stream.write_eof()
        async with asyncio.timeout(30):
            assert await stream.readall() == b"started\n"
        control.send(fp.PodDelete(uid="proc", grace_seconds=1))
        await control.wait_for(lambda m: isinstance(m, fp.PodDeleted), what="PodDeleted")
