"""Round-trip estimation and loss timers.

RTT smoothing and the retransmission timeout follow RFC 6298 s2 (alpha 1/8,
beta 1/4, RTO = SRTT + 4 RTTVAR, doubled on each expiry, s5.5). Loss detection
borrows RFC 9002 s6.1: a segment is lost once a segment sent at least
``K_PACKET_THRESHOLD`` packets later was acknowledged, or once it is older than
``K_TIME_THRESHOLD`` RTTs than a later acknowledged one.
"""

from __future__ import annotations

K_ALPHA = 1 / 8  # RFC 6298 s2.3
K_BETA = 1 / 4  # RFC 6298 s2.3
K_PACKET_THRESHOLD = 3  # RFC 9002 s6.1.1
K_TIME_THRESHOLD = 9 / 8  # RFC 9002 s6.1.2
K_GRANULARITY = 0.001  # RFC 9002 s6.1.2


class RttEstimator:
    __slots__ = ("_max_rto", "_min_rto", "has_sample", "latest", "min_rtt", "smoothed", "variance")

    def __init__(self, *, initial_rtt: float, min_rto: float, max_rto: float) -> None:
        self.latest = initial_rtt
        self.min_rtt = initial_rtt
        self.smoothed = initial_rtt
        self.variance = initial_rtt / 2
        self.has_sample = False
        self._min_rto = min_rto
        self._max_rto = max_rto

    def update(self, sample: float) -> None:
        if sample < 0:
            return
        self.latest = sample
        if not self.has_sample:  # RFC 6298 s2.2
            self.has_sample = True
            self.min_rtt = sample
            self.smoothed = sample
            self.variance = sample / 2
            return
        self.min_rtt = min(self.min_rtt, sample)
        self.variance = (1 - K_BETA) * self.variance + K_BETA * abs(self.smoothed - sample)
        self.smoothed = (1 - K_ALPHA) * self.smoothed + K_ALPHA * sample

    def rto(self, backoff: int = 0) -> float:
        base = self.smoothed + max(4 * self.variance, K_GRANULARITY)
        return min(max(base, self._min_rto) * (2**backoff), self._max_rto)

    def loss_delay(self) -> float:
        return max(K_TIME_THRESHOLD * max(self.smoothed, self.latest), K_GRANULARITY)
