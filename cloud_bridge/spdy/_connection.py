"""A sans-io SPDY/3.1 connection: bytes in, events out; commands queue bytes.

Rules kept here (section numbers: SPDY Protocol Draft 3.1):

* ``receive_data`` only buffers; ``next_event`` parses one frame at a time and
  returns one event or ``NEED_DATA``. Commands (``reply``, ``send_data``, ...)
  only append frames to the output that ``data_to_send`` drains, in call
  order, which matters: header blocks share one zlib context per direction.
* Peer faults never raise. A stream rule broken (2.4.2) queues RST_STREAM and
  yields a local ``StreamReset``; a session rule broken (2.4.1: bad version,
  oversized or malformed control frame, broken compression) queues GOAWAY,
  yields ``ConnectionFailed`` and stops reading.
* No flow control: Kubernetes' Go SPDY (moby/spdystream) neither sends nor
  honours WINDOW_UPDATE, so we accept any amount, send any amount, and drop
  WINDOW_UPDATE frames after checking their size.
* DATA payloads are handed out as they arrive, so a 16 MiB frame is never
  buffered whole; control frames are buffered up to ``max_control_frame_size``.
* Unknown control frame types are skipped (2.2.1).
"""

from __future__ import annotations

import zlib
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from . import _frames as f
from ._errors import LocalProtocolError, StreamClosedError
from ._headers import (
    HeaderBlockError,
    HeaderCompressor,
    HeaderDecompressor,
    HeaderEncodeError,
    Headers,
)
from ._state import (
    ConnectionInput,
    ConnectionState,
    StreamInput,
    StreamState,
    TransitionError,
    next_connection_state,
    next_stream_state,
)
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


class Role(Enum):
    CLIENT = "client"  # opens odd streams, sends odd pings (2.3.2, 2.6.5)
    SERVER = "server"


CLIENT, SERVER = Role.CLIENT, Role.SERVER


class _Sentinel(Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA: Literal[_Sentinel.NEED_DATA] = _Sentinel.NEED_DATA
"""Returned by ``next_event`` when more bytes are needed."""


@dataclass(slots=True, frozen=True, kw_only=True)
class SpdyConfig:
    max_control_frame_size: int = 1024 * 1024
    """Larger control frames from the peer are a session error."""
    max_header_block_size: int = 256 * 1024
    """Cap on one decompressed header block, ours or the peer's."""
    max_data_frame_size: int = 32 * 1024
    """``send_data`` splits payloads into frames of at most this many bytes."""
    compression_level: int = zlib.Z_DEFAULT_COMPRESSION

    def __post_init__(self) -> None:
        if not 1 <= self.max_data_frame_size <= f.MAX_LENGTH:
            raise ValueError("max_data_frame_size must be within 1..2**24-1")
        if not 16 <= self.max_control_frame_size <= f.MAX_LENGTH:
            raise ValueError("max_control_frame_size must be within 16..2**24-1")
        if self.max_header_block_size < 4:
            raise ValueError("max_header_block_size must be at least 4")


@dataclass(slots=True)
class _Stream:
    state: StreamState
    local: bool  # opened by us
    replied: bool  # SYN_REPLY sent (peer's stream) or received (ours)


@dataclass(slots=True)
class _InboundData:
    """A DATA frame whose payload is still arriving."""

    stream_id: int
    remaining: int
    fin: bool


class SpdyConnection:
    """One SPDY/3.1 session over one byte stream, either role."""

    def __init__(self, *, role: Role, config: SpdyConfig | None = None) -> None:
        self.role = role
        self.config = config or SpdyConfig()
        self._state = ConnectionState.OPEN
        self._inbuf = bytearray()
        self._eof = False
        self._data: _InboundData | None = None
        self._out: list[bytes | memoryview] = []
        self._events: deque[Event] = deque()
        self._compressor = HeaderCompressor(self.config.compression_level)
        self._decompressor = HeaderDecompressor(self.config.max_header_block_size)
        self._streams: dict[int, _Stream] = {}
        self._parity = 1 if role is Role.CLIENT else 0
        self._next_stream_id = 1 if role is Role.CLIENT else 2
        self._next_ping_id = 1 if role is Role.CLIENT else 2
        self._pings: set[int] = set()
        self._last_remote_id = 0  # highest peer stream id seen, for the increase rule
        self._last_accepted_id = 0  # highest peer stream we took on: GOAWAY's last-good
        self._goaway_sent = False
        self._goaway_received = False

    # -- inspection ----------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    def stream_state(self, stream_id: int) -> StreamState | None:
        """None once the stream is closed and forgotten (or never existed)."""
        st = self._streams.get(stream_id)
        return st.state if st else None

    @property
    def open_stream_ids(self) -> list[int]:
        return list(self._streams)

    # -- input ---------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes from the peer; ``b""`` means the peer closed the transport."""
        if self._eof:
            raise LocalProtocolError("receive_data() after end of input")
        if not data:
            self._eof = True
        elif self._state is not ConnectionState.FAILED:
            self._inbuf += data

    def next_event(self) -> Event | Literal[_Sentinel.NEED_DATA]:
        while True:
            if self._events:
                return self._events.popleft()
            if self._state is not ConnectionState.FAILED and self._step():
                continue
            if not self._eof:
                return NEED_DATA
            if self._inbuf or self._data is not None:
                self._fail("transport closed in the middle of a frame")
                continue
            return ConnectionClosed()

    def _step(self) -> bool:
        """Consume one frame header or one piece of DATA payload, if buffered."""
        if self._data is not None:
            return self._continue_data(self._data)
        if len(self._inbuf) < f.HEADER_SIZE:
            return False
        head = f.parse_header(self._inbuf)
        if not head.control:
            del self._inbuf[: f.HEADER_SIZE]
            self._start_data(head)
            return True
        if head.version != f.VERSION:
            self._fail(f"unsupported SPDY version {head.version}")
            return True
        if head.length > self.config.max_control_frame_size:
            limit = self.config.max_control_frame_size
            self._fail(f"control frame type {head.type} of {head.length} bytes exceeds {limit}")
            return True
        end = f.HEADER_SIZE + head.length
        if len(self._inbuf) < end:
            return False
        payload = bytes(self._inbuf[f.HEADER_SIZE : end])
        del self._inbuf[:end]
        try:
            self._on_control(head, payload)
        except (f.FrameError, HeaderBlockError) as exc:
            self._fail(str(exc))
        return True

    # -- DATA ----------------------------------------------------------------

    def _start_data(self, head: f.FrameHeader) -> None:
        sid, fin = head.stream_id, bool(head.flags & f.FLAG_FIN)
        if sid == 0:
            self._fail("DATA frame on stream 0")
            return
        st = self._streams.get(sid)
        if st is None:
            if self._is_idle(sid):
                self._stream_error(sid, f.RstStatus.INVALID_STREAM, "DATA on a stream never opened")
        elif st.state not in (StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL):
            self._stream_error(sid, f.RstStatus.STREAM_ALREADY_CLOSED, "DATA after the peer's FIN")
        self._data = _InboundData(sid, head.length, fin)
        if head.length == 0:
            self._continue_data(self._data)

    def _continue_data(self, d: _InboundData) -> bool:
        take = min(d.remaining, len(self._inbuf))
        if take == 0 and d.remaining:
            return False
        chunk = bytes(self._inbuf[:take])
        del self._inbuf[:take]
        d.remaining -= take
        last = d.remaining == 0
        if last:
            self._data = None
        st = self._streams.get(d.stream_id)
        # A stream reset meanwhile (by us, or by the check in _start_data)
        # is gone from the table, so the rest of its payload is dropped.
        if st is None or st.state not in (StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL):
            return True
        fin = last and d.fin
        if chunk or fin:
            self._events.append(DataReceived(d.stream_id, chunk, fin))
        if fin:
            self._advance(d.stream_id, st, StreamInput.RECV_FIN)
        return True

    # -- control frames ------------------------------------------------------

    def _on_control(self, head: f.FrameHeader, payload: bytes) -> None:
        kind, flags = head.type, head.flags
        if kind == f.FrameType.SYN_STREAM:
            syn = f.parse_syn_stream(payload)
            self._on_syn_stream(syn, flags, *self._decompressor.decompress(syn.block))
        elif kind == f.FrameType.SYN_REPLY:
            sid, block = f.parse_stream_block(payload, "SYN_REPLY")
            self._on_syn_reply(sid, flags, *self._decompressor.decompress(block))
        elif kind == f.FrameType.HEADERS:
            sid, block = f.parse_stream_block(payload, "HEADERS")
            self._on_headers(sid, flags, *self._decompressor.decompress(block))
        elif kind == f.FrameType.RST_STREAM:
            sid, status = f.parse_rst_stream(payload)
            if self._streams.pop(sid, None) is not None:
                self._events.append(StreamReset(sid, status, "reset by peer", remote=True))
            # RST for an unknown or closed stream: never answer a reset (2.4.2).
        elif kind == f.FrameType.SETTINGS:
            entries = tuple(Setting(i, v, fl) for i, v, fl in f.parse_settings(payload))
            clear = bool(flags & f.FLAG_SETTINGS_CLEAR_SETTINGS)
            self._events.append(SettingsReceived(entries, clear))
        elif kind == f.FrameType.PING:
            self._on_ping(f.parse_ping(payload))
        elif kind == f.FrameType.GOAWAY:
            self._on_goaway(*f.parse_goaway(payload))
        elif kind == f.FrameType.WINDOW_UPDATE:
            f.parse_window_update(payload)  # size-checked, then ignored (no flow control)
        # any other type: ignored (2.2.1)

    def _on_syn_stream(self, syn: f.SynStream, flags: int, headers: Headers, problem: str | None) -> None:
        sid = syn.stream_id
        if sid % 2 == self._parity:
            self._fail(f"SYN_STREAM {sid} uses the {self.role.value}'s stream ids")
            return
        if sid in self._streams:
            self._stream_error(sid, f.RstStatus.PROTOCOL_ERROR, "second SYN_STREAM for stream")
            return
        if sid <= self._last_remote_id:
            self._fail(f"SYN_STREAM {sid} after {self._last_remote_id}: ids must increase")
            return
        self._last_remote_id = sid
        if self._goaway_sent:
            return  # after our GOAWAY new streams are ignored (2.6.6)
        if problem:
            self._stream_error(sid, f.RstStatus.PROTOCOL_ERROR, problem)
            return
        fin, uni = bool(flags & f.FLAG_FIN), bool(flags & f.FLAG_UNIDIRECTIONAL)
        self._last_accepted_id = sid
        # A unidirectional stream gets no SYN_REPLY and nothing from us (2.3.2).
        st = _Stream(StreamState.OPEN, local=False, replied=uni)
        self._streams[sid] = st
        self._events.append(StreamOpened(sid, headers, fin, uni, syn.associated_id, syn.priority))
        if uni:
            self._advance(sid, st, StreamInput.SEND_FIN)
        if fin:
            self._advance(sid, st, StreamInput.RECV_FIN)

    def _on_syn_reply(self, sid: int, flags: int, headers: Headers, problem: str | None) -> None:
        st = self._known_stream(sid, "SYN_REPLY")
        if st is None:
            return
        if not st.local or st.replied:
            self._stream_error(sid, f.RstStatus.STREAM_IN_USE, "unexpected SYN_REPLY")
            return
        st.replied = True
        self._on_stream_headers(sid, st, flags, headers, problem, ReplyReceived)

    def _on_headers(self, sid: int, flags: int, headers: Headers, problem: str | None) -> None:
        st = self._known_stream(sid, "HEADERS")
        if st is not None:
            self._on_stream_headers(sid, st, flags, headers, problem, HeadersReceived)

    def _on_stream_headers(
        self,
        sid: int,
        st: _Stream,
        flags: int,
        headers: Headers,
        problem: str | None,
        event: type[ReplyReceived] | type[HeadersReceived],
    ) -> None:
        if problem:
            self._stream_error(sid, f.RstStatus.PROTOCOL_ERROR, problem)
            return
        if st.state not in (StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL):
            self._stream_error(sid, f.RstStatus.STREAM_ALREADY_CLOSED, "headers after FIN")
            return
        fin = bool(flags & f.FLAG_FIN)
        self._events.append(event(sid, headers, fin))
        if fin:
            self._advance(sid, st, StreamInput.RECV_FIN)

    def _on_ping(self, ping_id: int) -> None:
        if ping_id % 2 != self._next_ping_id % 2:
            self._out.append(f.encode_ping(ping_id))  # echo at once (2.6.5)
            self._events.append(PingReceived(ping_id))
        elif ping_id in self._pings:
            self._pings.discard(ping_id)
            self._events.append(PingAcknowledged(ping_id))
        # a ping with our parity that we never sent: ignore (2.6.5)

    def _on_goaway(self, last_good: int, status: int) -> None:
        self._goaway_received = True
        self._state = next_connection_state(self._state, ConnectionInput.GOAWAY_RECEIVED)
        self._events.append(GoAwayReceived(last_good, status))
        for sid in [s for s, st in self._streams.items() if st.local and s > last_good]:
            del self._streams[sid]
            reason = "not processed by peer (GOAWAY)"
            self._events.append(StreamReset(sid, f.RstStatus.REFUSED_STREAM, reason, remote=True))

    # -- helpers for peer faults --------------------------------------------

    def _is_idle(self, sid: int) -> bool:
        """True if no stream with this id was ever opened by either side."""
        if sid % 2 == self._parity:
            return sid >= self._next_stream_id
        return sid > self._last_remote_id

    def _known_stream(self, sid: int, what: str) -> _Stream | None:
        st = self._streams.get(sid)
        if st is None and self._is_idle(sid):
            self._stream_error(sid, f.RstStatus.INVALID_STREAM, f"{what} on a stream never opened")
        return st

    def _advance(self, sid: int, st: _Stream, event: StreamInput) -> None:
        st.state = next_stream_state(st.state, event)
        if st.state is StreamState.CLOSED:
            del self._streams[sid]

    def _stream_error(self, sid: int, status: f.RstStatus, reason: str) -> None:
        self._out.append(f.encode_rst_stream(sid, status))
        self._streams.pop(sid, None)
        self._events.append(StreamReset(sid, status, reason, remote=False))

    def _fail(self, reason: str, status: f.GoAwayStatus = f.GoAwayStatus.PROTOCOL_ERROR) -> None:
        self._state = next_connection_state(self._state, ConnectionInput.PEER_FAULT)
        self._out.append(f.encode_goaway(self._last_accepted_id, status))
        self._inbuf.clear()
        self._data = None
        self._streams.clear()
        self._events.append(ConnectionFailed(status, reason))

    # -- commands ------------------------------------------------------------

    def open_stream(
        self,
        headers: list[tuple[str, str]] | Headers,
        *,
        fin: bool = False,
        unidirectional: bool = False,
        associated_id: int = 0,
        priority: int = 0,
    ) -> int:
        """Queue SYN_STREAM and return the new stream's id."""
        self._check_usable()
        if self._goaway_received:
            raise LocalProtocolError("the peer sent GOAWAY: no new streams")
        sid = self._next_stream_id
        if sid > f.MAX_STREAM_ID:
            raise LocalProtocolError("stream ids exhausted; open a new connection")
        if not 0 <= associated_id <= f.MAX_STREAM_ID or not 0 <= priority <= 7:
            raise LocalProtocolError("associated_id or priority out of range")
        flags = (f.FLAG_FIN if fin else 0) | (f.FLAG_UNIDIRECTIONAL if unidirectional else 0)
        block = self._compress(headers)
        self._out.append(f.encode_syn_stream(sid, block, associated_id=associated_id, priority=priority, flags=flags))
        self._next_stream_id += 2
        st = _Stream(StreamState.OPEN, local=True, replied=unidirectional)
        self._streams[sid] = st
        if fin:
            self._advance(sid, st, StreamInput.SEND_FIN)
        if unidirectional and sid in self._streams:
            self._advance(sid, st, StreamInput.RECV_FIN)
        return sid

    def reply(self, stream_id: int, headers: list[tuple[str, str]] | Headers, *, fin: bool = False) -> None:
        """Queue SYN_REPLY for a stream the peer opened."""
        st = self._sendable(stream_id, needs_reply=False)
        if st.local or st.replied:
            raise LocalProtocolError(f"stream {stream_id} needs no SYN_REPLY from us")
        new = self._peek(stream_id, st, fin)
        block = self._compress(headers)
        self._out.append(f.encode_syn_reply(stream_id, block, flags=f.FLAG_FIN if fin else 0))
        st.replied = True
        self._commit(stream_id, st, new)

    def send_headers(self, stream_id: int, headers: list[tuple[str, str]] | Headers, *, fin: bool = False) -> None:
        """Queue a HEADERS frame on an established stream."""
        st = self._sendable(stream_id)
        new = self._peek(stream_id, st, fin)
        block = self._compress(headers)
        self._out.append(f.encode_headers(stream_id, block, flags=f.FLAG_FIN if fin else 0))
        self._commit(stream_id, st, new)

    def send_data(self, stream_id: int, data: bytes | bytearray | memoryview, *, fin: bool = False) -> None:
        """Queue DATA frames of at most ``max_data_frame_size``; FIN on the last."""
        st = self._sendable(stream_id)
        new = self._peek(stream_id, st, fin)
        # Header and payload are queued apart and joined once by data_to_send;
        # immutable bytes can be referenced until then, anything else is copied now.
        view = memoryview(data if isinstance(data, bytes) else bytes(data)).cast("B")
        size = self.config.max_data_frame_size
        if not view and not fin:
            return
        starts = range(0, len(view), size) if view else range(1)
        for start in starts:
            last = start + size >= len(view)
            piece = view[start : start + size]
            self._out.append(f.data_header(stream_id, len(piece), fin=fin and last))
            if piece:
                self._out.append(piece)
        self._commit(stream_id, st, new)

    def reset(self, stream_id: int, status: int = f.RstStatus.CANCEL) -> None:
        """Queue RST_STREAM; a no-op if the stream already closed (races are normal)."""
        self._check_usable()
        if not 1 <= status <= 0xFFFFFFFF:
            raise LocalProtocolError("RST_STREAM status must be non-zero")
        if self._streams.pop(stream_id, None) is not None:
            self._out.append(f.encode_rst_stream(stream_id, status))
        elif not 0 < stream_id <= f.MAX_STREAM_ID or self._is_idle(stream_id):
            raise LocalProtocolError(f"stream {stream_id} was never opened")

    def ping(self) -> int:
        """Queue a PING with our next id; ``PingAcknowledged`` reports the echo."""
        self._check_usable()
        ping_id = self._next_ping_id
        if ping_id > 0xFFFFFFFF:
            raise LocalProtocolError("ping ids exhausted")
        self._next_ping_id += 2
        self._pings.add(ping_id)
        self._out.append(f.encode_ping(ping_id))
        return ping_id

    def goaway(self, status: int = f.GoAwayStatus.OK) -> None:
        """Queue GOAWAY once; later peer SYN_STREAMs are ignored, ours continue."""
        self._check_usable()
        if self._goaway_sent:
            return
        self._goaway_sent = True
        self._state = next_connection_state(self._state, ConnectionInput.GOAWAY_SENT)
        self._out.append(f.encode_goaway(self._last_accepted_id, status))

    def data_to_send(self) -> bytes:
        """Drain everything queued, in order."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    # -- helpers for commands -------------------------------------------------

    def _check_usable(self) -> None:
        if self._state is ConnectionState.FAILED:
            raise LocalProtocolError("connection FAILED after a peer protocol error")

    def _sendable(self, stream_id: int, *, needs_reply: bool = True) -> _Stream:
        self._check_usable()
        st = self._streams.get(stream_id)
        if st is None:
            raise StreamClosedError(f"stream {stream_id} is not open")
        if needs_reply and not st.local and not st.replied:
            raise LocalProtocolError(f"stream {stream_id}: reply() before sending on it")
        return st

    def _peek(self, stream_id: int, st: _Stream, fin: bool) -> StreamState:
        """The state after sending, or StreamClosedError; nothing changes yet."""
        try:
            return next_stream_state(st.state, StreamInput.SEND_FIN if fin else StreamInput.SEND)
        except TransitionError as exc:
            raise StreamClosedError(f"stream {stream_id}: {exc}") from None

    def _commit(self, stream_id: int, st: _Stream, new: StreamState) -> None:
        st.state = new
        if new is StreamState.CLOSED:
            del self._streams[stream_id]

    def _compress(self, headers: list[tuple[str, str]] | Headers) -> bytes:
        try:
            return self._compressor.compress(headers, limit=self.config.max_header_block_size)
        except HeaderEncodeError as exc:
            raise LocalProtocolError(str(exc)) from None
