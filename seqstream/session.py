"""The sans-io session core: one device <-> cloud session, many streams.

Rules (PROTOCOL.md is the reference):
* No I/O and no clock: every input carries ``now`` (seconds, any monotonic
  origin) and output is pulled with ``packets_to_send(now)``.
* Epochs: every packet names its sender's epoch and the epoch it is meant for.
  A packet for another incarnation of us, or from an older incarnation of
  the peer, is dropped. A HELLO from a newer peer epoch resets every stream.
* Streams: ids opened by the device are odd, by the cloud even. Any frame from
  the peer about a stream we opened confirms the OPEN. A stream is forgotten
  once both directions finished (or it was reset and that was confirmed);
  frames about a forgotten stream are answered with CLOSED / RESET_ACK.
* Reliability: data segments are remembered with the local packet number and
  send time; ACKs carry cumulative + selective ranges; losses are declared as
  in RFC 9002 s6.1, with a probe timeout (RFC 6298 backoff) for tail losses,
  lost OPENs/RESETs, and credit-blocked streams (window probe).
* Flow control is QUIC style (RFC 9000 s4): absolute per-stream and
  per-session limits that only grow, so lost or repeated updates are harmless.
"""

from __future__ import annotations

from collections import Counter, deque
from enum import Enum, StrEnum
from typing import Any

from . import frames as f
from .config import MIN_PACKET, MIN_SESSION_WINDOW, MIN_STREAM_WINDOW, SessionConfig
from .errors import ErrorCode, LocalProtocolError
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
from .inflight import InFlightLimit
from .packetizer import PacketBuilder
from .rangeset import RangeSet
from .recovery import K_PACKET_THRESHOLD, RttEstimator
from .stream import FlowError, Segment, StreamReceiver, StreamSender, StreamState

HAS_ECHO = 0x01
_MIN_DATA_CHUNK = 512  # don't start a DATA frame in less room than this
_MAX_HELLO_INTERVAL = 10.0  # keeps a lossy link from stretching the handshake


class Role(StrEnum):
    DEVICE = "device"
    CLOUD = "cloud"


class SessionState(Enum):
    HANDSHAKE = "handshake"
    ESTABLISHED = "established"
    CLOSED = "closed"


def _us(seconds: float) -> int:
    return int(seconds * 1_000_000) & f.MAX_U32


class Session:
    """Protocol state of one session. Feed it packets and time; pull packets and events."""

    def __init__(self, *, role: Role, epoch: int, config: SessionConfig | None = None) -> None:
        if not 0 < epoch < 2**64:
            raise ValueError("epoch must be a positive 64-bit integer")
        self.role = role
        self.epoch = epoch
        self.config = config or SessionConfig()
        self.peer_epoch = 0
        self.state = SessionState.HANDSHAKE
        self.stats: Counter[str] = Counter()
        self._peer_knows_us = False
        self._events: deque[Event] = deque()
        self._streams: dict[int, StreamState] = {}
        self._next_stream_id = 1 if role is Role.DEVICE else 2
        self._peer_ids = RangeSet()  # peer stream ids ever opened
        self._closed_ids = RangeSet()  # stream ids forgotten
        self._draining: dict[int, int] = {}  # finished streams: bytes the app has yet to read
        self._rtt = RttEstimator(
            initial_rtt=self.config.initial_rtt, min_rto=self.config.min_rto, max_rto=self.config.max_rto
        )
        self._pn = 0
        self._largest_acked_pn = -1
        self._pto_count = 0
        self._last_eliciting_sent: float | None = None
        self._last_progress = 0.0  # when data was last newly acknowledged
        self._loss_time: float | None = None
        self._batch_deadline: float | None = None
        # peer's parameters (protocol minimums until its HELLO arrives)
        self._peer_max_packet = MIN_PACKET
        self._peer_stream_window = MIN_STREAM_WINDOW
        self._transport_max_packet: int | None = None
        # session flow control, send side
        self._peer_max_data = MIN_SESSION_WINDOW
        self._sent_total = 0
        # session flow control, receive side
        self._recv_total = 0
        self._consumed_total = 0
        self._max_data = self.config.session_window
        self._max_data_sent = 0
        # handshake
        self._hello_needed = False
        self._hello_sent_at: float | None = None
        self._hello_count = 0
        # acknowledgements
        self._acks_pending: set[int] = set()
        self._final_acks: dict[int, f.Ack] = {}  # for streams forgotten with an ack still owed
        self._ack_immediate = False
        self._ack_deadline: float | None = None
        self._eliciting_since_ack = 0
        self._unacked_bytes = 0
        # Each MQTT message costs about the same whatever its size, so acks are
        # sparse: at a quarter window of data, on gaps, duplicates and FINs,
        # or after max_ack_delay.
        self._ack_bytes = min(self.config.stream_window // 16, self.config.max_in_flight // 4)
        # timestamps echoed for RTT samples
        self._echo_ts = 0
        self._echo_received_at: float | None = None
        # liveness and control replies
        self._last_received: float | None = None
        self._last_ping_sent: float | None = None
        self._ping_ident = 0
        self._user_pings: dict[int, float] = {}
        self._control: list[f.Frame] = []
        self._close_frame: f.Close | None = None
        self._rr = 0  # round-robin start for new data
        self._in_flight = 0
        cfg = self.config
        self._limit = InFlightLimit(
            floor=min(cfg.min_in_flight, cfg.max_in_flight),
            ceiling=cfg.max_in_flight,
            initial=4 * min(cfg.base_packet, cfg.max_packet),
            target=cfg.queue_target,
        )
        self._acked_bytes = 0  # newly acked by the packet being processed

    # ------------------------------------------------------------------ queries

    @property
    def ack_urgent(self) -> bool:
        """An ack should go out now, even in the middle of a burst of input."""
        return self._ack_immediate and bool(self._acks_pending)

    @property
    def established(self) -> bool:
        return self.state is SessionState.ESTABLISHED

    @property
    def stream_ids(self) -> list[int]:
        return list(self._streams)

    @property
    def smoothed_rtt(self) -> float:
        return self._rtt.smoothed

    @property
    def in_flight_limit(self) -> int:
        """The current cap on unacknowledged bytes (adapts to the queueing delay)."""
        return self._limit.limit

    @property
    def max_packet(self) -> int:
        limits = [self.config.max_packet, self._peer_max_packet]
        if self._transport_max_packet:
            limits.append(self._transport_max_packet)
        return max(min(limits), MIN_PACKET)

    @property
    def packet_size(self) -> int:
        """The size packets are cut to now: an eighth of the in-flight cap within [base_packet, max_packet]."""
        return min(self.max_packet, max(self.config.base_packet, self._limit.limit // 8))

    def send_buffered(self, stream_id: int) -> int:
        """Bytes written on the stream that the peer has not acknowledged yet."""
        stream = self._streams.get(stream_id)
        return stream.sender.unacked if stream and stream.reset_code is None else 0

    # ------------------------------------------------------------------ commands

    def connect(self, now: float) -> None:
        """Start (or restart) the handshake."""
        self._require_open()
        self._hello_needed = True
        self._hello_count = 0
        self._last_received = self._last_received or now

    def set_transport_limit(self, max_packet: int | None) -> None:
        """The broker's Maximum Packet Size (MQTT 5 CONNACK), minus topic overhead."""
        self._transport_max_packet = max_packet

    def open_stream(self, metadata: dict[str, Any], *, now: float) -> int:
        self._require_open()
        stream_id = self._next_stream_id
        self._next_stream_id += 2
        if stream_id > f.MAX_U32:
            raise LocalProtocolError("stream ids exhausted; start a new session")
        stream = self._new_stream(stream_id, local=True, metadata=dict(metadata))
        stream.open_unacked = True
        stream.open_needs_send = True
        self._last_received = self._last_received or now
        return stream_id

    def send_stream_data(self, stream_id: int, data: bytes, *, end_stream: bool = False, now: float) -> None:
        stream = self._writable(stream_id)
        if stream.sender.fin_queued:
            raise LocalProtocolError(f"stream {stream_id} is closed for writing (FIN already queued)")
        stream.sender.write(data, now)
        if end_stream:
            stream.sender.fin_queued = True

    def reset_stream(self, stream_id: int, code: int = ErrorCode.CANCELLED, reason: str = "") -> None:
        """Abort both directions; a no-op on a stream already gone."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.reset_code is not None:
            return
        self._reset_local(stream, code, reason)

    def stream_consumed(self, stream_id: int, amount: int, *, now: float) -> bool:
        """The application read ``amount`` bytes: give the peer that much new credit.

        Returns True when a credit update was queued (the caller should flush).
        """
        if amount <= 0:
            return False
        stream = self._streams.get(stream_id)
        if stream is not None:
            receiver = stream.receiver
            before = receiver.consumed
            announce = receiver.consume(amount)
            if announce:
                # Urgent only when the peer is about to run out of credit.
                urgent = receiver.advertised - receiver.highest < receiver.window // 4
                self._want_ack(stream, immediate=urgent, now=now)
            return self._release_session_credit(receiver.consumed - before) or announce
        if stream_id in self._draining:
            left = self._draining[stream_id]
            used = min(amount, left)
            if used >= left:
                del self._draining[stream_id]
            else:
                self._draining[stream_id] = left - used
            return self._release_session_credit(used)
        return False

    def ping(self, *, now: float) -> int:
        self._require_open()
        self._ping_ident = (self._ping_ident + 1) & f.MAX_U32
        self._user_pings[self._ping_ident] = now
        self._control.append(f.Ping(self._ping_ident))
        return self._ping_ident

    def close(self, code: int = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """End the session for good: every stream is reset, the peer is told once."""
        if self.state is SessionState.CLOSED:
            return
        for stream in list(self._streams.values()):
            if stream.reset_code is None:
                self._events.append(StreamReset(stream.stream_id, ErrorCode.SESSION_CLOSED, reason, False))
            self._discard(stream)
        self._close_frame = f.Close(code, reason)
        self.state = SessionState.CLOSED

    def resume(self, now: float) -> None:
        """The transport reconnected: re-announce state so both sides repair gaps fast."""
        if self.state is SessionState.CLOSED:
            return
        if not self.established:
            self._hello_needed = True
            self._hello_count = 0
        self._pto_count = 0
        for stream in self._streams.values():
            if stream.reset_code is not None:
                stream.reset_needs_send = True
                continue
            if stream.open_unacked:
                stream.open_needs_send = True
            self._probe(stream)
            if stream.receiver.final_size is None or not stream.receiver.done:
                self._acks_pending.add(stream.stream_id)
        if self._acks_pending:
            self._ack_immediate = True
        self._max_data_sent = 0
        self._last_received = now

    # ------------------------------------------------------------------ input

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def receive_packet(self, packet: bytes, *, now: float) -> None:
        self.stats["packets_received"] += 1
        self.stats["bytes_received"] += len(packet)
        if self.state is SessionState.CLOSED:
            self.stats["dropped_closed"] += 1
            return
        try:
            header = f.decode_header(packet)
        except f.FrameError as exc:
            self._reject("malformed_packets", f"bad packet header: {exc}")
            return
        if header.dst_epoch not in (0, self.epoch):
            # Meant for an earlier incarnation of us: tell the peer who we are now.
            self.stats["stale_epoch"] += 1
            self._hello_needed = True
            return
        try:
            frames = f.decode_frames(packet)
        except f.FrameError as exc:
            self._reject("malformed_packets", f"bad frame: {exc}")
            return
        if header.src_epoch != self.peer_epoch and not self._adopt_epoch(header.src_epoch, frames):
            return
        if header.dst_epoch == self.epoch:
            self._peer_knows_us = True
        self._last_received = now
        self._echo_ts = header.ts
        self._echo_received_at = now
        # The peer had our packets up to the one stamped echo_ts: anything sent
        # later that looks acked was acked through an earlier copy (RACK's rule).
        delivered_until = now
        if header.flags & HAS_ECHO:
            age = (_us(now) - header.echo_ts) & f.MAX_U32
            delivered_until = now - age / 1_000_000
            sample = age - header.echo_delay
            if 0 <= sample < 2**31:
                self._rtt.update(sample / 1_000_000)
                self._limit.on_rtt_sample(sample / 1_000_000, now)
        if not self.established and self.peer_epoch and self._peer_knows_us:
            self.state = SessionState.ESTABLISHED
            self._events.append(HandshakeCompleted(self.peer_epoch))
        acked_something = False
        for frame in frames:
            if isinstance(frame, f.Hello):
                self._on_hello(frame)
            elif not self.established:
                self.stats["dropped_before_handshake"] += 1
            elif isinstance(frame, f.Data):
                self._on_data(frame, now)
            elif isinstance(frame, f.Ack):
                acked_something |= self._on_ack(frame, delivered_until, now)
            else:
                self._on_control(frame, now)
        if acked_something:
            acked, self._acked_bytes = self._acked_bytes, 0
            self._limit.on_ack(acked, self._rtt.latest, cap_limited=2 * self._in_flight >= self._limit.limit)
            self._detect_losses(now)

    def _adopt_epoch(self, src_epoch: int, frames: list[f.Frame | f.UnknownFrame]) -> bool:
        """Decide about a packet from an epoch other than the known peer's."""
        if src_epoch < self.peer_epoch:
            self.stats["stale_epoch"] += 1
            return False
        if not any(isinstance(x, f.Hello) for x in frames):
            # A newer peer that has not introduced itself: ask it to.
            self.stats["unknown_epoch"] += 1
            self._hello_needed = True
            return False
        if self.peer_epoch:
            old = self.peer_epoch
            for stream in list(self._streams.values()):
                if stream.reset_code is None:
                    self._events.append(StreamReset(stream.stream_id, ErrorCode.PEER_RESTARTED, "peer restarted", True))
                self._discard(stream, release=False)
            self._reset_peer_state()
            self._events.append(PeerRestarted(old, src_epoch))
        self.peer_epoch = src_epoch
        self._peer_knows_us = False
        self.state = SessionState.HANDSHAKE
        return True

    def _reset_peer_state(self) -> None:
        self._peer_ids = RangeSet()
        self._closed_ids = RangeSet()
        self._draining.clear()
        self._sent_total = 0
        self._peer_max_data = MIN_SESSION_WINDOW
        self._recv_total = 0
        self._consumed_total = 0
        self._max_data = self.config.session_window
        self._max_data_sent = 0
        self._acks_pending.clear()
        self._final_acks.clear()
        self._largest_acked_pn = -1
        self._loss_time = None

    def _on_hello(self, hello: f.Hello) -> None:
        self._peer_max_packet = max(hello.max_packet, MIN_PACKET)
        if hello.stream_window > self._peer_stream_window:
            for stream in self._streams.values():
                if stream.local and stream.open_unacked:
                    stream.sender.max_stream_data = max(stream.sender.max_stream_data, hello.stream_window)
        self._peer_stream_window = max(hello.stream_window, MIN_STREAM_WINDOW)
        self._peer_max_data = max(self._peer_max_data, hello.session_window)
        if hello.reply:
            self._hello_needed = True

    def _on_data(self, frame: f.Data, now: float) -> None:
        stream = self._streams.get(frame.stream_id)
        if stream is None:
            self._unknown_stream(frame.stream_id, frame)
            return
        stream.open_unacked = False
        receiver = stream.receiver
        if stream.reset_code is not None:
            self.stats["data_after_reset"] += 1
            self._settle_reset_bytes(receiver, frame.offset + len(frame.data))
            return
        before = receiver.highest
        try:
            data, fin, new = receiver.on_data(frame.offset, frame.data, frame.fin)
        except FlowError as exc:
            self._reject("flow_violations", f"stream {frame.stream_id}: {exc}")
            self._reset_local(stream, exc.code, str(exc), notify=True)
            return
        self._recv_total += receiver.highest - before
        if self._recv_total > self._max_data:
            reason = f"session data {self._recv_total} beyond granted {self._max_data}"
            self._reject("flow_violations", reason)
            self._reset_local(stream, ErrorCode.FLOW_CONTROL_ERROR, reason, notify=True)
            return
        if not new:
            self.stats["duplicate_data"] += 1
            self._max_data_sent = 0  # the peer may be probing a window we announced in vain
        if data or fin:
            self._events.append(StreamDataReceived(frame.stream_id, data, fin))
        self._eliciting_since_ack += 1
        self._unacked_bytes += len(frame.data)
        # Ack at once when the picture changes (a new gap or a filled one), not
        # for every packet while a gap stays open: the sender learns of the loss
        # from the first ack and each ack costs a whole MQTT message.
        out_of_order = frame.offset != before or (bool(receiver.received) and not frame.data)
        immediate = (
            (not new)
            or fin
            or out_of_order
            or self._unacked_bytes >= self._ack_bytes
            or self._eliciting_since_ack >= 16
        )
        self._want_ack(stream, immediate=immediate, now=now)
        if fin:
            self._maybe_finished(stream)

    def _on_ack(self, frame: f.Ack, delivered_until: float, now: float) -> bool:
        stream = self._streams.get(frame.stream_id)
        if stream is None or stream.reset_code is not None:
            return False
        stream.open_unacked = False
        stream.open_needs_send = False
        sender = stream.sender
        if frame.max_stream_data > sender.max_stream_data:
            sender.max_stream_data = frame.max_stream_data
        if frame.cumulative > sender.next_offset:
            self._reject("protocol_violations", f"stream {frame.stream_id}: ack beyond data sent")
            return False
        newly = sender.on_ack(frame.cumulative, frame.ranges, frame.fin)
        if newly:
            self._acked_bytes += sum(s.end - s.start for s in newly)
            self._pto_count = 0
            self._last_progress = now
            delivered = [s.pn for s in newly if s.sent_at <= delivered_until + 1e-6]
            if delivered:
                self._largest_acked_pn = max(self._largest_acked_pn, max(delivered))
        self._maybe_finished(stream)
        return bool(newly)

    def _on_control(self, frame: f.Frame | f.UnknownFrame, now: float) -> None:
        if isinstance(frame, f.UnknownFrame):
            self._reject("unknown_frames", f"unknown frame type {frame.frame_type:#x} ({frame.length} bytes)")
        elif isinstance(frame, f.Open):
            self._on_open(frame)
        elif isinstance(frame, f.Reset):
            self._on_reset(frame)
        elif isinstance(frame, f.ResetAck | f.Closed):
            self._on_forgotten(frame)
        elif isinstance(frame, f.MaxData):
            self._peer_max_data = max(self._peer_max_data, frame.maximum)
        elif isinstance(frame, f.Ping):
            self._control.append(f.Pong(frame.ident))
            self._max_data_sent = 0  # repeat our credit with the pong
            self.stats["pings_received"] += 1
        elif isinstance(frame, f.Pong):
            sent = self._user_pings.pop(frame.ident, None)
            if sent is not None:
                self._events.append(PongReceived(frame.ident, now - sent))
        elif isinstance(frame, f.Close):
            for stream in list(self._streams.values()):
                if stream.reset_code is None:
                    self._events.append(StreamReset(stream.stream_id, ErrorCode.SESSION_CLOSED, frame.reason, True))
                self._discard(stream)
            self.state = SessionState.CLOSED
            self._events.append(SessionClosed(frame.code, frame.reason, True))

    def _on_open(self, frame: f.Open) -> None:
        sid = frame.stream_id
        stream = self._streams.get(sid)
        if stream is not None:
            self._want_ack(stream, immediate=True)  # our answer was lost
            return
        if self._closed_ids.contains(sid):
            self._control.append(f.Closed(sid))
            return
        if self._is_local_id(sid):
            self._reject("protocol_violations", f"peer opened stream {sid} with our parity")
            return
        self._peer_ids.add(sid, sid + 1)
        stream = self._new_stream(sid, local=False, metadata=frame.metadata)
        open_peer = sum(1 for s in self._streams.values() if not s.local)
        if open_peer > self.config.max_streams:
            self.stats["streams_refused"] += 1
            self._reset_local(stream, ErrorCode.REJECTED, f"more than {self.config.max_streams} streams open")
            return
        self._want_ack(stream, immediate=True)
        self._events.append(StreamOpened(sid, frame.metadata))

    def _on_reset(self, frame: f.Reset) -> None:
        sid = frame.stream_id
        stream = self._streams.get(sid)
        if stream is None:
            if not self._is_local_id(sid) and not self._peer_ids.contains(sid):
                self._peer_ids.add(sid, sid + 1)  # reset overtook its OPEN
                self._closed_ids.add(sid, sid + 1)
            self._control.append(f.ResetAck(sid))
            return
        self._settle_reset_bytes(stream.receiver, frame.final_size)
        self._control.append(f.ResetAck(sid, stream.sender.next_offset))
        if stream.reset_code is None:
            self._events.append(StreamReset(sid, frame.code, frame.reason, True))
        self._discard(stream)

    def _on_forgotten(self, frame: f.ResetAck | f.Closed) -> None:
        stream = self._streams.get(frame.stream_id)
        if stream is None:
            return
        if stream.reset_code is not None:
            if isinstance(frame, f.ResetAck):
                self._settle_reset_bytes(stream.receiver, frame.final_size)
            self._discard(stream)
            return
        if isinstance(frame, f.ResetAck):
            return  # an answer to a reset we never sent: ignore
        if stream.receiver.done and stream.sender.fin_sent and not stream.sender.has_unsent:
            stream.sender.settle_all()
            self._maybe_finished(stream)
            return
        reason = "peer forgot a stream that was still open"
        self._reject("protocol_violations", f"stream {stream.stream_id}: {reason}")
        self._events.append(StreamReset(stream.stream_id, ErrorCode.PROTOCOL_ERROR, reason, True))
        self._discard(stream)

    def _unknown_stream(self, sid: int, frame: f.Frame) -> None:
        if self._closed_ids.contains(sid):
            self.stats["frames_for_closed_streams"] += 1
            self._control.append(f.Closed(sid))
        elif self._is_local_id(sid) or self._peer_ids.contains(sid):
            self._reject("unknown_streams", f"{type(frame).__name__} for unknown stream {sid}")
        else:
            self.stats["frames_before_open"] += 1  # its OPEN was lost or is late

    # ------------------------------------------------------------------ output

    def packets_to_send(self, now: float) -> list[bytes]:
        if self.state is SessionState.CLOSED:
            return self._close_packets(now)
        if not self.peer_epoch or not self.established:
            if self._hello_needed or self._hello_due(now):
                return self._hello_packet(now)
            return []
        if not self._has_output(now):
            return []
        builder = PacketBuilder(max_packet=self.packet_size, first_pn=self._pn, header=lambda: self._header(now))
        if self._hello_needed:
            builder.add(f.encode_frame(self._hello()), eliciting=False)
            self._hello_needed = False
        had_acks = bool(self._acks_pending)
        for sid in sorted(self._acks_pending):
            stream = self._streams.get(sid)
            frame = self._ack_frame(stream) if stream is not None else self._final_acks.get(sid)
            if frame is not None:
                builder.add(f.encode_frame(frame), eliciting=False, ack=True)
        max_data_due = self._max_data - self._max_data_sent >= self.config.session_window // 2
        if max_data_due:
            # A lost update is repaired on request: duplicates (window probes) and
            # pings make us send it again (_max_data_sent = 0).
            builder.add(f.encode_frame(f.MaxData(self._max_data)), eliciting=False, ack=True)
            self._max_data_sent = self._max_data
        for control in self._control:
            # Pings are not "eliciting" here: that flag anchors the probe timer,
            # and keepalives must not postpone the repair of lost data forever.
            builder.add(f.encode_frame(control), eliciting=isinstance(control, f.Data))
        self._control.clear()
        self._write_stream_control(builder, now)
        self._write_data(builder, now)
        self._keepalive(builder, now)
        ack_due = self._ack_immediate or (self._ack_deadline is not None and now >= self._ack_deadline)
        if builder.only_acks and not ack_due and not max_data_due:
            return []  # keep the acks for later, maybe riding on data
        if had_acks:
            self._acks_pending.clear()
            self._final_acks.clear()
            self._ack_immediate = False
            self._ack_deadline = None
            self._eliciting_since_ack = 0
            self._unacked_bytes = 0
        packets = builder.finish()
        self._pn = builder.pn
        if builder.eliciting_sent:
            self._last_eliciting_sent = now
        self.stats["packets_sent"] += len(packets)
        return packets

    def _has_output(self, now: float) -> bool:
        """Cheap check that a packet would carry something (most flushes carry nothing)."""
        if self._hello_needed or self._control or self._close_frame is not None:
            return True
        if self._acks_pending and (
            self._ack_immediate or (self._ack_deadline is not None and now >= self._ack_deadline)
        ):
            return True
        if self._max_data - self._max_data_sent >= self.config.session_window // 2:
            return True
        ping = self._ping_deadline()
        if ping is not None and now >= ping:
            return True
        for stream in self._streams.values():
            if stream.reset_needs_send or stream.open_needs_send:
                return True
            if stream.reset_code is None:
                sender = stream.sender
                if sender.lost or sender.fin_lost or sender.has_unsent:
                    return True
        return False

    def _hello(self) -> f.Hello:
        return f.Hello(
            reply=not self.established,
            max_packet=self.config.max_packet,
            stream_window=self.config.stream_window,
            session_window=self.config.session_window,
            role=self.role.value,
        )

    def _hello_due(self, now: float) -> bool:
        deadline = self._hello_deadline()
        return deadline is not None and now >= deadline

    def _hello_deadline(self) -> float | None:
        if self.established or self._hello_sent_at is None:
            return None
        interval = min(self.config.hello_interval * 2 ** min(self._hello_count, 16), _MAX_HELLO_INTERVAL)
        return self._hello_sent_at + interval

    def _hello_packet(self, now: float) -> list[bytes]:
        if self._hello_sent_at is not None and self._hello_due(now):
            self._hello_count += 1
        self._hello_needed = False
        self._hello_sent_at = now
        self.stats["packets_sent"] += 1
        return [self._header(now) + f.encode_frame(self._hello())]

    def _close_packets(self, now: float) -> list[bytes]:
        if self._close_frame is None or not self.peer_epoch:
            return []
        frame, self._close_frame = self._close_frame, None
        return [self._header(now) + f.encode_frame(frame)]

    def _header(self, now: float) -> bytes:
        echo_delay = 0
        flags = 0
        if self._echo_received_at is not None:
            flags = HAS_ECHO
            echo_delay = int((now - self._echo_received_at) * 1_000_000)
        return f.encode_header(f.PacketHeader(self.epoch, self.peer_epoch, _us(now), self._echo_ts, echo_delay, flags))

    def _ack_frame(self, stream: StreamState) -> f.Ack:
        receiver = stream.receiver
        receiver.advertised = receiver.max_stream_data
        return f.Ack(
            stream.stream_id,
            receiver.delivered,
            receiver.max_stream_data,
            receiver.gap_ranges[: f.MAX_SACK_RANGES],
            receiver.fin_delivered,
        )

    def _write_stream_control(self, builder: PacketBuilder, now: float) -> None:
        for stream in self._streams.values():
            if stream.reset_needs_send:
                frame = f.Reset(
                    stream.stream_id, stream.reset_code or 0, stream.sender.next_offset, stream.reset_reason
                )
                builder.add(f.encode_frame(frame), eliciting=True)
                stream.reset_needs_send = False
                stream.reset_sent_at = now
            elif stream.open_needs_send:
                builder.add(f.encode_frame(f.Open(stream.stream_id, stream.metadata)), eliciting=True)
                stream.open_needs_send = False

    def _write_data(self, builder: PacketBuilder, now: float) -> None:
        """Retransmissions first, then new data, one chunk per stream per round.

        Both stay under ``max_in_flight``: the bytes travelling (segments sent,
        not acked, not declared lost - TCP's "pipe"), so the queues between us
        and the peer stay short and a keystroke on one stream does not wait
        behind megabytes of another stream's transfer, while a hole being
        repaired does not stall sending.
        """
        streams = [s for s in self._streams.values() if s.reset_code is None]
        self._batch_deadline = None
        if not streams:
            return
        cap = self._limit.limit
        self._in_flight = sum(seg.end - seg.start for s in streams for seg in s.sender.in_flight)
        for stream in streams:
            sender = stream.sender
            while sender.lost and self._in_flight < cap:
                start, end = sender.lost.pop_first()
                if end - start > cap - self._in_flight:  # send what fits, keep the rest
                    cut = start + cap - self._in_flight
                    sender.lost.add(cut, end)
                    end = cut
                self.stats["retransmitted_bytes"] += end - start
                while start < end:
                    room = self._data_room(builder)
                    chunk_end = min(end, start + room)
                    fin = sender.fin_sent and chunk_end == sender.next_offset and sender.fin_lost
                    self._emit_segment(builder, stream, start, chunk_end, fin, now)
                    if fin:
                        sender.fin_lost = False
                    start = chunk_end
            if sender.fin_lost and not sender.fin_acked:
                sender.fin_lost = False
                self._emit_segment(builder, stream, sender.next_offset, sender.next_offset, True, now)
        self._rr = (self._rr + 1) % len(streams)
        active = streams[self._rr :] + streams[: self._rr]
        while active:
            still: list[StreamState] = []
            for stream in active:
                if self._send_new_chunk(builder, stream, now):
                    still.append(stream)
            active = still

    def _data_room(self, builder: PacketBuilder) -> int:
        if builder.space - f.DATA_OVERHEAD < _MIN_DATA_CHUNK:
            builder.close_packet()
        return builder.space - f.DATA_OVERHEAD

    def _send_new_chunk(self, builder: PacketBuilder, stream: StreamState, now: float) -> bool:
        """Send one chunk of new data (or the FIN); True if more could follow."""
        sender = stream.sender
        if not sender.has_unsent:
            return False
        session_room = min(self._peer_max_data - self._sent_total, self._limit.limit - self._in_flight)
        available = min(sender.sendable_new(), max(session_room, 0))
        unsent = sender.write_offset - sender.next_offset
        final_chunk = sender.fin_queued and available == unsent
        if available <= 0 and not (final_chunk and sender.next_offset == sender.write_offset):
            return False
        full = builder.full_space - f.DATA_OVERHEAD
        if (
            available < full
            and not final_chunk
            and sender.in_flight
            and sender.queued_at is not None
            and now < sender.queued_at + self.config.batch_delay
        ):
            # Nagle with a deadline: let small writes coalesce while data is in flight.
            deadline = sender.queued_at + self.config.batch_delay
            self._batch_deadline = min(self._batch_deadline or deadline, deadline)
            return False
        room = self._data_room(builder)
        length = min(available, room)
        start = sender.next_offset
        fin = sender.fin_queued and start + length == sender.write_offset
        sender.next_offset += length
        self._sent_total += length
        if fin:
            sender.fin_sent = True
        self._emit_segment(builder, stream, start, start + length, fin, now)
        if sender.next_offset == sender.write_offset:
            sender.queued_at = None
        return sender.has_unsent

    def _emit_segment(
        self, builder: PacketBuilder, stream: StreamState, start: int, end: int, fin: bool, now: float
    ) -> None:
        sender = stream.sender
        payload = sender.slice(start, end)
        builder.ensure(f.DATA_OVERHEAD + len(payload))
        builder.add_parts((f.encode_data_prefix(stream.stream_id, start, len(payload), fin), payload))
        if sender.in_flight and start < sender.in_flight[-1].end:
            sender.in_order = False
        self._in_flight += end - start
        sender.in_flight.append(Segment(start, end, fin, builder.pn, now))
        self.stats["data_frames_sent"] += 1

    def _keepalive(self, builder: PacketBuilder, now: float) -> None:
        deadline = self._ping_deadline()
        if deadline is not None and now >= deadline:
            self._ping_ident = (self._ping_ident + 1) & f.MAX_U32
            builder.add(f.encode_frame(f.Ping(self._ping_ident)), eliciting=False)
            self._last_ping_sent = now

    def _ping_deadline(self) -> float | None:
        """While streams are open, ping when the peer has been quiet for a while."""
        if not self._streams or self._last_received is None:
            return None
        return max(self._last_received, self._last_ping_sent or 0.0) + self.config.ping_interval

    def _idle_deadline(self) -> float | None:
        if not self._streams or self._last_received is None:
            return None
        return self._last_received + self.config.idle_timeout

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        if self.state is SessionState.CLOSED:
            return None
        deadlines = [self._hello_deadline(), self._ack_deadline, self._batch_deadline]
        if self.established:
            deadlines.append(self._loss_time if self._loss_time is not None else self._pto_deadline())
            deadlines += [self._idle_deadline(), self._ping_deadline()]
        present = [d for d in deadlines if d is not None]
        return min(present) if present else None

    def handle_timer(self, now: float) -> None:
        if self.state is SessionState.CLOSED:
            return
        if self._hello_due(now):
            self._hello_needed = True
        if not self.established:
            return
        if self._loss_time is not None and now >= self._loss_time:
            self._detect_losses(now)
        else:
            deadline = self._pto_deadline()
            if deadline is not None and now >= deadline:
                self._on_pto()
        idle_deadline = self._idle_deadline()
        if idle_deadline is not None and now >= idle_deadline:
            self._timeout(now - (self._last_received or now))

    def _pto_deadline(self) -> float | None:
        if self._last_eliciting_sent is None or not self._has_outstanding():
            return None
        # Restarted by sends and by acks of new data (RFC 6298 s5.3), so a long
        # queue that is draining is not mistaken for a loss.
        since = max(self._last_eliciting_sent, self._last_progress)
        return since + self._rtt.rto(self._pto_count) + self.config.max_ack_delay

    def _has_outstanding(self) -> bool:
        for stream in self._streams.values():
            if stream.reset_code is not None or stream.open_unacked:
                return True
            sender = stream.sender
            if sender.in_flight or sender.lost or sender.fin_lost:
                return True
            if sender.has_unsent and self._credit_blocked(sender):
                return True  # blocked on credit: probe the window
        return False

    def _on_pto(self) -> None:
        self.stats["probe_timeouts"] += 1
        self._pto_count += 1
        for stream in self._streams.values():
            if stream.reset_code is not None:
                stream.reset_needs_send = True
                continue
            if stream.open_unacked:
                stream.open_needs_send = True
            self._probe(stream)
        self._last_eliciting_sent = None  # re-armed when the probes go out

    def _probe(self, stream: StreamState) -> None:
        """Make the peer answer: resend the oldest and newest segment in flight,
        or, for a stream stalled on credit, send a window probe (empty DATA)."""
        sender = stream.sender
        if sender.in_flight:
            probes = [sender.in_flight[0]]
            if len(sender.in_flight) > 1:
                probes.append(sender.in_flight[-1])
            for seg in probes:
                sender.mark_lost(seg)
            sender.in_flight = sender.in_flight[1:-1] if len(probes) > 1 else sender.in_flight[1:]
        elif sender.has_unsent and self._credit_blocked(sender):
            self._control.append(f.Data(stream.stream_id, sender.next_offset, b""))

    def _credit_blocked(self, sender: StreamSender) -> bool:
        return sender.sendable_new() == 0 or self._sent_total >= self._peer_max_data

    def _detect_losses(self, now: float) -> None:
        """RFC 9002 s6.1 over segments: packet and time thresholds."""
        loss_delay = self._rtt.loss_delay()
        largest = self._largest_acked_pn
        self._loss_time = None
        for stream in self._streams.values():
            sender = stream.sender
            if not sender.in_flight:
                continue
            # in_flight is in send (packet number) order: only a prefix can be lost.
            in_flight = sender.in_flight
            split = 0
            while split < len(in_flight) and in_flight[split].pn < largest:
                split += 1
            if not split:
                continue
            keep: list[Segment] = []
            for seg in in_flight[:split]:
                if largest - seg.pn >= K_PACKET_THRESHOLD or seg.sent_at + loss_delay <= now:
                    sender.mark_lost(seg)
                    self.stats["segments_lost"] += 1
                else:
                    keep.append(seg)
                    when = seg.sent_at + loss_delay
                    self._loss_time = when if self._loss_time is None else min(self._loss_time, when)
            sender.in_flight = keep + in_flight[split:]

    def _timeout(self, idle: float) -> None:
        self.stats["idle_timeouts"] += 1
        for stream in list(self._streams.values()):
            if stream.reset_code is None:
                reason = f"no word from the peer for {idle:.1f}s"
                self._events.append(StreamReset(stream.stream_id, ErrorCode.TIMEOUT, reason, False))
                # Best effort: if the peer is alive after all, its side ends too.
                self._control.append(f.Reset(stream.stream_id, ErrorCode.TIMEOUT, stream.sender.next_offset, reason))
            self._discard(stream)
        self._events.append(SessionTimedOut(idle))

    # ------------------------------------------------------------------ helpers

    def _require_open(self) -> None:
        if self.state is SessionState.CLOSED:
            raise LocalProtocolError("the session is closed")

    def _is_local_id(self, sid: int) -> bool:
        return (sid % 2 == 1) == (self.role is Role.DEVICE)

    def _new_stream(self, sid: int, *, local: bool, metadata: dict[str, Any]) -> StreamState:
        stream = StreamState(
            stream_id=sid,
            local=local,
            sender=StreamSender(self._peer_stream_window),
            receiver=StreamReceiver(self.config.stream_window),
            metadata=metadata,
        )
        self._streams[sid] = stream
        return stream

    def _writable(self, stream_id: int) -> StreamState:
        self._require_open()
        stream = self._streams.get(stream_id)
        if stream is None:
            raise LocalProtocolError(f"stream {stream_id} does not exist (closed or never opened)")
        if stream.reset_code is not None:
            raise LocalProtocolError(f"stream {stream_id} was reset")
        return stream

    def _want_ack(self, stream: StreamState, *, immediate: bool, now: float | None = None) -> None:
        self._acks_pending.add(stream.stream_id)
        if immediate:
            self._ack_immediate = True
        elif self._ack_deadline is None and now is not None:
            self._ack_deadline = now + self.config.max_ack_delay

    def _reset_local(self, stream: StreamState, code: int, reason: str, *, notify: bool = False) -> None:
        stream.reset_code = code
        stream.reset_reason = reason
        stream.reset_needs_send = True
        stream.open_needs_send = False
        sender = stream.sender
        sender.buffer.clear()
        sender.in_flight.clear()
        sender.lost = RangeSet()
        sender.fin_lost = False
        receiver = stream.receiver
        receiver.pending.clear()
        self._release_session_credit(max(receiver.highest, receiver.delivered) - receiver.consumed)
        receiver.consumed = max(receiver.highest, receiver.delivered)
        self._acks_pending.discard(stream.stream_id)
        if notify:
            self._events.append(StreamReset(stream.stream_id, code, reason, False))

    def _maybe_finished(self, stream: StreamState) -> None:
        if stream.reset_code is None and stream.sender.done and stream.receiver.done:
            unread = stream.receiver.delivered - stream.receiver.consumed
            if unread > 0:
                self._draining[stream.stream_id] = unread
            if stream.stream_id in self._acks_pending:
                self._final_acks[stream.stream_id] = self._ack_frame(stream)
            self._discard(stream, release=False)
            self._events.append(StreamFinished(stream.stream_id))

    def _discard(self, stream: StreamState, *, release: bool = True) -> None:
        sid = stream.stream_id
        self._streams.pop(sid, None)
        self._closed_ids.add(sid, sid + 1)
        if sid not in self._final_acks:
            self._acks_pending.discard(sid)
        if release and stream.reset_code is None:
            receiver = stream.receiver
            self._release_session_credit(max(receiver.highest, receiver.delivered) - receiver.consumed)

    def _settle_reset_bytes(self, receiver: StreamReceiver, final_size: int) -> None:
        """Bytes the peer sent on a stream being reset count as received and read."""
        if final_size > receiver.highest:
            extra = final_size - receiver.highest
            receiver.highest = final_size
            self._recv_total += extra
            if receiver.consumed >= receiver.delivered:  # already released up to highest
                receiver.consumed += extra
                self._release_session_credit(extra)

    def _release_session_credit(self, amount: int) -> bool:
        """Grow session credit; True if the growth is worth a MAX_DATA now."""
        if amount <= 0:
            return False
        self._consumed_total += amount
        self._max_data = self._consumed_total + self.config.session_window
        return self._max_data - self._max_data_sent >= self.config.session_window // 2

    def _reject(self, counter: str, reason: str) -> None:
        self.stats[counter] += 1
        self._events.append(InputRejected(reason))
