"""Virtual Nodes and Leases written into the real apiserver."""

from __future__ import annotations

import uuid

import kubernetes

from cloud_bridge.nodes import ANNOTATION_ADDRESSES, LABEL_DEVICE, TAINT_EDGE, NodeRegistry, NodeSettings
from fleetproto.node import NodeAddress, NodeInfo, RuntimeInfo


def device_info() -> NodeInfo:
    return NodeInfo(
        os="linux",
        arch="arm64",
        kernel="6.1.0-rpi",
        hostname="pi",
        cpus=4,
        memory_bytes=4 * 1024**3,
        disk_bytes=32 * 1024**3,
        os_image="Debian GNU/Linux 12",
        addresses=(NodeAddress("InternalIP", "192.168.7.20"),),
        agent_version="0.1.0",
        runtime=RuntimeInfo("docker", "20.10.24"),
        boot_id="boot-1",
        machine_id="m-1",
    )


def registry(control_plane) -> NodeRegistry:
    api = kubernetes.config.new_client_from_config(config_file=str(control_plane.kubeconfig_path))
    return NodeRegistry(api, NodeSettings(kubelet_address="10.1.2.3", kubelet_port=10250))


async def test_device_becomes_a_ready_node_with_a_lease(control_plane):
    device = f"dev-{uuid.uuid4().hex[:6]}"
    reg = registry(control_plane)
    await reg.device_online(device, device_info())
    node = control_plane.kubectl_json("get", "node", device)
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/arch"] == "arm64" and labels[LABEL_DEVICE] == device
    assert {"key": TAINT_EDGE, "value": "true", "effect": "NoSchedule"} in node["spec"]["taints"]
    status = node["status"]
    assert status["capacity"]["cpu"] == "4" and status["capacity"]["memory"] == str(4 * 1024**3)
    assert status["daemonEndpoints"]["kubeletEndpoint"]["Port"] == 10250
    assert status["addresses"] == [{"type": "InternalIP", "address": "10.1.2.3"}]
    assert "192.168.7.20" in node["metadata"]["annotations"][ANNOTATION_ADDRESSES]
    assert status["nodeInfo"]["containerRuntimeVersion"] == "docker://20.10.24"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    lease = control_plane.kubectl_json("get", "lease", "-n", "kube-node-lease", device)
    assert lease["spec"]["holderIdentity"] == device
    assert lease["metadata"]["ownerReferences"][0]["uid"] == node["metadata"]["uid"]
    table = control_plane.kubectl("get", "nodes", device, "--no-headers").stdout
    assert " Ready " in f" {table} "


async def test_offline_then_back(control_plane):
    device = f"dev-{uuid.uuid4().hex[:6]}"
    reg = registry(control_plane)
    await reg.device_online(device, device_info())
    first_renew = control_plane.kubectl_json("get", "lease", "-n", "kube-node-lease", device)["spec"]["renewTime"]
    await reg.device_offline(device, "no word for 40s")
    node = control_plane.kubectl_json("get", "node", device)
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "DeviceOffline", "no word for 40s")
    assert "NotReady" in control_plane.kubectl("get", "nodes", device, "--no-headers").stdout
    await reg.device_online(device, device_info())  # comes back: same Node, Ready again
    await reg.heartbeat(device)
    node = control_plane.kubectl_json("get", "node", device)
    assert next(c for c in node["status"]["conditions"] if c["type"] == "Ready")["status"] == "True"
    renew = control_plane.kubectl_json("get", "lease", "-n", "kube-node-lease", device)["spec"]["renewTime"]
    assert renew >= first_renew
