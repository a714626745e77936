"""Exec and attach sessions over the connection Docker hijacks (``Upgrade: tcp``).

``EngineClient.upgrade`` performs the HTTP upgrade and hands back the raw
socket plus any output bytes that came with the ``101`` headers; from then on
it is a plain byte pipe: we write stdin, half-close it for EOF
(``shutdown(SHUT_WR)``, which the daemon turns into EOF on the process's
stdin), and read output framed by ``demux`` unless the session has a TTY.
The socket is driven by the event loop (``sock_recv``/``sock_sendall``), so a
session costs no thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ._docker_http import Upgraded
from .base import AttachSession, ExecSession, IOSession
from .demux import StreamDemuxer
from .errors import RuntimeErrorBase
from .types import OutputChunk, Stream

RECV_SIZE = 65536
EOT = b"\x04"


class _DockerSession(IOSession):
    def __init__(
        self,
        hijacked: Upgraded,
        *,
        tty: bool,
        resize: Callable[[int, int], Awaitable[None]],
        wait: Callable[[], Awaitable[int]],
    ) -> None:
        self.tty = tty
        self._sock = hijacked.sock
        self._sock.setblocking(False)
        self._resize = resize
        self._wait = wait
        self._pending: deque[OutputChunk] = deque()
        self._demux = None if tty else StreamDemuxer()
        self._eof = False
        self._stdin_closed = False
        self._closed = False
        self._busy = 0
        if hijacked.leftover:
            self._ingest(hijacked.leftover)

    def _ingest(self, data: bytes) -> None:
        if self._demux is None:
            self._pending.append(OutputChunk(Stream.STDOUT, data))
        else:
            self._pending.extend(self._demux.feed(data))

    async def read(self) -> OutputChunk | None:
        while not self._pending:
            if self._eof or self._closed:
                return None
            data = await self._io(lambda loop: loop.sock_recv(self._sock, RECV_SIZE), eof_ok=True)
            if not data:
                self._eof = True
                if self._demux is not None:
                    self._demux.finish()
                return None
            self._ingest(data)
        return self._pending.popleft()

    async def write(self, data: bytes) -> None:
        if self._stdin_closed or self._closed:
            raise RuntimeErrorBase("stdin of this session is closed")
        await self._io(lambda loop: loop.sock_sendall(self._sock, data))

    async def close_stdin(self) -> None:
        if self._stdin_closed or self._closed:
            return
        if self.tty:
            # A TTY has no half-close; send EOF as a terminal does (works at line start).
            with contextlib.suppress(RuntimeErrorBase):
                await self.write(EOT)
        self._stdin_closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    async def resize(self, *, width: int, height: int) -> None:
        if not self.tty:
            return
        if width <= 0 or height <= 0:
            raise RuntimeErrorBase(f"invalid terminal size {width}x{height}")
        await self._resize(width, height)

    async def wait(self) -> int:
        return await self._wait()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        if self._busy == 0:
            self._release()

    async def _io(self, op: Callable[[asyncio.AbstractEventLoop], Awaitable[Any]], eof_ok: bool = False) -> Any:
        self._busy += 1
        try:
            return await op(asyncio.get_running_loop())
        except (ConnectionResetError, BrokenPipeError) as exc:
            if eof_ok:
                return b""
            raise RuntimeErrorBase(f"session connection lost: {exc}") from exc
        except OSError as exc:
            if self._closed and eof_ok:
                return b""
            raise RuntimeErrorBase(f"session connection failed: {exc}") from exc
        finally:
            self._busy -= 1
            if self._closed and self._busy == 0:
                self._release()

    def _release(self) -> None:
        # Close only when no sock_recv/sock_sendall is registered on the fd.
        with contextlib.suppress(OSError):
            self._sock.close()


class DockerExecSession(_DockerSession, ExecSession):
    """``docker exec`` over a hijacked connection."""

    def __init__(self, hijacked: Upgraded, *, exec_id: str, **kwargs: Any) -> None:
        super().__init__(hijacked, **kwargs)
        self.exec_id = exec_id


class DockerAttachSession(_DockerSession, AttachSession):
    """``docker attach`` over a hijacked connection."""

    def __init__(self, hijacked: Upgraded, *, container_id: str, **kwargs: Any) -> None:
        super().__init__(hijacked, **kwargs)
        self.container_id = container_id
