"""`kubectl get --raw /api/v1/nodes/<device>/proxy/stats/summary` and `.../metrics/resource`:
real apiserver node proxy -> the bridge's per-node kubelet port -> stats stream over MQTT ->
a real agent sampling a real docker container.

Own broker and bridge: this bridge advertises a routable address (the node proxy
refuses loopback) and serves per-node ports (``--kubelet-node-ports``).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cloud_bridge.node_ports import ANNOTATION_PORT
from tests.agent_core.agents import REPO
from tests.bridge.conftest import BridgePki
from tests.bridge.harness import free_port_range
from tests.bridge.kubetools import raw_exchange, status_code, tls_context
from tests.fleet.conftest import fleet_bridge_config, start_device_agent, stop_device_agent, wait_until
from tests.fleet.harness import BridgeThread
from tests.fleet.test_pods import IMAGE, create_pod, pod_json
from tests.support.brokers import Broker
from tests.support.kube import ControlPlane


@pytest.fixture(scope="module")
def stats_broker() -> Iterator[Broker]:
    with Broker("mosquitto") as b:
        yield b


@pytest.fixture(scope="module")
def stats_config(control_plane: ControlPlane, bridge_pki: BridgePki, stats_broker: Broker):
    if len(bridge_pki.ips) < 2:
        pytest.skip("this machine has no non-loopback IPv4; the apiserver's node proxy refuses loopback")
    base = fleet_bridge_config(control_plane, bridge_pki, stats_broker)
    assert base.kubelet is not None
    ports = free_port_range([*bridge_pki.ips], 4)
    return replace(
        base,
        nodes=replace(base.nodes, kubelet_address=bridge_pki.ips[1], kubelet_node_ports=ports),
        kubelet=replace(base.kubelet, node_ports=ports),
        token_webhook=True,
    )


def start_bridge(control_plane: ControlPlane, config) -> BridgeThread:
    return BridgeThread(config, str(control_plane.kubeconfig_path)).start()


def stop_bridge(thread: BridgeThread) -> None:
    thread.stop()
    assert thread.leftover_tasks == [], thread.leftover_tasks


def node_ready(cp: ControlPlane, node: str) -> str:
    node_obj = cp.kubectl_json("get", "node", node)
    ready = [c for c in node_obj["status"].get("conditions", []) if c["type"] == "Ready"]
    return ready[0]["status"] if ready else ""


def raw(cp: ControlPlane, node: str, path: str, check: bool = True):
    return cp.kubectl("get", "--raw", f"/api/v1/nodes/{node}/proxy/{path}", check=check)


def check_bearer_tokens(cp: ControlPlane, pki: BridgePki, ns: str, port: int, bridge: BridgeThread) -> None:
    """As metrics-server's stock setup: a ServiceAccount token, no client certificate (token webhook on)."""
    role = f"scraper-{ns}"
    grant = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": role},
        "rules": [{"apiGroups": [""], "resources": ["nodes/metrics", "nodes/stats"], "verbs": ["get"]}],
    }
    cp.kubectl("apply", "-f", "-", input=json.dumps(grant))
    try:
        cp.kubectl("create", "serviceaccount", "scraper", "-n", ns)
        cp.kubectl("create", "serviceaccount", "nobody", "-n", ns)
        cp.kubectl("create", "clusterrolebinding", role, f"--clusterrole={role}", f"--serviceaccount={ns}:scraper")
        anonymous = tls_context(pki.ca.cert_path)

        def get(path: str, token: str) -> bytes:
            request = f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
            return raw_exchange(port, anonymous, request.encode())

        token = cp.kubectl("create", "token", "scraper", "-n", ns).stdout.strip()
        allowed = get("/metrics/resource", token)
        assert status_code(allowed) == 200 and b"container_cpu_usage_seconds_total{" in allowed, allowed[:300]
        assert status_code(get("/stats/summary", token)) == 200
        assert bridge.bridge is not None and bridge.bridge.token_authorizer is not None
        reviews = bridge.bridge.token_authorizer.reviews
        assert status_code(get("/metrics/resource", token)) == 200
        assert bridge.bridge.token_authorizer.reviews == reviews  # cached: no new TokenReview/SubjectAccessReview
        assert status_code(get("/pods", token)) == 403  # nodes/proxy was not granted
        denied = get("/metrics/resource", cp.kubectl("create", "token", "nobody", "-n", ns).stdout.strip())
        assert status_code(denied) == 403
        assert f"Forbidden (user=system:serviceaccount:{ns}:nobody, verb=get, resource=nodes".encode() in denied
        assert status_code(get("/metrics/resource", "not-a-token")) == 401
    finally:
        cp.kubectl("delete", "clusterrolebinding,clusterrole", role, "--ignore-not-found", check=False)


def test_stats_and_resource_metrics_of_a_real_device(
    control_plane: ControlPlane,
    bridge_pki: BridgePki,
    stats_config,
    stats_broker: Broker,
    docker_host: str,
    tmp_path: Path,
) -> None:
    bridge = start_bridge(control_plane, stats_config)
    node, agent = start_device_agent(stats_broker, docker_host, tmp_path)
    try:
        wait_until(lambda: node_ready(control_plane, node) == "True", timeout=30, what="node Ready")
        node_obj = control_plane.kubectl_json("get", "node", node)
        port = node_obj["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        first, last = stats_config.kubelet.node_ports
        assert first <= port <= last and node_obj["metadata"]["annotations"][ANNOTATION_PORT] == str(port)

        ns = f"stats-{secrets.token_hex(3)}"
        control_plane.kubectl("create", "namespace", ns)
        container = {
            "name": "hog",
            "image": IMAGE,
            "imagePullPolicy": "Never",
            # ~8 MiB held in a shell variable, and some CPU.
            "command": ["sh", "-c", "x=$(head -c 8000000 /dev/zero | tr '\\0' a); while :; do sleep 0.2; done"],
        }
        create_pod(control_plane, ns, node, "app", [container])
        wait_until(
            lambda: pod_json(control_plane, ns, "app")["status"].get("phase") == "Running", timeout=60, what="Running"
        )
        uid = pod_json(control_plane, ns, "app")["metadata"]["uid"]

        def summary_with_pod() -> dict | None:
            doc = json.loads(raw(control_plane, node, "stats/summary").stdout)
            pods = [p for p in doc["pods"] if p["podRef"]["name"] == "app"]
            return doc if pods and pods[0]["memory"]["workingSetBytes"] > 0 else None

        doc = wait_until(summary_with_pod, timeout=30, what="the pod in /stats/summary")
        assert doc["node"]["nodeName"] == node
        assert doc["node"]["memory"]["workingSetBytes"] > 0 and doc["node"]["fs"]["capacityBytes"] > 0
        assert doc["node"]["network"]["interfaces"] and doc["node"]["network"]["rxBytes"] >= 0
        assert doc["node"]["cpu"]["usageCoreNanoSeconds"] > 0
        (pod,) = [p for p in doc["pods"] if p["podRef"]["name"] == "app"]
        assert pod["podRef"] == {"name": "app", "namespace": ns, "uid": uid}
        (hog,) = pod["containers"]
        assert hog["name"] == "hog" and hog["memory"]["workingSetBytes"] > 1 << 20
        assert hog["cpu"]["usageCoreNanoSeconds"] > 0

        text = raw(control_plane, node, "metrics/resource").stdout
        series = {
            (s.name, tuple(sorted(s.labels.items()))): (s.value, s.timestamp)
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }
        labels = (("container", "hog"), ("namespace", ns), ("pod", "app"))
        cpu, stamp = series[("container_cpu_usage_seconds_total", labels)]
        assert cpu > 0 and stamp is not None and abs(float(stamp) - time.time()) < 120
        assert series[("container_memory_working_set_bytes", labels)][0] > 1 << 20
        assert series[("pod_memory_working_set_bytes", (("namespace", ns), ("pod", "app")))][0] > 1 << 20
        assert series[("node_cpu_usage_seconds_total", ())][0] > 0
        assert series[("scrape_error", ())][0] == 0

        # As metrics-server scrapes: straight to <address>:<daemonEndpoints port> with a client cert.
        assert control_plane.kubelet_client is not None
        cert = control_plane.kubelet_client
        ctx = tls_context(bridge_pki.ca.cert_path, cert.cert_path, cert.key_path)
        answer = raw_exchange(port, ctx, b"GET /metrics/resource HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_code(answer) == 200, answer[:300]
        body = answer.partition(b"\r\n\r\n")[2].decode()
        assert f'container_memory_working_set_bytes{{container="hog",namespace="{ns}",pod="app"}} ' in body
        check_bearer_tokens(control_plane, bridge_pki, ns, port, bridge)

        # A restarted bridge gives the node the same port (recorded on the Node).
        stop_bridge(bridge)
        bridge = start_bridge(control_plane, stats_config)
        wait_until(
            lambda: raw(control_plane, node, "stats/summary", check=False).returncode == 0,
            timeout=30,
            what="stats after a bridge restart",
        )
        again = control_plane.kubectl_json("get", "node", node)
        assert again["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == port

        # Offline device: a clear error, fast.
        agent.stop()
        wait_until(lambda: node_ready(control_plane, node) == "False", timeout=60, what="node NotReady")
        started = time.monotonic()
        offline = raw(control_plane, node, "stats/summary", check=False)
        assert offline.returncode != 0 and f"device {node} is offline" in offline.stderr, offline.stderr
        assert time.monotonic() - started < 3
        metrics = raw(control_plane, node, "metrics/resource", check=False)
        assert metrics.returncode != 0 and "offline" in metrics.stderr
    finally:
        stop_device_agent(docker_host, node, agent)
        stop_bridge(bridge)


@contextlib.contextmanager
def metrics_server(cp: ControlPlane, pki: BridgePki, node: str, workdir: Path) -> Iterator[subprocess.Popen]:
    """A real metrics-server, registered as the ``v1beta1.metrics.k8s.io`` APIService.

    It scrapes like in a cluster: ``<InternalIP>:<daemonEndpoints port>/metrics/resource``
    (here with the admin's client certificate, which the bridge's client CA signed)."""
    env = subprocess.run(
        [str(REPO / "hack/metrics-server.sh")], capture_output=True, text=True, timeout=1800, check=False
    )
    assert env.returncode == 0, env.stderr[-3000:]
    binary = env.stdout.strip().partition("=")[2]
    ip = pki.ips[1]
    port = free_port_range([ip], 1)[0]
    log = (workdir / "metrics-server.log").open("wb")
    cmd = [
        binary,
        f"--bind-address={ip}",
        f"--secure-port={port}",
        f"--cert-dir={workdir / 'ms-certs'}",
        f"--kubeconfig={cp.kubeconfig_path}",
        f"--authentication-kubeconfig={cp.kubeconfig_path}",
        f"--authorization-kubeconfig={cp.kubeconfig_path}",
        "--kubelet-preferred-address-types=InternalIP",
        "--kubelet-use-node-status-port",
        f"--kubelet-certificate-authority={pki.ca.cert_path}",
        f"--node-selector=kubernetes.io/hostname={node}",
        "--metric-resolution=10s",
        "--kubelet-request-timeout=5s",
        "-v=2",
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    name = f"metrics-server-{secrets.token_hex(3)}"
    objects = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": "kube-system"},
            "spec": {"ports": [{"port": 443, "targetPort": port, "protocol": "TCP"}]},
        },
        {  # what the aggregator resolves (no controller-manager here to derive it from the Service)
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "kube-system", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
            "ports": [{"name": "", "port": port, "protocol": "TCP"}],
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {
                "service": {"name": name, "namespace": "kube-system", "port": 443},
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                "insecureSkipTLSVerify": True,
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]
    try:
        cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
        yield proc
    finally:
        # An unavailable APIService would disturb every later kubectl's discovery.
        cp.kubectl("delete", "apiservice", "v1beta1.metrics.k8s.io", "--ignore-not-found", check=False)
        cp.kubectl("delete", "service,endpointslice", name, "-n", "kube-system", "--ignore-not-found", check=False)
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def test_kubectl_top_through_a_real_metrics_server(
    control_plane: ControlPlane,
    bridge_pki: BridgePki,
    stats_config,
    stats_broker: Broker,
    docker_host: str,
    tmp_path: Path,
) -> None:
    bridge = start_bridge(control_plane, stats_config)
    node, agent = start_device_agent(stats_broker, docker_host, tmp_path)
    try:
        wait_until(lambda: node_ready(control_plane, node) == "True", timeout=30, what="node Ready")
        ns = f"top-{secrets.token_hex(3)}"
        control_plane.kubectl("create", "namespace", ns)
        busy = {
            "name": "busy",
            "image": IMAGE,
            "imagePullPolicy": "Never",
            "command": ["sh", "-c", "x=$(head -c 4000000 /dev/zero | tr '\\0' a); while :; do :; done"],
        }
        create_pod(control_plane, ns, node, "busy", [busy])
        wait_until(
            lambda: pod_json(control_plane, ns, "busy")["status"].get("phase") == "Running", timeout=60, what="Running"
        )
        with metrics_server(control_plane, bridge_pki, node, tmp_path) as ms:

            def top(*args: str) -> str | None:
                if ms.poll() is not None:  # pytest.fail: not retried by wait_until
                    pytest.fail("metrics-server exited: " + (tmp_path / "metrics-server.log").read_text()[-3000:])
                proc = control_plane.kubectl("top", *args, "--no-headers", check=False)
                if proc.returncode != 0 or not proc.stdout.strip():
                    raise AssertionError(proc.stderr[-500:])  # kept by wait_until as its last result
                return proc.stdout

            pod_line = wait_until(lambda: top("pod", "busy", "-n", ns), timeout=90, interval=2, what="kubectl top pod")
            name, cpu, memory = pod_line.split()[:3]
            assert name == "busy" and cpu.endswith("m") and int(cpu[:-1]) > 100  # a busy loop: most of a core
            assert memory.endswith("Mi") and int(memory[:-2]) >= 1
            node_line = wait_until(lambda: top("node", node), timeout=60, interval=2, what="kubectl top node")
            assert node_line.split()[0] == node
    finally:
        stop_device_agent(docker_host, node, agent)
        stop_bridge(bridge)
