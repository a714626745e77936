"""Kubernetes Events about pods on devices: what a kubelet would tell ``kubectl describe pod``.

* ``UnsupportedFields`` (Warning), once per pod UID: fields of the Pod the
  device ignores, both those the bridge cannot translate (probes, init
  containers, ...) and those the agent reported back as unknown.
* ``Failed`` / ``BackOff`` (Warning), once per pod UID, container and reason,
  for image pull errors and crash loops in a device's status report.

Events are best effort: a failed write is counted and logged, never raised.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
from collections import Counter, OrderedDict
from typing import Any

import fleetproto as fp

from .devices import DeviceHub
from .pods import PodSync, seccomp_type

log = logging.getLogger("cloud_bridge.events")

COMPONENT = "edgefleet-bridge"
REASON_UNSUPPORTED = "UnsupportedFields"
CONDITION_UNSUPPORTED = "UnsupportedFields"
MAX_REMEMBERED = 20000
"""Keys of events already sent; the oldest are forgotten past this (a bounded memory, at worst a repeat)."""

UNSUPPORTED_POD = ("initContainers", "ephemeralContainers", "hostPID", "hostIPC", "shareProcessNamespace",
                   "dnsConfig", "hostAliases", "readinessGates", "runtimeClassName", "resourceClaims",
                   "securityContext.sysctls", "securityContext.seLinuxOptions", "securityContext.runAsUser",
                   "securityContext.runAsGroup", "securityContext.fsGroup", "securityContext.runAsNonRoot")  # fmt: skip
UNSUPPORTED_CONTAINER = ("livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "volumeDevices",
                         "resizePolicy", "restartPolicy", "securityContext.capabilities",
                         "securityContext.privileged", "securityContext.seLinuxOptions", "securityContext.runAsUser",
                         "securityContext.runAsGroup", "securityContext.runAsNonRoot",
                         "securityContext.readOnlyRootFilesystem", "securityContext.allowPrivilegeEscalation",
                         "securityContext.procMount", "securityContext.appArmorProfile",
                         "securityContext.windowsOptions")  # fmt: skip
"""``securityContext.seccompProfile`` is honoured (RuntimeDefault, Unconfined), except Localhost."""
SUPPORTED_VOLUMES = frozenset({"configMap", "secret", "emptyDir"})
PULL_REASONS = {"ErrImagePull": "Failed", "ImagePullBackOff": "BackOff", "CrashLoopBackOff": "BackOff"}


def _present(obj: dict[str, Any], dotted: str) -> bool:
    value: Any = obj
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return False
        value = value.get(part)
    return value not in (None, False, "", [], {})


def unsupported_pod_fields(pod: dict[str, Any]) -> list[str]:
    """Paths of fields set on a v1 Pod (camelCase dict) that the device will not honour."""
    spec = pod.get("spec") or {}
    found = [f"spec.{name}" for name in UNSUPPORTED_POD if _present(spec, name)]
    # A Localhost seccomp profile is a file on the node, which a device does not have.
    if seccomp_type(spec) == "Localhost":
        found.append("spec.securityContext.seccompProfile")
    for i, container in enumerate(spec.get("containers") or []):
        found += [f"spec.containers[{i}].{name}" for name in UNSUPPORTED_CONTAINER if _present(container, name)]
        if seccomp_type(container) == "Localhost":
            found.append(f"spec.containers[{i}].securityContext.seccompProfile")
    for i, volume in enumerate(spec.get("volumes") or []):
        kinds = set(volume) - {"name"}
        if volume.get("projected") and str(volume.get("name", "")).startswith("kube-api-access-"):
            continue  # the service account token the apiserver adds to every pod
        for kind in sorted(kinds - SUPPORTED_VOLUMES):
            found.append(f"spec.volumes[{i}].{kind}")
    return found


def reported_unsupported(report: fp.PodStatusReport) -> str:
    """The agent's ``UnsupportedFields`` condition message ("" if it has none)."""
    for condition in report.conditions:
        if condition.type == CONDITION_UNSUPPORTED and condition.status is fp.ConditionStatus.TRUE:
            return condition.message or "the device reported unsupported fields"
    return ""


def event_object(
    *, namespace: str, pod: str, uid: str, reason: str, message: str, host: str, kind: str = "Warning"
) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{pod}.{secrets.token_hex(8)}", "namespace": namespace},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": pod, "uid": uid},
        "reason": reason,
        "message": message[:1024],
        "type": kind,
        "source": {"component": COMPONENT, "host": host},
        "reportingComponent": COMPONENT,
        "reportingInstance": host,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class PodEvents:
    """Turns status reports into Events, each kind of event once per pod UID."""

    def __init__(self, api_client: Any, hub: DeviceHub, pods: PodSync) -> None:
        from kubernetes import client

        self._core: Any = client.CoreV1Api(api_client)
        self._errors = client.exceptions.ApiException
        self.pods = pods
        self.counters: Counter[str] = Counter()
        self._sent: OrderedDict[tuple[str, ...], None] = OrderedDict()
        hub.on_message.append(self._on_message)

    def _first(self, key: tuple[str, ...]) -> bool:
        if key in self._sent:
            return False
        self._sent[key] = None
        while len(self._sent) > MAX_REMEMBERED:
            self._sent.popitem(last=False)
        return True

    async def _on_message(self, device: str, message: Any) -> None:
        if not isinstance(message, fp.PodStatusReport):
            return
        report = message
        entry = self.pods.lookup(report.namespace, report.name)
        if entry is None or entry.uid != report.uid:
            return  # not a pod of ours (any more)
        if self._first((report.uid, REASON_UNSUPPORTED)):
            fields = unsupported_pod_fields(entry.obj)
            parts = []
            if fields:
                parts.append("fields not supported on edge devices were ignored: " + ", ".join(fields))
            agent = reported_unsupported(report)
            if agent:
                parts.append(f"device {device}: {agent}")
            if parts:
                await self.emit(report, device, REASON_UNSUPPORTED, "; ".join(parts))
            else:
                self._sent.pop((report.uid, REASON_UNSUPPORTED), None)  # a later report may still carry one
        for status in report.container_statuses:
            state = status.state
            if state is None or state.kind is not fp.StateKind.WAITING or state.reason not in PULL_REASONS:
                continue
            if self._first((report.uid, status.name, state.reason)):
                what = state.message or state.reason
                await self.emit(report, device, PULL_REASONS[state.reason], f"container {status.name}: {what}")

    async def emit(self, report: fp.PodStatusReport, device: str, reason: str, message: str) -> None:
        body = event_object(
            namespace=report.namespace, pod=report.name, uid=report.uid, reason=reason, message=message, host=device
        )
        try:
            await asyncio.to_thread(self._core.create_namespaced_event, report.namespace, body)
            self.counters[f"events_{reason}"] += 1
        except self._errors as exc:
            self.counters["event_errors"] += 1
            log.warning("cannot record event %s on %s/%s: %s", reason, report.namespace, report.name, exc)
