"""The bridge assembled: one MQTT endpoint, devices -> Nodes, Pods -> devices, kubelet API.

``Bridge`` owns every part's lifetime so ``main()`` and tests start and stop
the same thing.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass, field
from typing import Any

from seqstream import SessionConfig
from seqstream.mqtt import BrokerConfig, Endpoint, cloud_endpoint

from .devices import DeviceHub
from .kubelet import KubeletServer, ServerConfig
from .nodes import NodeRegistry, NodeSettings
from .pods import PodSync
from .provider_mqtt import MqttProvider


@dataclass(kw_only=True)
class BridgeConfig:
    broker: BrokerConfig
    nodes: NodeSettings
    kubelet: ServerConfig | None
    """None: no kubelet API server (Nodes and Pods only)."""
    replica: str = field(default_factory=lambda: f"bridge-{uuid.uuid4().hex[:6]}")
    session_config: SessionConfig | None = None
    pod_poll_seconds: float = 10.0
    """Full pod list at least this often; a watch triggers one as soon as a pod changes."""
    pod_watch: bool = True
    presence_poll_seconds: float = 0.5
    heartbeat_min_seconds: float = 10.0
    """Lease/Ready heartbeats written at most this often per device (lease is 40 s)."""


class Bridge:
    def __init__(self, config: BridgeConfig, api_client: Any) -> None:
        self.config = config
        kwargs = {"session_config": config.session_config} if config.session_config else {}
        self.endpoint: Endpoint = cloud_endpoint(config.broker, replica=config.replica, **kwargs)
        self.registry = NodeRegistry(api_client, config.nodes)
        self.hub = DeviceHub(
            self.endpoint,
            self.registry,
            api_client,
            poll=config.presence_poll_seconds,
            heartbeat_min_seconds=config.heartbeat_min_seconds,
        )
        self.pods = PodSync(self.hub, api_client, interval=config.pod_poll_seconds, watch=config.pod_watch)
        self.provider = MqttProvider(self.hub, self.pods)
        self.server: KubeletServer | None = None

    @property
    def kubelet_port(self) -> int:
        return self.server.port if self.server else 0

    async def start(self) -> Bridge:
        if self.config.kubelet is not None:
            self.server = KubeletServer(self.provider, config=self.config.kubelet)
            await self.server.start()
        await self.endpoint.start()
        await self.pods.start()
        await self.hub.start()
        return self

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.hub.close()
        with contextlib.suppress(Exception):
            await self.pods.close()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await self.server.close()
        await self.endpoint.close()

    async def __aenter__(self) -> Bridge:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
