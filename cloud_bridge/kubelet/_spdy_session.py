"""The asyncio driver of a server-side ``SpdyConnection`` after an upgrade.

One read loop feeds the sans-io core and dispatches events; commands
(``send_data``, ``reply``...) are issued from any task of the same loop and
flushed to the transport right away, so frames leave in call order (header
compression contexts depend on it).

* Every stream the peer opens is answered with an empty SYN_REPLY at once
  (apimachinery does the same; client-go waits for it in CreateStream).
* Windows are never waited for; the only output back-pressure is the
  transport's (``drain``), the only input back-pressure an ``Inbox`` limit.
* When the session ends every stream reads EOF and writes raise
  ``BrokenPipeError``; ``closed`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from cloud_bridge.spdy import (
    NEED_DATA,
    SERVER,
    ConnectionClosed,
    ConnectionFailed,
    DataReceived,
    GoAwayReceived,
    LocalProtocolError,
    PingReceived,
    RstStatus,
    SpdyConnection,
    StreamOpened,
    StreamReset,
)

from ._inbox import Inbox

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024


class SpdyStream:
    """One stream the peer opened: headers, buffered input, write/close."""

    def __init__(self, session: SpdySession, stream_id: int, headers: dict[str, str], limit: int) -> None:
        self._session = session
        self.id = stream_id
        self.headers = headers
        self.inbox = Inbox(limit)
        self._write_closed = False
        self.reset_by_peer = False

    @property
    def stream_type(self) -> str:
        return self.headers.get("streamtype", "")

    async def read(self, max_bytes: int = 65536) -> bytes:
        return await self.inbox.read(max_bytes)

    async def write(self, data: bytes) -> None:
        if self._write_closed:
            raise BrokenPipeError(f"SPDY stream {self.id} is closed for writing")
        if data:
            self._session.command(lambda conn: conn.send_data(self.id, data), self)
            await self._session.drain()

    async def close_write(self) -> None:
        """Half-close (FIN); a no-op if already closed or reset."""
        if not self._write_closed:
            with contextlib.suppress(BrokenPipeError):
                self._session.command(lambda conn: conn.send_data(self.id, b"", fin=True), self)
            self._write_closed = True
            with contextlib.suppress(ConnectionError):
                await self._session.drain()

    def reset(self, status: int = RstStatus.CANCEL) -> None:
        if not self._write_closed or not self.inbox.at_eof:
            with contextlib.suppress(BrokenPipeError):
                self._session.command(lambda conn: conn.reset(self.id, status), self)
        self._gone()

    def _gone(self) -> None:
        self._write_closed = True
        self.inbox.feed_eof()


class SpdySession:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        stream_buffer: int,
        max_streams: int,
        name: str,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._conn = SpdyConnection(role=SERVER)
        self._streams: dict[int, SpdyStream] = {}
        self._incoming: asyncio.Queue[SpdyStream | None] = asyncio.Queue()
        self._stream_buffer = stream_buffer
        self._max_streams = max_streams
        self._failed = False
        self.name = name
        self.closed = asyncio.Event()

    # -- used by streams and handlers ------------------------------------------------

    def command(self, fn, stream: SpdyStream | None = None) -> None:
        """Run one command on the core and queue its bytes for the transport."""
        if self._failed or self._writer.is_closing():
            raise BrokenPipeError("SPDY connection is closed")
        try:
            fn(self._conn)
        except LocalProtocolError as exc:  # incl. StreamClosedError: reset meanwhile
            if stream is not None:
                stream._gone()
            raise BrokenPipeError(str(exc)) from None
        self._flush()

    async def drain(self) -> None:
        try:
            await self._writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise BrokenPipeError(f"SPDY transport: {exc}") from None

    async def accept(self) -> SpdyStream | None:
        """The next stream the peer opened, or None once the session ended."""
        stream = await self._incoming.get()
        if stream is None:
            self._incoming.put_nowait(None)  # stay ended for later callers
        return stream

    def goaway(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self.command(lambda conn: conn.goaway())

    # -- the read loop -----------------------------------------------------------------

    async def run(self, initial: bytes = b"") -> None:
        try:
            if initial:
                self._conn.receive_data(initial)
            while True:
                if not self._dispatch():
                    break
                for stream in list(self._streams.values()):
                    if stream.inbox.full:
                        await stream.inbox.wait_room()
                try:
                    data = await self._reader.read(READ_SIZE)
                except (ConnectionError, OSError) as exc:
                    log.debug("%s: read failed: %s", self.name, exc)
                    data = b""
                self._conn.receive_data(data)
                if not data:
                    self._dispatch()
                    break
        finally:
            self._end()

    def _dispatch(self) -> bool:
        """Handle every buffered event; False when the session is over."""
        alive = True
        while (event := self._conn.next_event()) is not NEED_DATA:
            if isinstance(event, StreamOpened):
                self._on_open(event)
            elif isinstance(event, DataReceived):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream.inbox.feed(event.data)
                    if event.fin:
                        stream.inbox.feed_eof()
            elif isinstance(event, StreamReset):
                stream = self._streams.pop(event.stream_id, None)
                if stream is not None:
                    stream.reset_by_peer = event.remote
                    stream._gone()
            elif isinstance(event, ConnectionFailed):
                log.info("%s: SPDY session error from peer: %s", self.name, event.reason)
                self._failed = True
                alive = False
            elif isinstance(event, ConnectionClosed):
                alive = False
                break
            elif isinstance(event, (PingReceived, GoAwayReceived)):
                pass  # the echo is queued by the core; GOAWAY: existing streams go on
        self._flush()
        return alive

    def _on_open(self, event: StreamOpened) -> None:
        headers: dict[str, str] = {}
        for key, value in event.headers:
            headers.setdefault(key, value)
        if len(self._streams) >= self._max_streams:
            log.warning("%s: refusing stream %d: %d streams open", self.name, event.stream_id, len(self._streams))
            self._conn.reset(event.stream_id, RstStatus.REFUSED_STREAM)
            return
        stream = SpdyStream(self, event.stream_id, headers, self._stream_buffer)
        self._streams[event.stream_id] = stream
        if not event.unidirectional:
            self._conn.reply(event.stream_id, [])
        if event.fin:
            stream.inbox.feed_eof()
        self._incoming.put_nowait(stream)

    def _flush(self) -> None:
        data = self._conn.data_to_send()
        if data and not self._writer.is_closing():
            self._writer.write(data)

    def forget(self, stream: SpdyStream) -> None:
        """The handler is done with ``stream``: stop tracking (and buffering) it."""
        self._streams.pop(stream.id, None)
        stream.inbox.discard()

    def _end(self) -> None:
        for stream in self._streams.values():
            stream._gone()
        self._streams.clear()
        self._incoming.put_nowait(None)
        self.closed.set()
