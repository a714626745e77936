"""How to reach the broker; one dataclass, parsed from a URL for users."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field, replace
from typing import Literal
from urllib.parse import unquote, urlsplit

Protocol = Literal["auto", "5", "3.1.1"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: ssl.SSLContext | None = None
    protocol: Protocol = "auto"
    """``auto`` tries MQTT 5 and falls back to 3.1.1 if the broker refuses it."""
    qos: int = 0
    """QoS of stream packets: 0 by default, since seqstream retransmits itself."""
    keepalive: int = 30
    connect_timeout: float = 10.0
    reconnect_min: float = 0.1
    reconnect_max: float = 10.0
    session_expiry: int = 300
    """MQTT 5 session expiry (QoS 1 only): the broker queues for us this long."""
    will_delay: int = 15
    """MQTT 5 will delay: a peer counts as gone only if not back within this time."""

    def __post_init__(self) -> None:
        if self.qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1, not {self.qos!r}")
        if self.protocol not in ("auto", "5", "3.1.1"):
            raise ValueError(f"protocol must be auto, 5 or 3.1.1, not {self.protocol!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} out of range")
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise ValueError("need 0 < reconnect_min <= reconnect_max")

    @classmethod
    def from_url(cls, url: str, **overrides: object) -> BrokerConfig:
        """``mqtt://user:pass@host:1883`` or ``mqtts://host:8883`` (system CAs)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
        secure = parts.scheme in ("mqtts", "ssl")
        if not parts.hostname:
            raise ValueError(f"broker URL {url!r} has no host")
        config = cls(
            host=parts.hostname,
            port=parts.port or (8883 if secure else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=ssl.create_default_context() if secure else None,
        )
        return replace(config, **overrides) if overrides else config  # type: ignore[arg-type]

    @property
    def url(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"
