"""Error codes carried by RESET and CLOSE frames, and the local exceptions."""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Codes below 0x100 are the protocol's; applications use 0x100 and up."""

    NO_ERROR = 0x0
    INTERNAL_ERROR = 0x1
    FLOW_CONTROL_ERROR = 0x2
    FINAL_SIZE_ERROR = 0x3
    PROTOCOL_ERROR = 0x4
    PEER_RESTARTED = 0x5
    TIMEOUT = 0x6
    REJECTED = 0x7
    CANCELLED = 0x8
    SESSION_CLOSED = 0x9
    PEER_OFFLINE = 0xA
    APPLICATION = 0x100


def describe(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"APPLICATION_{code:#x}" if code >= ErrorCode.APPLICATION else f"UNKNOWN_{code:#x}"


class SeqstreamError(Exception):
    """Base class of every error this package raises."""


class LocalProtocolError(SeqstreamError):
    """The caller used the core wrongly (e.g. wrote to a stream it closed)."""


class StreamResetError(SeqstreamError):
    """The stream was reset; carries the code and reason."""

    def __init__(self, code: int, reason: str = "", *, remote: bool = True) -> None:
        self.code = code
        self.reason = reason
        self.remote = remote
        who = "peer" if remote else "local side"
        text = f"stream reset by {who}: {describe(code)}"
        super().__init__(f"{text} ({reason})" if reason else text)


class SessionError(SeqstreamError):
    """The session to the peer ended (timeout, close, peer restart)."""
