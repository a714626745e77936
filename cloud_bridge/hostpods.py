"""Host access: a virtual pod ``host-<device>`` whose exec runs on the device itself.

For every EdgeDevice with ``features.hostExec`` the bridge keeps a Pod in one
namespace (``edgefleet-system`` by default), bound to the device's Node. No
container runs for it: ``PodSync`` skips pods labelled ``LABEL_HOST_POD``, and
``MqttProvider`` maps exec on it to a ``hostexec`` stream (port-forward to a
``host`` port-forward when ``features.hostPortForward``). Kubernetes RBAC is the
guard: whoever may ``create pods/exec`` in that namespace may run commands on
the devices. The device must allow it too (``[features] host_exec`` in its
agent.toml); the EdgeDevice is the cluster side's consent.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Any

import fleetproto as fp

from .devices import DeviceHub
from .nodes import LABEL_DEVICE
from .pods import LABEL_HOST_POD
from .registry import DeviceConfig, DeviceRegistry

log = logging.getLogger("cloud_bridge.hostpods")

HOST_CONTAINER = "host"
HOST_IMAGE = "edgefleet.io/host"
"""Never pulled: a name that says what the container stands for."""
PREFIX = "host-"


def host_pod_name(device: str) -> str:
    return f"{PREFIX}{device}"


def host_pod_object(device: str, namespace: str) -> dict[str, Any]:
    """The virtual pod: bound to the device's node, tolerating every taint (never evicted, never scheduled)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": host_pod_name(device),
            "namespace": namespace,
            "labels": {LABEL_HOST_POD: "true", LABEL_DEVICE: device},
            "annotations": {"edgefleet.io/description": f"kubectl exec here runs commands on device {device} itself"},
        },
        "spec": {
            "nodeName": device,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": HOST_CONTAINER, "image": HOST_IMAGE, "imagePullPolicy": "Never"}],
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 0,
        },
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def host_pod_status(online: bool, since: str | None = None) -> dict[str, Any]:
    """Running and Ready while the device is online; Pending, not ready, while it is not."""
    now = _now()
    since = since or now
    state: dict[str, Any] = (
        {"running": {"startedAt": since}}
        if online
        else {"waiting": {"reason": "DeviceOffline", "message": "the device is not connected"}}
    )
    flag = "True" if online else "False"
    return {
        "status": {
            "phase": "Running" if online else "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
                {"type": "Ready", "status": flag, "lastTransitionTime": now},
            ],
            "containerStatuses": [
                {
                    "name": HOST_CONTAINER,
                    "image": HOST_IMAGE,
                    "imageID": "",
                    "ready": online,
                    "started": online,
                    "restartCount": 0,
                    "state": state,
                }
            ],
            "startTime": since,
        }
    }


class HostPods:
    """Keeps one ``host-<device>`` pod per hostExec device, its status following the device."""

    def __init__(
        self, api_client: Any, registry: DeviceRegistry, hub: DeviceHub, *, namespace: str, interval: float = 5.0
    ) -> None:
        from kubernetes import client

        self._core: Any = client.CoreV1Api(api_client)
        self._errors = client.exceptions.ApiException
        self.registry = registry
        self.hub = hub
        self.namespace = namespace
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._warned_namespace = False
        registry.on_change.append(self._on_change)
        hub.on_hello.append(self._on_hello)
        hub.on_offline.append(self._on_offline)

    def device_for(self, namespace: str, pod: str) -> DeviceConfig | None:
        """The device whose host pod this is (None if it is not one, or hostExec is off)."""
        if namespace != self.namespace or not pod.startswith(PREFIX):
            return None
        config = self.registry.get(pod[len(PREFIX) :])
        return config if config is not None and config.host_exec else None

    async def start(self) -> None:
        if not self.registry.enabled:
            return  # no EdgeDevices, no features
        self._task = asyncio.create_task(self._loop(), name="bridge-hostpods")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception:
                log.exception("host pod reconcile failed")
            await asyncio.sleep(self.interval)

    async def reconcile(self) -> None:
        """Create missing host pods, delete those whose device lost the feature (or its EdgeDevice)."""
        wanted = {name for name, c in self.registry.devices.items() if c.host_exec}
        existing = await asyncio.to_thread(self._list)
        for device in wanted:
            phase = existing.get(device)
            if phase is None or (phase == "Running") != self.hub.online(device):
                await self._ensure(device)
        for device in set(existing) - wanted:
            await self._delete(device)

    def _list(self) -> dict[str, str]:
        """Host pods by device, with their phase."""
        pods = self._core.list_namespaced_pod(self.namespace, label_selector=f"{LABEL_HOST_POD}=true")
        found = {(p.metadata.labels or {}).get(LABEL_DEVICE, ""): (p.status.phase or "") for p in pods.items}
        found.pop("", None)
        return found

    async def _on_change(self, device: str, old: DeviceConfig | None, new: DeviceConfig | None) -> None:
        if new is not None and new.host_exec:
            await self._ensure(device)
        elif old is not None and old.host_exec:
            await self._delete(device)

    async def _on_hello(self, device: str, hello: fp.NodeHello) -> None:
        config = self.registry.get(device)
        if config is not None and config.host_exec:
            await self._ensure(device)

    async def _on_offline(self, device: str, reason: str) -> None:
        config = self.registry.get(device)
        if config is not None and config.host_exec:
            await asyncio.to_thread(self._write_status, device, False)

    async def _ensure(self, device: str) -> None:
        async with self._lock:
            await asyncio.to_thread(self._create, device)
            await asyncio.to_thread(self._write_status, device, self.hub.online(device))

    async def _delete(self, device: str) -> None:
        from kubernetes import client

        def delete() -> None:
            try:
                self._core.delete_namespaced_pod(
                    host_pod_name(device), self.namespace, body=client.V1DeleteOptions(grace_period_seconds=0)
                )
                log.info("deleted host pod %s/%s", self.namespace, host_pod_name(device))
            except self._errors as exc:
                if exc.status != 404:
                    raise

        async with self._lock:
            await asyncio.to_thread(delete)

    def _create(self, device: str) -> None:
        try:
            self._core.create_namespaced_pod(self.namespace, host_pod_object(device, self.namespace))
            log.info("created host pod %s/%s", self.namespace, host_pod_name(device))
        except self._errors as exc:
            if exc.status == 409:
                return
            if exc.status == 404 and not self._warned_namespace:
                self._warned_namespace = True
                log.error("namespace %s for host pods does not exist: create it (the chart does)", self.namespace)
                return
            raise

    def _write_status(self, device: str, online: bool) -> None:
        name = host_pod_name(device)
        try:
            pod = self._core.read_namespaced_pod(name, self.namespace)
        except self._errors as exc:
            if exc.status == 404:
                return
            raise
        current = pod.status.phase if pod.status else None
        if (current == "Running") == online and current in ("Running", "Pending"):
            return  # already says so: no write per heartbeat
        since = pod.status.start_time.strftime("%Y-%m-%dT%H:%M:%SZ") if pod.status and pod.status.start_time else None
        self._core.patch_namespaced_pod_status(name, self.namespace, host_pod_status(online, since))
