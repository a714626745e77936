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

from .node_ports import ANNOTATION_PORT, NodePorts, PortsExhausted, claims_from_nodes

log = logging.getLogger("cloud_bridge.nodes")

LABEL_DEVICE = "edgefleet.io/device"
TAINT_EDGE = "edgefleet.io/edge"
ANNOTATION_ADDRESSES = "edgefleet.io/device-addresses"
ANNOTATION_MANAGED = "edgefleet.io/managed"
ANNOTATION_OWNER = "edgefleet.io/bridge"
"""Which bridge made the Node: only that one prunes it (several bridges may share a cluster)."""
"""JSON ``{"labels": [...], "taints": [...]}``: keys the bridge set, so it can take back what an EdgeDevice drops."""
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
LEASE_NAMESPACE = "kube-node-lease"
MAX_PODS = 110


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSettings:
    """How the bridge presents every device."""

    kubelet_address: str
    """Address the apiserver can reach the bridge's kubelet server at."""
    kubelet_port: int
    kubelet_node_ports: tuple[int, int] | None = None
    """A port per node from FIRST..LAST for node-scoped kubelet endpoints (``node_ports.py``); None: all share one."""
    hostname_suffix: str | None = None
    """Nodes also advertise a ``Hostname`` address ``<device><suffix>`` (which DNS must resolve to the
    bridge); the kubelet server then tells nodes apart by the Host header (``node_ports.py``)."""
    lease_seconds: int = 40
    owner: str = "edgefleet"
    """This bridge's name (``--bridge-name``), written on its Nodes as ``edgefleet.io/bridge``."""
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


def offline_taints() -> list[dict[str, str]]:
    """What the node lifecycle controller adds to an unreachable node (NoExecute with the time)."""
    return [
        {"key": TAINT_UNREACHABLE, "effect": "NoSchedule"},
        {"key": TAINT_UNREACHABLE, "effect": "NoExecute", "timeAdded": _now()},
    ]


def merge_taints(
    current: list[dict[str, Any]], wanted: list[dict[str, Any]], owned_keys: set[str] | frozenset[str]
) -> list[dict[str, Any]]:
    """``current`` without the taints whose key the bridge owns, plus ``wanted``.

    Taints someone else added (``kubectl taint``) stay; a wanted taint already
    present with the same value keeps its ``timeAdded`` (tolerationSeconds count from it).
    """
    wanted_ids = {(t["key"], t["effect"]) for t in wanted}
    existing = {(t["key"], t["effect"]): t for t in current}
    out = [t for t in current if t["key"] not in owned_keys and (t["key"], t["effect"]) not in wanted_ids]
    for taint in wanted:
        old = existing.get((taint["key"], taint["effect"]))
        same = old is not None and (old.get("value") or "") == (taint.get("value") or "")
        out.append(old if same and old is not None else dict(taint))
    return out


def node_patch(current: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Strategic merge patch turning the existing Node ``current`` into ``body``'s labels and taints.

    Labels and taints the bridge set before (listed in ``ANNOTATION_MANAGED``)
    but no longer wants are removed; other owners' labels and taints are left alone.
    """
    meta = current.get("metadata") or {}
    try:
        managed = json.loads((meta.get("annotations") or {}).get(ANNOTATION_MANAGED) or "{}")
    except ValueError:
        managed = {}
    labels: dict[str, str | None] = {k: None for k in managed.get("labels") or [] if k in (meta.get("labels") or {})}
    labels.update(body["metadata"]["labels"])
    wanted = body["spec"]["taints"]
    owned = {*(managed.get("taints") or []), *(t["key"] for t in wanted), TAINT_EDGE, TAINT_UNREACHABLE}
    return {
        "metadata": {"labels": labels, "annotations": body["metadata"]["annotations"]},
        "spec": {"taints": merge_taints((current.get("spec") or {}).get("taints") or [], wanted, owned)},
    }


def node_object(
    device: str,
    info: NodeInfo,
    settings: NodeSettings,
    *,
    labels: dict[str, str] | None = None,
    taints: tuple[dict[str, str], ...] = (),
) -> dict[str, Any]:
    """The full Node for ``device``: metadata, spec and status (``labels``/``taints`` from its EdgeDevice)."""
    all_taints = [dict(t) for t in settings.taints]
    for taint in taints:
        all_taints = [t for t in all_taints if (t["key"], t["effect"]) != (taint["key"], taint["effect"])]
        all_taints.append(dict(taint))
    node_labels = {
        "kubernetes.io/hostname": device,
        "kubernetes.io/os": info.os or "linux",
        "kubernetes.io/arch": info.arch,
        "node.kubernetes.io/instance-type": "edgefleet-device",
        "type": "virtual-kubelet",
        LABEL_DEVICE: device,
        **settings.extra_labels,
        **(labels or {}),
    }
    managed = {"labels": sorted(labels or {}), "taints": sorted({t["key"] for t in all_taints})}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": device,
            "labels": node_labels,
            "annotations": {
                ANNOTATION_ADDRESSES: json.dumps([a.to_dict() for a in info.addresses]),
                ANNOTATION_MANAGED: json.dumps(managed, sort_keys=True),
                ANNOTATION_OWNER: settings.owner,
            },
        },
        "spec": {"taints": all_taints},
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
        self._api = api_client
        self._core: Any = client.CoreV1Api(api_client)
        self._coord: Any = client.CoordinationV1Api(api_client)
        self._errors = client.exceptions.ApiException
        self.settings = settings
        self._info: dict[str, NodeInfo] = {}
        ports = settings.kubelet_node_ports
        self.ports: NodePorts | None = NodePorts(*ports) if ports else None
        self._ports_seeded = False
        self.device_node: dict[str, tuple[dict[str, str], tuple[dict[str, str], ...]]] = {}
        """Per-device extra labels and taints (from its EdgeDevice), set by the registry."""
        self._offline: set[str] = set()

    def _body(self, device: str, info: NodeInfo) -> dict[str, Any]:
        labels, taints = self.device_node.get(device, ({}, ()))
        body = node_object(device, info, self.settings, labels=labels, taints=taints)
        port = self.ports.port_of(device) if self.ports is not None else None
        if port is not None:
            body["metadata"]["annotations"][ANNOTATION_PORT] = str(port)
            body["status"]["daemonEndpoints"] = {"kubeletEndpoint": {"Port": port}}
        if self.settings.hostname_suffix:  # first: the apiserver prefers Hostname by default
            hostname = f"{device}{self.settings.hostname_suffix}"
            body["status"]["addresses"].insert(0, {"type": "Hostname", "address": hostname})
        return body

    def node_for_hostname(self, host: str) -> str | None:
        """The device whose ``Hostname`` address is ``host`` (see ``hostname_suffix``), if it is one of ours."""
        suffix = (self.settings.hostname_suffix or "").lower()
        device = host[: -len(suffix)] if suffix and host.endswith(suffix) else None
        return device if device and device in self._info else None

    async def _assign_port(self, device: str) -> None:
        """Give the device its own kubelet port, the one its Node recorded if still free."""
        if self.ports is None:
            return
        if not self._ports_seeded:
            self.ports.seed(await asyncio.to_thread(self._port_claims))
            self._ports_seeded = True
        try:
            self.ports.assign(device)
        except PortsExhausted as exc:  # the node still works on the shared port, without node stats
            log.warning("node %s gets the shared kubelet port: %s", device, exc)

    def _port_claims(self) -> dict[str, int | None]:
        nodes = self._core.list_node(label_selector=LABEL_DEVICE).items
        return claims_from_nodes((n.metadata.name, n.metadata.annotations) for n in nodes)

    async def device_online(self, device: str, info: NodeInfo) -> None:
        """Create or refresh the device's Node and Lease, Ready=True, without the unreachable taints."""
        self._info[device] = info
        self._offline.discard(device)
        await self._assign_port(device)
        uid = await asyncio.to_thread(self._upsert_node, device, self._body(device, info))
        await asyncio.to_thread(self._renew_lease, device, uid)

    async def reconfigure(self, device: str) -> None:
        """Its EdgeDevice changed: rewrite the labels and taints of a Node the bridge has info for."""
        info = self._info.get(device)
        if info is None:
            return
        body = self._body(device, info)
        if device in self._offline:  # keep the unreachable taints until it is back
            body["spec"]["taints"] = [*body["spec"]["taints"], *offline_taints()]
        await asyncio.to_thread(self._patch_node, device, lambda current: node_patch(current, body))

    async def device_offline(self, device: str, message: str = "device is offline") -> None:
        """Ready=False and the unreachable taints (NoSchedule, and NoExecute as the lifecycle controller does)."""
        info = self._info.get(device)
        if info is None:
            return
        self._offline.add(device)
        status = node_status(info, self.settings, ready=False, reason="DeviceOffline", message=message)
        await asyncio.to_thread(self._patch_status, device, {"status": {"conditions": status["conditions"]}})

        def taint(current: dict[str, Any]) -> dict[str, Any]:
            taints = (current.get("spec") or {}).get("taints") or []
            if device not in self._offline:  # back online meanwhile: its NodeHello already cleaned up
                return {"spec": {"taints": taints}}
            return {"spec": {"taints": merge_taints(taints, offline_taints(), {TAINT_UNREACHABLE})}}

        await asyncio.to_thread(self._patch_node, device, taint)

    async def owned_nodes(self) -> list[str]:
        """Names of the device Nodes this bridge made (by its owner annotation)."""
        nodes = await asyncio.to_thread(self._core.list_node, label_selector=LABEL_DEVICE)
        return [
            n.metadata.name
            for n in nodes.items
            if (n.metadata.annotations or {}).get(ANNOTATION_OWNER) == self.settings.owner
        ]

    async def remove(self, device: str) -> None:
        """The device's EdgeDevice is gone: delete its Node and Lease, forget it."""
        self._info.pop(device, None)
        self._offline.discard(device)
        self.device_node.pop(device, None)
        if self.ports is not None:
            self.ports.release(device)
        await asyncio.to_thread(self._delete, device)

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
            uid = str(node.metadata.uid)
        except self._errors as exc:
            if exc.status != 409:
                raise
            uid = self._patch_node(device, lambda current: node_patch(current, body))
        self._patch_status(device, {"status": body["status"]})
        return uid

    def _patch_node(self, device: str, make: Any, attempts: int = 5) -> str:
        """Read, patch with the read resourceVersion (optimistic lock), retry on conflict; the Node's uid."""
        for attempt in range(attempts):
            try:
                current = self._api.sanitize_for_serialization(self._core.read_node(device))
            except self._errors as exc:
                if exc.status == 404:
                    return ""
                raise
            patch = make(current)
            patch.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                return str(self._core.patch_node(device, patch).metadata.uid)
            except self._errors as exc:
                if exc.status != 409 or attempt == attempts - 1:
                    raise
        return ""

    def _delete(self, device: str) -> None:
        try:
            node = self._core.read_node(device)
        except self._errors as exc:
            if exc.status != 404:
                raise
        else:
            if LABEL_DEVICE not in (node.metadata.labels or {}):
                log.warning("node %s is not a device node: not deleting it", device)
                return
        for call in (
            lambda: self._core.delete_node(device),
            lambda: self._coord.delete_namespaced_lease(device, LEASE_NAMESPACE),
        ):
            try:
                call()
            except self._errors as exc:
                if exc.status != 404:
                    raise

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
