from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

from seqstream import SessionConfig, StreamResetError
from seqstream.mqtt import BrokerConfig, Endpoint, cloud_endpoint, device_endpoint
from tests.support.brokers import Broker

# Short timers so loss and restart recovery are quick in tests.
FAST = SessionConfig(min_rto=0.02, initial_rtt=0.02, ping_interval=2.0, idle_timeout=30.0)


@pytest.fixture(scope="module", params=["mosquitto", "amqtt"])
def broker(request) -> Broker:
    with Broker(request.param) as b:
        yield b


@pytest.fixture
def fresh_mosquitto() -> Broker:
    with Broker("mosquitto") as b:
        yield b


def broker_config(broker: Broker, **kw) -> BrokerConfig:
    return BrokerConfig(host=broker.host, port=broker.port, reconnect_min=0.05, reconnect_max=0.5, **kw)


async def serve(endpoint: Endpoint) -> None:
    """Device-side test server: echo, sink (answers the byte count) and reset."""

    async def handle(stream) -> None:
        kind = stream.metadata.get("kind")
        with contextlib.suppress(StreamResetError):
            if kind == "echo":
                async for chunk in stream:
                    stream.write(chunk)
                    await stream.drain()
                stream.write_eof()
            elif kind == "sink":
                total = 0
                async for chunk in stream:
                    total += len(chunk)
                stream.write(str(total).encode())
                stream.write_eof()
            elif kind == "reject":
                stream.reset(0x155, "no such thing")

    tasks: set[asyncio.Task] = set()
    try:
        while True:
            stream = await endpoint.accept()
            task = asyncio.create_task(handle(stream))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for task in tasks:
            task.cancel()


@contextlib.asynccontextmanager
async def pair(
    broker: Broker, *, device: str | None = None, config: SessionConfig = FAST, **kw
) -> AsyncIterator[tuple[Endpoint, Endpoint]]:
    """A cloud endpoint and a device endpoint (serving echo/sink) on ``broker``."""
    name = device or f"dev-{uuid.uuid4().hex[:8]}"
    cfg = broker_config(broker, **kw)
    cloud = cloud_endpoint(cfg, replica=f"r-{uuid.uuid4().hex[:6]}", session_config=config)
    dev = device_endpoint(name, cfg, session_config=config)
    await cloud.start()
    await dev.start()
    server = asyncio.create_task(serve(dev))
    try:
        await asyncio.wait_for(dev.session().established.wait(), 20)
        yield cloud, dev
    finally:
        server.cancel()
        await dev.close()
        await cloud.close()
