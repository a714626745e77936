"""A sorted set of disjoint half-open integer ranges ``[start, end)``.

Used for received and acknowledged byte ranges (selective acks) and for the
set of stream ids a session has seen. Ranges are merged on insert, so the
list stays short when data mostly arrives in order.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator


class RangeSet:
    __slots__ = ("_ends", "_starts")

    def __init__(self, ranges: list[tuple[int, int]] | None = None) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges or ():
            self.add(start, end)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self._starts, self._ends, strict=True))

    def __len__(self) -> int:
        return len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __repr__(self) -> str:
        return f"RangeSet({list(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and list(self) == list(other)

    def add(self, start: int, end: int) -> None:
        """Insert ``[start, end)``, merging with touching or overlapping ranges."""
        if start >= end:
            return
        lo = bisect_left(self._ends, start)  # first range that ends at/after start
        hi = bisect_right(self._starts, end)  # ranges starting after end stay
        if lo < hi:
            start = min(start, self._starts[lo])
            end = max(end, self._ends[hi - 1])
        self._starts[lo:hi] = [start]
        self._ends[lo:hi] = [end]

    def discard_below(self, offset: int) -> None:
        """Forget everything below ``offset`` (it is covered by a cumulative ack)."""
        idx = bisect_right(self._ends, offset)
        del self._starts[:idx]
        del self._ends[:idx]
        if self._starts and self._starts[0] < offset:
            self._starts[0] = offset

    def contains(self, value: int) -> bool:
        idx = bisect_right(self._starts, value) - 1
        return idx >= 0 and value < self._ends[idx]

    def covers(self, start: int, end: int) -> bool:
        """True if every value of ``[start, end)`` is in the set."""
        if start >= end:
            return True
        idx = bisect_right(self._starts, start) - 1
        return idx >= 0 and self._ends[idx] >= end

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of ``[start, end)`` that are not in the set."""
        gaps: list[tuple[int, int]] = []
        idx = max(bisect_right(self._starts, start) - 1, 0)
        pos = start
        while pos < end and idx < len(self._starts):
            s, e = self._starts[idx], self._ends[idx]
            if e <= pos:
                idx += 1
                continue
            if s >= end:
                break
            if s > pos:
                gaps.append((pos, s))
            pos = max(pos, e)
            idx += 1
        if pos < end:
            gaps.append((pos, end))
        return gaps

    def pop_first(self) -> tuple[int, int]:
        return self._starts.pop(0), self._ends.pop(0)
