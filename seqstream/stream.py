"""Per-stream send and receive state.

Invariants (PROTOCOL.md "Streams"):
* Offsets are absolute byte positions; the FIN carries the final size and a
  final size never changes once seen.
* The sender keeps every byte from the cumulative ack up to what the app wrote,
  so any range can be sent again; credit (``max_stream_data``) only grows.
* The receiver delivers bytes once, in order, and never holds more than it
  granted: ``max_stream_data - consumed <= window``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ErrorCode
from .rangeset import RangeSet
from .sendbuffer import SendBuffer


@dataclass(slots=True)
class Segment:
    """One transmission of ``[start, end)`` (and maybe the FIN) in packet ``pn``."""

    start: int
    end: int
    fin: bool
    pn: int
    sent_at: float


class FlowError(Exception):
    """The peer broke a stream rule; ``code`` is what the stream is reset with."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class StreamSender:
    __slots__ = (
        "acked",
        "base",
        "buffer",
        "fin_acked",
        "fin_lost",
        "fin_queued",
        "fin_sent",
        "in_flight",
        "in_order",
        "lost",
        "max_stream_data",
        "next_offset",
        "queued_at",
        "write_offset",
    )

    def __init__(self, max_stream_data: int) -> None:
        self.buffer = SendBuffer()  # bytes from ``base`` to ``write_offset``
        self.base = 0  # cumulative ack: every byte below is acknowledged
        self.write_offset = 0
        self.next_offset = 0  # first byte never sent
        self.max_stream_data = max_stream_data
        self.acked = RangeSet()  # selectively acked ranges above ``base``
        self.lost = RangeSet()  # ranges to send again
        self.in_flight: list[Segment] = []
        self.fin_queued = False
        self.fin_sent = False
        self.fin_acked = False
        self.fin_lost = False
        self.queued_at: float | None = None
        self.in_order = True  # in_flight is sorted by offset (no retransmission in it)

    def write(self, data: bytes, now: float) -> None:
        if data:
            if self.queued_at is None:
                self.queued_at = now
            self.buffer.append(data)
            self.write_offset += len(data)

    @property
    def done(self) -> bool:
        return self.fin_acked

    @property
    def unacked(self) -> int:
        """Bytes written but not yet acknowledged (what ``drain`` waits on)."""
        return self.write_offset - self.base

    @property
    def has_unsent(self) -> bool:
        return self.next_offset < self.write_offset or (self.fin_queued and not self.fin_sent)

    def sendable_new(self) -> int:
        """New bytes that credit allows now (the session limit is applied by the caller)."""
        return max(min(self.write_offset, self.max_stream_data) - self.next_offset, 0)

    def slice(self, start: int, end: int) -> bytes | memoryview:
        return self.buffer.slice(start, end)

    def on_ack(self, cumulative: int, ranges: tuple[tuple[int, int], ...], fin: bool) -> list[Segment]:
        """Apply an ACK; return the in-flight segments it newly acknowledged."""
        cumulative = min(cumulative, self.next_offset)
        if cumulative > self.base:
            self.buffer.release_below(cumulative)
            self.base = cumulative
            self.acked.discard_below(cumulative)
            self.lost.discard_below(cumulative)
        for start, end in ranges:
            end = min(end, self.next_offset)
            if start < end:
                self.acked.add(start, end)
        if self.lost:
            self._drop_acked_from_lost()
        if fin and self.fin_sent and self.base >= self.write_offset:
            self.fin_acked = True
            self.fin_lost = False
        in_flight = self.in_flight
        base, fin_acked = self.base, self.fin_acked
        if not self.acked and self.in_order:
            # No selective acks and no retransmission in flight: the segments are
            # in offset order, so the acknowledged ones are a prefix.
            i, n = 0, len(in_flight)
            while i < n and in_flight[i].end <= base and not (in_flight[i].fin and not fin_acked):
                i += 1
            newly = in_flight[:i]
            del in_flight[:i]
            return newly
        newly = []
        keep: list[Segment] = []
        acked = self.acked
        for seg in in_flight:
            if seg.fin and not fin_acked:
                keep.append(seg)
            elif seg.end <= base or acked.covers(max(seg.start, base), seg.end):
                newly.append(seg)
            else:
                keep.append(seg)
        self.in_flight = keep
        if not keep:
            self.in_order = True
        return newly

    def _drop_acked_from_lost(self) -> None:
        remaining = RangeSet()
        for start, end in self.lost:
            for gap in self.acked.missing(max(start, self.base), end):
                remaining.add(*gap)
        self.lost = remaining

    def mark_lost(self, seg: Segment) -> None:
        for gap in self.acked.missing(max(seg.start, self.base), seg.end):
            self.lost.add(*gap)
        if seg.fin and not self.fin_acked:
            self.fin_lost = True

    def settle_all(self) -> None:
        """The peer forgot the stream, so everything we sent has arrived."""
        self.buffer.clear()
        self.base = self.next_offset
        self.acked = RangeSet()
        self.lost = RangeSet()
        self.in_flight.clear()
        self.in_order = True
        if self.fin_sent:
            self.fin_acked = True
            self.fin_lost = False


class StreamReceiver:
    __slots__ = (
        "advertised",
        "consumed",
        "delivered",
        "fin_delivered",
        "final_size",
        "highest",
        "max_stream_data",
        "pending",
        "received",
        "window",
    )

    def __init__(self, window: int) -> None:
        self.window = window
        self.delivered = 0  # bytes handed to the application, in order
        self.consumed = 0  # bytes the application has read (frees credit)
        self.max_stream_data = window  # credit we grant (absolute)
        self.advertised = window  # credit the peer has been told
        self.highest = 0  # highest offset received, for session accounting
        self.final_size: int | None = None
        self.fin_delivered = False
        self.received = RangeSet()  # ranges held above ``delivered``
        self.pending: dict[int, bytes] = {}

    @property
    def done(self) -> bool:
        return self.fin_delivered

    def on_data(self, offset: int, data: bytes, fin: bool) -> tuple[bytes, bool, bool]:
        """Take a DATA frame; return (in-order bytes, FIN reached, frame was new).

        Raises ``FlowError`` for credit and final-size violations.
        """
        end = offset + len(data)
        if fin:
            if self.final_size is not None and self.final_size != end:
                raise FlowError(ErrorCode.FINAL_SIZE_ERROR, f"final size changed from {self.final_size} to {end}")
            if end < self.highest:
                raise FlowError(ErrorCode.FINAL_SIZE_ERROR, f"final size {end} below received offset {self.highest}")
            self.final_size = end
        elif self.final_size is not None and end > self.final_size:
            raise FlowError(ErrorCode.FINAL_SIZE_ERROR, f"data up to {end} beyond final size {self.final_size}")
        if end > self.max_stream_data:
            raise FlowError(
                ErrorCode.FLOW_CONTROL_ERROR, f"data up to {end} beyond granted credit {self.max_stream_data}"
            )
        self.highest = max(self.highest, end)
        new = False
        start = max(offset, self.delivered)
        if start < end:
            for gap_start, gap_end in self.received.missing(start, end):
                self.pending[gap_start] = data[gap_start - offset : gap_end - offset]
                self.received.add(gap_start, gap_end)
                new = True
        chunks: list[bytes] = []
        while self.delivered in self.pending:
            chunk = self.pending.pop(self.delivered)
            chunks.append(chunk)
            self.delivered += len(chunk)
        if chunks:
            self.received.discard_below(self.delivered)
        reached_fin = not self.fin_delivered and self.final_size is not None and self.delivered == self.final_size
        if reached_fin:
            self.fin_delivered = True
            new = True
        return b"".join(chunks), reached_fin, new

    def consume(self, amount: int) -> bool:
        """Record bytes the app read; True if the new credit is worth announcing."""
        self.consumed = min(self.consumed + amount, self.delivered)
        self.max_stream_data = self.consumed + self.window
        return self.final_size is None and self.max_stream_data - self.advertised >= self.window // 4

    @property
    def gap_ranges(self) -> tuple[tuple[int, int], ...]:
        return tuple(self.received)


@dataclass(slots=True)
class StreamState:
    """Everything the session tracks about one stream."""

    stream_id: int
    local: bool  # opened by this side
    sender: StreamSender
    receiver: StreamReceiver
    metadata: dict = field(default_factory=dict)
    open_unacked: bool = False  # our OPEN has not been answered yet
    open_needs_send: bool = False
    ack_needed: bool = False
    reset_code: int | None = None  # set once we reset the stream
    reset_reason: str = ""
    reset_needs_send: bool = False
    reset_sent_at: float = 0.0
