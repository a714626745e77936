"""Tunables of one session core; every field has a sane default."""

from __future__ import annotations

from dataclasses import dataclass

# Protocol constants (PROTOCOL.md "Flow control"): a receiver always grants at
# least this much, so a sender may use them before the peer's HELLO arrives.
MIN_STREAM_WINDOW = 64 * 1024
MIN_SESSION_WINDOW = 256 * 1024
MIN_PACKET = 1024


@dataclass(slots=True, frozen=True, kw_only=True)
class SessionConfig:
    max_packet: int = 64 * 1024
    """Largest MQTT payload we send or accept: min(broker maximum packet size, this).
    64 KiB passes every broker we know of, including MQTT 3.1.1 ones that cannot
    announce a limit and drop the connection instead. Where the broker allows
    more (mosquitto as configured in broker-config: 256 KiB), 256 KiB moves
    bulk data with about half the CPU per byte on every hop."""
    base_packet: int = 64 * 1024
    """Packet size while the in-flight cap is small. Above it, packets grow to an
    eighth of the cap (up to ``max_packet``): on a fast link fewer, larger messages
    cost every hop less CPU; on a slow one a keystroke waits at the broker behind
    at most one such packet, and about eight stay in flight to keep the link busy."""
    stream_window: int = 16 * 1024 * 1024
    """Bytes a peer may send on one stream beyond what our reader consumed."""
    session_window: int = 64 * 1024 * 1024
    """Bytes a peer may send on all streams beyond what our readers consumed."""
    max_in_flight: int = 2 * 1024 * 1024
    """Most unacknowledged bytes in flight per session. The actual cap adapts
    below this to keep the queue near ``queue_target`` (see inflight.py), so
    interactive streams sharing the session with a bulk transfer stay snappy."""
    min_in_flight: int = 64 * 1024
    """The adaptive cap never goes below this."""
    queue_target: float = 0.03
    """Queueing delay (seconds) the in-flight cap aims at; 0 keeps it fixed at max_in_flight."""
    max_ack_delay: float = 0.002
    batch_delay: float = 0.002
    """Longest a small write waits to be coalesced while data is in flight."""
    initial_rtt: float = 0.1
    min_rto: float = 0.05
    max_rto: float = 10.0
    hello_interval: float = 1.0
    ping_interval: float = 15.0
    idle_timeout: float = 60.0
    max_streams: int = 4096
    """Streams the peer may have open at once; more are refused."""

    def __post_init__(self) -> None:
        if self.max_packet < MIN_PACKET or self.base_packet < MIN_PACKET:
            raise ValueError(f"max_packet and base_packet must be at least {MIN_PACKET} bytes")
        if self.stream_window < MIN_STREAM_WINDOW:
            raise ValueError(f"stream_window must be at least {MIN_STREAM_WINDOW} bytes")
        if self.session_window < max(MIN_SESSION_WINDOW, self.stream_window):
            raise ValueError("session_window must be at least max(256 KiB, stream_window)")
        if self.min_in_flight <= 0:
            raise ValueError("min_in_flight must be positive")
        for name in ("max_ack_delay", "batch_delay", "min_rto", "hello_interval", "queue_target"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if not 0 < self.min_rto <= self.max_rto:
            raise ValueError("need 0 < min_rto <= max_rto")
        if self.idle_timeout <= self.ping_interval:
            raise ValueError("idle_timeout must be longer than ping_interval")
