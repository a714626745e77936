"""A minimal asyncio SPDY/3.1 client (on the project's sans-io core) that
speaks to the bridge the way kube-apiserver does: HTTP upgrade, then one
stream per ``streamtype``. For protocol cases kubectl cannot produce."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

from cloud_bridge.spdy import (
    CLIENT,
    NEED_DATA,
    ConnectionClosed,
    ConnectionFailed,
    DataReceived,
    ReplyReceived,
    SpdyConnection,
    StreamReset,
)


@dataclass
class _Stream:
    data: bytearray = field(default_factory=bytearray)
    replied: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    reset: int | None = None


class UpgradeRefused(Exception):
    def __init__(self, status: int, head: bytes, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:300]!r}")
        self.status = status
        self.head = head
        self.body = body


class SpdyClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: str) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol = protocol
        self.conn = SpdyConnection(role=CLIENT)
        self.streams: dict[int, _Stream] = {}
        self.closed = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    @classmethod
    async def connect(
        cls, port: int, ctx: ssl.SSLContext, path: str, protocols: list[str], timeout: float = 10
    ) -> SpdyClient:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1"), timeout
        )
        head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: Upgrade", "Upgrade: SPDY/3.1"]
        head += [f"X-Stream-Protocol-Version: {p}" for p in protocols]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status = int(raw.split(b" ", 2)[1])
        chosen = ""
        for line in raw.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"x-stream-protocol-version":
                chosen = value.strip().decode()
        if status != 101:
            body = b""
            try:
                body = await asyncio.wait_for(reader.read(65536), timeout)
            finally:
                writer.close()
            raise UpgradeRefused(status, raw, body)
        return cls(reader, writer, chosen)

    async def _run(self) -> None:
        try:
            while True:
                while (ev := self.conn.next_event()) is not NEED_DATA:
                    if isinstance(ev, ReplyReceived):
                        self.streams[ev.stream_id].replied.set()
                    elif isinstance(ev, DataReceived):
                        st = self.streams[ev.stream_id]
                        st.data += ev.data
                        if ev.fin:
                            st.done.set()
                    elif isinstance(ev, StreamReset):
                        st = self.streams[ev.stream_id]
                        st.reset = ev.status
                        st.done.set()
                    elif isinstance(ev, (ConnectionClosed, ConnectionFailed)):
                        return
                self._flush()
                data = await self.reader.read(65536)
                self.conn.receive_data(data)
                if not data:
                    self.conn.next_event()
                    return
        except (ConnectionError, ssl.SSLError):
            return
        finally:
            self.closed.set()
            for st in self.streams.values():
                st.done.set()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def open(self, timeout: float = 10, **headers: str) -> int:
        sid = self.conn.open_stream([(k.lower(), v) for k, v in headers.items()])
        self.streams[sid] = _Stream()
        self._flush()
        await asyncio.wait_for(self.streams[sid].replied.wait(), timeout)
        return sid

    def send(self, sid: int, data: bytes, fin: bool = False) -> None:
        self.conn.send_data(sid, data, fin=fin)
        self._flush()

    async def read_all(self, sid: int, timeout: float = 10) -> bytes:
        await asyncio.wait_for(self.streams[sid].done.wait(), timeout)
        return bytes(self.streams[sid].data)

    async def close(self) -> None:
        self.writer.close()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
