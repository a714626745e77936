"""/healthz, /pods, /stats/summary, /metrics/resource through the apiserver's
node proxy (what metrics-server and `kubectl get --raw` use).

The node-scoped endpoints name no pod: the bridge tells nodes apart by the
port a connection arrives on (``ServerConfig.node_ports``); on the shared port
they answer a clear 400 instead of guessing.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cloud_bridge.kubelet import ServerConfig
from tests.bridge.conftest import BridgePki, make_pod, register_node
from tests.bridge.harness import ServerThread, free_port_range
from tests.bridge.kubetools import raw_exchange, status_code, tls_context
from tests.support.kube import ControlPlane


def test_shared_port_serves_pods_but_not_node_stats(
    control_plane: ControlPlane, proxy_node: str, pod: str, namespace: str
) -> None:
    base = f"/api/v1/nodes/{proxy_node}/proxy"
    assert control_plane.kubectl("get", "--raw", f"{base}/healthz").stdout == "ok"
    pods = json.loads(control_plane.kubectl("get", "--raw", f"{base}/pods").stdout)
    assert pods["kind"] == "PodList"
    assert {"namespace": namespace, "name": pod} in [
        {"namespace": p["metadata"]["namespace"], "name": p["metadata"]["name"]} for p in pods["items"]
    ]
    for path in ("stats/summary", "metrics/resource"):
        refused = control_plane.kubectl("get", "--raw", f"{base}/{path}", check=False)
        assert refused.returncode != 0 and "is per node" in refused.stderr and "--kubelet-node-ports" in refused.stderr
    missing = control_plane.kubectl("get", "--raw", f"{base}/no/such/thing", check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr


@pytest.fixture(scope="module")
def ported_bridge(
    control_plane: ControlPlane, bridge: ServerThread, bridge_pki: BridgePki, tmp_path_factory
) -> Iterator[ServerThread]:
    """A second server (own provider) with three per-node ports besides its shared one."""
    first, last = free_port_range(bridge_pki.ips, 3)
    config = replace(bridge.config, port=0, node_ports=(first, last))
    server = ServerThread(config, tmp_path_factory.mktemp("ported")).start()
    try:
        yield server
    finally:
        server.stop()
    assert server.leftover_tasks == [], server.leftover_tasks


def _proxy_node(cp: ControlPlane, server: ServerThread, pki: BridgePki, port: int, *, assign: bool = True) -> str:
    if len(pki.ips) < 2:
        pytest.skip("this machine has no non-loopback IPv4; the apiserver's node proxy refuses loopback")
    name = register_node(cp, f"edge-port-{secrets.token_hex(3)}", pki.ips[1], port)
    if assign:
        server.node_ports[port] = name
    return name


def test_node_port_serves_that_nodes_stats(
    control_plane: ControlPlane, ported_bridge: ServerThread, bridge_pki: BridgePki, namespace: str
) -> None:
    assert ported_bridge.config.node_ports is not None
    first = ported_bridge.config.node_ports[0]
    node = _proxy_node(control_plane, ported_bridge, bridge_pki, first)
    other = _proxy_node(control_plane, ported_bridge, bridge_pki, first + 1)
    make_pod(control_plane, ported_bridge, namespace, node, f"stats-{node}", containers=("app",))
    make_pod(control_plane, ported_bridge, namespace, other, f"stats-{other}", containers=("app",))
    base = f"/api/v1/nodes/{node}/proxy"

    summary = json.loads(control_plane.kubectl("get", "--raw", f"{base}/stats/summary").stdout)
    assert summary["node"]["nodeName"] == node
    assert summary["node"]["memory"]["workingSetBytes"] == 256 << 20
    assert [p["podRef"]["name"] for p in summary["pods"]] == [f"stats-{node}"]  # not the other node's pod

    text = control_plane.kubectl("get", "--raw", f"{base}/metrics/resource").stdout
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert samples[("node_cpu_usage_seconds_total", ())] == 12.5
    key = (("container", "app"), ("namespace", namespace), ("pod", f"stats-{node}"))
    assert samples[("container_cpu_usage_seconds_total", key)] == 2.5
    assert samples[("container_memory_working_set_bytes", key)] == 4 << 20

    pods = json.loads(control_plane.kubectl("get", "--raw", f"{base}/pods").stdout)
    assert [p["metadata"]["name"] for p in pods["items"]] == [f"stats-{node}"]
    assert ("stats_summary", node) in ported_bridge.provider.node_calls
    assert ("stats_summary", other) not in ported_bridge.provider.node_calls


def test_node_port_errors(control_plane: ControlPlane, ported_bridge: ServerThread, bridge_pki: BridgePki) -> None:
    assert ported_bridge.config.node_ports is not None
    last = ported_bridge.config.node_ports[1]
    stranger = _proxy_node(control_plane, ported_bridge, bridge_pki, last, assign=False)
    refused = control_plane.kubectl("get", "--raw", f"/api/v1/nodes/{stranger}/proxy/stats/summary", check=False)
    assert refused.returncode != 0 and f"no virtual node is assigned kubelet port {last}" in refused.stderr

    ported_bridge.node_ports[last] = stranger
    ported_bridge.call(ported_bridge.provider.offline_nodes.add, stranger)
    started = time.monotonic()
    offline = control_plane.kubectl("get", "--raw", f"/api/v1/nodes/{stranger}/proxy/metrics/resource", check=False)
    assert offline.returncode != 0 and f"device {stranger} is offline" in offline.stderr
    assert time.monotonic() - started < 5


def test_node_ports_must_not_hold_the_shared_port(bridge_pki: BridgePki) -> None:
    with pytest.raises(ValueError, match="inside node_ports"):
        ServerConfig(
            cert_file=bridge_pki.serving.cert_path,
            key_file=bridge_pki.serving.key_path,
            insecure=True,
            port=10250,
            node_ports=(10200, 10300),
        )


def test_host_header_names_the_node_on_the_shared_port(
    control_plane: ControlPlane, bridge: ServerThread, bridge_pki: BridgePki
) -> None:
    """Nodes advertising a per-device Hostname address (``--kubelet-hostname-suffix``): the
    apiserver's Host header says which node. (Sent directly: no DNS for such names here.)"""
    assert control_plane.kubelet_client is not None
    cert = control_plane.kubelet_client
    ctx = tls_context(bridge_pki.ca.cert_path, cert.cert_path, cert.key_path)
    bridge.node_hosts["pi-7.edge.test"] = "pi-7"

    def get(path: str, host: str) -> bytes:
        return raw_exchange(bridge.port, ctx, f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())

    try:
        answer = get("/stats/summary", "PI-7.edge.test:10250")
        assert status_code(answer) == 200, answer[:300]
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["node"]["nodeName"] == "pi-7"
        refused = get("/metrics/resource", "other.edge.test:10250")
        assert status_code(refused) == 400 and b"is per node" in refused
    finally:
        bridge.node_hosts.clear()
