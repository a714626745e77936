"""Pods bound to a device node run on the device (real docker) and report status back."""

from __future__ import annotations

import json
import secrets
import time

import docker

from edge_agent.podspec import LABEL_NODE
from tests.fleet.conftest import TOLERATION, wait_until

IMAGE = "edgefleet/busybox:test"


def create_pod(control_plane, namespace: str, node: str, name: str, containers: list[dict], **spec) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "nodeName": node,
            "tolerations": TOLERATION,
            "terminationGracePeriodSeconds": 1,
            "containers": containers,
            **spec,
        },
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def node_containers(docker_host: str, node: str) -> list[dict]:
    api = docker.APIClient(base_url=docker_host, timeout=30)
    try:
        return api.containers(all=True, filters={"label": [f"{LABEL_NODE}={node}"]})
    finally:
        api.close()


def pod_json(control_plane, namespace: str, name: str) -> dict:
    return control_plane.kubectl_json("get", "pod", name, "-n", namespace)


def test_pod_runs_reports_status_and_is_deleted(control_plane, fleet_bridge, start_agent, docker_host):
    node, _agent = start_agent()
    wait_until(lambda: control_plane.kubectl_json("get", "node", node), timeout=30, what="node")
    ns = f"fleet-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", ns)
    control_plane.kubectl("create", "configmap", "cfg", "-n", ns, "--from-literal=greeting=hello-cm")
    control_plane.kubectl("create", "secret", "generic", "sec", "-n", ns, "--from-literal=token=s3cret")
    container = {
        "name": "main",
        "image": IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", "cat /etc/cfg/greeting; echo; echo $TOKEN; sleep 3600"],
        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}}],
        "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}],
    }
    create_pod(control_plane, ns, node, "web", [container], volumes=[{"name": "cfg", "configMap": {"name": "cfg"}}])

    def running() -> bool:
        pod = pod_json(control_plane, ns, "web")
        return pod["status"].get("phase") == "Running" and pod

    pod = wait_until(running, timeout=60, what="pod Running")
    status = pod["status"]
    assert status["containerStatuses"][0]["name"] == "main"
    assert "running" in status["containerStatuses"][0]["state"]
    assert status.get("startTime")
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in status["conditions"]) or status["conditions"]
    row = control_plane.kubectl("get", "pod", "web", "-n", ns, "--no-headers").stdout
    assert "Running" in row
    assert node_containers(docker_host, node)
    # The bridge's own status writes must not echo back as upserts (a write loop).
    time.sleep(2)
    before = pod_json(control_plane, ns, "web")["metadata"]["resourceVersion"]
    time.sleep(3)
    assert pod_json(control_plane, ns, "web")["metadata"]["resourceVersion"] == before

    control_plane.kubectl("delete", "pod", "web", "-n", ns, "--wait=true", "--timeout=60s", timeout=90)
    wait_until(lambda: not node_containers(docker_host, node), timeout=30, what="containers removed")


def test_device_catches_up_after_being_offline(control_plane, fleet_bridge, start_agent, docker_host):
    """While the agent is down one pod is deleted and another created; on reconnect Sync fixes both."""
    node, agent = start_agent()
    wait_until(lambda: control_plane.kubectl_json("get", "node", node), timeout=30, what="node")
    ns = f"fleet-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", ns)
    sleeper = {"name": "main", "image": IMAGE, "imagePullPolicy": "Never", "command": ["sleep", "3600"]}
    create_pod(control_plane, ns, node, "old", [sleeper])
    wait_until(lambda: pod_json(control_plane, ns, "old")["status"].get("phase") == "Running", timeout=60, what="old")
    agent.stop()  # the agent's containers keep running while it is away
    assert node_containers(docker_host, node)
    control_plane.kubectl("delete", "pod", "old", "-n", ns, "--wait=false")
    create_pod(control_plane, ns, node, "new", [sleeper])
    agent.start()
    wait_until(lambda: pod_json(control_plane, ns, "new")["status"].get("phase") == "Running", timeout=60, what="new")

    def old_gone() -> bool:
        return control_plane.kubectl("get", "pod", "old", "-n", ns, "--ignore-not-found").stdout.strip() == ""

    wait_until(old_gone, timeout=60, what="old pod finalized")
    names = {c["Labels"].get("io.kubernetes.pod.name", "") for c in node_containers(docker_host, node)}
    assert len(node_containers(docker_host, node)) == 1, names


def test_missing_config_map_waits_then_runs(control_plane, fleet_bridge, start_agent):
    node, _agent = start_agent()
    wait_until(lambda: control_plane.kubectl_json("get", "node", node), timeout=30, what="node")
    ns = f"fleet-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", ns)
    container = {
        "name": "main",
        "image": IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sleep", "3600"],
        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "later", "key": "x"}}}],
    }
    create_pod(control_plane, ns, node, "waits", [container])

    def reason() -> str:
        statuses = pod_json(control_plane, ns, "waits")["status"].get("containerStatuses") or []
        return statuses and statuses[0]["state"].get("waiting", {}).get("reason", "")

    assert wait_until(reason, timeout=30, what="waiting reason") == "CreateContainerConfigError"
    assert "CreateContainerConfigError" in control_plane.kubectl("get", "pod", "waits", "-n", ns).stdout
    control_plane.kubectl("create", "configmap", "later", "-n", ns, "--from-literal=x=1")
    wait_until(lambda: pod_json(control_plane, ns, "waits")["status"].get("phase") == "Running", timeout=60, what="Run")
