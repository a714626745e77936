"""Events the session core hands to its driver, named for what happened."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True, frozen=True)
class HandshakeCompleted:
    """Both sides know each other's epoch; streams may flow."""

    peer_epoch: int


@dataclass(slots=True, frozen=True)
class PeerRestarted:
    """The peer came back as a new incarnation; its old streams were reset."""

    old_epoch: int
    new_epoch: int


@dataclass(slots=True, frozen=True)
class StreamOpened:
    """The peer opened a stream; ``metadata`` says what it is for."""

    stream_id: int
    metadata: dict[str, Any]


@dataclass(slots=True, frozen=True)
class StreamDataReceived:
    """In-order bytes; ``end_stream`` marks the peer's FIN (half-close)."""

    stream_id: int
    data: bytes
    end_stream: bool


@dataclass(slots=True, frozen=True)
class StreamReset:
    """The stream was aborted; ``remote`` tells whether the peer did it."""

    stream_id: int
    code: int
    reason: str
    remote: bool


@dataclass(slots=True, frozen=True)
class StreamFinished:
    """Both directions are done and the peer has everything we sent."""

    stream_id: int


@dataclass(slots=True, frozen=True)
class PongReceived:
    ident: int
    rtt: float


@dataclass(slots=True, frozen=True)
class SessionTimedOut:
    """Nothing heard from the peer for ``idle_timeout`` while streams were open."""

    idle_for: float


@dataclass(slots=True, frozen=True)
class SessionClosed:
    code: int
    reason: str
    remote: bool


@dataclass(slots=True, frozen=True)
class InputRejected:
    """A packet or frame from the peer was malformed, stale or out of place."""

    reason: str


Event = (
    HandshakeCompleted
    | PeerRestarted
    | StreamOpened
    | StreamDataReceived
    | StreamReset
    | StreamFinished
    | PongReceived
    | SessionTimedOut
    | SessionClosed
    | InputRejected
)
