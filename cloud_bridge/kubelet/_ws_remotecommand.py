"""Exec/attach over WebSocket (kubelet ``wsstream``, channel protocols).

Every message starts with a channel: 0 stdin, 1 stdout, 2 stderr, 3 error,
4 resize; binary protocols use a byte, ``*base64*`` ones a text message with
an ASCII digit followed by base64. v5 adds channel 255: ``[255, n]`` closes
channel n (we honour it for stdin). Like the kubelet we send an empty message
on the lowest writable channel once open, the status on channel 3 at the end
(v4+: Status JSON; older: error text), then a normal close.

Binary messages stream (fragments go to their channel as they come); text
messages are buffered up to ``max_message`` before decoding.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from typing import Any

from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage
from wsproto.utilities import generate_accept_token

from . import status as st
from ._http import HttpConnection, Request
from ._inbox import Inbox
from ._streamio import Channels
from ._tasks import cancel_and_wait
from .negotiate import WsProtocol
from .routes import RouteError, StreamOptions

log = logging.getLogger(__name__)

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
MAX_OUT_MESSAGE = 64 * 1024
READ_SIZE = 64 * 1024


def check_handshake(request: Request) -> str:
    """The Sec-WebSocket-Key, or RouteError for a broken handshake."""
    if request.method != "GET":
        raise RouteError(400, "WebSocket upgrades must use GET")
    if request.header("sec-websocket-version") != "13":
        raise RouteError(426, "Sec-WebSocket-Version: 13 is required")
    key = request.header("sec-websocket-key")
    if not key:
        raise RouteError(400, "Sec-WebSocket-Key is required")
    return key


class _Sink:
    def __init__(self, owner: WsRemoteCommand, channel: int) -> None:
        self._owner = owner
        self._channel = channel

    async def write(self, data: bytes) -> None:
        for start in range(0, len(data), MAX_OUT_MESSAGE):
            await self._owner.send(self._channel, data[start : start + MAX_OUT_MESSAGE])


class WsRemoteCommand:
    def __init__(
        self,
        http: HttpConnection,
        key: str,
        protocol: WsProtocol,
        options: StreamOptions,
        *,
        stream_buffer: int,
        max_message: int,
        name: str,
    ) -> None:
        self._http = http
        self._key = key
        self._protocol = protocol
        self._options = options
        self._max_message = max_message
        self._name = name
        self._ws = Connection(ConnectionType.SERVER)
        self._stdin = Inbox(stream_buffer)
        self._resize = Inbox(4096)
        self._run: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._peer_closed = asyncio.Event()
        self._aborted = False

    async def open(self) -> Channels:
        http = self._http
        trailing = http.switch_protocols(
            [
                ("upgrade", "websocket"),
                ("connection", "Upgrade"),
                ("sec-websocket-accept", generate_accept_token(self._key.encode()).decode()),
                ("sec-websocket-protocol", self._protocol.name),
            ]
        )
        self._run = asyncio.create_task(self._read_loop(trailing), name=f"websocket {self._name}")
        o = self._options
        if not o.stdin:
            self._stdin.discard()
        if not o.tty:
            self._resize.discard()
        # kubelet: "send an empty message to the lowest writable channel to
        # notify the client the connection is established"
        await self.send(STDOUT if o.stdout else STDERR if o.stderr else ERROR, b"")
        return Channels(
            stdin=self._stdin if o.stdin else None,
            stdout=_Sink(self, STDOUT) if o.stdout else None,
            stderr=_Sink(self, STDERR) if o.stderr and not o.tty else None,
            resize=self._resize if o.tty else None,
        )

    async def send(self, channel: int, data: bytes) -> None:
        if self._ws.state is not ConnectionState.OPEN or self._http.writer.is_closing():
            raise BrokenPipeError("WebSocket is closed")
        event: Message[Any]
        if self._protocol.base64:
            event = TextMessage(data=str(channel) + base64.b64encode(data).decode("ascii"))
        else:
            event = BytesMessage(data=bytes([channel]) + data)
        self._http.writer.write(self._ws.send(event))
        try:
            await self._http.writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise BrokenPipeError(str(exc)) from None

    async def _read_loop(self, initial: bytes) -> None:
        reader = self._http.reader
        channel: int | None = None  # of the (binary-codec) message being received
        pending = bytearray()  # a base64-codec message being received
        try:
            data = initial
            while True:
                if data:
                    self._ws.receive_data(data)
                for event in self._ws.events():
                    if isinstance(event, (BytesMessage, TextMessage)):
                        # Like wsstream, the protocol's codec decides, not the opcode.
                        raw = event.data.encode() if isinstance(event.data, str) else bytes(event.data)
                        if self._protocol.base64:
                            pending += raw
                            if len(pending) > self._max_message:
                                await self._close(1009, "message too big")
                                return
                            if event.message_finished:
                                self._on_base64(bytes(pending))
                                pending.clear()
                        else:
                            if channel is None and raw:
                                channel, raw = raw[0], raw[1:]
                            if channel is not None:
                                self._on_data(channel, raw)
                            if event.message_finished:
                                channel = None
                    elif isinstance(event, Ping):
                        self._write(self._ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        self._peer_closed.set()
                        if self._ws.state is ConnectionState.REMOTE_CLOSING:
                            self._write(self._ws.send(event.response()))
                        return
                if self._stdin.full:
                    await self._stdin.wait_room()
                try:
                    data = await reader.read(READ_SIZE)
                except (ConnectionError, OSError):
                    data = b""
                if not data:
                    return
        except Exception as exc:  # wsproto raises on protocol violations by the peer
            log.info("%s: WebSocket error from peer: %s", self._name, exc)
            with contextlib.suppress(Exception):
                await self._close(1002, "protocol error")
        finally:
            self._stdin.feed_eof()
            self._resize.feed_eof()
            self._closed.set()

    def _on_base64(self, message: bytes) -> None:
        if not message:
            return
        if not 0x30 <= message[0] <= 0x39:
            log.info("%s: ignoring a base64 message without a channel digit", self._name)
            return
        try:
            payload = base64.b64decode(message[1:], validate=True)
        except (binascii.Error, ValueError):
            log.info("%s: ignoring a message with bad base64", self._name)
            return
        self._on_data(message[0] - 0x30, payload)

    def _on_data(self, channel: int, payload: bytes) -> None:
        if channel == STDIN:
            self._stdin.feed(payload)
        elif channel == RESIZE:
            self._resize.feed(payload)
        elif channel == CLOSE and self._protocol.close_channel and payload[:1] == bytes([STDIN]):
            self._stdin.feed_eof()
        # output channels are ignored, like the kubelet's write-only channels

    def _write(self, data: bytes) -> None:
        if data and not self._http.writer.is_closing():
            self._http.writer.write(data)

    async def _close(self, code: int, reason: str) -> None:
        if self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            self._write(self._ws.send(CloseConnection(code=code, reason=reason)))
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._http.writer.drain()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def finish(self, status: dict[str, Any]) -> None:
        self._stdin.discard()
        data = st.encode(status, as_json=self._protocol.status_json)
        if data:
            await self.send(ERROR, data)
        await self._close(1000, "")
        # Give the peer a moment to answer the close before the socket goes.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self._closed.wait()

    async def abort(self) -> None:
        if self._aborted:
            return
        self._aborted = True
        self._stdin.discard()
        writer = self._http.writer
        with contextlib.suppress(Exception):
            if not writer.is_closing():
                await asyncio.wait_for(writer.drain(), 5)
        writer.close()
        await cancel_and_wait([self._run], timeout=5)
