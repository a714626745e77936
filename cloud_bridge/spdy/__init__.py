"""Sans-io SPDY/3.1, as kube-apiserver speaks it to kubelets (exec, attach,
port-forward) through moby/spdystream. No sockets, no clock, no flow control.

Drive it like h11: ``receive_data`` bytes, loop ``next_event()`` until
``NEED_DATA``, issue commands, then write ``data_to_send()``.
"""

from ._connection import CLIENT, NEED_DATA, SERVER, Role, SpdyConfig, SpdyConnection
from ._errors import LocalProtocolError, SpdyError, StreamClosedError
from ._frames import GoAwayStatus, RstStatus, SettingId
from ._state import ConnectionState, StreamState
from .events import (
    ConnectionClosed,
    ConnectionFailed,
    DataReceived,
    Event,
    GoAwayReceived,
    HeadersReceived,
    PingAcknowledged,
    PingReceived,
    ReplyReceived,
    Setting,
    SettingsReceived,
    StreamOpened,
    StreamReset,
)

__all__ = [
    "CLIENT",
    "NEED_DATA",
    "SERVER",
    "ConnectionClosed",
    "ConnectionFailed",
    "ConnectionState",
    "DataReceived",
    "Event",
    "GoAwayReceived",
    "GoAwayStatus",
    "HeadersReceived",
    "LocalProtocolError",
    "PingAcknowledged",
    "PingReceived",
    "ReplyReceived",
    "Role",
    "RstStatus",
    "Setting",
    "SettingId",
    "SettingsReceived",
    "SpdyConfig",
    "SpdyConnection",
    "SpdyError",
    "StreamClosedError",
    "StreamOpened",
    "StreamReset",
    "StreamState",
]
