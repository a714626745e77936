"""The device registry: which devices may join, and each one's Node labels, taints and features.

An ``EdgeDevice`` (``edgefleet.io/v1alpha1``, cluster-scoped, named after the
device) admits a device; ``--auto-register`` admits unknown devices by
creating one for them. Without the CRD installed, ``--auto-register`` admits
every device with the bridge's defaults (no per-device configuration) and
without it the bridge refuses to start: silently admitting nobody would look
like a broken broker.

Like ``PodSync`` it lists and reconciles, and a watch (``ChangeWatch``)
starts a round as soon as an EdgeDevice changes, so a new one admits its
device at the device's next retry. Changes reach the rest of the bridge
through ``on_change`` hooks.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import fleetproto as fp

from .watch import ChangeWatch, Resync

log = logging.getLogger("cloud_bridge.registry")

GROUP = "edgefleet.io"
VERSION = "v1alpha1"
PLURAL = "edgedevices"
KIND = "EdgeDevice"
CRD_NAME = f"{PLURAL}.{GROUP}"
TAINT_EFFECTS = frozenset({"NoSchedule", "PreferNoSchedule", "NoExecute"})
REJECT_LOG_SECONDS = 60.0
"""A refused device reconnects in a loop: one log line per device per minute."""


class CrdMissing(RuntimeError):
    """The EdgeDevice CRD is not installed but the configuration needs it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceConfig:
    """One EdgeDevice's spec, validated."""

    name: str
    uid: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ()
    host_exec: bool = False
    host_port_forward: bool = False
    secret_ref: tuple[str, str] | None = None
    """``(namespace, name)`` of the broker credentials Secret (for the broker ACL side)."""
    services: frozenset[tuple[str, str]] = frozenset()
    """``(namespace, name)`` of Services granted to this device besides the exposed ones (services.py)."""


def device_config(obj: dict[str, Any]) -> DeviceConfig:
    """Parse an EdgeDevice (a plain dict); ``ValueError`` says which field is wrong.

    The CRD's schema already checks shapes; this guards against objects written
    before a schema change and keeps the rest of the bridge free of ``.get`` chains.
    """
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    if not isinstance(spec, dict):
        raise ValueError("spec must be an object")
    node = spec.get("node") or {}
    labels = node.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise ValueError("spec.node.labels must map strings to strings")
    taints = []
    for i, taint in enumerate(node.get("taints") or []):
        if not isinstance(taint, dict) or not taint.get("key") or taint.get("effect") not in TAINT_EFFECTS:
            raise ValueError(f"spec.node.taints[{i}] needs a key and an effect in {sorted(TAINT_EFFECTS)}")
        entry = {"key": str(taint["key"]), "effect": str(taint["effect"])}
        if taint.get("value"):
            entry["value"] = str(taint["value"])
        taints.append(entry)
    features = spec.get("features") or {}
    ref = (spec.get("credentials") or {}).get("secretRef")
    secret_ref = None
    if ref:
        if not isinstance(ref, dict) or not ref.get("name"):
            raise ValueError("spec.credentials.secretRef needs a name")
        secret_ref = (str(ref.get("namespace") or "default"), str(ref["name"]))
    services = set()
    for i, entry in enumerate(spec.get("services") or []):
        if not isinstance(entry, dict) or not entry.get("name"):
            raise ValueError(f"spec.services[{i}] needs a name")
        services.add((str(entry.get("namespace") or "default"), str(entry["name"])))
    return DeviceConfig(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        labels=dict(labels),
        taints=tuple(taints),
        host_exec=features.get("hostExec") is True,
        host_port_forward=features.get("hostPortForward") is True,
        secret_ref=secret_ref,
        services=frozenset(services),
    )


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(type_: str, ok: bool, reason: str, message: str) -> dict[str, str]:
    return {
        "type": type_,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": _now(),
    }


def status_patch(
    *,
    online: bool,
    reason: str,
    message: str,
    info: fp.NodeInfo | None = None,
    node_name: str = "",
    others: tuple[dict[str, str], ...] = (),
) -> dict[str, Any]:
    """The EdgeDevice status (merge patch) for a device going online or offline (``others``: more conditions)."""
    status: dict[str, Any] = {
        "online": online,
        "lastSeen": _now(),
        "conditions": [condition("Online", online, reason, message), *others],
    }
    if info is not None:
        status["agentVersion"] = info.agent_version or "unknown"
    if node_name:
        status["nodeName"] = node_name
    return {"status": status}


ChangeHook = Callable[[str, DeviceConfig | None, DeviceConfig | None], Awaitable[None]]
"""``(device, old, new)``: new is None when the EdgeDevice was deleted, old None when created."""


class DeviceRegistry:
    """The admitted devices, kept in step with the EdgeDevice objects."""

    def __init__(
        self,
        api_client: Any,
        *,
        auto_register: bool = False,
        use_crd: bool | None = None,
        interval: float = 2.0,
    ) -> None:
        from kubernetes import client

        self._custom: Any = client.CustomObjectsApi(api_client)
        self._core: Any = client.CoreV1Api(api_client)
        self._ext: Any = client.ApiextensionsV1Api(api_client)
        self._api = api_client
        self._errors = client.exceptions.ApiException
        self.auto_register = auto_register
        self.use_crd = use_crd
        """None: use the CRD if installed; False: never (admit all, only with auto_register)."""
        self.interval = interval
        self.devices: dict[str, DeviceConfig] = {}
        self.on_change: list[ChangeHook] = []
        self.counters: Counter[str] = Counter()
        self._last_reject_log: dict[str, float] = {}
        self._resync: Resync | None = None
        self._lock = asyncio.Lock()
        self._online: dict[str, dict[str, str]] = {}
        self._found_at: dict[str, float] = {}
        """When ``admit`` read a device's EdgeDevice itself (a list taken earlier does not know it yet)."""
        self._credentials: dict[str, dict[str, str]] = {}
        """The ``CredentialsFound`` condition of devices with a ``credentials.secretRef``."""

    @property
    def enabled(self) -> bool:
        """True when EdgeDevices decide admission (the CRD is in use)."""
        return bool(self.use_crd)

    def get(self, device: str) -> DeviceConfig | None:
        return self.devices.get(device)

    async def start(self) -> None:
        if self.use_crd is False and not self.auto_register:
            raise ValueError("without the EdgeDevice CRD only --auto-register can admit devices")
        installed = await asyncio.to_thread(self._crd_installed)
        if self.use_crd is None:
            self.use_crd = installed
        if self.use_crd and not installed:
            raise CrdMissing(f"the CustomResourceDefinition {CRD_NAME} is not installed (charts/edgefleet/crds/)")
        if not self.use_crd:
            if not self.auto_register:
                raise CrdMissing(
                    f"the CustomResourceDefinition {CRD_NAME} is not installed (charts/edgefleet/crds/): "
                    "install it, or run with --auto-register to admit every device"
                )
            log.warning("EdgeDevice CRD not in use: every device is admitted with the default node settings")
            return
        self._resync = Resync(
            self.refresh,
            interval=self.interval,
            name="registry",
            watch=ChangeWatch(
                self._custom.list_cluster_custom_object, PLURAL, group=GROUP, version=VERSION, plural=PLURAL
            ),
            on_error=self._refresh_failed,
        )
        await self._resync.start()

    async def close(self) -> None:
        if self._resync is not None:
            await self._resync.close()

    def _crd_installed(self) -> bool:
        if self.use_crd is False:
            return False
        try:
            self._ext.read_custom_resource_definition(CRD_NAME)
        except self._errors as exc:
            if exc.status == 404:
                return False
            if exc.status == 403:
                # No permission to read CRDs: fall back on listing the resource itself.
                try:
                    self._custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=1)
                except self._errors as inner:
                    if inner.status == 404:
                        return False
                    raise
                return True
            raise
        return True

    def _refresh_failed(self, exc: Exception) -> None:
        self.counters["refresh_errors"] += 1
        log.error("EdgeDevice refresh failed", exc_info=exc)

    def _list(self) -> list[dict[str, Any]]:
        result = self._custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        return list(result.get("items") or [])

    def _parse(self, obj: dict[str, Any]) -> DeviceConfig | None:
        try:
            return device_config(obj)
        except ValueError as exc:
            self.counters["invalid_edgedevices"] += 1
            log.warning("EdgeDevice %s is invalid and ignored: %s", (obj.get("metadata") or {}).get("name"), exc)
            return None

    async def refresh(self) -> None:
        """One round: read every EdgeDevice and tell the hooks what changed."""
        started = time.monotonic()
        listed = await asyncio.to_thread(self._list)
        async with self._lock:
            current: dict[str, DeviceConfig] = {}
            for obj in listed:
                config = self._parse(obj)
                if config is not None and config.name:
                    current[config.name] = config
            for name, config in self.devices.items():
                if name not in current and self._found_at.get(name, 0.0) > started:
                    current[name] = config  # admit() found it after this list was taken
            changes: list[tuple[str, DeviceConfig | None, DeviceConfig | None]] = []
            for name in set(self.devices) | set(current):
                old, new = self.devices.get(name), current.get(name)
                if old != new:
                    changes.append((name, old, new))
            self.devices = current
        for name, old, new in changes:
            await self._notify(name, old, new)
            if new is None:
                self._found_at.pop(name, None)
                self._online.pop(name, None)
                self._credentials.pop(name, None)
            elif old is None or old.secret_ref != new.secret_ref:
                await self._check_credentials(new)
        changed = {name for name, _old, _new in changes}
        for name, cond in list(self._credentials.items()):
            config = self.devices.get(name)
            if cond["status"] == "False" and config is not None and name not in changed:
                await self._check_credentials(config)  # the Secret may have been created since

    async def _check_credentials(self, config: DeviceConfig) -> None:
        """The bridge only checks the Secret exists (the broker side uses it); the result is a status condition."""
        if config.secret_ref is None:
            self._credentials.pop(config.name, None)
            return
        namespace, name = config.secret_ref
        try:
            await asyncio.to_thread(self._core.read_namespaced_secret, name, namespace)
            cond = condition("CredentialsFound", True, "SecretFound", f"Secret {namespace}/{name} exists")
        except self._errors as exc:
            why = "not found" if exc.status == 404 else f"cannot be read ({exc.status} {exc.reason})"
            cond = condition("CredentialsFound", False, "SecretMissing", f"Secret {namespace}/{name} {why}")
        old = self._credentials.get(config.name)
        self._credentials[config.name] = cond
        if old is not None and (old["status"], old["message"]) == (cond["status"], cond["message"]):
            return  # unchanged: no status write (nor log line) per poll
        if cond["status"] == "False":
            log.warning("EdgeDevice %s: %s", config.name, cond["message"])
        await self._patch_status(config.name, {"status": {"conditions": self._conditions(config.name)}})

    def _conditions(self, device: str) -> list[dict[str, str]]:
        return [c for c in (self._online.get(device), self._credentials.get(device)) if c is not None]

    async def _notify(self, name: str, old: DeviceConfig | None, new: DeviceConfig | None) -> None:
        for hook in self.on_change:
            try:
                await hook(name, old, new)
            except Exception:
                log.exception("EdgeDevice %s change hook failed", name)

    # ------------------------------------------------------------------ admission

    async def admit(self, device: str, hello: fp.NodeHello) -> str | None:
        """None if ``device`` may join, else why not (sent to the device, logged).

        A refused device costs no API call (it retries every few seconds, and
        there may be many): the cache, refreshed every poll, decides. A new
        EdgeDevice therefore admits its device at its next retry after a poll.
        """
        if not self.enabled:
            return None
        if device in self.devices:
            return None
        obj = None
        if self.auto_register:
            obj, created = await asyncio.to_thread(self._create, device)
            if created:
                self.counters["auto_registered"] += 1
                log.info("auto-registered device %s (EdgeDevice created)", device)
        if obj is not None:
            config = self._parse(obj)
            if config is not None:
                async with self._lock:
                    known = device in self.devices
                    self.devices[device] = config
                    self._found_at[device] = time.monotonic()
                if not known:
                    await self._notify(device, None, config)
                    await self._check_credentials(config)
                return None
        self.counters["rejected"] += 1
        now = time.monotonic()
        if now - self._last_reject_log.get(device, float("-inf")) >= REJECT_LOG_SECONDS:
            self._last_reject_log[device] = now
            if len(self._last_reject_log) > 10000:  # bounded: forget the oldest entries
                for key in list(self._last_reject_log)[:5000]:
                    del self._last_reject_log[key]
            log.warning(
                "refused device %s: no EdgeDevice of that name (%d refusals so far)", device, self.counters["rejected"]
            )
        return (
            f"device {device!r} is not registered: create the EdgeDevice {device!r} "
            "(or run the bridge with --auto-register)"
        )

    def _read(self, device: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self._custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, device)
            return obj
        except self._errors as exc:
            if exc.status == 404:
                return None
            raise

    def _create(self, device: str) -> tuple[dict[str, Any] | None, bool]:
        """The EdgeDevice (made now, or found existing) and whether this call created it."""
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": device, "labels": {"edgefleet.io/auto-registered": "true"}},
            "spec": {},
        }
        try:
            obj: dict[str, Any] = self._custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
            return obj, True
        except self._errors as exc:
            if exc.status == 409:
                return self._read(device), False
            raise

    # ------------------------------------------------------------------ status

    async def seen(self, device: str) -> None:
        """A heartbeat: only ``lastSeen`` moves (the Online condition keeps its transition time)."""
        await self._patch_status(device, {"status": {"online": True, "lastSeen": _now()}})

    async def write_status(
        self, device: str, *, online: bool, reason: str, message: str, info: fp.NodeInfo | None = None
    ) -> None:
        """Best effort: a missing EdgeDevice (deleted meanwhile) or an error is logged, never raised."""
        credentials = self._credentials.get(device)
        patch = status_patch(
            online=online,
            reason=reason,
            message=message,
            info=info,
            node_name=device,
            others=(credentials,) if credentials else (),
        )
        self._online[device] = patch["status"]["conditions"][0]
        await self._patch_status(device, patch)

    async def _patch_status(self, device: str, patch: dict[str, Any]) -> None:
        if not self.enabled or device not in self.devices:
            return
        try:
            await asyncio.to_thread(
                self._custom.patch_cluster_custom_object_status, GROUP, VERSION, PLURAL, device, patch
            )
        except self._errors as exc:
            if exc.status != 404:
                self.counters["status_errors"] += 1
                log.warning("cannot write the status of EdgeDevice %s: %s", device, exc)
