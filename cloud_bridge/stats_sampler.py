"""A short per-device cache of ``StatsSummary`` samples, so scrapes do not hammer devices.

metrics-server, ``kubectl top`` and a Prometheus may all ask within the same
second; one stats stream per device per ``ttl`` answers them all (callers
that arrive while a fetch runs wait for it under the device's lock). The
sample before the current one is kept for CPU rates (``usageNanoCores``).
Failures are not cached: the next caller asks the device again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import fleetproto as fp

Fetch = Callable[[str], Awaitable[fp.StatsSummary]]


@dataclass
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    current: fp.StatsSummary | None = None
    fetched_at: float = 0.0
    previous: fp.StatsSummary | None = None
    first_time: float | None = None


@dataclass(frozen=True, slots=True)
class Samples:
    current: fp.StatsSummary
    previous: fp.StatsSummary | None
    first_time: float
    """Time of the first sample this bridge got from the device (a node start time stand-in)."""


class StatsSampler:
    def __init__(self, fetch: Fetch, *, ttl: float = 1.5, clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self.fetches = 0
        """Stats streams opened (for tests and metrics)."""

    async def get(self, device: str) -> Samples:
        entry = self._entries.setdefault(device, _Entry())
        async with entry.lock:
            if entry.current is None or self._clock() - entry.fetched_at >= self.ttl:
                self.fetches += 1
                sample = await self._fetch(device)
                if entry.current is not None and entry.current.time < sample.time:
                    entry.previous = entry.current
                entry.current, entry.fetched_at = sample, self._clock()
                if entry.first_time is None:
                    entry.first_time = sample.time
            assert entry.current is not None and entry.first_time is not None
            return Samples(entry.current, entry.previous, entry.first_time)

    def forget(self, device: str) -> None:
        self._entries.pop(device, None)
