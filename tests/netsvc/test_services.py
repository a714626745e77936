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
from typing import Any

import docker
import pytest

import fleetproto as fp
from edge_agent.podspec import LABEL_NODE
from seqstream import StreamResetError
from seqstream.mqtt import BrokerConfig, device_endpoint
from tests.agent_core.cloud import FAST
from tests.netsvc.conftest import GREET_PORT, SERVICE_PORT, Bridges, Cluster, endpoints, service
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


def test_pod_on_the_device_reaches_services_by_name(
    broker: Broker, bridges: Bridges, cluster: Cluster, servers: TcpServers, docker_host: str, tmp_path
):
    """Here the device is this host itself (its dockerd runs here): a second agent, with the docker
    runtime, puts the ClusterIPs on an interface of the host and runs a pod from the apiserver. The
    pod's container reaches a granted Service by name through its default route to the host and the
    proxy; its /etc/hosts is the agent's file for the pod, which follows the Service table live."""
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1\tlocalhost\n")
    iface = f"efs-{secrets.token_hex(3)}"
    agent = NetnsAgent(
        name=f"host-{secrets.token_hex(3)}",
        workdir=tmp_path,
        broker_url=f"mqtt://{broker.host}:{broker.port}",
        interface=iface,
        hosts_file=hosts,
        runtime="docker",
        runtime_socket=docker_host,
    ).start()
    api = docker.DockerClient(base_url=docker_host, timeout=60)
    ns, kubectl = cluster.ns, cluster.cp.kubectl
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client", "namespace": ns},
        "spec": {
            "nodeName": agent.name,
            "tolerations": [{"key": "edgefleet.io/edge", "operator": "Exists"}],
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", f"nc {cluster.dns('greet')} {GREET_PORT}; exec sleep 3600"],
                }
            ],
        },
    }

    def container() -> Any:
        found = api.containers.list(filters={"label": f"{LABEL_NODE}={agent.name}"})
        return found[0] if found else None

    def in_pod(script: str) -> str:
        _, out = container().exec_run(["sh", "-c", script])
        return out.decode(errors="replace")

    try:
        wait_until(lambda: cluster.dns("greet") in hosts.read_text(), timeout=60, what=f"table:\n{agent.tail()}")
        kubectl("apply", "-f", "-", input=json.dumps(pod))
        running = wait_until(container, timeout=60, what=f"the pod's container; agent log:\n{agent.tail()}")
        wait_until(lambda: running.logs() == GREETING, timeout=30, what="the greeting through the proxy")
        # Its /etc/hosts: the agent's file for this pod (the pod's name and address, the Service block).
        uid = cluster.cp.kubectl_json("get", "pod", "client", "-n", ns)["metadata"]["uid"]
        pod_file = agent.data_dir / "pods" / uid / "etc-hosts"
        wait_until(lambda: "\tclient\n" in pod_file.read_text(), timeout=30, what="the pod's address line")
        assert in_pod("cat /etc/hosts") == pod_file.read_text()
        assert f"{cluster.cluster_ip('echo')}\techo.{ns}.svc.cluster.local" in pod_file.read_text()
        assert in_pod("hostname").strip() == "client"

        # A Service granted while the pod runs: reachable by name from inside, with no restart.
        cluster.apply(service(ns, "late", GREET_PORT), endpoints(ns, "late", servers.host, servers.greet_port))
        wait_until(lambda: f"late.{ns}" in in_pod("cat /etc/hosts"), timeout=30, what="the new name in the pod")
        # The name can arrive before the bridge's next list has the Service's Endpoints (it lists both
        # every 2 s); until then a connection is refused, as a Service without endpoints is in a cluster.
        wait_until(
            lambda: in_pod(f"nc late.{ns} {GREET_PORT}") == GREETING.decode(), timeout=10, what="the greeting by name"
        )
        # Withdrawn: the name goes from the pod's file as well.
        kubectl("delete", "service", "late", "-n", ns)
        wait_until(lambda: f"late.{ns}" not in in_pod("cat /etc/hosts"), timeout=30, what="the name to go")
        assert "bad address" in in_pod(f"ping -c1 -W1 late.{ns} 2>&1")
        assert container().id == running.id  # no restart was needed for any of it

        # The pod is deleted: its hosts file goes with its containers.
        kubectl("delete", "pod", "client", "-n", ns, "--wait=false")
        wait_until(lambda: not pod_file.parent.exists(), timeout=60, what="the pod's hosts file to go")
    finally:
        kubectl("delete", "pod", "client", "-n", ns, "--force", "--grace-period=0", "--ignore-not-found", check=False)
        kubectl("delete", "service", "late", "-n", ns, "--ignore-not-found", check=False)
        agent.stop()
        for leftover in api.containers.list(all=True, filters={"label": f"{LABEL_NODE}={agent.name}"}):
            leftover.remove(force=True)
        api.close()
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
