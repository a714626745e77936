"""The HTTP/1.1 front door: h11 over asyncio streams, one request at a time.

Reads a request (headers bounded by ``max_header_bytes``, bodies by
``max_body_bytes``, the wait by timeouts), writes plain or streamed
responses, and for upgrades sends the 101 and hands back the bytes that
arrived after the request, so SPDY or WebSocket take the socket from there.
Malformed input gets a 4xx and the connection is closed; nothing raises
out of here except ``ConnectionError`` for a peer that went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import h11

from . import status as st

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    """Lower-case names, latin-1 values, in order (repeats kept)."""

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


class HttpConnection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        max_header_bytes: int,
        max_body_bytes: int,
        header_timeout: float,
        idle_timeout: float,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_bytes)
        self._max_header = max_header_bytes
        self._max_body = max_body_bytes
        self._header_timeout = header_timeout
        self._idle_timeout = idle_timeout
        self._peer_closed = False
        self.idle = False
        """True while waiting for the first byte of the next request."""

    # -- requests ---------------------------------------------------------------------

    async def next_request(self) -> Request | None:
        """The next complete request, or None when the connection should end
        (peer closed, timed out, or sent garbage, which was answered)."""
        request: h11.Request | None = None
        body = 0
        first = True
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                code = exc.error_status_hint or 400
                await self._answer_protocol_error(code, f"malformed HTTP request: {exc}")
                return None
            if event is h11.NEED_DATA:
                if self._peer_closed:
                    return None
                timeout = self._idle_timeout if first and request is None else self._header_timeout
                self.idle = first
                try:
                    async with asyncio.timeout(timeout):
                        data = await self.reader.read(READ_SIZE)
                except TimeoutError:
                    if request is not None or not first:
                        await self._answer_protocol_error(408, "timed out reading the request")
                    return None
                except (ConnectionError, OSError):
                    return None
                finally:
                    self.idle = False
                first = False
                if not data:
                    self._peer_closed = True
                self._h11.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                # h11 bounds only what it buffers; a request read in one go is checked here.
                size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
                if size > self._max_header:
                    await self._answer_protocol_error(431, f"request headers over {self._max_header} bytes")
                    return None
                request = event
            elif isinstance(event, h11.Data):
                body += len(event.data)
                if body > self._max_body:
                    await self._answer_protocol_error(413, f"request body over {self._max_body} bytes")
                    return None
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return _convert(request)
            elif event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                return None

    def feed(self, data: bytes) -> None:
        """Bytes read by someone else while a response streams (pipelining)."""
        if not data:
            self._peer_closed = True
        with contextlib.suppress(RuntimeError):
            self._h11.receive_data(data)

    # -- responses ----------------------------------------------------------------------

    async def respond(
        self,
        code: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        headers = [("content-type", content_type), ("content-length", str(len(body)))]
        headers += extra or []
        await self._send(h11.Response(status_code=code, headers=headers))
        if body:
            await self._send(h11.Data(data=body))
        await self._send(h11.EndOfMessage())

    async def respond_error(
        self, code: int, message: str, reason: str | None = None, extra: list[tuple[str, str]] | None = None
    ) -> None:
        await self.respond(code, st.http_body(code, message, reason), "application/json", extra)

    async def start_stream(self, code: int, content_type: str) -> None:
        """A response without length: chunked, ended by ``end_stream``."""
        await self._send(h11.Response(status_code=code, headers=[("content-type", content_type)]))

    async def send_chunk(self, data: bytes) -> None:
        if data:
            await self._send(h11.Data(data=data))

    async def end_stream(self) -> None:
        await self._send(h11.EndOfMessage())

    def switch_protocols(self, headers: list[tuple[str, str]]) -> bytes:
        """Send ``101 Switching Protocols``; return the bytes that followed the request."""
        self.writer.write(self._h11.send(h11.InformationalResponse(status_code=101, headers=headers)))
        data, _closed = self._h11.trailing_data
        return bytes(data)

    def next_cycle(self) -> bool:
        """Ready for another request on this connection?"""
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            return True
        return False

    async def _send(self, event: h11.Event) -> None:
        data = self._h11.send(event)
        if data:
            if self.writer.is_closing():
                raise BrokenPipeError("connection closed")
            self.writer.write(data)
            try:
                await self.writer.drain()
            except (ConnectionError, RuntimeError) as exc:
                raise BrokenPipeError(str(exc)) from None

    async def _answer_protocol_error(self, code: int, message: str) -> None:
        if self._h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        log.info("answering %d: %s", code, message)
        with contextlib.suppress(ConnectionError, h11.LocalProtocolError):
            body = st.http_body(code, message)
            await self._send(
                h11.Response(
                    status_code=code,
                    headers=[
                        ("content-type", "application/json"),
                        ("content-length", str(len(body))),
                        ("connection", "close"),
                    ],
                )
            )
            await self._send(h11.Data(data=body))
            await self._send(h11.EndOfMessage())


def _convert(req: h11.Request) -> Request:
    return Request(
        method=req.method.decode("ascii", "replace"),
        target=req.target.decode("ascii", "replace"),
        headers=tuple((k.decode("ascii", "replace").lower(), v.decode("latin-1")) for k, v in req.headers),
    )
