"""Fixtures: a device in its own network namespace running a real agent, a real apiserver with
Services/Endpoints, a real mosquitto reachable from the namespace, the real bridge (in a thread),
and TCP servers on a host address that only the bridge can reach."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_bridge.app import BridgeConfig
from cloud_bridge.nodes import NodeSettings
from cloud_bridge.services import ServiceProxyConfig
from seqstream.mqtt import BrokerConfig
from tests.agent_core.cloud import FAST
from tests.bridge.conftest import bridge_pki, control_plane  # noqa: F401 - fixtures
from tests.fleet.harness import BridgeThread
from tests.netsvc.harness import DeviceNetns, HostAddress, NetnsAgent, TcpServers, wait_until
from tests.support.brokers import Broker, free_port
from tests.support.kube import ControlPlane

SERVICE_PORT = 7000
GREET_PORT = 80


class Bridges:
    """The bridge under test; ``restart`` replaces it with a new process-like instance."""

    def __init__(self, broker: Broker, kubeconfig: str) -> None:
        self.broker = broker
        self.kubeconfig = kubeconfig
        self.current: BridgeThread | None = None
        self.auto_register = True
        """Admit every device (creating its EdgeDevice when the CRD is installed)."""

    def config(self) -> BridgeConfig:
        return BridgeConfig(
            broker=BrokerConfig(host=self.broker.host, port=self.broker.port, reconnect_min=0.05, reconnect_max=0.5),
            nodes=NodeSettings(
                kubelet_address="127.0.0.1", kubelet_port=free_port(), owner=f"netsvc-{secrets.token_hex(4)}"
            ),
            kubelet=None,
            session_config=FAST,
            services=ServiceProxyConfig(interval=0.3, connect_timeout=3),
            auto_register=self.auto_register,
        )

    def start(self) -> BridgeThread:
        self.current = BridgeThread(self.config(), self.kubeconfig).start()
        return self.current

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()
            self.current = None

    @property
    def proxy(self) -> Any:
        assert self.current is not None and self.current.bridge is not None
        return self.current.bridge.services


@pytest.fixture(scope="module")
def netns() -> Iterator[DeviceNetns]:
    with DeviceNetns() as ns:
        yield ns


@pytest.fixture(scope="module")
def servers() -> Iterator[TcpServers]:
    with HostAddress() as address:
        servers = TcpServers(address.ip)
        try:
            yield servers
        finally:
            servers.close()


@pytest.fixture(scope="module")
def broker(netns: DeviceNetns) -> Iterator[Broker]:
    """mosquitto on loopback (for the bridge) and on the veth host address (for the device)."""
    device_port = free_port()
    with Broker("mosquitto", extra_config=f"listener {device_port} {netns.host_ip}\n") as b:
        b.device_url = f"mqtt://{netns.host_ip}:{device_port}"  # type: ignore[attr-defined]
        yield b


@pytest.fixture(scope="module")
def bridges(control_plane: ControlPlane, broker: Broker) -> Iterator[Bridges]:  # noqa: F811
    holder = Bridges(broker, str(control_plane.kubeconfig_path))
    holder.start()
    try:
        yield holder
    finally:
        holder.stop()


def service(ns: str, name: str, port: int, *, expose: bool = True, devices: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if expose:
        meta["labels"] = {"edgefleet.io/expose": "true"}
    if devices is not None:
        meta["annotations"] = {"edgefleet.io/devices": devices}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {"ports": [{"name": "tcp", "port": port, "protocol": "TCP"}]},
    }


def endpoints(ns: str, name: str, ip: str | None, port: int) -> dict[str, Any]:
    subsets = [{"addresses": [{"ip": ip}], "ports": [{"name": "tcp", "port": port, "protocol": "TCP"}]}] if ip else []
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns}, "subsets": subsets}


class Cluster:
    def __init__(self, cp: ControlPlane, ns: str) -> None:
        self.cp = cp
        self.ns = ns

    def apply(self, *objects: dict[str, Any]) -> None:
        self.cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))

    def cluster_ip(self, name: str) -> str:
        return self.cp.kubectl_json("get", "service", name, "-n", self.ns)["spec"]["clusterIP"]

    def dns(self, name: str) -> str:
        return f"{name}.{self.ns}.svc.cluster.local"


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane, servers: TcpServers) -> Cluster:  # noqa: F811
    """Services: echo and greet (granted to all), secret (granted to another device), hidden (not exposed),
    empty (no ready endpoint), closed (the endpoint refuses)."""
    ns = f"svc-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", ns)
    c = Cluster(control_plane, ns)
    ip = servers.host
    c.apply(
        service(ns, "echo", SERVICE_PORT),
        endpoints(ns, "echo", ip, servers.echo_port),
        service(ns, "greet", GREET_PORT),
        endpoints(ns, "greet", ip, servers.greet_port),
        service(ns, "secret", SERVICE_PORT, devices="some-other-device"),
        endpoints(ns, "secret", ip, servers.echo_port),
        service(ns, "hidden", SERVICE_PORT, expose=False),
        endpoints(ns, "hidden", ip, servers.echo_port),
        service(ns, "empty", SERVICE_PORT),
        endpoints(ns, "empty", None, 1),
        service(ns, "closed", SERVICE_PORT),
        endpoints(ns, "closed", ip, free_port()),
    )
    return c


@pytest.fixture(scope="module")
def device(
    netns: DeviceNetns, broker: Broker, bridges: Bridges, cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NetnsAgent]:
    """A real agent in the namespace; its /etc/hosts is the namespace's own hosts file."""
    workdir: Path = tmp_path_factory.mktemp("device")
    agent = NetnsAgent(
        name=f"dev-{secrets.token_hex(3)}",
        workdir=workdir,
        broker_url=broker.device_url,  # type: ignore[attr-defined]
        interface="ef-svc0",
        hosts_file=Path("/etc/hosts"),
        netns=netns,
    ).start()
    try:
        wait_until(
            lambda: cluster.dns("greet") in netns.hosts_file.read_text(),
            timeout=60,
            what=f"the device's service table; agent log:\n{agent.tail()}",
        )
        yield agent
    finally:
        agent.stop()
