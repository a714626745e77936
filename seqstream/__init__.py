"""seqstream: reliable, ordered, flow-controlled byte streams over MQTT topics.

The protocol core (``Session``) is sans-io; ``seqstream.mqtt`` drives it over
an MQTT broker with asyncio.
"""

from .config import SessionConfig
from .errors import ErrorCode, LocalProtocolError, SeqstreamError, SessionError, StreamResetError
from .events import (
    Event,
    HandshakeCompleted,
    InputRejected,
    PeerRestarted,
    PongReceived,
    SessionClosed,
    SessionTimedOut,
    StreamDataReceived,
    StreamFinished,
    StreamOpened,
    StreamReset,
)
from .session import Role, Session, SessionState

__all__ = [
    "ErrorCode",
    "Event",
    "HandshakeCompleted",
    "InputRejected",
    "LocalProtocolError",
    "PeerRestarted",
    "PongReceived",
    "Role",
    "SeqstreamError",
    "Session",
    "SessionClosed",
    "SessionConfig",
    "SessionError",
    "SessionState",
    "SessionTimedOut",
    "StreamDataReceived",
    "StreamFinished",
    "StreamOpened",
    "StreamReset",
    "StreamResetError",
]
