"""Port-forward over SPDY/3.1 (kubelet ``portforward/httpstream.go``).

Per forwarded TCP connection the client opens two streams with the same
``requestid`` header: ``streamtype: error`` and ``streamtype: data``, both
with a ``port`` header. Once a pair is complete the provider gets a
``ByteConn`` on the data stream; its failure is written as text on the error
stream (kubelet: "error forwarding port P to pod N, uid U: ..."). Both
streams are closed when the provider returns. A pair left incomplete for
``pair_timeout`` is answered "timed out waiting for streams" and dropped.
Without a ``requestid`` (very old clients) the error stream's id pairs with
the data stream two ids later, as the kubelet does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ._spdy_session import SpdySession, SpdyStream
from ._tasks import cancel_and_wait
from .errors import ProviderError
from .routes import RouteError, parse_port

log = logging.getLogger(__name__)

Forward = Callable[[int, "SpdyByteConn"], Awaitable[None]]


class SpdyByteConn:
    """The provider's ``ByteConn`` over one data stream."""

    def __init__(self, stream: SpdyStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int = 65536) -> bytes:
        return await self._stream.read(max_bytes)

    async def write(self, data: bytes) -> None:
        await self._stream.write(bytes(data))

    async def close_write(self) -> None:
        await self._stream.close_write()


@dataclass
class _Pair:
    request_id: str
    data: SpdyStream | None = None
    error: SpdyStream | None = None
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def complete(self) -> bool:
        return self.data is not None and self.error is not None


class SpdyPortForward:
    def __init__(
        self,
        session: SpdySession,
        forward: Forward,
        *,
        pod: str,
        uid: str | None,
        pair_timeout: float,
        name: str,
    ) -> None:
        self._session = session
        self._forward = forward
        self._pod = pod
        self._uid = uid or ""
        self._pair_timeout = pair_timeout
        self._name = name
        self._pairs: dict[str, _Pair] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        try:
            while (stream := await self._session.accept()) is not None:
                self._on_stream(stream)
        finally:
            for pair in self._pairs.values():
                if pair.timer is not None:
                    pair.timer.cancel()
            self._pairs.clear()
            await cancel_and_wait(list(self._tasks))

    def _on_stream(self, stream: SpdyStream) -> None:
        kind = stream.stream_type
        if kind not in ("data", "error"):
            log.info("%s: resetting stream %d of unknown type %r", self._name, stream.id, kind)
            self._drop(stream)
            return
        rid = stream.headers.get("requestid")
        if not rid:
            rid = str(stream.id if kind == "error" else stream.id - 2)
        pair = self._pairs.get(rid)
        if pair is None:
            pair = self._pairs[rid] = _Pair(rid)
            pair.timer = asyncio.get_running_loop().call_later(self._pair_timeout, self._expire, rid)
        if getattr(pair, kind) is not None:
            log.info("%s: duplicate %s stream for request %s", self._name, kind, rid)
            self._drop(stream)
            return
        setattr(pair, kind, stream)
        if kind == "error":
            stream.inbox.discard()  # the client never writes on it
        if pair.complete:
            del self._pairs[rid]
            if pair.timer is not None:
                pair.timer.cancel()
            task = asyncio.create_task(self._serve(pair), name=f"port-forward {self._name} #{rid}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _drop(self, stream: SpdyStream) -> None:
        stream.reset()
        self._session.forget(stream)

    def _expire(self, rid: str) -> None:
        pair = self._pairs.pop(rid, None)
        if pair is None:
            return
        log.info("%s: request %s: timed out waiting for streams", self._name, rid)
        task = asyncio.create_task(self._fail_incomplete(pair))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fail_incomplete(self, pair: _Pair) -> None:
        if pair.error is not None:
            with contextlib.suppress(ConnectionError):
                await pair.error.write(f"timed out waiting for streams for request {pair.request_id}".encode())
                await pair.error.close_write()
        for stream in (pair.data, pair.error):
            if stream is not None:
                self._drop(stream)

    async def _serve(self, pair: _Pair) -> None:
        data, error = pair.data, pair.error
        assert data is not None and error is not None
        raw_port = data.headers.get("port") or error.headers.get("port") or ""
        message = ""
        port = 0
        try:
            port = parse_port(raw_port)
            await self._forward(port, SpdyByteConn(data))
        except RouteError as exc:
            message = f"invalid port header {raw_port[:20]!r}: {exc.message}"
        except ConnectionError:
            pass  # the client went away
        except ProviderError as exc:
            message = f"error forwarding port {port} to pod {self._pod}, uid {self._uid}: {exc.message}"
        except Exception as exc:
            log.error("%s: port-forward to %d failed", self._name, port, exc_info=exc)
            message = f"error forwarding port {port} to pod {self._pod}, uid {self._uid}: {exc}"
        try:
            if message:
                await error.write(message.encode())
            await data.close_write()
            await error.close_write()
        except ConnectionError:
            pass
        finally:
            self._session.forget(data)
            self._session.forget(error)
