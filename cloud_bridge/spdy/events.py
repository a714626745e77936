"""Events a :class:`SpdyConnection` hands to its driver, named for what happened.

Headers are tuples of ``(name, value)`` pairs (immutable, so events stay
frozen); a name with several NUL-joined values appears once per value.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._frames import MAX_STREAM_ID

Headers = tuple[tuple[str, str], ...]


def _check_stream_id(stream_id: int) -> None:
    if not 0 < stream_id <= MAX_STREAM_ID:
        raise ValueError(f"stream id {stream_id} outside 1..2**31-1")


@dataclass(slots=True, frozen=True)
class StreamOpened:
    """The peer sent SYN_STREAM. ``fin``: it will send nothing more;
    ``unidirectional``: we may not send on it (no reply expected either)."""

    stream_id: int
    headers: Headers
    fin: bool = False
    unidirectional: bool = False
    associated_id: int = 0
    priority: int = 0

    def __post_init__(self) -> None:
        _check_stream_id(self.stream_id)


@dataclass(slots=True, frozen=True)
class ReplyReceived:
    """The peer answered a stream we opened with SYN_REPLY."""

    stream_id: int
    headers: Headers
    fin: bool = False

    def __post_init__(self) -> None:
        _check_stream_id(self.stream_id)


@dataclass(slots=True, frozen=True)
class HeadersReceived:
    """Extra headers (HEADERS frame) on an open stream."""

    stream_id: int
    headers: Headers
    fin: bool = False

    def __post_init__(self) -> None:
        _check_stream_id(self.stream_id)


@dataclass(slots=True, frozen=True)
class DataReceived:
    """Payload bytes as they arrive (a frame may come in several pieces);
    ``fin`` marks the peer's half-close and comes with the frame's last piece."""

    stream_id: int
    data: bytes
    fin: bool = False

    def __post_init__(self) -> None:
        _check_stream_id(self.stream_id)


@dataclass(slots=True, frozen=True)
class StreamReset:
    """The stream is gone. ``remote``: the peer sent RST_STREAM (or refused it
    with GOAWAY); otherwise we reset it because the peer broke a stream rule."""

    stream_id: int
    status: int
    reason: str = ""
    remote: bool = True

    def __post_init__(self) -> None:
        _check_stream_id(self.stream_id)


@dataclass(slots=True, frozen=True)
class PingReceived:
    """The peer pinged us; the echo is already queued in ``data_to_send()``."""

    ping_id: int


@dataclass(slots=True, frozen=True)
class PingAcknowledged:
    """The peer echoed a ping we sent."""

    ping_id: int


@dataclass(slots=True, frozen=True)
class Setting:
    id: int
    value: int
    flags: int = 0


@dataclass(slots=True, frozen=True)
class SettingsReceived:
    """Informational only: we never block on windows or stream limits."""

    settings: tuple[Setting, ...]
    clear: bool = False


@dataclass(slots=True, frozen=True)
class GoAwayReceived:
    """The peer opens no more streams and ignores ours above ``last_good_stream_id``
    (those are reported as remote StreamReset REFUSED_STREAM right after)."""

    last_good_stream_id: int
    status: int


@dataclass(slots=True, frozen=True)
class ConnectionFailed:
    """The peer broke a session rule (2.4.1); GOAWAY ``status`` is queued and the
    connection reads nothing more. All streams are dead."""

    status: int
    reason: str


@dataclass(slots=True, frozen=True)
class ConnectionClosed:
    """The peer closed the transport (``receive_data(b"")``) on a frame boundary."""


Event = (
    StreamOpened
    | ReplyReceived
    | HeadersReceived
    | DataReceived
    | StreamReset
    | PingReceived
    | PingAcknowledged
    | SettingsReceived
    | GoAwayReceived
    | ConnectionFailed
    | ConnectionClosed
)
