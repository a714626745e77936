"""Fixtures: a real control plane whose apiserver reaches the bridge's kubelet
API on 127.0.0.1 (verifying its serving cert), a virtual node pointing at it,
and pods bound to that node.

The bridge's serving cert comes from its own CA (``bridge_pki``), which the
apiserver trusts through ``--kubelet-certificate-authority``; the bridge
trusts the control plane's CA for the apiserver's kubelet-client cert.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import secrets
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloud_bridge.kubelet import ServerConfig
from tests.bridge.harness import ServerThread
from tests.support.kube import CertificateAuthority, CertPair, ControlPlane


def routable_ipv4() -> str | None:
    """A non-loopback IPv4 of this machine (no packet is sent), or None.

    The apiserver's node proxy refuses loopback node addresses, so tests of
    ``/api/v1/nodes/N/proxy/...`` need the bridge on such an address too."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("198.51.100.1", 9))
        ip = s.getsockname()[0]
        if not ipaddress.ip_address(ip).is_loopback:
            return ip
    return None


@dataclass(frozen=True)
class BridgePki:
    ca: CertificateAuthority
    serving: CertPair
    ips: tuple[str, ...]


@pytest.fixture(scope="session")
def bridge_pki() -> Iterator[BridgePki]:
    with tempfile.TemporaryDirectory(prefix="edgefleet-bridge-pki-") as tmp:
        yield make_bridge_pki(Path(tmp))


def make_bridge_pki(directory: Path) -> BridgePki:
    """A CA and the bridge's kubelet serving cert (127.0.0.1 and a routable IPv4, if any) in ``directory``."""
    extra = routable_ipv4()
    ips = ("127.0.0.1", extra) if extra else ("127.0.0.1",)
    ca = CertificateAuthority(directory, "edgefleet-bridge-kubelet-ca")
    serving = ca.issue(
        "kubelet-serving",
        "edgefleet-bridge",
        client=False,
        server=True,
        dns_names=["localhost"],
        ip_addresses=ips,
    )
    return BridgePki(ca, serving, ips)


def bridge_apiserver_args(pki: BridgePki) -> list[str]:
    """kube-apiserver flags so it reaches the bridge's kubelet API and verifies its serving cert."""
    return [
        "--kubelet-preferred-address-types=InternalIP",
        f"--kubelet-certificate-authority={pki.ca.cert_path}",
        # Aggregated APIs (metrics-server for `kubectl top`) reached at their endpoints: no kube-proxy here.
        "--enable-aggregator-routing=true",
    ]


@pytest.fixture(scope="session")
def control_plane(bridge_pki: BridgePki) -> Iterator[ControlPlane]:
    with ControlPlane(kubeconfig=None, apiserver_args=bridge_apiserver_args(bridge_pki)) as cp:
        yield cp


@pytest.fixture(scope="session")
def bridge(control_plane: ControlPlane, bridge_pki: BridgePki, tmp_path_factory) -> Iterator[ServerThread]:
    assert control_plane.ca_cert_path is not None
    config = ServerConfig(
        cert_file=bridge_pki.serving.cert_path,
        key_file=bridge_pki.serving.key_path,
        client_ca_file=control_plane.ca_cert_path,
        host=list(bridge_pki.ips),
        port=0,
        stream_creation_timeout=10,
    )
    server = ServerThread(config, tmp_path_factory.mktemp("device")).start()
    try:
        yield server
    finally:
        server.stop()
    assert server.leftover_tasks == [], server.leftover_tasks


@pytest.fixture(scope="session")
def node(control_plane: ControlPlane, bridge: ServerThread) -> str:
    """A virtual node whose kubelet endpoint is the bridge on 127.0.0.1."""
    return register_node(control_plane, f"edge-{secrets.token_hex(3)}", "127.0.0.1", bridge.port)


@pytest.fixture(scope="session")
def proxy_node(control_plane: ControlPlane, bridge: ServerThread, bridge_pki: BridgePki) -> str:
    """The same bridge as another node, on an address the node proxy accepts."""
    if len(bridge_pki.ips) < 2:
        pytest.skip("this machine has no non-loopback IPv4; the apiserver's node proxy refuses loopback")
    return register_node(control_plane, f"edge-proxy-{secrets.token_hex(3)}", bridge_pki.ips[1], bridge.port)


def register_node(control_plane: ControlPlane, name: str, address: str, port: int) -> str:
    manifest = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"type": "edgefleet-device", "kubernetes.io/os": "linux"}},
        "spec": {"taints": [{"key": "edgefleet.io/device", "value": "true", "effect": "NoSchedule"}]},
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = {
        "status": {
            "capacity": {"cpu": "2", "memory": "1Gi", "pods": "10"},
            "allocatable": {"cpu": "2", "memory": "1Gi", "pods": "10"},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "EdgeAgentReady",
                    "message": "test",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "addresses": [{"type": "InternalIP", "address": address}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        }
    }
    control_plane.kubectl("patch", "node", name, "--subresource=status", "--type=merge", "-p", json.dumps(status))
    return name


@pytest.fixture(scope="session")
def namespace(control_plane: ControlPlane) -> str:
    name = f"bridge-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", name)
    return name


def make_pod(
    cp: ControlPlane,
    bridge: ServerThread,
    namespace: str,
    node: str,
    name: str,
    *,
    known: bool = True,
    containers: tuple[str, ...] = ("main",),
) -> str:
    """A Running pod bound to ``node``; ``known`` registers it with the provider."""
    spec = {
        "nodeName": node,
        "containers": [
            {"name": c, "image": "busybox", "command": ["sleep", "infinity"], "stdin": True} for c in containers
        ],
        "tolerations": [{"key": "edgefleet.io/device", "operator": "Exists"}],
    }
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    cp.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = {
        "status": {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "startTime": now,
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
            "containerStatuses": [
                {
                    "name": c,
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "image": "busybox",
                    "imageID": "",
                    "containerID": f"edgefleet://{name}-{c}",
                    "state": {"running": {"startedAt": now}},
                }
                for c in containers
            ],
        }
    }
    cp.kubectl("patch", "pod", name, "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(status))
    if known:
        obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}, "spec": spec}
        bridge.call(bridge.provider.add_pod, namespace, name, containers, obj)
    return name


@pytest.fixture(scope="session")
def pod(control_plane: ControlPlane, bridge: ServerThread, namespace: str, node: str) -> str:
    return make_pod(control_plane, bridge, namespace, node, "device-pod", containers=("main", "sidecar"))
