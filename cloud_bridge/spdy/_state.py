"""Everything that moves a stream or the connection between states lives here.

Streams (SPDY/3.1 draft, 2.3): each direction closes on its own, by FIN or
by the SYN flags (a unidirectional SYN_STREAM half-closes the receiver's
sending side at birth). RST_STREAM closes both at once. A stream that reaches
CLOSED is forgotten by the connection; frames for it that were already in
flight are then ignored, never answered with a reset (2.4.2, no RST storms).

The connection goes CLOSING once a GOAWAY crossed in either direction (2.6.6)
and FAILED on a session error (2.4.1); FAILED is final.
"""

from __future__ import annotations

from enum import Enum


class StreamState(Enum):
    OPEN = "OPEN"
    HALF_CLOSED_LOCAL = "HALF_CLOSED_LOCAL"  # we sent FIN; peer may still send
    HALF_CLOSED_REMOTE = "HALF_CLOSED_REMOTE"  # peer sent FIN; we may still send
    CLOSED = "CLOSED"


class StreamInput(Enum):
    SEND = "SEND"  # headers or data without FIN
    SEND_FIN = "SEND_FIN"
    RECV = "RECV"
    RECV_FIN = "RECV_FIN"
    RESET = "RESET"


class ConnectionState(Enum):
    OPEN = "OPEN"
    CLOSING = "CLOSING"
    FAILED = "FAILED"


class ConnectionInput(Enum):
    GOAWAY_SENT = "GOAWAY_SENT"
    GOAWAY_RECEIVED = "GOAWAY_RECEIVED"
    PEER_FAULT = "PEER_FAULT"


_S, _I = StreamState, StreamInput
_C, _CI = ConnectionState, ConnectionInput

TRANSITIONS: dict[tuple[Enum, Enum], Enum] = {
    # streams
    (_S.OPEN, _I.SEND): _S.OPEN,
    (_S.OPEN, _I.RECV): _S.OPEN,
    (_S.OPEN, _I.SEND_FIN): _S.HALF_CLOSED_LOCAL,
    (_S.OPEN, _I.RECV_FIN): _S.HALF_CLOSED_REMOTE,
    (_S.OPEN, _I.RESET): _S.CLOSED,
    (_S.HALF_CLOSED_LOCAL, _I.RECV): _S.HALF_CLOSED_LOCAL,
    (_S.HALF_CLOSED_LOCAL, _I.RECV_FIN): _S.CLOSED,
    (_S.HALF_CLOSED_LOCAL, _I.RESET): _S.CLOSED,
    (_S.HALF_CLOSED_REMOTE, _I.SEND): _S.HALF_CLOSED_REMOTE,
    (_S.HALF_CLOSED_REMOTE, _I.SEND_FIN): _S.CLOSED,
    (_S.HALF_CLOSED_REMOTE, _I.RESET): _S.CLOSED,
    # the connection
    (_C.OPEN, _CI.GOAWAY_SENT): _C.CLOSING,
    (_C.OPEN, _CI.GOAWAY_RECEIVED): _C.CLOSING,
    (_C.OPEN, _CI.PEER_FAULT): _C.FAILED,
    (_C.CLOSING, _CI.GOAWAY_SENT): _C.CLOSING,
    (_C.CLOSING, _CI.GOAWAY_RECEIVED): _C.CLOSING,
    (_C.CLOSING, _CI.PEER_FAULT): _C.FAILED,
}


class TransitionError(Exception):
    """An input not allowed in the current state; the message names both."""

    def __init__(self, state: Enum, event: Enum, what: str) -> None:
        super().__init__(f"{what} in state {state.name} cannot take {event.name}")
        self.state = state
        self.event = event


def next_stream_state(state: StreamState, event: StreamInput) -> StreamState:
    new = TRANSITIONS.get((state, event))
    if new is None:
        raise TransitionError(state, event, "stream")
    assert isinstance(new, StreamState)
    return new


def next_connection_state(state: ConnectionState, event: ConnectionInput) -> ConnectionState:
    new = TRANSITIONS.get((state, event))
    if new is None:
        raise TransitionError(state, event, "connection")
    assert isinstance(new, ConnectionState)
    return new


def can(state: StreamState, event: StreamInput) -> bool:
    return (state, event) in TRANSITIONS
