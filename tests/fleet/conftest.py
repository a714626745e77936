"""Fixtures: real apiserver + mosquitto + dockerd, the real bridge (in a thread)
and real agents (``python -m edge_agent`` subprocesses) as devices.

The control plane and the bridge's kubelet PKI are those of tests/bridge: the
apiserver verifies the bridge's serving cert, the bridge verifies the
apiserver's kubelet-client cert.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from cloud_bridge.app import BridgeConfig
from cloud_bridge.kubelet import ServerConfig
from cloud_bridge.nodes import NodeSettings
from edge_agent.podspec import LABEL_NODE
from seqstream.mqtt import BrokerConfig
from tests.agent_core.agents import AgentProcess, agent_config
from tests.agent_core.cloud import FAST
from tests.bridge.conftest import BridgePki, bridge_pki, control_plane  # noqa: F401 - fixtures
from tests.fleet.harness import BridgeThread
from tests.support.brokers import Broker, free_port
from tests.support.kube import ControlPlane
from tests.support.waiting import wait_until  # noqa: F401 - re-exported for the tests here

TOLERATION = [{"key": "edgefleet.io/edge", "operator": "Exists"}]


def remove_node_containers(docker_host: str, node: str) -> int:
    """Remove every container the agent made for ``node`` (``docker_host`` comes from tests/conftest.py)."""
    api = docker.APIClient(base_url=docker_host, timeout=60)
    try:
        items = api.containers(all=True, filters={"label": [f"{LABEL_NODE}={node}"]})
        for item in items:
            api.remove_container(item["Id"], force=True, v=True)
        return len(items)
    finally:
        api.close()


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    with Broker("mosquitto") as b:
        yield b


@pytest.fixture(scope="session")
def fleet_bridge(control_plane: ControlPlane, bridge_pki: BridgePki, broker: Broker) -> Iterator[BridgeThread]:  # noqa: F811
    thread = BridgeThread(fleet_bridge_config(control_plane, bridge_pki, broker), str(control_plane.kubeconfig_path))
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()
    assert thread.leftover_tasks == [], thread.leftover_tasks


def fleet_bridge_config(control_plane: ControlPlane, bridge_pki: BridgePki, broker: Broker) -> BridgeConfig:  # noqa: F811
    """The bridge of the fleet tests (also used by bench/kubectl_bench.py)."""
    assert control_plane.ca_cert_path is not None
    port = free_port()
    return BridgeConfig(
        broker=BrokerConfig(host=broker.host, port=broker.port, reconnect_min=0.05, reconnect_max=0.5),
        # A name of its own: a bridge prunes only the Nodes of its name (the tests share one apiserver).
        nodes=NodeSettings(kubelet_address="127.0.0.1", kubelet_port=port, owner=f"test-{uuid.uuid4().hex[:8]}"),
        kubelet=ServerConfig(
            cert_file=bridge_pki.serving.cert_path,
            key_file=bridge_pki.serving.key_path,
            client_ca_file=control_plane.ca_cert_path,
            host=list(bridge_pki.ips),
            port=port,
            stream_creation_timeout=10,
        ),
        session_config=FAST,
        pod_poll_seconds=30,  # the watch must carry changes; the list is only a safety net
        auto_register=True,
        edge_devices=False,  # every device admitted; tests/fleet/edgedevices.py has the registry's bridges
    )


@pytest.fixture
def start_agent(
    broker: Broker,
    docker_host: str,
    tmp_path: Path,
) -> Iterator[Callable[[], tuple[str, AgentProcess]]]:
    """Start a real agent subprocess as a new device; stopped and cleaned up after the test."""
    started: list[tuple[str, AgentProcess]] = []

    def start() -> tuple[str, AgentProcess]:
        name, proc = start_device_agent(broker, docker_host, tmp_path)
        started.append((name, proc))
        return name, proc

    yield start
    for name, proc in started:
        stop_device_agent(docker_host, name, proc)


def start_device_agent(broker: Broker, docker_host: str, workdir: Path) -> tuple[str, AgentProcess]:
    """A real agent subprocess (docker runtime) as a new device named ``edge-<random>``."""
    name = f"edge-{uuid.uuid4().hex[:8]}"
    data = workdir / name
    data.mkdir()
    return name, AgentProcess(agent_config(broker, name, data, docker_host), workdir).start()


def stop_device_agent(docker_host: str, name: str, proc: AgentProcess) -> None:
    """Stop the agent and remove every container it made."""
    proc.stop()
    for _ in range(5):
        if not remove_node_containers(docker_host, name):
            break
        time.sleep(1)
