"""The application's view of one stream: read, write, drain, close, reset."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..errors import ErrorCode, LocalProtocolError, StreamResetError

if TYPE_CHECKING:
    from .peer import PeerSession


class Stream:
    """A reliable, ordered byte stream to one peer.

    Like ``asyncio.StreamReader``/``StreamWriter`` in one object: ``write`` only
    queues, ``drain`` waits for the peer to acknowledge enough of it,
    ``write_eof`` half-closes, ``reset`` aborts both directions.
    """

    def __init__(self, peer: PeerSession, stream_id: int, metadata: dict[str, Any], *, local: bool) -> None:
        self._peer = peer
        self.stream_id = stream_id
        self.metadata = metadata
        self.local = local
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._eof_sent = False
        self._error: StreamResetError | None = None
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._finished = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Stream {self.stream_id} to {self.peer_name!r} {self.metadata!r}>"

    @property
    def peer_name(self) -> str:
        return self._peer.name

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    # ------------------------------------------------------------------ reading

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all buffered if ``n < 0``); ``b""`` at end of stream."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            self._readable.clear()
            await self._readable.wait()
        chunks = self._chunks
        if n < 0 or n >= self._buffered:
            data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
        else:
            parts = []
            need = n
            while need:
                head = chunks[0]
                if len(head) <= need:
                    parts.append(chunks.popleft())
                    need -= len(head)
                else:
                    parts.append(head[:need])
                    chunks[0] = head[need:]
                    need = 0
            data = b"".join(parts)
        self._buffered -= len(data)
        self._peer.consumed(self.stream_id, len(data))
        return data

    async def readexactly(self, n: int) -> bytes:
        parts = bytearray()
        while len(parts) < n:
            chunk = await self.read(n - len(parts))
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(parts), n)
            parts += chunk
        return bytes(parts)

    async def readall(self) -> bytes:
        parts = bytearray()
        while chunk := await self.read():
            parts += chunk
        return bytes(parts)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while chunk := await self.read():
            yield chunk

    # ------------------------------------------------------------------ writing

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._eof_sent:
            raise LocalProtocolError(f"stream {self.stream_id}: write after write_eof")
        if data:
            self._peer.send(self.stream_id, data if isinstance(data, bytes) else bytes(data), end_stream=False)

    async def drain(self) -> None:
        """Wait until the unacknowledged backlog is below the high-water mark."""
        while True:
            if self._error is not None:
                raise self._error
            if self._peer.backlog(self.stream_id) <= self._peer.high_water:
                return
            self._writable.clear()
            self._peer.wait_writable(self)
            await self._writable.wait()

    def write_eof(self) -> None:
        if self._error is not None or self._eof_sent:
            return
        self._eof_sent = True
        self._peer.send(self.stream_id, b"", end_stream=True)

    async def wait_sent(self) -> None:
        """Wait until the peer has acknowledged every byte written so far."""
        while self._peer.backlog(self.stream_id) > 0:
            if self._error is not None:
                raise self._error
            self._writable.clear()
            self._peer.wait_writable(self)
            await self._writable.wait()

    def close(self) -> None:
        """Half-close (FIN); the stream ends once the peer closes its side too."""
        self.write_eof()

    async def wait_closed(self) -> None:
        """Wait until both directions finished; raises if the stream was reset."""
        await self._finished.wait()
        if self._error is not None and self._error.code != ErrorCode.NO_ERROR:
            raise self._error

    def reset(self, code: int = ErrorCode.CANCELLED, reason: str = "") -> None:
        """Abort both directions; unread and unsent bytes are discarded."""
        if self._error is not None or self._finished.is_set():
            return
        self._error = StreamResetError(code, reason, remote=False)
        self._peer.reset(self.stream_id, code, reason)
        self._wake_all()

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is not None:
            self.reset(ErrorCode.CANCELLED, f"{exc_type.__name__}: {exc}")
        else:
            self.close()

    # ------------------------------------------------------------------ fed by the session

    def _on_data(self, data: bytes, end_stream: bool) -> None:
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
        if end_stream:
            self._eof = True
        self._readable.set()

    def _on_reset(self, code: int, reason: str, remote: bool) -> None:
        if self._error is None:
            self._error = StreamResetError(code, reason, remote=remote)
        # Unread bytes of an aborted stream are gone (the core already freed their credit).
        self._chunks.clear()
        self._buffered = 0
        self._wake_all()

    def _on_finished(self) -> None:
        self._finished.set()
        self._writable.set()

    def _on_progress(self) -> None:
        self._writable.set()

    def _wake_all(self) -> None:
        self._readable.set()
        self._writable.set()
        self._finished.set()
