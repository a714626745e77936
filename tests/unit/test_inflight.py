"""The adaptive in-flight cap: its rule alone, and a session on a slow simulated link."""

from __future__ import annotations

import statistics

from hypothesis import given
from hypothesis import strategies as st

from seqstream import SessionConfig, StreamDataReceived
from seqstream.inflight import InFlightLimit

from .sim import LinkProfile, Pair

FLOOR, CEILING = 64 * 1024, 2 * 1024 * 1024

acks = st.lists(
    st.tuples(st.integers(0, 256 * 1024), st.floats(0.0005, 2.0), st.booleans(), st.floats(0, 5)), max_size=60
)


@given(acks, st.floats(0.001, 0.2))
def test_cap_stays_in_bounds_and_moves_at_most_by_the_acked_bytes(events, target) -> None:
    limit = InFlightLimit(floor=FLOOR, ceiling=CEILING, initial=256 * 1024, target=target)
    now = 0.0
    for acked, rtt, limited, gap in events:
        now += gap
        limit.on_rtt_sample(rtt, now)
        before = limit.cap
        limit.on_ack(acked, rtt, cap_limited=limited)
        assert FLOOR <= limit.cap <= CEILING
        assert abs(limit.cap - before) <= acked + 1e-6
        if not limited:
            assert limit.cap <= before  # no evidence the path holds more: never grow


def test_grows_without_queue_and_shrinks_with_one() -> None:
    limit = InFlightLimit(floor=FLOOR, ceiling=CEILING, initial=256 * 1024, target=0.03)
    limit.on_rtt_sample(0.05, 0.0)
    limit.on_ack(256 * 1024, 0.05, cap_limited=True)  # no queue: one cap's worth of acks doubles it
    assert limit.limit == 512 * 1024
    limit.on_ack(512 * 1024, 0.05 + 0.06, cap_limited=True)  # queue of twice the target: halve
    assert limit.limit == 256 * 1024


def test_base_delay_forgets_an_old_path() -> None:
    limit = InFlightLimit(floor=FLOOR, ceiling=CEILING, initial=FLOOR, target=0.03, bucket_seconds=10, buckets=3)
    limit.on_rtt_sample(0.001, 0.0)  # a LAN broker...
    for second in range(1, 60):
        limit.on_rtt_sample(0.2, float(second))  # ...then a satellite path
    assert limit.base_delay() == 0.2


def run_bulk_with_keystrokes(config: SessionConfig) -> tuple[list[float], float]:
    """Cloud sends 6 MB on one stream and a byte every 100 ms on another over
    an 8 Mbit/s link with 25 ms one-way delay; returns keystroke latencies and goodput."""
    bandwidth = 1_000_000.0
    pair = Pair(seed=7, config=config, profile=LinkProfile(delay=0.025, bandwidth=bandwidth))
    pair.connect()
    pair.run(lambda: pair.device.established and pair.cloud.established, max_time=5)
    bulk = pair.cloud.open_stream({"kind": "bulk"}, now=pair.now)
    keys = pair.cloud.open_stream({"kind": "shell"}, now=pair.now)
    total = 6_000_000
    pair.cloud.send_stream_data(bulk, b"x" * total, now=pair.now)
    sent_at: list[float] = []
    latencies: list[float] = []
    received = {"bulk": 0}
    started = pair.now

    def device(name: str, event: object) -> None:
        if isinstance(event, StreamDataReceived):
            pair.device.stream_consumed(event.stream_id, len(event.data), now=pair.now)
            if event.stream_id == bulk:
                received["bulk"] += len(event.data)
            elif event.stream_id == keys:
                latencies.extend(pair.now - sent_at[len(latencies)] for _ in event.data)

    pair.handlers["device"] = device
    next_key = pair.now + 0.5
    for _ in range(400_000):
        if received["bulk"] >= total:
            break
        if pair.now >= next_key:
            sent_at.append(pair.now)
            pair.cloud.send_stream_data(keys, b"k", now=pair.now)
            next_key += 0.1
        pair.step(max_step=max(0.0, min(0.01, next_key - pair.now)))
    assert received["bulk"] == total
    return latencies, total / (pair.now - started)


def test_keystrokes_stay_fast_behind_a_bulk_transfer_on_a_slow_link() -> None:
    adaptive, goodput = run_bulk_with_keystrokes(SessionConfig(min_rto=0.05, initial_rtt=0.05, max_packet=16 * 1024))
    fixed, fixed_goodput = run_bulk_with_keystrokes(
        SessionConfig(min_rto=0.05, initial_rtt=0.05, max_packet=16 * 1024, queue_target=0)
    )
    assert len(adaptive) > 30 and len(fixed) > 30
    p90 = statistics.quantiles(adaptive, n=10)[-1]
    fixed_p90 = statistics.quantiles(fixed, n=10)[-1]
    # A fixed 2 MiB cap is two seconds of queue at 1 MB/s; the adaptive one keeps
    # it near the 30 ms target (plus the 25 ms path and one packet's serialization).
    assert fixed_p90 > 1.0, fixed_p90
    assert p90 < 0.2, (p90, statistics.median(adaptive))
    assert goodput > 0.85 * 1_000_000, goodput
    assert goodput > 0.9 * fixed_goodput


def largest_packets_of_a_bulk_transfer(bandwidth: float | None, config: SessionConfig) -> int:
    """Send 8 MB cloud -> device; the largest packet the cloud sent in the second half."""
    pair = Pair(seed=5, config=config, profile=LinkProfile(delay=0.01, bandwidth=bandwidth))
    pair.connect()
    pair.run(lambda: pair.device.established and pair.cloud.established, max_time=5)
    sid = pair.cloud.open_stream({"kind": "bulk"}, now=pair.now)
    total = 8_000_000
    pair.cloud.send_stream_data(sid, b"x" * total, now=pair.now, end_stream=True)
    received = [0]
    largest = [0]
    send = pair.link.send

    def record(now: float, dst: str, packet: bytes) -> None:
        if dst == "device" and received[0] > total // 2:
            largest[0] = max(largest[0], len(packet))
        send(now, dst, packet)

    def device(name: str, event: object) -> None:
        if isinstance(event, StreamDataReceived):
            received[0] += len(event.data)
            pair.device.stream_consumed(event.stream_id, len(event.data), now=pair.now)

    pair.link.send = record  # type: ignore[method-assign]
    pair.handlers["device"] = device
    pair.run(lambda: received[0] >= total, max_time=60)
    return largest[0]


def test_packets_grow_on_a_fast_link_and_stay_small_on_a_slow_one() -> None:
    config = SessionConfig(min_rto=0.05, initial_rtt=0.05, base_packet=16 * 1024, max_packet=256 * 1024)
    # Unlimited bandwidth: the cap reaches max_in_flight (2 MiB), packets an eighth of it.
    assert largest_packets_of_a_bulk_transfer(None, config) == 256 * 1024
    # 1 MB/s: the cap settles near rate x (path + 30 ms target), far below 8 x base_packet.
    assert largest_packets_of_a_bulk_transfer(1_000_000.0, config) == 16 * 1024


@given(st.integers(1, 64 << 20), st.integers(1024, 1 << 20), st.integers(1024, 1 << 20))
def test_packet_size_is_an_eighth_of_the_cap_within_bounds(cap: int, base: int, largest: int) -> None:
    from seqstream import Role, Session

    session = Session(role=Role.CLOUD, epoch=1, config=SessionConfig(base_packet=base, max_packet=largest))
    session._limit.cap = float(cap)
    assert session.packet_size == min(session.max_packet, max(base, cap // 8))
    assert 1024 <= session.packet_size <= largest
