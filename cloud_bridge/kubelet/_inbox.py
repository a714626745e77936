"""A bounded inbound byte buffer for one stream or channel.

The transport's read loop ``feed``s it and, when ``full``, awaits
``wait_room()`` before reading more from the socket: that is the only
back-pressure there is (SPDY here has no flow control), so a stalled reader
stalls its connection but never grows memory past ``limit`` + one read.
"""

from __future__ import annotations

import asyncio


class Inbox:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buf = bytearray()
        self._eof = False
        self._discarding = False
        self._readable = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    @property
    def full(self) -> bool:
        return len(self._buf) >= self._limit

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._buf

    def feed(self, data: bytes) -> None:
        if self._discarding or self._eof or not data:
            return
        self._buf += data
        self._readable.set()
        if self.full:
            self._room.clear()

    def feed_eof(self) -> None:
        self._eof = True
        self._readable.set()

    def discard(self) -> None:
        """Nobody will read: drop what is buffered and whatever comes."""
        self._discarding = True
        self._buf.clear()
        self.feed_eof()
        self._room.set()

    async def wait_room(self) -> None:
        await self._room.wait()

    async def read(self, max_bytes: int = 65536) -> bytes:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        while not self._buf:
            if self._eof:
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = bytes(self._buf[:max_bytes])
        del self._buf[:max_bytes]
        if not self.full:
            self._room.set()
        return data
