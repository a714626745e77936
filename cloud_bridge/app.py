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

from .admission import Admission
from .devices import DeviceHub
from .events import PodEvents
from .hostpods import HostPods
from .kubelet import KubeletServer, ServerConfig
from .nodes import NodeRegistry, NodeSettings
from .pods import PodSync
from .provider_mqtt import MqttProvider
from .registry import DeviceRegistry
from .services import ServiceProxy, ServiceProxyConfig
from .token_review import TokenReviewAuthorizer


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
    services: ServiceProxyConfig | None = field(default_factory=ServiceProxyConfig)
    """None: devices reach no cluster Services (``service`` streams are refused as not implemented)."""
    auto_register: bool = False
    """Admit a device without an EdgeDevice by creating one (without the CRD: admit every device)."""
    edge_devices: bool | None = None
    """Use the EdgeDevice CRD: None if installed, True required, False never (then only auto_register admits)."""
    registry_poll_seconds: float = 2.0
    host_namespace: str = "edgefleet-system"
    """Where the ``host-<device>`` pods of hostExec devices live (RBAC on pods/exec there guards host access)."""
    token_webhook: bool = False
    """Kubelet API: also accept bearer tokens (TokenReview + SubjectAccessReview), e.g. metrics-server's."""


class Bridge:
    def __init__(self, config: BridgeConfig, api_client: Any) -> None:
        self.config = config
        kwargs = {"session_config": config.session_config} if config.session_config else {}
        self.endpoint: Endpoint = cloud_endpoint(config.broker, replica=config.replica, **kwargs)
        self.registry = NodeRegistry(api_client, config.nodes)
        self.token_authorizer = TokenReviewAuthorizer(api_client) if config.token_webhook else None
        self.hub = DeviceHub(
            self.endpoint,
            self.registry,
            api_client,
            poll=config.presence_poll_seconds,
            heartbeat_min_seconds=config.heartbeat_min_seconds,
        )
        self.pods = PodSync(self.hub, api_client, interval=config.pod_poll_seconds, watch=config.pod_watch)
        self.provider = MqttProvider(self.hub, self.pods)
        self.devices = DeviceRegistry(
            api_client,
            auto_register=config.auto_register,
            use_crd=config.edge_devices,
            interval=config.registry_poll_seconds,
        )
        self.admission = Admission(self.devices, self.registry, self.hub, seen_min_seconds=config.heartbeat_min_seconds)
        self.host_pods = HostPods(api_client, self.devices, self.hub, namespace=config.host_namespace)
        self.provider.host_pods = self.host_pods
        self.events = PodEvents(api_client, self.hub, self.pods)
        self.services = (
            ServiceProxy(self.hub, api_client, config.services, listed=self._listed_services)
            if config.services
            else None
        )
        self.server: KubeletServer | None = None

    def _listed_services(self, device: str) -> frozenset[tuple[str, str]]:
        """Services the device's EdgeDevice grants it (``spec.services``); none without the CRD."""
        config = self.devices.get(device)
        return config.services if config is not None else frozenset()

    @property
    def kubelet_port(self) -> int:
        return self.server.port if self.server else 0

    async def start(self) -> Bridge:
        await self.devices.start()  # first: a missing CRD fails here, before anything listens
        await self.admission.prune_orphans()
        self.hub.require_admission = self.devices.enabled
        if self.config.kubelet is not None:
            ports = self.registry.ports  # per-node ports: which node a node-scoped request is for
            if self.config.kubelet.node_ports != self.config.nodes.kubelet_node_ports:
                raise ValueError("kubelet.node_ports and nodes.kubelet_node_ports must be the same range")
            by_host = self.registry.node_for_hostname if self.config.nodes.hostname_suffix else None
            self.server = KubeletServer(
                self.provider,
                config=self.config.kubelet,
                node_for_port=ports.node_at if ports else None,
                node_for_host=by_host,
                token_authorizer=self.token_authorizer,
            )
            await self.server.start()
        await self.endpoint.start()
        await self.pods.start()
        if self.services is not None:
            await self.services.start()
        await self.host_pods.start()
        await self.hub.start()
        return self

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.hub.close()
        with contextlib.suppress(Exception):
            await self.host_pods.close()
        with contextlib.suppress(Exception):
            await self.devices.close()
        with contextlib.suppress(Exception):
            await self.pods.close()
        if self.services is not None:
            with contextlib.suppress(Exception):
                await self.services.close()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await self.server.close()
        await self.endpoint.close()

    async def __aenter__(self) -> Bridge:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
