"""Runs a real ``cloud_bridge.app.Bridge`` on an event loop in a thread, so tests
can drive blocking tools (kubectl, sockets) meanwhile; ``stop()`` is bounded."""

from __future__ import annotations

import asyncio

from cloud_bridge.app import Bridge, BridgeConfig
from tests.support.loopthread import LoopThread


class BridgeThread(LoopThread):
    name = "cloud-bridge"

    def __init__(self, config: BridgeConfig, kubeconfig: str) -> None:
        self.config = config
        self.kubeconfig = kubeconfig
        self.bridge: Bridge | None = None
        super().__init__()

    async def setup(self) -> None:
        import kubernetes

        api = kubernetes.config.new_client_from_config(config_file=self.kubeconfig)
        self.bridge = Bridge(self.config, api)
        await self.bridge.start()

    async def teardown(self) -> None:
        if self.bridge is not None:
            await asyncio.wait_for(self.bridge.close(), 20)
