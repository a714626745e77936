"""``python -m cloud_bridge`` as a real process: a device joins, kubectl exec works, SIGTERM stops it."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.agent_core.agents import REPO, AgentProcess, agent_config
from tests.fleet.conftest import remove_node_containers, wait_until
from tests.fleet.test_pods import IMAGE, create_pod, pod_json
from tests.support.brokers import Broker, free_port


@pytest.fixture
def own_broker() -> Iterator[Broker]:
    """A broker of its own: one bridge per broker (two cloud endpoints would share the cloud's topics)."""
    with Broker("mosquitto") as b:
        yield b


def test_main_serves_a_device(control_plane, bridge_pki, own_broker, docker_host, tmp_path):
    broker = own_broker
    port = free_port()
    log = tmp_path / "bridge.log"
    cmd = [
        sys.executable, "-m", "cloud_bridge",
        "--kubeconfig", str(control_plane.kubeconfig_path),
        "--broker", f"mqtt://{broker.host}:{broker.port}",
        "--kubelet-address", "127.0.0.1", "--kubelet-bind", "127.0.0.1", "--kubelet-port", str(port),
        "--tls-cert", str(bridge_pki.serving.cert_path), "--tls-key", str(bridge_pki.serving.key_path),
        "--client-ca", str(control_plane.ca_cert_path),
        "--auto-register",  # no EdgeDevice for the device (without the CRD installed: admit all)
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=out, stderr=subprocess.STDOUT
        )
    agent: AgentProcess | None = None
    node = ""
    try:
        node = f"edge-{secrets.token_hex(4)}"
        (tmp_path / node).mkdir()
        agent = AgentProcess(agent_config(broker, node, tmp_path / node, docker_host), tmp_path).start()

        def ready() -> bool:
            conditions = control_plane.kubectl_json("get", "node", node)["status"]["conditions"]
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        wait_until(ready, timeout=40, what=f"node Ready (bridge log: {log})")
        ns = f"main-{secrets.token_hex(3)}"
        control_plane.kubectl("create", "namespace", ns)
        sleeper = {"name": "main", "image": IMAGE, "imagePullPolicy": "Never", "command": ["sleep", "3600"]}
        create_pod(control_plane, ns, node, "p", [sleeper])
        wait_until(lambda: pod_json(control_plane, ns, "p")["status"].get("phase") == "Running", timeout=60, what="p")
        out = control_plane.kubectl("exec", "p", "-n", ns, "--", "echo", "via-main").stdout
        assert out == "via-main\n"
        control_plane.kubectl("delete", "pod", "p", "-n", ns, "--wait=true", "--timeout=60s", timeout=90)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    finally:
        if agent is not None:
            agent.stop()
            remove_node_containers(docker_host, node)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
