"""seqstream over an MQTT broker, with asyncio and aiomqtt.

async with device_endpoint("pi-1", BrokerConfig.from_url("mqtt://broker")) as ep:
    stream = await ep.open_stream({"kind": "echo"})
    stream.write(b"hi"); stream.write_eof()
    print(await stream.readall())

async with cloud_endpoint(BrokerConfig(...)) as ep:
    stream = await ep.accept()           # from any device
    stream = await ep.open_stream({...}, peer="pi-1")
"""

from __future__ import annotations

from typing import Any

from ..session import Role
from .config import BrokerConfig
from .endpoint import Endpoint, new_epoch
from .link import ConnectionInfo, MqttLink
from .peer import PeerOfflineError, PeerSession
from .stream import Stream


def device_endpoint(name: str, broker: BrokerConfig, **kwargs: Any) -> Endpoint:
    return Endpoint(role=Role.DEVICE, name=name, broker=broker, **kwargs)


def cloud_endpoint(broker: BrokerConfig, *, replica: str = "main", **kwargs: Any) -> Endpoint:
    return Endpoint(role=Role.CLOUD, name=replica, broker=broker, **kwargs)


__all__ = [
    "BrokerConfig",
    "ConnectionInfo",
    "Endpoint",
    "MqttLink",
    "PeerOfflineError",
    "PeerSession",
    "Stream",
    "cloud_endpoint",
    "device_endpoint",
    "new_epoch",
]
