"""Exec/attach over SPDY/3.1 (kubelet ``remotecommand/httpstream.go``).

After the 101, the client opens one stream per ``streamtype`` header:
``error`` always, then ``stdin`` / ``stdout`` / ``stderr`` as requested
(no stderr with a TTY) and ``resize`` with a TTY (v3+). We wait for all of
them (``stream_timeout``, kubelet's streamCreationTimeout), reset unknown or
duplicate ones, and at the end FIN stdout/stderr, write the status on the
error stream (v4: Status JSON; v2/v3: error text only), FIN it and close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from . import status as st
from ._http import HttpConnection
from ._spdy_session import SpdySession, SpdyStream
from ._streamio import Channels
from ._tasks import cancel_and_wait
from .routes import StreamOptions

log = logging.getLogger(__name__)


class SpdyRemoteCommand:
    def __init__(
        self,
        http: HttpConnection,
        protocol: str,
        options: StreamOptions,
        *,
        stream_timeout: float,
        stream_buffer: int,
        name: str,
    ) -> None:
        self._http = http
        self._protocol = protocol
        self._options = options
        self._stream_timeout = stream_timeout
        self._stream_buffer = stream_buffer
        self._name = name
        self._session: SpdySession | None = None
        self._run: asyncio.Task[None] | None = None
        self._extras: asyncio.Task[None] | None = None
        self._streams: dict[str, SpdyStream] = {}
        self._aborted = False

    def _expected(self) -> set[str]:
        o = self._options
        want = {"error"}
        if o.stdin:
            want.add("stdin")
        if o.stdout:
            want.add("stdout")
        if o.stderr and not o.tty:
            want.add("stderr")
        if o.tty and self._protocol != "v2.channel.k8s.io":
            want.add("resize")
        return want

    async def open(self) -> Channels:
        http = self._http
        trailing = http.switch_protocols(
            [("connection", "Upgrade"), ("upgrade", "SPDY/3.1"), ("x-stream-protocol-version", self._protocol)]
        )
        session = self._session = SpdySession(
            http.reader, http.writer, stream_buffer=self._stream_buffer, max_streams=16, name=self._name
        )
        self._run = asyncio.create_task(session.run(trailing), name=f"spdy {self._name}")
        want = self._expected()
        try:
            async with asyncio.timeout(self._stream_timeout):
                while not want <= self._streams.keys():
                    stream = await session.accept()
                    if stream is None:
                        raise ConnectionResetError("the client closed the connection while opening streams")
                    kind = stream.stream_type
                    if kind in want and kind not in self._streams:
                        self._streams[kind] = stream
                    else:
                        log.info("%s: resetting unexpected %r stream %d", self._name, kind, stream.id)
                        stream.reset()
                        session.forget(stream)
        except TimeoutError:
            missing = sorted(want - self._streams.keys())
            raise TimeoutError(f"timed out waiting for client to create streams (missing {missing})") from None
        self._extras = asyncio.create_task(self._refuse_extras(session))
        s = self._streams
        for kind in ("stdout", "stderr", "error"):
            if kind in s:
                s[kind].inbox.discard()  # output-only: never let stray input stall the session
        return Channels(stdin=s.get("stdin"), stdout=s.get("stdout"), stderr=s.get("stderr"), resize=s.get("resize"))

    async def _refuse_extras(self, session: SpdySession) -> None:
        while (stream := await session.accept()) is not None:
            log.info("%s: resetting late %r stream %d", self._name, stream.stream_type, stream.id)
            stream.reset()
            session.forget(stream)

    async def wait_closed(self) -> None:
        assert self._session is not None
        await self._session.closed.wait()

    async def finish(self, status: dict[str, Any]) -> None:
        for kind in ("stdin", "resize"):
            if kind in self._streams and self._session is not None:
                self._session.forget(self._streams[kind])
        for kind in ("stdout", "stderr"):
            if kind in self._streams:
                await self._streams[kind].close_write()
        error = self._streams["error"]
        data = st.encode(status, as_json=self._protocol == "v4.channel.k8s.io")
        if data:
            await error.write(data)
        await error.close_write()

    async def abort(self) -> None:
        if self._aborted:
            return
        self._aborted = True
        if self._session is not None:
            self._session.goaway()
        writer = self._http.writer
        with contextlib.suppress(Exception):
            if not writer.is_closing():
                await asyncio.wait_for(writer.drain(), 5)
        writer.close()
        await cancel_and_wait([self._extras])
        if self._run is not None:
            # The read loop ends once the transport is closed.
            await cancel_and_wait([self._run], timeout=5)
