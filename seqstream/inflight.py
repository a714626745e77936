"""How many unacknowledged bytes a session may have travelling.

A fixed cap is wrong at both ends: two megabytes is a few milliseconds on a
LAN but sixteen seconds of queue on a 1 Mbit/s cellular link, and a keystroke
on a shell stream waits behind all of it. So the cap follows the queueing
delay the session itself observes, as LEDBAT (RFC 6817) does: the extra
round-trip time over the lowest one recently seen is queue; below
``target`` the cap grows (at most doubling per round trip, and only while
the cap is what limits sending), above it the cap shrinks (at most halving
per round trip). The queue, and so the delay a keystroke sees behind a bulk
transfer, settles near ``target`` whatever the link's speed.

The base delay is the minimum over a sliding window of a few buckets, so a
path change (another broker, a new cellular cell) is learned within
``bucket_seconds * buckets`` rather than never.
"""

from __future__ import annotations

from collections import deque

GROW_GAIN = 1.0
"""Cap growth per acked byte at zero queue (1.0: doubling per round trip)."""
SHRINK_GAIN = 0.5
"""Cap reduction per acked byte at twice the target delay (0.5: halving per round trip)."""


class InFlightLimit:
    __slots__ = ("_base", "_bucket_seconds", "_buckets", "cap", "ceiling", "floor", "target")

    def __init__(
        self,
        *,
        floor: int,
        ceiling: int,
        initial: int,
        target: float,
        bucket_seconds: float = 30.0,
        buckets: int = 4,
    ) -> None:
        if not 0 < floor <= ceiling:
            raise ValueError("need 0 < floor <= ceiling")
        self.floor = floor
        self.ceiling = ceiling
        self.cap = float(min(max(initial, floor), ceiling) if target > 0 else ceiling)
        self.target = target
        self._bucket_seconds = bucket_seconds
        self._buckets = buckets
        self._base: deque[tuple[float, float]] = deque()  # (bucket start, min rtt in it)

    @property
    def limit(self) -> int:
        return int(self.cap)

    def base_delay(self) -> float | None:
        return min((rtt for _, rtt in self._base), default=None)

    def on_rtt_sample(self, rtt: float, now: float) -> None:
        if rtt < 0:
            return
        if self._base and now - self._base[-1][0] < self._bucket_seconds:
            start, low = self._base[-1]
            self._base[-1] = (start, min(low, rtt))
        else:
            self._base.append((now, rtt))
            while len(self._base) > self._buckets:
                self._base.popleft()

    def on_ack(self, acked: int, rtt: float, *, cap_limited: bool) -> None:
        """``acked`` bytes newly acknowledged by a packet whose round trip took ``rtt``.

        ``cap_limited``: sending had filled (most of) the cap, so the acks say
        something about whether the path holds more.
        """
        base = self.base_delay()
        if acked <= 0 or base is None or self.target <= 0:
            return
        off_target = (self.target - (rtt - base)) / self.target
        if off_target > 0:
            if not cap_limited:
                return
            self.cap += GROW_GAIN * min(off_target, 1.0) * acked
        else:
            self.cap += SHRINK_GAIN * max(off_target, -1.0) * acked
        self.cap = min(max(self.cap, self.floor), self.ceiling)
