"""``StreamIO`` for exec/attach, independent of SPDY or WebSocket.

A transport implements ``Channels`` (opened streams) behind an ``opener``; the
``LazyStreamIO`` handed to the provider calls the opener on first use, so a
provider that fails before touching its streams gets a plain HTTP error.
Resize messages are decoded by a pump task into a small deque (latest kept),
so an unread resize stream never blocks the connection.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from ._tasks import cancel_and_wait
from .provider import InputStream, OutputStream, TerminalSize
from .routes import StreamOptions

log = logging.getLogger(__name__)

MAX_PENDING_RESIZES = 8
MAX_RESIZE_MESSAGE = 4096


class Source(Protocol):
    async def read(self, max_bytes: int = 65536) -> bytes: ...


class Sink(Protocol):
    async def write(self, data: bytes) -> None: ...


@dataclass(slots=True)
class Channels:
    """The established streams (those the options asked for; others None)."""

    stdin: Source | None
    stdout: Sink | None
    stderr: Sink | None
    resize: Source | None


class _Resizes:
    """Decodes the resize stream (concatenated JSON objects) in a pump task."""

    def __init__(self) -> None:
        self._sizes: collections.deque[TerminalSize] = collections.deque(maxlen=MAX_PENDING_RESIZES)
        self._changed = asyncio.Event()
        self._ended = False

    async def pump(self, source: Source) -> None:
        decoder = json.JSONDecoder()
        buf = ""
        try:
            while chunk := await source.read(1024):
                buf += chunk.decode("utf-8", "replace")
                while True:
                    buf = buf.lstrip()
                    if not buf:
                        break
                    try:
                        obj, end = decoder.raw_decode(buf)
                    except json.JSONDecodeError:
                        if len(buf) > MAX_RESIZE_MESSAGE:
                            log.warning("dropping the resize stream: %d bytes without a JSON object", len(buf))
                            return
                        break
                    buf = buf[end:]
                    size = _terminal_size(obj)
                    if size is not None:
                        self._sizes.append(size)
                        self._changed.set()
        finally:
            self._ended = True
            self._changed.set()

    async def __aiter__(self) -> AsyncIterator[TerminalSize]:
        while True:
            if self._sizes:
                yield self._sizes.popleft()
                continue
            if self._ended:
                return
            self._changed.clear()
            await self._changed.wait()


def _terminal_size(obj: object) -> TerminalSize | None:
    if not isinstance(obj, dict):
        return None
    width, height = obj.get("Width"), obj.get("Height")
    if not isinstance(width, int) or not isinstance(height, int):
        return None
    if not (0 <= width <= 0xFFFF and 0 <= height <= 0xFFFF):
        return None
    return TerminalSize(width, height)


class _LazyInput:
    def __init__(self, owner: LazyStreamIO) -> None:
        self._owner = owner

    async def read(self, max_bytes: int = 65536) -> bytes:
        channels = await self._owner.channels()
        assert channels.stdin is not None
        return await channels.stdin.read(max_bytes)


class _LazyOutput:
    def __init__(self, owner: LazyStreamIO, which: str) -> None:
        self._owner = owner
        self._which = which

    async def write(self, data: bytes) -> None:
        channels = await self._owner.channels()
        sink = getattr(channels, self._which)
        assert sink is not None
        await sink.write(bytes(data))


class LazyStreamIO:
    """The provider-facing ``StreamIO``."""

    def __init__(self, options: StreamOptions, opener: Callable[[], Awaitable[Channels]]) -> None:
        self.tty = options.tty
        self.stdin: InputStream | None = _LazyInput(self) if options.stdin else None
        self.stdout: OutputStream | None = _LazyOutput(self, "stdout") if options.stdout else None
        self.stderr: OutputStream | None = _LazyOutput(self, "stderr") if options.stderr and not options.tty else None
        self._opener = opener
        self._opening: asyncio.Task[Channels] | None = None
        self._resizes = _Resizes()
        self._resize_task: asyncio.Task[None] | None = None
        self._has_resize = options.tty
        self.open_requested = asyncio.Event()

    @property
    def opening_started(self) -> bool:
        return self._opening is not None

    def start_opening(self) -> asyncio.Task[Channels]:
        if self._opening is None:
            self._opening = asyncio.create_task(self._open(), name="kubelet-stream-open")
            self.open_requested.set()
        return self._opening

    async def _open(self) -> Channels:
        channels = await self._opener()
        if channels.resize is not None:
            self._resize_task = asyncio.create_task(self._resizes.pump(channels.resize), name="kubelet-resize-pump")
        else:
            self._resizes._ended = True
        return channels

    async def channels(self) -> Channels:
        return await asyncio.shield(self.start_opening())

    async def ready(self) -> None:
        await self.channels()

    async def _sizes(self) -> AsyncIterator[TerminalSize]:
        if not self._has_resize:
            return
        await self.channels()
        async for size in self._resizes:
            yield size

    def resizes(self) -> AsyncIterator[TerminalSize]:
        return self._sizes()

    async def aclose(self) -> None:
        """Stop the resize pump and an opening still under way."""
        await cancel_and_wait([self._resize_task, self._opening])
