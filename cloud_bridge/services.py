"""Cluster Services for devices: send each device its ``ServiceTable``, serve its ``service`` streams.

* A poller lists exposed Services (label ``edgefleet.io/expose=true``) and the
  Endpoints/EndpointSlices of their namespaces every ``interval`` seconds
  (bounded, one list per kind and namespace, never per device), builds a
  ``Catalog`` and sends every connected device its table when it changed -
  and on every ``NodeHello``, since a reconnected device starts empty.
* A ``service`` stream is one TCP connection a program on the device made.
  The grant is checked again here (a device may lie), a ready endpoint is
  picked (random order, the next one on refusal), and bytes are piped both
  ways with backpressure and half-close (``seqstream.mqtt.tcp.pipe``).

Refusals are RESET codes: 0x403 not granted, 0x503 no ready endpoint, 0x502
refused or broken, 0x504 connect timeout. Each is counted in ``stats`` and
logged at most ``LOG_BURST`` times per ``LOG_WINDOW`` per kind, so a device
hammering a refused Service cannot flood the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fleetproto as fp
from seqstream.mqtt import Stream
from seqstream.mqtt.tcp import READ_SIZE, pipe

from .devices import DeviceHub
from .service_catalog import LABEL_EXPOSE, LABEL_SLICE_SERVICE, Catalog, build_catalog
from .watch import Resync

log = logging.getLogger("cloud_bridge.services")

LOG_WINDOW = 60.0
LOG_BURST = 10
MAX_ATTEMPTS = 3
"""Endpoints tried per connection when one refuses."""


@dataclass(frozen=True, kw_only=True)
class ServiceProxyConfig:
    interval: float = 2.0
    """Seconds between polls of Services and Endpoints."""
    connect_timeout: float = 5.0


class RateLimitedLog:
    """At most ``burst`` lines per ``window`` seconds per key; the rest only counted."""

    def __init__(self, logger: logging.Logger, *, burst: int = LOG_BURST, window: float = LOG_WINDOW) -> None:
        self.logger = logger
        self.burst = burst
        self.window = window
        self._windows: dict[str, tuple[float, int]] = {}

    def __call__(self, key: str, level: int, message: str, *args: Any) -> None:
        now = time.monotonic()
        start, count = self._windows.get(key, (now, 0))
        if now - start > self.window:
            if count > self.burst:
                self.logger.log(level, "%d more %s message(s) suppressed", count - self.burst, key)
            start, count = now, 0
        count += 1
        self._windows[key] = (start, count)
        if count <= self.burst:
            self.logger.log(level, message, *args)


class ServiceProxy:
    def __init__(
        self,
        hub: DeviceHub,
        api_client: Any | None,
        config: ServiceProxyConfig | None = None,
        *,
        listed: Callable[[str], frozenset[tuple[str, str]]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.hub = hub
        self._listed = listed or (lambda device: frozenset())
        """The Services a device's EdgeDevice lists (``spec.services``), granted to it besides the exposed ones."""
        self.config = config or ServiceProxyConfig()
        self.api_client = api_client
        self.catalog: Catalog | None = None
        """None until the first poll succeeded (or ``set_catalog``)."""
        self.stats: Counter[str] = Counter()
        self._sent: dict[str, fp.ServiceTable] = {}
        self._listed_at: dict[str, frozenset[tuple[str, str]]] = {}
        self._rng = rng or random.Random()
        self._log = RateLimitedLog(log)
        self._resync = Resync(self._poll, interval=self.config.interval, name="services", on_error=self._poll_failed)
        self._slices_ok = True
        self.polled = asyncio.Event()
        hub.stream_handlers[fp.StreamKind.SERVICE] = self.serve
        hub.on_hello.append(self._on_hello)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self.api_client is not None:
            await self._resync.start(refresh_first=False)

    async def close(self) -> None:
        await self._resync.close()

    # ------------------------------------------------------------------ tables

    def set_catalog(self, catalog: Catalog) -> None:
        """Use ``catalog`` and send every connected device whose table changed.

        Tables are recomputed only for devices that may have a new one (the Services changed,
        the device's EdgeDevice list changed, or it has none yet): a poll costs O(devices), not
        O(devices x services), when nothing changed.
        """
        old, self.catalog = self.catalog, catalog
        for problem in catalog.problems:
            self._log("catalog", logging.WARNING, "skipping %s", problem)
        for device in [d for d in self._sent if d not in self.hub.controls]:
            del self._sent[device]
            self._listed_at.pop(device, None)
        services_changed = old is None or old.services != catalog.services
        for device in list(self.hub.controls):
            if not self._admitted(device):
                continue
            listed = self._listed(device)
            if services_changed or device not in self._sent or self._listed_at.get(device) != listed:
                self._listed_at[device] = listed
                self._send_table(device)

    def _admitted(self, device: str) -> bool:
        """Whether the hub admitted the device (hubs without admission admit every device)."""
        admitted = getattr(self.hub, "admitted", None)
        return admitted is None or device in admitted

    def _send_table(self, device: str, *, force: bool = False) -> None:
        if self.catalog is None:
            return
        table = self.catalog.table_for(device, self._listed(device))
        if not force and self._sent.get(device) == table:
            return
        if self.hub.send(device, table):
            self._sent[device] = table
            self.stats["tables_sent"] += 1
            log.info("%s may reach %d service(s)", device, len(table.services))

    async def _on_hello(self, device: str, hello: fp.NodeHello) -> None:
        self._send_table(device, force=True)

    async def _poll(self) -> None:
        listed: set[tuple[str, str]] = set()
        for device in self.hub.controls:
            listed |= self._listed(device)
        catalog = await asyncio.to_thread(self._list, listed)
        self.set_catalog(catalog)
        self.polled.set()

    def _poll_failed(self, exc: Exception) -> None:
        """The apiserver is away: keep the last catalog."""
        self.stats["poll_errors"] += 1
        self._log("poll", logging.WARNING, "listing services failed: %s", exc)

    def _list(self, listed: set[tuple[str, str]]) -> Catalog:
        """Exposed Services, those in ``listed`` (EdgeDevices' lists), and their endpoints. Blocking."""
        from kubernetes import client

        core = client.CoreV1Api(self.api_client)
        services = _items(
            core.list_service_for_all_namespaces(label_selector=f"{LABEL_EXPOSE}=true", _preload_content=False)
        )
        have = {(s["metadata"]["namespace"], s["metadata"]["name"]) for s in services}
        missing = listed - have  # named by an EdgeDevice but not labelled: list their namespaces (RBAC: list only)
        for namespace in sorted({ns for ns, _ in missing}):
            for obj in _items(core.list_namespaced_service(namespace, _preload_content=False)):
                if (namespace, obj["metadata"]["name"]) in missing:
                    services.append(obj)
        namespaces = sorted({s["metadata"]["namespace"] for s in services})
        endpoints: list[dict[str, Any]] = []
        slices: list[dict[str, Any]] = []
        discovery = client.DiscoveryV1Api(self.api_client)
        for namespace in namespaces:
            endpoints += _items(core.list_namespaced_endpoints(namespace, _preload_content=False))
            if self._slices_ok:
                names = ",".join(
                    sorted({s["metadata"]["name"] for s in services if s["metadata"]["namespace"] == namespace})
                )
                try:
                    slices += _items(
                        discovery.list_namespaced_endpoint_slice(
                            namespace, label_selector=f"{LABEL_SLICE_SERVICE} in ({names})", _preload_content=False
                        )
                    )
                except client.exceptions.ApiException as exc:
                    if exc.status not in (403, 404):
                        raise
                    self._slices_ok = False  # no permission or no API: Endpoints alone
        return build_catalog(services, endpoints, slices, listed=listed)

    # ------------------------------------------------------------------ streams

    async def serve(self, stream: Stream, request: fp.ServiceOpen) -> None:
        device = stream.peer_name
        where = f"{request.namespace}/{request.service}:{request.port}"
        self.stats["streams"] += 1
        if not self._admitted(device):
            self._refuse(stream, device, fp.AppError.FORBIDDEN, f"{device} is not an admitted device")
            return
        if self.catalog is None:
            self._refuse(stream, device, fp.AppError.UNAVAILABLE, "the bridge has not listed services yet")
            return
        target = self.catalog.resolve(device, request.namespace, request.service, request.port, self._listed(device))
        if target.refusal is not None:
            self._refuse(stream, device, *target.refusal)
            return
        addresses = list(target.addresses)
        self._rng.shuffle(addresses)
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        failure: tuple[int, str] = (fp.AppError.BAD_GATEWAY, f"no endpoint of {where} answered")
        for host, port in addresses[:MAX_ATTEMPTS]:
            try:
                async with asyncio.timeout(self.config.connect_timeout):  # no extra task, unlike wait_for
                    connection = await asyncio.open_connection(host, port, limit=READ_SIZE)
                break
            except TimeoutError:
                failure = (fp.AppError.GATEWAY_TIMEOUT, f"connecting to {where} ({host}:{port}) timed out")
            except OSError as exc:
                failure = (fp.AppError.BAD_GATEWAY, f"connecting to {where} ({host}:{port}): {exc.strerror or exc}")
        if connection is None:
            self._refuse(stream, device, *failure)
            return
        self.stats["connections"] += 1
        reader, writer = connection
        result = await pipe(stream, reader, writer, tcp_error_code=fp.AppError.BAD_GATEWAY)
        self.stats["bytes_from_devices"] += result.to_socket
        self.stats["bytes_to_devices"] += result.to_stream
        if not result.clean:
            self.stats["connections_aborted"] += 1
            self._log(
                "aborted", logging.INFO, "%s -> %s aborted: %s", device, where, result.reset or result.socket_error
            )

    def _refuse(self, stream: Stream, device: str, code: int, reason: str) -> None:
        name = fp.codes.describe(code).lower()
        self.stats[f"refused_{name}"] += 1
        self._log(name, logging.WARNING if code == fp.AppError.FORBIDDEN else logging.INFO, "%s: %s", device, reason)
        stream.reset(code, reason)


def _items(response: Any) -> list[dict[str, Any]]:
    """``items`` of a raw (``_preload_content=False``) list response, as the apiserver's camelCase dicts."""
    data = json.loads(response.data)
    return list(data.get("items") or [])
