"""Which upgrade and which sub-protocol a streaming request gets. Pure.

SPDY (apimachinery ``httpstream.Handshake``): the client lists versions in
``X-Stream-Protocol-Version`` (several headers and/or comma-separated); the
first one the server supports wins; none given -> 400, none shared -> 403
with ``X-Accepted-Stream-Protocol-Versions``.

WebSocket (kubelet ``wsstream``): ``Sec-WebSocket-Protocol``; the first
client protocol the server supports wins. kubelet also accepts a missing
protocol (binary channels, v1 semantics); we require one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from .routes import RouteError

# Exec/attach over SPDY, in the kubelet's order (v1 "channel.k8s.io" is not offered).
SPDY_REMOTECOMMAND = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io")
SPDY_PORTFORWARD = ("portforward.k8s.io",)

# Exec/attach over WebSocket; v5 adds channel 255 (close one channel).
WS_REMOTECOMMAND = (
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
)

VERSION_HEADER = "x-stream-protocol-version"
ACCEPTED_HEADER = "x-accepted-stream-protocol-versions"


class Upgrade(Enum):
    NONE = "none"
    SPDY = "spdy"
    WEBSOCKET = "websocket"


@dataclass(frozen=True, slots=True)
class WsProtocol:
    name: str
    base64: bool
    status_json: bool  # v4+: the error channel carries a Status document
    close_channel: bool  # v5


def split_tokens(values: Iterable[str]) -> list[str]:
    return [t.strip() for v in values for t in v.split(",") if t.strip()]


def upgrade_kind(headers: Sequence[tuple[str, str]]) -> Upgrade:
    connection = split_tokens(v for k, v in headers if k == "connection")
    upgrade = split_tokens(v for k, v in headers if k == "upgrade")
    if not any(t.lower() == "upgrade" for t in connection) or not upgrade:
        return Upgrade.NONE
    first = upgrade[0].lower()
    if first == "spdy/3.1":
        return Upgrade.SPDY
    if first == "websocket":
        return Upgrade.WEBSOCKET
    raise RouteError(400, f"unsupported upgrade {upgrade[0][:40]!r}: use SPDY/3.1 or websocket")


def negotiate_spdy(headers: Sequence[tuple[str, str]], supported: Sequence[str]) -> str:
    offered = split_tokens(v for k, v in headers if k == VERSION_HEADER)
    if not offered:
        raise RouteError(400, "unable to upgrade: X-Stream-Protocol-Version is required")
    for proto in offered:
        if proto in supported:
            return proto
    raise RouteError(
        403,
        "unable to upgrade: unable to negotiate protocol: "
        f"client supports {offered[:8]}, server accepts {list(supported)}",
        headers=tuple((ACCEPTED_HEADER, proto) for proto in supported),
    )


def negotiate_websocket(offered: Sequence[str]) -> WsProtocol:
    for proto in offered:
        if proto in WS_REMOTECOMMAND:
            return WsProtocol(
                name=proto,
                base64="base64" in proto,
                status_json=proto.startswith(("v4.", "v5.")),
                close_channel=proto.startswith("v5."),
            )
    raise RouteError(
        400 if not offered else 403,
        f"unable to upgrade: no supported WebSocket subprotocol in {list(offered)[:8]}; "
        f"server accepts {list(WS_REMOTECOMMAND)}",
    )
