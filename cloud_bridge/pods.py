"""Desired pods: Pods bound to device nodes -> PodUpsert / PodDelete / Sync.

Level-triggered: each round lists the bound pods and reconciles. A watch
(``ChangeWatch``) starts a round as soon as a pod changes, so a new or
deleted pod reaches its device in milliseconds while the full list runs only
every ``interval`` seconds as a safety net. Everything that needs the API (ConfigMaps, Secrets)
is resolved here, so the device needs no cluster access.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import fleetproto as fp

from .devices import DeviceHub
from .nodes import LABEL_DEVICE
from .watch import ChangeWatch, Resync

LABEL_HOST_POD = "edgefleet.io/host-pod"
"""Marks the bridge's virtual host pods (hostpods.py), which PodSync never sends to a device."""

log = logging.getLogger("cloud_bridge.pods")


@dataclass(slots=True)
class PodEntry:
    """The bridge's view of one Pod bound to a device (the provider's lookup too)."""

    device: str
    uid: str
    namespace: str
    name: str
    obj: dict[str, Any]
    sent: str = ""
    """Fingerprint of the spec last sent: status writes change resourceVersion, not what the device runs."""
    deleting: bool = False
    failed: str = ""
    """Why the last translation failed ("" if it did not)."""


def _cpu(value: Any) -> float | None:
    if value is None:
        return None
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


_MEM = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def _mem(value: Any) -> int | None:
    if value is None:
        return None
    text = str(value)
    for suffix, mult in _MEM.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * mult)
    return int(float(text))


def fingerprint(pod: dict[str, Any]) -> str:
    """What decides the device's desired pod (ConfigMap/Secret edits are not followed)."""
    return json.dumps([pod["metadata"]["uid"], pod["spec"]], sort_keys=True, default=str)


class Resolver:
    """Reads ConfigMaps and Secrets (blocking; call in a thread)."""

    def __init__(self, core: Any, errors: type[Exception]) -> None:
        self._core = core
        self._errors = errors

    def config_map(self, ns: str, name: str) -> dict[str, bytes]:
        cm = self._core.read_namespaced_config_map(name, ns)
        data = {k: v.encode() for k, v in (cm.data or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (cm.binary_data or {}).items()})
        return data

    def secret(self, ns: str, name: str) -> dict[str, bytes]:
        secret = self._core.read_namespaced_secret(name, ns)
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    def source(self, ns: str, ref: dict[str, Any], kind: str) -> dict[str, bytes]:
        try:
            return self.config_map(ns, ref["name"]) if kind == "configMap" else self.secret(ns, ref["name"])
        except self._errors as exc:
            if getattr(exc, "status", None) == 404 and ref.get("optional"):
                return {}
            raise


def _env(container: dict[str, Any], pod: dict[str, Any], res: Resolver) -> list[fp.EnvVar]:
    ns = pod["metadata"]["namespace"]
    out: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind in ("configMap", "secret"):
            ref = source.get(f"{kind}Ref")
            if ref:
                for key, raw in res.source(ns, ref, kind).items():
                    out[prefix + key] = raw.decode(errors="replace")
    for var in container.get("env") or []:
        value: str = var.get("value", "")
        frm = var.get("valueFrom") or {}
        for kind in ("configMap", "secret"):
            ref = frm.get(f"{kind}KeyRef")
            if ref:
                data = res.source(ns, ref, kind)
                if ref["key"] not in data and not ref.get("optional"):
                    raise KeyError(f"{kind} {ref['name']} has no key {ref['key']}")
                value = data.get(ref["key"], b"").decode(errors="replace")
        field = (frm.get("fieldRef") or {}).get("fieldPath")
        if field:
            value = {
                "metadata.name": pod["metadata"]["name"],
                "metadata.namespace": ns,
                "metadata.uid": pod["metadata"]["uid"],
                "spec.nodeName": pod["spec"].get("nodeName", ""),
                "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
            }.get(field, "")
        out[var["name"]] = value
    return [fp.EnvVar(k, v) for k, v in out.items()]


def _files(pod: dict[str, Any], res: Resolver) -> dict[str, fp.PodFile]:
    ns = pod["metadata"]["namespace"]
    files: dict[str, fp.PodFile] = {}
    for volume in pod["spec"].get("volumes") or []:
        for kind in ("configMap", "secret"):
            src = volume.get(kind)
            if src is None:
                continue
            ref = {"name": src.get("name") or src.get("secretName"), "optional": src.get("optional")}
            data = res.source(ns, ref, kind)
            mode = src.get("defaultMode", 0o644)
            items = src.get("items")
            chosen = (
                [(i["key"], i["path"], i.get("mode", mode)) for i in items] if items else [(k, k, mode) for k in data]
            )
            for key, path, file_mode in chosen:
                if key in data:
                    files[f"{volume['name']}/{path}"] = fp.PodFile(data[key], file_mode)
    return files


def seccomp_type(obj: dict[str, Any]) -> str | None:
    """``securityContext.seccompProfile.type`` of a PodSpec or container (camelCase), if set."""
    return ((obj.get("securityContext") or {}).get("seccompProfile") or {}).get("type") or None


def _seccomp(spec: dict[str, Any], container: dict[str, Any]) -> fp.Seccomp:
    """The container's seccomp profile type, else the pod's (as the kubelet resolves it).

    Localhost profiles name files on the node, which a device does not have: such a
    container runs with the runtime's default profile (confined, not unconfined), and
    the field is reported as unsupported (events.py).
    """
    kind = seccomp_type(container) or seccomp_type(spec)
    if kind is None:
        return fp.Seccomp.UNSET
    return fp.Seccomp.UNCONFINED if kind == "Unconfined" else fp.Seccomp.RUNTIME_DEFAULT


def desired_pod(pod: dict[str, Any], res: Resolver) -> fp.DesiredPod:
    """Translate a v1 Pod (camelCase dict) into the device's DesiredPod."""
    spec = pod["spec"]
    containers = []
    for c in spec["containers"]:
        resources = c.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        containers.append(
            fp.Container(
                name=c["name"],
                image=c["image"],
                image_pull_policy=fp.PullPolicy(c.get("imagePullPolicy") or "IfNotPresent"),
                command=tuple(c.get("command") or ()),
                args=tuple(c.get("args") or ()),
                working_dir=c.get("workingDir") or "",
                env=tuple(_env(c, pod, res)),
                ports=tuple(
                    fp.ContainerPort(
                        container_port=p["containerPort"],
                        protocol=fp.Protocol(p.get("protocol") or "TCP"),
                        name=p.get("name") or "",
                        host_port=p.get("hostPort"),
                        host_ip=p.get("hostIP") or "",
                    )
                    for p in c.get("ports") or []
                ),
                resources=fp.Resources(
                    cpu_limit=_cpu(limits.get("cpu")),
                    memory_limit_bytes=_mem(limits.get("memory")),
                    cpu_request=_cpu(requests.get("cpu")),
                    memory_request_bytes=_mem(requests.get("memory")),
                ),
                volume_mounts=tuple(
                    fp.VolumeMount(
                        volume=m["name"],
                        mount_path=m["mountPath"],
                        sub_path=m.get("subPath") or "",
                        read_only=bool(m.get("readOnly")),
                    )
                    for m in c.get("volumeMounts") or []
                ),
                tty=bool(c.get("tty")),
                stdin=bool(c.get("stdin")),
                stdin_once=bool(c.get("stdinOnce")) and bool(c.get("stdin")),
                seccomp=_seccomp(spec, c),
            )
        )
    meta = pod["metadata"]
    return fp.DesiredPod(
        uid=meta["uid"],
        namespace=meta["namespace"],
        name=meta["name"],
        resource_version=meta.get("resourceVersion", ""),
        containers=tuple(containers),
        restart_policy=fp.RestartPolicy(spec.get("restartPolicy") or "Always"),
        termination_grace_seconds=float(spec.get("terminationGracePeriodSeconds", 30)),
        files=_files(pod, res),
        host_network=bool(spec.get("hostNetwork")),
        hostname=spec.get("hostname") or "",
    )


class PodSync:
    """Keeps devices' desired pods in step with the Pods bound to their nodes."""

    def __init__(self, hub: DeviceHub, api_client: Any, *, interval: float = 1.0, watch: bool = True) -> None:
        from kubernetes import client

        self.hub = hub
        self._api = api_client
        self._core: Any = client.CoreV1Api(api_client)
        self._errors = client.exceptions.ApiException
        self._resolver = Resolver(self._core, self._errors)
        self.pods: dict[tuple[str, str], PodEntry] = {}
        self._generation = int(time.time() * 1000)  # grows across bridge restarts too
        self._resync = Resync(
            self.refresh,
            interval=interval,
            name="pods",
            watch=(
                ChangeWatch(self._core.list_pod_for_all_namespaces, "pods", field_selector="spec.nodeName!=")
                if watch
                else None
            ),
        )
        self._lock = asyncio.Lock()
        hub.on_hello.append(self._on_hello)
        hub.on_message.append(self._on_message)

    def lookup(self, namespace: str, name: str) -> PodEntry | None:
        return self.pods.get((namespace, name))

    def _next_generation(self) -> int:
        self._generation = max(self._generation + 1, int(time.time() * 1000))
        return self._generation

    async def start(self) -> None:
        await self._resync.start()

    async def close(self) -> None:
        await self._resync.close()

    def _list(self) -> tuple[set[str], list[dict[str, Any]]]:
        """Device node names (by label, so offline devices count too) and bound pods."""
        nodes = self._core.list_node(label_selector=LABEL_DEVICE)
        devices = {n.metadata.name for n in nodes.items}
        result = self._core.list_pod_for_all_namespaces(field_selector="spec.nodeName!=")
        return devices, [self._api.sanitize_for_serialization(p) for p in result.items]

    async def refresh(self) -> None:
        """One round: upsert new/changed pods, delete terminating or vanished ones."""
        devices, listed = await asyncio.to_thread(self._list)
        devices |= set(self.hub.controls)
        async with self._lock:
            seen: set[tuple[str, str]] = set()
            for obj in listed:
                node = obj["spec"].get("nodeName", "")
                if node not in devices or (obj["metadata"].get("labels") or {}).get(LABEL_HOST_POD):
                    continue  # host-<device> pods are the bridge's own (hostpods.py): nothing runs for them
                meta = obj["metadata"]
                key = (meta["namespace"], meta["name"])
                seen.add(key)
                entry = self.pods.get(key)
                if entry is None or entry.uid != meta["uid"]:
                    if entry is not None:
                        self._send_delete(entry, 0)
                    entry = self.pods[key] = PodEntry(node, meta["uid"], key[0], key[1], obj)
                entry.obj = obj
                if meta.get("deletionTimestamp"):
                    if not entry.deleting:
                        entry.deleting = True
                        self._send_delete(entry, meta.get("deletionGracePeriodSeconds"))
                elif entry.sent != fingerprint(obj) and self.hub.online(node):
                    await self._send_upsert(entry)
            for key in set(self.pods) - seen:
                entry = self.pods.pop(key)
                if not entry.deleting:
                    self._send_delete(entry, 0)

    async def _send_upsert(self, entry: PodEntry) -> None:
        try:
            pod = await asyncio.to_thread(desired_pod, entry.obj, self._resolver)
        except Exception as exc:
            # Like a kubelet: the pod waits in CreateContainerConfigError and is retried
            # every round (a missing ConfigMap may appear later).
            message = f"cannot resolve the pod's configuration: {exc}"
            if entry.failed != message:
                entry.failed = message
                log.warning("pod %s/%s: %s", entry.namespace, entry.name, message)
                await asyncio.to_thread(self._config_error, entry, message)
            return
        entry.failed = ""
        if self.hub.send(entry.device, fp.PodUpsert(pod=pod, generation=self._next_generation())):
            entry.sent = fingerprint(entry.obj)

    def _config_error(self, entry: PodEntry, message: str) -> None:
        waiting = {"waiting": {"reason": "CreateContainerConfigError", "message": message}}
        statuses = [
            {"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0, "state": waiting}
            for c in entry.obj["spec"]["containers"]
        ]
        patch = {"status": {"phase": "Pending", "containerStatuses": statuses}}
        try:
            self._core.patch_namespaced_pod_status(entry.name, entry.namespace, patch)
        except self._errors as exc:
            if exc.status != 404:
                log.warning("cannot write the status of %s/%s: %s", entry.namespace, entry.name, exc)

    def _send_delete(self, entry: PodEntry, grace: Any) -> None:
        message = fp.PodDelete(
            uid=entry.uid,
            namespace=entry.namespace,
            name=entry.name,
            grace_seconds=float(grace) if grace is not None else None,
            generation=self._next_generation(),
        )
        self.hub.send(entry.device, message)

    async def _on_hello(self, device: str, hello: fp.NodeHello) -> None:
        """A new control stream: tell the device its complete desired set."""
        await self.refresh()
        async with self._lock:
            entries = [e for e in self.pods.values() if e.device == device and not e.deleting]
            pods, translated = [], []
            for entry in entries:
                try:
                    pods.append(await asyncio.to_thread(desired_pod, entry.obj, self._resolver))
                    translated.append(entry)
                except Exception as exc:  # left out; refresh retries it and reports the error
                    log.warning("cannot translate pod %s/%s: %s", entry.namespace, entry.name, exc)
            if self.hub.send(device, fp.Sync(generation=self._next_generation(), pods=tuple(pods))):
                for entry in translated:
                    entry.sent = fingerprint(entry.obj)
            for entry in self.pods.values():
                if entry.device == device and entry.deleting:
                    # Sync already drops it; the explicit delete makes the device answer PodDeleted.
                    self._send_delete(entry, entry.obj["metadata"].get("deletionGracePeriodSeconds"))

    async def _on_message(self, device: str, message: Any) -> None:
        """PodDeleted: the containers are gone, so the Pod object can go (the kubelet's last step)."""
        if isinstance(message, fp.PodDeleted):
            await asyncio.to_thread(self._finalize, message)

    def _finalize(self, message: fp.PodDeleted) -> None:
        from kubernetes import client

        try:
            self._core.delete_namespaced_pod(
                message.name,
                message.namespace,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=message.uid)
                ),
            )
        except self._errors as exc:
            if exc.status not in (404, 409):
                raise
