"""Exec and attach sessions of ``ProcessRuntime``.

An exec is a child process in its own session (``setsid``), on pipes or on a
fresh pty; its output goes through a small bounded queue, so a slow reader
slows the command down instead of growing memory. Closing the session kills
the command if it still runs (no orphaned execs).

An attach session subscribes to the container's output fan-out
(``Subscriber``); it never slows the container down: a subscriber that falls
more than ``limit`` bytes behind is cut off and sees end of output.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from ._child import Child
from ._fdio import set_winsize
from .base import AttachSession, ExecSession
from .errors import RuntimeErrorBase
from .types import OutputChunk, Stream

log = logging.getLogger(__name__)
QUEUE_CHUNKS = 16
EOT = b"\x04"


class ProcessExecSession(ExecSession):
    """A command run with a container's environment and working directory."""

    def __init__(self, child: Child) -> None:
        self.tty = child.tty
        self._child = child
        self._queue: asyncio.Queue[OutputChunk | None] = asyncio.Queue(QUEUE_CHUNKS)
        self._eof = False
        self._closed = False
        self._on_close: list[Callable[[ProcessExecSession], None]] = []
        self._pump = asyncio.create_task(self._run_pumps(), name=f"process-exec-pump:{child.pid}")

    @classmethod
    def spawn(cls, argv: Sequence[str], *, env: dict[str, str], cwd: str, tty: bool, stdin: bool) -> ExecSession:
        try:
            child = Child.spawn(argv, env=env, cwd=cwd, tty=tty, stdin=stdin)
        except OSError as exc:
            return FailedExecSession(exc, argv)
        if not stdin:
            child.close_stdin()
        return cls(child)

    @property
    def pid(self) -> int:
        return self._child.pid

    async def _run_pumps(self) -> None:
        try:
            await asyncio.gather(*(self._pump_one(stream) for stream in self._child.outputs()))
        except Exception:  # a failed read ends the output; it must not vanish silently
            log.exception("reading the output of exec pid %s failed", self._child.pid)
        # Not on cancellation: close() cancels us and ends the output itself.
        await self._queue.put(None)

    async def _pump_one(self, stream: Stream) -> None:
        while data := await self._child.read(stream):
            await self._queue.put(OutputChunk(stream, data))

    async def read(self) -> OutputChunk | None:
        if self._eof or (self._closed and self._queue.empty()):
            return None
        chunk = await self._queue.get()
        if chunk is None:
            self._eof = True
        return chunk

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise RuntimeErrorBase("the exec session is closed")
        try:
            await self._child.write(data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise RuntimeErrorBase(f"stdin of the exec is closed: {exc}") from exc
        except OSError as exc:
            if exc.errno == errno.EIO:
                raise RuntimeErrorBase("the exec's terminal is closed") from exc
            raise

    async def close_stdin(self) -> None:
        if self._closed:
            return
        if self._child.tty:
            with contextlib.suppress(RuntimeErrorBase, OSError):
                await self.write(EOT)
        self._child.close_stdin()

    async def resize(self, *, width: int, height: int) -> None:
        if self._child.master is None or self._closed:
            return
        if width <= 0 or height <= 0:
            raise RuntimeErrorBase(f"invalid terminal size {width}x{height}")
        set_winsize(self._child.master, width=width, height=height)

    async def wait(self) -> int:
        return await self._child.wait()

    def kill(self) -> None:
        if self._child.returncode is None:
            self._child.kill_all()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._child.wait(), timeout=10)
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
        self._child.close()
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)  # wakes a reader blocked in read()
        for callback in self._on_close:
            callback(self)

    def on_close(self, callback: Callable[[ProcessExecSession], None]) -> None:
        self._on_close.append(callback)


class FailedExecSession(ExecSession):
    """An exec whose program could not be started: reports it the way Docker does.

    The error text arrives on stderr and the exit code is 127 (not found) or 126
    (found but not executable), so callers handle both runtimes alike.
    """

    def __init__(self, exc: OSError, argv: Sequence[str]) -> None:
        self.tty = False
        self.exit_code = 127 if isinstance(exc, FileNotFoundError) else 126
        self._chunks = deque([OutputChunk(Stream.STDERR, f"exec {argv[0]!r} failed: {exc}\n".encode())])

    async def read(self) -> OutputChunk | None:
        return self._chunks.popleft() if self._chunks else None

    async def write(self, data: bytes) -> None:
        raise RuntimeErrorBase("the exec did not start")

    async def close_stdin(self) -> None:
        return None

    async def resize(self, *, width: int, height: int) -> None:
        return None

    async def wait(self) -> int:
        return self.exit_code

    async def close(self) -> None:
        self._chunks.clear()


class Subscriber:
    """One attached reader of a container's output; unbounded but cut off past ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._chunks: deque[OutputChunk | None] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self.cut_off = False

    def push(self, chunk: OutputChunk | None) -> bool:
        """Queue a chunk (None: end of output); False once the subscriber is cut off."""
        if self.cut_off:
            return False
        if chunk is not None:
            self._bytes += len(chunk.data)
            if self._bytes > self.limit:
                self.cut_off = True
                chunk = None
        self._chunks.append(chunk)
        self._ready.set()
        return not self.cut_off

    def end(self) -> None:
        """End the output for this reader now (it detached)."""
        self.cut_off = True
        self._chunks.append(None)
        self._ready.set()

    async def get(self) -> OutputChunk | None:
        while not self._chunks:
            self._ready.clear()
            await self._ready.wait()
        chunk = self._chunks.popleft()
        if chunk is not None:
            self._bytes -= len(chunk.data)
        return chunk


class ProcessAttachSession(AttachSession):
    """Attached to a process container's main process (see ``ProcessContainer``)."""

    def __init__(
        self,
        *,
        tty: bool,
        subscriber: Subscriber,
        stdin: bool,
        write: Callable[[bytes], Awaitable[None]],
        close_stdin: Callable[[], Awaitable[None]],
        resize: Callable[[int, int], None],
        wait: Callable[[], Awaitable[int]],
        detach: Callable[[Subscriber], None],
    ) -> None:
        self.tty = tty
        self._subscriber = subscriber
        self._stdin_closed = not stdin
        self._write = write
        self._close_stdin = close_stdin
        self._resize = resize
        self._wait = wait
        self._detach = detach
        self._eof = False
        self._closed = False

    async def read(self) -> OutputChunk | None:
        if self._eof or self._closed:
            return None
        chunk = await self._subscriber.get()
        if chunk is None:
            self._eof = True
        return chunk

    async def write(self, data: bytes) -> None:
        if self._stdin_closed or self._closed:
            raise RuntimeErrorBase("stdin of this attach session is closed (or was not requested)")
        await self._write(data)

    async def close_stdin(self) -> None:
        if self._stdin_closed or self._closed:
            return
        self._stdin_closed = True
        await self._close_stdin()

    async def resize(self, *, width: int, height: int) -> None:
        if not self.tty or self._closed:
            return
        if width <= 0 or height <= 0:
            raise RuntimeErrorBase(f"invalid terminal size {width}x{height}")
        self._resize(width, height)

    async def wait(self) -> int:
        return await self._wait()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._detach(self._subscriber)
            self._subscriber.end()  # wakes a reader blocked in read()
