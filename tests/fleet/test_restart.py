"""The bridge restarts (new process, new replica name) while a device stays up: the device
reconnects its control stream to the new bridge, its pod keeps running and exec works again."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from cloud_bridge.app import BridgeConfig
from cloud_bridge.kubelet import ServerConfig
from cloud_bridge.nodes import NodeSettings
from seqstream.mqtt import BrokerConfig
from tests.agent_core.agents import AgentProcess, agent_config
from tests.agent_core.cloud import FAST
from tests.fleet.conftest import remove_node_containers, wait_until
from tests.fleet.harness import BridgeThread
from tests.fleet.test_pods import IMAGE, create_pod, pod_json
from tests.support.brokers import Broker, free_port


@pytest.fixture
def own_broker() -> Iterator[Broker]:
    with Broker("mosquitto") as b:
        yield b


def test_bridge_restart_keeps_the_device(control_plane, bridge_pki, own_broker, docker_host, tmp_path):
    port = free_port()

    def config() -> BridgeConfig:
        return BridgeConfig(
            broker=BrokerConfig(host=own_broker.host, port=own_broker.port, reconnect_min=0.05, reconnect_max=0.5),
            nodes=NodeSettings(kubelet_address="127.0.0.1", kubelet_port=port),
            kubelet=ServerConfig(
                cert_file=bridge_pki.serving.cert_path,
                key_file=bridge_pki.serving.key_path,
                client_ca_file=control_plane.ca_cert_path,
                host="127.0.0.1",
                port=port,
            ),
            session_config=FAST,
            pod_poll_seconds=0.5,
            auto_register=True,
            edge_devices=False,
        )

    node = f"edge-{secrets.token_hex(4)}"
    (tmp_path / node).mkdir()
    agent = AgentProcess(agent_config(own_broker, node, tmp_path / node, docker_host), tmp_path)
    first = BridgeThread(config(), str(control_plane.kubeconfig_path)).start()
    second: BridgeThread | None = None
    try:
        agent.start()
        wait_until(lambda: control_plane.kubectl_json("get", "node", node), timeout=30, what="node")
        ns = f"restart-{secrets.token_hex(3)}"
        control_plane.kubectl("create", "namespace", ns)
        sleeper = {"name": "main", "image": IMAGE, "imagePullPolicy": "Never", "command": ["sleep", "3600"]}
        create_pod(control_plane, ns, node, "p", [sleeper])
        wait_until(lambda: pod_json(control_plane, ns, "p")["status"].get("phase") == "Running", timeout=60, what="p")
        first.stop()
        first = None  # type: ignore[assignment]
        second = BridgeThread(config(), str(control_plane.kubeconfig_path)).start()

        def exec_works() -> bool:
            proc = control_plane.kubectl("exec", "p", "-n", ns, "--", "echo", "again", check=False)
            return proc.returncode == 0 and proc.stdout == "again\n"

        wait_until(exec_works, timeout=60, what="exec through the restarted bridge", interval=1)
        assert pod_json(control_plane, ns, "p")["status"]["phase"] == "Running"
    finally:
        agent.stop()
        remove_node_containers(docker_host, node)
        for bridge in (first, second):
            if bridge is not None:
                bridge.stop()
