"""Wires the device registry into the device hub and the node registry.

* admission: a device's NodeHello passes ``DeviceRegistry.admit`` or its
  control stream is reset with FORBIDDEN and no Node is made;
* an EdgeDevice's labels and taints go onto its Node, and follow edits;
* a deleted EdgeDevice takes its Node and Lease with it and drops the device,
  also when it was deleted while the bridge was down (``prune_orphans`` at start);
* the EdgeDevice status follows the device (online, lastSeen, agentVersion, nodeName).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import fleetproto as fp

from .devices import DeviceHub
from .nodes import NodeRegistry
from .registry import DeviceConfig, DeviceRegistry

log = logging.getLogger("cloud_bridge.admission")


class Admission:
    def __init__(
        self, registry: DeviceRegistry, nodes: NodeRegistry, hub: DeviceHub, *, seen_min_seconds: float = 10.0
    ) -> None:
        self.registry = registry
        self.nodes = nodes
        self.hub = hub
        self._seen_min = seen_min_seconds
        self._last_seen: dict[str, float] = {}
        hub.admit = registry.admit
        registry.on_change.append(self._on_change)
        hub.on_hello.append(self._on_hello)
        hub.on_message.append(self._on_message)
        hub.on_offline.append(self._on_offline)

    async def prune_orphans(self) -> list[str]:
        """Delete this bridge's Nodes whose EdgeDevice is gone (deleted while we were down)."""
        if not self.registry.enabled:
            return []  # no EdgeDevices to compare with
        orphans = [n for n in await self.nodes.owned_nodes() if self.registry.get(n) is None]
        for device in orphans:
            log.info("EdgeDevice %s is gone: removing its Node and Lease", device)
            await self.nodes.remove(device)
        return orphans

    async def _on_change(self, device: str, old: DeviceConfig | None, new: DeviceConfig | None) -> None:
        if new is None:
            log.info("EdgeDevice %s deleted: removing its Node and Lease, dropping the device", device)
            self.hub.admitted.discard(device)  # its stream's end must not write an offline status
            self.hub.drop(device, f"EdgeDevice {device} was deleted")
            await self.nodes.remove(device)
            return
        self.nodes.device_node[device] = (dict(new.labels), tuple(new.taints))
        if old is not None and (old.labels, old.taints) != (new.labels, new.taints):
            await self.nodes.reconfigure(device)

    async def _on_hello(self, device: str, hello: fp.NodeHello) -> None:
        self._last_seen[device] = asyncio.get_running_loop().time()
        await self.registry.write_status(
            device, online=True, reason="DeviceConnected", message="control stream open", info=hello.node
        )

    async def _on_message(self, device: str, message: Any) -> None:
        if not isinstance(message, fp.NodeStatus):
            return
        now = asyncio.get_running_loop().time()
        if now - self._last_seen.get(device, float("-inf")) >= self._seen_min:
            self._last_seen[device] = now
            await self.registry.seen(device)

    async def _on_offline(self, device: str, reason: str) -> None:
        self._last_seen.pop(device, None)
        await self.registry.write_status(device, online=False, reason="DeviceOffline", message=reason)
