"""Virtual Node objects and node Leases for devices.

The shapes are pure functions (easy to test and to diff); ``NodeRegistry``
writes them through the Kubernetes API. The apiserver reaches a node's kubelet
at the first of its addresses it prefers, on ``daemonEndpoints``' port: for a
virtual node both point at the bridge's kubelet server, never at the device,
whose own addresses go into an annotation.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from fleetproto.node import NodeInfo

log = logging.getLogger("cloud_bridge.nodes")

LABEL_DEVICE = "edgefleet.io/device"
TAINT_EDGE = "edgefleet.io/edge"
ANNOTATION_ADDRESSES = "edgefleet.io/device-addresses"
LEASE_NAMESPACE = "kube-node-lease"
MAX_PODS = 110


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSettings:
    """How the bridge presents every device."""

    kubelet_address: str
    """Address the apiserver can reach the bridge's kubelet server at."""
    kubelet_port: int
    lease_seconds: int = 40
    extra_labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ({"key": TAINT_EDGE, "value": "true", "effect": "NoSchedule"},)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ready_condition(ready: bool, reason: str, message: str) -> dict[str, str]:
    now = _now()
    return {
        "type": "Ready",
        "status": "True" if ready else "False",
        "reason": reason,
        "message": message,
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }


def node_object(device: str, info: NodeInfo, settings: NodeSettings) -> dict[str, Any]:
    """The full Node for ``device``: metadata, spec and status."""
    labels = {
        "kubernetes.io/hostname": device,
        "kubernetes.io/os": info.os or "linux",
        "kubernetes.io/arch": info.arch,
        "node.kubernetes.io/instance-type": "edgefleet-device",
        "type": "virtual-kubelet",
        LABEL_DEVICE: device,
        **settings.extra_labels,
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": device,
            "labels": labels,
            "annotations": {
                ANNOTATION_ADDRESSES: json.dumps([a.to_dict() for a in info.addresses]),
            },
        },
        "spec": {"taints": [dict(t) for t in settings.taints]},
        "status": node_status(info, settings, ready=True, reason="DeviceConnected", message="device is online"),
    }


def node_status(info: NodeInfo, settings: NodeSettings, *, ready: bool, reason: str, message: str) -> dict[str, Any]:
    resources = {
        "cpu": str(info.cpus),
        "memory": str(info.memory_bytes),
        "ephemeral-storage": str(info.disk_bytes),
        "pods": str(MAX_PODS),
    }
    agent = info.agent_version or "unknown"
    return {
        "capacity": resources,
        "allocatable": resources,
        "addresses": [{"type": "InternalIP", "address": settings.kubelet_address}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": settings.kubelet_port}},
        "nodeInfo": {
            "architecture": info.arch,
            "operatingSystem": info.os or "linux",
            "kernelVersion": info.kernel,
            "osImage": info.os_image or info.os,
            "containerRuntimeVersion": f"{info.runtime.name}://{info.runtime.version or 'unknown'}",
            "kubeletVersion": f"v0.0.0-edgefleet-{agent}",
            "kubeProxyVersion": "",
            "machineID": info.machine_id,
            "systemUUID": info.machine_id,
            "bootID": info.boot_id,
        },
        "conditions": [ready_condition(ready, reason, message), *pressure_conditions()],
    }


def pressure_conditions() -> list[dict[str, str]]:
    now = _now()
    return [
        {
            "type": kind,
            "status": "False",
            "reason": f"No{kind}",
            "message": "",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        for kind in ("MemoryPressure", "DiskPressure", "PIDPressure")
    ]


def lease_object(device: str, settings: NodeSettings, node_uid: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": device, "namespace": LEASE_NAMESPACE}
    if node_uid:
        metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": device, "uid": node_uid}]
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": device,
            "leaseDurationSeconds": settings.lease_seconds,
            "renewTime": _now_micro(),
        },
    }


class NodeRegistry:
    """Creates, updates and heartbeats virtual Nodes through the API.

    The kubernetes client is synchronous; calls run in threads so the bridge's
    event loop never blocks on the apiserver.
    """

    def __init__(self, api_client: Any, settings: NodeSettings) -> None:
        from kubernetes import client

        # Typed as Any: the client accepts plain dicts, its stubs say model objects.
        self._core: Any = client.CoreV1Api(api_client)
        self._coord: Any = client.CoordinationV1Api(api_client)
        self._errors = client.exceptions.ApiException
        self.settings = settings
        self._info: dict[str, NodeInfo] = {}

    async def device_online(self, device: str, info: NodeInfo) -> None:
        """Create or refresh the device's Node and Lease, Ready=True."""
        self._info[device] = info
        body = node_object(device, info, self.settings)
        uid = await asyncio.to_thread(self._upsert_node, device, body)
        await asyncio.to_thread(self._renew_lease, device, uid)

    async def device_offline(self, device: str, message: str = "device is offline") -> None:
        info = self._info.get(device)
        if info is None:
            return
        status = node_status(info, self.settings, ready=False, reason="DeviceOffline", message=message)
        await asyncio.to_thread(self._patch_status, device, {"status": {"conditions": status["conditions"]}})

    async def heartbeat(self, device: str) -> None:
        """Renew the Lease and the Ready condition's heartbeat."""
        info = self._info.get(device)
        if info is None:
            return
        status = node_status(info, self.settings, ready=True, reason="DeviceConnected", message="device is online")
        await asyncio.to_thread(self._patch_status, device, {"status": {"conditions": status["conditions"]}})
        await asyncio.to_thread(self._renew_lease, device, None)

    # ------------------------------------------------------------------ blocking calls

    def _upsert_node(self, device: str, body: dict[str, Any]) -> str:
        try:
            node = self._core.create_node(body)
        except self._errors as exc:
            if exc.status != 409:
                raise
            patch = {
                "metadata": {"labels": body["metadata"]["labels"], "annotations": body["metadata"]["annotations"]},
                "spec": body["spec"],
            }
            node = self._core.patch_node(device, patch)
        self._patch_status(device, {"status": body["status"]})
        return str(node.metadata.uid)

    def _patch_status(self, device: str, patch: dict[str, Any]) -> None:
        self._core.patch_node_status(device, patch)

    def _renew_lease(self, device: str, node_uid: str | None) -> None:
        body = lease_object(device, self.settings, node_uid)
        try:
            self._coord.replace_namespaced_lease(device, LEASE_NAMESPACE, self._with_version(device, body))
        except self._errors as exc:
            if exc.status != 404:
                raise
            self._coord.create_namespaced_lease(LEASE_NAMESPACE, body)

    def _with_version(self, device: str, body: dict[str, Any]) -> dict[str, Any]:
        current = self._coord.read_namespaced_lease(device, LEASE_NAMESPACE)
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        if current.metadata.owner_references and "ownerReferences" not in body["metadata"]:
            body["metadata"]["ownerReferences"] = [
                {"apiVersion": o.api_version, "kind": o.kind, "name": o.name, "uid": o.uid}
                for o in current.metadata.owner_references
            ]
        return body
