"""Programs on a device reach cluster Services over MQTT.

The device is a network namespace with a real agent; it can reach nothing on
the host but the broker. The Services live in a real apiserver; their
endpoints are TCP servers on a host address the device has no route to, so
every byte the device gets from them went device -> agent -> MQTT -> bridge.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import sys

import docker
import pytest

import fleetproto as fp
from seqstream import StreamResetError
from seqstream.mqtt import BrokerConfig, device_endpoint
from tests.agent_core.cloud import FAST
from tests.netsvc.conftest import GREET_PORT, SERVICE_PORT, Bridges, Cluster
from tests.netsvc.harness import CLIENT, GREETING, DeviceNetns, NetnsAgent, TcpServers, client, wait_until
from tests.support.brokers import Broker
from tests.support.docker import BUSYBOX_IMAGE

pytestmark = pytest.mark.timeout(300)


def test_device_reaches_services_by_name(netns: DeviceNetns, device: NetnsAgent, cluster: Cluster, servers):
    echo_ip = cluster.cluster_ip("echo")
    # The names resolve through the device's own resolver (glibc, /etc/hosts), to the ClusterIP.
    for name in (cluster.dns("echo"), f"echo.{cluster.ns}.svc", f"echo.{cluster.ns}", "echo"):
        assert netns.run("getent", "hosts", name).stdout.split()[0] == echo_ip, name
    # The ClusterIPs sit on the agent's dummy interface inside the namespace.
    addresses = netns.run("ip", "-4", "-o", "addr", "show", "dev", "ef-svc0").stdout
    assert f"{echo_ip}/32" in addresses and f"{cluster.cluster_ip('greet')}/32" in addresses
    # The endpoint's real address is unreachable from the device: only the proxy gets there.
    direct = client(netns, "connect", servers.host, str(servers.echo_port))
    assert direct["result"] == "unreachable", direct

    answer = client(netns, "echo", cluster.dns("echo"), str(SERVICE_PORT), str(3 * 1024 * 1024))
    assert answer["result"] == "ok" and answer["received"] == 3 * 1024 * 1024, answer
    greeting = client(netns, "greet", f"greet.{cluster.ns}", str(GREET_PORT))
    assert greeting["data"] == GREETING.decode(), greeting
    # A plain nc, by name.
    nc = netns.run("busybox", "nc", cluster.dns("greet"), str(GREET_PORT), timeout=20)
    assert nc.stdout == GREETING.decode()


def test_service_not_granted_is_refused(netns: DeviceNetns, device: NetnsAgent, cluster: Cluster, bridges: Bridges):
    # Granted to another device, or not exposed: no name, no address, no listener on the device.
    for name in ("secret", "hidden"):
        assert client(netns, "connect", f"{name}.{cluster.ns}", str(SERVICE_PORT))["result"] == "unresolved"
    hosts = netns.hosts_file.read_text()
    assert "secret" not in hosts and "hidden" not in hosts
    secret_ip = cluster.cluster_ip("secret")
    assert client(netns, "connect", secret_ip, str(SERVICE_PORT))["result"] in ("refused", "unreachable")
    # A device that asks the bridge anyway (a lying agent) is refused there, and it is counted.
    before = bridges.proxy.stats["refused_forbidden"]
    code = asyncio.run(_open_service_as(bridges.broker, f"liar-{secrets.token_hex(3)}", cluster.ns, "secret"))
    assert code == fp.AppError.FORBIDDEN
    assert bridges.proxy.stats["refused_forbidden"] > before


async def _open_service_as(broker: Broker, name: str, namespace: str, service: str) -> int:
    """A bare device: control stream with a NodeHello, then a ``service`` stream; returns the RESET code."""
    config = BrokerConfig(host=broker.host, port=broker.port, reconnect_min=0.05, reconnect_max=0.5)
    async with device_endpoint(name, config, session_config=FAST) as endpoint:
        control = await endpoint.open_stream(fp.ControlOpen().to_metadata())
        info = fp.NodeInfo(os="linux", arch="amd64", kernel="6", hostname=name, cpus=1, memory_bytes=1, disk_bytes=1)
        control.write(fp.frame(fp.NodeHello(node=info, generation=0, pods=())))
        await asyncio.sleep(1.0)  # let the bridge admit it
        stream = await endpoint.open_stream(
            fp.ServiceOpen(namespace=namespace, service=service, port=7000).to_metadata()
        )
        try:
            async with asyncio.timeout(20):
                await stream.readall()
        except StreamResetError as exc:
            return exc.code
        return 0


def test_connection_errors_reset_the_client(netns: DeviceNetns, device: NetnsAgent, cluster: Cluster):
    # No ready endpoint (0x503) and an endpoint that refuses (0x502): the program sees a reset, fast.
    for name in ("empty", "closed"):
        answer = client(netns, "connect", cluster.dns(name), str(SERVICE_PORT))
        assert answer["result"] == "reset", (name, answer)
        assert answer["seconds"] < 5, (name, answer)
    assert "reset" in device.tail(200)


def test_container_on_the_device_reaches_the_service(
    broker: Broker, bridges: Bridges, cluster: Cluster, docker_host: str, tmp_path
):
    """Here the device is this host itself (its dockerd runs here): a second agent puts the ClusterIPs
    on a dummy interface of the host, and a container on the engine's bridge network reaches them
    through its default route; it gets the names by mounting the agent's hosts file as /etc/hosts."""
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1\tlocalhost\n")
    iface = f"efs-{secrets.token_hex(3)}"
    agent = NetnsAgent(
        name=f"host-{secrets.token_hex(3)}",
        workdir=tmp_path,
        broker_url=f"mqtt://{broker.host}:{broker.port}",
        interface=iface,
        hosts_file=hosts,
    ).start()
    api = docker.DockerClient(base_url=docker_host, timeout=60)
    try:
        wait_until(lambda: cluster.dns("greet") in hosts.read_text(), timeout=60, what=f"table:\n{agent.tail()}")
        out = api.containers.run(
            BUSYBOX_IMAGE,
            ["nc", cluster.dns("greet"), str(GREET_PORT)],
            volumes={str(hosts): {"bind": "/etc/hosts", "mode": "ro"}},
            remove=True,
            stdout=True,
            stderr=True,
        )
        assert out == GREETING
    finally:
        api.close()
        agent.stop()
    # The host agent cleaned up after itself.
    assert subprocess.run(["ip", "link", "show", iface], capture_output=True).returncode != 0
    assert "edgefleet" not in hosts.read_text()


def test_bridge_restart_resets_open_connections(
    netns: DeviceNetns, device: NetnsAgent, cluster: Cluster, bridges: Bridges, servers: TcpServers
):
    holder = subprocess.Popen(
        [*netns.prefix(), sys.executable, str(CLIENT), "hold", cluster.dns("echo"), str(SERVICE_PORT), "30"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert json.loads(holder.stdout.readline()) == {"ready": True}
        bridges.stop()
        result = json.loads(holder.stdout.readline())
        holder.wait(10)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        if bridges.current is None:
            bridges.start()
    assert result["result"] == "reset", result
    assert result["seconds"] < 10, result
    # The upstream connection was closed too, and the new bridge serves the device again.
    wait_until(lambda: servers.open_count() == 0, timeout=10, what="the server's connection to close")
    answer = wait_until(
        lambda: (a := client(netns, "echo", cluster.dns("echo"), str(SERVICE_PORT), "1000"))["result"] == "ok" and a,
        timeout=60,
        what="echo through the new bridge",
        interval=1,
    )
    assert answer["received"] == 1000


def test_agent_restart_closes_connections_and_cleans_up(
    netns: DeviceNetns, device: NetnsAgent, cluster: Cluster, servers: TcpServers
):
    holder = subprocess.Popen(
        [*netns.prefix(), sys.executable, str(CLIENT), "hold", cluster.dns("echo"), str(SERVICE_PORT), "30"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert json.loads(holder.stdout.readline()) == {"ready": True}
        assert servers.open_count() >= 1
        device.stop()  # SIGTERM: listeners, addresses and names go; open connections are reset
        result = json.loads(holder.stdout.readline())
        holder.wait(10)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
    assert result["result"] == "reset", result
    assert "ef-svc0" not in netns.links()
    assert "edgefleet" not in netns.hosts_file.read_text()
    assert client(netns, "connect", cluster.dns("echo"), str(SERVICE_PORT))["result"] == "unresolved"
    # The bridge let go of the upstream connection as well.
    wait_until(lambda: servers.open_count() == 0, timeout=30, what="the server's connection to close")
    # A new agent comes back with everything.
    device.start()
    wait_until(lambda: cluster.dns("echo") in netns.hosts_file.read_text(), timeout=60, what="table again")
    answer = client(netns, "echo", cluster.dns("echo"), str(SERVICE_PORT), "1000")
    assert answer["result"] == "ok", answer


def test_agent_killed_mid_connection(netns: DeviceNetns, device: NetnsAgent, cluster: Cluster, servers: TcpServers):
    """SIGKILL: nothing is cleaned up by the agent, the kernel ends the local connection; the next
    agent (a new session epoch) makes the bridge drop the upstream connection and removes the leftovers."""
    holder = subprocess.Popen(
        [*netns.prefix(), sys.executable, str(CLIENT), "hold", cluster.dns("echo"), str(SERVICE_PORT), "30"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert json.loads(holder.stdout.readline()) == {"ready": True}
        device.stop(signal.SIGKILL)
        result = json.loads(holder.stdout.readline())
        holder.wait(10)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
    assert result["result"] in ("reset", "eof") and result["seconds"] < 5, result
    assert "ef-svc0" in netns.links()  # left behind by the killed agent
    device.start()
    wait_until(lambda: servers.open_count() == 0, timeout=30, what="the bridge to drop the upstream connection")
    wait_until(lambda: cluster.dns("echo") in netns.hosts_file.read_text(), timeout=60, what="table again")
    assert netns.hosts_file.read_text().count("BEGIN edgefleet") == 1
    answer = client(netns, "echo", cluster.dns("echo"), str(SERVICE_PORT), "100000")
    assert answer["result"] == "ok", answer
