"""Device presence and control streams: the fleet side of the bridge.

One cloud seqstream endpoint (one MQTT connection) serves every device. Each
device opens a ``control`` stream; its ``NodeHello`` makes the device a Ready
Node, ``NodeStatus`` heartbeats it, ``PodStatusReport`` is written into the
Pod's status, and the end of the stream or an offline presence makes the Node
NotReady. Other modules hook in through ``on_hello`` / ``on_message`` so this
one knows nothing about desired pods, and through ``stream_handlers`` to serve
other stream kinds a device opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import fleetproto as fp
from seqstream.mqtt import Endpoint, Stream

from .nodes import NodeRegistry

log = logging.getLogger("cloud_bridge.devices")

HelloHook = Callable[[str, fp.NodeHello], Awaitable[None]]
MessageHook = Callable[[str, Any], Awaitable[None]]
StreamHandler = Callable[[Stream, Any], Awaitable[None]]
"""Serves one device-opened stream: ``(stream, parsed open request)``."""
AdmitHook = Callable[[str, fp.NodeHello], Awaitable[str | None]]
"""None admits the device; a string refuses it (the reason its control stream is reset with)."""
OfflineHook = Callable[[str, str], Awaitable[None]]
"""``(device, reason)`` after an admitted device's control stream ended."""


def _time(value: float | None) -> str | None:
    if value is None:
        return None
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _state(state: fp.ContainerState | None) -> dict[str, Any]:
    if state is None:
        return {}
    kind = state.kind.value
    body: dict[str, Any] = {}
    if kind == "waiting":
        body = {"reason": state.reason or None, "message": state.message or None}
    elif kind == "running":
        body = {"startedAt": _time(state.started_at)}
    else:
        body = {
            "exitCode": state.exit_code,
            "signal": state.signal,
            "reason": state.reason or None,
            "message": state.message or None,
            "startedAt": _time(state.started_at),
            "finishedAt": _time(state.finished_at),
            "containerID": state.container_id or None,
        }
    return {kind: {k: v for k, v in body.items() if v is not None}}


def pod_status_patch(report: fp.PodStatusReport) -> dict[str, Any]:
    """The Kubernetes PodStatus (as a merge patch) for a device's report."""
    status: dict[str, Any] = {
        "phase": report.phase.value,
        "conditions": [
            {
                k: v
                for k, v in {
                    "type": c.type,
                    "status": c.status.value,
                    "reason": c.reason or None,
                    "message": c.message or None,
                    "lastTransitionTime": _time(c.last_transition),
                }.items()
                if v is not None
            }
            for c in report.conditions
        ],
        "containerStatuses": [
            {
                "name": s.name,
                "state": _state(s.state),
                "lastState": _state(s.last_state),
                "ready": s.ready,
                "started": s.started,
                "restartCount": s.restart_count,
                "image": s.image or "unknown",
                "imageID": s.image_id,
                **({"containerID": s.container_id} if s.container_id else {}),
            }
            for s in report.container_statuses
        ],
        "reason": report.reason or None,
        "message": report.message or None,
    }
    if report.pod_ip:
        status["podIP"] = report.pod_ip
        status["podIPs"] = [{"ip": report.pod_ip}]
    if report.host_ip:
        status["hostIP"] = report.host_ip
    if report.start_time is not None:
        status["startTime"] = _time(report.start_time)
    return {"status": status}


class DeviceHub:
    """Accepts control streams and keeps one current control stream per device."""

    def __init__(
        self,
        endpoint: Endpoint,
        registry: NodeRegistry,
        api_client: Any,
        *,
        poll: float = 0.5,
        heartbeat_min_seconds: float = 10.0,
    ) -> None:
        from kubernetes import client

        self.endpoint = endpoint
        self.registry = registry
        self._core: Any = client.CoreV1Api(api_client)
        self._errors = client.exceptions.ApiException
        self.controls: dict[str, Stream] = {}
        self.on_hello: list[HelloHook] = []
        self.on_message: list[MessageHook] = []
        self.stream_handlers: dict[fp.StreamKind, StreamHandler] = {}
        """Device-opened stream kinds besides ``control``, by kind."""
        self.admit: AdmitHook | None = None
        self.on_offline: list[OfflineHook] = []
        self.admitted: set[str] = set()
        """Devices whose current control stream passed ``admit``."""
        self.require_admission = False
        """True (EdgeDevices in use): device-opened streams of devices not in ``admitted`` are refused."""
        self._poll = poll
        self._heartbeat_min = heartbeat_min_seconds
        self._last_heartbeat: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: list[asyncio.Task[None]] = []

    def online(self, device: str) -> bool:
        """True while the device has an admitted control stream and its presence is not offline."""
        if device not in self.controls or device not in self.admitted:
            return False
        return self.endpoint.session(device).online is not False

    def send(self, device: str, message: Any) -> bool:
        """Send a control message; False if the device has no control stream now."""
        stream = self.controls.get(device)
        if stream is None:
            return False
        try:
            stream.write(fp.frame(message))
        except Exception as exc:  # a reset/closed stream: the device will reconnect
            log.info("cannot send %s to %s: %s", type(message).__name__, device, exc)
            return False
        return True

    def drop(self, device: str, reason: str, code: int = fp.AppError.FORBIDDEN) -> None:
        """End the device's control stream (it reconnects and is admitted again, or not)."""
        stream = self.controls.get(device)
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.reset(code, reason)

    async def start(self) -> None:
        self._main = [
            asyncio.create_task(self._accept(), name="bridge-accept"),
            asyncio.create_task(self._watch_presence(), name="bridge-presence"),
        ]

    async def close(self) -> None:
        for task in [*self._main, *self._tasks]:
            task.cancel()
        for task in [*self._main, *self._tasks]:
            with contextlib.suppress(BaseException):
                await task

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self) -> None:
        while True:
            stream = await self.endpoint.accept()
            try:
                request = fp.parse_open(stream.metadata)
            except fp.FleetProtoError as exc:
                stream.reset(fp.AppError.BAD_REQUEST, str(exc))
                continue
            if isinstance(request, fp.ControlOpen):
                self._spawn(self._serve(stream), f"bridge-control-{stream.peer_name}")
                continue
            if self.require_admission and stream.peer_name not in self.admitted:
                stream.reset(fp.AppError.FORBIDDEN, "device not admitted (no EdgeDevice, or its NodeHello is pending)")
                continue
            handler = self.stream_handlers.get(request.kind)
            if handler is None:
                stream.reset(fp.AppError.NOT_IMPLEMENTED, f"the cloud does not serve {request.kind} streams")
                continue
            self._spawn(self._serve_other(handler, stream, request), f"bridge-{request.kind}-{stream.peer_name}")

    async def _serve_other(self, handler: StreamHandler, stream: Stream, request: Any) -> None:
        try:
            await handler(stream, request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s stream from %s failed", request.kind, stream.peer_name)
            if not stream.finished:
                with contextlib.suppress(Exception):
                    stream.reset(fp.AppError.INTERNAL, f"bridge error: {exc}")

    async def _serve(self, stream: Stream) -> None:
        device = stream.peer_name
        old = self.controls.get(device)
        self.controls[device] = stream
        if old is not None and old is not stream:
            with contextlib.suppress(Exception):
                old.reset(fp.AppError.CONFLICT, "replaced by a newer control stream")
        decoder = fp.MessageDecoder()
        reason = "control stream closed by the device"
        try:
            async for chunk in stream:
                decoder.feed(chunk)
                while True:
                    try:
                        raw = decoder.next_message()
                        if raw is None:
                            break
                        message = fp.decode(raw, sender="device")
                    except fp.MessageTooLarge:
                        raise
                    except fp.MessageError as exc:
                        log.warning("bad message from %s: %s", device, exc)
                        continue
                    await self._handle(device, message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = f"control stream ended: {exc}"
        finally:
            if self.controls.get(device) is stream:
                del self.controls[device]
                log.info("%s: %s", device, reason)
                if device in self.admitted:
                    self.admitted.discard(device)
                    with contextlib.suppress(Exception):
                        await asyncio.shield(self.registry.device_offline(device, reason))
                    for hook in self.on_offline:
                        with contextlib.suppress(Exception):
                            await asyncio.shield(hook(device, reason))

    async def _handle(self, device: str, message: Any) -> None:
        try:
            if isinstance(message, fp.NodeHello):
                refusal = await self.admit(device, message) if self.admit is not None else None
                if refusal is not None:
                    self.admitted.discard(device)
                    self.drop(device, refusal)
                    return
                self.admitted.add(device)
                await self.registry.device_online(device, message.node)
                self._last_heartbeat[device] = asyncio.get_running_loop().time()
                for hook in self.on_hello:
                    await hook(device, message)
            elif device not in self.admitted:
                return  # nothing from a refused device (or before its NodeHello) reaches the cluster
            elif isinstance(message, fp.NodeStatus):
                # Rate-limited: a chatty device must not cost the apiserver three writes a second.
                now = asyncio.get_running_loop().time()
                if now - self._last_heartbeat.get(device, float("-inf")) >= self._heartbeat_min:
                    self._last_heartbeat[device] = now
                    await self.registry.heartbeat(device)
            elif isinstance(message, fp.PodStatusReport):
                await asyncio.to_thread(self._write_status, message)
            for hook in self.on_message:
                await hook(device, message)
        except Exception:
            log.exception("handling %s from %s failed", type(message).__name__, device)

    def _write_status(self, report: fp.PodStatusReport) -> None:
        try:
            pod = self._core.read_namespaced_pod(report.name, report.namespace)
            if pod.metadata.uid != report.uid:
                return  # a newer pod of the same name: not ours to write
            self._core.patch_namespaced_pod_status(report.name, report.namespace, pod_status_patch(report))
        except self._errors as exc:
            if exc.status != 404:
                raise

    async def _watch_presence(self) -> None:
        """Presence offline (the device's will) ends its control stream here, fast."""
        while True:
            await asyncio.sleep(self._poll)
            for device, stream in list(self.controls.items()):
                if self.endpoint.session(device).online is False:
                    with contextlib.suppress(Exception):
                        stream.reset(fp.AppError.UNAVAILABLE, "device presence went offline")
