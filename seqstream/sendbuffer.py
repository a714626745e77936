"""Bytes written but not yet acknowledged, kept as the chunks the app wrote.

A contiguous bytearray would be simpler, but appending to one that had its
front acknowledged away reallocates and copies the whole window on every
write; chunks make append and release O(1) and slicing copies only what is sent.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque


class SendBuffer:
    __slots__ = ("_chunks", "_starts", "base", "end")

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._starts: deque[int] = deque()  # stream offset of each chunk
        self.base = 0  # offset of the first byte held
        self.end = 0  # offset after the last byte held

    def __len__(self) -> int:
        return self.end - self.base

    def append(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self._starts.append(self.end)
            self.end += len(data)

    def release_below(self, offset: int) -> None:
        """Forget bytes below ``offset`` (acknowledged)."""
        offset = min(offset, self.end)
        while self._chunks and self._starts[0] + len(self._chunks[0]) <= offset:
            self._chunks.popleft()
            self._starts.popleft()
        if self._chunks and self._starts[0] < offset:
            cut = offset - self._starts[0]
            self._chunks[0] = self._chunks[0][cut:]
            self._starts[0] = offset
        self.base = max(self.base, offset)

    def clear(self) -> None:
        self._chunks.clear()
        self._starts.clear()
        self.base = self.end

    def slice(self, start: int, end: int) -> bytes | memoryview:
        """Bytes ``[start, end)``; both must lie within ``[base, end]``.

        Within one chunk, a view of it (the packet that carries the bytes copies
        them once, when it is joined); across chunks, a new bytes object.
        """
        if not self.base <= start <= end <= self.end:
            raise IndexError(f"[{start}, {end}) outside the buffer [{self.base}, {self.end})")
        if start == end:
            return b""
        idx = bisect_right(self._starts, start) - 1
        chunk = self._chunks[idx]
        lo = start - self._starts[idx]
        if lo + (end - start) <= len(chunk):
            return memoryview(chunk)[lo : lo + end - start] if (lo or end - start != len(chunk)) else chunk
        parts = [memoryview(chunk)[lo:]]
        need = end - start - (len(chunk) - lo)
        while need > 0:
            idx += 1
            chunk = self._chunks[idx]
            parts.append(memoryview(chunk)[:need])
            need -= len(chunk)
        return b"".join(parts)
