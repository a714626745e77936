"""A deterministic in-memory network between two session cores.

The link drops, duplicates, reorders (random extra delay) and partitions
packets, all from a seeded RNG, and time only moves when the simulation says
so: every run is reproducible from its seed.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from seqstream import Role, Session, SessionConfig
from seqstream.events import Event


@dataclass
class LinkProfile:
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0  # chance a packet gets extra delay
    delay: float = 0.001
    jitter: float = 0.0
    partitions: list[tuple[float, float]] = field(default_factory=list)  # (start, end) outages
    bandwidth: float | None = None
    """Bytes per second per direction (None: unlimited). Packets queue for the
    link like at a broker writing to a slow subscriber: the queue is unbounded."""


class Link:
    def __init__(self, rng: random.Random, profile: LinkProfile) -> None:
        self.rng = rng
        self.profile = profile
        self.queue: list[tuple[float, int, str, bytes]] = []
        self.seq = 0
        self.sent = 0
        self.dropped = 0
        self.busy_until: dict[str, float] = {}  # per destination: when the serializer is free

    def partitioned(self, now: float) -> bool:
        return any(start <= now < end for start, end in self.profile.partitions)

    def send(self, now: float, dst: str, packet: bytes) -> None:
        p = self.profile
        self.sent += 1
        if self.partitioned(now) or self.rng.random() < p.loss:
            self.dropped += 1
            return
        copies = 2 if self.rng.random() < p.duplicate else 1
        for _ in range(copies):
            delay = p.delay + self.rng.random() * p.jitter
            if p.bandwidth:
                departs = max(now, self.busy_until.get(dst, now)) + len(packet) / p.bandwidth
                self.busy_until[dst] = departs
                delay += departs - now
            if self.rng.random() < p.reorder:
                delay += self.rng.random() * 5 * p.delay + 0.002
            self.seq += 1
            heapq.heappush(self.queue, (now + delay, self.seq, dst, packet))

    def next_time(self) -> float | None:
        return self.queue[0][0] if self.queue else None

    def due(self, now: float) -> list[tuple[str, bytes]]:
        out = []
        while self.queue and self.queue[0][0] <= now:
            _, _, dst, packet = heapq.heappop(self.queue)
            out.append((dst, packet))
        return out


class Pair:
    """A device and a cloud session joined by a simulated link."""

    def __init__(
        self,
        *,
        seed: int = 0,
        profile: LinkProfile | None = None,
        config: SessionConfig | None = None,
        device_epoch: int = 1,
        cloud_epoch: int = 1,
    ) -> None:
        self.rng = random.Random(seed)
        self.link = Link(self.rng, profile or LinkProfile())
        self.config = config or SessionConfig(min_rto=0.01, initial_rtt=0.01)
        self.now = 1000.0
        self.sessions = {
            "device": Session(role=Role.DEVICE, epoch=device_epoch, config=self.config),
            "cloud": Session(role=Role.CLOUD, epoch=cloud_epoch, config=self.config),
        }
        self.handlers: dict[str, Callable[[str, Event], None]] = {}
        self.events: dict[str, list[Event]] = {"device": [], "cloud": []}

    @property
    def device(self) -> Session:
        return self.sessions["device"]

    @property
    def cloud(self) -> Session:
        return self.sessions["cloud"]

    def replace(self, name: str, session: Session) -> None:
        self.sessions[name] = session

    def connect(self) -> None:
        self.device.connect(self.now)
        self.cloud.connect(self.now)

    def flush(self) -> None:
        for name, session in self.sessions.items():
            other = "cloud" if name == "device" else "device"
            for packet in session.packets_to_send(self.now):
                self.link.send(self.now, other, packet)

    def pump_events(self) -> None:
        for name, session in self.sessions.items():
            while (event := session.next_event()) is not None:
                self.events[name].append(event)
                handler = self.handlers.get(name)
                if handler:
                    handler(name, event)

    def step(self, max_step: float = 1.0) -> None:
        """Send what is pending, then move time to the next delivery or timer."""
        self.flush()
        self.pump_events()
        self.flush()
        candidates = [self.link.next_time()]
        candidates += [s.get_timer() for s in self.sessions.values()]
        upcoming = [t for t in candidates if t is not None]
        target = min(upcoming) if upcoming else self.now + max_step
        self.now = max(self.now, min(target, self.now + max_step))
        for dst, packet in self.link.due(self.now):
            self.sessions[dst].receive_packet(packet, now=self.now)
        for session in self.sessions.values():
            timer = session.get_timer()
            if timer is not None and timer <= self.now:
                session.handle_timer(self.now)
        self.pump_events()

    def run(self, until: Callable[[], bool], *, max_time: float = 120.0, max_steps: int = 500_000) -> None:
        deadline = self.now + max_time
        for _ in range(max_steps):
            if until():
                return
            if self.now > deadline:
                break
            self.step()
        if not until():
            raise AssertionError(f"condition not reached by t={self.now - 1000:.3f}s")
